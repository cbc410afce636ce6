"""One attachment to one producer run: its control socket, mappings and bus channel.

A `Session` is what `Consumer` holds while attached. When the producer goes
away the session is closed and, with ``reconnect=True``, replaced by a new one.
The session is the one owner of the frames it handed out: a frame's release
goes straight to it, and the frames of a closed session can never be released
into the next producer run.

The bus messages (FRAME in, CREDIT and RELEASE out) travel over zmq by
default. With ``channel="socket"`` they travel over the control socket itself:
the kernel wakes the consumer directly instead of through zmq's I/O thread in
each process, which cuts latency and CPU per frame by a third to a half. The
socket is already authenticated by SO_PEERCRED, so it needs no token.

Threads: socket operations take `_lock`, so a frame may be released from any
thread while another waits in `receive()` (which polls without the lock).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, cast

import zmq

from . import _handshake as handshake, _protocol as protocol
from ._board import StatusBoard
from ._mapping import ReadOnlyMapping
from ._protocol import QUEUE, SOCKET, ZMQ, Announcement
from ._wakeup import WakePipe
from .buffers import BufferTable
from .errors import ProducerGone, ProtocolError, Timeout
from .formats import FrameFormat
from .linux import fdpass

if TYPE_CHECKING:
    from .frame import Frame

_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
_DONTWAIT = socket.MSG_DONTWAIT
_TIMEVALS = (struct.Struct("@ll"), struct.Struct("@qq"))  # SO_RCVTIMEO's struct timeval
RECV_SLICE_US = 250_000  # the longest a socket-channel recv() blocks before looking at the time
#: SO_RCVTIMEO counts whole kernel ticks (up to 10 ms), rounded up, and the
#: kernel's timer wheel may fire a long timeout up to 1/8 of it late: a recv()
#: waits at most 7/8 of the time left less a tick (the rest is a precise poll).
_TICK_US = 10_000
_WHEEL_SLACK = 1 / 8


class Session:
    """Connect, handshake, map every buffer read-only and join the bus.

    Raises the handshake's errors (`NoProducer`, `PermissionDenied`,
    `Refused`, `Timeout`, `ProtocolError`) with everything closed.
    """

    def __init__(self, path: str, name: str, policy: str, max_held: int, depth: int,
                 timeout: float, channel: str = ZMQ, spin: float = 0.0,
                 producer_uid: int | None = None) -> None:
        self.path = path
        self.channel = channel
        self.held: dict[int, Frame] = {}  # by seq: the frames handed out and not released
        self.received = 0  # the newest seq handed out (the producer tells held from queued)
        self.closed = False
        self.gone: ProducerGone | None = None
        self._spin = spin
        self._timeval: struct.Struct | None = None  # SO_RCVTIMEO's layout (None: not usable)
        self._recv_timeout_us = 0  # the SO_RCVTIMEO set now
        self._lock = threading.Lock()
        self._mapping: ReadOnlyMapping | None = None
        self.status: StatusBoard | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._dealer: zmq.Socket[bytes] | None = None
        self._epoll: select.epoll | None = None  # zmq channel: `fileno()` for event loops
        #: what a waiting get() sleeps on: the control socket (and zmq's fd).
        #: poll(), not epoll: poll() holds each file while it sleeps, so a
        #: close() in another thread, which shuts the control socket down and
        #: closes it at once, still wakes it; epoll drops a closed file's
        #: readiness, and a waiter that had not yet collected it sleeps on.
        self._readable = select.poll()
        #: zmq channel: a send (of a release, from any thread) also takes in
        #: zmq's pending commands, which quiets zmq's fd even with a FRAME
        #: waiting to be read; a get() asleep on it (`_asleep`) is then woken
        #: through this pipe instead (`_woken`: written, not yet drained).
        self._wake: WakePipe | None = None
        self._asleep = False
        self._woken = False
        self._ctrl = handshake.connect(path, timeout, producer_uid=producer_uid)
        try:
            token, endpoint = self._handshake(timeout, name, policy, max_held, depth)
            # One fd that turns readable when this session has news. On the
            # socket channel that is the control socket itself (FRAMEs, BYE,
            # EOF): no epoll set is registered on it, so the producer's send
            # of a FRAME wakes the one waiter and nothing else. On the zmq
            # channel, an epoll set of the control socket, the DEALER's
            # notification fd and the wake-up pipe (`_readable` holds the same
            # three for get()'s own waits).
            self._readable.register(self._ctrl.fileno(), select.POLLIN)
            if channel == ZMQ:
                self._epoll = select.epoll(2)
                self._epoll.register(self._ctrl.fileno(), select.EPOLLIN)
                self._ctx = zmq.Context(io_threads=1)
                self._dealer = self._ctx.socket(zmq.DEALER)
                self._dealer.setsockopt(zmq.LINGER, 0)
                self._dealer.setsockopt(zmq.ROUTING_ID, token)
                self._dealer.connect(endpoint)
                self._epoll.register(self._dealer.fileno(), select.EPOLLIN)  # zmq.FD
                self._readable.register(self._dealer.fileno(), select.POLLIN)
                self._wake = WakePipe()
                self._epoll.register(self._wake.fileno(), select.EPOLLIN)
                self._readable.register(self._wake.fileno(), select.POLLIN)
            # Blocking from now on: the socket channel's wait for a FRAME is
            # then one recv() with a kernel timeout (SO_RCVTIMEO), where a
            # Python timeout would poll() first. Every other use passes
            # MSG_DONTWAIT.
            self._ctrl.settimeout(None)
            if channel == SOCKET:
                self._timeval = self._find_timeval()
            if channel == ZMQ and policy == QUEUE:
                self.send(protocol.CREDIT_ZERO)  # "connected": frames may flow
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
        self.compressed = self.format.compressed  # (looked up per frame)
        self.sizeimage = self.format.sizeimage
        answer = handshake.attach(self._ctrl, self.path, "consumer", name, policy, max_held,
                                  depth, self.channel)
        if answer.kind is not protocol.ACCEPT:
            raise ProtocolError(f"expected ACCEPT, got {answer.kind.name}")
        if self.channel == ZMQ:
            # The producer binds the endpoint by ACCEPT: now its file can be checked too.
            owner = fdpass.peer_credentials(self._ctrl).uid
            endpoint = handshake.check_endpoint(endpoint, owner, self.path)
        return token, endpoint

    def fileno(self) -> int:
        """Readable when a FRAME or news of the producer may be waiting
        (check with `try_receive`: zmq's fd only says "look")."""
        if self._epoll is not None:
            return self._epoll.fileno()
        return -1 if self.closed else self._ctrl.fileno()

    def send(self, payload: bytes) -> None:
        """Send a CREDIT, RELEASE or REPORT to the producer without ever blocking.

        If the producer is not reading, the message is dropped: its lease
        timeout reclaims our frames anyway.
        """
        with self._lock:
            if self.closed or self.gone is not None:
                return
            try:
                dealer = self._dealer
                if dealer is not None:
                    dealer.send(payload, _NOBLOCK)
                    if self._asleep and not self._woken and \
                            cast(int, dealer.getsockopt(_EVENTS)) & _POLLIN:
                        assert self._wake is not None
                        self._woken = True
                        self._wake.wake()
                else:
                    self._ctrl.send(payload, _DONTWAIT)
            except (zmq.ZMQError, OSError):
                pass  # full (EAGAIN), or the producer hung up: receive() reports that

    def release(self, frame: Frame) -> None:
        """`frame` (of this session) is released: tell the producer."""
        if self.held.pop(frame.seq, None) is not None:
            self.send(protocol.encode_release([frame.seq], 0, self.received))

    def receive(self, deadline: float | None, timeout: float | None) -> Announcement:
        """The next FRAME; raises `ProducerGone` or `Timeout`.

        With `spin`, first polls without sleeping for up to that many seconds:
        lower latency for a core's worth of CPU while it waits.
        """
        if self._spin:
            spin_end = time.monotonic() + self._spin
            while time.monotonic() < spin_end:
                announced = self.try_receive()
                if announced is not None:
                    return announced
        if self.channel == SOCKET:
            return self._wait_control(deadline, timeout)
        return self._wait_dealer(deadline, timeout)

    def try_receive(self) -> Announcement | None:
        """A FRAME if one is waiting, without blocking; raises `ProducerGone`."""
        if self.gone is not None:
            raise self.gone
        if self._dealer is not None:
            announced = self._try_dealer()
            if announced is not None:
                return announced
        return self._read_control()

    def _try_dealer(self) -> Announcement | None:
        """A FRAME from zmq if one is waiting."""
        dealer = self._dealer
        assert dealer is not None
        with self._lock:
            if self.closed:
                raise ProducerGone("the session is closed")
            if self._woken:
                assert self._wake is not None
                self._woken = False
                self._wake.drain()
            waiting = cast(int, dealer.getsockopt(_EVENTS)) & _POLLIN
            payload = dealer.recv(_NOBLOCK) if waiting else None
            self._asleep = not waiting  # (the caller sleeps on the fds next)
        return None if payload is None else protocol.decode_frame(payload)

    def _wait_dealer(self, deadline: float | None, timeout: float | None) -> Announcement:
        """The next FRAME from zmq (channel "zmq"), reading the control
        socket only when it has something (a goodbye, a hang-up)."""
        ctrl = self._ctrl.fileno()
        while True:
            if self.gone is not None:
                raise self.gone
            announced = self._try_dealer()  # (zmq's fd only signals news after this)
            if announced is not None:
                return announced
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"no frame within {timeout} s")
            for fd, _ in self._readable.poll(None if remaining is None else remaining * 1000):
                if fd == ctrl:
                    self._read_control()  # on this channel: raises, or nothing yet

    def _wait_control(self, deadline: float | None, timeout: float | None) -> Announcement:
        """The next FRAME on the control socket (channel "socket"): a
        blocking recv() per frame, one system call when one is waiting.

        The recv() gives up after at most RECV_SLICE_US (SO_RCVTIMEO) and
        short of the deadline; the last stretch before the deadline is
        waited in poll() instead, whose timer is precise where SO_RCVTIMEO
        rounds to the kernel's ticks.
        """
        while True:
            if self.gone is not None:
                raise self.gone
            remaining = None if deadline is None else deadline - time.monotonic()
            if not self._recv_until(remaining):
                announced = self._wait_readable(remaining)
                if announced is not None:
                    return announced
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"no frame within {timeout} s")
                continue
            try:
                # Not under the lock: a release may be sent from another
                # thread meanwhile; close() shuts the socket down to wake us.
                data = self._ctrl.recv(protocol.MAX_CONTROL_MESSAGE)
            except BlockingIOError:
                continue  # SO_RCVTIMEO ran out: look at the deadline again
            except OSError as exc:
                if self.closed:
                    raise ProducerGone("the session is closed") from None
                self.gone = ProducerGone(f"connection error: {exc}")
                raise self.gone from None
            announced = protocol.decode_fixed_frame(data)  # the one message per frame
            if announced is not None:
                return announced
            if not data and self.closed:
                raise ProducerGone("the session is closed")
            return self._on_control(data)

    def _recv_until(self, remaining: float | None) -> bool:
        """Set SO_RCVTIMEO for a blocking recv() within `remaining` s (None:
        no deadline); False if the wait must be a poll() (too little time
        left, or no usable SO_RCVTIMEO on this platform).

        Whole milliseconds, so that `get(timeout)` in a loop finds the same
        value set and costs no setsockopt() per frame.
        """
        timeval = self._timeval
        if timeval is None:
            return False
        if remaining is None:
            wait_us = RECV_SLICE_US
        else:
            wait_us = min(RECV_SLICE_US, int(remaining * (1 - _WHEEL_SLACK) * 1000) * 1000 - _TICK_US)
            if wait_us <= 0:
                return False
        if wait_us != self._recv_timeout_us:
            try:
                self._ctrl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                      timeval.pack(wait_us // 1_000_000, wait_us % 1_000_000))
            except OSError:
                return False  # closed by another thread: the poll() path says so
            self._recv_timeout_us = wait_us
        return True

    def _wait_readable(self, remaining: float | None) -> Announcement | None:
        """Up to `remaining` s (none: one look) for the session's fd, then
        a FRAME if one came."""
        if remaining is None or remaining > 0:
            # (close() in another thread shuts the socket down: this returns)
            self._readable.poll(None if remaining is None else remaining * 1000)
        if self.closed:
            raise ProducerGone("the session is closed")
        return self.try_receive()

    def _find_timeval(self) -> struct.Struct | None:
        """The struct timeval layout this platform's SO_RCVTIMEO takes (32-bit
        platforms with a 64-bit time_t take the second); None if neither."""
        for layout in _TIMEVALS:
            try:
                self._ctrl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                      layout.pack(0, RECV_SLICE_US))
            except OSError:
                continue
            self._recv_timeout_us = RECV_SLICE_US
            return layout
        return None

    def _read_control(self) -> Announcement | None:
        """A FRAME from the control socket (channel "socket"), or the news
        that the producer said goodbye or hung up (raised as ProducerGone)."""
        try:
            data = self._ctrl.recv(protocol.MAX_CONTROL_MESSAGE, _DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            self.gone = ProducerGone(f"connection error: {exc}")
            raise self.gone from None
        return self._on_control(data)

    def _on_control(self, data: bytes) -> Announcement:
        """What came on the control socket: a FRAME, else the producer's
        goodbye or hang-up, raised as ProducerGone."""
        if not data:
            self.gone = ProducerGone("the producer closed the connection (it exited or crashed)")
            raise self.gone
        if self.channel == SOCKET:
            announced = protocol.decode_fixed_frame(data)
            if announced is not None:
                return announced
        try:
            decoded = protocol.decode(data, protocol.AFTER_ACCEPT, protocol.MAX_CONTROL_MESSAGE)
            if decoded.kind is protocol.FRAME and self.channel == SOCKET:
                seq, index, stamp, used = decoded.values
                return seq, index, stamp, used
            if decoded.kind is not protocol.BYE:
                raise ProtocolError(f"unexpected {decoded.kind.name} on the control socket")
            self.gone = ProducerGone(decoded.values[0], clean=decoded.values[1])
        except ProtocolError as exc:
            self.gone = ProducerGone(f"the producer broke the protocol: {exc}")
        raise self.gone

    def close(self) -> None:
        """Detach and unmap; safe twice. Views still held elsewhere keep
        their mapping alive until they go."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._dealer is not None:
                self._dealer.close(linger=0)
            if self._ctx is not None:
                self._ctx.term()
            if self._epoll is not None:
                self._epoll.close()
            if self._wake is not None:
                self._wake.close()
            try:
                self._ctrl.shutdown(socket.SHUT_RDWR)  # wakes a recv() in another thread
            except OSError:
                pass  # not connected any more
            self._ctrl.close()
        if self._mapping is not None:
            self._mapping.close()
        if self.status is not None:
            self.status.close()
