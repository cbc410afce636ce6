"""Test helpers for framebus users: a real producer for your own tests.

As a context manager::

    from framebus.testing import synthetic_producer

    def test_my_detector():
        with synthetic_producer(width=320, height=240, pixel_format="GREY") as path:
            with framebus.Consumer(path) as cam, cam.get(timeout=5) as frame:
                assert my_detector(frame.array) is not None

or, with pytest, as the ``framebus_producer`` fixture (registered through the
``pytest11`` entry point when framebus is installed): it yields the socket path
of a producer running in its own process, stopped when the test ends.

The producer is the library's own `Producer` drawing `framebus.pattern.Pattern`
frames, in a child process (``python -m framebus.testing``), so it needs
nothing but framebus and never depends on the current directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import FramebusError

__all__ = ["framebus_producer", "synthetic_producer"]


@contextmanager
def synthetic_producer(width: int = 320, height: int = 240, pixel_format: str = "RGB3",
                       fps: float = 100.0, buffers: int = 8,
                       startup_timeout: float = 10.0) -> Iterator[str]:
    """Run a synthetic producer in a child process; yields its socket path.

    Frames carry the test pattern (`framebus.pattern.Pattern`), so a test can
    check the pixels it gets. The child is stopped (SIGTERM, then SIGKILL)
    and its directory removed when the block ends.
    """
    workdir = tempfile.mkdtemp(prefix="framebus-test-")
    path = os.path.join(workdir, "cam.sock")
    log_path = os.path.join(workdir, "producer.log")
    spec = {"socket": path, "width": width, "height": height, "format": pixel_format,
            "fps": fps, "buffers": buffers}
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, "-m", "framebus.testing", json.dumps(spec)],
                                 stdout=subprocess.DEVNULL, stderr=log, cwd=workdir)
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


def _serve(spec: dict[str, object]) -> int:
    """The child: publish pattern frames at the asked rate until SIGTERM."""
    from .formats import FrameFormat
    from .pattern import Pattern
    from .producer import Producer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fmt = FrameFormat(int(spec["width"]), int(spec["height"]),  # type: ignore[call-overload]
                      str(spec["format"]))
    pattern = Pattern(fmt)
    period = 1.0 / float(spec["fps"]) if spec["fps"] else 0.0  # type: ignore[arg-type]
    with Producer(str(spec["socket"]), fmt, int(spec["buffers"])) as bus:  # type: ignore[call-overload]
        next_at = time.monotonic()
        while not stop.is_set():
            if period:
                next_at = max(next_at + period, time.monotonic() - period)
                if stop.wait(max(0.0, next_at - time.monotonic())):
                    break
            try:
                buffer = bus.acquire(timeout=0.1)
            except TimeoutError:
                continue
            pattern.draw(buffer.planes, bus.next_seq)
            bus.publish(buffer)
    return 0


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m framebus.testing")
    parser.add_argument("spec", help="JSON: socket, width, height, format, fps, buffers")
    sys.exit(_serve(json.loads(parser.parse_args().spec)))
