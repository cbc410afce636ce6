"""framebus itself, through its public contract (DESIGN.md).

The producer writes into the bus's own memfd buffers; consumers map them
read-only. Capture case: a camera's buffer *is* a bus buffer (V4L2 USERPTR into
the memfds), so there is nothing to copy in, just the stamp to write.
Lossy (paced) mode: a live producer and consumers with policy ``latest``.
Lossless (flat-out) mode: a producer that is not live (``live=False``: it waits
for full consumers) and consumers with policy ``queue``, depth QUEUE_DEPTH.
``framebus`` uses the consumer's default bus channel; ``framebus-socket`` asks
for ``channel="socket"`` (FRAME/CREDIT/RELEASE over the control socket instead
of zmq), where the installed framebus has it."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, ClassVar

import numpy as np

import framebus
from framebus_bench.transports.base import QUEUE_DEPTH, ConsumerSide, ProducerSide, Received, Setup, Transport

MAX_HELD = 1
RESERVE = 2


def _quiet() -> None:
    """Attach/detach INFO lines from every cell would bury the bench's output."""
    logging.getLogger("framebus").setLevel(logging.WARNING)


def _path(setup: Setup) -> str:
    return os.path.join(setup.workdir, "bus.sock")


class _Producer(ProducerSide):
    def __init__(self, setup: Setup) -> None:
        _quiet()
        f = setup.frame
        fmt = framebus.FrameFormat(width=f.width, height=f.height, pixel_format=f.fourcc)
        quota = max(QUEUE_DEPTH, MAX_HELD) if setup.lossless else MAX_HELD
        buffers = setup.consumers * quota + RESERVE + 2
        self.bus = framebus.Producer(_path(setup), fmt, buffers=buffers, reserve=RESERVE, live=not setup.lossless)
        self.buf: framebus.Buffer | None = None

    def acquire(self, timeout: float) -> np.ndarray:
        self.buf = self.bus.acquire(timeout=timeout)
        return self.buf.array

    def publish(self, frame: np.ndarray, seq: int, timestamp_ns: int) -> int:
        buf, self.buf = self.buf, None
        self.bus.publish(buf, timestamp_ns=timestamp_ns)  # type: ignore[arg-type]
        return 0  # latest: a consumer that is behind simply gets a newer frame

    def close(self) -> None:
        self.bus.close()


class _Consumer(ConsumerSide):
    def __init__(self, setup: Setup, index: int, options: dict[str, Any]) -> None:
        _quiet()
        policy = "queue" if setup.lossless else "latest"
        self.cam = framebus.Consumer(_path(setup), name=f"bench{index}", policy=policy,
                                     max_held=MAX_HELD, depth=QUEUE_DEPTH, **options)
        self.frame: framebus.Frame | None = None

    def receive(self, timeout: float) -> Received | None:
        try:
            frame = self.cam.get(timeout=timeout)
        except framebus.Timeout:
            return None
        self.frame = frame
        return Received(frame.array, seq=frame.seq, timestamp_ns=frame.timestamp_ns)

    def release(self) -> None:
        if self.frame is not None:
            self.frame.release()
            self.frame = None

    def close(self) -> None:
        self.release()
        self.cam.close()


class Framebus(Transport):
    name = "framebus"
    describe = "framebus memfd buffers, FRAME/CREDIT/RELEASE over zmq; latest (paced) / queue depth 2 (flat)"
    maps_capture = True
    #: extra keyword arguments for framebus.Consumer
    consumer_options: ClassVar[dict[str, Any]] = {}

    @classmethod
    def check(cls) -> None:
        accepted = inspect.signature(framebus.Consumer).parameters
        missing = [k for k in cls.consumer_options if k not in accepted]
        if missing:
            raise ImportError(f"this framebus's Consumer has no {', '.join(missing)} option")

    def producer(self) -> ProducerSide:
        return _Producer(self.setup)

    def consumer(self, index: int) -> ConsumerSide:
        return _Consumer(self.setup, index, self.consumer_options)


class FramebusSocket(Framebus):
    name = "framebus-socket"
    describe = "framebus as above, consumers with channel='socket' (bus messages over the control socket)"
    consumer_options = {"channel": "socket"}

