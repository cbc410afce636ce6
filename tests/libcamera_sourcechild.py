"""Drives `LibcameraSource` in this process over the picamera2 stand-in
(which the test puts on PYTHONPATH) and prints JSON: how `run()` ended, and
this process's fds, threads and buffer mappings before and after two rounds
of open, serve, close.

Usage: ``python libcamera_sourcechild.py SOCKET FRAMES``: each round serves
until FRAMES frames were published or the source ends by itself (the
stand-in's settings decide: unplug, error...).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

from framebus import FramebusError, FrameFormat, Producer
from framebus.apps.producer.libcamera.source import LibcameraSource


def resources() -> dict[str, int]:
    gc.collect()
    with open("/proc/self/maps") as f:
        maps = sum("picamera2" in line for line in f)
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "maps": maps}


def serve(path: str, frames: int) -> str:
    source = LibcameraSource(0, FrameFormat(320, 240, "YU12"), 100, buffers=6)
    try:
        with Producer(path, source.format, pool=source.pool(), reserve=source.reserve) as bus:
            stop = threading.Event()
            outcome: list[str] = []

            def run() -> None:
                try:
                    outcome.append(source.run(bus, stop))
                except FramebusError as exc:
                    outcome.append(f"error: {exc}")

            thread = threading.Thread(target=run)
            thread.start()
            deadline = time.monotonic() + 20
            while thread.is_alive() and source.stats.published < frames \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            stop.set()
            thread.join(timeout=20)
            return outcome[0] if outcome else "hung"
    finally:
        source.close()


def main() -> None:
    path, frames = sys.argv[1], int(sys.argv[2])
    serve(path, 3)  # warm up: imports, numpy, the stand-in's module state
    before = resources()
    endings = [serve(path, frames) for _ in range(2)]
    time.sleep(0.1)
    print(json.dumps({"before": before, "after": resources(), "endings": endings}))


if __name__ == "__main__":
    main()
