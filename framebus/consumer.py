"""The consumer side of the bus: attach to a producer, get frames, release them."""

from __future__ import annotations

import os
import time
from typing import Iterator

import zmq

from . import handshake, protocol
from .buffers import BufferTable
from .errors import FramebusError, ProducerGone, ProtocolError, Timeout
from .formats import FrameFormat
from .frame import Frame
from .linux import fdpass
from .mapping import ReadOnlyMapping
from .status import StatusBoard
from .subscriber import LATEST, POLICIES, QUEUE

class Consumer:
    """A connection to the producer at `path`, with every buffer mapped read-only.

    Args:
        path: the producer's control socket.
        name: shown by `framebus status` (default: ``pid<N>``).
        policy: ``"latest"`` (the newest frame whenever you ask) or ``"queue"``
            (every frame in order, up to `depth` waiting; beyond that the
            producer drops frames for this consumer and counts them).
        max_held: frames this consumer may hold at once.
        depth: frames the producer may queue ahead (policy ``queue``).
        timeout: seconds to wait for the producer during the handshake.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str = "", policy: str = LATEST,
                 max_held: int = 2, depth: int = 4, timeout: float = 5.0) -> None:
        if policy not in POLICIES:
            raise FramebusError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
        if not 1 <= max_held <= 256 or not 0 <= depth <= 256:
            raise FramebusError("max_held must be 1..256 and depth 0..256")
        self.path = os.fspath(path)
        self.name = name or f"pid{os.getpid()}"
        self.policy = policy
        self.max_held = max_held
        self._closed = False
        self._gone: ProducerGone | None = None
        self._held: dict[int, Frame] = {}
        self._credit_pending = False  # a CREDIT is out and its frame not yet received
        self._credit_stale = False  # ... and it was sent by an earlier get() call
        self._last_seq = 0
        self.received = 0
        self.dropped = 0
        self._ctrl: socket.socket | None = None
        self._mapping: ReadOnlyMapping | None = None
        self._status: StatusBoard | None = None
        self._ctx: zmq.Context | None = None
        self._dealer: zmq.Socket | None = None
        try:
            self._ctrl = handshake.connect(self.path, timeout)
            token, endpoint = self._handshake(timeout, policy, max_held, depth)
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
                self._send(protocol.CREDIT.encode(0))  # "connected": frames may flow
        except BaseException:
            self.close()
            raise

    def _handshake(self, timeout: float, policy: str, max_held: int,
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
        self.session = session
        self.lease_timeout = lease_ms / 1000
        status_fd = fds.pop()
        try:
            self._mapping = ReadOnlyMapping(self.format, self.table, fds)
        except BaseException:
            os.close(status_fd)
            raise
        self._status = StatusBoard.attach(status_fd, len(self.table.buffers), session)
        answer = handshake.attach(self._ctrl, self.path, "consumer", self.name, policy,
                                  max_held, depth)
        if answer.kind is not protocol.ACCEPT:
            raise ProtocolError(f"expected ACCEPT, got {answer.kind.name}")
        return token, endpoint

    # ------------------------------------------------------------------ API
    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def held(self) -> int:
        """How many frames this consumer holds now."""
        return len(self._held)

    def get(self, timeout: float | None = None) -> Frame:
        """The next frame (policy latest: the newest one not yet seen).

        Raises `framebus.Timeout` after `timeout` seconds (None: no limit),
        `framebus.ProducerGone` once the producer has gone, and
        `FramebusError` if this consumer already holds `max_held` frames.
        """
        if self._closed:
            raise FramebusError("consumer is closed")
        if self._gone is not None:
            raise self._gone
        if len(self._held) >= self.max_held:
            raise FramebusError(f"consumer {self.name!r} already holds max_held={self.max_held} "
                                f"frames; release one before asking for another")
        if self.policy == LATEST:
            if self._credit_pending:
                self._credit_stale = True
            else:
                self._send(protocol.CREDIT.encode(1))
                self._credit_pending = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._receive(deadline, timeout)
            if self.policy == LATEST:
                self._credit_pending = False
                stale = self._credit_stale and self._status.newest > frame.seq
                self._credit_stale = False
                if stale:  # asked for long ago: let it go and ask for the newest
                    frame.release()
                    self._send(protocol.CREDIT.encode(1))
                    self._credit_pending = True
                    continue
            return frame

    def __iter__(self) -> Iterator[Frame]:
        """Every frame in turn, each released when the next is asked for.

        Ends when the producer shuts down cleanly; raises `ProducerGone` if it
        vanished.
        """
        frame: Frame | None = None
        try:
            while True:
                if frame is not None:
                    frame.release()  # before asking: works with max_held=1
                try:
                    frame = self.get()
                except ProducerGone as exc:
                    if exc.clean:
                        return
                    raise
                yield frame
        finally:
            if frame is not None:
                frame.release()

    def close(self) -> None:
        """Release every held frame, detach and unmap. Safe from any state, twice."""
        if self._closed:
            return
        self._closed = True
        if self._held and self._dealer is not None and self._gone is None:
            self._send(protocol.RELEASE.encode(list(self._held)[: protocol.MAX_RELEASE_BATCH]))
        for frame in list(self._held.values()):
            frame._views = frame._array = None
        self._held.clear()
        if self._dealer is not None:
            self._dealer.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        if self._ctrl is not None:
            self._ctrl.close()
        if self._mapping is not None:
            self._mapping.close()
        if self._status is not None:
            self._status.close()

    # ------------------------------------------------------------ internals
    def _receive(self, deadline: float | None, timeout: float | None) -> Frame:
        ctrl_fd = self._ctrl.fileno()
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = dict(self._poller.poll(None if remaining is None else remaining * 1000))
            if ctrl_fd in events:
                self._on_control()
            if self._dealer in events:
                try:
                    payload = self._dealer.recv(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                return self._on_frame(payload)
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"no frame within {timeout} s")

    def _on_frame(self, payload: bytes) -> Frame:
        seq, index, stamp, used = protocol.expect(
            payload, protocol.FRAME, protocol.BUS, protocol.MAX_ZMQ_MESSAGE)
        views = self._mapping.views
        if index >= len(views) or used > len(views[index].raw) or seq <= self._last_seq:
            raise ProtocolError(f"producer announced an impossible frame "
                                f"(seq {seq}, buffer {index}, {used} bytes)")
        if self._last_seq:
            self.dropped += seq - self._last_seq - 1
        self._last_seq = seq
        self.received += 1
        frame = Frame(seq, index, stamp, used, views[index], self.format.compressed,
                      self._status, self._release)
        self._held[seq] = frame
        return frame

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
        self._gone = gone
        raise gone

    def _release(self, seq: int) -> None:
        if self._held.pop(seq, None) is not None and self._gone is None and not self._closed:
            self._send(protocol.RELEASE.encode([seq]))

    def _send(self, payload: bytes) -> None:
        try:
            self._dealer.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the producer is not reading; its lease timeout reclaims the frame

