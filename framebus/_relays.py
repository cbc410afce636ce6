"""The producer's side of its bus relays (see `_relay` for why they exist).

`RelayLink` starts one relay process, serving one consumer uid at its own zmq
endpoint, and speaks the link protocol with it. The producer keeps the link;
the relay keeps every zmq socket, so nothing a consumer sends over zmq is ever
buffered in the producer's memory.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import socket
import subprocess
import sys
from typing import NamedTuple

import msgpack

from .errors import FramebusError

log = logging.getLogger("framebus.producer")

_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_relay.py")
TOKEN = 16
_START_TIMEOUT = 10.0
_MAX_LINK_MESSAGE = 1 << 20


class Ack(NamedTuple):
    """A consumer's message, or (`problem`) what the relay refused from it."""

    token: bytes
    payload: bytes
    problem: str = ""


class RelayLink:
    """One relay process and the link to it.

    Args:
        endpoint: the ``ipc://`` endpoint it binds.
        owner: chown the endpoint's file to this uid (mode 0600), when the
            producer may; else `mode` and `group` apply.
    """

    def __init__(self, endpoint: str, uid: int, *, owner: int | None, mode: int,
                 group: int | None) -> None:
        self.endpoint = endpoint
        self.uid = uid
        self.counters: dict[str, int] = {}
        self.alive = True
        self.idle_since = 0.0  # when its last consumer left (0: it has consumers)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.link = ours
        try:
            with theirs:
                self.process = subprocess.Popen(
                    [sys.executable, "-I", _SCRIPT, endpoint, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL)
            self._wait_ready()
            path = endpoint[len("ipc://"):]
            if owner is not None:
                os.chown(path, owner, -1)
                os.chmod(path, 0o600)
            else:
                if group is not None:
                    os.chown(path, -1, group)
                os.chmod(path, mode)
            ours.setblocking(False)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        ready, _, _ = select.select([self.link], [], [], _START_TIMEOUT)
        if not ready or self.link.recv(16) != b"R":
            raise FramebusError(f"the bus relay for uid {self.uid} did not start "
                                f"(exit status {self.process.poll()})")

    def fileno(self) -> int:
        return self.link.fileno()

    def admit(self, token: bytes, pid: int) -> None:
        """Let the process `pid` connect and speak as `token`."""
        self._tell(b"T" + token + pid.to_bytes(4, "little"))

    def forget(self, token: bytes) -> None:
        """Stop accepting `token` and cut its process's connection."""
        self._tell(b"U" + token)

    def send(self, tokens: list[bytes], payload: bytes) -> int:
        """Have the relay send `payload` to each of `tokens`; returns how many
        of them (the first ones) it was handed for: fewer if the relay is not
        keeping up."""
        handed = 0
        try:
            for start in range(0, len(tokens), 255):
                chunk = tokens[start:start + 255]
                self.link.send(b"F" + bytes((len(chunk),)) + b"".join(chunk) + payload)
                handed += len(chunk)
        except BlockingIOError:
            pass
        except OSError:
            self.alive = False
        return handed

    def _tell(self, message: bytes) -> None:
        try:
            self.link.send(message)
        except OSError:
            self.alive = False

    def receive(self, limit: int) -> list[Ack]:
        """Acks the relay forwarded (up to `limit` link messages' worth);
        sets `alive` False when the relay has gone."""
        acks: list[Ack] = []
        for _ in range(limit):
            try:
                data = self.link.recv(_MAX_LINK_MESSAGE)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.alive = False
                break
            if data[:1] == b"A":
                acks += _acks(data)
            elif data[:1] == b"X":
                acks.append(Ack(data[1:1 + TOKEN], b"",
                                data[1 + TOKEN:].decode("ascii", "replace")))
            elif data[:1] == b"S":
                try:
                    counters = msgpack.unpackb(data[1:])
                except Exception:  # our own child: never, but never crash on it
                    continue
                if isinstance(counters, dict):
                    self.counters = counters
        return acks

    def close(self) -> None:
        """Hang up (the relay exits on EOF) and reap it; safe twice."""
        self.alive = False
        if self.link.fileno() >= 0:
            self.link.close()
        process = getattr(self, "process", None)
        if process is not None and process.returncode is None:
            try:
                process.wait(timeout=1)  # it exits as soon as it reads the EOF
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _acks(data: bytes) -> list[Ack]:
    acks = []
    at, end = 1, len(data)
    while at + TOKEN + 2 <= end:
        token = data[at:at + TOKEN]
        size = int.from_bytes(data[at + TOKEN:at + TOKEN + 2], "little")
        at += TOKEN + 2
        acks.append(Ack(token, data[at:at + size]))
        at += size
    return acks


class RelayPool(dict[int, RelayLink]):
    """The producer's relays by consumer uid, each at an endpoint that stays
    the same for the producer's life (HELLO names it before the relay runs).

    Args:
        directory: the producer's private directory for endpoints.
        mode, group: the control socket's, for endpoints a non-root producer
            cannot give to the consumer's uid.
    """

    def __init__(self, directory: str, mode: int, group: int | None) -> None:
        super().__init__()
        self._directory = directory
        self._mode = mode
        self._group = group
        self._endpoints: dict[int, str] = {}

    def endpoint_for(self, uid: int) -> str:
        endpoint = self._endpoints.get(uid)
        if endpoint is None:
            name = f"bus-{uid}-{secrets.token_hex(6)}"
            endpoint = self._endpoints[uid] = "ipc://" + os.path.join(self._directory, name)
        return endpoint

    def start(self, uid: int) -> RelayLink:
        """A new relay for `uid` (not yet in the pool: the caller adds it)."""
        owner = uid if os.geteuid() == 0 else None
        return RelayLink(self.endpoint_for(uid), uid, owner=owner, mode=self._mode,
                         group=self._group)

    def at(self, fd: int) -> RelayLink | None:
        """The relay whose link is `fd`."""
        return next((r for r in self.values() if r.fileno() == fd), None)

    def pop_idle(self, now: float, idle_for: float) -> list[RelayLink]:
        """Take out the relays whose uid has had no consumer for `idle_for` s."""
        return [self.pop(uid) for uid, r in list(self.items())
                if r.idle_since and now - r.idle_since >= idle_for]

    def next_idle(self, idle_for: float) -> float | None:
        """When the next relay will have been idle `idle_for` s."""
        return min((r.idle_since + idle_for for r in self.values() if r.idle_since), default=None)

    def pop_dead(self) -> list[RelayLink]:
        """Take out the relays whose process has gone."""
        return [self.pop(uid) for uid, r in list(self.items()) if not r.alive]

    def counters(self) -> dict[str, int]:
        """Every relay's counters, added up."""
        totals: dict[str, int] = {}
        for relay in self.values():
            for key, value in relay.counters.items():
                totals[key] = totals.get(key, 0) + int(value)
        return totals

    def close(self) -> None:
        for relay in self.values():
            relay.close()
        self.clear()
