"""The producer's end of the control socket: accepting peers and their handshakes.

`ControlServer` owns the listening socket and every connection still in its
handshake. It checks SO_PEERCRED (and SO_PEERGROUPS) and the connection limits
before sending a byte, sends HELLO with the buffer fds, and reads ATTACH,
handing the producer a checked `Attach`. What happens next (admission by
quota, the consumer's life, its departure) is the producer's business.

Admission is fair between users: a uid may have at most `pending_per_uid`
unfinished handshakes (and everyone together `max_pending`); more from that
uid are refused at once, so one user holding handshakes open cannot lock out
another. Unfinished handshakes reserve no consumer slot: `max_consumers` is
checked against attached consumers when the ATTACH arrives. The listener is
drained in bounded batches (`ACCEPT_BATCH` per wake-up), so a connection flood
cannot keep the I/O thread, and the bus lock it holds, in `accept()`.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import select
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, NamedTuple

from . import _endpoint as endpoint, _protocol as protocol
from ._access import AccessPolicy
from .errors import ProtocolError
from .linux import fdpass
from .linux.fdpass import Credentials
from ._ratelimit import RateLimitedLog

log = logging.getLogger("framebus.producer")

POLL_IN = select.POLLIN | select.POLLPRI
_FD_HEADROOM = 16  # fds kept free: each consumer costs a control fd and a zmq pipe fd
ACCEPT_BATCH = 16  # connections accepted per wake-up of the I/O thread
PENDING_PER_UID = 8  # unfinished handshakes one uid may have
MAX_PENDING = 128  # unfinished handshakes of everyone together


class Attach(NamedTuple):
    """A peer that passed the credential check and sent a well-formed ATTACH."""

    conn: socket.socket
    peer: Credentials
    token: bytes
    role: str
    name: str
    policy: str
    max_held: int
    depth: int
    channel: str


@dataclass
class _Handshake:
    conn: socket.socket
    peer: Credentials
    token: bytes
    deadline: float


class ControlServer:
    """Listens at `path` and runs handshakes up to ATTACH.

    Args:
        mode, group: the socket's file mode and group; with group write in
            `mode`, members of `group` (supplementary ones too) are admitted.
        access: who else may attach (uids, gids).
        hello: makes the HELLO payload and the fds to attach for a new token
            and peer.
        attached: how many consumers the producer serves now.
        pending_per_uid, max_pending: unfinished handshakes allowed per uid
            and in all.
    """

    def __init__(self, path: str, mode: int, group: int | None, access: AccessPolicy,
                 hello: Callable[[bytes, Credentials], tuple[bytes, list[int]]],
                 attached: Callable[[], int],
                 max_consumers: int, handshake_timeout: float, rate_log: RateLimitedLog, *,
                 pending_per_uid: int = PENDING_PER_UID, max_pending: int = MAX_PENDING) -> None:
        self.path = path
        self._mode = mode
        self._group = group
        self.access = access
        self.max_consumers = max_consumers
        self.pending_per_uid = pending_per_uid
        self.max_pending = max_pending
        self.refused = 0
        self.errors = 0
        self._hello = hello
        self._attached = attached
        self._timeout = handshake_timeout
        self._rate_log = rate_log
        self._handshakes: dict[int, _Handshake] = {}
        self._pending_by_uid: Counter[int] = Counter()
        self._listener = endpoint.listen(path, mode, group)
        self._inode = os.lstat(path).st_ino
        self._spare_fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    @property
    def access(self) -> AccessPolicy:
        """Who may attach; setting it keeps the socket group's members admitted."""
        return self._access

    @access.setter
    def access(self, policy: AccessPolicy) -> None:
        self._access = policy.with_socket_group(self._group, self._mode)

    def fileno(self) -> int:
        return self._listener.fileno()

    def pending(self, uid: int | None = None) -> int:
        """Unfinished handshakes, of `uid` or of everyone."""
        return len(self._handshakes) if uid is None else self._pending_by_uid[uid]

    def owns(self, fd: int) -> bool:
        """Whether `fd` is a connection in its handshake."""
        return fd in self._handshakes

    def next_deadline(self) -> float | None:
        return min((h.deadline for h in self._handshakes.values()), default=None)

    def accept(self, poller: select.poll) -> None:
        """Greet the peers waiting on the listener, at most `ACCEPT_BATCH`
        of them: the rest wait for the next wake-up (the listener stays
        readable), so other work runs in between."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._refuse_without_fds()
                else:
                    self._rate_log.warning("accept", "accept failed: %s", exc)
                return
            self._greet(poller, conn)

    def _refuse_without_fds(self) -> None:
        """Out of fds, the pending connection would keep the listener readable
        and the loop spinning: spend the spare fd to accept and refuse it."""
        os.close(self._spare_fd)
        try:
            conn, _ = self._listener.accept()
            self.refuse(conn, "limit", _fd_limit_reason())
        except OSError:
            pass
        finally:
            self._spare_fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    def _greet(self, poller: select.poll, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            peer = fdpass.peer_credentials(conn, groups=True)
        except OSError as exc:  # the peer is already gone
            log.debug("no credentials for a new connection: %s", exc)
            conn.close()
            return
        if not self.access.admits(peer):
            self.refuse(conn, "credentials", self.access.refusal(peer))
            return
        problem = self._limit_problem(peer.uid)
        if problem:
            self.refuse(conn, "limit", problem)
            return
        if _open_fds() + _FD_HEADROOM > _fd_limit():
            # Refuse before libzmq's I/O thread runs out of fds for the new pipe.
            self.refuse(conn, "limit", _fd_limit_reason())
            return
        token = b"F" + os.urandom(15)  # a zmq routing id may not start with 0
        hello, fds = self._hello(token, peer)
        try:
            fdpass.send_with_fds(conn, hello, fds)
        except OSError as exc:
            log.info("handshake with pid %d failed: %s", peer.pid, exc)
            conn.close()
            return
        self._handshakes[conn.fileno()] = _Handshake(conn, peer, token,
                                                     time.monotonic() + self._timeout)
        self._pending_by_uid[peer.uid] += 1
        poller.register(conn, POLL_IN)

    def _limit_problem(self, uid: int) -> str | None:
        """Why a new connection of `uid` must be refused now, if it must."""
        if self._attached() >= self.max_consumers:
            return self._full()
        if self._pending_by_uid[uid] >= self.pending_per_uid:
            return (f"uid {uid} already has {self._pending_by_uid[uid]} unfinished handshakes, "
                    f"the most one uid may have ({self.pending_per_uid}); finish or close "
                    f"them first")
        if len(self._handshakes) >= self.max_pending:
            return (f"the producer has {len(self._handshakes)} unfinished handshakes, its "
                    f"maximum ({self.max_pending}); try again shortly")
        return None

    def _full(self) -> str:
        return f"the producer serves its maximum of {self.max_consumers} consumers (max_consumers)"

    def _forget(self, fd: int) -> _Handshake:
        hs = self._handshakes.pop(fd)
        self._pending_by_uid[hs.peer.uid] -= 1
        if not self._pending_by_uid[hs.peer.uid]:
            del self._pending_by_uid[hs.peer.uid]
        return hs

    def finish(self, poller: select.poll, fd: int) -> Attach | None:
        """Read the ATTACH on connection `fd`; None (and the peer refused) if
        it is anything else. The caller owns the returned connection."""
        hs = self._forget(fd)
        poller.unregister(hs.conn)
        try:
            # No fds are expected from a client: any it attaches are refused.
            data, _ = fdpass.recv_with_fds(hs.conn, protocol.MAX_CONTROL_MESSAGE, 0)
            if not data:
                raise ProtocolError("closed the connection during the handshake")
            fields = protocol.expect(data, protocol.ATTACH, protocol.CONTROL,
                                     protocol.MAX_CONTROL_MESSAGE)
        except (OSError, ProtocolError) as exc:
            self.errors += 1
            self.refuse(hs.conn, "protocol", f"bad ATTACH: {exc}")
            return None
        if fields[0] == "consumer" and self._attached() >= self.max_consumers:
            self.refuse(hs.conn, "limit", self._full())
            return None
        return Attach(hs.conn, hs.peer, hs.token, *fields)

    def refuse(self, conn: socket.socket, code: str, reason: str) -> None:
        """Tell the peer why (REFUSE) and hang up."""
        self.refused += 1
        self._rate_log.warning(code, "refused a consumer: %s", reason)
        send_quietly(conn, protocol.REFUSE.encode(code, reason))
        conn.close()

    def expire(self, poller: select.poll, now: float) -> None:
        """Refuse every peer whose handshake has outlived its deadline."""
        for fd, hs in list(self._handshakes.items()):
            if hs.deadline <= now:
                self._forget(fd)
                poller.unregister(hs.conn)
                self.refuse(hs.conn, "timeout", "no ATTACH within the handshake timeout")

    def close(self, reason: str) -> None:
        """Refuse the peers still in their handshake, stop listening, remove
        the socket file (if it is still ours); safe twice."""
        for hs in self._handshakes.values():
            self.refuse(hs.conn, "shutdown", reason)
        self._handshakes.clear()
        self._pending_by_uid.clear()
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
        if self._listener.fileno() >= 0:
            self._listener.close()
            endpoint.unlink_if_ours(self.path, self._inode)


def send_quietly(conn: socket.socket, data: bytes) -> None:
    """Send on a non-blocking socket, ignoring a peer that has gone or is not reading."""
    try:
        conn.send(data)
    except OSError:
        pass


# At most this many unread messages are discarded before a close (a socket's
# receive buffer holds a few hundred small ones).
_DISCARD_LIMIT = 4096


def close_quietly(conn: socket.socket) -> None:
    """Close a connection so that what was sent on it (a BYE) is still read.

    Closing an AF_UNIX stream or SEQPACKET socket with unread data makes the
    peer's next recv() fail with ECONNRESET *before* it reads what is queued
    for it: a consumer cut off for flooding would see "connection reset", not
    our reason. So the read side is shut first (the peer can send no more)
    and what it had sent is discarded.
    """
    try:
        conn.shutdown(socket.SHUT_RD)
        for _ in range(_DISCARD_LIMIT):
            if not conn.recv(protocol.MAX_CONTROL_MESSAGE, socket.MSG_DONTWAIT):
                break
    except OSError:
        pass  # EAGAIN (nothing left), or the peer has gone
    conn.close()


def _fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fd_limit_reason() -> str:
    return (f"the producer is out of file descriptors (RLIMIT_NOFILE {_fd_limit()}, "
            f"{_open_fds()} open); raise its limit (LimitNOFILE= in systemd)")
