"""The producer's record of one attached consumer: its terms and its counters."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from ._protocol import LATEST, QUEUE, ZMQ
from .linux.fdpass import Credentials



@dataclass(eq=False)
class Subscriber:
    """One consumer, from ATTACH until its control connection closes.

    `token` is its zmq routing id: the only identity the bus accepts acks from.
    """

    id: int
    token: bytes
    name: str
    peer: Credentials
    policy: str
    max_held: int
    depth: int
    conn: socket.socket
    channel: str = ZMQ  # where its FRAME, CREDIT and RELEASE messages travel
    connected: bool = False  # its bus channel is up (zmq: its DEALER has spoken)
    credit: int = 0  # frames asked for and not yet sent (policy latest)
    last_seq: int = 0
    delivered: int = 0
    dropped: int = 0
    revoked: int = 0
    late_releases: int = 0
    errors: int = 0
    attached_at: float = field(default_factory=time.monotonic)

    @property
    def quota(self) -> int:
        """The most frames this consumer may hold leases on at once."""
        return self.max_held if self.policy == LATEST else self.depth

    def wants_frame(self, held: int) -> bool:
        """Whether a newly published frame should go to this consumer now."""
        if not self.connected or held >= self.quota:
            return False
        return self.policy == QUEUE or self.credit > 0

    def delivered_frame(self, seq: int) -> None:
        if self.last_seq:
            self.dropped += max(0, seq - self.last_seq - 1)
        self.last_seq = seq
        self.delivered += 1
        if self.policy == LATEST:
            self.credit -= 1

    def report(self, held: int, now: float) -> dict[str, object]:
        age = max(now - self.attached_at, 1e-9)
        return {"id": self.id, "name": self.name, "pid": self.peer.pid, "uid": self.peer.uid,
                "policy": self.policy, "channel": self.channel, "max_held": self.max_held, "depth": self.depth,
                "held": held, "delivered": self.delivered, "dropped": self.dropped,
                "revoked": self.revoked, "late_releases": self.late_releases,
                "errors": self.errors, "fps": self.delivered / age, "attached_s": age}
