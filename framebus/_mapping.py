"""The consumer's read-only mapping of a producer's buffers.

Each distinct fd is mapped once, ``PROT_READ`` and ``MAP_SHARED``, after its
size has been checked against the table (a smaller file would SIGBUS us on
access). A memfd must carry every seal of `memfd.READ_ONLY_SEALS` (shrink,
grow, future write, seal), checked *before* its size is trusted: without the
shrink seal the producer could shrink it after the check. A DMA-BUF cannot be
resized by anyone, so only its size is checked; its fd is kept open: CPU reads
of it are bracketed with DMA_BUF_IOCTL_SYNC, which needs the fd.
"""

from __future__ import annotations

import errno
import mmap
import os

from .buffers import DMABUF, MEMFD, BufferTable, frame_views
from .errors import FramebusError
from .formats import FrameFormat, FrameViews
from .linux import memfd


class ReadOnlyMapping:
    """Every buffer of a table, mapped read-only; owns the mappings.

    Takes ownership of `fds`: memfds are closed once mapped (the mappings
    keep the memory alive), DMA-BUFs when the mapping is closed.
    """

    def __init__(self, fmt: FrameFormat, table: BufferTable, fds: list[int]) -> None:
        self._maps: list[mmap.mmap] = []
        self._kept: list[int] = []
        #: per buffer, the DMA-BUF fds whose CPU access must be synced
        self.sync_fds: list[tuple[int, ...]] = [() for _ in table.buffers]
        try:
            if len(fds) != len(table.memories):
                raise FramebusError(f"producer sent {len(fds)} fds for {len(table.memories)} memories")
            check_map_count(len(fds))
            for fd, mem in zip(fds, table.memories):
                self._maps.append(_map_checked(fd, mem.size, mem.kind))
            self.views: list[FrameViews] = [frame_views(fmt, planes, self._maps)
                                            for planes in table.buffers]
            self._kept = [fd for fd, mem in zip(fds, table.memories) if mem.kind == DMABUF]
            self.sync_fds = [tuple(dict.fromkeys(fds[p.memory] for p in planes
                                                 if table.memories[p.memory].kind == DMABUF))
                             for planes in table.buffers]
        except BaseException:
            self.close()
            raise
        finally:
            for fd in fds:
                if fd not in self._kept:
                    os.close(fd)

    def close(self) -> None:
        """Drop the views and unmap; safe twice. A mapping a caller still
        views stays until that view is gone."""
        self.views = []
        for m in self._maps:
            memfd.unmap(m)
        self._maps = []
        for fd in self._kept:
            os.close(fd)
        self._kept = []


def max_map_count() -> int:
    with open("/proc/sys/vm/max_map_count") as f:
        return int(f.read())


def map_count() -> int:
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)


def check_map_count(needed: int, margin: int = 64) -> None:
    """Refuse clearly, before mmap fails with a bare ENOMEM, when `needed`
    more mappings would cross the kernel's per-process limit."""
    limit, used = max_map_count(), map_count()
    if used + needed + margin > limit:
        raise FramebusError(f"mapping {needed} buffers would exceed vm.max_map_count "
                            f"({used} of {limit} mappings in use); raise the sysctl")


def _map_checked(fd: int, size: int, kind: str) -> mmap.mmap:
    if kind == MEMFD:
        check_seals(fd)  # first: an unsealed file's size means nothing
    try:
        actual = memfd.file_size(fd)
    except OSError as exc:
        raise FramebusError(f"cannot check a buffer fd: {exc.strerror}") from None
    if actual < size:
        raise FramebusError(f"buffer fd is {actual} bytes, the table says {size}")
    try:
        return memfd.map_shared(fd, size, writable=False)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            raise FramebusError(f"cannot map a {size}-byte buffer: out of memory or of "
                                f"mappings (vm.max_map_count {max_map_count()})") from None
        raise FramebusError(f"cannot map a {size}-byte buffer: {exc.strerror or exc}") from None


def check_seals(fd: int) -> None:
    """Raise FramebusError unless `fd` is a memfd sealed read-only and fixed
    in size (`memfd.READ_ONLY_SEALS`)."""
    try:
        seals = memfd.get_seals(fd)
    except OSError:
        raise FramebusError("a buffer said to be a memfd is not one") from None
    missing = memfd.READ_ONLY_SEALS & ~seals
    if missing:
        names = [name for name, bit in (("shrink", memfd.F_SEAL_SHRINK),
                                        ("grow", memfd.F_SEAL_GROW),
                                        ("future-write", memfd.F_SEAL_FUTURE_WRITE),
                                        ("seal", memfd.F_SEAL_SEAL)) if missing & bit]
        raise FramebusError(f"buffer memfd is not sealed against {', '.join(names)} "
                            f"(seals {seals:#x})")
