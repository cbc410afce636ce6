"""The producer's bookkeeping: who is attached, what they may have, who gets each frame.

`Bus` is pure state, like the lease table under it: no sockets, no threads and
no clock (every time is passed in), so each rule is a unit test. The producer's
facade and its server loop ask it three kinds of question, always under the
producer's lock:

- a new frame: which subscribers get it now (`recipients`), then `published`
  and `delivered` record what was actually sent;
- a consumer's message: `on_release`, `on_credit` (which may name a frame to
  send at once), each counting messages that did no useful work;
- admission and departure: `admit` (quotas, per uid too) and `remove`.

It is the one owner of "which frame is in each buffer" (`frames`) and of
"which is newest".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ._leases import LeaseTable, Release
from ._protocol import CHANNELS, LATEST, POLICIES, QUEUE, ZMQ
from .linux.fdpass import Credentials

#: messages that change nothing (repeated credits, releases of frames not
#: held, anything refused) a consumer may send per `FLOOD_WINDOW` seconds
#: before it is cut off as a flooder.
USELESS_LIMIT = 2000
FLOOD_WINDOW = 1.0


@dataclass(eq=False)
class Subscriber:
    """One consumer, from ATTACH until it is gone.

    `token` is its zmq routing id: the only identity acks are accepted from.
    """

    id: int
    token: bytes
    name: str
    peer: Credentials
    policy: str
    max_held: int
    depth: int
    channel: str = ZMQ  # where its FRAME, CREDIT and RELEASE messages travel
    connected: bool = False  # its bus channel is up (zmq: it has spoken)
    credit: int = 0  # frames asked for and not yet sent (policy latest)
    last_seq: int = 0
    received: int = 0  # the newest frame it says it has taken in
    delivered: int = 0
    dropped: int = 0
    revoked: int = 0
    late_releases: int = 0
    errors: int = 0
    useless: int = 0  # in the current flood window
    window_start: float = 0.0
    cut_off: str = ""  # why it must go, once it has to
    figures: dict[str, object] = field(default_factory=dict)
    attached_at: float = 0.0
    #: the most frames this consumer may hold leases on at once (read per frame)
    quota: int = field(init=False)

    def __post_init__(self) -> None:
        self.quota = self.max_held if self.policy == LATEST else self.depth

    def report(self, leased: list[int], now: float) -> dict[str, object]:
        """Its figures; `leased` are the seqs it has leases on. A `latest`
        consumer was sent only what it asked for: it holds them all. A `queue`
        consumer holds those it has said it took in; the rest are queued."""
        age = max(now - self.attached_at, 1e-9)
        held = len(leased) if self.policy == LATEST else \
            sum(1 for seq in leased if seq <= self.received)
        return {"id": self.id, "name": self.name, "pid": self.peer.pid, "uid": self.peer.uid,
                "policy": self.policy, "channel": self.channel, "max_held": self.max_held,
                "depth": self.depth, "held": held, "queued": len(leased) - held,
                "delivered": self.delivered,
                "dropped": self.dropped, "revoked": self.revoked,
                "late_releases": self.late_releases, "errors": self.errors,
                "fps": self.delivered / age, "attached_s": age, "figures": self.figures}


class Admission(Exception):
    """A consumer the bus cannot take: `code` (REFUSE's code) and the reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class FrameInfo:
    """What was announced for the frame a buffer holds."""

    seq: int
    timestamp_ns: int
    bytesused: int


class Bus:
    """The state of one producer's bus over `count` buffers.

    Args:
        reserve: buffers never promised to consumers' quotas.
        live: a live source drops frames for a full `queue` consumer; one that
            is not live waits for it (`start_writing` returns None).
        uid_share: the fraction of the consumers' buffers that one uid's
            consumers may reserve, so that one user cannot lock out others.
    """

    def __init__(self, count: int, reserve: int, *, live: bool = True,
                 uid_share: float = 0.75) -> None:
        if not 0 <= reserve < count:
            raise ValueError(f"reserve {reserve} leaves no buffer for consumers")
        self.leases = LeaseTable(count)
        self.reserve = reserve
        self.live = live
        self.uid_share = uid_share
        self.frames: list[FrameInfo | None] = [None] * count
        self.newest: int | None = None  # the buffer holding the newest published frame
        self.newest_seq = 0  # and its seq (kept when that buffer is rewritten)
        self.subscribers: dict[bytes, Subscriber] = {}  # by token
        self.counters = {"published": 0, "reclaimed": 0, "revoked": 0, "unknown_peer": 0,
                         "errors": 0, "cut_off": 0}
        self._next_id = 1

    # ------------------------------------------------------------ admission
    def admit(self, token: bytes, name: str, peer: Credentials, policy: str, max_held: int,
              depth: int, channel: str, now: float) -> Subscriber:
        """A new subscriber, or `Admission` saying why not."""
        if channel not in CHANNELS:
            raise Admission("protocol", f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
        if policy not in POLICIES:
            raise Admission("protocol", f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
        if max_held < 1:
            raise Admission("protocol", "max_held must be at least 1")
        quota = max_held if policy == LATEST else max(depth, max_held)
        available = self.leases.count - self.reserve
        promised = sum(s.quota for s in self.subscribers.values())
        if promised + quota > available:
            raise Admission("buffers", (
                f"not enough buffers: {available - promised} of {available} left for leases, "
                f"this consumer asks for {quota}; lower max_held/depth or start the producer "
                f"with more buffers (--buffers)"))
        mine = sum(s.quota for s in self.subscribers.values() if s.peer.uid == peer.uid)
        share = max(1, int(available * self.uid_share))
        others = {s.peer.uid for s in self.subscribers.values()} - {peer.uid}
        if mine + quota > share and (others or mine + quota > available):
            raise Admission("buffers", (
                f"uid {peer.uid} already reserves {mine} of the {available} buffers for leases "
                f"and may reserve at most {share} while other users are attached"))
        sub = Subscriber(self._next_id, token, name, peer, policy, max_held,
                         max(depth, max_held), channel, attached_at=now, window_start=now)
        self._next_id += 1
        self.leases.add_holder(sub.id)
        self.subscribers[token] = sub
        return sub

    def remove(self, sub: Subscriber) -> int:
        """Forget `sub`, ending its leases; returns how many were reclaimed."""
        if self.subscribers.pop(sub.token, None) is None:
            return 0
        reclaimed = len(self.leases.remove_holder(sub.id))
        self.counters["reclaimed"] += reclaimed
        return reclaimed

    # ------------------------------------------------------ producer's side
    def start_writing(self) -> int | None:
        """A buffer to write the next frame into, or None (all leased, or a
        source that is not live waiting for a full queue consumer)."""
        if not self.live:
            leases = self.leases.by_holder
            for s in self.subscribers.values():
                if s.policy == QUEUE and s.connected and len(leases[s.id]) >= s.depth:
                    return None
        index = self.leases.start_writing()
        if index is not None:
            self.frames[index] = None
            if index == self.newest:
                self.newest = None
        return index

    def abandon(self, index: int) -> None:
        self.leases.abandon(index)

    def is_writing(self, index: int) -> bool:
        return self.leases.writing[index]

    def recipients(self) -> list[Subscriber]:
        """The subscribers a frame published now goes to."""
        leases = self.leases.by_holder
        recipients = []  # (a loop, not a comprehension: one call less, per frame)
        for s in self.subscribers.values():
            if s.connected and len(leases[s.id]) < s.quota and (s.policy == QUEUE or s.credit > 0):
                recipients.append(s)
        return recipients

    def published(self, index: int, seq: int, timestamp_ns: int, bytesused: int) -> None:
        self.leases.published(index, seq)
        self.frames[index] = FrameInfo(seq, timestamp_ns, bytesused)
        self.newest = index
        self.newest_seq = seq
        self.counters["published"] += 1

    def delivered(self, subs: list[Subscriber], index: int, deadline: float) -> None:
        """Record that the frame in `index` was sent to each of `subs`: a
        lease each until `deadline`."""
        seq = self.leases.grant_each([s.id for s in subs], index, deadline)
        for sub in subs:
            last = sub.last_seq
            if last and seq > last + 1:
                sub.dropped += seq - last - 1
            sub.last_seq = seq
            sub.delivered += 1
            if sub.policy == LATEST:
                sub.credit -= 1

    # ------------------------------------------------------ consumers' side
    def on_credit(self, sub: Subscriber, count: int, now: float) -> int | None:
        """`sub` asks for `count` more frames; returns a buffer whose frame
        should be sent to it at once (the newest, if it has not seen it)."""
        sub.connected = True
        if sub.policy != LATEST:
            if count:  # queue consumers need no credit; CREDIT 0 says "connected"
                self._useless(sub, now)
            return None
        room = sub.max_held - self.leases.held(sub.id)
        credit = min(sub.credit + count, room)
        if credit <= sub.credit and count:
            self._useless(sub, now)
        sub.credit = max(credit, 0)
        newest = self.newest
        if sub.credit > 0 and newest is not None:
            info = self.frames[newest]
            if info is not None and info.seq > sub.last_seq:
                return newest
        return None

    def on_release(self, sub: Subscriber, seqs: Iterable[int], now: float,
                   received: int = 0) -> bool:
        """`sub` releases these frames (and has taken in every frame up to
        `received`); True if a buffer became free."""
        sub.connected = True
        sub.received = max(sub.received, min(received, sub.last_seq))
        freed = False
        for seq in seqs:
            outcome = self.leases.release(sub.id, seq)
            if outcome is Release.RELEASED:
                freed = True
            elif outcome is Release.LATE:
                sub.late_releases += 1
            else:
                self.violation(sub, f"released frame {seq}, which it does not hold", now)
        return freed

    def on_report(self, sub: Subscriber, figures: dict[str, object], now: float) -> None:
        """`sub`'s own figures (a bridge's link, say), shown by status."""
        if len(figures) > 32 or not all(
                isinstance(k, str) and len(k) <= 32 and isinstance(v, (int, float, str))
                and (not isinstance(v, str) or len(v) <= 64) for k, v in figures.items()):
            self.violation(sub, "REPORT must map at most 32 short names to numbers or short text",
                           now)
            return
        sub.figures = figures

    def violation(self, sub: Subscriber, what: str, now: float) -> None:
        """`sub` broke the protocol; too many of those and it is cut off."""
        sub.errors += 1
        self.counters["errors"] += 1
        self._useless(sub, now)
        if sub.errors >= 100 and not sub.cut_off:
            sub.cut_off = f"too many protocol errors: {what}"

    def _useless(self, sub: Subscriber, now: float) -> None:
        if now - sub.window_start >= FLOOD_WINDOW:
            sub.window_start, sub.useless = now, 0
        sub.useless += 1
        if sub.useless > USELESS_LIMIT and not sub.cut_off:
            sub.cut_off = (f"flooding: more than {USELESS_LIMIT} messages that did nothing "
                           f"within {FLOOD_WINDOW:g} s")

    def to_cut(self) -> list[Subscriber]:
        """Subscribers that must be disconnected (flooders, protocol breakers)."""
        return [s for s in self.subscribers.values() if s.cut_off]

    # ---------------------------------------------------------------- time
    def revoke_expired(self, now: float) -> int:
        """Revoke every lease past its deadline; returns how many."""
        revoked = self.leases.revoke_expired(now)
        if revoked:
            by_id = {s.id: s for s in self.subscribers.values()}
            for lease in revoked:
                self.counters["revoked"] += 1
                holder = by_id.get(lease.holder)
                if holder is not None:
                    holder.revoked += 1
        return len(revoked)

    def next_deadline(self) -> float | None:
        return self.leases.next_deadline()

    # -------------------------------------------------------------- report
    def report(self, now: float) -> dict[str, object]:
        """Counters and every subscriber, for `framebus status`."""
        return {"buffers": self.leases.count, "free": self.leases.free_count(),
                "leased": self.leases.leased_count(), **self.counters,
                "consumers": [s.report(self.leases.seqs_held(s.id), now)
                              for s in self.subscribers.values()]}
