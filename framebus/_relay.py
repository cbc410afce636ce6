"""The bus relay: a small child process that owns a producer's zmq ROUTER.

Why a process of its own: libzmq keeps every part of a multipart message in
memory until its last part arrives, and no socket option bounds the number of
parts (``MAXMSGSIZE`` bounds each one; the high-water mark counts whole
messages; ``ZMQ_CONFLATE`` on a reading socket aborts the process with
``Assertion failed: !_more (src/fq.cpp:80)`` when a peer sends one). So any
process that reads zmq messages from a peer can be made to buffer gigabytes by
that peer. The relay is that process: it runs under its own memory limit
(``RLIMIT_DATA``), and if a peer drives it over the limit it is the relay that
dies, never the producer, which starts a new one. The producer runs one relay
per consumer uid, so a user can only ever hurt their own consumers.

It imports nothing from framebus (it is started as a script, quickly) and
speaks to the producer over an inherited ``SOCK_SEQPACKET`` link
(``python -I _relay.py ENDPOINT LINK_FD``):

producer -> relay
    ``T`` token(16) pid(u32)        admit a consumer's token; its process may connect
    ``U`` token(16)                 forget it and cut its connection
    ``F`` n(u8) token(16)*n payload send payload (a FRAME) to these consumers
relay -> producer
    ``R`` ready
    ``A`` (token(16) len(u16) payload)*   acks, as many as one wake-up brought
    ``X`` token(16) text            that consumer broke the protocol (multipart)
    ``S`` msgpack map               counters, once a second

Connections: a zmq socket monitor reports each accepted connection's fd; the
relay reads its SO_PEERCRED and keeps it only if it comes from a process with
an admitted token and no more connections than that process has tokens.
Anything else is shut down at once, so connections that do not belong to an
attached consumer never pile up (libzmq aborts when ``accept`` hits EMFILE).
Messages: single-part, at most 4 KiB, from an admitted token; the rest is
dropped and counted. Work per wake-up is bounded.
"""

from __future__ import annotations

import errno
import resource
import socket
import struct
import sys
import time
from typing import cast

import msgpack
import zmq

TOKEN = 16
MAX_MESSAGE = 4096
BATCH = 256  # messages read per wake-up, from each side
LINK_BATCH = 32 * 1024  # bytes of acks per link message (well under the link's buffer)
HEADROOM = 64 * 1024 * 1024  # memory the relay may grow by before malloc fails
_ACCEPTED = int(zmq.EVENT_ACCEPTED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK  # (plain ints: an enum's | costs a call per message)
_PEERCRED = struct.Struct("3i")


class Relay:
    """The relay's state: the link, the ROUTER and who may use it."""

    def __init__(self, link: socket.socket, endpoint: str) -> None:
        self.link = link
        self.ctx = zmq.Context(io_threads=1)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self.router.setsockopt(zmq.SNDHWM, 1024)
        self.router.setsockopt(zmq.RCVHWM, 1024)
        self.router.setsockopt(zmq.HANDSHAKE_IVL, 2000)  # a silent peer is dropped after 2 s
        self.monitor = self.router.get_monitor_socket(_ACCEPTED | _DISCONNECTED)
        self.router.bind(endpoint)
        self.pids: dict[bytes, int] = {}  # token -> the pid allowed to use it
        self.connections: dict[int, int] = {}  # fd -> pid
        self.counters = {"accepted": 0, "cut": 0, "forwarded": 0, "sent": 0, "unsent": 0,
                         "unknown_peer": 0, "multipart": 0, "oversized": 0}

    # The producer's side.
    def on_link(self) -> bool:
        """Handle what the producer sent; False once it has hung up."""
        for _ in range(BATCH):
            try:
                data = self.link.recv(65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            kind = data[:1]
            if kind == b"F":
                self._send(data)
            elif kind == b"T":
                token = data[1:1 + TOKEN]
                self.pids[token] = int.from_bytes(data[1 + TOKEN:5 + TOKEN], "little")
            elif kind == b"U":
                self._forget(data[1:1 + TOKEN])
        return True

    def _send(self, data: bytes) -> None:
        count = data[1]
        payload = data[2 + TOKEN * count:]
        send = self.router.send
        for n in range(count):
            token = data[2 + TOKEN * n:2 + TOKEN * (n + 1)]
            try:
                # ROUTER refuses a message (ROUTER_MANDATORY: unknown peer, or
                # its pipe full) at its first part, never after: a routing id
                # accepted means the payload goes too.
                send(token, _MORE_NOBLOCK)
                send(payload, _NOBLOCK)
                self.counters["sent"] += 1
            except zmq.ZMQError:  # not connected yet, gone, or not reading (HWM)
                self.counters["unsent"] += 1

    def _forget(self, token: bytes) -> None:
        pid = self.pids.pop(token, None)
        if pid is not None and pid not in self.pids.values():
            for fd, owner in list(self.connections.items()):
                if owner == pid:
                    self._cut(fd)

    # Consumers' side.
    def on_router(self) -> None:
        """Forward up to BATCH well-formed acks to the producer in bounded
        link messages."""
        out = [b"A"]
        size = 1
        router = self.router
        for _ in range(BATCH):
            if not cast(int, router.getsockopt(_EVENTS)) & _POLLIN:
                break
            token = router.recv(_NOBLOCK)
            payload = router.recv(_NOBLOCK) if router.getsockopt(_RCVMORE) else b""
            if router.getsockopt(_RCVMORE):
                # A multipart message: its parts are all here already; drop them.
                self.counters["multipart"] += 1
                while router.getsockopt(_RCVMORE):
                    router.recv(_NOBLOCK)
                if token in self.pids:
                    self._report_violation(token, b"sent a multipart message")
                self._forget_connection_of(token)
                continue
            if token not in self.pids:
                self.counters["unknown_peer"] += 1
                continue
            if not payload or len(payload) > MAX_MESSAGE:
                self.counters["oversized"] += 1
                continue
            out += (token, len(payload).to_bytes(2, "little"), payload)
            size += TOKEN + 2 + len(payload)
            self.counters["forwarded"] += 1
            if size > LINK_BATCH:
                self._forward(out)
                out, size = [b"A"], 1
        if len(out) > 1:
            self._forward(out)

    def _forward(self, out: list[bytes]) -> None:
        try:
            self.link.send(b"".join(out))
        except OSError as exc:  # the producer is not reading: leases time out instead
            if exc.errno not in (errno.EAGAIN, errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self.counters["unforwarded"] = self.counters.get("unforwarded", 0) + 1

    def _report_violation(self, token: bytes, what: bytes) -> None:
        try:
            self.link.send(b"X" + token + what)
        except BlockingIOError:
            pass

    def _forget_connection_of(self, token: bytes) -> None:
        pid = self.pids.get(token)
        if pid is not None:
            for fd, owner in list(self.connections.items()):
                if owner == pid:
                    self._cut(fd)

    def on_monitor(self) -> None:
        """Check new connections (up to BATCH events)."""
        for _ in range(BATCH):
            try:
                event, _ = self.monitor.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            kind, fd = struct.unpack_from("=hi", event)
            if kind == _ACCEPTED:
                self.counters["accepted"] += 1
                self._check(fd)
            elif kind == _DISCONNECTED:
                self.connections.pop(fd, None)

    def _check(self, fd: int) -> None:
        """Keep a new connection only if it is an admitted consumer's."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            return  # already closed by libzmq
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        except OSError:
            return
        finally:
            sock.detach()  # the fd is libzmq's
        pid = _PEERCRED.unpack(raw)[0]
        allowed = sum(1 for p in self.pids.values() if p == pid)
        used = sum(1 for p in self.connections.values() if p == pid)
        if used < allowed:
            self.connections[fd] = pid
        else:
            self._cut(fd)

    def _cut(self, fd: int) -> None:
        """Shut a connection down; libzmq sees it end and closes its fd."""
        self.connections.pop(fd, None)
        self.counters["cut"] += 1
        try:
            sock = socket.socket(fileno=fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()  # the fd is libzmq's
        except OSError:
            pass

    def report(self) -> None:
        try:
            self.link.send(b"S" + msgpack.packb(self.counters))
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.monitor.close(linger=0)
        self.router.close(linger=0)
        self.ctx.term()


def _limit_memory() -> None:
    """Let the relay's data grow by HEADROOM at most from here."""
    with open("/proc/self/status") as status:
        data_kb = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
    limit = data_kb * 1024 + HEADROOM
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    endpoint, link_fd = argv[1], int(argv[2])
    link = socket.socket(fileno=link_fd)
    link.setblocking(False)
    _raise_fd_limit()
    relay = Relay(link, endpoint)
    _limit_memory()
    link.send(b"R")
    poller = zmq.Poller()
    poller.register(relay.router, zmq.POLLIN)
    poller.register(relay.monitor, zmq.POLLIN)
    poller.register(link.fileno(), zmq.POLLIN)
    next_report = time.monotonic() + 1.0
    try:
        while True:
            # zmq_poll reads each zmq socket's ZMQ_EVENTS, so what a batch
            # left over is reported again at once: no socket is read in vain.
            wait = max(0, int((next_report - time.monotonic()) * 1000)) + 1
            ready = dict(poller.poll(wait))
            # The producer's news first: a token admitted in the same wake-up
            # as its connection must be known before the connection is checked.
            if link.fileno() in ready and not relay.on_link():
                return 0
            if relay.monitor in ready:
                relay.on_monitor()
            if relay.router in ready:
                relay.on_router()
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 1.0
                relay.report()
    except (KeyboardInterrupt, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
        return 0
    finally:
        relay.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
