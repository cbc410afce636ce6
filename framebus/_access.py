"""Who may attach: an allow-list of uids and gids checked against the kernel's
record of the peer (SO_PEERCRED and SO_PEERGROUPS)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterable

from .linux.fdpass import Credentials


@dataclass(frozen=True)
class AccessPolicy:
    """Admits a peer whose uid is listed, or who is a member (primary or
    supplementary) of a listed gid or of the socket's group.

    The default admits the producer's own uid and root. `socket_group` is the
    group given to the control socket (``--group G``) when its mode lets the
    group connect (``--mode 660``): its members are admitted as the file mode
    says they are.
    """

    uids: frozenset[int]
    gids: frozenset[int] = frozenset()
    socket_group: int | None = None

    @classmethod
    def default(cls, uids: Iterable[int] = (), gids: Iterable[int] = ()) -> AccessPolicy:
        """The producer's own uid and root, plus `uids` and `gids`."""
        return cls(frozenset({os.getuid(), 0, *uids}), frozenset(gids))

    def with_socket_group(self, group: int | None, mode: int) -> AccessPolicy:
        """This policy, admitting members of `group` too if `mode` lets the
        socket's group connect (group write permission)."""
        return dataclasses.replace(
            self, socket_group=group if group is not None and mode & 0o020 else None)

    def admits(self, peer: Credentials) -> bool:
        """Whether `peer` may attach. Its `groups` must have been read
        (``peer_credentials(sock, groups=True)``) for supplementary membership
        to count."""
        if peer.uid in self.uids:
            return True
        member_of = {peer.gid, *peer.groups}
        return bool(member_of & self.gids) or self.socket_group in member_of

    def refusal(self, peer: Credentials) -> str:
        """Why `peer` is refused, naming what would admit it."""
        groups = f"{sorted({peer.gid, *peer.groups})}"
        allowed = sorted(self.gids | ({self.socket_group} if self.socket_group is not None
                                      else set()))
        return (f"uid {peer.uid} (groups {groups}) may not attach "
                f"(allowed uids {sorted(self.uids)}, gids {allowed})")
