"""The libcamera source, end to end, over a picamera2 stand-in.

`framebus produce --source libcamera` runs as a child process whose
PYTHONPATH holds tests/standins, so ``import picamera2`` finds the stand-in
(tests/standins/picamera2: exactly the picamera2 calls the source makes,
over memfd buffers filled with framebus's test pattern at a set rate).
Consumers are other processes (tests/libcamera_checker.py) with the V4L2
simulator preloaded, which answers DMA_BUF_IOCTL_SYNC on the stand-in's
buffers as the kernel does on DMA-BUFs. The stand-in logs every request it
gets back (``PICAMERA2_STANDIN=log=FILE``); the tests compare those times
with when consumers let go of each frame. Nothing here ran on a Pi.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from framebus.apps.producer import doctor
from framebus.apps.producer.doctor import OK, Probe
from tests.conftest import Processes, read_json, wait_for
from tests.test_v4l2_capture import harness

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "tests" / "standins"
CHECKER = str(ROOT / "tests" / "libcamera_checker.py")
UNUSED_DEVICE = "path=/dev/video-unused"  # the simulator needs a device to be active


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.build_sim(tmp_path_factory.mktemp("v4l2sim"))


@pytest.fixture
def standin_log(tmp_path: Path) -> Path:
    return tmp_path / "standin.jsonl"


def standin_env(options: str, log: Path | None = None) -> dict[str, str]:
    """A producer's environment: the picamera2 stand-in importable, set up by `options`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STANDINS), env.get("PYTHONPATH")]))
    env["PICAMERA2_STANDIN"] = ",".join(filter(None, [options, f"log={log}" if log else ""]))
    return env


def produce(procs: Processes, sock: str, log: Path | None, options: str = "", *extra: str,
            fmt: str = "YU12", width: int = 320, height: int = 240,
            fps: float = 50) -> subprocess.Popen[str]:
    proc = procs.start("-m", "framebus", "produce", "--socket", sock, "--source", "libcamera",
                       "--format", fmt, "--width", str(width), "--height", str(height),
                       "--fps", str(fps), *extra, env=standin_env(options, log),
                       stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, timeout=20,
             what="the producer's socket")
    if proc.poll() is not None:
        pytest.fail(f"producer exited {proc.returncode}: {proc.stderr.read()}")
    return proc


def check(procs: Processes, sim: Path, sock: str, *args: str) -> subprocess.Popen[str]:
    return procs.start(CHECKER, "--socket", sock, *args, env=harness.sim_env(sim, UNUSED_DEVICE))


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def refused(options: str, *extra: str, fmt: str = "YU12", env: dict[str, str] | None = None
            ) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "framebus", "produce", "--socket",
                           "/tmp/fbt-never.sock", "--width", "320", "--height", "240",
                           "--format", fmt, *extra],
                          env=env or standin_env(options), capture_output=True, text=True,
                          timeout=30, cwd=ROOT)
    return proc.returncode, proc.stderr


def summary(log: str) -> dict[str, int]:
    """The source's closing counts, from the producer's log (the last run's)."""
    found = re.findall(r"(\d+) requests completed, (\d+) published, (\d+) lost by the camera "
                       r"\(sequence gaps\), (\d+) released to libcamera, at most (\d+) held at "
                       r"once, last sequence (-?\d+); (\d+) bytes copied", log)
    assert found, f"no summary in the log:\n{log}"
    keys = ("completed", "published", "camera_drops", "released", "most_held", "last_sequence",
            "bytes_copied")
    return {k: int(v) for k, v in zip(keys, found[-1])}


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def requeue_times(log: Path) -> dict[int, int]:
    """When each frame's request went back to the camera (by camera sequence)."""
    return {e["sequence"]: e["t"] for e in events(log) if e["event"] == "requeue"}


def stopped_stats(log: Path) -> dict:
    return [e for e in events(log) if e["event"] == "stopped"][-1]


def assert_released_after_leases(report: dict, log: Path) -> int:
    """Every frame the consumer held went back to libcamera only after the
    consumer began to release it; returns how many frames that checked."""
    requeued = requeue_times(log)
    checked = 0
    for sequence, released_at in report["held"]:
        if sequence in requeued:  # (else: still held at the end, or let go after stop)
            assert requeued[sequence] > released_at, (
                f"frame {sequence}: its request went back to libcamera "
                f"{(released_at - requeued[sequence]) / 1e6:.3f} ms before the consumer released it")
            checked += 1
    return checked


def assert_pixels(report: dict, frames: int) -> None:
    assert report["frames"] >= frames, report
    assert report["bad"] == 0 and report["bad_after_hold"] == 0, report
    assert report["synced"] == report["frames"], "reads not bracketed with DMA_BUF_IOCTL_SYNC"
    assert report["stale_timestamps"] == 0, report
    # zero copy: the consumer reads libcamera's own buffer, read-only
    assert all(re.fullmatch(r"/memfd:v4l2sim-dmabuf picamera2-\d+ \(deleted\) r--s", b)
               for b in report["backing"]), report["backing"]


# ------------------------------------------------------------------- frames

def test_a_consumer_gets_100_frames_zero_copy_released_only_after_its_leases(
        procs: Processes, sim: Path, sock: str, standin_log: Path) -> None:
    """The must-show: 100 frames, every pixel checked, nothing copied, every
    request back to libcamera only after the consumer's lease on it ended."""
    producer = produce(procs, sock, standin_log)
    report = read_json(check(procs, sim, sock, "--frames", "100", "--hold", "0.02"), timeout=40)
    status, log = stop(producer)
    assert status == 0, log
    assert_pixels(report, 100)
    counts = summary(log)
    assert counts["bytes_copied"] == 0
    assert counts["published"] >= 100
    checked = assert_released_after_leases(report, standin_log)
    assert checked >= 90
    stats = stopped_stats(standin_log)
    assert stats["underruns"] == 0 and stats["requeued"] == counts["released"]
    assert "8 libcamera buffers shared as DMA-BUFs; the bus keeps 4 for libcamera" in log
    early = min(t - released for (seq, released) in report["held"]
                for s, t in requeue_times(standin_log).items() if s == seq)
    print(f"\nconsumer: {report['frames']} frames {report['format']['pixel_format']} "
          f"{report['format']['width']}x{report['format']['height']}, {report['bad']} bad "
          f"pixels (checked on arrival and again after a 20 ms hold: {report['bad_after_hold']} "
          f"bad), {report['synced']} reads bracketed with DMA_BUF_IOCTL_SYNC, mapped from "
          f"{sorted(set(report['backing']))[:2]}...; median {report['median_age_ms']:.2f} ms "
          f"from the sensor timestamp to the consumer's get()\n"
          f"producer: {counts['completed']} requests completed, {counts['published']} published, "
          f"{counts['released']} released to libcamera, {counts['bytes_copied']} bytes copied\n"
          f"stand-in: {checked} of the consumer's frames went back to libcamera after its "
          f"release (earliest {early / 1e6:.3f} ms after), 0 before; {stats['underruns']} "
          f"underruns, fewest requests queued {stats['min_queued']} of {stats['buffers']}")


@pytest.mark.parametrize("fmt,width,options", [
    ("YU12", 300, "planes=3"),  # three planes (as libcamera's own allocator gives them), padded
    ("YU12", 320, "frame_pad=4096"),  # libcamera's framesize larger than the planes
    ("BGR3", 300, ""),  # libcamera RGB888: B, G, R in memory; padded rows
    ("RGB3", 320, ""),
    ("XR24", 300, ""),  # XRGB8888: B, G, R, X
    ("XB24", 320, ""),
])
def test_every_format_arrives_with_libcameras_strides(
        procs: Processes, sim: Path, sock: str, standin_log: Path, fmt: str, width: int,
        options: str) -> None:
    producer = produce(procs, sock, standin_log, options, fmt=fmt, width=width)
    report = read_json(check(procs, sim, sock, "--frames", "20"), timeout=40)
    status, log = stop(producer)
    assert status == 0, log
    assert_pixels(report, 20)
    wire = report["format"]
    bpp = {"YU12": 1, "BGR3": 3, "RGB3": 3, "XR24": 4, "XB24": 4}[fmt]
    stride = -(-width * bpp // 64) * 64
    assert (wire["pixel_format"], wire["width"], wire["bytesperline"]) == (fmt, width, stride)
    assert summary(log)["bytes_copied"] == 0


def test_requests_stay_with_the_bus_while_consumers_hold_them(
        procs: Processes, sim: Path, sock: str, standin_log: Path) -> None:
    """Two consumers holding each frame 0.1 s: the stand-in poisons a buffer
    the moment its request goes back, and neither consumer ever sees that."""
    producer = produce(procs, sock, standin_log, "", "--lease-timeout", "10", fps=30)
    checkers = [check(procs, sim, sock, "--frames", "15", "--hold", "0.1", "--name", f"c{n}")
                for n in range(2)]
    reports = [read_json(c, timeout=40) for c in checkers]
    status, log = stop(producer)
    assert status == 0, log
    for report in reports:
        assert_pixels(report, 15)
        assert assert_released_after_leases(report, standin_log) >= 10


def test_a_stalled_consumer_does_not_starve_libcamera(
        procs: Processes, sim: Path, sock: str, standin_log: Path) -> None:
    """A consumer that takes every frame the bus lets it hold and stops keeps
    those requests from libcamera, and no more: with 8 buffers, a reader
    holding 1 and the stalled one 3 (all the bus admits: it keeps 4 for
    libcamera), libcamera always has at least two requests queued (the
    stand-in's fewest queued at a frame tick) and never runs dry, while the
    reader carries on."""
    producer = produce(procs, sock, standin_log, "", "--lease-timeout", "60", fps=30)
    reader = check(procs, sim, sock, "--frames", "90", "--max-held", "1", "--hold", "0.01",
                   "--name", "reader")
    wait_for(lambda: consumers(sock) == 1, timeout=15, what="the reader")
    stalled = read_json(check(procs, sim, sock, "--stall", "--greedy", "--name", "stalled"),
                        timeout=30)
    assert stalled["max_held"] == 3 and stalled["frames"] == 3, stalled
    report = read_json(reader, timeout=40)
    status, log = stop(producer)
    assert status == 0, log
    assert_pixels(report, 90)
    counts = summary(log)
    assert counts["most_held"] >= 4, "the stalled consumer's frames were not held"
    stats = stopped_stats(standin_log)
    assert stats["underruns"] == 0 and stats["min_queued"] >= 2, stats


def consumers(sock: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "framebus", "status", "--socket", sock, "--json"],
                          capture_output=True, text=True, timeout=10)
    return len(json.loads(proc.stdout)["consumers"]) if proc.returncode == 0 else -1


def test_error_frames_are_gaps_in_the_sequence(
        procs: Processes, sim: Path, sock: str, standin_log: Path) -> None:
    producer = produce(procs, sock, standin_log, "error_every=7")
    report = read_json(check(procs, sim, sock, "--frames", "30"), timeout=40)
    status, log = stop(producer)
    assert status == 0, log
    assert_pixels(report, 30)
    assert summary(log)["camera_drops"] >= 3
    assert not any(s % 7 == 0 and s > 0 for s, _ in report["held"])  # never published


# ------------------------------------------------------------ endings

def test_a_disconnected_camera_ends_the_stream_and_the_producer_exits(
        procs: Processes, sim: Path, sock: str, standin_log: Path) -> None:
    producer = produce(procs, sock, standin_log, "disconnect_after=40")
    report = read_json(check(procs, sim, sock, "--until-gone"), timeout=40)
    status = producer.wait(timeout=30)
    log = producer.stderr.read()
    assert report["gone"] == {"reason": "camera unplugged", "clean": True}
    assert_pixels(report, 1)
    assert status == 1, log  # a failure, so a service manager restarts it
    assert "no frame for 2.0 s: the camera is gone or stalled" in log
    assert 0 < summary(log)["completed"] <= 40
    # the pending capture job was cancelled before stop(), which would wait behind it for ever
    happened = [e["event"] for e in events(standin_log)]
    assert "stop_blocked" not in happened and happened[-1] == "closed", happened
    assert stopped_stats(standin_log)["completed"] == summary(log)["completed"]


def test_a_disconnected_camera_that_comes_back_is_served_on_a_new_bus(
        procs: Processes, sim: Path, sock: str, standin_log: Path) -> None:
    producer = produce(procs, sock, standin_log, "disconnect_after=40,return_after_ms=500",
                       "--on-unplug", "wait")
    report = read_json(check(procs, sim, sock, "--sessions", "2", "--frames", "10"), timeout=40)
    status, log = stop(producer)
    assert status == 0, log
    assert "waiting for the camera to come back" in log and "the camera is back" in log
    assert "restart: published" in log and "stopped: published" in log
    assert len(report["per_session"]) >= 2 and report["per_session"][-1] >= 10
    assert_pixels(report, 10)
    assert all(m == "0" for m in re.findall(r"(\d+) bytes copied", log)), log
    assert [e["event"] for e in events(standin_log)].count("started") == 2


def test_a_camera_error_closes_the_bus_and_the_producer_fails(
        procs: Processes, sim: Path, sock: str, standin_log: Path) -> None:
    producer = produce(procs, sock, standin_log, "error_after=30")
    report = read_json(check(procs, sim, sock, "--until-gone"), timeout=40)
    status = producer.wait(timeout=30)
    log = producer.stderr.read()
    assert status == 1, log
    reason = "camera error: picamera2: RuntimeError: standin: the camera failed (injected error)"
    assert report["gone"] == {"reason": reason, "clean": True}
    assert f"framebus produce: {reason[len('camera error: '):]}" in log
    assert_pixels(report, 1)
    assert [e["event"] for e in events(standin_log)][-1] == "closed"


# ------------------------------------------------------------ refusals

def test_without_picamera2_the_error_says_how_to_get_it() -> None:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    status, err = refused("", "--source", "libcamera", env=env)
    assert status == 1
    assert "--source libcamera needs picamera2" in err
    assert "sudo apt install python3-picamera2" in err and "--system-site-packages" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("source,fmt,message", [
    ("libcamera", "YUYV", "--source libcamera cannot serve YUYV; it serves YU12 (YUV420), "
                          "BGR3 (RGB888), RGB3 (BGR888), XR24 (XRGB8888), XB24 (XBGR8888)"),
    ("libcamera:x", "YU12", "the camera number must be 0, 1, ... (libcamera:N), not 'x'"),
    ("libcamera:3", "YU12", "libcamera has no camera 3 (cameras: 0: framebus-standin "
                            "(/base/standin@0))"),
    ("camera", "YU12", "unknown source 'camera': use 'synthetic', 'v4l2:/dev/videoN' or "
                       "'libcamera[:N]'"),
])
def test_bad_requests_are_refused_clearly(source: str, fmt: str, message: str) -> None:
    status, err = refused("", "--source", source, fmt=fmt)
    assert status == 1
    assert message in err and "Traceback" not in err


def test_too_few_buffers_are_refused() -> None:
    status, err = refused("", "--source", "libcamera", "--buffers", "4")
    assert status == 1
    assert "a libcamera source needs 5..32 buffers (4 stay with libcamera and picamera2)" in err


# ------------------------------------------------------------ doctor

def test_doctor_names_both_libcamera_routes() -> None:
    missing = doctor.run_checks(Probe(find_spec=lambda name: None if name == "picamera2" else
                                      object(), which=lambda name: None,
                                      libcamera_compat=lambda: []))
    lines = {c.name: c for c in missing}
    assert "sudo apt install python3-picamera2" in lines["libcamera source"].fix
    assert "sudo apt install libcamera-v4l2" in lines["libcamerify"].fix
    assert "not verified on a Pi" in lines["libcamerify"].fix
    present = doctor.run_checks(Probe(find_spec=lambda name: object(),
                                      version=lambda name: "0.3.36",
                                      which=lambda name: "/usr/bin/libcamerify"))
    lines = {c.name: c for c in present}
    assert lines["libcamera source"].status == OK and "picamera2 0.3.36" in lines[
        "libcamera source"].detail
    assert lines["libcamerify"].detail.startswith("/usr/bin/libcamerify: libcamerify framebus "
                                                  "produce --source v4l2:/dev/video0")
    assert "not verified on a Pi" in lines["libcamerify"].detail


# ------------------------------------------------------------ leaks

@pytest.mark.parametrize("options,ending", [
    ("", "stopped"),
    ("error_after=10", "error: picamera2: RuntimeError: standin: the camera failed"),
])
def test_nothing_leaks_on_any_ending(workdir: str, options: str, ending: str) -> None:
    """Two rounds of open, serve, close in one process leave its fds,
    threads and buffer mappings as they were (the unplug ending closes the
    camera on the same path as an error: see the end-to-end tests)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "libcamera_sourcechild.py"),
                           os.path.join(workdir, "leak.sock"), "20"],
                          env=standin_env(options), capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["before"] == out["after"], out
    assert all(e.startswith(ending) for e in out["endings"]), out
