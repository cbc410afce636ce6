"""Passing file descriptors over Unix sockets (unix(7): SCM_RIGHTS, SO_PEERCRED,
SO_PEERGROUPS).

`socket.recv_fds` ignores its flags and leaves received fds inheritable, so
this module calls `recvmsg` itself with ``MSG_CMSG_CLOEXEC`` and refuses a
message whose control data was truncated (``MSG_CTRUNC``: some fds were lost).
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import socket
import struct
from typing import NamedTuple

MAX_FDS = 253  # SCM_MAX_FD: the most fds one message can carry


#: ``SO_PEERGROUPS`` (asm-generic/socket.h, Linux 4.13); Python's socket lacks the name.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_NGROUPS_MAX = 65536  # linux/limits.h
_libc = ctypes.CDLL(None, use_errno=True)


class Credentials(NamedTuple):
    """The peer's process credentials, as the kernel recorded them at connect()
    (or listen(), for the server end): effective uid and gid, and the
    supplementary groups when they were asked for."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket, *, groups: bool = False) -> Credentials:
    """The credentials of the process at the other end of a connected socket;
    with `groups`, its supplementary groups too (`peer_groups`)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Credentials(pid, uid, gid, peer_groups(sock) if groups else ())


def peer_groups(sock: socket.socket) -> tuple[int, ...]:
    """The peer's supplementary group ids (``SO_PEERGROUPS``), as the kernel
    recorded them when the connection was made; empty on kernels before 4.13,
    which cannot tell.

    Called through libc: Python's ``getsockopt`` caps its buffer at 1024
    bytes (256 groups), and a peer may have up to 65536.
    """
    count = 64
    while True:
        groups = (ctypes.c_uint32 * count)()
        length = ctypes.c_uint32(ctypes.sizeof(groups))
        if _libc.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_PEERGROUPS, groups,
                            ctypes.byref(length)) == 0:
            return tuple(groups[: length.value // 4])
        err = ctypes.get_errno()
        if err == errno.ENOPROTOOPT:
            return ()
        if err != errno.ERANGE or count >= _NGROUPS_MAX:
            raise OSError(err, os.strerror(err))
        count = min(max(length.value // 4, count * 2), _NGROUPS_MAX)  # ERANGE: the size needed


def send_with_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """Send one message with `fds` attached (at most MAX_FDS)."""
    if len(fds) > MAX_FDS:
        raise ValueError(f"{len(fds)} fds exceed the {MAX_FDS} one message can carry")
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sent = sock.sendmsg([data], ancillary)
    if sent != len(data):
        raise OSError(f"short send on a SOCK_SEQPACKET socket ({sent} of {len(data)} bytes)")


class TruncatedMessage(OSError):
    """A message or its fd list did not fit the receive buffers."""


def recv_with_fds(sock: socket.socket, bufsize: int, max_fds: int) -> tuple[bytes, list[int]]:
    """Receive one message and the fds attached to it, close-on-exec.

    Raises `TruncatedMessage` (after closing whatever fds did arrive) when the
    data or the fd list was cut short. Returns ``(b"", [])`` at EOF.
    """
    data, ancdata, flags, _ = sock.recvmsg(
        bufsize, socket.CMSG_SPACE(max_fds * 4), socket.MSG_CMSG_CLOEXEC)
    fds = _fds_from(ancdata)
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        close_all(fds)
        what = "fd list" if flags & socket.MSG_CTRUNC else "message"
        raise TruncatedMessage(f"received {what} was truncated")
    return data, fds


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def close_all(fds: list[int]) -> None:
    """Close every fd in `fds`, ignoring ones already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
