"""The consumer's read-only mapping of a producer's buffers.

Each distinct fd is mapped once, ``PROT_READ`` and ``MAP_SHARED``, after its
size has been checked against the table (a smaller file would SIGBUS us on
access). memfds must carry the shrink seal, so the producer cannot shrink them
under us either.
"""

from __future__ import annotations

import mmap
import os

from .buffers import MEMFD, BufferTable, frame_views
from .errors import FramebusError
from .formats import FrameFormat, FrameViews
from .linux import memfd


class ReadOnlyMapping:
    """Every buffer of a table, mapped read-only; owns the mappings.

    Takes ownership of `fds`: they are closed once mapped (the mappings keep
    the memory alive), or on any error.
    """

    def __init__(self, fmt: FrameFormat, table: BufferTable, fds: list[int]) -> None:
        self._maps: list[mmap.mmap] = []
        try:
            if len(fds) != len(table.memories):
                raise FramebusError(f"producer sent {len(fds)} fds for {len(table.memories)} memories")
            for fd, mem in zip(fds, table.memories):
                self._maps.append(_map_checked(fd, mem.size, mem.kind))
            self.views: list[FrameViews] = [frame_views(fmt, planes, self._maps)
                                            for planes in table.buffers]
        except BaseException:
            self.close()
            raise
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        """Drop the views and unmap; safe twice. A mapping a caller still
        views stays until that view is gone."""
        self.views = []
        for m in self._maps:
            memfd.unmap(m)
        self._maps = []


def _map_checked(fd: int, size: int, kind: str) -> mmap.mmap:
    actual = memfd.file_size(fd)
    if actual < size:
        raise FramebusError(f"buffer fd is {actual} bytes, the table says {size}")
    if kind == MEMFD:
        try:
            seals = memfd.get_seals(fd)
        except OSError:
            raise FramebusError("a buffer said to be a memfd is not one") from None
        if not seals & memfd.F_SEAL_SHRINK:
            raise FramebusError("buffer memfd is not sealed against shrinking")
    return memfd.map_shared(fd, size, writable=False)
