"""The client's half of the control-socket handshake, shared by `Consumer`
and `framebus status`: connect, read HELLO and its fds, ATTACH, read the answer."""

from __future__ import annotations

import socket
from typing import Any

from . import _protocol as protocol
from .errors import (NoProducer, PermissionDenied, ProducerGone, ProducerRefusedConnection,
                     ProtocolError, Refused, Timeout)
from .linux import fdpass

MAX_FDS = 257  # 256 buffers + the status board


def connect(path: str, timeout: float, producer_uid: int | None = None) -> socket.socket:
    """A connected control socket, or the error that says why not.

    `producer_uid`: a uid the producer may run as besides root and our own.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise NoProducer(f"no producer at {path} (no such socket)") from None
    except ConnectionRefusedError:
        sock.close()
        raise ProducerRefusedConnection(
            f"no producer listening at {path} (stale socket file)") from None
    except PermissionError:
        sock.close()
        raise PermissionDenied(f"not allowed to open {path}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def read_hello(sock: socket.socket, path: str) -> tuple[tuple[Any, ...], list[int]]:
    """HELLO's fields (version already checked) and the fds that came with it.

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
