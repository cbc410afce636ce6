"""Hostile peers for the trust tests, each able to run as another user.

    python tests/hostile.py [--as USER] [--groups G,...] COMMAND SOCKET [options]

Everything is imported before privileges are dropped (`nobody` cannot read
this machine's Python install). Each command prints one JSON line when it has
done its damage, then holds it (connections open, producer serving) until its
stdin closes.

Commands:
  produce   serve a synthetic 64x48 GREY bus at SOCKET (mode 0666) at --fps,
            admitting --allow-uid too
  flood     open --count raw connections to SOCKET as fast as possible and hold them
  hoard     keep --count handshakes open without ever sending ATTACH; reopen
            each one the producer drops (a hoarder trying to fill every slot)
  attach    attach one consumer, take one frame, print the outcome (API errors too)
  listen    call the library's listen() on SOCKET and print the outcome
"""

from __future__ import annotations

import argparse
import errno
import grp
import json
import os
import pwd
import resource
import select
import socket
import sys
import threading
import time

import framebus
import framebus._session  # noqa: F401  (imported now: nobody cannot read it later)
from framebus import _endpoint, _protocol as protocol
from framebus.linux import fdpass
from framebus.pattern import Pattern

FMT = framebus.FrameFormat(64, 48, "GREY")


def drop_privileges(user: str | None, groups: list[int]) -> None:
    """Become `user` (with exactly `groups` as supplementary groups)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.setgroups(groups)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def hold() -> None:
    """Wait until our stdin closes (the test is done with us)."""
    try:
        sys.stdin.read()
    except (OSError, ValueError):
        pass


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def produce(args: argparse.Namespace) -> None:
    stop = threading.Event()
    with framebus.Producer(args.socket, FMT, buffers=8, mode=0o666,
                           allow_uids=args.allow_uid) as bus:
        def publish() -> None:
            pattern = Pattern(FMT)
            while not stop.wait(1 / args.fps):
                try:
                    buffer = bus.acquire(timeout=0.5)
                except framebus.FramebusError:
                    continue
                pattern.draw(buffer.views.planes, bus.next_seq)
                bus.publish(buffer)
        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        report(serving=args.socket, uid=os.getuid(), pid=os.getpid())
        hold()
        stop.set()
        thread.join(timeout=5)


def _raw_connect(path: str) -> socket.socket | None:
    """A non-blocking connection, or None while the listen backlog is full."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK
                         | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except BlockingIOError:
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def _first_message(sock: socket.socket) -> str:
    """What the producer said first on `sock`, without waiting: 'hello',
    'refuse:<code>', 'eof', or 'nothing' yet."""
    try:
        data, fds = fdpass.recv_with_fds(sock, protocol.MAX_CONTROL_MESSAGE, 300)
    except BlockingIOError:
        return "nothing"
    except OSError:
        return "eof"
    fdpass.close_all(fds)
    if not data:
        return "eof"
    decoded = protocol.decode(data, protocol.CONTROL, protocol.MAX_CONTROL_MESSAGE)
    if decoded.kind is protocol.REFUSE:
        return f"refuse:{decoded.values[0]}"
    return decoded.kind.name.lower()


def flood(args: argparse.Namespace) -> None:
    held: list[socket.socket] = []
    full = 0
    started = time.monotonic()
    while len(held) < args.count:
        sock = _raw_connect(args.socket)
        if sock is None:
            full += 1  # the backlog is full: try again at once
            continue
        held.append(sock)
    seconds = time.monotonic() - started
    time.sleep(args.settle)
    outcomes: dict[str, int] = {}
    for sock in held:
        outcome = _first_message(sock)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    report(opened=len(held), seconds=seconds, backlog_full=full, outcomes=outcomes,
           uid=os.getuid())
    hold()
    for sock in held:
        sock.close()


def hoard(args: argparse.Namespace) -> None:
    """Hold `count` handshakes open; whenever the producer answers one (a
    REFUSE or a timeout), open another in its place."""
    outcomes: dict[str, int] = {}
    reasons: list[str] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def refill() -> None:
        while len(held) < args.count:
            sock = _raw_connect(args.socket)
            if sock is None:
                time.sleep(0.001)
                continue
            held.append(sock)

    def watch() -> None:
        poller = select.poll()
        while not stop.is_set():
            refill()
            fds = {s.fileno(): s for s in held}
            for fd in fds:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(50):
                sock = fds[fd]
                try:
                    data, got = fdpass.recv_with_fds(sock, protocol.MAX_CONTROL_MESSAGE, 300)
                except OSError:
                    data, got = b"", []
                fdpass.close_all(got)
                kind = "eof"
                if data:
                    decoded = protocol.decode(data, protocol.CONTROL, protocol.MAX_CONTROL_MESSAGE)
                    kind = decoded.kind.name.lower()
                    if decoded.kind is protocol.REFUSE:
                        kind = f"refuse:{decoded.values[0]}"
                        if len(reasons) < 3 and decoded.values[1] not in reasons:
                            reasons.append(decoded.values[1])
                outcomes[kind] = outcomes.get(kind, 0) + 1
                if kind != "hello":  # answered: replace it
                    held.remove(sock)
                    sock.close()
            for fd in fds:
                poller.unregister(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(args.settle)
    report(holding=len(held), outcomes=dict(outcomes), reasons=reasons, uid=os.getuid())
    hold()
    stop.set()
    thread.join(timeout=5)
    for sock in held:
        sock.close()


def attach(args: argparse.Namespace) -> None:
    try:
        with framebus.Consumer(args.socket, name="hostile-test", timeout=10) as cam:
            with cam.get(timeout=10) as frame:
                report(ok=True, seq=frame.seq, uid=os.getuid())
    except framebus.FramebusError as exc:
        report(ok=False, type=type(exc).__name__, message=str(exc),
               permission=isinstance(exc, PermissionError), uid=os.getuid())


def listen(args: argparse.Namespace) -> None:
    try:
        _endpoint.listen(args.socket).close()
        report(ok=True)
    except framebus.FramebusError as exc:
        report(ok=False, type=type(exc).__name__, message=str(exc),
               permission=isinstance(exc, PermissionError),
               errno=exc.errno if isinstance(exc, OSError) else None)


COMMANDS = {"produce": produce, "flood": flood, "hoard": hoard, "attach": attach,
            "listen": listen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as", dest="user", help="drop to this user first")
    parser.add_argument("--groups", default="", help="supplementary groups (names or gids)")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("socket")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait before reporting")
    parser.add_argument("--allow-uid", type=int, action="append", default=[],
                        help="produce: admit this uid too")
    args = parser.parse_args()
    groups = [int(g) if g.isdigit() else grp.getgrnam(g).gr_gid
              for g in args.groups.split(",") if g]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a flood needs fds
    drop_privileges(args.user, groups)
    try:
        COMMANDS[args.command](args)
    except OSError as exc:  # what a hostile peer hits is not the library's business
        report(error=f"{type(exc).__name__}: {exc}", errno=errno.errorcode.get(exc.errno or 0))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
