"""Frames into PyAV `VideoFrame`s for the recorder: zero-copy where the
encoder takes the shared view as it is (NV12, YU12, GREY), one conversion
otherwise (docs/recording.md lists which)."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from .errors import FramebusError
from .formats import FrameFormat
from .frame import Frame

if TYPE_CHECKING:
    from av.video.codeccontext import VideoCodecContext
    from av.video.frame import VideoFrame

Converter = Callable[[Frame], "list[VideoFrame]"]


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def converter(av: ModuleType, fmt: FrameFormat) -> Converter:
    """How a frame of `fmt` becomes the encoder's input, copying as little as it can."""
    frames = av.VideoFrame
    w, h = fmt.width, fmt.height
    kind = fmt.pixel_format
    if kind == "GREY":
        return lambda frame: [frames.from_numpy_buffer(frame.planes[0], format="gray")]
    if kind in ("RGB3", "BGR3", "XR24", "XB24"):  # zero-copy into swscale, which converts it once
        # XR24 is B, G, R, X in memory, XB24 R, G, B, X: read as BGRA/RGBA, the X byte is dropped
        packed = {"RGB3": "rgb24", "BGR3": "bgr24", "XR24": "bgra", "XB24": "rgba"}[kind]
        return lambda frame: [frames.from_numpy_buffer(frame.planes[0], format=packed)]
    if kind in ("NV12", "YU12"):
        pix_fmt = "nv12" if kind == "NV12" else "yuv420p"
        scratch = np.empty((h * 3 // 2, w), np.uint8)

        def planar(frame: Frame) -> list[VideoFrame]:
            view = _shared_yuv420(frame.planes, fmt)
            if view is not None:  # the encoder reads shared memory itself
                return [frames.from_numpy_buffer(view, format=pix_fmt)]
            flat = scratch.reshape(-1)
            start = 0
            for plane in frame.planes:  # multi-planar buffers, odd heights: one copy
                rows = plane.reshape(plane.shape[0], -1)
                flat[start:start + rows.size].reshape(rows.shape)[...] = rows
                start += rows.size
            return [frames.from_ndarray(scratch, format=pix_fmt)]
        return planar
    if kind in ("YUYV", "UYVY"):
        return _packed_422(frames, w, h, luma=0 if kind == "YUYV" else 1)
    if kind == "MJPG":
        decoder: VideoCodecContext = av.CodecContext.create("mjpeg", "r")

        def jpeg(frame: Frame) -> list[VideoFrame]:
            try:
                return list(decoder.decode(av.Packet(frame.array.tobytes())))
            except av.FFmpegError:
                return []  # a corrupt JPEG: the frame is skipped (a gap)
        return jpeg
    raise FramebusError(f"cannot record {kind} frames")


def _shared_yuv420(planes: tuple[NDArray[np.uint8], ...], fmt: FrameFormat) -> NDArray[np.uint8] | None:
    """A (h*3/2, w) view over the whole frame, as PyAV's nv12/yuv420p take it,
    if the planes sit where that layout says (V4L2 single-planar); else None."""
    y = planes[0]
    bpl = fmt.bytesperline
    if fmt.height % 4 or y.strides != (bpl, 1):  # PyAV derives the height as rows//6*4
        return None
    base = _address(y)
    if any(_address(p) != base + layout.offset for p, layout in zip(planes, fmt.planes)):
        return None
    return as_strided(y, shape=(fmt.height * 3 // 2, fmt.width), strides=(bpl, 1),
                      writeable=False)


def _packed_422(frames: Any, w: int, h: int, luma: int) -> Converter:
    """YUYV/UYVY to yuv420p in one pass (PyAV cannot take packed 4:2:2 from
    numpy): luma copied, chroma taken from every other row."""
    chroma = 1 - luma
    buffer = np.empty((h * 3 // 2, w), np.uint8)
    flat = buffer.reshape(-1)
    y_dst = buffer[:h]
    u_dst = flat[w * h:w * h + w * h // 4].reshape(h // 2, w // 2)
    v_dst = flat[w * h + w * h // 4:].reshape(h // 2, w // 2)

    def convert(frame: Frame) -> list[VideoFrame]:
        packed = frame.planes[0]  # (h, w, 2)
        np.copyto(y_dst, packed[:, :, luma])
        np.copyto(u_dst, packed[0::2, 0::2, chroma])
        np.copyto(v_dst, packed[0::2, 1::2, chroma])
        if h % 4:
            return [frames.from_ndarray(buffer, format="yuv420p")]
        return [frames.from_numpy_buffer(buffer, format="yuv420p")]
    return convert
