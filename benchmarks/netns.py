"""Network namespaces joined by veth pairs, for the remote tests and benchmark.

Everything stays inside namespaces this creates (private /30 addresses on
veth pairs) and is removed by `close()`: the processes started inside first,
then the namespaces, which takes their veth ends with them. Needs root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import IO


class Namespaces:
    """Namespaces named ``<tag><role>``, and the processes run inside them."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag or f"fb{os.getpid() % 100000}"
        self.names: list[str] = []
        self.created: list[str] = []  # every namespace ever added, for `left()`
        self.children: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, role: str) -> str:
        """A new namespace with its loopback up."""
        name = f"{self.tag}{role}"
        _ip("netns", "add", name)
        self.names.append(name)
        self.created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(self, a: str, a_addr: str, b: str, b_addr: str) -> str:
        """A veth pair between namespaces a and b (a /30 each side); a's device."""
        end_a, end_b = f"{a}0{b[-1]}", f"{b}0{a[-1]}"
        _ip("link", "add", end_a, "type", "veth", "peer", "name", end_b)
        try:
            for ns, end, addr in ((a, end_a, a_addr), (b, end_b, b_addr)):
                _ip("link", "set", end, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", end)
                _ip("-n", ns, "link", "set", end, "up")
        except subprocess.CalledProcessError:
            # An end still in this namespace would outlive the test's namespaces.
            subprocess.run(["ip", "link", "del", end_a], check=False, capture_output=True)
            raise
        return end_a

    def shape(self, ns: str, dev: str, rate: str) -> None:
        """Limit what `dev` sends to `rate` (tc's token bucket filter, e.g. ``100mbit``)."""
        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                        "tbf", "rate", rate, "burst", "128kb", "latency", "20ms"],
                       check=True, capture_output=True)

    def tx_bytes(self, ns: str, dev: str) -> int:
        """Bytes `dev` has sent."""
        stats = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", dev], check=True,
                               capture_output=True, text=True).stdout
        return int(json.loads(stats)[0]["stats64"]["tx"]["bytes"])

    def python(self, ns: str, *argv: str, stderr: IO[str] | int = subprocess.PIPE,
               ) -> subprocess.Popen[str]:
        """``python argv...`` inside `ns` (``ip netns exec`` execs it: same pid)."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *argv], text=True,
                                stdout=subprocess.PIPE, stderr=stderr)
        self.children.append(proc)
        return proc

    def close(self) -> None:
        """Kill what runs inside, then remove every namespace. Safe twice."""
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.children.clear()
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self.names.clear()

    def left(self) -> bool:
        """True if a namespace this created is still there."""
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        present = {line.split()[0] for line in listing.splitlines() if line.strip()}
        return bool(present & set(self.created))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)
