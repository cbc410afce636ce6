"""SIGHUP with a config file whose values parse but cannot apply to this
daemon: the reload says why, applies what it can, and the daemon keeps
serving and keeps listening for the next SIGHUP."""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import framebus
from framebus.apps.producer import daemon
from framebus.report import query_status

from .conftest import ROOT, Processes, read_json
from .test_libcamera import assert_pixels, check, sim  # noqa: F401 (sim: a fixture)
from .test_libcamera import produce as produce_libcamera


class DaemonLog:
    """A daemon's stderr, read as it comes (so a test can wait for a line)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.text = ""

    def wait_for(self, line: str, count: int = 1, timeout: float = 15.0) -> None:
        """Until `line` has appeared `count` times; fails after `timeout`."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()  # os.read: no text buffer for select() to miss
        deadline = time.monotonic() + timeout
        while self.text.count(line) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out waiting for {line!r} in the log:\n{self.text}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    pytest.fail(f"the daemon exited waiting for {line!r}:\n{self.text}")
                self.text += chunk.decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then the exit status once the daemon is gone (the whole log read)."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        self.text += err
        return self.proc.returncode


def _reload(producer: subprocess.Popen[str], conf: Path, text: str) -> None:
    conf.write_text(text)
    producer.send_signal(signal.SIGHUP)


def _serves(sock: str, frames: int = 3) -> None:
    with framebus.Consumer(sock, max_held=1) as cam:
        for _ in range(frames):
            cam.get(timeout=10).release()


def _assert_clean_log(err: str) -> None:
    assert "Traceback" not in err and "Exception in thread" not in err, err


def _start(source: str, procs: Processes, sock: str, conf: Path, request: pytest.FixtureRequest,
           options: str = "", *extra: str) -> tuple[subprocess.Popen[str], Callable[[], None]]:
    """The daemon serving `source` with `conf`, and a check that a consumer gets frames."""
    if source == "synthetic":
        producer = procs.producer(sock, "--config", str(conf), *extra, fps=50, width=64,
                                  height=48)
        return producer, lambda: _serves(sock)
    # the picamera2 stand-in; its consumers need the V4L2 simulator's DMA-BUF ioctls
    sim = request.getfixturevalue("sim")
    producer = produce_libcamera(procs, sock, None, options, "--config", str(conf), *extra,
                                 fps=20)
    return producer, lambda: assert_pixels(read_json(check(procs, sim, sock, "--frames", "3"),
                                                     timeout=40), 3)


@pytest.mark.parametrize("source", ["synthetic", "libcamera"])
def test_sighup_with_controls_for_a_source_without_any_applies_the_rest(
        procs: Processes, sock: str, tmp_path: Path, source: str,
        request: pytest.FixtureRequest) -> None:
    conf = tmp_path / "framebus.toml"
    conf.write_text("max_consumers = 10\nlease_timeout = 2.0\n")
    producer, serves = _start(source, procs, sock, conf, request)
    log = DaemonLog(producer)
    assert query_status(sock)["max_consumers"] == 10
    ignored = (f"WARNING: SIGHUP: [controls] not set: the {source} source has no camera "
               f"controls (the daemon refuses [controls] for it at start-up)")

    _reload(producer, conf, "max_consumers = 7\nlease_timeout = 0.5\n"
                            '[controls]\ngain = 10\npower_line_frequency = "50 Hz"\n')
    log.wait_for(ignored)
    status = query_status(sock)
    assert status["max_consumers"] == 7 and status["lease_timeout"] == 0.5
    serves()
    # the reloader is still there: a second SIGHUP applies too
    _reload(producer, conf, "max_consumers = 5\n[controls]\ngain = 10\n")
    log.wait_for(ignored, count=2)
    assert query_status(sock)["max_consumers"] == 5
    serves()
    assert producer.poll() is None

    assert log.stop() == 0, log.text
    _assert_clean_log(log.text)
    assert log.text.count("SIGHUP: reloaded ") == 2, log.text


LEASE = "lease_timeout must be a number of seconds, more than 0 and at most 86400, not "


@pytest.mark.parametrize("text,message", [
    ("max_consumers = 3\nlease_timeout = 100000\n", LEASE + "100000"),
    ("max_consumers = 3\nlease_timeout = nan\n", LEASE + "nan"),
    ("max_consumers = 3\nlease_timeout = inf\n", LEASE + "inf"),
    ("lease_timeout = 0.5\nmax_consumers = 5000\n",
     "max_consumers must be an int from 1 to 4096, not 5000"),
])
def test_sighup_with_a_value_beyond_the_producers_limits_keeps_the_settings(
        procs: Processes, sock: str, tmp_path: Path, text: str, message: str) -> None:
    """Values TOML reads but the bus refuses: the reload is refused as a bad
    file's is, in the words the daemon refuses them with at start-up."""
    conf = tmp_path / "framebus.toml"
    conf.write_text("max_consumers = 10\nlease_timeout = 2.0\n")
    producer = procs.producer(sock, "--config", str(conf), fps=50, width=64, height=48)
    log = DaemonLog(producer)
    _reload(producer, conf, text)
    log.wait_for(f"SIGHUP: keeping the current settings: config {conf}: {message}")
    status = query_status(sock)
    assert status["max_consumers"] == 10 and status["lease_timeout"] == 2.0
    _serves(sock)
    _reload(producer, conf, "max_consumers = 4\n")  # and the next reload applies
    log.wait_for("SIGHUP: reloaded ")
    assert query_status(sock)["max_consumers"] == 4
    assert log.stop() == 0, log.text
    _assert_clean_log(log.text)

    conf.write_text(text)  # the same file at start-up: the same words, no traceback
    started = subprocess.run([sys.executable, "-m", "framebus", "produce", "--socket", sock,
                              "--config", str(conf)], capture_output=True, text=True,
                             timeout=30, cwd=ROOT)
    assert started.returncode == 1, started.stderr
    assert f"config {conf}: {message}" in started.stderr, started.stderr
    _assert_clean_log(started.stderr)
    assert not os.path.exists(sock)


def test_a_camera_back_after_the_file_went_bad_keeps_the_last_good_settings(
        procs: Processes, sock: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """`--on-unplug wait`: the daemon reads the file again for the new bus
    once the camera is back; a file gone bad meanwhile keeps the settings the
    last SIGHUP applied, as SIGHUP itself would, instead of ending the daemon."""
    conf = tmp_path / "framebus.toml"
    conf.write_text("max_consumers = 10\n")
    producer, serves = _start("libcamera", procs, sock, conf, request,
                              "disconnect_after=80,return_after_ms=300", "--on-unplug", "wait")
    log = DaemonLog(producer)
    _reload(producer, conf, "max_consumers = 7\n")
    log.wait_for("SIGHUP: reloaded ")
    conf.write_text("max_consumers = 5000\n")  # before the camera goes (80 frames at 20 fps)
    log.wait_for("the camera is back", timeout=30)
    log.wait_for("serving ", count=2)
    assert "the source is back: keeping the current settings: config " in log.text
    assert "max_consumers must be an int from 1 to 4096, not 5000" in log.text
    assert query_status(sock)["max_consumers"] == 7
    serves()
    assert log.stop() == 0, log.text
    _assert_clean_log(log.text)
    assert "restart: published" in log.text


@pytest.mark.parametrize("option,value,message", [
    ("--lease-timeout", "100000", "more than 0 and at most 86400"),
    ("--lease-timeout", "nan", "more than 0 and at most 86400"),
    ("--lease-timeout", "0", "more than 0 and at most 86400"),
    ("--max-consumers", "5000", "an int from 1 to 4096"),
    ("--max-consumers", "0", "an int from 1 to 4096"),
])
def test_the_same_limits_on_the_command_line_are_a_usage_error(
        sock: str, option: str, value: str, message: str) -> None:
    started = subprocess.run([sys.executable, "-m", "framebus", "produce", "--socket", sock,
                              option, value], capture_output=True, text=True, timeout=30,
                             cwd=ROOT)
    assert started.returncode == 2, started.stderr
    assert f"argument {option}: must be" in started.stderr and message in started.stderr
    _assert_clean_log(started.stderr)
    assert not os.path.exists(sock)


class _GoneCamera:
    """Controls of a camera unplugged between the daemon's look and its ioctl."""

    def set(self, values: object) -> dict[str, int]:
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))


class _CameraSource:
    def controls(self) -> _GoneCamera:
        return _GoneCamera()


def test_controls_a_camera_refuses_with_an_os_error_are_logged_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="framebus.daemon"):
        daemon._set_config_controls(_CameraSource(), "v4l2:/dev/video0",
                                    {"gain": 10})
    assert caplog.messages == ["SIGHUP: [controls] not set: [Errno 19] No such device"]
