"""``multiprocessing.Queue``: each frame pickled into one queue per consumer.

The queue owns what it is given until its feeder thread has pickled it, so the
producer hands it a new array per frame (as ``cv2.VideoCapture.read`` gives one):
both producer cases cost the same here.
"""

from __future__ import annotations

import numpy as np

from framebus_bench.transports._fanout import QueueFanout
from framebus_bench.transports.base import ConsumerSide, ProducerSide, Received, Setup, Transport


class _Producer(ProducerSide):
    def __init__(self, fanout: QueueFanout, shape: tuple[int, ...]) -> None:
        self.fanout, self.shape = fanout, shape

    def acquire(self, timeout: float) -> np.ndarray:
        return np.empty(self.shape, np.uint8)

    def publish(self, frame: np.ndarray, seq: int, timestamp_ns: int) -> int:
        return self.fanout.put_all(frame)

    def close(self) -> None:
        self.fanout.close_producer()


class _Consumer(ConsumerSide):
    def __init__(self, fanout: QueueFanout, index: int) -> None:
        self.fanout, self.index = fanout, index

    def receive(self, timeout: float) -> Received | None:
        frame = self.fanout.get(self.index, timeout)
        if frame is None:
            return None
        frame.flags.writeable = False
        return Received(frame)


class MpQueue(Transport):
    name = "mpqueue"
    describe = "multiprocessing.Queue per consumer, pickled frames, depth 2"

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.fanout = QueueFanout(setup.consumers, setup.lossless)

    def producer(self) -> ProducerSide:
        return _Producer(self.fanout, self.setup.frame.shape)

    def consumer(self, index: int) -> ConsumerSide:
        return _Consumer(self.fanout, index)

    def cleanup(self) -> None:
        self.fanout.close()

