"""The producer side of the bus: owns the buffers, hands out leases.

`Producer` is what a program that makes frames uses: `acquire()` a buffer
nobody holds, fill it, `publish()` it. Behind it one I/O thread serves the
control socket (handshakes, consumers going away) and the zmq ROUTER (credits
and releases) and revokes leases past their deadline.

Threading: every piece of bus state is guarded by one condition variable. The
ROUTER is used from the caller's thread (publish sends FRAMEs directly, for
latency) and from the I/O thread, always under that lock. zmq's notification
fd is edge-like: after any send or receive the socket's EVENTS must be checked
before sleeping on the fd again, so whoever touches the ROUTER drains it.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import socket
import threading
import time
from typing import Iterable

import zmq

from . import _endpoint as endpoint, _protocol as protocol
from ._access import AccessPolicy
from .buffers import Buffer, BufferPool
from ._control import POLL_IN, Attach, ControlServer, send_quietly
from .errors import FramebusError, ProtocolError, Timeout
from .formats import FrameFormat
from ._leases import LeaseTable, Release
from ._ratelimit import RateLimitedLog
from ._board import StatusBoard
from ._subscriber import Subscriber
from ._protocol import CHANNELS, LATEST, POLICIES, QUEUE, SOCKET, ZMQ

log = logging.getLogger("framebus.producer")

_MAX_ERRORS = 100  # protocol errors before a consumer is disconnected
# Plain ints: pyzmq's enum members cost an object each time on the hot path.
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)


class Producer:
    """A frame bus at a Unix socket path, serving any number of consumers.

    Args:
        path: where consumers connect (the control socket).
        fmt: the stream format.
        buffers: how many frame buffers to allocate (ignored with `pool`).
        pool: buffers made elsewhere (a driver's exported DMA-BUFs, say).
        lease_timeout: seconds a consumer may hold a frame before its lease
            may be revoked.
        reserve: buffers never promised to consumers' quotas, so the producer
            (or a camera driver's queue) can always get one.
        live: for a live source, a full `queue` consumer loses frames; for a
            source that is not live, `acquire()` waits for it instead.
        mode, group: the control socket's file mode and group.
        allow_uids, allow_gids: peers admitted besides the producer's own uid
            and root.
        max_consumers: consumers attached at once, beyond which newcomers are
            refused.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: FrameFormat, buffers: int = 8, *,
                 pool: BufferPool | None = None, lease_timeout: float = 1.0, reserve: int = 2,
                 live: bool = True, mode: int = 0o660, group: int | None = None,
                 allow_uids: Iterable[int] = (), allow_gids: Iterable[int] = (),
                 max_consumers: int = 64, handshake_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.format = fmt
        self.lease_timeout = lease_timeout
        self._live = live
        self._cond = threading.Condition()
        self._closed = False
        self._bye_reason = "producer shut down"
        self._session = secrets.randbits(63) | 1
        self._next_seq = 1
        self._newest: int | None = None  # buffer holding the newest published frame
        self._frames: dict[int, tuple[int, int, int]] = {}  # index -> (seq, ts, bytesused)
        self._subs: dict[bytes, Subscriber] = {}  # by token
        self._conns: dict[int, Subscriber] = {}  # by control fd
        self._next_id = 1
        self._counters = {"published": 0, "reclaimed": 0, "revoked": 0, "unknown_peer": 0,
                          "errors": 0}
        self._started = time.monotonic()
        self._rate_log = RateLimitedLog(log)
        self._pool: BufferPool | None = None
        self._status: StatusBoard | None = None
        self._ctx: zmq.Context | None = None
        self._router: zmq.Socket | None = None
        self._dir: endpoint.PrivateDir | None = None
        self._control: ControlServer | None = None
        self._wake = (-1, -1)
        self._thread: threading.Thread | None = None
        try:
            if not 0 <= reserve < (len(pool) if pool else buffers):
                raise FramebusError(f"reserve {reserve} leaves no buffer for consumers")
            self._pool = pool or BufferPool.allocate(
                fmt, buffers, name=f"framebus:{os.path.basename(self.path)}")
            self._reserve = reserve
            self._leases = LeaseTable(len(self._pool))
            self._status = StatusBoard.create(len(self._pool), self._session)
            self._control = ControlServer(
                self.path, mode, group, AccessPolicy.default(allow_uids, allow_gids), self._hello,
                lambda: len(self._subs), max_consumers, handshake_timeout, self._rate_log)
            self._dir = endpoint.PrivateDir(self.path, mode, group)
            self._ctx = zmq.Context(io_threads=1)
            self._router = self._ctx.socket(zmq.ROUTER)
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown peer: error, not silence
            self._router.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_ZMQ_MESSAGE)
            self._router.setsockopt(zmq.SNDHWM, 1024)
            self._router.setsockopt(zmq.RCVHWM, 4096)
            self._router.bind(self._dir.endpoint)
            self._dir.restrict_endpoint()
            self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            self._thread = threading.Thread(target=self._serve, name="framebus-producer", daemon=True)
            self._thread.start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ API
    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def buffers(self) -> list[Buffer]:
        """Every buffer of the pool (write only into one you `acquire()`d)."""
        return self._pool.buffers if self._pool else []

    @property
    def next_seq(self) -> int:
        """The sequence number the next `publish()` will return (for sources
        that stamp it into the pixels; one publisher thread assumed)."""
        return self._next_seq

    def acquire(self, timeout: float | None = None) -> Buffer:
        """A buffer that no consumer holds, writable, for the next frame.

        Raises `framebus.Timeout` (a `TimeoutError`) if none is free within
        `timeout` seconds (None waits for ever).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_open()
                index = None if self._backpressured() else self._leases.start_writing()
                if index is not None:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Timeout(f"no free buffer within {timeout} s "
                                  f"({self._leases.leased_count()} of {len(self._pool)} leased)")
                self._cond.wait(remaining)
            # The board says "being rewritten" before the caller changes a
            # pixel, so a consumer that reads and then checks valid() is safe.
            self._status.invalidate(index)
            self._frames.pop(index, None)
            if index == self._newest:
                self._newest = None
            return self._pool.buffers[index]

    def publish(self, buffer: Buffer, timestamp_ns: int | None = None,
                bytesused: int | None = None) -> int:
        """Announce the frame in `buffer` to consumers; returns its sequence number.

        `timestamp_ns` is CLOCK_MONOTONIC (default: now); `bytesused`
        defaults to the whole frame (set it for MJPG).
        """
        stamp = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
        used = self.format.sizeimage if bytesused is None else bytesused
        if not 0 < used <= self.format.sizeimage:
            raise FramebusError(f"bytesused {used} out of range (1..{self.format.sizeimage})")
        with self._cond:
            self._check_open()
            index = self._own(buffer)
            seq = self._next_seq
            self._next_seq += 1
            self._leases.published(index, seq)
            self._frames[index] = (seq, stamp, used)
            self._newest = index
            self._status.published(index, seq)
            self._counters["published"] += 1
            payload = protocol.FRAME.encode(seq, index, stamp, used)  # the same for everyone
            for sub in self._subs.values():
                if sub.wants_frame(self._leases.held(sub.id)):
                    self._deliver(sub, index, payload)
            self._drain_bus()
        return seq

    def discard(self, buffer: Buffer) -> None:
        """Give back an acquired buffer without publishing it."""
        with self._cond:
            self._check_open()
            self._leases.abandon(self._own(buffer))
            self._cond.notify_all()

    def stats(self) -> dict[str, object]:
        """What `framebus status` shows: the producer's counters and every consumer."""
        with self._cond:
            return self._report()

    def reconfigure(self, *, allow_uids: Iterable[int] | None = None,
                    allow_gids: Iterable[int] | None = None, lease_timeout: float | None = None,
                    max_consumers: int | None = None) -> list[str]:
        """Change settings while serving (the daemon does this on SIGHUP).

        Consumers the new allow-list no longer admits are disconnected with a
        reason they can read; returns the names of those disconnected.
        """
        with self._cond:
            self._check_open()
            control = self._control
            if allow_uids is not None or allow_gids is not None:
                control.access = AccessPolicy.default(
                    control.access.uids if allow_uids is None else allow_uids,
                    control.access.gids if allow_gids is None else allow_gids)
            if lease_timeout is not None:
                self.lease_timeout = lease_timeout
            if max_consumers is not None:
                control.max_consumers = max_consumers
            evicted = [s for s in self._subs.values() if not control.access.admits(s.peer)]
            for sub in evicted:
                # The I/O thread sees the shutdown as this consumer's departure.
                send_quietly(sub.conn, protocol.BYE.encode("access revoked by the producer"))
                sub.conn.shutdown(socket.SHUT_RDWR)
            return [s.name for s in evicted]

    def close(self, reason: str = "producer shut down") -> None:
        """Tell every consumer goodbye, stop serving and free everything.

        Safe from any state and more than once.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._bye_reason = reason
            self._cond.notify_all()
        if self._thread is not None:
            os.write(self._wake[1], b"x")
            self._thread.join()
        if self._router is not None:
            self._router.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        if self._control is not None:
            self._control.close(self._bye_reason)
        if self._dir is not None:
            self._dir.close()
        for fd in self._wake:
            if fd >= 0:
                os.close(fd)
        if self._status is not None:
            self._status.close()
        if self._pool is not None:
            self._pool.close()

    # ------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise FramebusError("producer is closed")

    def _own(self, buffer: Buffer) -> int:
        index = buffer.index
        if not (0 <= index < len(self._pool) and self._pool.buffers[index] is buffer
                and self._leases.writing[index]):
            raise FramebusError(f"{buffer!r} was not acquired from this producer")
        return index

    def _backpressured(self) -> bool:
        """A source that is not live waits for full `queue` consumers."""
        return not self._live and any(
            s.policy == QUEUE and s.connected and self._leases.held(s.id) >= s.depth
            for s in self._subs.values())

    def _deliver(self, sub: Subscriber, index: int, payload: bytes | None = None) -> None:
        seq, stamp, used = self._frames[index]
        if payload is None:
            payload = protocol.FRAME.encode(seq, index, stamp, used)
        try:
            if sub.channel == SOCKET:
                sub.conn.send(payload)  # non-blocking: a full socket is a consumer not reading
            else:
                self._router.send_multipart([sub.token, payload], _NOBLOCK)
        except (zmq.ZMQError, OSError) as exc:  # EAGAIN: full; EHOSTUNREACH/EPIPE: gone
            self._rate_log.warning(sub.name, "cannot send to %s: %s", sub.name, exc.strerror)
            return
        self._leases.grant(sub.id, index, time.monotonic() + self.lease_timeout)
        sub.delivered_frame(seq)

    # The I/O thread ------------------------------------------------------
    def _serve(self) -> None:
        poller = select.poll()
        zmq_fd = self._router.getsockopt(zmq.FD)
        listen_fd = self._control.fileno()
        for fd in (listen_fd, zmq_fd, self._wake[0]):
            poller.register(fd, select.POLLIN)
        while True:
            with self._cond:
                timeout = self._poll_timeout()
            events = poller.poll(timeout)
            with self._cond:
                if self._closed:
                    break
                for fd, mask in events:
                    if fd == listen_fd:
                        self._control.accept(poller)
                    elif fd == self._wake[0]:
                        _drain_pipe(fd)
                    elif self._control.owns(fd):
                        attach = self._control.finish(poller, fd)
                        if attach is not None:
                            self._on_attach(poller, attach)
                    elif fd in self._conns:
                        self._on_control(poller, self._conns[fd], mask)
                self._drain_bus()
                self._expire(poller)
                self._cond.notify_all()
        with self._cond:
            self._hang_up_all(poller)

    def _poll_timeout(self) -> int:
        # Leases granted in publish() do not wake this thread (that would cost
        # a syscall and a thread switch per frame): it looks at least four
        # times per lease timeout instead, so a lease is revoked at most a
        # quarter of that late. Leases last *at least* lease_timeout.
        wake = time.monotonic() + self.lease_timeout / 4
        for deadline in (self._control.next_deadline(), self._leases.next_deadline()):
            if deadline is not None:
                wake = min(wake, deadline)
        return max(0, int((wake - time.monotonic()) * 1000) + 1)

    def _hello(self, token: bytes) -> tuple[bytes, list[int]]:
        """HELLO for a new peer, and the fds that go with it."""
        hello = protocol.HELLO.encode(
            protocol.VERSION, self._session, self.format.to_wire(), self._pool.table.to_wire(),
            self._dir.endpoint, token, int(self.lease_timeout * 1000))
        return hello, [*self._pool.fds, self._status.fd]

    def _on_attach(self, poller: select.poll, a: Attach) -> None:
        if a.role == "status":
            send_quietly(a.conn, protocol.STATUS.encode(self._report()))
            a.conn.close()
            return
        problem = self._admission_problem(a.role, a.policy, a.max_held, a.depth, a.channel)
        if problem:
            self._control.refuse(a.conn, *problem)
            return
        sub = Subscriber(self._next_id, a.token, a.name or f"pid{a.peer.pid}", a.peer, a.policy,
                         a.max_held, max(a.depth, a.max_held), a.conn, a.channel,
                         connected=a.channel == SOCKET)
        self._next_id += 1
        try:
            a.conn.send(protocol.ACCEPT.encode())
        except OSError:
            a.conn.close()
            return
        self._leases.add_holder(sub.id)
        self._subs[sub.token] = sub
        self._conns[a.conn.fileno()] = sub
        poller.register(a.conn, POLL_IN)
        log.info("consumer %r attached (pid %d, uid %d, %s, holds up to %d)",
                 sub.name, sub.peer.pid, sub.peer.uid, a.policy, sub.quota)

    def _admission_problem(self, role: str, policy: str, max_held: int, depth: int,
                           channel: str) -> tuple[str, str] | None:
        if role != "consumer":
            return "protocol", f"unknown role {role!r}"
        if channel not in CHANNELS:
            return "protocol", f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})"
        if policy not in POLICIES:
            return "protocol", f"unknown policy {policy!r} (known: {', '.join(POLICIES)})"
        if max_held < 1:
            return "protocol", "max_held must be at least 1"
        quota = max_held if policy == LATEST else max(depth, max_held)
        promised = sum(s.quota for s in self._subs.values())
        available = len(self._pool) - self._reserve
        if promised + quota > available:
            return "buffers", (
                f"not enough buffers: {available - promised} of {available} left for leases, "
                f"this consumer asks for {quota}; lower max_held/depth or start the producer "
                f"with more buffers (--buffers)")
        return None

    def _on_control(self, poller: select.poll, sub: Subscriber, mask: int) -> None:
        # After ATTACH a consumer says nothing on the control socket unless it
        # chose it as its bus channel; its EOF (whatever killed it) is how we
        # learn it is gone.
        try:
            data = sub.conn.recv(protocol.MAX_CONTROL_MESSAGE) if mask & POLL_IN else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and sub.channel == SOCKET:
            self._on_bus_message(sub, data)
        elif data:
            self._counters["errors"] += 1
            self._drop(poller, sub, "sent data on the control socket after ATTACH",
                       bye="protocol error: nothing may be sent after ATTACH")
        else:
            self._drop(poller, sub, "disconnected")

    def _drop(self, poller: select.poll, sub: Subscriber, why: str, bye: str | None = None) -> None:
        if bye is not None:
            send_quietly(sub.conn, protocol.BYE.encode(bye))
        poller.unregister(sub.conn)
        del self._conns[sub.conn.fileno()]
        sub.conn.close()
        del self._subs[sub.token]
        reclaimed = self._leases.remove_holder(sub.id)
        self._counters["reclaimed"] += len(reclaimed)
        log.info("consumer %r (pid %d) %s; reclaimed %d leases",
                 sub.name, sub.peer.pid, why, len(reclaimed))

    def _drain_bus(self) -> None:
        router = self._router
        while router.getsockopt(_EVENTS) & _POLLIN:
            try:
                parts = router.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 2:
                self._counters["errors"] += 1
                continue
            sub = self._subs.get(parts[0])
            if sub is None or sub.channel != ZMQ:
                # A consumer that has gone, a forged routing id, or one whose
                # channel is its control socket: nothing it says here counts.
                self._counters["unknown_peer"] += 1
                continue
            sub.connected = True
            self._on_bus_message(sub, parts[1])

    def _on_bus_message(self, sub: Subscriber, payload: bytes) -> None:
        """A CREDIT or RELEASE from `sub`, from either channel, checked first."""
        try:
            kind, values = protocol.decode(payload, protocol.BUS, protocol.MAX_ZMQ_MESSAGE)
            if kind is protocol.CREDIT:
                self._on_credit(sub, values[0])
            elif kind is protocol.RELEASE:
                self._on_release(sub, values[0])
                if values[1]:
                    self._on_credit(sub, values[1])
            else:
                raise ProtocolError(f"{kind.name} is not a consumer's message")
        except ProtocolError as exc:
            self._violation(sub, str(exc))

    def _on_credit(self, sub: Subscriber, count: int) -> None:
        if sub.policy != LATEST:
            return  # queue consumers need no credit; CREDIT 0 says "connected"
        held = self._leases.held(sub.id)
        sub.credit = min(sub.credit + count, sub.max_held - held)
        newest = self._newest
        if sub.credit > 0 and newest is not None and self._frames[newest][0] > sub.last_seq:
            self._deliver(sub, newest)

    def _on_release(self, sub: Subscriber, seqs: list[int]) -> None:
        for seq in seqs:
            outcome = self._leases.release(sub.id, seq)
            if outcome is Release.LATE:
                sub.late_releases += 1
            elif outcome is Release.UNKNOWN:
                self._violation(sub, f"released frame {seq}, which it does not hold")

    def _violation(self, sub: Subscriber, what: str) -> None:
        sub.errors += 1
        self._counters["errors"] += 1
        self._rate_log.warning(sub.name, "consumer %r: %s", sub.name, what)
        if sub.errors == _MAX_ERRORS:
            # Closing our end makes the I/O thread see it like any departure.
            send_quietly(sub.conn, protocol.BYE.encode(f"too many protocol errors: {what}"))
            sub.conn.shutdown(socket.SHUT_RDWR)

    def _expire(self, poller: select.poll) -> None:
        now = time.monotonic()
        self._control.expire(poller, now)
        revoked = self._leases.revoke_expired(now)
        if revoked:
            by_id = {sub.id: sub for sub in self._subs.values()}
            for lease in revoked:
                self._counters["revoked"] += 1
                by_id[lease.holder].revoked += 1

    def _hang_up_all(self, poller: select.poll) -> None:
        for sub in list(self._subs.values()):
            self._drop(poller, sub, "detached at shutdown", bye=self._bye_reason)

    def _report(self) -> dict[str, object]:
        now = time.monotonic()
        uptime = max(now - self._started, 1e-9)
        return {
            "socket": self.path, "pid": os.getpid(), "session": self._session,
            "format": self.format.to_wire(), "buffers": len(self._pool),
            "free": self._leases.free_count(), "leased": self._leases.leased_count(),
            "uptime_s": uptime, "fps": self._counters["published"] / uptime,
            "lease_timeout": self.lease_timeout, "max_consumers": self._control.max_consumers,
            **self._counters, "refused": self._control.refused,
            "errors": self._counters["errors"] + self._control.errors,
            "consumers": [s.report(self._leases.held(s.id), now) for s in self._subs.values()],
        }


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
