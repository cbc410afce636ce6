"""Pixel formats: plane layout of a frame and its numpy views.

A `FrameFormat` names a V4L2 FourCC and a size; from them it derives each
plane's offset, length and `bytesperline` the way V4L2's single-planar API lays
them out, and builds the numpy views consumers see. Rows padded by
`bytesperline` appear through strides, never as extra columns.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from .errors import InvalidFormat, ProtocolError


class PlaneLayout(NamedTuple):
    """Where one plane sits inside a frame buffer and how it is shaped."""

    name: str
    offset: int
    length: int
    bytesperline: int
    shape: tuple[int, ...]  # numpy shape of the plane's view
    pixel_bytes: int  # bytes per pixel (the stride of the second axis)


class _Spec(NamedTuple):
    channels: int  # bytes per pixel in the first plane (1, 2, 3 or 4)
    planar: str  # "" (packed), "NV12" or "YU12"
    compressed: bool = False


#: The V4L2 FourCCs framebus knows, for type checkers (`PIXEL_FORMATS` at run time).
PixelFormat = Literal["GREY", "YUYV", "UYVY", "RGB3", "BGR3", "XR24", "XB24", "NV12", "NV21", "YU12",
                      "MJPG"]

_SPECS: dict[PixelFormat, _Spec] = {
    "GREY": _Spec(1, ""),
    "YUYV": _Spec(2, ""),
    "UYVY": _Spec(2, ""),
    "RGB3": _Spec(3, ""),
    "BGR3": _Spec(3, ""),
    # 32-bit RGB with an unused fourth byte, named as V4L2 names them by their
    # bytes in memory: XR24 (V4L2_PIX_FMT_XBGR32) is B, G, R, X; XB24
    # (V4L2_PIX_FMT_RGBX32) is R, G, B, X. libcamera calls them XRGB8888 and
    # XBGR8888 (DRM names: the 32-bit word, most significant byte first).
    "XR24": _Spec(4, ""),
    "XB24": _Spec(4, ""),
    "NV12": _Spec(1, "NV12"),
    "NV21": _Spec(1, "NV12"),  # NV12 with V before U in the chroma plane
    "YU12": _Spec(1, "YU12"),
    "MJPG": _Spec(1, "", compressed=True),
}

PIXEL_FORMATS: tuple[PixelFormat, ...] = tuple(_SPECS)


@dataclass(frozen=True)
class FrameFormat:
    """The stream format: size, V4L2 FourCC and row stride.

    `bytesperline` defaults to the tightest row; a larger value pads each row
    (as many drivers do) and shows up as the views' row stride. For MJPG,
    `sizeimage` is the buffer size and each frame's `bytesused` says how much
    of it holds the JPEG.

    `pixel_format` is a `PixelFormat` for type checkers; any other string is
    an `InvalidFormat` error at run time.
    """

    width: int
    height: int
    pixel_format: PixelFormat = "RGB3"
    bytesperline: int = 0
    sizeimage: int = 0
    planes: tuple[PlaneLayout, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = _SPECS.get(self.pixel_format)
        if spec is None:
            raise InvalidFormat(
                f"unknown pixel format {self.pixel_format!r}; "
                f"known: {', '.join(PIXEL_FORMATS)}")
        for name in ("width", "height", "bytesperline", "sizeimage"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidFormat(f"{name} must be a non-negative int, not {value!r}")
        if not (1 <= self.width <= 16384 and 1 <= self.height <= 16384):
            raise InvalidFormat(f"frame size {self.width}x{self.height} out of range (1..16384)")
        if spec.planar and (self.width % 2 or self.height % 2):
            raise InvalidFormat(f"{self.pixel_format} needs an even width and height")
        if self.pixel_format in ("YUYV", "UYVY") and self.width % 2:
            raise InvalidFormat(f"{self.pixel_format} needs an even width")
        min_bpl = self.width * spec.channels
        bpl = self.bytesperline or min_bpl
        if bpl < min_bpl:
            raise InvalidFormat(f"bytesperline {bpl} is less than a row ({min_bpl} bytes)")
        if spec.planar == "YU12" and bpl % 2:
            raise InvalidFormat("YU12 needs an even bytesperline")
        object.__setattr__(self, "bytesperline", bpl)
        if spec.compressed:
            # A JPEG's size varies: the buffer is sizeimage (as the driver sets
            # it) and each frame's bytesused says how much of it is used.
            size = self.sizeimage or max(self.width * self.height * 2, 4096)
            planes: tuple[PlaneLayout, ...] = (PlaneLayout("data", 0, size, 0, (size,), 1),)
        else:
            planes = _layout(self.pixel_format, spec, self.width, self.height, bpl)
        minimum = planes[-1].offset + planes[-1].length
        if self.sizeimage and self.sizeimage < minimum:
            raise InvalidFormat(f"sizeimage {self.sizeimage} is less than a frame ({minimum} bytes)")
        object.__setattr__(self, "planes", planes)
        object.__setattr__(self, "sizeimage", self.sizeimage or minimum)

    @property
    def compressed(self) -> bool:
        """True for formats whose frames vary in size (MJPG)."""
        return _SPECS[self.pixel_format].compressed

    @property
    def planar(self) -> bool:
        return bool(_SPECS[self.pixel_format].planar)

    def to_wire(self) -> dict[str, object]:
        return {"width": self.width, "height": self.height, "pixel_format": self.pixel_format,
                "bytesperline": self.bytesperline, "sizeimage": self.sizeimage}

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> FrameFormat:
        try:
            return cls(**fields)  # every field is checked by __post_init__
        except (TypeError, InvalidFormat) as exc:
            raise ProtocolError(f"bad format description: {exc}") from None

    def views(self, memory: memoryview | mmap.mmap | NDArray[np.uint8], offset: int = 0) -> FrameViews:
        """The numpy views of a frame whose bytes start at `offset` of `memory`.

        Writable if `memory` is, read-only otherwise: no byte is copied.
        """
        raw = np.frombuffer(memory, dtype=np.uint8, count=self.sizeimage, offset=offset)
        planes = tuple(_plane_view(raw, p.offset, p) for p in self.planes)
        return FrameViews(raw, self._array(raw, planes), planes)

    def plane_views(self, regions: list[NDArray[np.uint8]]) -> FrameViews:
        """The views of a frame whose planes live in separate regions (one
        per plane, as V4L2's multi-planar formats such as NV12M store them)."""
        planes = tuple(_plane_view(r, 0, p) for r, p in zip(regions, self.planes))
        return FrameViews(regions[0], self._array(regions[0], planes), planes)

    def _array(self, raw: NDArray[np.uint8], planes: tuple[NDArray[np.uint8], ...]) -> NDArray[np.uint8]:
        return raw if self.compressed or self.planar else planes[0]


class FrameViews(NamedTuple):
    """The numpy views of one buffer: the whole, the frame as users see it, its planes."""

    raw: NDArray[np.uint8]
    array: NDArray[np.uint8]
    planes: tuple[NDArray[np.uint8], ...]


def _layout(fourcc: PixelFormat, spec: _Spec, width: int, height: int, bpl: int) -> tuple[PlaneLayout, ...]:
    if spec.planar == "":
        shape = (height, width) if spec.channels == 1 else (height, width, spec.channels)
        return (PlaneLayout(fourcc, 0, bpl * height, bpl, shape, spec.channels),)
    y = PlaneLayout("Y", 0, bpl * height, bpl, (height, width), 1)
    ch, cw = height // 2, width // 2
    if spec.planar == "NV12":
        chroma = "VU" if fourcc == "NV21" else "UV"
        return (y, PlaneLayout(chroma, y.length, bpl * ch, bpl, (ch, cw, 2), 2))
    # YU12 (I420): V4L2 gives the chroma planes half the luma bytesperline.
    u = PlaneLayout("U", y.length, bpl // 2 * ch, bpl // 2, (ch, cw), 1)
    v = PlaneLayout("V", u.offset + u.length, bpl // 2 * ch, bpl // 2, (ch, cw), 1)
    return (y, u, v)


def _plane_view(raw: NDArray[np.uint8], offset: int, plane: PlaneLayout) -> NDArray[np.uint8]:
    base = raw[offset:offset + plane.length]
    if len(plane.shape) == 1:
        return base
    if len(plane.shape) == 2:
        strides: tuple[int, ...] = (plane.bytesperline, 1)
    else:
        strides = (plane.bytesperline, plane.pixel_bytes, 1)
    return as_strided(base, shape=plane.shape, strides=strides, writeable=base.flags.writeable)
