"""iceoryx2's Python binding: zero-copy publish-subscribe in shared memory.

Each frame is a loaned ``Slice[c_uint8]`` sample; an event service wakes the
subscribers (blocking wait, no polling). Subscribers buffer ``QUEUE_DEPTH``
samples: lossy mode enables safe overflow (the oldest is dropped), lossless mode
uses the publisher's ``RetryUntilDelivered`` backpressure (iceoryx2 retries the
delivery inside ``send()``; it has no blocking wait for room). Its subscriber views
claim to be writable but are not, so they are marked read-only here. All its
files get a per-cell prefix and root directory so that cleanup can find them."""

from __future__ import annotations

import ctypes
import glob
import os
import time
from importlib import metadata

import iceoryx2 as iox2
import numpy as np

from framebus_bench.transports.base import QUEUE_DEPTH, ConsumerSide, ProducerSide, Received, Setup, Transport

MIN_VERSION = (0, 10)  # the binding's API changes between minor versions
_version = tuple(int(v) for v in metadata.version("iceoryx2").split(".")[:2])
if _version < MIN_VERSION:
    raise ImportError(f"iceoryx2 {metadata.version('iceoryx2')} is too old: the bench needs >= 0.10")

iox2.set_log_level_from_env_or(iox2.LogLevel.Error)


class _Node:
    """A node plus the two services of a cell (pub-sub for frames, event for wake-ups)."""

    def __init__(self, t: "Iceoryx2", create: bool) -> None:
        cfg = iox2.config.default()
        cfg.global_cfg.prefix = iox2.FileName.new(t.prefix)
        cfg.global_cfg.root_path = iox2.Path.new(t.root + "/")
        self.node = (
            iox2.NodeBuilder.new()
            .config(cfg)
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)
            .create(iox2.ServiceType.Ipc)
        )
        name = iox2.ServiceName.new("frames")
        n = t.setup.consumers
        builder = (
            self.node.service_builder(name)
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .max_publishers(1)
            .max_subscribers(n)
            .max_nodes(n + 1)
            .subscriber_max_buffer_size(QUEUE_DEPTH)
            .subscriber_max_borrowed_samples(2)
            .history_size(0)
            .enable_safe_overflow(not t.setup.lossless)
        )
        self.frames = builder.create() if create else builder.open()
        events = self.node.service_builder(name).event().max_listeners(n).max_notifiers(1).max_nodes(n + 1)
        self.events = events.create() if create else events.open()


class _Producer(ProducerSide):
    def __init__(self, t: "Iceoryx2") -> None:
        self.shape, self.nbytes = t.setup.frame.shape, t.setup.frame.nbytes
        self.n = _Node(t, create=True)
        strategy = iox2.BackpressureStrategy.RetryUntilDelivered if t.setup.lossless else iox2.BackpressureStrategy.DiscardData
        self.pub = (
            self.n.frames.publisher_builder()
            .initial_max_slice_len(self.nbytes)
            .max_loaned_samples(2)
            .backpressure_strategy(strategy)
            .create()
        )
        self.notifier = self.n.events.notifier_builder().create()
        self.sample: object | None = None

    def acquire(self, timeout: float) -> np.ndarray:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sample = self.pub.loan_slice_uninit(self.nbytes)
                break
            except iox2.LoanError:
                if time.monotonic() > deadline:
                    raise TimeoutError("iceoryx2: no sample to loan") from None
                time.sleep(0.0005)
        view = np.frombuffer(self.sample.payload().as_memory_view(), np.uint8)  # type: ignore[attr-defined]
        return view.reshape(self.shape)

    def publish(self, frame: np.ndarray, seq: int, timestamp_ns: int) -> int:
        sample, self.sample = self.sample, None
        sample.assume_init().send()  # type: ignore[attr-defined]
        self.notifier.notify()
        return 0

    def close(self) -> None:
        for obj in (self.sample, getattr(self, "notifier", None), getattr(self, "pub", None)):
            if obj is not None:
                obj.delete()  # type: ignore[attr-defined]
        self.sample = None


class _Consumer(ConsumerSide):
    def __init__(self, t: "Iceoryx2") -> None:
        self.shape = t.setup.frame.shape
        self.n = _Node(t, create=False)
        self.sub = self.n.frames.subscriber_builder().buffer_size(QUEUE_DEPTH).create()
        self.listener = self.n.events.listener_builder().create()
        self.sample: object | None = None

    def receive(self, timeout: float) -> Received | None:
        deadline = time.monotonic_ns() + int(timeout * 1e9)
        while (sample := self.sub.receive()) is None:
            left = deadline - time.monotonic_ns()
            if left <= 0:
                return None
            self.listener.timed_wait(iox2.Duration.from_nanos(left))
        self.sample = sample
        view = np.frombuffer(sample.payload().as_memory_view(), np.uint8)
        view.flags.writeable = False  # claims writable, but the mapping is read-only
        return Received(view.reshape(self.shape))

    def release(self) -> None:
        if self.sample is not None:
            self.sample.delete()  # type: ignore[attr-defined]
            self.sample = None

    def close(self) -> None:
        self.release()
        for obj in (getattr(self, "listener", None), getattr(self, "sub", None)):
            if obj is not None:
                obj.delete()


class Iceoryx2(Transport):
    name = "iceoryx2"
    describe = f"iceoryx2 pub-sub, loaned Slice[u8] samples + event wake-up, buffer {QUEUE_DEPTH}"

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.prefix = f"fbb{setup.tag}_"
        self.root = os.path.join(setup.workdir, "iceoryx2")

    def producer(self) -> ProducerSide:
        return _Producer(self)

    def consumer(self, index: int) -> ConsumerSide:
        return _Consumer(self)

    def cleanup(self) -> None:
        for path in glob.glob(f"/dev/shm/{self.prefix}*"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

