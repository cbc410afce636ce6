"""The producer's hot path: FRAMEs out to each consumer's channel, acks in.

`Delivery` is what `publish()` and `acquire()` call, under the producer's
lock, from the thread that publishes: it sends a FRAME to the consumers that
get it (over the consumer's control socket, or through its uid's bus relay),
and applies the CREDITs, RELEASEs and REPORTs waiting on the relay links and
socket-channel connections. The server thread calls it too, when it is the
one awake. Nothing here blocks; work per call is bounded.

Where acks arrive is an epoll set (`_acks.AckSources`): a pump asks it which
sources are ready and reads only those, and `acquire()` sleeps on it, so
neither costs a system call per consumer.
"""

from __future__ import annotations

import socket
import time
from typing import Callable

from . import _protocol as protocol
from ._acks import AckSources
from ._bus import Bus, Subscriber
from ._protocol import SOCKET, ZMQ
from ._ratelimit import RateLimitedLog
from ._relays import RelayLink, RelayPool
from .errors import ProtocolError

_SOCKET_MESSAGES = 64  # per socket-channel consumer when the server thread reads
_PUMP_ROUNDS = 16  # messages per source per pump, at most


class Delivery:
    """Frames out, acks in, for one producer.

    Args:
        sockets: each consumer's control connection, by subscriber id (the
            server's own dict: it adds and removes them).
        acks: where acks arrive (the server adds and removes sources).
        notify: wakes the server thread (a departure or a dead relay seen here).
        lease_timeout: seconds a lease lasts at least; the producer may change it.
    """

    def __init__(self, bus: Bus, relays: RelayPool, sockets: dict[int, socket.socket],
                 acks: AckSources, rate_log: RateLimitedLog, notify: Callable[[], None],
                 booked: Callable[[], None], lease_timeout: float) -> None:
        self._bus = bus
        self._relays = relays
        self._sockets = sockets
        self._acks = acks
        self._rate_log = rate_log
        self._notify = notify
        self._booked = booked
        self.lease_timeout = lease_timeout
        self.hung_up: list[Subscriber] = []  # socket-channel consumers whose EOF was read
        self._unbooked: tuple[int, int, int, int, list[Subscriber]] | None = None

    def publish(self, index: int, seq: int, timestamp_ns: int, bytesused: int) -> None:
        """Send the frame in buffer `index` to the consumers that get it now.

        When every consumer got it, its booking (the frame, the leases)
        waits for `book()`: whatever the publishing thread does after the
        send delays the consumer it woke when the kernel runs that consumer
        on the same core, and the next call under the lock books it before
        anything reads an ack or asks the bus. The caller has booked the
        frame before (`book()`), to check the buffer it publishes.
        """
        assert self._unbooked is None, "publish() before the last frame was booked"
        recipients = self._bus.recipients()
        sent = self.send_frame(recipients, protocol.encode_frame(
            seq, index, timestamp_ns, bytesused)) if recipients else []
        self._unbooked = (index, seq, timestamp_ns, bytesused, sent)
        if len(sent) != len(self._bus.subscribers):
            self.book()  # someone missed it: the server thread may have to watch for them

    def book(self) -> None:
        """Book the frame `publish()` sent last, if not yet: before any ack
        is read (a release never overtakes its grant) and before the bus
        state is asked anything."""
        unbooked = self._unbooked
        if unbooked is None:
            return
        self._unbooked = None
        index, seq, stamp, used, sent = unbooked
        bus = self._bus
        bus.published(index, seq, stamp, used)
        if sent:
            bus.delivered(sent, index, time.monotonic() + self.lease_timeout)
        self._booked()

    def send_frame(self, subs: list[Subscriber], payload: bytes) -> list[Subscriber]:
        """Send a FRAME to each of `subs`; returns those it went to."""
        sent: list[Subscriber] = []
        by_uid: dict[int, list[Subscriber]] | None = None
        for sub in subs:
            if sub.channel == SOCKET:
                try:
                    self._sockets[sub.id].send(payload)  # non-blocking: full = not reading
                except OSError as exc:
                    self._rate_log.warning(sub.name, "cannot send to %s: %s", sub.name,
                                           exc.strerror)
                    continue
                sent.append(sub)
            else:
                if by_uid is None:
                    by_uid = {}
                by_uid.setdefault(sub.peer.uid, []).append(sub)
        if by_uid is None:
            return sent
        for uid, group in by_uid.items():
            relay = self._relays.get(uid)
            reached = relay.send([s.token for s in group], payload) if relay is not None else 0
            sent += group[:reached]
            if reached < len(group):
                self._rate_log.warning(f"relay{uid}", "bus relay for uid %d is not keeping up",
                                       uid)
        return sent

    def pump(self, now: float) -> bool:
        """Apply the acks waiting (a bounded batch); True if a buffer was freed.

        Each round reads one message from each source the epoll set says
        has one, until it says none has: flat out there is one message per
        consumer per frame, and one epoll_wait for all sources is cheaper
        than reading each on to its EAGAIN.
        """
        self.book()
        acks = self._acks
        freed = False
        for _ in range(_PUMP_ROUNDS):
            ready = acks.ready()
            if not ready:
                if acks.backlog:  # nothing left over: all acquire()'s again
                    acks.backlog.clear()
                    self._booked()
                break
            for source in ready:
                if isinstance(source, RelayLink):
                    freed |= self.read_relay(source, now)
                else:
                    freed |= self._read_socket(source, now, 1)
        else:
            # Still sending after a full batch: the server thread reads these
            # as fast as they come, so a flood is counted at its own rate,
            # not at the pace of acquire() (and is cut off like any other).
            acks.add_backlog(ready)
            self._booked()
        return freed

    def read_relay(self, relay: RelayLink, now: float) -> bool:
        """Apply the acks of one message from `relay` (up to 256)."""
        self.book()
        bus = self._bus
        freed = False
        for token, payload, problem in relay.receive(1):  # one link message: <= 256 acks
            sub = bus.subscribers.get(token)
            if sub is None or sub.channel != ZMQ:
                bus.counters["unknown_peer"] += 1
            elif problem:
                bus.violation(sub, problem, now)
                sub.cut_off = sub.cut_off or problem
            else:
                freed |= self._on_bus_message(sub, payload, now)
        if not relay.alive:
            self._acks.discard(relay.fileno())  # at EOF it would be ready for ever
            self._notify()  # the server thread reaps it
        return freed

    def read_socket_channel(self, sub: Subscriber, now: float,
                            limit: int = _SOCKET_MESSAGES) -> bool:
        """Apply what `sub` sent on its control socket (channel "socket"),
        up to `limit` messages."""
        self.book()
        return self._read_socket(sub, now, limit)

    def _read_socket(self, sub: Subscriber, now: float, limit: int) -> bool:
        """`read_socket_channel` once the last frame is booked (a pump's)."""
        conn = self._sockets.get(sub.id)
        freed = False
        if conn is None:
            return False
        for _ in range(limit):
            try:
                data = conn.recv(protocol.MAX_CONTROL_MESSAGE)
            except OSError:
                break  # EAGAIN, or an error the server thread sees as a departure
            if not data:
                self._acks.discard(conn.fileno())  # at EOF it would be ready for ever
                self.hung_up.append(sub)
                self._notify()  # the server thread drops it
                break
            freed |= self._on_bus_message(sub, data, now)
        return freed

    def _on_bus_message(self, sub: Subscriber, payload: bytes, now: float) -> bool:
        """A CREDIT, RELEASE or REPORT from `sub`, checked first."""
        bus = self._bus
        release = protocol.decode_release(payload)
        if release is not None:  # the messages of every frame: no generic decode
            seq, credit, received = release
            freed = bus.on_release(sub, (seq,), now, received)
            if credit:
                self._credit(sub, credit, now)
            return freed
        if payload == protocol.CREDIT_ONE:
            self._credit(sub, 1, now)
            return False
        try:
            kind, values = protocol.decode_bus(payload)
        except ProtocolError as exc:
            bus.violation(sub, str(exc), now)
            return False
        freed = False
        if kind is protocol.RELEASE:
            freed = bus.on_release(sub, values[0], now, values[2])
            if values[1]:
                self._credit(sub, values[1], now)
        elif kind is protocol.CREDIT:
            self._credit(sub, values[0], now)
        elif kind is protocol.REPORT:
            bus.on_report(sub, values[0], now)
        else:
            bus.violation(sub, f"{kind.name} is not a consumer's message", now)
        return freed

    def _credit(self, sub: Subscriber, count: int, now: float) -> None:
        index = self._bus.on_credit(sub, count, now)
        info = None if index is None else self._bus.frames[index]
        if index is not None and info is not None:
            payload = protocol.encode_frame(info.seq, index, info.timestamp_ns, info.bytesused)
            if self.send_frame([sub], payload):
                self._bus.delivered([sub], index, now + self.lease_timeout)
