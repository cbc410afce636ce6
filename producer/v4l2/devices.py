"""Which V4L2 capture devices exist, what they offer, and how to capture.

``list_devices()`` opens each ``/dev/video*`` node (or the given paths), asks
``VIDIOC_QUERYCAP``, enumerates pixel formats, frame sizes and frame
intervals, and probes which buffer-memory strategies the driver supports, in
the order a framebus producer prefers them:

``userptr``
    the driver writes straight into the bus's own memfd buffers (zero copy);
``mmap+expbuf``
    driver buffers, exported as DMA-BUF fds and shared with consumers (zero
    copy);
``mmap+copy``
    driver buffers copied into the bus's buffers (the fallback every
    streaming driver offers).

Each device's controls (exposure, gain, white balance...) are listed with
their type, range, default, current value and menu items
(``producer.v4l2.controls``).

Probing uses ``VIDIOC_REQBUFS`` with ``count = 0`` (which allocates nothing and,
on kernels since 4.20, also reports the ``V4L2_BUF_CAP_SUPPORTS_*`` bits), and
for EXPBUF one real one-buffer allocation that is freed at once. Nodes that
are not video capture nodes (a UVC camera's metadata node, an M2M codec, a
radio) are left out.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from framebus.linux import videodev2 as v
from framebus.linux.ioctl import ioctl

from .controls import format_controls, query_controls, read_values
from .planes import CONTIGUOUS

__all__ = [
    "DeviceInfo",
    "PixelFormatInfo",
    "FrameSize",
    "FrameSizeRange",
    "list_devices",
    "format_devices",
    "USERPTR",
    "MMAP_EXPBUF",
    "MMAP_COPY",
]

USERPTR = "userptr"
MMAP_EXPBUF = "mmap+expbuf"
MMAP_COPY = "mmap+copy"

_MAX_ENUM = 256  # a guard against drivers that never answer EINVAL


@dataclass(frozen=True)
class FrameSize:
    """One discrete frame size and its frame intervals (seconds per frame)."""

    width: int
    height: int
    intervals: tuple[tuple[int, int], ...] = ()

    @property
    def fps(self) -> tuple[float, ...]:
        """The frame rates, from the intervals."""
        return tuple(d / n for n, d in self.intervals if n)


@dataclass(frozen=True)
class FrameSizeRange:
    """A stepwise or continuous range of frame sizes.

    ``intervals`` are those offered at the largest size.
    """

    min_width: int
    max_width: int
    step_width: int
    min_height: int
    max_height: int
    step_height: int
    continuous: bool = False
    intervals: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class PixelFormatInfo:
    """A pixel format the device offers, with its sizes."""

    fourcc: str
    description: str
    compressed: bool = False
    emulated: bool = False
    sizes: tuple[FrameSize, ...] = ()
    size_range: FrameSizeRange | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """What one V4L2 capture node is and offers.

    ``error`` is set when the node could not be opened (every other field is
    then empty) or its buffer queue could not be probed, e.g.
    ``"EBUSY: Device or resource busy"`` while another program streams from
    it (what QUERYCAP and the enumerations told is kept; ``strategies`` is
    empty).
    """

    path: str
    driver: str = ""
    card: str = ""
    bus_info: str = ""
    version: str = ""
    capabilities: int = 0
    device_caps: int = 0
    multiplanar: bool = False
    streaming: bool = False
    formats: tuple[PixelFormatInfo, ...] = ()
    #: the current format: (width, height, FourCC, bytesperline, sizeimage)
    current: tuple[int, int, str, int, int] | None = None
    #: the V4L2_BUF_CAP_SUPPORTS_* bits REQBUFS reported (0 on old kernels)
    buf_caps: int = 0
    #: memory types REQBUFS accepts: "mmap", "userptr", "dmabuf"
    memory: tuple[str, ...] = ()
    #: capture strategies usable with framebus, best first
    strategies: tuple[str, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: the controls, as ``V4L2Controls.describe()`` gives them (name, type,
    #: minimum, maximum, step, default, value, menu, flags)
    controls: tuple[dict[str, Any], ...] = ()

    @property
    def buf_type(self) -> int:
        """The v4l2_buf_type for capture on this node."""
        if self.multiplanar:
            return v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
        return v.V4L2_BUF_TYPE_VIDEO_CAPTURE


def _video_nodes() -> list[str]:
    def number(path: str) -> tuple[int, str]:
        match = re.search(r"(\d+)$", path)
        return (int(match.group(1)) if match else 1 << 30, path)

    return sorted(glob.glob("/dev/video*"), key=number)


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name}: {os.strerror(exc.errno)}" if exc.errno else str(exc)


def _try(fd: int, request: int, arg: ctypes.Structure) -> bool:
    """The ioctl, True on success; EINVAL (end of a list, unsupported) is False."""
    try:
        ioctl(fd, request, arg)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTTY):
            return False
        raise
    return True


def _intervals(fd: int, pixelformat: int, width: int, height: int) -> tuple[tuple[int, int], ...]:
    found: list[tuple[int, int]] = []
    for index in range(_MAX_ENUM):
        fi = v.v4l2_frmivalenum(index=index, pixel_format=pixelformat, width=width, height=height)
        if not _try(fd, v.VIDIOC_ENUM_FRAMEINTERVALS, fi):
            break
        if fi.type == v.V4L2_FRMIVAL_TYPE_DISCRETE:
            found.append((fi.discrete.numerator, fi.discrete.denominator))
        else:  # stepwise/continuous: report the bounds (fastest first)
            found.append((fi.stepwise.min.numerator, fi.stepwise.min.denominator))
            found.append((fi.stepwise.max.numerator, fi.stepwise.max.denominator))
            break
    return tuple(found)


def _pixel_format(fd: int, desc: v.v4l2_fmtdesc) -> PixelFormatInfo:
    sizes: list[FrameSize] = []
    size_range: FrameSizeRange | None = None
    for index in range(_MAX_ENUM):
        fs = v.v4l2_frmsizeenum(index=index, pixel_format=desc.pixelformat)
        if not _try(fd, v.VIDIOC_ENUM_FRAMESIZES, fs):
            break
        if fs.type == v.V4L2_FRMSIZE_TYPE_DISCRETE:
            w, h = fs.discrete.width, fs.discrete.height
            sizes.append(FrameSize(w, h, _intervals(fd, desc.pixelformat, w, h)))
            continue
        sw = fs.stepwise
        size_range = FrameSizeRange(
            sw.min_width, sw.max_width, sw.step_width,
            sw.min_height, sw.max_height, sw.step_height,
            continuous=fs.type == v.V4L2_FRMSIZE_TYPE_CONTINUOUS,
            intervals=_intervals(fd, desc.pixelformat, sw.max_width, sw.max_height),
        )  # fmt: skip
        break
    return PixelFormatInfo(
        fourcc=v.fourcc_str(desc.pixelformat),
        description=v.c_string(desc.description),
        compressed=bool(desc.flags & v.V4L2_FMT_FLAG_COMPRESSED),
        emulated=bool(desc.flags & v.V4L2_FMT_FLAG_EMULATED),
        sizes=tuple(sizes),
        size_range=size_range,
    )


def _formats(fd: int, buf_type: int) -> tuple[PixelFormatInfo, ...]:
    found = []
    for index in range(_MAX_ENUM):
        desc = v.v4l2_fmtdesc(index=index, type=buf_type)
        if not _try(fd, v.VIDIOC_ENUM_FMT, desc):
            break
        found.append(_pixel_format(fd, desc))
    return tuple(found)


def _current(fd: int, buf_type: int) -> tuple[int, int, str, int, int] | None:
    f = v.v4l2_format(type=buf_type)
    if not _try(fd, v.VIDIOC_G_FMT, f):
        return None
    if buf_type == v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE:
        p = f.fmt.pix_mp
        size = sum(p.plane_fmt[i].sizeimage for i in range(min(p.num_planes, v.VIDEO_MAX_PLANES)))
        return (p.width, p.height, v.fourcc_str(p.pixelformat), p.plane_fmt[0].bytesperline,
                size or p.plane_fmt[0].sizeimage)
    q = f.fmt.pix
    return q.width, q.height, v.fourcc_str(q.pixelformat), q.bytesperline, q.sizeimage


_MEMORY_NAMES = {
    v.V4L2_MEMORY_MMAP: ("mmap", v.V4L2_BUF_CAP_SUPPORTS_MMAP),
    v.V4L2_MEMORY_USERPTR: ("userptr", v.V4L2_BUF_CAP_SUPPORTS_USERPTR),
    v.V4L2_MEMORY_DMABUF: ("dmabuf", v.V4L2_BUF_CAP_SUPPORTS_DMABUF),
}


def _memory(fd: int, buf_type: int) -> tuple[int, tuple[str, ...]]:
    """(REQBUFS capabilities, memory types accepted), from count = 0 probes."""
    caps = 0
    accepted = []
    for memory, (name, bit) in _MEMORY_NAMES.items():
        rb = v.v4l2_requestbuffers(count=0, type=buf_type, memory=memory)
        ok = _try(fd, v.VIDIOC_REQBUFS, rb)
        caps |= rb.capabilities
        # kernels >= 4.20 say it outright; older ones only by accepting it
        if ok and (not rb.capabilities or rb.capabilities & bit):
            accepted.append(name)
    return caps, tuple(accepted)


def _can_export(fd: int, buf_type: int) -> bool:
    """Allocate one MMAP buffer, try VIDIOC_EXPBUF on it, free it again."""
    rb = v.v4l2_requestbuffers(count=1, type=buf_type, memory=v.V4L2_MEMORY_MMAP)
    if not _try(fd, v.VIDIOC_REQBUFS, rb) or rb.count < 1:
        return False
    try:
        exp = v.v4l2_exportbuffer(type=buf_type, index=0, flags=os.O_CLOEXEC)
        if not _try(fd, v.VIDIOC_EXPBUF, exp):
            return False
        os.close(exp.fd)
        return True
    finally:
        ioctl(fd, v.VIDIOC_REQBUFS, v.v4l2_requestbuffers(count=0, type=buf_type, memory=v.V4L2_MEMORY_MMAP))


def _controls(fd: int) -> tuple[dict[str, Any], ...]:
    """The device's controls and their current values (read-only ioctls)."""
    controls = query_controls(fd)
    values = read_values(fd, controls)
    return tuple(c.describe(values[c.name]) for c in controls)


def _probe(path: str, fd: int) -> DeviceInfo | None:
    cap = v.v4l2_capability()
    if not _try(fd, v.VIDIOC_QUERYCAP, cap):
        return None  # not a V4L2 node
    caps = cap.device_caps if cap.capabilities & v.V4L2_CAP_DEVICE_CAPS else cap.capabilities
    if caps & v.V4L2_CAP_VIDEO_CAPTURE_MPLANE:
        multiplanar = True
    elif caps & v.V4L2_CAP_VIDEO_CAPTURE:
        multiplanar = False
    else:
        return None  # a metadata, output or radio node
    if caps & (v.V4L2_CAP_VIDEO_M2M | v.V4L2_CAP_VIDEO_M2M_MPLANE):
        return None  # a memory-to-memory codec, not a camera
    buf_type = v.V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE if multiplanar else v.V4L2_BUF_TYPE_VIDEO_CAPTURE
    version = cap.version
    info = DeviceInfo(
        path=path,
        driver=v.c_string(cap.driver),
        card=v.c_string(cap.card),
        bus_info=v.c_string(cap.bus_info),
        version=f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}",
        capabilities=cap.capabilities,
        device_caps=caps,
        multiplanar=multiplanar,
        streaming=bool(caps & v.V4L2_CAP_STREAMING),
        formats=_formats(fd, buf_type),
        current=_current(fd, buf_type),
        controls=_controls(fd),
    )
    if not info.streaming:
        return replace(info, notes=("no streaming I/O (read() only): not usable",))
    try:
        buf_caps, memory = _memory(fd, buf_type)
        export = "mmap" in memory and _can_export(fd, buf_type)
    except OSError as exc:  # EBUSY: another program owns the buffer queue
        return replace(info, error=_describe(exc))
    strategies = []
    if "userptr" in memory:
        strategies.append(USERPTR)
    if export:
        strategies.append(MMAP_EXPBUF)
    if "mmap" in memory:
        strategies.append(MMAP_COPY)
    return replace(info, buf_caps=buf_caps, memory=memory, strategies=tuple(strategies))


def list_devices(paths: Iterable[str] | None = None) -> list[DeviceInfo]:
    """Probe V4L2 capture devices: ``paths``, or every ``/dev/video*`` node.

    Nodes that are not video capture nodes are left out; a node that cannot
    be opened or probed (EACCES, EBUSY, ENODEV...) is listed with ``error``
    set. Nothing about a device is changed: buffers allocated by the probe
    are freed before it returns.
    """
    found: list[DeviceInfo] = []
    for path in _video_nodes() if paths is None else list(paths):
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            found.append(DeviceInfo(path=path, error=_describe(exc)))
            continue
        try:
            info = _probe(path, fd)
        except OSError as exc:
            info = DeviceInfo(path=path, error=_describe(exc))
        finally:
            os.close(fd)
        if info is not None:
            found.append(info)
    return found


def _fps_text(intervals: tuple[tuple[int, int], ...]) -> str:
    rates = [d / n for n, d in intervals if n]
    return ", ".join(f"{r:g}" for r in rates) + " fps" if rates else "fps unknown"


def format_devices(devices: list[DeviceInfo]) -> str:
    """A readable listing of ``list_devices()``'s answer, one block per device."""
    if not devices:
        return "no V4L2 capture devices found\n"
    lines: list[str] = []
    for dev in devices:
        if not dev.driver:
            lines.append(f"{dev.path}: {dev.error}")
            continue
        lines.append(f"{dev.path}: {dev.card} ({dev.driver}, {dev.bus_info}, version {dev.version})")
        planes = "multi-planar" if dev.multiplanar else "single-planar"
        strategies = ", ".join(dev.strategies) or "none"
        lines.append(f"  capture, {planes}; capture strategies: {strategies}")
        if dev.error:
            lines.append(f"  error: {dev.error}")
        if dev.current:
            w, h, code, bpl, size = dev.current
            lines.append(f"  current format: {w}x{h} {code}, {bpl} bytes/line, {size} bytes")
        for note in dev.notes:
            lines.append(f"  note: {note}")
        for fmt in dev.formats:
            extra = " (compressed)" if fmt.compressed else ""
            extra += " (emulated)" if fmt.emulated else ""
            if fmt.fourcc in CONTIGUOUS:
                extra += f" (separate planes: framebus streams it as {CONTIGUOUS[fmt.fourcc]})"
            lines.append(f"  {fmt.fourcc:<4}  {fmt.description}{extra}")
            for frame_size in fmt.sizes:
                lines.append(f"      {frame_size.width}x{frame_size.height}  "
                             f"{_fps_text(frame_size.intervals)}")
            if fmt.size_range:
                r = fmt.size_range
                kind = "continuous" if r.continuous else "stepwise"
                lines.append(
                    f"      {r.min_width}x{r.min_height} to {r.max_width}x{r.max_height}, "
                    f"{kind} step {r.step_width}x{r.step_height}  {_fps_text(r.intervals)}"
                )
        if dev.controls:
            lines.append("  controls (set with framebus produce --control NAME=VALUE):")
            lines.extend(format_controls(list(dev.controls)))
        elif dev.streaming:
            lines.append("  controls: none")
    return "\n".join(lines) + "\n"
