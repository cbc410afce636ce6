"""The three memory strategies: how driver buffers and bus buffers meet.

Each queue owns the driver's buffer queue for one strategy and maps V4L2's
"queued to the driver / dequeued to userspace" onto the bus's leases. The rule
for the zero-copy strategies: a buffer goes back to the driver (QBUF) only
after the bus hands it out again with `Producer.acquire()`, which it does only
for a buffer on which no consumer holds a lease. Whatever the strategy, one
buffer the bus owns stays out of the driver, so the newest frame is still
there for a consumer that asks for it a moment after it was published.

``UserptrQueue``  V4L2_MEMORY_USERPTR: the bus's memfd buffers are queued by
                  address (one user pointer per plane for NV12M & co.); the
                  driver writes straight into shared memory.
``ExportQueue``   V4L2_MEMORY_MMAP + VIDIOC_EXPBUF: the driver's buffers,
                  exported as read-only DMA-BUFs (one per plane), *are* the
                  bus's pool (same indices); consumers map the DMA-BUFs.
``CopyQueue``     V4L2_MEMORY_MMAP: the driver's buffers stay private and each
                  frame is copied into a bus buffer (counted in
                  `bytes_copied`).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from framebus import Buffer, BufferPool, BufferTable, FramebusError, FrameFormat, Producer, Timeout
from framebus.buffers import DMABUF, Memory, Plane
from framebus.linux import videodev2 as v

from .device import Device, VideoBuffer, busy_message
from .planes import planar_pool, plane_regions, plane_targets
from .strategies import MMAP_COPY, MMAP_EXPBUF, USERPTR

__all__ = ["UserptrRefused", "BufferQueue", "UserptrQueue", "ExportQueue", "CopyQueue", "make_queue", "MIN_QUEUED"]

log = logging.getLogger("framebus.v4l2")

#: buffers a driver should always have queued; the bus keeps this many out of
#: consumers' quotas (`reserve`), so consumers can never starve the camera
MIN_QUEUED = 2


def _reqbufs(dev: Device, memory: int, count: int) -> int:
    try:
        granted = dev.reqbufs(memory, count)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise FramebusError(busy_message(dev.path)) from None
        raise FramebusError(f"{dev.path}: VIDIOC_REQBUFS {count} buffers failed: "
                            f"{exc.strerror}") from None
    if granted < 1:
        raise FramebusError(f"{dev.path}: the driver granted no buffers")
    if granted < count:
        log.warning("%s: asked for %d buffers, the driver granted %d", dev.path, count, granted)
    return granted


def announced_bytesused(buffer: Buffer, bytesused: int) -> int:
    """A frame's bytesused as the bus announces it: at most `buffer.raw`,
    which consumers check it against. For a buffer of separate planes that is
    plane 0 (the driver's planes may also be longer than the bus's layout);
    only a compressed (one-plane) format needs the exact figure."""
    return min(bytesused, buffer.raw.nbytes)


class UserptrRefused(FramebusError):
    """The driver accepted V4L2_MEMORY_USERPTR at REQBUFS but refused to queue
    the bus's memory (a driver that needs physically contiguous buffers, as
    vb2-dma-contig ones do, cannot use ordinary pages)."""


class BufferQueue(ABC):
    """What the capture loop needs of a strategy (the base of the three)."""

    strategy = ""
    memory = 0

    def __init__(self, dev: Device, fmt: FrameFormat) -> None:
        self.dev = dev
        self.format = fmt
        self.bytes_copied = 0
        self.granted = 0
        self._bus: Producer | None = None  # set by start()

    @property
    def bus(self) -> Producer:
        """The bus this queue publishes into (after `start()`)."""
        if self._bus is None:
            raise FramebusError("the buffer queue has not been started")
        return self._bus

    @property
    def reserve(self) -> int:
        """Buffers of the bus no consumer may hold."""
        return min(MIN_QUEUED, len(self) - 1)

    def __len__(self) -> int:
        """Buffers the bus needs (0: its own default count)."""
        return 0

    def pool(self) -> BufferPool | None:
        """The buffers the bus must use, or None for its own memfds."""
        return None

    def start(self, bus: Producer) -> None:
        """Queue the first buffers (before STREAMON)."""
        self._bus = bus
        self.refill()

    def refill(self) -> bool:
        """Queue what the bus hands out; False if a slot stays empty."""
        return True

    @abstractmethod
    def complete(self, vb: VideoBuffer, ok: bool, timestamp_ns: int) -> bool:
        """A dequeued buffer: publish it (ok) or drop it; True if published."""

    def _publish_or_drop(self, buffer: Buffer, vb: VideoBuffer, ok: bool,
                         timestamp_ns: int) -> bool:
        """Publish a bus buffer the driver filled, or give it back if the frame is bad."""
        if not ok:
            self._give_back(buffer)
            return False
        self.bus.publish(buffer, timestamp_ns=timestamp_ns,
                         bytesused=announced_bytesused(buffer, vb.bytesused))
        return True

    def stopped(self) -> None:
        """After STREAMOFF (or an unplug): every buffer is back in userspace."""

    def close(self) -> None:
        """Free the driver's buffers (REQBUFS 0); safe twice and after an unplug."""
        if self.granted and self.dev.fd >= 0:
            try:
                self.dev.reqbufs(self.memory, 0)
            except OSError:
                pass  # ENODEV: the device is gone and took its buffers with it
        self.granted = 0

    def _give_back(self, buffer: Buffer) -> None:
        try:
            self.bus.discard(buffer)
        except FramebusError:
            pass  # the bus is closed: it no longer cares


class UserptrQueue(BufferQueue):
    """V4L2_MEMORY_USERPTR into the bus's memfd buffers (zero copy).

    The driver gets ``buffers - 1`` slots (V4L2 indices); whichever bus buffer
    the bus hands out is queued into a free slot by its address
    (``buffer.raw.ctypes.data``; for separate-plane formats each plane's, from
    a pool whose planes sit at page-aligned offsets), and the slot remembers
    which one it holds.
    """

    strategy = USERPTR
    memory = v.V4L2_MEMORY_USERPTR

    def __init__(self, dev: Device, fmt: FrameFormat, buffers: int) -> None:
        super().__init__(dev, fmt)
        self._count = buffers
        self._pool: BufferPool | None = None
        self.granted = _reqbufs(dev, self.memory, max(1, buffers - 1))
        self._slots: list[Buffer | None] = [None] * self.granted
        self._worked = False  # a USERPTR buffer has been queued successfully
        if dev.num_planes > 1:
            try:
                self._pool = planar_pool(fmt, buffers, dev.plane_sizes,
                                         f"framebus:{os.path.basename(dev.path)}")
            except BaseException:
                self.close()
                raise

    def __len__(self) -> int:
        return self._count

    def pool(self) -> BufferPool | None:
        return self._pool

    def refill(self) -> bool:
        for index, held in enumerate(self._slots):
            if held is not None:
                continue
            try:
                buffer = self.bus.acquire(timeout=0)
            except Timeout:
                return False
            vb = self.dev.buffer(self.memory, index)
            for plane, (address, length) in enumerate(
                    plane_targets(buffer, self.format, self.dev.num_planes)):
                vb.set_userptr(address, length, plane)
            try:
                self.dev.qbuf(vb)
            except OSError as exc:
                self._give_back(buffer)
                if exc.errno in (errno.EINVAL, errno.EFAULT, errno.ENOMEM) and not self._worked:
                    raise UserptrRefused(f"VIDIOC_QBUF of a USERPTR buffer failed: "
                                         f"{exc.strerror}") from None
                raise
            self._worked = True
            self._slots[index] = buffer
        return True

    def complete(self, vb: VideoBuffer, ok: bool, timestamp_ns: int) -> bool:
        buffer = self._slots[vb.index]
        self._slots[vb.index] = None
        if buffer is None:
            raise FramebusError(f"the driver returned USERPTR slot {vb.index}, which held no buffer")
        return self._publish_or_drop(buffer, vb, ok, timestamp_ns)

    def stopped(self) -> None:
        for index, buffer in enumerate(self._slots):
            if buffer is not None:
                self._give_back(buffer)
                self._slots[index] = None

    def close(self) -> None:
        super().close()
        if self._bus is None and self._pool is not None:
            self._pool.close()  # never handed to a bus: ours to close
        self._pool = None


class ExportQueue(BufferQueue):
    """V4L2_MEMORY_MMAP buffers exported with VIDIOC_EXPBUF (zero copy).

    Buffer n of the pool is the driver's buffer n (each of its planes a
    DMA-BUF of its own for separate-plane formats). All start queued but one;
    a dequeued buffer is published, and queued again when the bus hands that
    index out again.
    """

    strategy = MMAP_EXPBUF
    memory = v.V4L2_MEMORY_MMAP

    def __init__(self, dev: Device, fmt: FrameFormat, buffers: int) -> None:
        super().__init__(dev, fmt)
        self.granted = _reqbufs(dev, self.memory, buffers)
        self._queued: set[int] = set()
        self._pool: BufferPool | None = None
        fds: list[int] = []
        try:
            memories, planes = [], []
            layouts = fmt.planes if dev.num_planes > 1 else fmt.planes[:1]
            for index in range(self.granted):
                vb = dev.querybuf(self.memory, index)
                buffer_planes = []
                for plane, layout in enumerate(layouts):
                    fds.append(dev.expbuf(index, plane))
                    size = os.lseek(fds[-1], 0, os.SEEK_END)  # a DMA-BUF's size, as its docs say
                    os.lseek(fds[-1], 0, os.SEEK_SET)
                    memories.append(Memory(size, DMABUF))
                    bpl = layout.bytesperline if len(layouts) > 1 else fmt.bytesperline
                    buffer_planes.append(Plane(len(memories) - 1, 0, vb.plane_length(plane), bpl))
                planes.append(tuple(buffer_planes))
            table = BufferTable(tuple(memories), tuple(planes))
            table.check(fmt)
        except BaseException:
            for fd in fds:
                os.close(fd)
            self.close()
            raise
        try:
            self._pool = BufferPool(fmt, table, fds, writable=False)  # owns the fds from here
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return self.granted

    def pool(self) -> BufferPool | None:
        return self._pool

    def refill(self) -> bool:
        while len(self._queued) < max(1, self.granted - 1):
            try:
                buffer = self.bus.acquire(timeout=0)
            except Timeout:
                return False
            try:
                self.dev.qbuf(self.dev.buffer(self.memory, buffer.index))
            except OSError:
                self._give_back(buffer)
                raise
            self._queued.add(buffer.index)
        return True

    def complete(self, vb: VideoBuffer, ok: bool, timestamp_ns: int) -> bool:
        self._queued.discard(vb.index)
        return self._publish_or_drop(self.bus.buffers[vb.index], vb, ok, timestamp_ns)

    def stopped(self) -> None:
        for index in sorted(self._queued):
            self._give_back(self.bus.buffers[index])
        self._queued.clear()

    def close(self) -> None:
        """Free the driver's buffers; the exported DMA-BUFs live on in the
        pool (the bus's) until it is closed too."""
        super().close()
        if self._bus is None and self._pool is not None:
            self._pool.close()  # never handed to a bus: ours to close
        self._pool = None


class CopyQueue(BufferQueue):
    """V4L2_MEMORY_MMAP buffers, each frame copied into a bus memfd buffer
    (plane by plane for separate-plane formats: into a contiguous bus buffer
    at the layout's offsets, or into a multi-plane one plane for plane)."""

    strategy = MMAP_COPY
    memory = v.V4L2_MEMORY_MMAP

    def __init__(self, dev: Device, fmt: FrameFormat, buffers: int) -> None:
        super().__init__(dev, fmt)
        self._count = buffers
        self.granted = _reqbufs(dev, self.memory, buffers)
        self._maps: list[list[mmap.mmap]] = []  # per driver buffer, one per plane
        self.dropped = 0  # frames lost because every bus buffer was leased
        try:
            for index in range(self.granted):
                vb = dev.querybuf(self.memory, index)
                self._maps.append([])
                for plane in range(dev.num_planes):
                    self._maps[-1].append(dev.mmap(vb, plane))
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return self._count

    @property
    def reserve(self) -> int:
        return 1  # the driver keeps its own buffers; the bus needs one to copy into

    def start(self, bus: Producer) -> None:
        self._bus = bus
        for index in range(self.granted):
            self.dev.qbuf(self.dev.buffer(self.memory, index))

    def complete(self, vb: VideoBuffer, ok: bool, timestamp_ns: int) -> bool:
        published = False
        if ok:
            try:
                buffer = self.bus.acquire(timeout=0)
            except Timeout:
                self.dropped += 1
            else:
                used = 0
                regions = plane_regions(buffer, self.format, self.dev.num_planes)
                for plane, (source, region) in enumerate(zip(self._maps[vb.index], regions)):
                    n = min(vb.plane_bytesused(plane), region.nbytes)
                    np.copyto(region[:n], np.frombuffer(source, np.uint8, n))
                    used += n
                self.bytes_copied += used
                self.bus.publish(buffer, timestamp_ns=timestamp_ns,
                                 bytesused=announced_bytesused(buffer, used))
                published = True
        self.dev.qbuf(self.dev.buffer(self.memory, vb.index))
        return published

    def close(self) -> None:
        for maps in self._maps:
            for m in maps:
                m.close()
        self._maps = []
        super().close()


def make_queue(strategy: str, dev: Device, fmt: FrameFormat, buffers: int) -> BufferQueue:
    """The queue for `strategy`, with its driver buffers requested."""
    kinds: dict[str, Callable[[Device, FrameFormat, int], BufferQueue]] = {
        USERPTR: UserptrQueue, MMAP_EXPBUF: ExportQueue, MMAP_COPY: CopyQueue}
    return kinds[strategy](dev, fmt, buffers)
