"""libcamera's buffers as the bus's pool, and its requests kept in step with the leases.

picamera2 allocates each stream's buffers (``picam2.allocator.buffers(stream)``,
libcamera ``FrameBuffer``s whose planes are DMA-BUF ``fd``, ``offset``,
``length``); `RequestPool` describes them as a `framebus.BufferPool` (the
fds duplicated, marked DMA-BUF so consumers bracket their reads with
``DMA_BUF_IOCTL_SYNC``, mapped read-only: the producer never writes a pixel)
and exports them once, in HELLO. Buffer n of the pool is libcamera buffer n.

The bus's "being written" state is "libcamera has it": `start()` acquires
every buffer of the bus, so each one libcamera may fill is one the bus
considers the producer's. A completed request is published in place and
kept (its request not released). A request goes back to libcamera only
through `Producer.acquire()`, which hands out a buffer only when no consumer
holds a lease on it: `refill()` acquires what the bus frees and releases the
request in that buffer (``request.release()``, after which picamera2 queues
it to the camera again). As the V4L2 source does, the newest frame stays
published (one request kept) while everything else is back with libcamera.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from framebus import BufferPool, BufferTable, FramebusError, FrameFormat, Producer, Timeout
from framebus.buffers import DMABUF, Memory, Plane
from framebus.linux import memfd

__all__ = ["RequestPool", "RequestStats", "MIN_QUEUED", "reserve_for"]

log = logging.getLogger("framebus.libcamera")

#: requests libcamera should always have queued, whatever the consumers do
MIN_QUEUED = 2


def reserve_for(buffers: int) -> int:
    """Bus buffers kept out of consumers' quotas so libcamera keeps
    `MIN_QUEUED` requests: besides those, one for the request picamera2 keeps
    completed for the next ``capture_request()`` (``queue=True``) and one for
    the frame between its completion and its release (or the newest frame,
    kept published)."""
    return min(MIN_QUEUED + 2, buffers - 1)


class PlaneLike(Protocol):
    """A libcamera ``FrameBuffer.Plane``."""

    @property
    def fd(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def length(self) -> int: ...


@dataclass
class RequestStats:
    """What happened to libcamera's requests."""

    completed: int = 0  #: requests returned by ``capture_request()``
    published: int = 0  #: of those, frames published
    camera_drops: int = 0  #: sequence numbers never seen (dropped by libcamera or picamera2)
    released: int = 0  #: requests given back to libcamera
    most_held: int = 0  #: most requests held at once by this source
    last_sequence: int = -1  #: the newest FrameBuffer sequence seen

    def summary(self) -> str:
        return (f"{self.completed} requests completed, {self.published} published, "
                f"{self.camera_drops} lost by the camera (sequence gaps), {self.released} "
                f"released to libcamera, at most {self.most_held} held at once, last sequence "
                f"{self.last_sequence}")


def _table(fmt: FrameFormat, buffers: Sequence[Sequence[PlaneLike]]
           ) -> tuple[BufferTable, list[int]]:
    """The table describing libcamera's buffers, and the distinct fds it names."""
    fds: list[int] = []
    memory_of: dict[int, int] = {}
    described = []
    for n, planes in enumerate(buffers):
        if not planes:
            raise FramebusError(f"libcamera buffer {n} has no planes")
        for plane in planes:
            if plane.fd not in memory_of:
                memory_of[plane.fd] = len(fds)
                fds.append(plane.fd)
        described.append(_buffer_planes(fmt, n, planes, memory_of))
    memories = tuple(Memory(_size(fd), DMABUF) for fd in fds)
    table = BufferTable(memories, tuple(described))
    table.check(fmt)
    return table, fds


def _buffer_planes(fmt: FrameFormat, n: int, planes: Sequence[PlaneLike],
                   memory_of: dict[int, int]) -> tuple[Plane, ...]:
    """One buffer's planes in framebus's terms: one plane when libcamera's lie
    end to end in one fd (picamera2's DmaAllocator gives one plane for the
    whole frame anyway), else one per framebus plane."""
    first = planes[0]
    contiguous = all(p.fd == first.fd and p.offset == q.offset + q.length
                     for q, p in zip(planes, planes[1:]))
    if contiguous:
        out: tuple[Plane, ...] = (Plane(memory_of[first.fd], first.offset,
                                        sum(p.length for p in planes), fmt.bytesperline),)
    elif len(planes) == len(fmt.planes):
        out = tuple(Plane(memory_of[p.fd], p.offset, p.length, layout.bytesperline)
                    for p, layout in zip(planes, fmt.planes))
    else:
        raise FramebusError(f"libcamera buffer {n} has {len(planes)} planes that do not lie end "
                            f"to end; {fmt.pixel_format} has {len(fmt.planes)}")
    for plane in out:
        if plane.offset % memfd.PAGE_SIZE:
            raise FramebusError(f"libcamera buffer {n} has a plane at offset {plane.offset}, not "
                                f"page-aligned: consumers could not map it")
    return out


def _size(fd: int) -> int:
    """A DMA-BUF's size (lseek to its end, as its documentation says)."""
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError as exc:
        raise FramebusError(f"cannot size a libcamera buffer (fd {fd}): {exc.strerror}") from None
    finally:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            pass


class RequestPool:
    """libcamera's buffers as a `BufferPool`, and the completed requests held
    while the bus may still lease their buffers.

    Args:
        fmt: the stream's format (`formats.stream_format`).
        framebuffers: the stream's libcamera ``FrameBuffer``s, in order.
    """

    def __init__(self, fmt: FrameFormat, framebuffers: Iterable[Any]) -> None:
        buffers = [list(fb.planes) for fb in framebuffers]
        table, fds = _table(fmt, buffers)
        #: pool index of each libcamera buffer, by its first plane's fd
        #: (picamera2's allocators key their buffers the same way)
        self._index_of = {planes[0].fd: n for n, planes in enumerate(buffers)}
        if len(self._index_of) != len(buffers):
            raise FramebusError("libcamera buffers share their first plane's fd; framebus "
                                "cannot tell them apart")
        own = [os.dup(fd) for fd in fds]  # the pool closes its own; picamera2 keeps its fds
        try:
            self._pool: BufferPool | None = BufferPool(fmt, table, own, writable=False)
        except BaseException:
            for fd in own:
                os.close(fd)
            raise
        self.count = len(buffers)
        self.stats = RequestStats()
        self._bus: Producer | None = None
        self._held: dict[int, Any] = {}  # pool index -> the CompletedRequest in it

    def pool(self) -> BufferPool | None:
        """The pool, until a bus has taken it (then the bus owns it)."""
        return self._pool

    @property
    def held(self) -> int:
        """Requests this source holds (published, not yet given back)."""
        return len(self._held)

    def start(self, bus: Producer) -> None:
        """Mark every buffer as libcamera's (the bus's "being written"): all
        requests are queued when the camera starts."""
        self._bus = bus
        self._pool = None  # the bus's now
        self._held.clear()
        for _ in range(self.count):
            bus.acquire(timeout=0)

    def index_of(self, framebuffer: Any) -> int:
        """The pool index of a libcamera ``FrameBuffer``."""
        try:
            return self._index_of[framebuffer.planes[0].fd]
        except (KeyError, IndexError):
            raise FramebusError("libcamera completed a request with a buffer that is not "
                                "one of the stream's") from None

    def publish(self, request: Any, index: int, timestamp_ns: int) -> None:
        """Publish the frame in buffer `index` and hold its request."""
        bus = self._started()
        if index in self._held:
            raise FramebusError(f"libcamera completed buffer {index} twice without its "
                                f"request being released")
        self._held[index] = request
        self.stats.most_held = max(self.stats.most_held, len(self._held))
        bus.publish(bus.buffers[index], timestamp_ns=timestamp_ns)
        self.stats.published += 1

    def refill(self) -> bool:
        """Give back to libcamera every request whose buffer the bus frees,
        keeping one (the newest frame) published; False while a request the
        bus has not freed (a consumer's lease) stays out."""
        bus = self._started()
        while len(self._held) > 1:
            try:
                buffer = bus.acquire(timeout=0)
            except Timeout:
                return False
            request = self._held.pop(buffer.index, None)
            if request is None:  # cannot happen: every other buffer is libcamera's
                raise FramebusError(f"the bus freed buffer {buffer.index}, which libcamera has")
            request.release()
            self.stats.released += 1
        return True

    def release_all(self) -> None:
        """After the camera stopped: let go of every request still held (the
        bus is closing; picamera2 does not requeue requests of a stopped
        camera)."""
        for request in self._held.values():
            request.release()
        self._held.clear()

    def close(self) -> None:
        """Close the pool if no bus took it; safe twice."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _started(self) -> Producer:
        if self._bus is None:
            raise FramebusError("the request pool has not been started")
        return self._bus
