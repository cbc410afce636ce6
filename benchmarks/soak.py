"""Soak: a producer runs for a set time while consumers join, leave, get
SIGKILLed and SIGSTOPped at random, and hostile clients send garbage.

    python -m framebus_bench.soak --minutes 30 --out benchmarks/results/soak.json

At the end it reports frames produced, frames each consumer got, leases
reclaimed and revoked, errors, frames with wrong pixels (there must be none),
and the producer's fds, threads and RSS at the start and the end (both taken
with no consumer attached, so they must match). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

import framebus
from framebus.report import query_status


# ---------------------------------------------------------------- the consumer
def consumer_main(args: argparse.Namespace) -> int:
    """One soak consumer: checks every frame's pixels, sometimes holds frames
    past the lease timeout, reports JSON lines until SIGTERM."""
    from framebus.pattern import Pattern

    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    rng = random.Random(args.seed)
    figures = {"frames": 0, "bad": 0, "revoked_seen": 0, "gone": ""}
    with framebus.Consumer(args.socket, name=args.name, max_held=2,
                           policy=rng.choice(["latest", "latest", "queue"])) as cam:
        pattern = Pattern(cam.format)
        next_report = time.monotonic()
        while not stopping:
            try:
                with cam.get(timeout=0.5) as frame:
                    if rng.random() < 0.02:  # a slow consumer: outlive the lease
                        time.sleep(cam.lease_timeout * 1.5)
                    intact = pattern.check(frame.planes, frame.seq)
                    if not frame.valid():
                        figures["revoked_seen"] += 1  # pixels may be rewritten: not ours to judge
                    elif not intact:
                        figures["bad"] += 1
                    figures["frames"] += 1
            except framebus.Timeout:
                pass
            except framebus.ProducerGone as exc:
                figures["gone"] = exc.reason
                break
            if time.monotonic() >= next_report:
                print(json.dumps(figures), flush=True)
                next_report += 1.0
    print(json.dumps(figures), flush=True)
    return 0


# ---------------------------------------------------------------- the conductor
@dataclass
class Member:
    name: str
    process: subprocess.Popen[str]
    stopped_until: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)
    fate: str = "running"


def _producer_figures(pid: int) -> dict[str, Any]:
    p = psutil.Process(pid)
    return {"fds": p.num_fds(), "threads": p.num_threads(), "rss_mb": p.memory_info().rss / 2**20}


def _fd_kinds(pid: int) -> dict[str, int]:
    """The producer's open fds by what they are (socket, memfd, eventfd, ...)."""
    kinds: dict[str, int] = {}
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        kind = target.split(":", 1)[0] if ":" in target else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _hostile(sock: str, rng: random.Random) -> None:
    """A client that connects and sends garbage instead of ATTACH."""
    from framebus import _handshake as handshake
    try:
        conn = handshake.connect(sock, 2)
        _, fds = handshake.read_hello(conn, sock)
        for fd in fds:
            os.close(fd)
        conn.send(rng.randbytes(rng.randint(1, 300)))
        conn.close()
    except (framebus.FramebusError, OSError):
        pass


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = tempfile.mkdtemp(prefix="framebus-soak-")
        self.sock = os.path.join(self.workdir, "cam.sock")
        self.members: list[Member] = []
        self.finished: list[Member] = []
        self.events = {"joined": 0, "left": 0, "killed": 0, "stopped": 0, "hostile": 0}
        self.selector = selectors.DefaultSelector()
        self.counter = 0

    def run(self) -> dict[str, Any]:
        a = self.args
        self.producer = subprocess.Popen(
            [sys.executable, "-m", "framebus", "produce", "--socket", self.sock,
             "--width", str(a.width), "--height", str(a.height), "--format", "YUYV",
             "--fps", str(a.fps), "--buffers", "24", "--lease-timeout", "0.5",
             "--max-consumers", "32"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.workdir, "producer.log"), "w"))
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            if time.monotonic() > deadline or self.producer.poll() is not None:
                raise SystemExit("producer did not start")
            time.sleep(0.05)
        time.sleep(2)
        start = _producer_figures(self.producer.pid)
        start_fds = _fd_kinds(self.producer.pid)
        samples = [{"t_s": 0, **start}]
        began = time.monotonic()
        end = began + a.minutes * 60
        next_sample = began + 60
        next_step = began
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_step:
                    self._step()
                    next_step = now + self.args.step
                # Consumers' reports wake this up early: keep the step's pace.
                self._read(max(0.0, next_step - time.monotonic()))
                if time.monotonic() >= next_sample:
                    next_sample += 60
                    sample = {"t_s": round(time.monotonic() - began), **_producer_figures(self.producer.pid),
                              "consumers": len(self.members)}
                    samples.append(sample)
                    print(f"[soak] {sample}", flush=True)
        finally:
            for m in list(self.members):
                self._leave(m, signal.SIGTERM, "left at the end")
            self._reap(timeout=10)
        # Sample once the producer has seen the last departure.
        settle = time.monotonic() + 10
        while query_status(self.sock)["consumers"] and time.monotonic() < settle:
            time.sleep(0.2)
        time.sleep(2.5)  # and has stopped the bus relay its consumers left idle (2 s)
        # Sample before the last status query: the producer closes a status
        # client's connection just after answering, so a sample taken right
        # after one can still count that connection.
        finish = _producer_figures(self.producer.pid)
        finish_fds = _fd_kinds(self.producer.pid)
        status = query_status(self.sock)
        self.producer.send_signal(signal.SIGTERM)
        exit_code = self.producer.wait(timeout=15)
        consumers = [{"name": m.name, "fate": m.fate, **m.last} for m in self.finished]
        return {
            "minutes": a.minutes, "format": f"{a.width}x{a.height} YUYV", "fps": a.fps,
            "published": status["published"], "reclaimed": status["reclaimed"],
            "revoked": status["revoked"], "refused": status["refused"],
            "protocol_errors": status["errors"], "unknown_peer": status["unknown_peer"],
            "events": self.events, "consumers_total": len(consumers),
            "frames_delivered": sum(c.get("frames", 0) for c in consumers),
            "bad_frames": sum(c.get("bad", 0) for c in consumers),
            "producer_start": start, "producer_end": finish, "samples": samples,
            "producer_fds_start": start_fds, "producer_fds_end": finish_fds,
            "consumers_attached_at_end": len(status["consumers"]),
            "producer_exit_code": exit_code, "consumers": consumers,
        }

    def _step(self) -> None:
        now = time.monotonic()
        for m in self.members:
            if m.stopped_until and now >= m.stopped_until:
                m.process.send_signal(signal.SIGCONT)
                m.stopped_until = 0.0
        roll = self.rng.random()
        if len(self.members) < 2 or (roll < 0.25 and len(self.members) < 6):
            self._join()
        elif roll < 0.35:
            self._leave(self.rng.choice(self.members), signal.SIGKILL, "killed")
        elif roll < 0.45:
            self._leave(self.rng.choice(self.members), signal.SIGTERM, "left")
        elif roll < 0.55:
            m = self.rng.choice(self.members)
            if not m.stopped_until:
                m.process.send_signal(signal.SIGSTOP)
                m.stopped_until = now + self.rng.uniform(0.5, 3.0)
                self.events["stopped"] += 1
        elif roll < 0.60:
            _hostile(self.sock, self.rng)
            self.events["hostile"] += 1
        self._reap(timeout=0)

    def _join(self) -> None:
        self.counter += 1
        name = f"c{self.counter}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "framebus_bench.soak", "consumer", "--socket", self.sock,
             "--name", name, "--seed", str(self.rng.randrange(2**32))],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        member = Member(name, proc)
        self.members.append(member)
        self.selector.register(proc.stdout, selectors.EVENT_READ, member)
        self.events["joined"] += 1

    def _leave(self, m: Member, sig: int, fate: str) -> None:
        if m.stopped_until:
            m.process.send_signal(signal.SIGCONT)
            m.stopped_until = 0.0
        m.process.send_signal(sig)
        m.fate = fate
        self.events["killed" if sig == signal.SIGKILL else "left"] += 1
        self.members.remove(m)
        self.finished.append(m)

    def _read(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            member: Member = key.data
            line = key.fileobj.readline()
            if not line:
                self.selector.unregister(key.fileobj)
                continue
            try:
                member.last = json.loads(line)
            except ValueError:
                pass

    def _reap(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for m in self.finished:
            if m.process.returncode is None:
                try:
                    m.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    if timeout:
                        m.process.kill()
                        m.process.wait()
                    continue
                while m.process.stdout and not m.process.stdout.closed:
                    line = m.process.stdout.readline()
                    if not line:
                        break
                    try:
                        m.last = json.loads(line)
                    except ValueError:
                        pass
                if m.process.stdout and not m.process.stdout.closed:
                    try:
                        self.selector.unregister(m.process.stdout)
                    except (KeyError, ValueError):
                        pass
                    m.process.stdout.close()


def format_report(r: dict[str, Any]) -> str:
    s, e = r["producer_start"], r["producer_end"]
    return "\n".join([
        f"soak: {r['minutes']} min, {r['format']} at {r['fps']} fps",
        f"  frames published {r['published']}, delivered to consumers {r['frames_delivered']}, "
        f"with wrong pixels {r['bad_frames']}",
        f"  consumers {r['consumers_total']} ({r['events']})",
        f"  leases reclaimed {r['reclaimed']}, revoked {r['revoked']}, refused {r['refused']}, "
        f"protocol errors {r['protocol_errors']}",
        f"  producer fds {s['fds']} -> {e['fds']}, threads {s['threads']} -> {e['threads']}, "
        f"RSS {s['rss_mb']:.1f} -> {e['rss_mb']:.1f} MB, exit code {r['producer_exit_code']}",
        f"  producer fds by kind: {r['producer_fds_start']} -> {r['producer_fds_end']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    consumer = sub.add_parser("consumer", help="(internal) one soak consumer")
    consumer.add_argument("--socket", required=True)
    consumer.add_argument("--name", required=True)
    consumer.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--step", type=float, default=0.5, help="seconds between chaos actions")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.command == "consumer":
        return consumer_main(args)
    soak = Soak(args)
    try:
        report = soak.run()
    finally:
        if soak.producer.poll() is None:
            soak.producer.kill()
            soak.producer.wait()
        import shutil
        shutil.rmtree(soak.workdir, ignore_errors=True)
    print(format_report(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    ok = (report["bad_frames"] == 0 and report["producer_exit_code"] == 0
          and report["producer_start"]["fds"] == report["producer_end"]["fds"]
          and report["producer_start"]["threads"] == report["producer_end"]["threads"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
