"""Test helpers for framebus users: a real producer for your own tests.

As a context manager::

    from framebus.testing import synthetic_producer

    def test_my_detector():
        with synthetic_producer(width=320, height=240, pixel_format="GREY") as path:
            with framebus.Consumer(path) as cam, cam.get(timeout=5) as frame:
                assert my_detector(frame.array) is not None

With pytest, the ``framebus_producer`` fixture (registered through the
``pytest11`` entry point when framebus is installed) yields the socket path of
a producer running in its own process, stopped when the test ends. Choose its
stream per test with indirect parametrization::

    @pytest.mark.parametrize("framebus_producer",
                             [dict(pixel_format="NV12", width=640, height=480)],
                             indirect=True)
    def test_nv12(framebus_producer): ...

or make fixtures of your own with `producer_fixture` (any scope)::

    grey_cam = producer_fixture(pixel_format="GREY", fps=30, scope="module")

A producer serves the moving test pattern (`framebus.pattern.Pattern`, any
format, MJPG included) unless given ``frames``: a list of images, served in a
cycle, or a function ``frames(seq) -> image`` that the child process imports
by name (a module-level function, or a ``"module:function"`` string). An
image is laid out as the stream's ``frame.array`` shows it, without padding:
``(H, W)``, ``(H, W, 2)`` or ``(H, W, 3)`` for packed formats; for NV12 and
YU12 the planes one after the other (``H*3/2*W`` bytes, e.g. the
``(H*3//2, W)`` array ``cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)`` gives for
YU12); for MJPG the JPEG's bytes as a 1-D uint8 array.

The producer is the library's own `Producer`, in a child process
(``python -m framebus.testing``), so it needs nothing but framebus and never
depends on the current directory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal, Sequence, Union

import numpy as np
from numpy.typing import NDArray

from . import paths
from .errors import FramebusError
from .formats import FrameFormat, FrameViews, PixelFormat

__all__ = ["FrameSource", "framebus_producer", "producer_fixture", "synthetic_producer"]

Image = NDArray[np.uint8]
#: What a test producer serves: None (the test pattern), images (cycled),
#: or a function of the sequence number, given itself or as "module:function".
FrameSource = Union[None, Sequence[Image], Callable[[int], Image], str]
Scope = Literal["function", "class", "module", "package", "session"]
_STREAM_OPTIONS = ("width", "height", "pixel_format", "fps", "buffers", "bytesperline", "frames")


class _BadFrames(FramebusError, ValueError):
    """An image or frame function that cannot make frames of the stream."""


@contextmanager
def synthetic_producer(width: int = 320, height: int = 240, pixel_format: PixelFormat = "RGB3",
                       fps: float = 100.0, buffers: int = 8, startup_timeout: float = 10.0,
                       *, bytesperline: int = 0, frames: FrameSource = None) -> Iterator[str]:
    """Run a producer in a child process; yields its socket path.

    Without `frames`, frames carry the test pattern (`framebus.pattern.Pattern`),
    so a test can check the pixels it gets. `bytesperline` pads rows as a
    driver may. Bad arguments raise `FramebusError` (a `ValueError` for bad
    images) before any process starts. The child is stopped (SIGTERM, then
    SIGKILL) and its directory removed when the block ends.
    """
    fmt = FrameFormat(width, height, pixel_format, bytesperline=bytesperline)
    workdir = tempfile.mkdtemp(prefix="test-", dir=_private_parent())
    try:
        path = os.path.join(workdir, "cam.sock")
        log_path = os.path.join(workdir, "child.log")
        frames_spec = _frames_spec(fmt, frames, workdir)
        spec = {"socket": path, "width": width, "height": height, "format": pixel_format,
                "bytesperline": bytesperline, "fps": fps, "buffers": buffers,
                "frames": frames_spec}
        env = dict(os.environ)
        root = frames_spec.get("import_root")
        if isinstance(root, str) and root:  # the child imports the user's frame function from where we found it
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        with open(log_path, "w") as log:
            child = subprocess.Popen([sys.executable, "-m", "framebus.testing", json.dumps(spec)],
                                     stdout=subprocess.PIPE, stderr=log, cwd=workdir, env=env)
        try:
            _wait_ready(child, startup_timeout, log_path)
            yield path
        finally:
            _stop(child)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(child: subprocess.Popen[bytes], timeout: float, log_path: str) -> None:
    """Wait for the child's "ready" line: it prints it once its socket
    listens (the socket file appears at bind(), a moment before listen())."""
    assert child.stdout is not None
    with child.stdout:
        readable, _, _ = select.select([child.stdout], [], [], timeout)
        line = child.stdout.readline() if readable else b""
    if line.strip() == b"ready":
        return
    if not readable:
        problem = f"was not ready in {timeout} s"
    else:  # its stdout closed: it is exiting
        try:
            problem = f"exited with status {child.wait(timeout=10)}"
        except subprocess.TimeoutExpired:
            problem = "closed its stdout without saying it was ready"
    with open(log_path) as log:
        raise FramebusError(f"test producer {problem}:\n{log.read()}")


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _frames_spec(fmt: FrameFormat, frames: FrameSource, workdir: str) -> dict[str, object]:
    """How the child gets its frames; checks them first, in this process."""
    if frames is None:
        return {"kind": "pattern"}
    if isinstance(frames, str) or callable(frames):
        name = frames if isinstance(frames, str) else _callable_name(frames)
        _import_callable(name)
        return {"kind": "callable", "name": name, "import_root": _import_root(name)}
    if isinstance(frames, np.ndarray):
        raise _BadFrames("frames is a list of images (or a function); wrap one image as [image]")
    images = list(frames)
    if not images:
        raise _BadFrames("frames is an empty list; give at least one image")
    scratch = fmt.views(np.zeros(fmt.sizeimage, np.uint8))
    for n, image in enumerate(images):
        _write_image(fmt, scratch, image, what=f"frames[{n}]")
    path = os.path.join(workdir, "frames.npz")
    np.savez(path, *images)  # an archive of .npy files: MJPG images differ in size
    return {"kind": "images", "path": path}


def _callable_name(function: Callable[[int], Image]) -> str:
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise FramebusError(
            f"frames={function!r}: the producer runs in another process, which imports "
            f"the function by name; use a module-level function of an importable module "
            f"or pass 'module:function'")
    return f"{module}:{qualname}"


def _import_root(name: str) -> str | None:
    """The directory a child must search to import `name`'s module as we did."""
    module_name = name.partition(":")[0]
    file: str | None = getattr(importlib.import_module(module_name), "__file__", None)
    if file is None:
        return None
    root = os.path.dirname(os.path.abspath(file))
    for _ in range(module_name.count(".") + (os.path.basename(file) == "__init__.py")):
        root = os.path.dirname(root)
    return root


def _import_callable(name: str) -> Callable[[int], Image]:
    module_name, _, attr = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise FramebusError(f"frames={name!r} cannot be imported ({exc}); "
                            f"expected 'module:function'") from None
    if not callable(target):
        raise FramebusError(f"frames={name!r} is not callable")
    function: Callable[[int], Image] = target
    return function


def _write_image(fmt: FrameFormat, views: FrameViews, image: object, what: str = "image") -> int:
    """Copy `image` (laid out as this module's docstring says) into a
    buffer's views; returns the bytes used. Raises `_BadFrames` (a
    `FramebusError` and `ValueError`) if it does not fit the format."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise _BadFrames(f"{what} must be a uint8 numpy array, not "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if fmt.compressed:
        if image.ndim != 1 or not 0 < image.size <= fmt.sizeimage:
            raise _BadFrames(f"{what}: an MJPG image is the JPEG's bytes, 1-D, 1..{fmt.sizeimage}"
                             f" bytes; got shape {image.shape}")
        views.raw[:image.size] = image
        return image.size
    if fmt.planar:
        tight = sum(p.size for p in views.planes)
        if image.size != tight:
            raise _BadFrames(f"{what}: a {fmt.width}x{fmt.height} {fmt.pixel_format} image is "
                             f"its planes one after the other, {tight} bytes; got shape {image.shape}")
        flat, at = image.reshape(-1), 0
        for plane in views.planes:
            plane[...] = flat[at:at + plane.size].reshape(plane.shape)
            at += plane.size
        return fmt.sizeimage
    if image.shape != views.array.shape:
        raise _BadFrames(f"{what}: a {fmt.pixel_format} image has shape {views.array.shape}, "
                         f"not {image.shape}")
    np.copyto(views.array, image)
    return fmt.sizeimage


def _frame_writer(fmt: FrameFormat, frames: dict[str, Any]) -> Callable[[FrameViews, int], int]:
    """In the child: a function that fills a buffer with frame `seq`."""
    if frames["kind"] == "pattern":
        from .pattern import Pattern
        pattern = Pattern(fmt)
        return lambda views, seq: pattern.draw(views.planes, seq)
    if frames["kind"] == "images":
        with np.load(frames["path"]) as archive:
            images = [archive[f"arr_{n}"] for n in range(len(archive.files))]
        return lambda views, seq: _write_image(fmt, views, images[(seq - 1) % len(images)])
    function = _import_callable(frames["name"])
    return lambda views, seq: _write_image(fmt, views, function(seq),
                                          what=f"{frames['name']}({seq})")


def _private_parent() -> str | None:
    """Where test producers' directories go: the default socket's directory
    (`framebus.paths.runtime_dir`), else the system's temporary directory
    (each one a fresh mkdtemp directory only this user can enter)."""
    try:
        return paths.make_runtime_dir()
    except FramebusError:
        return None


def _serve(spec: dict[str, Any]) -> int:
    """The child: publish frames at the asked rate until SIGTERM."""
    from .producer import Producer

    # Stdout says "ready" to the parent, once; anything else printed (by a
    # frames function, say) goes to the log with stderr.
    ready = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fmt = FrameFormat(int(spec["width"]), int(spec["height"]), spec["format"],
                      bytesperline=int(spec.get("bytesperline", 0)))
    write = _frame_writer(fmt, spec.get("frames", {"kind": "pattern"}))
    write(fmt.views(np.zeros(fmt.sizeimage, np.uint8)), 1)  # fail before the socket appears
    period = 1.0 / float(spec["fps"]) if spec["fps"] else 0.0
    with Producer(str(spec["socket"]), fmt, int(spec["buffers"])) as bus:
        with ready:
            ready.write("ready\n")  # the socket listens: consumers may attach
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
            bus.publish(buffer, bytesused=write(buffer.views, bus.next_seq))
    return 0


def producer_fixture(*, width: int = 320, height: int = 240, pixel_format: PixelFormat = "RGB3",
                     fps: float = 100.0, buffers: int = 8, bytesperline: int = 0,
                     frames: FrameSource = None, scope: Scope = "function",
                     name: str | None = None) -> Any:
    """A pytest fixture that yields the socket path of a test producer.

    Assign it at module level (the attribute's name is the fixture's name,
    unless `name` says otherwise)::

        nv12_cam = producer_fixture(pixel_format="NV12", width=640, height=480)

    `scope` is pytest's ("function", "class", "module", "package",
    "session"). Indirect parametrization overrides any of the stream options
    per test: ``@pytest.mark.parametrize("nv12_cam", [dict(fps=5)], indirect=True)``.
    """
    import pytest

    defaults: dict[str, Any] = {"width": width, "height": height, "pixel_format": pixel_format,
                                "fps": fps, "buffers": buffers, "bytesperline": bytesperline,
                                "frames": frames}

    @pytest.fixture(scope=scope, name=name)
    def fixture(request: pytest.FixtureRequest) -> Iterator[str]:
        with synthetic_producer(**{**defaults, **_overrides(request)}) as path:
            yield path

    return fixture


def _overrides(request: Any) -> dict[str, Any]:
    """The stream options a test's indirect parametrization gives."""
    param = getattr(request, "param", None)
    if param is None:
        return {}
    if not isinstance(param, dict):
        raise FramebusError(f"parametrize {request.fixturename} with dicts of stream options "
                            f"({', '.join(_STREAM_OPTIONS)}), not {param!r}")
    unknown = sorted(set(param) - set(_STREAM_OPTIONS))
    if unknown:
        raise FramebusError(f"unknown stream option(s) {', '.join(unknown)} for "
                            f"{request.fixturename}; known: {', '.join(_STREAM_OPTIONS)}")
    return param


try:
    if __name__ == "__main__":  # the producer child needs no fixtures
        raise ImportError
    import pytest as _pytest  # noqa: F401  (only needed for the fixtures)
except ImportError:
    pass
else:
    #: A 320x240 RGB3 test-pattern producer at 100 fps; parametrize it
    #: indirectly with a dict of `synthetic_producer` options to change that.
    framebus_producer = producer_fixture()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m framebus.testing")
    parser.add_argument("spec", help="JSON: socket, width, height, format, bytesperline, fps, "
                                     "buffers, frames")
    sys.exit(_serve(json.loads(parser.parse_args().spec)))
