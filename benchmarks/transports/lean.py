"""The lean references: framebus's job done with nothing but the job, so that the
report can give framebus's figures as ratios to what the machine allows.

All three keep the frames in memfd buffers (written in place by the producer,
mapped read-only by the consumers, as framebus does, capture buffer included) and
send a fixed-layout FRAME per frame to each consumer (see ``_lean``):

* ``pipe-floor``: the wake-up floor. A pipe per consumer; the consumer blocks in
  ``poll()`` and ``read()``s the message. Paced (lossy) mode has no leases at all
  (buffers are reused round robin, a consumer that keeps up never notices); flat
  (lossless) mode needs backpressure, so a second pipe carries the releases back.
* ``lean-seqpacket``: a per-consumer ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair
  (what framebus's ``channel="socket"`` uses); blocking ``recv`` with
  ``SO_RCVTIMEO``, the release goes back on the same socket.
* ``lean-zmq``: pyzmq ROUTER (producer) / DEALER (a consumer) over ``ipc://``
  (what framebus's default channel uses); struct FRAME and RELEASE.
"""

from __future__ import annotations

import os
import select
import socket
import struct

import zmq

from framebus_bench.transports._lean import FRAME, HELLO, RELEASE, LeanConsumer, LeanProducer, MemfdBuffers
from framebus_bench.transports.base import ConsumerSide, ProducerSide, Setup, Transport

_RELEASES = RELEASE.size * 64  # read up to this many releases at once


class _Lean(Transport):
    maps_capture = True  # memfd buffers, like framebus's: a V4L2 USERPTR capture lands in them

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.fds: list[int] = []  # parent-made pipe ends, closed in cleanup
        self.pairs: list[tuple[socket.socket, socket.socket]] = []  # parent-made socket pairs, likewise
        self.buffers = MemfdBuffers(setup, f"fbbench-{self.name}-{setup.tag}")
        try:
            self.open_channel()
        except BaseException:
            self.cleanup()
            raise

    def open_channel(self) -> None:
        """Parent side: make what the forks inherit (into ``fds`` and ``pairs``)."""

    def cleanup(self) -> None:
        self.buffers.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        for pair in self.pairs:
            for s in pair:
                s.close()
        self.pairs.clear()


# --------------------------------------------------------------------------- pipe floor


class _PipeProducer(LeanProducer):
    def __init__(self, t: PipeFloor) -> None:
        super().__init__(t.buffers, t.setup)
        self.writes = [w for _, w in t.frames]
        for w in self.writes:
            os.set_blocking(w, False)  # a consumer that stopped reading never blocks us
        self.acks = {r: i for i, (r, _) in enumerate(t.acks)}
        self.poller = select.poll()
        for r in self.acks:
            self.poller.register(r, select.POLLIN)

    def send(self, consumer: int, message: bytes) -> bool:
        try:
            os.write(self.writes[consumer], message)
        except BlockingIOError:
            return False
        return True

    def drain(self, timeout_ms: int) -> None:
        if not self.acks:  # paced: no releases to wait for, not even a poll
            return
        for fd, _ in self.poller.poll(timeout_ms):
            data = os.read(fd, _RELEASES)  # whole 4-byte messages: pipe writes <= PIPE_BUF are atomic
            for (index,) in RELEASE.iter_unpack(data):
                self.released(self.acks[fd], index)

    def publish(self, frame: object, seq: int, timestamp_ns: int) -> int:
        if self.lossless:
            return super().publish(frame, seq, timestamp_ns)  # type: ignore[arg-type]
        message = FRAME.pack(seq, self.index, timestamp_ns, self.nbytes)
        dropped = sum(not self.send(i, message) for i in range(self.consumers))
        self.holders[self.index] = 0
        self.free.append(self.index)  # no leases: round robin over the buffers
        return dropped


class _PipeConsumer(LeanConsumer):
    def __init__(self, t: PipeFloor, index: int) -> None:
        super().__init__(t.buffers)
        self.fd = t.frames[index][0]
        self.ack = t.acks[index][1] if t.acks else -1
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def recv(self, timeout: float) -> bytes | None:
        if not self.poller.poll(int(timeout * 1000)):
            return None
        return os.read(self.fd, FRAME.size)

    def send_release(self, message: bytes) -> None:
        os.write(self.ack, message)

    def release(self) -> None:
        if self.ack >= 0:
            super().release()


class PipeFloor(_Lean):
    name = "pipe-floor"
    describe = ("the wake-up floor: FRAME into a pipe per consumer, consumer blocks in poll()+read(); "
                "memfd buffers; releases on a second pipe only in flat (lossless) mode")

    def open_channel(self) -> None:
        self.frames: list[tuple[int, int]] = []
        self.acks: list[tuple[int, int]] = []
        for pipes in [self.frames] + ([self.acks] if self.setup.lossless else []):
            for _ in range(self.setup.consumers):
                pipes.append(os.pipe())
                self.fds += pipes[-1]

    def producer(self) -> ProducerSide:
        return _PipeProducer(self)

    def consumer(self, index: int) -> ConsumerSide:
        return _PipeConsumer(self, index)


# --------------------------------------------------------------------------- SEQPACKET


class _SeqpacketProducer(LeanProducer):
    def __init__(self, t: LeanSeqpacket) -> None:
        super().__init__(t.buffers, t.setup)
        self.socks = [a for a, _ in t.pairs]
        self.by_fd = {s.fileno(): (i, s) for i, s in enumerate(self.socks)}
        self.poller = select.poll()
        for fd in self.by_fd:
            self.poller.register(fd, select.POLLIN)

    def send(self, consumer: int, message: bytes) -> bool:
        try:
            self.socks[consumer].send(message, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        return True

    def drain(self, timeout_ms: int) -> None:
        for fd, _ in self.poller.poll(timeout_ms):
            i, sock = self.by_fd[fd]
            while True:
                try:
                    data = sock.recv(RELEASE.size, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                self.released(i, RELEASE.unpack(data)[0])


class _SeqpacketConsumer(LeanConsumer):
    def __init__(self, t: LeanSeqpacket, index: int) -> None:
        super().__init__(t.buffers)
        self.sock = t.pairs[index][1]
        self.timeout = -1.0

    def recv(self, timeout: float) -> bytes | None:
        if timeout != self.timeout:  # a kernel-side timeout: recv stays one system call
            sec = int(timeout)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 struct.pack("ll", sec, int((timeout - sec) * 1e6)))
            self.timeout = timeout
        try:
            return self.sock.recv(FRAME.size)
        except BlockingIOError:
            return None

    def send_release(self, message: bytes) -> None:
        self.sock.send(message)


class LeanSeqpacket(_Lean):
    name = "lean-seqpacket"
    describe = ("lean reference: a SOCK_SEQPACKET pair per consumer, struct FRAME, blocking recv, "
                "RELEASE back on the same socket, producer drains releases itself; memfd buffers")

    def open_channel(self) -> None:
        for _ in range(self.setup.consumers):
            self.pairs.append(socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET))

    def producer(self) -> ProducerSide:
        return _SeqpacketProducer(self)

    def consumer(self, index: int) -> ConsumerSide:
        return _SeqpacketConsumer(self, index)


# --------------------------------------------------------------------------- zmq


def _identity(index: int) -> bytes:
    return b"c%d" % index


class _ZmqProducer(LeanProducer):
    def __init__(self, t: LeanZmq) -> None:
        super().__init__(t.buffers, t.setup)
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(t.endpoint)
        self.ids = {_identity(i): i for i in range(t.setup.consumers)}
        self.peers = [_identity(i) for i in range(t.setup.consumers)]
        self.known = [False] * t.setup.consumers  # said hello: ROUTER drops what it cannot route

    def send(self, consumer: int, message: bytes) -> bool:
        if not self.known[consumer]:
            return False
        self.router.send(self.peers[consumer], zmq.SNDMORE)
        self.router.send(message)
        return True

    def drain(self, timeout_ms: int) -> None:
        if timeout_ms and not self.router.poll(timeout_ms, zmq.POLLIN):
            return
        while True:
            try:
                peer = self.router.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            (index,) = RELEASE.unpack(self.router.recv())
            i = self.ids[peer]
            if index == HELLO:
                self.known[i] = True
            else:
                self.released(i, index)

    def close(self) -> None:
        super().close()
        self.router.close(linger=0)
        self.ctx.term()


class _ZmqConsumer(LeanConsumer):
    def __init__(self, t: LeanZmq, index: int) -> None:
        super().__init__(t.buffers)
        self.ctx = zmq.Context()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.IDENTITY, _identity(index))
        self.dealer.connect(t.endpoint)
        self.dealer.send(RELEASE.pack(HELLO))
        self.timeout_ms = -1

    def recv(self, timeout: float) -> bytes | None:
        ms = max(1, int(timeout * 1000))
        if ms != self.timeout_ms:
            self.dealer.setsockopt(zmq.RCVTIMEO, ms)
            self.timeout_ms = ms
        try:
            return self.dealer.recv()
        except zmq.Again:
            return None

    def send_release(self, message: bytes) -> None:
        self.dealer.send(message)

    def close(self) -> None:
        super().close()
        self.dealer.close(linger=0)
        self.ctx.term()


class LeanZmq(_Lean):
    name = "lean-zmq"
    describe = ("lean reference: pyzmq ROUTER/DEALER over ipc://, struct FRAME and RELEASE, "
                "producer drains releases itself; memfd buffers")
    def open_channel(self) -> None:
        self.endpoint = "ipc://" + os.path.join(self.setup.workdir, "lean.sock")

    def producer(self) -> ProducerSide:
        return _ZmqProducer(self)

    def consumer(self, index: int) -> ConsumerSide:
        return _ZmqConsumer(self, index)

