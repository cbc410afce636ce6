"""The V4L2 capture source, end to end, on the simulated driver.

`framebus produce --source v4l2:/dev/video-sim0` runs as a child process with
the simulator preloaded (tests/v4l2/v4l2sim.c); consumers attach from other
processes (tests/v4l2/simconsumer.py) and recompute every frame's pixels from
the V4L2 sequence number the driver stamped into it. The producer's log says
which strategy it chose and why, and counts frames, drops and copied bytes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import Processes, read_json, wait_for


def _load_harness() -> ModuleType:
    name = "v4l2sim_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "v4l2" / "harness.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


harness = _load_harness()

DEV = "/dev/video-sim0"
HERE = Path(__file__).resolve().parent / "v4l2"
CONSUMER = str(HERE / "simconsumer.py")
SOURCE_CHILD = str(HERE / "sourcechild.py")
BASE = f"path={DEV},fps=100,sizes=320x240+160x120"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.build_sim(tmp_path_factory.mktemp("v4l2sim"))


def produce(procs: Processes, sim: Path, config: str, sock: str, *extra: str, fmt: str = "YUYV",
            width: int = 320, height: int = 240, fps: float = 100) -> subprocess.Popen[str]:
    """`framebus produce` on the simulated camera; returns once its socket is up."""
    proc = procs.start("-m", "framebus", "produce", "--socket", sock, "--source", f"v4l2:{DEV}",
                       "--format", fmt, "--width", str(width), "--height", str(height),
                       "--fps", str(fps), *extra, env=harness.sim_env(sim, config),
                       stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, timeout=15,
             what="the producer's socket")
    if proc.poll() is not None:
        pytest.fail(f"producer exited {proc.returncode}: {proc.stderr.read()}")
    return proc


def refused(sim: Path, config: str, *extra: str, fmt: str = "YUYV", width: int = 320,
            height: int = 240, fps: float = 100) -> tuple[int, str]:
    """(exit status, stderr) of a `framebus produce` expected to give up at once."""
    proc = subprocess.run([sys.executable, "-m", "framebus", "produce", "--socket", "/tmp/fbt-never.sock",
                           "--source", f"v4l2:{DEV}", "--format", fmt, "--width", str(width),
                           "--height", str(height), "--fps", str(fps), *extra],
                          env=harness.sim_env(sim, config), capture_output=True, text=True,
                          timeout=20, cwd=Path(__file__).resolve().parent.parent)
    return proc.returncode, proc.stderr


def consume(procs: Processes, sim: Path, config: str, sock: str, *args: str) -> subprocess.Popen[str]:
    return procs.start(CONSUMER, "--socket", sock, *args, env=harness.sim_env(sim, config))


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM the producer; (exit status, its log)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err


def summary(log: str) -> dict[str, int]:
    """The producer's closing counts, from its log."""
    m = re.search(r"(\d+) frames dequeued, (\d+) published, (\d+) lost by the camera \(sequence "
                  r"gaps\), (\d+) error frames dropped, (\d+) streaming restarts, last sequence "
                  r"(-?\d+); (\S+), (\d+) bytes copied", log)
    assert m, f"no capture summary in the log:\n{log}"
    keys = ("dequeued", "published", "camera_drops", "error_frames", "restarts", "last_sequence")
    out = {k: int(v) for k, v in zip(keys, m.groups())}
    out["bytes_copied"] = int(m.group(8))
    out["strategy"] = m.group(7)  # type: ignore[assignment]
    return out


def assert_pixels(report: dict, frames: int) -> None:
    assert report["frames"] >= frames, report
    assert report["bad"] == 0, report
    assert report["unstamped"] == 0, "timestamp_ns is not the driver's (microsecond) timestamp"
    assert report["stale_timestamps"] == 0, report
    assert report["sequences"] == sorted(set(report["sequences"])), "sequences must increase"


# ---------------------------------------------------------------------- strategies

STRATEGIES = [
    # (--memory, sim type, format, pad, strategy expected, consumers' mapping)
    ("auto", "single", "YUYV", 16, "userptr", "/memfd:framebus"),
    ("userptr", "single", "YUYV", 16, "userptr", "/memfd:framebus"),
    ("dmabuf", "single", "YUYV", 16, "mmap+expbuf", "/memfd:v4l2sim-dmabuf"),
    ("copy", "single", "YUYV", 16, "mmap+copy", "/memfd:framebus"),
    ("auto", "mplane", "NV12", 32, "userptr", "/memfd:framebus"),
    ("userptr", "mplane", "NV12", 32, "userptr", "/memfd:framebus"),
    ("dmabuf", "mplane", "NV12", 32, "mmap+expbuf", "/memfd:v4l2sim-dmabuf"),
    ("copy", "mplane", "NV12", 32, "mmap+copy", "/memfd:framebus"),
    ("auto", "single", "MJPG", 0, "userptr", "/memfd:framebus"),
    ("copy", "single", "MJPG", 0, "mmap+copy", "/memfd:framebus"),
]


@pytest.mark.parametrize("memory,kind,fmt,pad,strategy,backing", STRATEGIES,
                         ids=[f"{m}-{k}-{f}" for m, k, f, *_ in STRATEGIES])
def test_strategy_delivers_the_drivers_pixels_to_other_processes(
        procs: Processes, sim: Path, sock: str, memory: str, kind: str, fmt: str, pad: int,
        strategy: str, backing: str) -> None:
    config = f"{BASE},type={kind},formats={fmt},pad={pad}"
    producer = produce(procs, sim, config, sock, "--memory", memory, fmt=fmt)
    consumers = [consume(procs, sim, config, sock, "--frames", "12", "--name", f"c{n}")
                 for n in range(2)]
    reports = [read_json(c, timeout=30) for c in consumers]
    status, log = stop(producer)
    assert status == 0, log
    assert f"using {strategy}" in log
    counts = summary(log)
    for report in reports:
        assert_pixels(report, 12)
        assert any(b.startswith(backing) and b.endswith("r--s") for b in report["backing"]), report
        wire = report["format"]
        bpl = {"YUYV": 2 * 320, "NV12": 320, "MJPG": 320}[fmt] + pad
        assert (wire["pixel_format"], wire["width"], wire["height"]) == (fmt, 320, 240)
        if fmt != "MJPG":
            assert wire["bytesperline"] == bpl  # the driver's padded rows, honoured
    assert counts["published"] >= 12
    if strategy == "mmap+copy":
        if fmt == "MJPG":  # only each frame's bytesused is copied
            assert 0 < counts["bytes_copied"] < counts["published"] * reports[0]["format"]["sizeimage"]
        else:
            assert counts["bytes_copied"] == counts["published"] * reports[0]["format"]["sizeimage"]
    else:
        assert counts["bytes_copied"] == 0  # zero copy: not one pixel byte copied by the producer


@pytest.mark.parametrize("options,strategy,why", [
    ("no_userptr", "mmap+expbuf", "not userptr: REQBUFS refuses V4L2_MEMORY_USERPTR"),
    ("no_userptr,no_expbuf", "mmap+copy", "not mmap+expbuf: VIDIOC_EXPBUF does not export"),
    ("no_userptr,no_buf_caps", "mmap+expbuf", "REQBUFS reports no capabilities (kernel < 4.20)"),
    ("userptr_contig", "mmap+copy", "VIDIOC_QBUF of a USERPTR buffer failed: Invalid argument; "
                                    "falling back to mmap+copy"),
])
def test_auto_falls_back_and_says_why(procs: Processes, sim: Path, sock: str, options: str,
                                      strategy: str, why: str) -> None:
    config = f"{BASE},{options}"
    producer = produce(procs, sim, config, sock)
    report = read_json(consume(procs, sim, config, sock, "--frames", "8"), timeout=30)
    status, log = stop(producer)
    assert status == 0, log
    assert why in log
    assert summary(log)["strategy"] == strategy
    assert_pixels(report, 8)


@pytest.mark.parametrize("options,memory,message", [
    ("no_userptr", "userptr", "--memory userptr: /dev/video-sim0 cannot do userptr: REQBUFS refuses"),
    ("no_expbuf", "dmabuf", "--memory dmabuf: /dev/video-sim0 cannot do mmap+expbuf"),
    ("userptr_contig", "userptr", "--memory userptr: VIDIOC_QBUF of a USERPTR buffer failed"),
])
def test_a_forced_strategy_the_driver_lacks_is_refused(sim: Path, options: str, memory: str,
                                                       message: str) -> None:
    status, err = refused(sim, f"{BASE},{options}", "--memory", memory)
    assert status == 1
    assert message in err


# ------------------------------------------------------------ buffers and frames

def test_fewer_buffers_than_asked_shrink_what_consumers_may_hold(
        procs: Processes, sim: Path, sock: str) -> None:
    config = f"{BASE},max_buffers=4"
    producer = produce(procs, sim, config, sock, "--memory", "dmabuf", "--buffers", "8")
    first = consume(procs, sim, config, sock, "--until-gone", "--max-held", "2")
    wait_for(lambda: _consumers(sock) == 1, timeout=15, what="the first consumer")
    second = subprocess.run([sys.executable, CONSUMER, "--socket", sock, "--max-held", "1"],
                            env=harness.sim_env(sim, config), capture_output=True, text=True,
                            timeout=20)
    assert second.returncode != 0
    assert "not enough buffers: 0 of 2 left for leases" in second.stderr
    status, log = stop(producer)
    report = read_json(first, timeout=15)
    assert status == 0, log
    assert "asked for 8 buffers, the driver granted 4" in log
    assert "4 driver buffers, mmap+expbuf; the bus keeps 2 for the driver (reserve)" in log
    assert_pixels(report, 1)
    assert report["gone"] == {"reason": "producer stopped by signal", "clean": True}


def _consumers(sock: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "framebus", "status", "--socket", sock, "--json"],
                          capture_output=True, text=True, timeout=10)
    return len(json.loads(proc.stdout)["consumers"]) if proc.returncode == 0 else -1


def test_error_frames_are_dropped_and_sequence_gaps_counted(
        procs: Processes, sim: Path, sock: str) -> None:
    config = f"{BASE},error_every=4,skip_every=5"
    producer = produce(procs, sim, config, sock)
    report = read_json(consume(procs, sim, config, sock, "--frames", "30", "--policy", "queue",
                               "--max-held", "4"), timeout=30)
    status, log = stop(producer)
    assert status == 0, log
    assert_pixels(report, 30)
    # skip_every=5: the simulated camera never delivers a sequence number 4 mod 5
    assert not [s for s in report["sequences"] if s % 5 == 4]
    counts = summary(log)
    assert counts["error_frames"] >= 5
    assert counts["camera_drops"] >= counts["last_sequence"] // 5
    # every sequence number is accounted for: dequeued or lost
    assert counts["dequeued"] + counts["camera_drops"] == counts["last_sequence"] + 1
    assert counts["published"] + counts["error_frames"] == counts["dequeued"]
    # the errors are logged at a bounded rate
    assert 0 < len(re.findall(r"dropped: V4L2_BUF_FLAG_ERROR", log)) <= 5


def test_eio_restarts_streaming(procs: Processes, sim: Path, sock: str) -> None:
    config = f"{BASE},eio_after=20"
    producer = produce(procs, sim, config, sock)
    report = read_json(consume(procs, sim, config, sock, "--frames", "40"), timeout=30)
    status, log = stop(producer)
    assert status == 0, log
    assert "EIO (the driver's queue is in error): restarting streaming" in log
    assert summary(log)["restarts"] == 1
    assert report["frames"] >= 40 and report["bad"] == 0


# ------------------------------------------------------------------ unplugging

@pytest.mark.parametrize("memory", ["userptr", "dmabuf", "copy"])
def test_unplug_ends_the_stream_for_consumers_and_the_producer_exits(
        procs: Processes, sim: Path, sock: str, memory: str) -> None:
    config = f"{BASE},vanish_after=60"
    # the consumer is up and waiting before the camera starts its 0.6 s of frames
    checker = consume(procs, sim, config, sock, "--until-gone", "--wait", "30")
    producer = produce(procs, sim, config, sock, "--memory", memory)
    report = read_json(checker, timeout=30)
    status = producer.wait(timeout=15)  # it exits by itself
    log = producer.stderr.read()
    assert report["gone"] == {"reason": "camera unplugged", "clean": True}
    assert_pixels(report, 1)
    assert status == 1, log  # a failure, so a service manager restarts it
    assert "the camera is gone (ENODEV): unplugged" in log
    assert 0 < summary(log)["dequeued"] <= 60  # frames done just before an unplug may be lost


def test_unplug_with_wait_restarts_on_a_new_bus(procs: Processes, sim: Path, sock: str) -> None:
    """`framebus produce --on-unplug wait`: when the camera comes back the
    daemon serves a new bus over its new buffers, and a reconnecting consumer
    carries on."""
    config = f"{BASE},vanish_after=60,return_after_ms=300"
    producer = produce(procs, sim, config, sock, "--memory", "dmabuf", "--on-unplug", "wait")
    report = read_json(consume(procs, sim, config, sock, "--sessions", "2", "--frames", "10"),
                       timeout=30)
    status, err = stop(producer)
    assert status == 0, err
    assert "waiting for the camera to come back" in err and "the camera is back" in err
    assert "restart: published" in err and "stopped: published" in err
    assert len(report["per_session"]) >= 2 and report["per_session"][-1] >= 10
    assert report["bad"] == 0 and report["unstamped"] == 0
    assert all(m == "0" for m in re.findall(r"(\d+) bytes copied", err)), err


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("option", ["busy", "busy_fmt"])
def test_a_busy_camera_says_another_process_has_it(sim: Path, option: str) -> None:
    status, err = refused(sim, f"{BASE},{option}")
    assert status == 1
    assert f"{DEV} is busy: another process has the camera" in err


@pytest.mark.parametrize("fmt,width,height,fps,outcome", [
    ("RGB3", 320, 240, 30, "(it offered 320x240 YUYV instead)"),
    ("YUYV", 1920, 1080, 30, "(it offered 320x240 YUYV instead)"),
    ("YUYV", 320, 240, 60, "at 60 fps (it set 30 fps)"),
])
def test_a_format_the_camera_cannot_do_lists_what_it_can(
        sim: Path, fmt: str, width: int, height: int, fps: float, outcome: str) -> None:
    config = f"path={DEV},formats=YUYV+MJPG,sizes=320x240+160x120,fps=30+15"
    status, err = refused(sim, config, fmt=fmt, width=width, height=height, fps=fps)
    assert status == 1
    assert outcome in err
    assert "it offers:\n  YUYV YUYV 4:2:2: 320x240 (30/15 fps), 160x120 (30/15 fps)" in err
    assert "  MJPG Motion-JPEG" in err


def test_nothing_leaks_on_any_ending(sim: Path) -> None:
    config = ";".join([f"{BASE.replace('fps=100', 'fps=200')}",
                       "path=/dev/video-sim1,fps=200,sizes=320x240,vanish_after=5,return_after_ms=50",
                       "path=/dev/video-sim2,busy"])
    out = _run(sim, config, "leaks", DEV, "/dev/video-sim1", "/dev/video-sim2")
    assert out["before"] == out["after"]
    endings = out["endings"]
    assert [endings[m] for m in ("userptr", "dmabuf", "copy")] == ["stopped"] * 3
    assert [endings[f"unplug {m}"] for m in ("userptr", "dmabuf", "copy")] == ["unplugged"] * 3
    assert "is busy" in endings["busy"] and "cannot capture 1920x1080 RGB3" in endings["refused"]


# ------------------------------------------------------------------ negotiation

def _run(sim: Path, config: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, SOURCE_CHILD, *args], env=harness.sim_env(sim, config),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("config,ask,expect", [
    # the driver's padded bytesperline and its sizeimage become the bus's format
    ("pad=16", ("YUYV", 320, 240, 30), {"bytesperline": 656, "sizeimage": 656 * 240}),
    ("type=mplane,formats=NV12,pad=32", ("NV12", 320, 240, 30),
     {"bytesperline": 352, "sizeimage": 352 * 240 * 3 // 2}),
    ("formats=MJPG", ("MJPG", 320, 240, 30), {"sizeimage": 320 * 240 * 2}),
    ("fps=30+15", ("YUYV", 160, 120, 15), {"fps": 15.0, "width": 160}),
    ("stepwise", ("YUYV", 100, 60, 30), {"width": 100, "height": 60, "bytesperline": 200}),
])
def test_negotiation_takes_the_drivers_geometry(sim: Path, config: str, ask: tuple, expect: dict) -> None:
    out = _run(sim, f"path={DEV},sizes=320x240+160x120,{config}", "negotiate", DEV,
               *(str(a) for a in ask))
    assert "error" not in out, out["error"]
    got = {**out["format"], "fps": out["fps"]}
    assert {k: got[k] for k in expect} == expect


def test_negotiation_refuses_a_stepwise_size_off_the_step(sim: Path) -> None:
    out = _run(sim, f"path={DEV},sizes=320x240,stepwise,formats=GREY", "negotiate", DEV, "GREY",
               "101", "61", "30")
    assert "cannot capture 101x61 GREY (it offered 100x60 GREY instead)" in out["error"]
    assert "16x16 to 320x240 step 2x2" in out["error"]
