"""One attachment to one producer run: its control socket, mappings and bus channel.

A `Session` is what `Consumer` holds while attached. When the producer goes
away the session is closed and, with ``reconnect=True``, replaced by a new one;
frames of the old session keep a reference to it, so their release can never
reach the new producer.

The bus messages (FRAME in, CREDIT and RELEASE out) travel over zmq by
default. With ``channel="socket"`` they travel over the control socket itself:
the kernel wakes the consumer directly instead of through zmq's I/O thread in
each process, which cuts latency and CPU per frame by a third to a half. The socket is
already authenticated by SO_PEERCRED, so it needs no token.
"""

from __future__ import annotations

import os
import select
import time
from typing import NamedTuple

import zmq

from . import _handshake as handshake, _protocol as protocol
from .buffers import BufferTable
from .errors import ProducerGone, ProtocolError, Timeout
from .formats import FrameFormat
from .linux import fdpass
from ._mapping import ReadOnlyMapping
from ._board import StatusBoard
from ._protocol import QUEUE, SOCKET, ZMQ


class Announcement(NamedTuple):
    """A FRAME message's fields."""

    seq: int
    index: int
    timestamp_ns: int
    bytesused: int


class Session:
    """Connect, handshake, map every buffer read-only and join the bus.

    Raises the handshake's errors (`NoProducer`, `PermissionDenied`,
    `Refused`, `Timeout`, `ProtocolError`) with everything closed.
    """

    def __init__(self, path: str, name: str, policy: str, max_held: int, depth: int,
                 timeout: float, channel: str = ZMQ, spin: float = 0.0) -> None:
        self.path = path
        self.channel = channel
        self._spin = spin
        self.closed = False
        self.gone: ProducerGone | None = None
        self._mapping: ReadOnlyMapping | None = None
        self.status: StatusBoard | None = None
        self._ctx: zmq.Context | None = None
        self._dealer: zmq.Socket | None = None
        self._ctrl = handshake.connect(path, timeout)
        try:
            token, endpoint = self._handshake(timeout, name, policy, max_held, depth)
            if channel == ZMQ:
                self._ctx = zmq.Context(io_threads=1)
                self._dealer = self._ctx.socket(zmq.DEALER)
                self._dealer.setsockopt(zmq.LINGER, 0)
                self._dealer.setsockopt(zmq.ROUTING_ID, token)
                self._dealer.connect(endpoint)
                self._poller: zmq.Poller | select.poll = zmq.Poller()
                self._poller.register(self._dealer, zmq.POLLIN)
            else:
                self._poller = select.poll()
            self._poller.register(self._ctrl.fileno(), select.POLLIN)
            self._ctrl.setblocking(False)
            if channel == ZMQ and policy == QUEUE:
                self.send(protocol.CREDIT.encode(0))  # "connected": frames may flow
        except BaseException:
            self.close()
            raise

    def _handshake(self, timeout: float, name: str, policy: str, max_held: int,
                   depth: int) -> tuple[bytes, str]:
        """Read HELLO, map what it describes, ATTACH; returns (token, endpoint)."""
        self._ctrl.settimeout(timeout)
        values, fds = handshake.read_hello(self._ctrl, self.path)
        _, session, fmt, table, endpoint, token, lease_ms = values
        try:
            self.format = FrameFormat.from_wire(fmt)
            self.table = BufferTable.from_wire(table, self.format)
            if len(fds) != len(self.table.memories) + 1:
                raise ProtocolError(f"HELLO carried {len(fds)} fds, "
                                    f"expected {len(self.table.memories) + 1}")
        except BaseException:
            fdpass.close_all(fds)
            raise
        self.id = session
        self.lease_timeout = lease_ms / 1000
        status_fd = fds.pop()
        try:
            self._mapping = ReadOnlyMapping(self.format, self.table, fds)
        except BaseException:
            os.close(status_fd)
            raise
        self.status = StatusBoard.attach(status_fd, len(self.table.buffers), session)
        self.views = self._mapping.views
        self.sync_fds = self._mapping.sync_fds
        answer = handshake.attach(self._ctrl, self.path, "consumer", name, policy, max_held,
                                  depth, self.channel)
        if answer.kind is not protocol.ACCEPT:
            raise ProtocolError(f"expected ACCEPT, got {answer.kind.name}")
        return token, endpoint

    def send(self, payload: bytes) -> None:
        """Send a CREDIT or RELEASE to the producer without ever blocking.

        If the producer is not reading, the message is dropped: its lease
        timeout reclaims our frames anyway.
        """
        if self.closed or self.gone is not None:
            return
        try:
            if self._dealer is not None:
                self._dealer.send(payload, zmq.NOBLOCK)
            else:
                self._ctrl.send(payload)
        except (zmq.Again, BlockingIOError):
            pass
        except OSError:
            pass  # the producer hung up: the next receive() reports it

    def receive(self, deadline: float | None, timeout: float | None) -> Announcement:
        """The next FRAME; raises `ProducerGone` or `Timeout`.

        With `spin`, first polls without sleeping for up to that many seconds:
        lower latency for a core's worth of CPU while it waits.
        """
        if self.gone is not None:
            raise self.gone
        if self._spin:
            spin_end = time.monotonic() + self._spin
            while time.monotonic() < spin_end:
                frame = self._try_receive()
                if frame is not None:
                    return frame
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._poller.poll(None if remaining is None else remaining * 1000):
                frame = self._try_receive()
                if frame is not None:
                    return frame
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"no frame within {timeout} s")

    def _try_receive(self) -> Announcement | None:
        """A FRAME if one is waiting, without blocking."""
        if self._dealer is not None:
            try:
                payload = self._dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                pass  # nothing on zmq; the control socket may hold a goodbye
            else:
                return Announcement(*protocol.expect(payload, protocol.FRAME, protocol.BUS,
                                                     protocol.MAX_ZMQ_MESSAGE))
        return self._read_control()

    def _read_control(self) -> Announcement | None:
        """A FRAME from the control socket (channel "socket"), or the news
        that the producer said goodbye or hung up (raised as ProducerGone)."""
        try:
            data = self._ctrl.recv(protocol.MAX_CONTROL_MESSAGE)
        except BlockingIOError:
            return None
        except OSError as exc:
            self.gone = ProducerGone(f"connection error: {exc}")
            raise self.gone from None
        if not data:
            self.gone = ProducerGone("the producer closed the connection (it exited or crashed)")
            raise self.gone
        try:
            decoded = protocol.decode(data, protocol.AFTER_ACCEPT, protocol.MAX_CONTROL_MESSAGE)
            if decoded.kind is protocol.FRAME and self.channel == SOCKET:
                return Announcement(*decoded.values)
            if decoded.kind is not protocol.BYE:
                raise ProtocolError(f"unexpected {decoded.kind.name} on the control socket")
            self.gone = ProducerGone(decoded.values[0], clean=True)
        except ProtocolError as exc:
            self.gone = ProducerGone(f"the producer broke the protocol: {exc}")
        raise self.gone

    def close(self) -> None:
        """Detach and unmap; safe twice. Views still held elsewhere keep
        their mapping alive until they go."""
        if self.closed:
            return
        self.closed = True
        if self._dealer is not None:
            self._dealer.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        self._ctrl.close()
        if self._mapping is not None:
            self._mapping.close()
        if self.status is not None:
            self.status.close()
