"""A frame a consumer holds: a read-only numpy view into shared memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from .errors import FramebusError
from .formats import FrameFormat, FrameViews
from .linux import dma_buf

if TYPE_CHECKING:
    from ._session import Session


class Frame:
    """One announced frame, leased to this consumer until `release()`.

    Use it as a context manager (``with cam.get() as frame:``) so the lease
    ends when the block does. The views are dropped on release; a copy of
    the pixels that must outlive the lease is the caller's to make.

    `release()` may be called from any thread; the views themselves are plain
    read-only numpy arrays.
    """

    __slots__ = ("seq", "index", "timestamp_ns", "bytesused", "format", "session", "_views",
                 "_array", "_sync_fds")

    def __init__(self, seq: int, index: int, timestamp_ns: int, bytesused: int,
                 session: Session) -> None:
        self.seq = seq
        self.index = index
        self.timestamp_ns = timestamp_ns  # CLOCK_MONOTONIC, ns
        self.bytesused = bytesused
        self.format: FrameFormat = session.format
        self.session = session  # the producer run this frame belongs to; it tracks the lease
        views = session.views[index]
        self._views: FrameViews | None = views
        self._array: NDArray[np.uint8] | None = (
            views.array[:bytesused] if session.compressed else views.array)
        # A DMA-BUF (a driver's own buffer) is read between SYNC_START and
        # SYNC_END, so caches are coherent with what the device wrote.
        self._sync_fds = sync_fds = session.sync_fds[index]
        if sync_fds:
            for fd in sync_fds:
                dma_buf.sync_start(fd, read=True)

    @property
    def array(self) -> NDArray[np.uint8]:
        """The frame, read-only, straight from shared memory (no copy).

        Its shape depends on the pixel format (see docs/formats.md): GREY
        ``(H, W)``, YUYV/UYVY ``(H, W, 2)``, RGB3/BGR3 ``(H, W, 3)``, NV12/YU12
        the whole buffer (use `planes`), MJPG ``(bytesused,)``.
        """
        if self._array is None:
            raise FramebusError(f"frame {self.seq} was released")
        return self._array

    @property
    def planes(self) -> tuple[NDArray[np.uint8], ...]:
        """Each plane's view (Y, UV for NV12; Y, U, V for YU12; one for packed formats)."""
        if self._views is None:
            raise FramebusError(f"frame {self.seq} was released")
        return self._views.planes

    def to_bgr(self, dst: NDArray[np.uint8] | None = None) -> NDArray[np.uint8]:
        """The frame as an ``(H, W, 3)`` BGR image for OpenCV, into `dst` if
        given (needs the ``framebus[cv]`` extra)."""
        from .convert import to_bgr
        return to_bgr(self, dst)

    def valid(self) -> bool:
        """True while the buffer still holds this frame's pixels.

        Turns False before the producer writes into the buffer again (after a
        revoked lease), so "read the pixels, then check valid()" is safe.
        """
        status = self.session.status
        return status is not None and status.holds(self.index, self.seq)

    def release(self) -> None:
        """End the lease; the producer may reuse the buffer. Safe twice."""
        if self.drop_views():
            self.session.release(self)

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
