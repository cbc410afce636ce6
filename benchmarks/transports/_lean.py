"""What the lean reference transports share: memfd frame buffers, the fixed-layout
FRAME and RELEASE messages, and the producer's minimal lease book.

The references do framebus's job (frames made in shared memory, mapped read-only
by the consumers, zero copies; every buffer a consumer holds comes back before the
producer reuses it) with nothing else: no handshake beyond "hello", no per-field
decoding, no I/O thread. The producer drains the releases itself, in ``acquire``
and while it waits for room. Subclasses supply only the channel: how a FRAME
reaches consumer ``i`` and how releases come back.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from abc import abstractmethod
from collections import deque

import numpy as np

from framebus_bench.transports.base import QUEUE_DEPTH, ConsumerSide, ProducerSide, Received, Setup

#: seq, buffer index, timestamp_ns, bytesused: what framebus's FRAME says, fixed layout
FRAME = struct.Struct("<QIQI")
#: buffer index given back (HELLO: a consumer announcing itself, where the channel needs it)
RELEASE = struct.Struct("<I")
HELLO = 0xFFFFFFFF


def buffer_count(setup: Setup) -> int:
    """Each consumer holds at most QUEUE_DEPTH buffers; one more is being written, one spare."""
    return setup.consumers * QUEUE_DEPTH + 2


class MemfdBuffers:
    """``count`` frame buffers in one memfd, made in the parent (the forks inherit the fd)."""

    def __init__(self, setup: Setup, name: str) -> None:
        self.shape, self.nbytes = setup.frame.shape, setup.frame.nbytes
        self.count = buffer_count(setup)
        self.stride = -(-self.nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.count * self.stride)
        except OSError:
            self.close()
            raise

    def map(self, writable: bool) -> tuple[mmap.mmap, list[np.ndarray]]:
        """The mapping and a pre-built view per buffer (read-only unless ``writable``)."""
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mm = mmap.mmap(self.fd, self.count * self.stride, mmap.MAP_SHARED, prot)
        views = [np.frombuffer(mm, np.uint8, self.nbytes, i * self.stride).reshape(self.shape)
                 for i in range(self.count)]
        return mm, views

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def unmap(mm: mmap.mmap | None, views: list[np.ndarray]) -> None:
    views.clear()
    if mm is not None:
        try:
            mm.close()
        except BufferError:
            pass  # a caller still holds a view; the mapping goes with the process


class LeanProducer(ProducerSide):
    """Leases, the minimum: how many hold each buffer (consumers, and the producer from
    ``acquire`` to the end of ``publish``), how many frames each
    consumer holds, the free buffers. Lossy: a consumer QUEUE_DEPTH behind misses the
    frame. Lossless: publish waits (draining releases) until it has room."""

    def __init__(self, buffers: MemfdBuffers, setup: Setup) -> None:
        self.mm, self.views = buffers.map(writable=True)
        self.nbytes = buffers.nbytes
        self.lossless = setup.lossless
        self.consumers = setup.consumers
        self.holders = [0] * buffers.count
        self.held = [0] * setup.consumers
        self.free: deque[int] = deque(range(buffers.count))
        self.index = -1
        #: lossless mode: how long publish waits for a consumer to make room
        self.send_timeout = 5.0

    # -- the channel

    @abstractmethod
    def send(self, consumer: int, message: bytes) -> bool:
        """Send ``message`` to ``consumer``; False if it cannot take it (not there yet)."""

    @abstractmethod
    def drain(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for releases, then hand every one that arrived to
        :meth:`released` without waiting."""

    # -- the book

    def released(self, consumer: int, index: int) -> None:
        self.held[consumer] -= 1
        self.holders[index] -= 1
        if not self.holders[index]:
            self.free.append(index)

    def _wait(self, deadline: float, what: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what}: no release in time")
        self.drain(max(1, int(left * 1000)))

    def acquire(self, timeout: float) -> np.ndarray:
        self.drain(0)
        deadline = time.monotonic() + timeout
        while not self.free:
            self._wait(deadline, "no free buffer")
        self.index = self.free.popleft()
        self.holders[self.index] = 1  # the producer's own hold, until publish has sent it to all
        return self.views[self.index]

    def publish(self, frame: np.ndarray, seq: int, timestamp_ns: int) -> int:
        index = self.index
        message = FRAME.pack(seq, index, timestamp_ns, self.nbytes)
        dropped = 0
        deadline = time.monotonic() + self.send_timeout
        for i in range(self.consumers):
            if self.lossless:
                while self.held[i] >= QUEUE_DEPTH:
                    self._wait(deadline, f"consumer {i} is stuck")
                while not self.send(i, message):
                    self._wait(deadline, f"consumer {i} never said hello")
            elif self.held[i] >= QUEUE_DEPTH or not self.send(i, message):
                dropped += 1
                continue
            self.held[i] += 1
            self.holders[index] += 1  # before any later wait can drain this consumer's release of it
        self.holders[index] -= 1  # the producer's own hold
        if not self.holders[index]:
            self.free.append(index)
        return dropped

    def close(self) -> None:
        unmap(self.mm, self.views)
        self.mm = None  # type: ignore[assignment]


class LeanConsumer(ConsumerSide):
    """Wake on a FRAME, decode it with one ``unpack``, hand out the pre-built view;
    release sends the buffer index back."""

    def __init__(self, buffers: MemfdBuffers) -> None:
        self.mm, self.views = buffers.map(writable=False)
        self.index = -1

    @abstractmethod
    def recv(self, timeout: float) -> bytes | None:
        """The next FRAME message, blocking up to ``timeout``; None on timeout."""

    @abstractmethod
    def send_release(self, message: bytes) -> None: ...

    def receive(self, timeout: float) -> Received | None:
        message = self.recv(timeout)
        if message is None:
            return None
        seq, index, ts, _ = FRAME.unpack(message)
        self.index = index
        return Received(self.views[index], seq, ts)

    def release(self) -> None:
        if self.index >= 0:
            self.send_release(RELEASE.pack(self.index))
            self.index = -1

    def close(self) -> None:
        unmap(self.mm, self.views)
        self.mm = None  # type: ignore[assignment]
