"""``multiprocessing.shared_memory``: a do-it-yourself ring of frame slots plus a
queue of slot indices per consumer. No leases: the producer reuses slots round
robin, so a consumer that falls a lap behind reads an overwritten slot (the stamp
check counts it as a bad frame)."""

from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

from framebus_bench.transports._fanout import QueueFanout
from framebus_bench.transports.base import QUEUE_DEPTH, ConsumerSide, ProducerSide, Received, Setup, Transport

SLOTS = 2 * QUEUE_DEPTH + 4


class _Ring:
    def __init__(self, shm: shared_memory.SharedMemory, shape: tuple[int, ...], writable: bool) -> None:
        nbytes = int(np.prod(shape))
        self.slots = [
            np.ndarray(shape, np.uint8, buffer=shm.buf, offset=i * nbytes) for i in range(SLOTS)
        ]
        for s in self.slots:
            s.flags.writeable = writable


class _Producer(ProducerSide):
    def __init__(self, ring: _Ring, fanout: QueueFanout) -> None:
        self.ring, self.fanout, self.next = ring, fanout, 0
        self.index = 0

    def acquire(self, timeout: float) -> np.ndarray:
        self.index = self.next
        self.next = (self.next + 1) % SLOTS
        return self.ring.slots[self.index]

    def publish(self, frame: np.ndarray, seq: int, timestamp_ns: int) -> int:
        return self.fanout.put_all((self.index, seq))

    def close(self) -> None:
        self.fanout.close_producer()
        self.ring.slots.clear()


class _Consumer(ConsumerSide):
    def __init__(self, ring: _Ring, fanout: QueueFanout, index: int) -> None:
        self.ring, self.fanout, self.index = ring, fanout, index

    def receive(self, timeout: float) -> Received | None:
        item = self.fanout.get(self.index, timeout)
        if item is None:
            return None
        slot, seq = item
        return Received(self.ring.slots[slot], seq=seq)

    def close(self) -> None:
        self.ring.slots.clear()


class ShmRing(Transport):
    name = "shmring"
    describe = f"multiprocessing.shared_memory ring of {SLOTS} slots + index queue per consumer, no leases"

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.fanout = QueueFanout(setup.consumers, setup.lossless)
        # Made (not touched) in the parent so that the parent can always unlink it.
        self.shm: shared_memory.SharedMemory | None = shared_memory.SharedMemory(
            name=f"fbbench-{setup.tag}", create=True, size=SLOTS * setup.frame.nbytes
        )

    def producer(self) -> ProducerSide:
        assert self.shm is not None
        return _Producer(_Ring(self.shm, self.setup.frame.shape, True), self.fanout)

    def consumer(self, index: int) -> ConsumerSide:
        assert self.shm is not None
        return _Consumer(_Ring(self.shm, self.setup.frame.shape, False), self.fanout, index)

    def cleanup(self) -> None:
        self.fanout.close()
        if self.shm is not None:
            shm, self.shm = self.shm, None
            try:
                shm.close()
            except BufferError:
                pass  # a view still exists in this process; unlinking is what matters
            try:
                shm.unlink()
            except FileNotFoundError:
                pass

