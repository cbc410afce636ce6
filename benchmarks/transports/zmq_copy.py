"""pyzmq as imagezmq uses it: each frame's bytes sent to every consumer.

One PUSH socket per consumer over ``ipc://`` (a socket write and a read of the
whole frame per consumer), ``copy=False`` on send: zmq keeps a reference to the
producer's array instead of copying it first, so the producer hands it a new
array per frame (as a camera wrapper would). High-water mark QUEUE_DEPTH: lossy
mode sends with NOBLOCK and counts EAGAIN as a drop, lossless mode blocks."""

from __future__ import annotations

import os

import numpy as np
import zmq

from framebus_bench.transports.base import QUEUE_DEPTH, ConsumerSide, ProducerSide, Received, Setup, Transport

SEND_TIMEOUT_MS = 5000  # lossless mode: a consumer that takes no frame for this long is stuck


def _endpoint(setup: Setup, index: int) -> str:
    return "ipc://" + os.path.join(setup.workdir, f"zmq-{index}.sock")


class _Producer(ProducerSide):
    def __init__(self, setup: Setup) -> None:
        self.shape = setup.frame.shape
        self.flags = 0 if setup.lossless else zmq.NOBLOCK
        self.ctx = zmq.Context()
        self.socks = []
        for i in range(setup.consumers):
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, QUEUE_DEPTH)
            sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(_endpoint(setup, i))
            self.socks.append(sock)

    def acquire(self, timeout: float) -> np.ndarray:
        return np.empty(self.shape, np.uint8)

    def publish(self, frame: np.ndarray, seq: int, timestamp_ns: int) -> int:
        dropped = 0
        for sock in self.socks:
            try:
                sock.send(frame, self.flags, copy=False)
            except zmq.Again:
                if not self.flags:
                    raise TimeoutError("a consumer took no frame for 5 s") from None
                dropped += 1
        return dropped

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)
        self.ctx.term()


class _Consumer(ConsumerSide):
    def __init__(self, setup: Setup, index: int) -> None:
        self.shape = setup.frame.shape
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, QUEUE_DEPTH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(_endpoint(setup, index))
        self.timeout_ms = -1

    def receive(self, timeout: float) -> Received | None:
        ms = max(1, int(timeout * 1000))
        if ms != self.timeout_ms:
            self.sock.setsockopt(zmq.RCVTIMEO, ms)
            self.timeout_ms = ms
        try:
            msg = self.sock.recv(copy=False)
        except zmq.Again:
            return None
        return Received(np.frombuffer(msg, np.uint8).reshape(self.shape))  # zmq's buffer, read-only

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class PyZmq(Transport):
    name = "pyzmq"
    describe = "pyzmq PUSH->PULL per consumer over ipc://, copy=False send, HWM 2"

    def producer(self) -> ProducerSide:
        return _Producer(self.setup)

    def consumer(self, index: int) -> ConsumerSide:
        return _Consumer(self.setup, index)

