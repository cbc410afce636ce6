"""`framebus record` and `framebus.recorder.Recorder`: real producers, real
H.264 encoding with PyAV, files checked with ffprobe (Debian's ffmpeg)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import av
import numpy as np
import pytest
import simplejpeg

import framebus
from framebus import FrameFormat, FramebusError
from framebus.pattern import Pattern
from framebus._encoder_frames import _address, converter as _converter
from framebus.recorder import Recorder

from .conftest import wait_for

PERIOD_NS = 20_000_000  # the in-process tests' frames are 20 ms apart (50 fps)


def ffprobe(path: str) -> dict:
    """ffprobe's view of a file: stream, format and every packet."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames:format=format_name,duration"
         ":packet=pts_time,flags", "-of", "json", path],
        capture_output=True, text=True, timeout=30, check=True)
    probe = json.loads(out.stdout)
    assert len(probe["streams"]) == 1, probe
    return probe


def frames_in(probe: dict) -> int:
    return int(probe["streams"][0]["nb_read_frames"])


def duration(probe: dict) -> float:
    return float(probe["format"]["duration"])


# ----------------------------------------------------------- in one process
@contextmanager
def bus(sock: str, fmt: FrameFormat) -> Iterator[tuple[framebus.Producer, framebus.Consumer]]:
    with framebus.Producer(sock, fmt, buffers=6, lease_timeout=5.0) as producer, \
            framebus.Consumer(sock, max_held=1) as cam:  # latest: one at a time
        yield producer, cam


def publish(producer: framebus.Producer, pattern: Pattern | None, t0: int, n: int) -> int:
    """Publish frame n of a 50 fps stream starting at t0 (a JPEG for MJPG)."""
    buf = producer.acquire(timeout=2)
    if pattern is None:
        fmt = producer.format
        gray = np.full((fmt.height, fmt.width, 1), (n * 8) % 256, np.uint8)
        jpeg = simplejpeg.encode_jpeg(gray, colorspace="GRAY")
        buf.views.raw[:len(jpeg)] = np.frombuffer(jpeg, np.uint8)
        return producer.publish(buf, timestamp_ns=t0 + n * PERIOD_NS, bytesused=len(jpeg))
    pattern.draw(buf.views.planes, producer.next_seq)
    return producer.publish(buf, timestamp_ns=t0 + n * PERIOD_NS)


def record(sock: str, fmt: FrameFormat, out: str, count: int, skip: range = range(0),
           trigger_at: int = -1, **options: object) -> Recorder:
    """Publish `count` frames, write each (but those in `skip`) to a Recorder."""
    pattern = None if fmt.compressed else Pattern(fmt)
    t0 = time.monotonic_ns()
    with bus(sock, fmt) as (producer, cam), \
            Recorder(out, cam.format, fps_hint=50, **options) as recorder:  # type: ignore[arg-type]
        for n in range(count):
            if n == trigger_at:
                recorder.trigger()
            publish(producer, pattern, t0, n)
            with cam.get(timeout=5) as frame:
                if n not in skip:
                    recorder.write(frame)
    return recorder


def expected_picture(fmt: FrameFormat, seq: int) -> tuple[np.ndarray, str]:
    """What frame `seq` must decode to, and the PyAV format to decode it as."""
    planes = Pattern(fmt).expected(seq)
    if fmt.pixel_format in ("RGB3", "BGR3"):
        return planes[0].reshape(fmt.height, fmt.width, 3), fmt.pixel_format[:3].lower() + "24"
    if fmt.pixel_format in ("XR24", "XB24"):  # B, G, R, X and R, G, B, X in memory
        return (planes[0].reshape(fmt.height, fmt.width, 4)[:, :, :3],
                "bgr24" if fmt.pixel_format == "XR24" else "rgb24")
    if fmt.pixel_format in ("YUYV", "UYVY"):
        luma = 0 if fmt.pixel_format == "YUYV" else 1
        return planes[0].reshape(fmt.height, fmt.width, 2)[:, :, luma], "luma"
    return planes[0].reshape(fmt.height, fmt.width), "luma"


def luma(picture: av.VideoFrame) -> np.ndarray:
    """The decoded Y plane as it is (no range conversion)."""
    assert picture.format.name in ("yuv420p", "yuvj420p"), picture.format.name
    return picture.to_ndarray(format="yuv420p")[:picture.height]


FORMATS = [FrameFormat(64, 48, "NV12"), FrameFormat(64, 48, "NV12", bytesperline=80),
           FrameFormat(64, 48, "YU12", bytesperline=96), FrameFormat(64, 48, "GREY"),
           FrameFormat(64, 48, "YUYV"), FrameFormat(64, 48, "UYVY"), FrameFormat(64, 48, "RGB3"),
           FrameFormat(64, 48, "BGR3"), FrameFormat(64, 48, "XR24"),
           FrameFormat(64, 48, "XB24", bytesperline=288), FrameFormat(64, 42, "NV12"), FrameFormat(64, 42, "YUYV"),
           FrameFormat(64, 48, "MJPG")]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.pixel_format}-{f.width}x{f.height}"
                                                       f"-bpl{f.bytesperline}")
def test_every_format_is_recorded_with_the_right_picture(fmt, sock, workdir, no_leaks):
    out = os.path.join(workdir, "out.mkv")
    recorder = record(sock, fmt, out, 20, options={"crf": "10"})
    assert recorder.frames_written == recorder.frames_in == 20 and recorder.frames_missing == 0
    probe = ffprobe(out)
    assert probe["streams"][0]["codec_name"] == "h264"
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (fmt.width, fmt.height)
    assert frames_in(probe) == 20
    assert duration(probe) == pytest.approx(20 * PERIOD_NS / 1e9, abs=0.002)
    with av.open(out) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 20
    for n in (0, 19):
        if fmt.compressed:  # a flat grey JPEG of value 8n
            picture, wanted = luma(decoded[n]), np.uint8(n * 8)
        else:
            wanted, as_format = expected_picture(fmt, recorder.first_seq + n)
            picture = luma(decoded[n]) if as_format == "luma" else \
                decoded[n].to_ndarray(format=as_format)
        error = np.abs(picture.astype(int) - wanted).mean()
        assert error < 4, f"frame {n} decodes {error:.1f} levels off the published picture"


@pytest.mark.parametrize("fmt", [FrameFormat(64, 48, "NV12", bytesperline=80),
                                 FrameFormat(64, 48, "YU12", bytesperline=96),
                                 FrameFormat(64, 48, "GREY", bytesperline=72)],
                         ids=lambda f: f.pixel_format)
def test_planar_and_grey_frames_reach_the_encoder_without_a_copy(fmt, sock):
    convert = _converter(av, fmt)
    with bus(sock, fmt) as (producer, cam):
        publish(producer, Pattern(fmt), 0, 0)
        with cam.get(timeout=5) as frame:
            (picture,) = convert(frame)
            assert picture.planes[0].buffer_ptr == _address(frame.planes[0])
            assert picture.planes[0].line_size == fmt.bytesperline
            for mine, shared in zip(picture.planes[1:], frame.planes[1:]):
                assert mine.buffer_ptr == _address(shared)
            del picture


def test_timestamps_come_from_the_bus_so_missing_frames_are_a_gap(sock, workdir):
    out = os.path.join(workdir, "gap.mp4")
    recorder = record(sock, FrameFormat(64, 48, "NV12"), out, 30, skip=range(10, 20))
    assert recorder.frames_written == 20 and recorder.frames_missing == 10
    probe = ffprobe(out)
    assert frames_in(probe) == 20
    assert duration(probe) == pytest.approx(30 * PERIOD_NS / 1e9, abs=0.002)
    pts = sorted(float(p["pts_time"]) for p in probe["packets"])
    steps = np.round(np.diff(pts) / (PERIOD_NS / 1e9)).astype(int).tolist()
    assert steps == [1] * 9 + [11] + [1] * 9


def test_segments_start_with_a_keyframe_and_split_the_time(sock, workdir):
    out = os.path.join(workdir, "seg.mp4")
    recorder = record(sock, FrameFormat(64, 48, "YU12"), out, 50, segment_seconds=0.25)
    paths = [f.path for f in recorder.files]
    assert paths == [os.path.join(workdir, f"seg-{n:04d}.mp4") for n in range(4)]
    probes = [ffprobe(p) for p in paths]
    assert [frames_in(p) for p in probes] == [f.frames for f in recorder.files]
    assert sum(frames_in(p) for p in probes) == 50
    for probe in probes:
        assert probe["packets"][0]["flags"].startswith("K")
    # a cut at the first frame 0.25 s or more into a file: 13 frames of 20 ms each
    assert [f.frames for f in recorder.files] == [13, 13, 13, 11]
    assert [duration(p) for p in probes] == pytest.approx([0.26, 0.26, 0.26, 0.22], abs=0.002)


def test_pre_trigger_ring_writes_the_last_seconds_and_what_follows(sock, workdir):
    out = os.path.join(workdir, "pre.mkv")
    recorder = record(sock, FrameFormat(64, 48, "NV12"), out, 150, trigger_at=100,
                      pre_seconds=0.5)
    (written,) = recorder.files
    triggered = recorder.triggered_at_ns
    pre_roll = (triggered - written.first_timestamp_ns) / 1e9
    # The ring starts at a keyframe (one a second at 50 fps) at least 0.5 s back.
    assert 0.5 <= pre_roll <= 1.5 + 1e-9
    assert written.frames == round(pre_roll * 50) + 50
    probe = ffprobe(out)
    assert frames_in(probe) == written.frames
    assert probe["packets"][0]["flags"].startswith("K")
    assert duration(probe) == pytest.approx(written.frames * PERIOD_NS / 1e9, abs=0.002)


def test_an_untriggered_ring_writes_nothing(sock, workdir):
    out = os.path.join(workdir, "never.mp4")
    fmt = FrameFormat(64, 48, "GREY")
    t0 = time.monotonic_ns()
    with bus(sock, fmt) as (producer, cam), \
            Recorder(out, fmt, fps_hint=50, pre_seconds=0.5) as recorder:
        for n in range(80):
            publish(producer, Pattern(fmt), t0, n)
            with cam.get(timeout=5) as frame:
                recorder.write(frame)
        # whole keyframe intervals (1 s at 50 fps) go once 0.5 s is held without them
        assert 0.5 <= recorder.ring_seconds <= 1.5
    assert recorder.files == [] and recorder.frames_written == 0 and not os.path.exists(out)


def test_bad_file_names_and_encoders_are_clear_errors(workdir):
    fmt = FrameFormat(64, 48, "NV12")
    with pytest.raises(FramebusError, match=r"\.mp4 or \*\.mkv"):
        Recorder(os.path.join(workdir, "x.avi"), fmt)
    with pytest.raises(FramebusError, match="no such folder"):
        Recorder(os.path.join(workdir, "missing", "x.mp4"), fmt)
    with pytest.raises(FramebusError, match="no video encoder 'nope'"):
        Recorder(os.path.join(workdir, "x.mp4"), fmt, codec="nope")
    with pytest.raises(FramebusError, match="even width"):
        Recorder(os.path.join(workdir, "x.mp4"), FrameFormat(63, 48, "GREY"), pix_fmt="yuv420p")


# -------------------------------------------------------------- the command
def run_record(procs, sock: str, *args: str, timeout: float = 30) -> tuple[dict, str]:
    proc = procs.start("-m", "framebus", "record", "--socket", sock, "--wait", "5", "--json", *args)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out), err


@pytest.mark.parametrize("fmt,suffix", [("NV12", "mp4"), ("YUYV", "mkv")])
def test_command_records_a_playable_file(procs, sock, workdir, fmt, suffix):
    procs.producer(sock, fps=50, width=160, height=120, fmt=fmt)
    out = os.path.join(workdir, f"out.{suffix}")
    summary, err = run_record(procs, sock, "--out", out, "--seconds", "1", "--fps-hint", "50")
    assert "frames written /" in err and "cores" in err  # progress and summary on stderr
    (written,) = summary["files"]
    assert summary["frames_written"] == summary["frames_received"] == written["frames"]
    assert summary["frames_written"] + summary["dropped"] == summary["frames_published"]
    assert 25 <= written["frames"] <= 51  # 50 fps for 1 s, less what a busy machine drops
    probe = ffprobe(out)
    assert frames_in(probe) == written["frames"]
    # from the first frame's timestamp to the last one's, plus the last frame's 1/fps-hint
    assert duration(probe) == pytest.approx(written["span_s"] + 0.02, abs=0.0015)


def test_command_cuts_segments(procs, sock, workdir):
    procs.producer(sock, fps=50, width=160, height=120, fmt="NV12")
    summary, _ = run_record(procs, sock, "--out", os.path.join(workdir, "s.mp4"),
                            "--seconds", "1.2", "--segment", "0.5", "--fps-hint", "50")
    files = summary["files"]
    assert len(files) == 3
    for f in files:
        probe = ffprobe(f["path"])
        assert frames_in(probe) == f["frames"]
        assert probe["packets"][0]["flags"].startswith("K")
    assert sum(f["frames"] for f in files) == summary["frames_written"]
    assert all(f["span_s"] <= 0.5 for f in files), files  # (rounded to 0.1 ms)


def test_command_pre_trigger_on_sigusr1(procs, sock, workdir):
    procs.producer(sock, fps=50, width=160, height=120, fmt="NV12")
    out = os.path.join(workdir, "event.mp4")
    proc = procs.start("-m", "framebus", "record", "--socket", sock, "--wait", "5", "--json",
                       "--out", out, "--pre-seconds", "1", "--seconds", "0.5", "--fps-hint", "50")
    ring = 0.0
    while ring < 1.0:  # the progress line says how much the ring holds
        line = proc.stderr.readline()
        assert line, f"record exited: {proc.communicate(timeout=10)}"
        found = re.search(r"ring holds ([\d.]+) s", line)
        ring = float(found.group(1)) if found else ring
    assert not os.path.exists(out)
    proc.send_signal(signal.SIGUSR1)
    out_text, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    summary = json.loads(out_text)
    (written,) = summary["files"]
    pre_roll = (summary["triggered_at_ns"] - written["first_timestamp_ns"]) / 1e9
    # from a keyframe at least 1 s back; they come every 50 frames (more time if frames drop)
    assert 1.0 - 0.021 <= pre_roll <= 2.5
    probe = ffprobe(out)
    assert frames_in(probe) == written["frames"] == summary["frames_written"]
    assert duration(probe) == pytest.approx(pre_roll + 0.5, abs=0.06)
    print(f"\npre-trigger: pre-roll {pre_roll:.3f} s, {written['frames']} frames, "
          f"ffprobe {frames_in(probe)} frames {duration(probe):.3f} s")


def test_command_stops_cleanly_on_sigint_with_the_file_finalized(procs, sock, workdir):
    procs.producer(sock, fps=50, width=160, height=120, fmt="GREY")
    out = os.path.join(workdir, "stop.mp4")
    proc = procs.start("-m", "framebus", "record", "--socket", sock, "--wait", "5", "--json",
                       "--out", out)
    wait_for(lambda: "frames written" in proc.stderr.readline(), timeout=20,
             what="a progress line")
    proc.send_signal(signal.SIGINT)
    out_text, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    summary = json.loads(out_text)
    assert summary["frames_written"] > 0
    assert frames_in(ffprobe(out)) == summary["frames_written"]


def test_command_without_pyav_names_the_extra(sock, workdir):
    code = ("import sys; sys.modules['av'] = None\n"
            "from framebus.cli import main\n"
            f"sys.exit(main(['record', '--socket', {sock!r}, '--out', 'x.mp4']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=workdir)
    assert proc.returncode == 1
    assert "pip install 'framebus[record]'" in proc.stderr and "Traceback" not in proc.stderr


def test_command_bad_arguments_are_one_line_errors(procs, sock, workdir):
    procs.producer(sock, fps=50, width=160, height=120, fmt="NV12")
    proc = procs.start("-m", "framebus", "record", "--socket", sock, "--out",
                       os.path.join(workdir, "x.avi"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "framebus record:" in err and ".mp4" in err
