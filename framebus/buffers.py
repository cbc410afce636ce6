"""Frame buffers: the table that describes them and the producer's pool.

A buffer is a list of planes ``(fd, offset, length, bytesperline)``, as
libcamera's ``FrameBuffer::Plane`` and V4L2's multi-planar API describe them.
Several buffers may share one fd at page-aligned offsets; a DMA-BUF exported by
a driver is just another fd in the same table. `BufferTable` is that
description (what crosses the control socket); `BufferPool` is the producer's
ownership of the memory behind it.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .errors import FramebusError
from .formats import FrameFormat, FrameViews
from .linux import memfd

MEMFD = "memfd"
DMABUF = "dmabuf"
_KINDS = (MEMFD, DMABUF)


class Plane(NamedTuple):
    """One plane of a buffer: which memory (index into the table's `memories`),
    where in it, how long, and its row stride."""

    memory: int
    offset: int
    length: int
    bytesperline: int


class Memory(NamedTuple):
    """One distinct fd of the table: its size in bytes and what kind of file it is."""

    size: int
    kind: str


@dataclass(frozen=True)
class BufferTable:
    """The layout of every buffer, without the fds themselves.

    `memories[i]` describes the i-th fd sent with the table; `buffers[n]` lists
    buffer n's planes.
    """

    memories: tuple[Memory, ...]
    buffers: tuple[tuple[Plane, ...], ...]

    def to_wire(self) -> dict[str, list[list[object]]]:
        return {"memories": [list(m) for m in self.memories],
                "buffers": [[list(p) for p in planes] for planes in self.buffers]}

    @classmethod
    def from_wire(cls, wire: object, fmt: FrameFormat, max_buffers: int = 256) -> BufferTable:
        """Parse and check a table received from a producer.

        Every number must be a plain int in range (no floats, bools or
        negatives) and every offset page-aligned; anything else is a
        `FramebusError`.
        """
        try:
            if type(wire) is not dict:
                raise TypeError("not a map")
            memories = tuple(_wire_memory(m) for m in _wire_list(wire["memories"], 256))
            buffers = tuple(tuple(Plane(*(_wire_int(v, "plane field") for v in _wire_list(p, 4)))
                                  for p in _wire_list(planes, 8))
                            for planes in _wire_list(wire["buffers"], max_buffers))
        except (TypeError, ValueError, KeyError) as exc:
            raise FramebusError(f"malformed buffer table: {exc}") from None
        table = cls(memories, buffers)
        table.check(fmt, max_buffers)
        for n, planes in enumerate(table.buffers):
            for plane in planes:
                if plane.offset % memfd.PAGE_SIZE:
                    raise FramebusError(f"buffer {n}: plane offset {plane.offset} is not "
                                        f"page-aligned ({memfd.PAGE_SIZE} bytes)")
        return table

    def check(self, fmt: FrameFormat, max_buffers: int = 256) -> None:
        """Raise FramebusError unless every plane lies inside its memory and
        the planes can hold a frame of `fmt`."""
        if not 1 <= len(self.buffers) <= max_buffers:
            raise FramebusError(f"buffer table has {len(self.buffers)} buffers (1..{max_buffers})")
        for m in self.memories:
            if m.kind not in _KINDS or m.size <= 0:
                raise FramebusError(f"bad memory entry {m}")
        for n, planes in enumerate(self.buffers):
            if len(planes) not in (1, len(fmt.planes)):
                raise FramebusError(f"buffer {n} has {len(planes)} planes; {fmt.pixel_format} needs "
                                    f"1 or {len(fmt.planes)}")
            needed = [fmt.sizeimage] if len(planes) == 1 else [p.length for p in fmt.planes]
            for plane, need in zip(planes, needed):
                if not 0 <= plane.memory < len(self.memories):
                    raise FramebusError(f"buffer {n} names memory {plane.memory}, which is not in the table")
                size = self.memories[plane.memory].size
                if plane.offset < 0 or plane.length < need or plane.offset + plane.length > size:
                    raise FramebusError(
                        f"buffer {n}: plane at {plane.offset}+{plane.length} does not fit "
                        f"a {size}-byte memory or is shorter than {need} bytes")


_MAX_WIRE_INT = 1 << 48  # 256 TiB: more than any buffer, less than anything that overflows


def _wire_int(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value < _MAX_WIRE_INT:
        raise ValueError(f"{what} must be an int in 0..2**48, got {value!r:.40}")
    return value


def _wire_memory(value: object) -> Memory:
    size, kind = _wire_list(value, 2)
    if type(kind) is not str:
        raise ValueError(f"memory kind must be a str, got {kind!r:.40}")
    return Memory(_wire_int(size, "memory size"), kind)


def _wire_list(value: object, limit: int) -> list[object]:
    if type(value) is not list or len(value) > limit:
        raise ValueError(f"expected a list of at most {limit} items, got {type(value).__name__}")
    return value


def frame_views(fmt: FrameFormat, planes: tuple[Plane, ...], maps: list[mmap.mmap]) -> FrameViews:
    """The numpy views of one buffer over already-mapped memories."""
    if len(planes) == 1:
        plane = planes[0]
        return fmt.views(maps[plane.memory], plane.offset)
    regions = [np.frombuffer(maps[p.memory], np.uint8, p.length, p.offset) for p in planes]
    return fmt.plane_views(regions)


class Buffer:
    """A producer-side buffer: writable views of its planes.

    Obtained from `Producer.acquire()`; fill `array` (or `planes`), then give
    it to `Producer.publish()`. `planes` are the same numpy plane views a
    consumer's `Frame.planes` gives (Y and UV for NV12, ...), writable here;
    `memory_planes` says where each plane lives (memory, offset, length,
    bytesperline), as the buffer table describes it.
    """

    __slots__ = ("index", "memory_planes", "views", "format")

    def __init__(self, index: int, memory_planes: tuple[Plane, ...], views: FrameViews,
                 fmt: FrameFormat) -> None:
        self.index = index
        self.memory_planes = memory_planes
        self.views = views
        self.format = fmt

    @property
    def array(self) -> NDArray[np.uint8]:
        """The frame as a numpy array (shape per DESIGN.md's format table)."""
        return self.views.array

    @property
    def planes(self) -> tuple[NDArray[np.uint8], ...]:
        """Each plane's writable view (Y, UV for NV12; Y, U, V for YU12; one
        for packed formats), with `bytesperline` strides honoured."""
        return self.views.planes

    @property
    def raw(self) -> NDArray[np.uint8]:
        """Every byte of the buffer as a flat uint8 array."""
        return self.views.raw

    def __repr__(self) -> str:
        return f"<Buffer {self.index}>"


class BufferPool:
    """The producer's buffers and the fds behind them; it owns and closes both.

    Use `BufferPool.allocate()` for memfd-backed buffers, or build one from
    fds a driver exported (`BufferPool(fmt, table, fds)`).
    """

    def __init__(self, fmt: FrameFormat, table: BufferTable, fds: list[int], *,
                 writable: bool = True) -> None:
        table.check(fmt)
        if len(fds) != len(table.memories):
            raise FramebusError(f"{len(fds)} fds for {len(table.memories)} memories")
        self.format = fmt
        self.table = table
        self.fds = fds
        self._maps: list[mmap.mmap] = []
        try:
            for fd, mem in zip(fds, table.memories):
                self._maps.append(memfd.map_shared(fd, mem.size, writable=writable))
            self.buffers = [Buffer(n, planes, frame_views(fmt, planes, self._maps), fmt)
                            for n, planes in enumerate(table.buffers)]
        except BaseException:
            self.close()
            raise

    @classmethod
    def allocate(cls, fmt: FrameFormat, count: int, name: str = "framebus") -> BufferPool:
        """`count` buffers in one sealed memfd, each at a page-aligned offset.

        The pool's own mapping stays writable; every other holder of the fd
        can only map it read-only (see `framebus.linux.memfd`).
        """
        if not 1 <= count <= 256:
            raise FramebusError(f"buffer count {count} out of range (1..256)")
        stride = memfd.page_align(fmt.sizeimage)
        size = stride * count
        fd = memfd.create(name, size)
        try:
            table = BufferTable((Memory(size, MEMFD),),
                                tuple((Plane(0, n * stride, fmt.sizeimage, fmt.bytesperline),)
                                      for n in range(count)))
            pool = cls(fmt, table, [fd])
        except BaseException:
            os.close(fd)
            raise
        # Seal only after mapping: F_SEAL_FUTURE_WRITE leaves this mapping
        # writable and forbids any new writable one.
        try:
            memfd.add_seals(fd, memfd.READ_ONLY_SEALS)
        except BaseException:
            pool.close()
            raise
        return pool

    def __len__(self) -> int:
        return len(self.buffers)

    def close(self) -> None:
        """Unmap and close everything; safe to call twice."""
        self.buffers = []
        for m in self._maps:
            memfd.unmap(m)
        self._maps = []
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
