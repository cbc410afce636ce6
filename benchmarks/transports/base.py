"""The one small interface every transport implements.

A :class:`Transport` is built in the harness (parent) process before the producer
and consumer processes are forked, so it may create resources they inherit
(queues, shared memory). :meth:`Transport.producer` runs in the producer process,
:meth:`Transport.consumer` in each consumer process; :meth:`Transport.cleanup`
runs in the parent once those processes are gone, on every path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from framebus_bench.workload import FrameSpec

#: frames a consumer may fall behind before the transport drops for it
QUEUE_DEPTH = 2


@dataclass(frozen=True)
class Setup:
    frame: FrameSpec
    consumers: int
    workdir: str  # private directory of this cell (sockets, ...), removed afterwards
    tag: str  # unique per cell, for names of shared resources
    #: False (paced mode): a live source, the transport drops frames for a consumer
    #: that is QUEUE_DEPTH behind and the producer never waits.
    #: True (flat-out mode): every consumer gets every frame; the producer waits
    #: while any consumer is QUEUE_DEPTH behind (the transport's backpressure).
    lossless: bool = False


class Received(NamedTuple):
    """A frame as a consumer sees it: a numpy view plus what the transport says about it."""

    array: np.ndarray
    seq: int | None = None  # the transport's own sequence number, if it has one
    timestamp_ns: int | None = None  # the transport's own timestamp, if it has one


class ProducerSide(ABC):
    @abstractmethod
    def acquire(self, timeout: float) -> np.ndarray:
        """A writable frame (shape ``frame.shape``) to fill: the transport's own buffer
        where it has one, else a new array that the transport then owns."""

    @abstractmethod
    def publish(self, frame: np.ndarray, seq: int, timestamp_ns: int) -> int:
        """Send the frame from :meth:`acquire` to every consumer.

        Lossy setup: never waits for a slow consumer, returns how many consumers it
        dropped this frame for (0 where the transport cannot tell). Lossless setup:
        waits (bounded by a timeout, then TimeoutError) and returns 0."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything; safe to call twice."""


class ConsumerSide(ABC):
    @abstractmethod
    def receive(self, timeout: float) -> Received | None:
        """Block (no busy polling) until the next frame or ``timeout``; None on timeout.

        The array is a read-only view; nothing is copied after the transport's own
        delivery."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """Give the last received frame back (leases, loans)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything; safe to call twice."""


class Transport(ABC):
    name: ClassVar[str]
    #: one line for the report: how frames travel
    describe: ClassVar[str]
    #: True if the producer's capture buffer *is* a transport buffer (no copy-in)
    maps_capture: ClassVar[bool] = False

    def __init__(self, setup: Setup) -> None:
        self.setup = setup

    @classmethod
    def check(cls) -> None:
        """Raise ImportError (saying why) if this transport cannot run here."""

    @abstractmethod
    def producer(self) -> ProducerSide: ...

    @abstractmethod
    def consumer(self, index: int) -> ConsumerSide: ...

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Parent side, after all processes ended: remove shared resources. Idempotent."""
