"""The client's half of the control-socket handshake, shared by `Consumer`
and `framebus status`: connect, authenticate the producer, read HELLO and its
fds, ATTACH, read the answer.

The producer is authenticated before a byte is read from it: SO_PEERCRED of
the server end must name root, this process's own uid, or the uid the caller
trusts by name (``producer_uid``). HELLO's zmq endpoint must be an ``ipc://``
socket in a directory that the same uid owns and nobody else may write.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import time
from contextlib import contextmanager
from typing import Any, Iterator

from . import _protocol as protocol
from .errors import (FramebusError, NoProducer, PermissionDenied, ProducerGone, ProducerRefusedConnection,
                     ProtocolError, Refused, Timeout)
from .linux import fdpass

MAX_FDS = 257  # 256 buffers + the status board
_MAX_UNIX_PATH = 107  # sizeof(sun_path) - 1
_BACKLOG_RETRY = 0.01  # seconds between connect attempts while the backlog is full


def connect(path: str, timeout: float, producer_uid: int | None = None) -> socket.socket:
    """A connected control socket to a producer this process trusts, or the
    error that says why not.

    The producer must run as root, as this process's effective uid, or as
    `producer_uid`; otherwise `PermissionDenied` naming its uid is raised and
    nothing has been read from it. A producer whose listen backlog is full is
    retried until `timeout` passes (then `Timeout`, which is worth retrying).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        _connect(sock, path, timeout)
        check_producer(sock, path, producer_uid)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            # EAGAIN: the listen backlog is full (a busy or flooded producer).
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"the producer at {path} accepted no connection within "
                              f"{timeout} s (its listen backlog stayed full: it is busy "
                              f"or flooded); try again") from None
            time.sleep(min(_BACKLOG_RETRY, remaining))
        except FileNotFoundError:
            raise NoProducer(f"no producer at {path} (no such socket)") from None
        except ConnectionRefusedError:
            raise ProducerRefusedConnection(
                f"no producer listening at {path} (stale socket file)") from None
        except PermissionError as exc:
            raise PermissionDenied(exc.errno, f"not allowed to open {path}") from None
        except TimeoutError:
            raise Timeout(f"connecting to {path} took longer than {timeout} s") from None
        except OSError as exc:
            raise FramebusError(f"cannot connect to {path}: {exc}") from None


def trusted_uids(producer_uid: int | None = None) -> set[int]:
    """The uids a producer may run as: root, our own, and `producer_uid`."""
    return {0, os.geteuid(), *(() if producer_uid is None else (producer_uid,))}


def check_producer(sock: socket.socket, path: str, producer_uid: int | None = None) -> int:
    """The producer's uid (SO_PEERCRED of the server end), if it is trusted;
    else `PermissionDenied` naming it."""
    uid = fdpass.peer_credentials(sock).uid
    if uid not in trusted_uids(producer_uid):
        trusted = "root or this process's uid" if producer_uid is None else "root, " \
            f"this process's uid or uid {producer_uid}"
        raise PermissionDenied(
            f"permission denied: the producer at {path} runs as uid {uid}{_user_name(uid)}, "
            f"not {trusted} "
            f"{os.geteuid()}; not trusting it (name it with producer_uid={uid} or "
            f"--producer-uid {uid} if you do)")
    return uid


def _user_name(uid: int) -> str:
    try:
        return f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return ""


def check_endpoint(endpoint: str, owner: int, path: str) -> str:
    """`endpoint`, if it is an ``ipc://`` path in a directory that uid
    `owner` owns and nobody else may write, named without symlinks; the socket
    file, if it is there yet (a producer may bind it only at ATTACH), belongs
    to `owner` or to us (a producer may hand a consumer's endpoint to its
    uid). Else `ProtocolError` (not such an ipc path) or `PermissionDenied`
    (not owned so). Call it again before connecting for the file's check."""
    prefix = "ipc://"
    where = endpoint[len(prefix):]
    if not endpoint.startswith(prefix) or not where.startswith("/") or "\0" in where:
        raise ProtocolError(f"the producer at {path} named the bus endpoint {endpoint[:80]!r}; "
                            f"only an absolute ipc:// path is accepted")
    if len(os.fsencode(where)) > _MAX_UNIX_PATH or os.path.realpath(where) != where:
        raise ProtocolError(f"the producer at {path} named the bus endpoint {endpoint[:80]!r}; "
                            f"it must be a path of at most {_MAX_UNIX_PATH} bytes without "
                            f"symlinks or '..'")
    directory = os.path.dirname(where)
    for name, is_kind, what, owners in ((directory, stat.S_ISDIR, "directory", {owner}),
                                        (where, stat.S_ISSOCK, "socket", {owner, os.geteuid()})):
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            if name == where:
                break  # bound later (at ATTACH), and only the directory's owner can
            raise ProtocolError(f"the bus endpoint {name} of the producer at {path}: "
                                f"No such file or directory") from None
        except OSError as exc:
            raise ProtocolError(f"the bus endpoint {name} of the producer at {path}: "
                                f"{exc.strerror}") from None
        if not is_kind(st.st_mode) or st.st_uid not in owners:
            raise PermissionDenied(
                f"permission denied: the bus endpoint {name} of the producer at {path} is "
                f"not a {what} owned by the producer's uid {owner} (uid {st.st_uid})")
    if os.lstat(directory).st_mode & 0o022:
        raise PermissionDenied(f"permission denied: the bus endpoint's directory {directory} "
                               f"is writable by others than its owner")
    return endpoint


def read_hello(sock: socket.socket, path: str) -> tuple[tuple[Any, ...], list[int]]:
    """HELLO's fields (version and zmq endpoint already checked) and the fds
    that came with it. The endpoint must belong to the uid serving `sock`.

    The caller owns the fds; on any error they are closed here.
    """
    try:
        data, fds = fdpass.recv_with_fds(sock, protocol.MAX_CONTROL_MESSAGE, MAX_FDS)
    except TimeoutError:
        raise Timeout(f"no HELLO from the producer at {path}") from None
    except ConnectionError as exc:  # the producer died mid-handshake
        raise ProducerGone(f"the producer at {path} went away: {exc}") from None
    except fdpass.TruncatedMessage as exc:
        raise ProtocolError(f"HELLO from {path}: {exc}") from None
    try:
        values = protocol.expect(_answer(data, path), protocol.HELLO, protocol.CONTROL,
                                 protocol.MAX_CONTROL_MESSAGE)
        if values[0] != protocol.VERSION:
            raise ProtocolError(f"producer speaks protocol {values[0]}, "
                                f"this client {protocol.VERSION}")
        check_endpoint(values[4], fdpass.peer_credentials(sock).uid, path)
    except BaseException:
        fdpass.close_all(fds)
        raise
    return values, fds


def attach(sock: socket.socket, path: str, role: str, name: str = "", policy: str = "latest",
           max_held: int = 1, depth: int = 0, channel: str = "zmq") -> protocol.Decoded:
    """Send ATTACH and return the producer's answer (ACCEPT, STATUS or CONTROLS)."""
    return request(sock, path,
                   protocol.ATTACH.encode(role, name[:64], policy, max_held, depth, channel))


def request(sock: socket.socket, path: str, message: bytes) -> protocol.Decoded:
    """Send `message` and return the producer's answer (a refusal raised)."""
    try:
        sock.send(message)
        reply = sock.recv(protocol.MAX_CONTROL_MESSAGE)
    except TimeoutError:
        raise Timeout(f"no answer from the producer at {path}") from None
    except ConnectionError as exc:  # the producer died mid-handshake
        raise ProducerGone(f"the producer at {path} went away: {exc}") from None
    return protocol.decode(_answer(reply, path), protocol.CONTROL, protocol.MAX_CONTROL_MESSAGE)


def _answer(data: bytes, path: str) -> bytes:
    """`data`, unless it is an EOF or a refusal, which become the right error."""
    if not data:
        raise ProducerGone(f"the producer at {path} closed the connection")
    decoded = protocol.decode(data, protocol.CONTROL, protocol.MAX_CONTROL_MESSAGE)
    if decoded.kind is protocol.REFUSE:
        code, reason = decoded.values
        if code == "credentials":
            raise PermissionDenied(f"producer refused this client: {reason}")
        raise Refused(f"producer refused this client ({code}): {reason}")
    return data


@contextmanager
def role_client(path: str, role: str, answer: protocol.Message, timeout: float,
                producer_uid: int | None = None) -> Iterator[tuple[socket.socket, tuple[Any, ...]]]:
    """A client that maps nothing (`framebus status`, `framebus controls`):
    connect, take HELLO, close its fds, ATTACH as `role`; yields the socket and
    the fields of the producer's answer, which must be `answer`."""
    sock = connect(path, timeout, producer_uid)
    try:
        _, fds = read_hello(sock, path)
        fdpass.close_all(fds)
        yield sock, expect_answer(attach(sock, path, role), answer)
    finally:
        sock.close()


def expect_answer(decoded: protocol.Decoded, kind: protocol.Message) -> tuple[Any, ...]:
    """`decoded`'s fields, if it is a `kind` message."""
    if decoded.kind is not kind:
        raise ProtocolError(f"expected {kind.name}, got {decoded.kind.name}")
    return decoded.values
