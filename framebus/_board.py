"""The status board: a small sealed memfd saying which frame each buffer holds.

The producer writes it; consumers map it read-only. ``seqs[i]`` is the
sequence number of the frame in buffer ``i``, or 0 while the producer is
writing into it, so a consumer can tell exactly whether the pixels it looks at
are still those announced (`Frame.valid()`), with no message and no syscall.
"""

from __future__ import annotations

import mmap
import os

from .errors import FramebusError
from .linux import memfd

MAGIC = 0x4652414D45425553  # "FRAMEBUS"
_HEADER = 4  # magic, session, newest published seq, buffer count
_CLOSED = memoryview(b"").cast("Q")


class StatusBoard:
    """The mapped status memfd; writable in the producer, read-only elsewhere."""

    def __init__(self, mapping: mmap.mmap, count: int, *, fd: int = -1) -> None:
        self._map = mapping
        self.fd = fd  # the producer keeps its fd to send to consumers
        # A memoryview of native uint64 words, not numpy: the producer writes
        # two words per frame before the FRAME goes out, and an item
        # assignment on a memoryview costs half of numpy's on a cold cache.
        words = memoryview(mapping)[:(_HEADER + count) * 8].cast("Q")
        self._words = words
        self._header = words[:_HEADER]
        self.seqs = words[_HEADER:]

    @staticmethod
    def size_for(count: int) -> int:
        return memfd.page_align((_HEADER + count) * 8)

    @classmethod
    def create(cls, count: int, session: int, name: str = "framebus-status") -> StatusBoard:
        """A new board for `count` buffers, sealed like the frame buffers."""
        size = cls.size_for(count)
        fd = memfd.create(name, size)
        try:
            board = cls(memfd.map_shared(fd, size, writable=True), count, fd=fd)
            for i, value in enumerate((MAGIC, session, 0, count)):
                board._header[i] = value
            memfd.add_seals(fd, memfd.READ_ONLY_SEALS)
        except BaseException:
            os.close(fd)
            raise
        return board

    @classmethod
    def attach(cls, fd: int, count: int, session: int) -> StatusBoard:
        """Map a producer's board read-only and check it is the one announced.
        Takes ownership of `fd` (closed once mapped)."""
        try:
            size = cls.size_for(count)
            if memfd.file_size(fd) < size or not memfd.get_seals(fd) & memfd.F_SEAL_SHRINK:
                raise FramebusError("status board has the wrong size or is not sealed")
            board = cls(memfd.map_shared(fd, size, writable=False), count)
        finally:
            os.close(fd)
        if board._header[0] != MAGIC or board._header[1] != session \
                or board._header[3] != count:
            board.close()
            raise FramebusError("status board does not belong to this producer session")
        return board

    @property
    def newest(self) -> int:
        """The sequence number of the newest published frame."""
        return self._header[2]

    def holds(self, index: int, seq: int) -> bool:
        """Whether buffer `index` holds frame `seq` (False once closed)."""
        return index < len(self.seqs) and self.seqs[index] == seq

    def invalidate(self, index: int) -> None:
        """Mark buffer `index` as being rewritten (before any pixel changes)."""
        self.seqs[index] = 0

    def published(self, index: int, seq: int) -> None:
        self.seqs[index] = seq
        self._header[2] = seq

    def close(self) -> None:
        """Unmap (and close the producer's fd); safe twice."""
        if self._words is not _CLOSED:
            for view in (self.seqs, self._header, self._words):
                view.release()  # (a view still exported would keep the mapping open)
            self._words = self._header = self.seqs = _CLOSED
        memfd.unmap(self._map)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
