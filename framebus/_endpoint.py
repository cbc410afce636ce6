"""Where a producer listens: its control socket and its private zmq directory.

The control socket is a ``SOCK_SEQPACKET`` Unix socket (mode 0660 by default).
A socket file left by a crashed producer is detected (nobody accepts on it) and
replaced; a live producer's socket is never stolen. The zmq ipc endpoint lives
in a directory next to it that nobody but the owner (and group, if the mode
admits it) can list, under a random name that only HELLO reveals: a peer must
pass the control socket's SO_PEERCRED check to learn where the bus is.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import stat

from .errors import FramebusError

_MAX_UNIX_PATH = 107  # sizeof(sun_path) - 1


def listen(path: str, mode: int = 0o660, group: int | None = None) -> socket.socket:
    """Bind and listen on `path`, replacing a stale socket file there."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise FramebusError(f"socket path is longer than {_MAX_UNIX_PATH} bytes: {path}")
    remove_if_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        _restrict(path, mode, group)
        sock.listen(64)
        sock.setblocking(False)
    except PermissionError as exc:
        sock.close()
        raise FramebusError(f"cannot create socket {path}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def remove_if_stale(path: str) -> None:
    """Remove `path` if it is a socket nobody listens on; refuse to touch a
    live producer's socket or anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FramebusError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: its producer is gone
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FramebusError(f"cannot check whether {path} is in use: {exc}") from None
    finally:
        probe.close()
    raise FramebusError(f"a producer is already serving {path}")


def unlink_if_ours(path: str, inode: int) -> None:
    """Remove the socket file we bound, unless someone has replaced it since."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


class PrivateDir:
    """A directory only the socket's owner (and group, when the mode lets it)
    can enter, holding the zmq ipc endpoint; removed by `close()`."""

    def __init__(self, socket_path: str, mode: int = 0o660, group: int | None = None) -> None:
        parent, base = os.path.split(os.path.abspath(socket_path))
        self.path = os.path.join(parent, f".{base}.bus")
        if len(os.fsencode(self.path)) + 24 > _MAX_UNIX_PATH:
            digest = hashlib.sha1(os.fsencode(self.path)).hexdigest()[:16]
            self.path = os.path.join("/tmp", f"framebus-{os.getuid()}-{digest}.bus")
        # Only called once remove_if_stale() has shown nobody serves this path,
        # so a directory here is a crashed producer's leftover.
        shutil.rmtree(self.path, ignore_errors=True)
        # Search (x) but never list (r) for those the socket's mode admits:
        # uids allowed by the producer's allow-list need not share its group.
        dir_mode = 0o700 | (0o050 if mode & 0o060 else 0) | (0o001 if mode & 0o006 else 0)
        os.mkdir(self.path, 0o700)
        _restrict(self.path, dir_mode, group)
        self._file = os.path.join(self.path, f"bus-{secrets.token_hex(8)}")
        self.endpoint = "ipc://" + self._file
        self._mode = mode
        self._group = group

    def restrict_endpoint(self) -> None:
        """Give the zmq socket file the control socket's mode (after bind)."""
        _restrict(self._file, self._mode, self._group)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _restrict(path: str, mode: int, group: int | None) -> None:
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode)
