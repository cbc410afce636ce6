"""Test helpers for framebus users: a real synthetic producer for your own tests.

As a context manager::

    from framebus.testing import synthetic_producer

    def test_my_detector():
        with synthetic_producer(width=320, height=240, pixel_format="GREY") as path:
            with framebus.Consumer(path) as cam, cam.get(timeout=5) as frame:
                assert my_detector(frame.array) is not None

or, with pytest, as the ``framebus_producer`` fixture (registered through the
``pytest11`` entry point when framebus is installed): it yields the socket path
of a producer running in its own process, stopped when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import FramebusError


@contextmanager
def synthetic_producer(width: int = 320, height: int = 240, pixel_format: str = "RGB3",
                       fps: float = 100.0, buffers: int = 8,
                       startup_timeout: float = 10.0) -> Iterator[str]:
    """Run `framebus produce --source synthetic` in a child process; yields its socket path.

    Frames carry the synthetic pattern (see `producer.synthetic.Pattern`), so a
    test can check the pixels it gets.
    """
    workdir = tempfile.mkdtemp(prefix="framebus-test-")
    path = os.path.join(workdir, "cam.sock")
    log_path = os.path.join(workdir, "producer.log")
    with open(log_path, "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "framebus", "produce", "--socket", path, "--source", "synthetic",
             "--width", str(width), "--height", str(height), "--format", pixel_format,
             "--fps", str(fps), "--buffers", str(buffers)],
            stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + startup_timeout
        while not os.path.exists(path):
            if child.poll() is not None or time.monotonic() > deadline:
                with open(log_path) as log:
                    raise FramebusError(f"synthetic producer did not start:\n{log.read()}")
            time.sleep(0.02)
        yield path
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(workdir, ignore_errors=True)


try:
    import pytest
except ImportError:  # pytest is only needed for the fixture
    pass
else:
    @pytest.fixture
    def framebus_producer() -> Iterator[str]:
        """The socket path of a synthetic 320x240 RGB3 producer at 100 fps."""
        with synthetic_producer() as path:
            yield path
