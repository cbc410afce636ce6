"""Opening and configuring a camera through picamera2, imported only here.

picamera2 and libcamera's Python bindings come from the operating system on
a Raspberry Pi (``sudo apt install python3-picamera2``); pip cannot install
a working libcamera. They are imported when a libcamera source is opened,
never with framebus, and their absence is a `FramebusError` saying how to
get them.

The picamera2 calls this module makes (checked against picamera2 0.3.36):
``Picamera2.global_camera_info()``, ``Picamera2(camera_num)``,
``create_video_configuration(main={"format", "size"}, buffer_count=,
controls={"FrameRate"})``, ``configure()``, ``stream_configuration("main")``
(its ``format``, ``size``, ``stride``, ``framesize``), ``stream_map["main"]``,
``allocator.buffers(stream)``, ``stop()`` and ``close()``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from framebus import FramebusError, FrameFormat

from .formats import picamera2_format, stream_format

__all__ = ["Camera", "import_picamera2", "open_camera", "HOW_TO_GET"]

log = logging.getLogger("framebus.libcamera")

HOW_TO_GET = ("on Raspberry Pi OS: sudo apt install python3-picamera2 (it brings libcamera's "
              "Python bindings, which pip cannot install); in a virtualenv, create it with "
              "--system-site-packages so it sees them")


def import_picamera2() -> ModuleType:
    """The picamera2 module, or a `FramebusError` saying how to get it."""
    try:
        return importlib.import_module("picamera2")
    except ImportError as exc:
        raise FramebusError(f"--source libcamera needs picamera2 ({exc}): {HOW_TO_GET}") from None


@dataclass
class Camera:
    """A configured (not yet started) picamera2 camera and its main stream."""

    picam2: Any
    stream: Any  #: the libcamera Stream of "main"
    format: FrameFormat
    framebuffers: list[Any]

    def close(self) -> None:
        """Stop and close the camera; safe twice and after errors."""
        for step in (self.picam2.stop, self.picam2.close):
            try:
                step()
            except Exception as exc:  # a camera that is gone may refuse; it is closed anyway
                log.debug("picamera2 %s: %s", step.__name__, exc)


def open_camera(number: int, want: FrameFormat, fps: float, buffers: int) -> Camera:
    """Open camera `number`, configure its main stream as `want` (FourCC and
    size) with `buffers` buffers at `fps` (0: the camera's default)."""
    name = picamera2_format(want.pixel_format)
    module = import_picamera2()
    cameras = module.Picamera2.global_camera_info()
    if not 0 <= number < len(cameras):
        seen = "; ".join(f"{n}: {c.get('Model', '?')} ({c.get('Id', '?')})"
                         for n, c in enumerate(cameras)) or "none"
        raise FramebusError(f"libcamera has no camera {number} (cameras: {seen})")
    try:
        picam2 = module.Picamera2(number)
    except Exception as exc:
        raise FramebusError(f"libcamera camera {number}: cannot open it: {exc}") from None
    try:
        controls = {"FrameRate": fps} if fps > 0 else {}
        config = picam2.create_video_configuration(
            main={"format": name, "size": (want.width, want.height)}, buffer_count=buffers,
            controls=controls)
        picam2.configure(config)
        fmt = stream_format(picam2.stream_configuration("main"))
        stream = picam2.stream_map["main"]
        framebuffers = list(picam2.allocator.buffers(stream))
    except FramebusError:
        Camera(picam2, None, want, []).close()
        raise
    except Exception as exc:
        Camera(picam2, None, want, []).close()
        raise FramebusError(f"libcamera camera {number}: configuring {name} "
                            f"{want.width}x{want.height} failed: {exc}") from None
    if (fmt.width, fmt.height) != (want.width, want.height):
        log.warning("camera %d: asked for %dx%d, libcamera gave %dx%d", number, want.width,
                    want.height, fmt.width, fmt.height)
    if len(framebuffers) != buffers:
        log.warning("camera %d: asked for %d buffers, picamera2 allocated %d", number, buffers,
                    len(framebuffers))
    return Camera(picam2, stream, fmt, framebuffers)
