"""Attacks on a producer's zmq side, and the honest consumer that watches them.

    python tests/bus_attacker.py [--as USER] COMMAND SOCKET [options]

Everything is imported before privileges are dropped (`nobody` cannot read
this machine's Python install). Each attacker first attaches as an ordinary
consumer (so it is admitted, and learns its bus endpoint from HELLO), prints
one JSON line when it has done its damage, then holds on until its stdin
closes. Commands:

  connect    open --count raw connections to its bus endpoint as fast as it
             can and hold them (libzmq aborts a process whose accept() hits EMFILE)
  flood      send --seconds of CREDITs as fast as it can on its own DEALER
  sockflood  the same on the socket channel (its control socket), as a
             --policy consumer
  multipart  send --messages multipart messages of --parts x --size bytes
  honest     take frames for --seconds; print fps, the worst gap between
             frames and how many arrived (the victim's view of an attack)
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import socket
import sys
import time

import zmq

import framebus
import framebus._session  # noqa: F401  (imported now: nobody cannot read it later)
from framebus import _protocol as protocol


def drop_privileges(user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def hold() -> None:
    try:
        sys.stdin.read()
    except (OSError, ValueError):
        pass


def _dealer(cam: framebus.Consumer) -> zmq.Socket:
    session = cam._session
    assert session is not None and session._dealer is not None
    return session._dealer


def connect(args: argparse.Namespace) -> None:
    with framebus.Consumer(args.socket, name="connector", producer_uid=0) as cam:
        cam.get(timeout=5).release()
        endpoint = cam._session._dealer.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
        path = endpoint[len("ipc://"):]
        held: list[socket.socket] = []
        refused = 0
        started = time.monotonic()
        for _ in range(args.count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                refused += 1
                sock.close()
                continue
            held.append(sock)
        opened = time.monotonic() - started
        time.sleep(1.0)  # let the relay look at them
        cut = sum(1 for s in held if _is_shut(s))
        report(opened=len(held), refused=refused, cut=cut, seconds=round(opened, 2))
        hold()
        for s in held:
            s.close()


def _is_shut(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def flood(args: argparse.Namespace) -> None:
    with framebus.Consumer(args.socket, name="flooder", producer_uid=0) as cam:
        cam.get(timeout=5).release()
        dealer = _dealer(cam)
        message = protocol.CREDIT.encode(1)
        sent = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for _ in range(1000):
                try:
                    dealer.send(message, zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    break
        report(sent=sent, rate=round(sent / args.seconds), cut_off=_fate(cam))
        hold()


def sockflood(args: argparse.Namespace) -> None:
    with framebus.Consumer(args.socket, name="sockflood", channel="socket",
                           policy=args.policy, producer_uid=0) as cam:
        cam.get(timeout=5).release()
        ctrl: socket.socket = cam._session._ctrl
        sent = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for _ in range(1000):
                try:
                    ctrl.send(protocol.CREDIT_ONE, socket.MSG_DONTWAIT)
                    sent += 1
                except BlockingIOError:
                    time.sleep(0.001)  # full: the producer reads what it reads
                    break
                except OSError:  # cut off
                    end = 0
                    break
        report(sent=sent, rate=round(sent / args.seconds), cut_off=_fate(cam))
        hold()


def multipart(args: argparse.Namespace) -> None:
    with framebus.Consumer(args.socket, name="multipart", producer_uid=0) as cam:
        cam.get(timeout=5).release()
        dealer = _dealer(cam)
        dealer.setsockopt(zmq.SNDHWM, 0)
        part = b"\x00" * args.size
        for _ in range(args.messages):
            for _ in range(args.parts - 1):
                dealer.send(part, zmq.SNDMORE)
            dealer.send(part)
        report(sent_bytes=args.messages * args.parts * args.size, cut_off=_fate(cam))
        hold()


def _fate(cam: framebus.Consumer, seconds: float = 10.0) -> str:
    """Why the producer disconnected us ("" if it still serves us)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            cam.get(timeout=0.5).release()
        except framebus.ProducerGone as exc:
            return exc.reason
        except framebus.Timeout:
            pass
    return ""


def honest(args: argparse.Namespace) -> None:
    arrivals: list[float] = []
    seqs: list[int] = []
    with framebus.Consumer(args.socket, name="honest") as cam:
        report(attached=True)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            try:
                with cam.get(timeout=1) as frame:
                    arrivals.append(time.monotonic())
                    seqs.append(frame.seq)
            except framebus.Timeout:
                continue
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    report(frames=len(arrivals), fps=round(len(arrivals) / args.seconds, 1),
           worst_gap_ms=round(max(gaps, default=args.seconds) * 1000, 1),
           increasing=seqs == sorted(seqs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as", dest="user", help="drop to this user first")
    parser.add_argument("command", choices=("connect", "flood", "sockflood", "multipart", "honest"))
    parser.add_argument("socket")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--parts", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=4_000)
    parser.add_argument("--policy", choices=("latest", "queue"), default="latest")
    args = parser.parse_args()
    drop_privileges(args.user)
    commands = {"connect": connect, "flood": flood, "sockflood": sockflood,
                "multipart": multipart, "honest": honest}
    commands[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
