"""Viewers of `framebus preview`'s /stream.mjpg: the tests' client, and a tool
that measures what N viewers get (fps, publish-to-received latency).

    python tests/preview_viewers.py http://127.0.0.1:8080/ --viewers 5 --seconds 10

Each viewer is a plain HTTP connection in its own thread that reads every
multipart part; latency is CLOCK_MONOTONIC at the part's last byte minus the
frame's publish time (the part's X-Timestamp-Ns), so it needs the same machine.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class Part:
    seq: int
    timestamp_ns: int
    received_ns: int
    jpeg: bytes


@dataclass
class Viewer:
    """One connection to /stream.mjpg, read by a thread until `stop()`."""

    url: str
    keep_jpegs: bool = False
    parts: list[Part] = field(default_factory=list)
    error: str = ""

    def __post_init__(self) -> None:
        address = urlsplit(self.url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        # HTTP/1.0: the body is the bare multipart stream (no chunked encoding)
        self.sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: preview\r\n\r\n")
        self.reader = self.sock.makefile("rb")
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            head = self._headers()
            assert head[0].split()[1] == b"200", head
            while not self._stopping.is_set():
                line = self.reader.readline()
                if not line:
                    return  # the server ended the stream
                if not line.startswith(b"--"):
                    continue
                headers = dict(h.decode().split(": ", 1) for h in self._headers())
                jpeg = self.reader.read(int(headers["Content-Length"]))
                received = time.monotonic_ns()
                self.parts.append(Part(int(headers["X-Frame-Seq"]),
                                       int(headers["X-Timestamp-Ns"]), received,
                                       jpeg if self.keep_jpegs else b""))
        except (OSError, ValueError, AssertionError) as exc:
            if not self._stopping.is_set():
                self.error = repr(exc)

    def _headers(self) -> list[bytes]:
        lines = []
        while (line := self.reader.readline().rstrip(b"\r\n")):
            lines.append(line)
        return lines

    def stop(self) -> None:
        self._stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=10)
        self.reader.close()
        self.sock.close()


def figures(parts: list[Part], seconds: float) -> dict[str, float]:
    """fps and latency p50/p99 (ms) of what one viewer received."""
    latency = np.array([(p.received_ns - p.timestamp_ns) / 1e6 for p in parts] or [np.nan])
    return {"frames": len(parts), "fps": round(len(parts) / seconds, 2),
            "latency_ms_p50": round(float(np.percentile(latency, 50)), 2),
            "latency_ms_p99": round(float(np.percentile(latency, 99)), 2)}


def measure(url: str, viewers: int, seconds: float, warmup: float = 1.0) -> dict[str, object]:
    """Open `viewers` connections, measure the last `seconds` of them."""
    clients = [Viewer(url) for _ in range(viewers)]
    try:
        time.sleep(warmup)
        start = [len(c.parts) for c in clients]
        time.sleep(seconds)
        measured = [figures(c.parts[n:], seconds) for c, n in zip(clients, start)]
    finally:
        for c in clients:
            c.stop()
    return {"viewers": viewers, "per_viewer": measured,
            "fps_min": min(m["fps"] for m in measured),
            "latency_ms_p50_max": max(m["latency_ms_p50"] for m in measured),
            "latency_ms_p99_max": max(m["latency_ms_p99"] for m in measured)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the preview's address, e.g. http://127.0.0.1:8080/")
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.url, args.viewers, args.seconds)))
