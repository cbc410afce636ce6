"""A frame a consumer holds: a read-only numpy view into shared memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import FramebusError
from .formats import FrameViews
from .linux import dma_buf

if TYPE_CHECKING:
    from ._session import Session


class Frame:
    """One announced frame, leased to this consumer until `release()`.

    Use it as a context manager (``with cam.get() as frame:``) so the lease
    ends when the block does. The views are dropped on release; a copy of
    the pixels that must outlive the lease is the caller's to make.
    """

    __slots__ = ("seq", "index", "timestamp_ns", "bytesused", "session", "_views", "_array",
                 "_status", "_release", "_sync_fds")

    def __init__(self, seq: int, index: int, timestamp_ns: int, bytesused: int,
                 views: FrameViews, compressed: bool, session: Session,
                 release: Callable[[Frame], None], sync_fds: tuple[int, ...] = ()) -> None:
        self.seq = seq
        self.index = index
        self.timestamp_ns = timestamp_ns  # CLOCK_MONOTONIC, ns
        self.bytesused = bytesused
        self._views: FrameViews | None = views
        self._array = views.array[:bytesused] if compressed else views.array
        self.session = session  # the producer run this frame belongs to
        self._status = session.status
        self._release = release
        # A DMA-BUF (a driver's own buffer) is read between SYNC_START and
        # SYNC_END, so caches are coherent with what the device wrote.
        self._sync_fds = sync_fds
        for fd in sync_fds:
            dma_buf.sync_start(fd, read=True)

    @property
    def array(self) -> np.ndarray:
        """The frame, read-only, straight from shared memory (no copy)."""
        if self._views is None:
            raise FramebusError(f"frame {self.seq} was released")
        return self._array

    @property
    def planes(self) -> tuple[np.ndarray, ...]:
        """Each plane's view (Y, UV for NV12; Y, U, V for YU12; one for packed formats)."""
        if self._views is None:
            raise FramebusError(f"frame {self.seq} was released")
        return self._views.planes

    def valid(self) -> bool:
        """True while the buffer still holds this frame's pixels.

        Turns False before the producer writes into the buffer again (after a
        revoked lease), so "read the pixels, then check valid()" is safe.
        """
        return int(self._status.seqs[self.index]) == self.seq

    def release(self) -> None:
        """End the lease; the producer may reuse the buffer. Safe twice."""
        if self.drop_views():
            self._release(self)

    def drop_views(self) -> bool:
        """The local half of `release()`: drop the views (and end CPU access
        to a DMA-BUF) without telling the producer. True if it was held."""
        if self._views is None:
            return False
        self._views = None
        self._array = None
        for fd in self._sync_fds:
            try:
                dma_buf.sync_end(fd, read=True)
            except OSError:
                pass  # the mapping went with its session; nothing left to sync
        return True

    @property
    def released(self) -> bool:
        return self._views is None

    def __enter__(self) -> Frame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._views is None else "held"
        return f"<Frame seq={self.seq} index={self.index} {state}>"
