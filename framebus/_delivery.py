"""The producer's hot path: FRAMEs out to each consumer's channel, acks in.

`Delivery` is what `publish()` and `acquire()` call, under the producer's
lock, from the thread that publishes: it sends a FRAME to the consumers that
get it (over the consumer's control socket, or through its uid's bus relay),
and applies the CREDITs, RELEASEs and REPORTs waiting on the relay links and
socket-channel connections. The server thread calls it too, when it is the
one awake. Nothing here blocks; work per call is bounded.
"""

from __future__ import annotations

import socket
from typing import Callable

from . import _protocol as protocol
from ._bus import Bus, Subscriber
from ._protocol import SOCKET, ZMQ
from ._ratelimit import RateLimitedLog
from ._relays import RelayPool
from .errors import ProtocolError

_LINK_MESSAGES = 16  # per relay per pump; each carries up to 32 KiB of acks
_SOCKET_MESSAGES = 64  # per socket-channel consumer per pump


class Delivery:
    """Frames out, acks in, for one producer.

    Args:
        sockets: each consumer's control connection, by subscriber id (the
            server's own dict: it adds and removes them).
        notify: wakes the server thread (a departure or a dead relay seen here).
        lease_timeout: seconds a lease lasts at least; the producer may change it.
    """

    def __init__(self, bus: Bus, relays: RelayPool, sockets: dict[int, socket.socket],
                 rate_log: RateLimitedLog, notify: Callable[[], None],
                 lease_timeout: float) -> None:
        self._bus = bus
        self._relays = relays
        self._sockets = sockets
        self._rate_log = rate_log
        self._notify = notify
        self.lease_timeout = lease_timeout

    def send_frame(self, subs: list[Subscriber], payload: bytes) -> list[Subscriber]:
        """Send a FRAME to each of `subs`; returns those it went to."""
        sent: list[Subscriber] = []
        by_uid: dict[int, list[Subscriber]] = {}
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
                by_uid.setdefault(sub.peer.uid, []).append(sub)
        for uid, group in by_uid.items():
            relay = self._relays.get(uid)
            reached = relay.send([s.token for s in group], payload) if relay is not None else 0
            sent += group[:reached]
            if reached < len(group):
                self._rate_log.warning(f"relay{uid}", "bus relay for uid %d is not keeping up",
                                       uid)
        return sent

    def pump(self, now: float) -> bool:
        """Apply every ack waiting (a bounded batch); True if a buffer was freed."""
        freed = False
        bus = self._bus
        for relay in self._relays.values():
            if not relay.alive:
                continue
            for token, payload, problem in relay.receive(_LINK_MESSAGES):
                sub = bus.subscribers.get(token)
                if sub is None or sub.channel != ZMQ:
                    bus.counters["unknown_peer"] += 1
                elif problem:
                    bus.violation(sub, problem, now)
                    sub.cut_off = sub.cut_off or problem
                else:
                    freed |= self._on_bus_message(sub, payload, now)
            if not relay.alive:
                self._notify()  # the server thread reaps it
        for sub in list(bus.subscribers.values()):
            if sub.channel == SOCKET:
                freed |= self.read_socket_channel(sub, now)
        return freed

    def read_socket_channel(self, sub: Subscriber, now: float) -> bool:
        conn = self._sockets.get(sub.id)
        freed = False
        if conn is None:
            return False
        for _ in range(_SOCKET_MESSAGES):
            try:
                data = conn.recv(protocol.MAX_CONTROL_MESSAGE)
            except OSError:
                break  # EAGAIN, or an error the server thread sees as a departure
            if not data:
                self._notify()  # EOF: the server thread drops it
                break
            freed |= self._on_bus_message(sub, data, now)
        return freed

    def _on_bus_message(self, sub: Subscriber, payload: bytes, now: float) -> bool:
        """A CREDIT, RELEASE or REPORT from `sub`, checked first."""
        bus = self._bus
        try:
            kind, values = protocol.decode(payload, protocol.BUS, protocol.MAX_ZMQ_MESSAGE)
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
                self._bus.delivered(sub, index, now + self.lease_timeout)

    # ------------------------------------------------------ the thread
