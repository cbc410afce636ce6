"""Who may attach: an allow-list of uids and gids checked against SO_PEERCRED."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from .linux.fdpass import Credentials


@dataclass(frozen=True)
class AccessPolicy:
    """Admits a peer whose uid or primary gid is listed.

    The default admits the producer's own uid and root. Only the peer's primary
    gid is known from SO_PEERCRED; supplementary groups are not consulted.
    """

    uids: frozenset[int]
    gids: frozenset[int] = frozenset()

    @classmethod
    def default(cls, uids: Iterable[int] = (), gids: Iterable[int] = ()) -> AccessPolicy:
        return cls(frozenset({os.getuid(), 0, *uids}), frozenset(gids))

    def admits(self, peer: Credentials) -> bool:
        return peer.uid in self.uids or peer.gid in self.gids

    def refusal(self, peer: Credentials) -> str:
        return (f"uid {peer.uid} / gid {peer.gid} may not attach "
                f"(allowed uids {sorted(self.uids)}, gids {sorted(self.gids)})")
