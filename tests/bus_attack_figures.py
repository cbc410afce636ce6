"""Figures for docs/trust.md: an honest consumer's view of each attack on the bus side.

    sudo .venv/bin/python tests/bus_attack_figures.py [--seconds 8] [--fps 30]

For each attack in `tests/bus_attacker.py` (run as `nobody`, admitted with
--allow-uid), a fresh producer (root, 640x480 YUYV) serves an honest root
consumer alone for the same time first, then with the attacker: the honest
consumer's fps and worst gap between frames, the producer's fds and RSS
(peak, sampled every 0.1 s) and its exit status after SIGTERM. Prints a
markdown table. Not part of the test suite (it takes about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ATTACKER = os.path.join(HERE, "bus_attacker.py")
NOBODY = 65534

ATTACKS = {
    "10,000 raw connections to its bus endpoint": ["connect", "--count", "10000"],
    "CREDIT flood from an admitted consumer": ["flood", "--seconds", "4"],
    "3 multipart messages of 20,000 x 4,000 B": ["multipart"],
}


def _start(*argv: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *argv], text=True, **kwargs)  # type: ignore[call-overload]


def _line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    return json.loads(proc.stdout.readline())


def run(name: str, attack: list[str] | None, seconds: float, fps: float) -> dict[str, object]:
    workdir = tempfile.mkdtemp(prefix="fbfig-", dir="/tmp")
    os.chmod(workdir, 0o755)
    sock = os.path.join(workdir, "cam.sock")
    producer = _start("-m", "framebus", "produce", "--socket", sock, "--mode", "666",
                      "--allow-uid", str(NOBODY), "--fps", str(fps), "--width", "640",
                      "--height", "480", "--format", "YUYV", "--buffers", "10",
                      stderr=subprocess.DEVNULL)
    while not os.path.exists(sock):
        time.sleep(0.05)
    me = psutil.Process(producer.pid)
    honest = _start(ATTACKER, "honest", sock, "--seconds", str(seconds), stdout=subprocess.PIPE)
    _line(honest)
    attacker = None
    if attack:
        attacker = _start(ATTACKER, "--as", "nobody", attack[0], sock, *attack[1:],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    fds = rss = 0
    rss_start = me.memory_info().rss
    while honest.poll() is None:
        try:
            fds, rss = max(fds, me.num_fds()), max(rss, me.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.1)
    figures = _line(honest)
    outcome = {}
    if attacker is not None:
        outcome = _line(attacker)
        attacker.stdin.close()  # type: ignore[union-attr]
        attacker.wait(timeout=30)
    alive = producer.poll() is None
    producer.send_signal(signal.SIGTERM)
    status = producer.wait(timeout=20)
    return {"case": name, "fps": figures["fps"], "worst_gap_ms": figures["worst_gap_ms"],
            "producer_alive": alive, "exit": status, "peak_fds": fds,
            "rss_growth_mb": round((rss - rss_start) / 2**20, 1), "attacker": outcome}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    rows = [run("honest consumer alone", None, args.seconds, args.fps)]
    rows += [run(name, argv, args.seconds, args.fps) for name, argv in ATTACKS.items()]
    print("| case | honest fps | worst gap | producer fds (peak) | producer RSS growth | "
          "alive during / exit | attacker's outcome |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['fps']} | {r['worst_gap_ms']} ms | {r['peak_fds']} | "
              f"{r['rss_growth_mb']} MB | {r['producer_alive']} / {r['exit']} | "
              f"{json.dumps(r['attacker'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
