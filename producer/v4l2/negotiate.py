"""Format negotiation: what was asked for, what the camera can, what it does.

`negotiate()` asks the driver for a pixel format and frame size with
VIDIOC_TRY_FMT, sets them with VIDIOC_S_FMT and the frame rate with
VIDIOC_S_PARM, and returns the bus's `FrameFormat` built from the driver's own
answer: its `bytesperline` (rows padded as the hardware wants them) and its
`sizeimage`. A driver adjusts a format it cannot do to the nearest one it can;
framebus does not silently stream something else, it refuses with a
`FramebusError` listing what the camera offers (VIDIOC_ENUM_FMT,
ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS).

On a multi-planar node that offers NV12, NV21 or YU12 only with each plane in
a buffer of its own (``NM12``, ``NM21``, ``YM12``), that FourCC is asked for
instead and streamed as the single-buffer format (see ``planes.py``).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from fractions import Fraction

from framebus import FramebusError, FrameFormat
from framebus.formats import PIXEL_FORMATS
from framebus.linux import videodev2 as v
from framebus.linux.ioctl import ioctl

from .device import Device, busy_message
from .devices import PixelFormatInfo, _formats  # the enumeration devices.py already does
from .planes import CONTIGUOUS, SEPARATE, check_planes

__all__ = ["Negotiated", "negotiate", "describe_formats", "FPS_TOLERANCE"]

log = logging.getLogger("framebus.v4l2")

#: a frame rate within this fraction of the one asked for is the one asked for
FPS_TOLERANCE = 0.01


@dataclass(frozen=True)
class Negotiated:
    """The stream as the driver set it up."""

    format: FrameFormat
    #: frames per second the driver reports (0.0 if it cannot tell)
    fps: float
    #: the FourCC the driver streams (``NM12`` for an NV12 `format` in separate planes)
    driver_fourcc: str = ""


def describe_formats(formats: tuple[PixelFormatInfo, ...]) -> str:
    """One line per pixel format: its sizes and frame rates (for messages)."""
    if not formats:
        return "  (the driver enumerates no formats)"
    lines = []
    for f in formats:
        sizes = [f"{s.width}x{s.height} ({_rates(s.intervals)})" for s in f.sizes]
        if f.size_range:
            r = f.size_range
            sizes.append(f"{r.min_width}x{r.min_height} to {r.max_width}x{r.max_height} "
                         f"step {r.step_width}x{r.step_height} ({_rates(r.intervals)})")
        known = (f" [captured as {CONTIGUOUS[f.fourcc]}]" if f.fourcc in CONTIGUOUS else
                 "" if f.fourcc in PIXEL_FORMATS else " [not a framebus format]")
        lines.append(f"  {f.fourcc} {f.description}{known}: {', '.join(sizes) or 'no sizes listed'}")
    return "\n".join(lines)


def negotiate(dev: Device, want: FrameFormat, fps: float) -> Negotiated:
    """Set `want` (FourCC, width, height) and `fps` (0: leave the driver's rate).

    Raises `FramebusError` naming what the camera can do when it cannot do
    exactly this, and the busy message when another process holds it.
    """
    fourcc = _driver_fourcc(dev, want.pixel_format)
    code = v.fourcc(fourcc)
    tried = dev.format(v.VIDIOC_TRY_FMT, _request(dev, code, want.width, want.height))
    got_code, width, height, _, _ = _fields(dev, tried)
    if (got_code, width, height) != (code, want.width, want.height):
        raise _refusal(dev, f"{want.width}x{want.height} {want.pixel_format}",
                       f"it offered {width}x{height} {v.fourcc_str(got_code)} instead")
    try:
        answer = dev.format(v.VIDIOC_S_FMT, _request(dev, code, want.width, want.height))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise FramebusError(busy_message(dev.path)) from None
        raise FramebusError(f"{dev.path}: VIDIOC_S_FMT failed: {exc.strerror}") from None
    got_code, width, height, bytesperline, sizeimage = _fields(dev, answer)
    if (got_code, width, height) != (code, want.width, want.height):
        raise _refusal(dev, f"{want.width}x{want.height} {want.pixel_format}",
                       f"S_FMT set {width}x{height} {v.fourcc_str(got_code)}")
    planes = _planes(dev, answer)
    separate = fourcc != want.pixel_format
    try:
        fmt = FrameFormat(width, height, want.pixel_format,
                          bytesperline=0 if want.compressed else bytesperline,
                          sizeimage=0 if separate else sizeimage)
        if separate:
            check_planes(fmt, fourcc, planes)
        elif len(planes) != 1:
            raise FramebusError(f"the driver gives {fourcc} in {len(planes)} separate planes")
    except FramebusError as exc:
        raise FramebusError(f"{dev.path}: the driver's format cannot be described: {exc}") from None
    dev.plane_sizes = tuple(size for _, size in planes)
    actual = _set_rate(dev, fps)
    if fps and actual and abs(actual - fps) > FPS_TOLERANCE * fps:
        raise _refusal(dev, f"{width}x{height} {want.pixel_format} at {fps:g} fps",
                       f"it set {actual:g} fps")
    log.info("%s: %dx%d %s, %d bytes/line, %d bytes/frame, %s%s", dev.path, width, height,
             want.pixel_format, fmt.bytesperline, fmt.sizeimage,
             f"{actual:g} fps" if actual else "frame rate not reported",
             f"; as {fourcc}: {len(planes)} planes in separate buffers, bytesperline "
             f"{'/'.join(str(b) for b, _ in planes)}" if separate else "")
    return Negotiated(fmt, actual, fourcc)


def _driver_fourcc(dev: Device, pixel_format: str) -> str:
    """The FourCC to ask for: `pixel_format`, or its separate-plane twin on a
    multi-planar node that offers only the twin."""
    twin = SEPARATE.get(pixel_format)
    if not dev.multiplanar or twin is None:
        return pixel_format
    offered = set()
    for index in range(256):
        desc = v.v4l2_fmtdesc(index=index, type=dev.buf_type)
        try:
            ioctl(dev.fd, v.VIDIOC_ENUM_FMT, desc)
        except OSError:
            break
        offered.add(v.fourcc_str(desc.pixelformat))
    return twin if twin in offered and pixel_format not in offered else pixel_format


def _planes(dev: Device, f: v.v4l2_format) -> tuple[tuple[int, int], ...]:
    """(bytesperline, sizeimage) of each memory plane of a format answer."""
    if not dev.multiplanar:
        return ((f.fmt.pix.bytesperline, f.fmt.pix.sizeimage),)
    p = f.fmt.pix_mp
    return tuple((p.plane_fmt[i].bytesperline, p.plane_fmt[i].sizeimage)
                 for i in range(p.num_planes))


def _request(dev: Device, code: int, width: int, height: int) -> v.v4l2_format:
    f = v.v4l2_format(type=dev.buf_type)
    if dev.multiplanar:
        p = f.fmt.pix_mp
        p.num_planes = 1
    else:
        p = f.fmt.pix
    p.width, p.height, p.pixelformat, p.field = width, height, code, v.V4L2_FIELD_NONE
    return f


def _fields(dev: Device, f: v.v4l2_format) -> tuple[int, int, int, int, int]:
    """(pixelformat, width, height, bytesperline, sizeimage) of a format answer."""
    if dev.multiplanar:
        p = f.fmt.pix_mp
        return (p.pixelformat, p.width, p.height,
                p.plane_fmt[0].bytesperline, p.plane_fmt[0].sizeimage)  # fmt: skip
    q = f.fmt.pix
    return q.pixelformat, q.width, q.height, q.bytesperline, q.sizeimage


def _set_rate(dev: Device, fps: float) -> float:
    """S_PARM the frame interval 1/fps (if fps); the rate the driver then reports."""
    try:
        parm = dev.parm(v.VIDIOC_G_PARM)
    except OSError:
        return 0.0  # the driver has no notion of a frame rate (G_PARM is optional)
    capture = parm.parm.capture
    if fps:
        if not capture.capability & v.V4L2_CAP_TIMEPERFRAME:
            log.warning("%s: the driver cannot set a frame rate (no V4L2_CAP_TIMEPERFRAME); "
                        "it runs at its own", dev.path)
        else:
            interval = Fraction(1 / fps).limit_denominator(1_000_000)
            capture.timeperframe.numerator = interval.numerator
            capture.timeperframe.denominator = interval.denominator
            parm = dev.parm(v.VIDIOC_S_PARM, parm)
            capture = parm.parm.capture
    t = capture.timeperframe
    return t.denominator / t.numerator if t.numerator and t.denominator else 0.0


def _refusal(dev: Device, asked: str, outcome: str) -> FramebusError:
    offers = describe_formats(_formats(dev.fd, dev.buf_type))
    return FramebusError(f"{dev.path} ({dev.card}) cannot capture {asked} ({outcome}); "
                         f"it offers:\n{offers}")


def _rates(intervals: tuple[tuple[int, int], ...]) -> str:
    rates = [d / n for n, d in intervals if n]
    return "/".join(f"{r:g}" for r in rates) + " fps" if rates else "fps unknown"
