"""JPEG from every pixel format framebus carries (libjpeg-turbo via simplejpeg).

YUV sources are encoded from their own planes, with no colour conversion:
YU12 and GREY straight from the shared view, NV12's interleaved chroma and
YUYV/UYVY's packed samples split into planes first (into buffers allocated
once). RGB3/BGR3 go to libjpeg-turbo as they are; MJPG frames already are
JPEGs and pass through. The JPEG's YCbCr is full range (JFIF), the same
equations OpenCV's ``COLOR_YUV2BGR_*`` conversions use.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import NDArray

from framebus import FrameFormat, FramebusError
from framebus._zenoh import import_simplejpeg

Planes = tuple[NDArray[np.uint8], ...]


class JpegEncoder:
    """Encodes frames of one format at one quality."""

    def __init__(self, fmt: FrameFormat, quality: int = 80) -> None:
        if not 1 <= quality <= 100:
            raise FramebusError(f"JPEG quality must be 1..100, not {quality}")
        self.format = fmt
        self.quality = quality
        self._jpeg = import_simplejpeg()
        h, w = fmt.height, fmt.width
        encoders: dict[str, Callable[[Planes], bytes]] = {
            "GREY": lambda p: self._yuv(p[0], None, None),
            "YU12": lambda p: self._yuv(p[0], p[1], p[2]),
            "NV12": self._nv12,
            "YUYV": lambda p: self._packed(p[0], luma=0),
            "UYVY": lambda p: self._packed(p[0], luma=1),
            "RGB3": lambda p: self._rgb(p[0], "RGB"),
            "BGR3": lambda p: self._rgb(p[0], "BGR"),
            "XR24": lambda p: self._rgb(p[0], "BGRX"),  # B, G, R, X in memory
            "XB24": lambda p: self._rgb(p[0], "RGBX"),  # R, G, B, X
            "MJPG": lambda p: bytes(p[0]),
        }
        self._encode = encoders[fmt.pixel_format]
        if fmt.pixel_format == "NV12":
            self._u, self._v = np.empty((h // 2, w // 2), np.uint8), np.empty((h // 2, w // 2), np.uint8)
        elif fmt.pixel_format in ("YUYV", "UYVY"):
            self._y = np.empty((h, w), np.uint8)
            self._u, self._v = np.empty((h, w // 2), np.uint8), np.empty((h, w // 2), np.uint8)

    def encode(self, planes: Planes) -> bytes:
        """The JPEG of a frame given as its plane views (`frame.planes`).

        For MJPG, `planes` is the frame's one used-bytes array (`frame.array`).
        """
        return self._encode(planes)

    def _yuv(self, y: NDArray[np.uint8], u: NDArray[np.uint8] | None, v: NDArray[np.uint8] | None) -> bytes:
        return bytes(self._jpeg.encode_jpeg_yuv_planes(y, u, v, self.quality))

    def _nv12(self, planes: Planes) -> bytes:
        np.copyto(self._u, planes[1][:, :, 0])
        np.copyto(self._v, planes[1][:, :, 1])
        return self._yuv(planes[0], self._u, self._v)

    def _packed(self, image: NDArray[np.uint8], luma: int) -> bytes:
        """YUYV (luma 0) or UYVY (luma 1): 4:2:2 planes from the packed samples."""
        chroma = 1 - luma
        np.copyto(self._y, image[:, :, luma])
        np.copyto(self._u, image[:, 0::2, chroma])
        np.copyto(self._v, image[:, 1::2, chroma])
        return self._yuv(self._y, self._u, self._v)

    def _rgb(self, image: NDArray[np.uint8], order: str) -> bytes:
        return bytes(self._jpeg.encode_jpeg(image, self.quality, order, "420"))
