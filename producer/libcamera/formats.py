"""picamera2's format names and framebus's FourCCs, and the stream format.

libcamera (and picamera2, which uses its names) names packed RGB formats the
way DRM does: by the pixel read as one little-endian word, most significant
component first. So libcamera's ``RGB888`` is B, G, R in memory (framebus's
``BGR3``) and ``BGR888`` is R, G, B (``RGB3``); ``XRGB8888`` is B, G, R, X
(``XR24``) and ``XBGR8888`` R, G, B, X (``XB24``). The Picamera2 manual's
Appendix A says as much (RGB888: each pixel laid out as [B, G, R]; XRGB8888:
[B, G, R, A]), and picamera2 0.3.36's own JPEG path
maps them the same way (``request.py``: ``{"XBGR8888": "RGBX", "XRGB8888":
"BGRX", "BGR888": "RGB", "RGB888": "BGR"}``, simplejpeg's byte orders).
``YUV420`` is planar I420 (Y, then U, then V, chroma rows half the luma
stride): framebus's ``YU12``.
"""

from __future__ import annotations

from collections.abc import Mapping

from framebus import FramebusError, FrameFormat, PixelFormat

__all__ = ["PICAMERA2_FORMATS", "picamera2_format", "stream_format", "supported"]

#: framebus FourCC -> picamera2/libcamera format name
PICAMERA2_FORMATS: dict[PixelFormat, str] = {
    "YU12": "YUV420",
    "BGR3": "RGB888",
    "RGB3": "BGR888",
    "XR24": "XRGB8888",
    "XB24": "XBGR8888",
}

_FOURCC_OF: dict[str, PixelFormat] = {name: fourcc for fourcc, name in PICAMERA2_FORMATS.items()}


def supported() -> str:
    """The formats the libcamera source serves, for error messages."""
    return ", ".join(f"{fourcc} ({name})" for fourcc, name in PICAMERA2_FORMATS.items())


def picamera2_format(fourcc: str) -> str:
    """picamera2's name for the framebus FourCC `fourcc`; a `FramebusError`
    naming what is supported for any other."""
    try:
        return PICAMERA2_FORMATS[fourcc]  # type: ignore[index]
    except KeyError:
        raise FramebusError(f"--source libcamera cannot serve {fourcc}; it serves "
                            f"{supported()}") from None


def stream_format(config: Mapping[str, object]) -> FrameFormat:
    """The framebus format of a configured picamera2 stream
    (``picam2.stream_configuration("main")``: format, size, stride,
    framesize), as libcamera set it, row padding and frame size included."""
    name = config.get("format")
    fourcc = _FOURCC_OF.get(name) if isinstance(name, str) else None
    if fourcc is None:
        raise FramebusError(f"libcamera configured the stream as {name!r}, which framebus "
                            f"cannot serve; it serves {supported()}")
    size, stride, framesize = config.get("size"), config.get("stride"), config.get("framesize")
    if not (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(n, int) for n in size)
            and isinstance(stride, int) and isinstance(framesize, int)):
        raise FramebusError(f"picamera2 gave an incomplete stream configuration: size {size!r}, "
                            f"stride {stride!r}, framesize {framesize!r}")
    width, height = size
    return FrameFormat(width, height, fourcc, bytesperline=stride, sizeimage=framesize)
