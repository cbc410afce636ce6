"""`Producer`: what a program that makes frames uses.

`acquire()` a buffer nobody holds, fill it, `publish()` it. Behind this facade
are two rooms: the bookkeeping (`_bus.Bus`: subscribers, leases, credits,
admission) and the server loop (`_server.Server`: a thread owning the control
socket and the links to the bus relays that hold the zmq sockets). One lock
guards both; the facade takes it for a few microseconds per call.

The hot path has no hand-off to another thread: `publish()` sends the frame
and returns (the next call under the lock books it); `acquire()` drains the
consumers' releases itself before it looks for a free buffer, and sleeps on
the very sockets releases arrive on. At a steady pace the server thread leaves
those releases to it (`_acks.AckTurns`).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from typing import Iterable

from . import _protocol as protocol
from ._access import AccessPolicy
from ._board import StatusBoard
from ._bus import Bus
from ._control import ControlServer
from ._endpoint import PrivateDir
from ._ratelimit import RateLimitedLog
from ._server import Server
from .buffers import Buffer, BufferPool
from .controls import Controls
from .errors import BusClosed, Timeout
from .formats import FrameFormat
from .linux.fdpass import Credentials

log = logging.getLogger("framebus.producer")

LEASE_TIMEOUT_MAX = 86_400  # s
MAX_CONSUMERS_MAX = 4096


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
        handshake_timeout: seconds a peer has to complete its handshake.
        controls: the source's camera controls, which clients may then list
            and set through the control socket (`framebus.controls`).

    Raises `ValueError` for arguments out of range, `FramebusError` when the
    bus cannot be set up (the socket is in use, say).
    """

    def __init__(self, path: str | os.PathLike[str], fmt: FrameFormat, buffers: int = 8, *,
                 pool: BufferPool | None = None, lease_timeout: float = 1.0, reserve: int = 2,
                 live: bool = True, mode: int = 0o660, group: int | None = None,
                 allow_uids: Iterable[int] = (), allow_gids: Iterable[int] = (),
                 max_consumers: int = 64, handshake_timeout: float = 5.0,
                 controls: Controls | None = None) -> None:
        count = len(pool) if pool is not None else buffers
        if not 1 <= count <= 256:
            raise ValueError(f"buffer count {count} out of range (1..256)")
        if not 0 <= reserve < count:
            raise ValueError(f"reserve {reserve} leaves no buffer for consumers "
                             f"(it must be 0..{count - 1})")
        _check_lease_timeout(lease_timeout)
        _check_max_consumers(max_consumers)
        self.path = os.fspath(path)
        self.format = fmt
        self._lock = threading.Lock()
        self._closed = False
        self._session = secrets.randbits(63) | 1
        self._next_seq = 1
        self._started = time.monotonic()
        self._rate_log = RateLimitedLog(log)
        self._pool: BufferPool | None = None
        self._board: StatusBoard | None = None
        self._control: ControlServer | None = None
        self._dir: PrivateDir | None = None
        self._server: Server | None = None
        try:
            self._pool = pool or BufferPool.allocate(
                fmt, buffers, name=f"framebus:{os.path.basename(self.path)}")
            self._bus = Bus(len(self._pool), reserve, live=live)
            self._board = StatusBoard.create(len(self._pool), self._session)
            self._control = ControlServer(
                self.path, mode, group, AccessPolicy.default(allow_uids, allow_gids), self._hello,
                lambda: len(self._bus.subscribers), max_consumers, handshake_timeout,
                self._rate_log)
            self._dir = PrivateDir(self.path, mode, group)
            self._server = Server(self._bus, self._lock, self._control, self._dir,
                                  self._report, lease_timeout=lease_timeout, mode=mode,
                                  group=group, rate_log=self._rate_log, controls=controls,
                                  request_timeout=handshake_timeout)
            self._server.start()
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

    @property
    def lease_timeout(self) -> float:
        """Seconds a lease lasts at least (see `reconfigure`)."""
        return self._server.delivery.lease_timeout if self._server else 0.0

    def acquire(self, timeout: float | None = None) -> Buffer:
        """A buffer that no consumer holds, writable, for the next frame.

        Raises `framebus.Timeout` (a `TimeoutError`) if none is free within
        `timeout` seconds (None waits for ever), `BusClosed` after `close()`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        server, bus, board = self._server, self._bus, self._board
        new_call = True
        while True:
            with self._lock:
                self._check_open()
                assert server is not None and board is not None and self._pool is not None
                now = time.monotonic()
                server.turns.acquiring(now, new_call=new_call)
                new_call = False
                server.pump(now)
                index = bus.start_writing()
                if index is not None:
                    # The board says "being rewritten" before the caller changes
                    # a pixel, so a consumer that reads, then checks valid(), is safe.
                    board.invalidate(index)
                    return self._pool.buffers[index]
                server.turns.waiters += 1
            try:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    with self._lock:
                        leased = bus.leases.leased_count()
                    raise Timeout(f"no free buffer within {timeout} s "
                                  f"({leased} of {len(self.buffers)} leased)")
                server.acks.wait(remaining)
            finally:
                with self._lock:
                    server.turns.waiters -= 1
                    server.turns.acquiring(time.monotonic(), new_call=False)
                    if not server.closed:
                        server.acquire_done()

    def publish(self, buffer: Buffer, timestamp_ns: int | None = None,
                bytesused: int | None = None) -> int:
        """Announce the frame in `buffer` to consumers; returns its sequence number.

        `timestamp_ns` is CLOCK_MONOTONIC (default: now); `bytesused`
        defaults to the whole frame (set it for MJPG).
        """
        stamp = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
        used = self.format.sizeimage if bytesused is None else bytesused
        if not 0 < used <= self.format.sizeimage:
            raise ValueError(f"bytesused {used} out of range (1..{self.format.sizeimage})")
        with self._lock:
            board, server = self._board, self._server
            if self._closed or board is None or server is None:  # (or __init__ unfinished)
                raise BusClosed("producer is closed")
            delivery = server.delivery
            delivery.book()  # (the frame before, so this buffer's state is known)
            index = self._own(buffer)
            seq = self._next_seq
            self._next_seq = seq + 1
            board.published(index, seq)
            delivery.publish(index, seq, stamp, used)  # (booked by the next call)
        return seq

    def discard(self, buffer: Buffer) -> None:
        """Give back an acquired buffer without publishing it."""
        with self._lock:
            self._check_open()
            assert self._server is not None
            self._server.delivery.book()
            self._bus.abandon(self._own(buffer))

    def stats(self) -> dict[str, object]:
        """What `framebus status` shows: the producer's counters and every consumer."""
        with self._lock:
            return self._report()

    def reconfigure(self, *, allow_uids: Iterable[int] | None = None,
                    allow_gids: Iterable[int] | None = None, lease_timeout: float | None = None,
                    max_consumers: int | None = None) -> list[str]:
        """Change settings while serving (the daemon does this on SIGHUP).

        Consumers the new allow-list no longer admits are disconnected with a
        reason they can read; returns the names of those disconnected.
        """
        if lease_timeout is not None:
            _check_lease_timeout(lease_timeout)
        if max_consumers is not None:
            _check_max_consumers(max_consumers)
        with self._lock:
            self._check_open()
            control, server = self._control, self._server
            assert control is not None and server is not None
            if allow_uids is not None or allow_gids is not None:
                control.access = AccessPolicy.default(
                    control.access.uids if allow_uids is None else allow_uids,
                    control.access.gids if allow_gids is None else allow_gids)
            if lease_timeout is not None:
                server.delivery.lease_timeout = lease_timeout
                server.notify()  # its timers are set for the old lease timeout
            if max_consumers is not None:
                control.max_consumers = max_consumers
            evicted = [s for s in self._bus.subscribers.values()
                       if not control.access.admits(s.peer)]
            server.evict(evicted, "access revoked by the producer")
            return [s.name for s in evicted]

    def close(self, reason: str = "producer shut down") -> None:
        """Tell every consumer goodbye, stop serving and free everything.

        Safe from any state and more than once.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._server is not None:
            self._server.stop(reason)
        if self._control is not None:
            self._control.close(reason)
        if self._dir is not None:
            self._dir.close()
        if self._board is not None:
            self._board.close()
        if self._pool is not None:
            self._pool.close()

    # ------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("producer is closed")

    def _own(self, buffer: Buffer) -> int:
        index = buffer.index
        buffers = self._pool.buffers if self._pool is not None else []
        if not (0 <= index < len(buffers) and buffers[index] is buffer
                and self._bus.is_writing(index)):
            raise ValueError(f"{buffer!r} was not acquired from this producer")
        return index

    def _hello(self, token: bytes, peer: Credentials) -> tuple[bytes, list[int]]:
        """HELLO for a new peer, and the fds that go with it."""
        assert self._pool is not None and self._board is not None and self._server is not None
        hello = protocol.HELLO.encode(
            protocol.VERSION, self._session, self.format.to_wire(), self._pool.table.to_wire(),
            self._server.endpoint_for(peer.uid), token, int(self.lease_timeout * 1000))
        return hello, [*self._pool.fds, self._board.fd]

    def _report(self) -> dict[str, object]:
        assert self._control is not None and self._server is not None
        now = time.monotonic()
        uptime = max(now - self._started, 1e-9)
        self._server.delivery.book()
        if not self._server.closed:
            self._server.pump(now)  # (releases acquire() has not read yet)
        report = self._bus.report(now)
        relay = self._server.relay_counters()
        return {
            "socket": self.path, "pid": os.getpid(), "session": self._session,
            "format": self.format.to_wire(), **report,
            "uptime_s": uptime, "fps": self._bus.counters["published"] / uptime,
            "lease_timeout": self.lease_timeout, "max_consumers": self._control.max_consumers,
            "refused": self._control.refused,
            "errors": self._bus.counters["errors"] + self._control.errors,
            "unknown_peer": self._bus.counters["unknown_peer"] + relay.get("unknown_peer", 0),
            "relays": len(self._server.relays), "relay": relay,
        }


def _check_lease_timeout(value: float) -> None:
    if not 0 < value <= LEASE_TIMEOUT_MAX:  # NaN fails this too
        raise ValueError(f"lease_timeout must be more than 0 and at most {LEASE_TIMEOUT_MAX} s, "
                         f"not {value}")


def _check_max_consumers(value: int) -> None:
    if not 1 <= value <= MAX_CONSUMERS_MAX:
        raise ValueError(f"max_consumers must be 1..{MAX_CONSUMERS_MAX}, not {value}")
