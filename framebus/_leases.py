"""The lease table: which consumer holds which frame, and which buffers are free.

Pure bookkeeping, no I/O and no clock of its own, so every rule is a unit
test: a buffer is handed out for writing only when nobody holds a lease on it
and it is not already being written; a lease ends by release, by its holder
going away, or by revocation after its deadline. A release names a sequence
number, not a buffer, so a stale release (of a frame already revoked, or from
before a restart) can never free a buffer that holds a newer frame.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import NamedTuple, Sequence


class Lease(NamedTuple):
    holder: int
    seq: int
    index: int  # type: ignore[assignment]  # shadows tuple.index(); the buffer's index reads better
    deadline: float


class Release(Enum):
    RELEASED = "released"
    LATE = "late"  # the lease was already revoked: harmless
    UNKNOWN = "unknown"  # never leased to this holder: a protocol error


_REMEMBERED_REVOCATIONS = 64


class LeaseTable:
    """Leases on `count` buffers."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seqs = [0] * count  # the frame each buffer holds; 0 = none
        self.holders = [0] * count  # how many leases each buffer has
        self.writing = [False] * count
        #: holder -> seq -> lease (read-only outside: the bus counts a
        #: holder's leases per frame without a call)
        self.by_holder: dict[int, dict[int, Lease]] = {}
        self._revoked: dict[int, deque[int]] = {}  # holder -> recently revoked seqs

    # Holders.
    def add_holder(self, holder: int) -> None:
        self.by_holder[holder] = {}
        self._revoked[holder] = deque(maxlen=_REMEMBERED_REVOCATIONS)

    def remove_holder(self, holder: int) -> list[Lease]:
        """Forget `holder`, ending all its leases; returns them."""
        leases = list(self.by_holder.pop(holder, {}).values())
        self._revoked.pop(holder, None)
        for lease in leases:
            self.holders[lease.index] -= 1
        return leases

    def held(self, holder: int) -> int:
        return len(self.by_holder[holder])

    def seqs_held(self, holder: int) -> list[int]:
        """The frames `holder` has leases on."""
        return list(self.by_holder[holder])

    # The producer's side.
    def start_writing(self) -> int | None:
        """Claim a buffer nobody holds, the one with the oldest frame; None if
        every buffer is leased or being written."""
        best = None
        for index in range(self.count):
            if self.holders[index] == 0 and not self.writing[index]:
                if best is None or self.seqs[index] < self.seqs[best]:
                    best = index
        if best is not None:
            self.writing[best] = True
            self.seqs[best] = 0
        return best

    def published(self, index: int, seq: int) -> None:
        if not self.writing[index]:
            raise ValueError(f"buffer {index} was not acquired for writing")
        self.writing[index] = False
        self.seqs[index] = seq

    def abandon(self, index: int) -> None:
        """Give back a buffer acquired for writing without publishing it."""
        if not self.writing[index]:
            raise ValueError(f"buffer {index} was not acquired for writing")
        self.writing[index] = False

    def free_count(self) -> int:
        return sum(1 for i in range(self.count) if self.holders[i] == 0 and not self.writing[i])

    def leased_count(self) -> int:
        return sum(1 for h in self.holders if h)

    # The consumers' side.
    def grant_each(self, holders: Sequence[int], index: int, deadline: float) -> int:
        """A lease for each of `holders` on the frame in `index`, until
        `deadline` (the leases of one frame sent to several consumers, in
        one call); returns the frame's seq. All or none: ValueError if one
        of them leases it already."""
        seq = self.seqs[index]
        if seq == 0 or self.writing[index]:
            raise ValueError(f"buffer {index} holds no published frame")
        by_holder, new = self.by_holder, tuple.__new__  # (a NamedTuple's own __new__ is Python)
        for granted, holder in enumerate(holders):
            leases = by_holder[holder]
            if seq in leases:
                for earlier in holders[:granted]:
                    del by_holder[earlier][seq]
                self.holders[index] -= granted
                raise ValueError(f"holder {holder} already leases frame {seq}")
            leases[seq] = new(Lease, (holder, seq, index, deadline))
            self.holders[index] += 1
        return seq

    def release(self, holder: int, seq: int) -> Release:
        lease = self.by_holder[holder].pop(seq, None)
        if lease is not None:
            self.holders[lease.index] -= 1
            return Release.RELEASED
        return Release.LATE if seq in self._revoked[holder] else Release.UNKNOWN

    def revoke_expired(self, now: float) -> list[Lease]:
        """End every lease whose deadline has passed; returns them."""
        expired = [lease for leases in self.by_holder.values()
                   for lease in leases.values() if lease.deadline <= now]
        for lease in expired:
            del self.by_holder[lease.holder][lease.seq]
            self._revoked[lease.holder].append(lease.seq)
            self.holders[lease.index] -= 1
        return expired

    def next_deadline(self) -> float | None:
        return min((lease.deadline for leases in self.by_holder.values() for lease in leases.values()),
                   default=None)
