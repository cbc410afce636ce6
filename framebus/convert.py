"""Frames to BGR for OpenCV: the right conversion for every pixel format.

``to_bgr(frame)`` turns a frame of any framebus pixel format into an
``(H, W, 3)`` uint8 BGR image, the layout OpenCV's drawing, display and most
of its algorithms expect. It reads the frame's plane views directly, so rows
padded by ``bytesperline`` are honoured (the flat ``reshape(h*3//2, w)`` that
NV12 tempts one into gives wrong colours, silently, on padded rows):

=====  ================================================================
GREY   ``cv2.cvtColor(Y, COLOR_GRAY2BGR)``
YUYV   ``cv2.cvtColor(plane, COLOR_YUV2BGR_YUYV)``
UYVY   ``cv2.cvtColor(plane, COLOR_YUV2BGR_UYVY)``
RGB3   ``cv2.cvtColor(plane, COLOR_RGB2BGR)``
BGR3   a copy (the output must be writable: the frame is not)
XR24   ``cv2.cvtColor(plane, COLOR_BGRA2BGR)`` (B, G, R, X in memory)
XB24   ``cv2.cvtColor(plane, COLOR_RGBA2BGR)`` (R, G, B, X in memory)
NV12   ``cv2.cvtColorTwoPlane(Y, UV, COLOR_YUV2BGR_NV12)`` (NV21: ``..._NV21``)
YU12   ``cv2.cvtColor(I420, COLOR_YUV2BGR_I420)`` on the buffer itself when
       its rows are not padded; with padded rows OpenCV cannot read the
       chroma planes in place, so U and V are interleaved into one
       half-size scratch plane (the one copy, a third of the frame) and
       converted as NV12
MJPG   ``cv2.imdecode(array[:bytesused], IMREAD_COLOR)``
=====  ================================================================

YUV formats are read as BT.601 limited range (what V4L2 cameras produce by
default and what OpenCV's YUV conversions assume).

OpenCV is an optional dependency: ``pip install 'framebus[cv]'``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .errors import FramebusError
from .formats import FrameFormat

__all__ = ["FrameLike", "to_bgr"]

BGRImage = NDArray[np.uint8]


class FrameLike(Protocol):
    """What `to_bgr` needs of a frame: a local `Frame`, a producer's `Buffer`
    or a remote consumer's frame all have these.

    For MJPG, `array` holds the JPEG (a frame's `array` stops at its
    `bytesused`; trailing bytes after the JPEG's end are ignored anyway).
    """

    @property
    def format(self) -> FrameFormat: ...

    @property
    def planes(self) -> tuple[NDArray[np.uint8], ...]: ...

    @property
    def array(self) -> NDArray[np.uint8]: ...


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise FramebusError(
            f"to_bgr needs OpenCV: pip install 'framebus[cv]' ({exc})") from None
    return cv2


def to_bgr(frame: FrameLike, dst: BGRImage | None = None) -> BGRImage:
    """The frame as a writable ``(H, W, 3)`` uint8 BGR image.

    `dst`, when given, is written in place and returned (reuse one per
    stream to avoid an allocation per frame); it must be a writable uint8
    array of shape ``(H, W, 3)`` whose pixels are contiguous (ValueError
    otherwise). Raises `FramebusError` without OpenCV, or for an MJPG frame
    that does not decode to the stream's size.
    """
    fmt = frame.format
    _check_dst(dst, fmt)
    cv2 = _cv2()
    planes = frame.planes
    fourcc = fmt.pixel_format
    out: BGRImage
    if fourcc == "MJPG":
        data = frame.array
        bytesused = getattr(frame, "bytesused", None)  # a producer's Buffer has none
        return _decode_jpeg(cv2, data[:bytesused] if isinstance(bytesused, int) else data,
                            fmt, dst)
    if fourcc == "BGR3":
        out = np.empty((fmt.height, fmt.width, 3), np.uint8) if dst is None else dst
        np.copyto(out, planes[0])
        return out
    if fourcc in ("NV12", "NV21"):
        code = cv2.COLOR_YUV2BGR_NV12 if fourcc == "NV12" else cv2.COLOR_YUV2BGR_NV21
        out = cv2.cvtColorTwoPlane(planes[0], planes[1], code, dst=dst)
    elif fourcc == "YU12":
        out = _yu12(cv2, frame, dst)
    else:
        code = {"GREY": cv2.COLOR_GRAY2BGR, "YUYV": cv2.COLOR_YUV2BGR_YUYV,
                "UYVY": cv2.COLOR_YUV2BGR_UYVY, "RGB3": cv2.COLOR_RGB2BGR,
                "XR24": cv2.COLOR_BGRA2BGR, "XB24": cv2.COLOR_RGBA2BGR}.get(fourcc)
        if code is None:
            raise FramebusError(f"to_bgr does not know pixel format {fourcc!r}")
        out = cv2.cvtColor(planes[0], code, dst=dst)
    return _into(out, dst)


class _BadDestination(FramebusError, ValueError):
    """`dst` cannot hold the BGR image."""


def _check_dst(dst: BGRImage | None, fmt: FrameFormat) -> None:
    if dst is None:
        return
    shape = (fmt.height, fmt.width, 3)
    if not isinstance(dst, np.ndarray) or dst.dtype != np.uint8 or dst.shape != shape:
        got = (f"{dst.dtype} {dst.shape}" if isinstance(dst, np.ndarray)
               else type(dst).__name__)
        raise _BadDestination(f"dst must be a uint8 array of shape {shape}, not {got}")
    if not dst.flags.writeable:
        raise _BadDestination("dst is read-only")
    if dst.strides[1:] != (3, 1):
        raise _BadDestination(f"dst's pixels must be contiguous (strides (..., 3, 1)), "
                              f"not {dst.strides}")


def _into(out: BGRImage, dst: BGRImage | None) -> BGRImage:
    # OpenCV writes into dst when its shape and type fit, which _check_dst
    # made sure of; copy if it ever allocated instead, so dst always holds it.
    if dst is not None and out is not dst:
        np.copyto(dst, out)
        return dst
    return out


def _yu12(cv2: ModuleType, frame: FrameLike, dst: BGRImage | None) -> BGRImage:
    fmt = frame.format
    y, u, v = frame.planes
    whole = _contiguous_i420(frame.array, y, u, v, fmt)
    if whole is not None:
        out: BGRImage = cv2.cvtColor(whole, cv2.COLOR_YUV2BGR_I420, dst=dst)
        return out
    # Padded (or split) planes: OpenCV's I420 reader assumes chroma rows of
    # width/2 bytes. Interleave U and V into one scratch plane and read as NV12.
    uv = np.empty((fmt.height // 2, fmt.width // 2, 2), np.uint8)
    uv[..., 0] = u
    uv[..., 1] = v
    out = cv2.cvtColorTwoPlane(y, uv, cv2.COLOR_YUV2BGR_NV12, dst=dst)
    return out


def _contiguous_i420(array: NDArray[np.uint8], y: NDArray[np.uint8], u: NDArray[np.uint8],
                     v: NDArray[np.uint8], fmt: FrameFormat) -> NDArray[np.uint8] | None:
    """The frame as one ``(H*3/2, W)`` I420 image without a copy, if its
    planes lie tightly one after the other in `array`; else None."""
    w, h = fmt.width, fmt.height
    size = w * h * 3 // 2
    if fmt.bytesperline != w or array.ndim != 1 or array.size < size:
        return None
    start = _address(array)
    if (_address(y), _address(u), _address(v)) != (start, start + w * h, start + w * h * 5 // 4):
        return None
    return array[:size].reshape(h * 3 // 2, w)


def _address(a: NDArray[np.uint8]) -> int:
    return int(a.__array_interface__["data"][0])


def _decode_jpeg(cv2: ModuleType, data: NDArray[np.uint8], fmt: FrameFormat,
                 dst: BGRImage | None) -> BGRImage:
    bytesused = data.size
    image = cv2.imdecode(np.ascontiguousarray(data), cv2.IMREAD_COLOR) if bytesused else None
    if image is None:
        raise FramebusError(f"MJPG frame ({bytesused} bytes) is not a JPEG OpenCV can decode")
    if image.shape != (fmt.height, fmt.width, 3):
        raise FramebusError(f"MJPG frame decodes to {image.shape[1]}x{image.shape[0]}, "
                            f"but the stream is {fmt.width}x{fmt.height}")
    return _into(image, dst)
