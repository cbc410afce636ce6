"""Formats whose planes live in separate buffers (NV12M, NV21M, YUV420M).

A multi-planar driver may offer NV12 as ``NM12``: the Y plane and the UV
plane each in a memory of its own, with its own ``bytesperline``. framebus
streams these as the single-buffer format they split (`CONTIGUOUS`), so
consumers see the same `FrameFormat`, the same `frame.planes`, the same
strides; only the bus's buffer table differs: each buffer lists one
``Plane(fd, offset, length, bytesperline)`` per driver plane.

- `planar_pool()` allocates the bus's memfd buffers for USERPTR capture: every
  plane of every buffer at a page-aligned offset of one sealed memfd, so the
  driver gets one user pointer per plane.
- `plane_targets()` and `plane_regions()` give, for a bus buffer, where each
  driver plane goes: its address and length (USERPTR), or a flat writable
  array (the copy fallback), whether the bus buffer is one contiguous frame or
  a list of planes.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from framebus import Buffer, BufferPool, BufferTable, FramebusError, FrameFormat
from framebus.buffers import MEMFD, Memory, Plane
from framebus.linux import memfd

__all__ = ["SEPARATE", "CONTIGUOUS", "planar_pool", "plane_targets", "plane_regions",
           "check_planes"]

#: the framebus format each separate-plane FourCC is streamed as
CONTIGUOUS = {"NM12": "NV12", "NM21": "NV21", "YM12": "YU12"}
#: the separate-plane FourCC of each framebus format that has one
SEPARATE = {single: split for split, single in CONTIGUOUS.items()}


def check_planes(fmt: FrameFormat, fourcc: str, planes: tuple[tuple[int, int], ...]) -> None:
    """Refuse a driver's per-plane ``(bytesperline, sizeimage)`` that the
    bus's views of `fmt` would not read correctly."""
    if len(planes) != len(fmt.planes):
        raise FramebusError(f"the driver gives {fourcc} in {len(planes)} planes; "
                            f"{fmt.pixel_format} has {len(fmt.planes)}")
    for (bpl, size), layout in zip(planes, fmt.planes):
        if bpl != layout.bytesperline or size < layout.length:
            want = "/".join(str(p.bytesperline) for p in fmt.planes)
            got = "/".join(str(b) for b, _ in planes)
            raise FramebusError(
                f"the driver's {fourcc} planes (bytesperline {got}, sizes "
                f"{'/'.join(str(s) for _, s in planes)}) do not fit {fmt.pixel_format} "
                f"with bytesperline {want}: framebus cannot describe its chroma rows")


def planar_pool(fmt: FrameFormat, count: int, sizes: tuple[int, ...], name: str) -> BufferPool:
    """`count` buffers of ``len(sizes)`` planes in one sealed memfd.

    Plane i of every buffer is ``sizes[i]`` bytes at a page-aligned offset;
    the pool's own mapping stays writable, every other one is read-only.
    """
    strides = [memfd.page_align(s) for s in sizes]
    per_buffer = sum(strides)
    size = per_buffer * count
    fd = memfd.create(name, size)
    try:
        buffers = []
        for n in range(count):
            offsets = [n * per_buffer + sum(strides[:i]) for i in range(len(sizes))]
            buffers.append(tuple(Plane(0, off, length, layout.bytesperline)
                                 for off, length, layout in zip(offsets, sizes, fmt.planes)))
        pool = BufferPool(fmt, BufferTable((Memory(size, MEMFD),), tuple(buffers)), [fd])
    except BaseException:
        os.close(fd)
        raise
    try:  # seal after mapping: this mapping stays writable, no new one can be
        memfd.add_seals(fd, memfd.READ_ONLY_SEALS)
    except BaseException:
        pool.close()
        raise
    return pool


def plane_regions(buffer: Buffer, fmt: FrameFormat, nplanes: int) -> list[NDArray[np.uint8]]:
    """Flat writable uint8 arrays, one per driver plane, inside `buffer`.

    A one-plane driver format fills the whole frame; a separate-plane one
    fills each plane of a contiguous bus buffer at its layout offset, or each
    plane of a multi-plane bus buffer.
    """
    if nplanes == 1:
        return [buffer.raw]
    if len(buffer.memory_planes) == 1:
        return [buffer.raw[p.offset:p.offset + p.length] for p in fmt.planes]
    # the plane views are strided (rows by bytesperline); the memory under
    # each is one flat run of the table's plane length from the same start
    return [as_strided(view, shape=(plane.length,), strides=(1,))
            for view, plane in zip(buffer.views.planes, buffer.memory_planes)]


def plane_targets(buffer: Buffer, fmt: FrameFormat, nplanes: int) -> list[tuple[int, int]]:
    """(address, length) of each driver plane's memory in `buffer` (USERPTR)."""
    return [(region.ctypes.data, region.nbytes) for region in plane_regions(buffer, fmt, nplanes)]
