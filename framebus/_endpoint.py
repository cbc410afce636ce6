"""Where a producer listens: its control socket and its private zmq directory.

The control socket is a ``SOCK_SEQPACKET`` Unix socket (mode 0660 by default).
A socket file left by a crashed producer is detected (nobody accepts on it) and
replaced; a live producer's socket is never stolen. The zmq ipc endpoint lives
in a directory next to it that nobody but the owner (and group, if the mode
admits it) can list, under a random name that only HELLO reveals: a peer must
pass the control socket's SO_PEERCRED check to learn where the bus is.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import socket
import stat
import tempfile
from typing import Callable

from . import paths
from .errors import FramebusError, PermissionDenied

_MAX_UNIX_PATH = 107  # sizeof(sun_path) - 1
_BACKLOG = 512  # connections the kernel queues before accept(); capped by net.core.somaxconn
_ENDPOINT_NAME = 21  # "/bus-" and 16 hex digits
_MKDTEMP_RANDOM = 8  # characters tempfile.mkdtemp adds
_SUFFIX = ".bus"


def listen(path: str, mode: int = 0o660, group: int | None = None) -> socket.socket:
    """Bind and listen on `path`, replacing a stale socket file there.

    Nothing planted at `path` (a symlink, a file, someone else's live socket)
    is followed or removed: that is a `FramebusError` saying what is there.
    """
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise FramebusError(f"socket path is longer than {_MAX_UNIX_PATH} bytes: {path}")
    remove_if_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    # Bound and listening under a private name first, then linked into place:
    # a client that finds the file can always connect (a bind-then-listen
    # window would refuse it as if the socket were stale).
    parent, base = os.path.split(path)
    staging = os.path.join(parent, f".{base}.{secrets.token_hex(4)}")
    if len(os.fsencode(staging)) > _MAX_UNIX_PATH:
        staging = path  # no room for a longer name: bind in place
    try:
        try:
            sock.bind(staging)  # like mknod: never follows a symlink, fails if anything is there
            _restrict(staging, mode, group, stat.S_ISSOCK)
            sock.listen(_BACKLOG)
            if staging != path:
                os.link(staging, path)  # fails if anything appeared there meanwhile
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EEXIST):
                raise
            raise FramebusError(f"{path} appeared while starting (something else created "
                                f"it); not replacing it") from None
        finally:
            if staging != path:
                try:
                    os.unlink(staging)
                except FileNotFoundError:
                    pass
        sock.setblocking(False)
    except PermissionError as exc:
        sock.close()
        raise PermissionDenied(exc.errno, f"cannot create socket {path}: {exc.strerror}") from None
    except FramebusError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        if exc.errno is not None and exc.strerror:
            raise FramebusError(f"cannot create socket {path}: {exc.strerror}") from None
        raise FramebusError(f"cannot create socket {path}: {exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def remove_if_stale(path: str) -> None:
    """Remove `path` if it is a socket nobody listens on; refuse to touch a
    live producer's socket or anything that is not a socket (a symlink is
    never followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FramebusError(f"cannot look at {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise FramebusError(f"{path} exists and is {what}; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)  # stale: its producer is gone (unlink never follows a symlink)
        except FileNotFoundError:
            pass
        except PermissionError as exc:
            raise PermissionDenied(exc.errno, f"cannot remove the stale socket {path}: "
                                              f"{exc.strerror}") from None
        return
    except FileNotFoundError:
        return
    except BlockingIOError:
        pass  # its backlog is full: someone is listening
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
    can enter, holding the zmq ipc endpoint; removed by `close()`.

    Its name is unpredictable (`tempfile.mkdtemp`: a fresh name, created
    exclusively, so nothing planted can stand in for it), next to the socket,
    or in this user's runtime directory when that path would be too long for
    a Unix socket. It is checked after creation (a directory, ours, mode
    0700, not a symlink). Leftovers of an earlier producer at the same socket
    path (which `listen()` has shown to be dead) are removed first.
    """

    def __init__(self, socket_path: str, mode: int = 0o660, group: int | None = None) -> None:
        parent, prefix = _private_dir_place(socket_path)
        _remove_leftovers(parent, prefix)
        try:
            self.path = tempfile.mkdtemp(prefix=prefix, suffix=_SUFFIX, dir=parent)
        except PermissionError as exc:
            raise PermissionDenied(exc.errno, f"cannot create the bus directory in {parent}: "
                                              f"{exc.strerror}") from None
        except OSError as exc:
            raise FramebusError(f"cannot create the bus directory in {parent}: "
                                f"{exc.strerror or exc}") from None
        try:
            # Search (x) but never list (r) for those outside the group that
            # the socket's mode admits: uids allowed by the producer's
            # allow-list need not share its group.
            dir_mode = 0o700 | (0o050 if mode & 0o060 else 0) | (0o001 if mode & 0o006 else 0)
            _restrict(self.path, dir_mode, group, stat.S_ISDIR, expect_mode=0o700)
        except BaseException:
            self.close()
            raise
        self._file = os.path.join(self.path, f"bus-{secrets.token_hex(8)}")
        self.endpoint = "ipc://" + self._file
        self._mode = mode
        self._group = group

    def restrict_endpoint(self) -> None:
        """Give the zmq socket file the control socket's mode (after bind)."""
        _restrict(self._file, self._mode, self._group, stat.S_ISSOCK)

    def close(self) -> None:
        """Remove the directory and the endpoint in it; safe twice."""
        shutil.rmtree(self.path, ignore_errors=True)


def _private_dir_place(socket_path: str) -> tuple[str, str]:
    """Where the private directory goes, and its name's prefix."""
    parent, base = os.path.split(os.path.abspath(socket_path))
    parent = os.path.realpath(parent)  # the endpoint a consumer checks names no symlink
    prefix = f".{base}."
    if _fits(parent, prefix):
        return parent, prefix
    # Too long for sun_path: the user's own runtime directory (never /tmp).
    runtime = paths.make_runtime_dir()
    digest = hashlib.sha1(os.fsencode(os.path.join(parent, base))).hexdigest()[:12]
    prefix = f"bus-{digest}-"
    if not _fits(runtime, prefix):
        raise FramebusError(f"no room for the zmq endpoint of {socket_path}: both its "
                            f"directory and {runtime} are too long for a Unix socket path")
    return runtime, prefix


def _fits(parent: str, prefix: str) -> bool:
    length = len(os.fsencode(os.path.join(parent, prefix)))
    return length + _MKDTEMP_RANDOM + len(_SUFFIX) + _ENDPOINT_NAME <= _MAX_UNIX_PATH


def _remove_leftovers(parent: str, prefix: str) -> None:
    """Remove private directories a crashed producer at this socket path left."""
    length = len(prefix) + _MKDTEMP_RANDOM + len(_SUFFIX)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if len(name) != length or not name.startswith(prefix) or not name.endswith(_SUFFIX):
            continue
        leftover = os.path.join(parent, name)
        try:
            st = os.lstat(leftover)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            shutil.rmtree(leftover, ignore_errors=True)  # never follows symlinks inside


def _restrict(path: str, mode: int, group: int | None, is_kind: Callable[[int], bool],
              expect_mode: int | None = None) -> None:
    """Set `path`'s group and mode, after checking through an ``O_PATH``
    handle (which never follows a symlink) that it is what we just made:
    of the right kind (`is_kind`), owned by us, with `expect_mode` if given."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise FramebusError(f"cannot open {path} to restrict it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if (not is_kind(st.st_mode) or st.st_uid != os.geteuid()
                or (expect_mode is not None and stat.S_IMODE(st.st_mode) != expect_mode)):
            raise FramebusError(
                f"{path} is not what this process just created (mode {st.st_mode:o}, "
                f"uid {st.st_uid}); someone replaced it; not using it")
        handle = f"/proc/self/fd/{fd}"  # the very inode checked, whatever the path is now
        try:
            if group is not None:
                os.chown(handle, -1, group)
            os.chmod(handle, mode)
        except PermissionError as exc:
            raise PermissionDenied(exc.errno, f"cannot give {path} group {group} and mode "
                                              f"{mode:o}: {exc.strerror}") from None
    finally:
        os.close(fd)
