"""Figures for the trust attacks: what an honest consumer sees while a hostile
peer (another uid) attacks the producer. Run as root:

    .venv/bin/python tests/trust_figures.py flood [--count 10000]
    .venv/bin/python tests/trust_figures.py hoard [--count 64]

Against another checkout (the code before the fix, say), put it first on the
path: ``PYTHONPATH=/path/to/checkout .venv/bin/python tests/trust_figures.py flood``.

Prints one JSON object: the honest consumer's frame rate alone and during the
attack, its worst gap between frames, the producer's fds and RSS (peak), whether
a new consumer of another uid attached (and how long it took), the producer's
exit status (None: still running), and what the attacker reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

import framebus

HERE = os.path.dirname(os.path.abspath(__file__))
HOSTILE = os.path.join(HERE, "hostile.py")
NOBODY = 65534


class Honest(threading.Thread):
    """A consumer taking every frame it can, recording when each arrived."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.cam = framebus.Consumer(path, name="honest", timeout=10)
        self.times: list[float] = []
        self.stop = threading.Event()
        self.error = ""

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    with self.cam.get(timeout=1.0):
                        self.times.append(time.monotonic())
                except framebus.Timeout:
                    continue
        except framebus.FramebusError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.cam.close()

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [t for t in self.times if start <= t <= end]
        edges = [start, *inside, end]
        gap = max(b - a for a, b in zip(edges, edges[1:]))
        return {"fps": round(len(inside) / (end - start), 1), "worst_gap_ms": round(gap * 1000, 1)}


class Sampler(threading.Thread):
    """The producer's peak fd count and RSS."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.fds = self.rss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.fds = max(self.fds, self.proc.num_fds())
                self.rss = max(self.rss, self.proc.memory_info().rss)
            except psutil.Error:
                return


def _child(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, HOSTILE, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _line(proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        return {"error": "no report", "returncode": proc.poll()}
    return json.loads(result[0])


def _attach_new(path: str, timeout: float) -> dict[str, object]:
    started = time.monotonic()
    try:
        with framebus.Consumer(path, name="newcomer", timeout=timeout) as cam, \
                cam.get(timeout=timeout):
            return {"attached": True, "seconds": round(time.monotonic() - started, 3)}
    except framebus.FramebusError as exc:
        return {"attached": False, "error": f"{type(exc).__name__}: {exc}"}


def measure(attack: list[str], alone: float, during: float, settle: float) -> dict[str, object]:
    workdir = tempfile.mkdtemp(prefix="fbtrust-")
    os.chmod(workdir, 0o755)
    path = os.path.join(workdir, "cam.sock")
    producer = _child("produce", path, "--allow-uid", str(NOBODY), "--fps", "100")
    attacker = None
    try:
        started = _line(producer, 20)
        honest = Honest(path)
        honest.start()
        sampler = Sampler(producer.pid)
        sampler.start()
        time.sleep(alone)
        t0 = time.monotonic()
        attacker = _child("--as", "nobody", *attack[:1], path, *attack[1:],
                          "--settle", str(settle))
        report = _line(attacker, 300)
        time.sleep(during)
        newcomer = _attach_new(path, 10)
        t1 = time.monotonic()
        honest.stop.set()
        honest.join(timeout=5)
        sampler.stop.set()
        sampler.join(timeout=5)
        return {
            "attack": " ".join(attack), "producer": started,
            "honest_alone": honest.window(t0 - alone, t0),
            "honest_during": honest.window(t0, t1), "honest_error": honest.error,
            "producer_peak_fds": sampler.fds, "producer_peak_rss_mb": round(sampler.rss / 2**20, 1),
            "newcomer": newcomer, "producer_exit": producer.poll(), "attacker": report,
        }
    finally:
        for child in (attacker, producer):
            if child is None:
                continue
            try:
                child.stdin.close()
                child.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                child.kill()
                child.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=("flood", "hoard"))
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--alone", type=float, default=3.0, help="seconds measured before")
    parser.add_argument("--during", type=float, default=3.0,
                        help="seconds measured after the attacker reports")
    args = parser.parse_args()
    count = args.count or (10000 if args.attack == "flood" else 64)
    result = measure([args.attack, "--count", str(count)], args.alone, args.during,
                     settle=1.0)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
