"""One attachment to one producer run: its control socket, mappings and zmq socket.

A `Session` is what `Consumer` holds while attached. When the producer goes
away the session is closed and, with ``reconnect=True``, replaced by a new one;
frames of the old session keep a reference to it, so their release can never
reach the new producer.
"""

from __future__ import annotations

import os
import time

import zmq

from . import handshake, protocol
from .buffers import BufferTable
from .errors import ProducerGone, ProtocolError, Timeout
from .formats import FrameFormat
from .linux import fdpass
from .mapping import ReadOnlyMapping
from .status import StatusBoard
from .subscriber import QUEUE


class Session:
    """Connect, handshake, map every buffer read-only and join the bus.

    Raises the handshake's errors (`NoProducer`, `PermissionDenied`,
    `Refused`, `Timeout`, `ProtocolError`) with everything closed.
    """

    def __init__(self, path: str, name: str, policy: str, max_held: int, depth: int,
                 timeout: float) -> None:
        self.path = path
        self.closed = False
        self.gone: ProducerGone | None = None
        self._mapping: ReadOnlyMapping | None = None
        self.status: StatusBoard | None = None
        self._ctx: zmq.Context | None = None
        self._dealer: zmq.Socket | None = None
        self._ctrl = handshake.connect(path, timeout)
        try:
            token, endpoint = self._handshake(timeout, name, policy, max_held, depth)
            self._ctx = zmq.Context(io_threads=1)
            self._dealer = self._ctx.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.LINGER, 0)
            self._dealer.setsockopt(zmq.ROUTING_ID, token)
            self._dealer.connect(endpoint)
            self._poller = zmq.Poller()
            self._poller.register(self._dealer, zmq.POLLIN)
            self._poller.register(self._ctrl.fileno(), zmq.POLLIN)
            self._ctrl.setblocking(False)
            if policy == QUEUE:
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
        answer = handshake.attach(self._ctrl, self.path, "consumer", name, policy, max_held, depth)
        if answer.kind is not protocol.ACCEPT:
            raise ProtocolError(f"expected ACCEPT, got {answer.kind.name}")
        return token, endpoint

    def send(self, payload: bytes) -> None:
        """Send to the producer's ROUTER without ever blocking."""
        if self.closed or self.gone is not None:
            return
        try:
            self._dealer.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the producer is not reading; its lease timeout reclaims our frames

    def receive(self, deadline: float | None, timeout: float | None) -> bytes:
        """The next message from the bus; raises `ProducerGone` or `Timeout`."""
        if self.gone is not None:
            raise self.gone
        ctrl_fd = self._ctrl.fileno()
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = dict(self._poller.poll(None if remaining is None else remaining * 1000))
            if ctrl_fd in events:
                self._on_control()
            if self._dealer in events:
                try:
                    return self._dealer.recv(zmq.NOBLOCK)
                except zmq.Again:
                    continue
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"no frame within {timeout} s")

    def _on_control(self) -> None:
        """The producer said goodbye or its end of the control socket closed."""
        try:
            data = self._ctrl.recv(protocol.MAX_CONTROL_MESSAGE)
        except BlockingIOError:
            return
        except OSError as exc:
            data, reason = b"", f"connection error: {exc}"
        else:
            reason = "the producer closed the connection (it exited or crashed)"
        gone = ProducerGone(reason)
        if data:
            try:
                (bye,) = protocol.expect(data, protocol.BYE, protocol.CONTROL,
                                         protocol.MAX_CONTROL_MESSAGE)
                gone = ProducerGone(bye, clean=True)
            except ProtocolError as exc:
                gone = ProducerGone(f"the producer broke the protocol: {exc}")
        self.gone = gone
        raise gone

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
