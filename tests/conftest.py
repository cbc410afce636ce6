"""Fixtures: short socket paths, producer processes, and leak checks."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "tests", "agent.py")


@pytest.fixture
def workdir() -> Iterator[str]:
    """A short directory under /tmp (Unix socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="fbt-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock(workdir: str) -> str:
    return os.path.join(workdir, "cam.sock")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Processes:
    """Child processes a test starts; all are killed and reaped at the end."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[str]] = []

    def start(self, *argv: str, **kwargs) -> subprocess.Popen[str]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen([sys.executable, *argv], text=True, cwd=ROOT, **kwargs)
        self.children.append(proc)
        return proc

    def producer(self, sock: str, *extra: str, fps: float = 200, width: int = 320,
                 height: int = 240, fmt: str = "RGB3") -> subprocess.Popen[str]:
        proc = self.start("-m", "framebus", "produce", "--socket", sock, "--fps", str(fps),
                          "--width", str(width), "--height", str(height), "--format", fmt,
                          *extra, stdout=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None,
                 what="the producer's socket")
        if proc.poll() is not None:
            pytest.fail(f"producer exited: {proc.stderr.read()}")
        return proc

    def agent(self, command: str, sock: str, *extra: str) -> subprocess.Popen[str]:
        return self.start(AGENT, command, "--socket", sock, *extra)

    def close(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    yield p
    p.close()


def read_json(proc: subprocess.Popen[str], timeout: float = 30.0) -> dict:
    """The next JSON line a child prints (fails on timeout or early exit)."""
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            pytest.fail(f"no output from child within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=5)
        pytest.fail(f"child exited ({proc.returncode}) without output: {proc.stderr.read()}")
    return json.loads(line)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail if the test leaves this process with more fds, threads or children."""
    me = psutil.Process()
    gc.collect()  # objects of earlier tests freed now, not during this one
    fds, threads = me.num_fds(), me.num_threads()
    # Children that outlive single tests (multiprocessing's resource tracker) are not ours.
    children = {c.pid for c in me.children()}
    yield
    wait_for(lambda: me.num_threads() <= threads, timeout=5, what="threads to end")
    gc.collect()
    assert me.num_fds() == fds, "file descriptors leaked"
    assert {c.pid for c in me.children()} <= children, "child processes left behind"


def publishing(bus):
    """Publish a frame every 20 ms until stopped (a child may be waiting for
    one at any moment): returns (stop event, thread)."""
    import threading

    import framebus
    stop = threading.Event()

    def loop():
        while not stop.wait(0.02):
            try:
                bus.publish(bus.acquire(timeout=0.5))
            except framebus.FramebusError:
                return
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return stop, thread
