"""Child process for the capture tests: drives `V4L2Source` on the simulator.

Run with the simulator preloaded, as ``python sourcechild.py SCENARIO ...``;
prints JSON lines. Scenarios:

``negotiate PATH FOURCC WIDTH HEIGHT FPS``
    `negotiate()` alone: the `FrameFormat` and rate the driver set, or the
    refusal's message.
``leaks PATH VANISHING BUSY [FOURCC]``
    open, stream briefly and close sources along every ending (stop, unplug,
    EBUSY, refusal) and report the fds, threads and mappings left behind.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path


from framebus import FramebusError, FrameFormat, Producer  # noqa: E402
from framebus.apps.producer.v4l2.device import Device  # noqa: E402
from framebus.apps.producer.v4l2.negotiate import negotiate  # noqa: E402
from framebus.apps.producer.v4l2.source import V4L2Source  # noqa: E402


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def scenario_negotiate(path: str, fourcc: str, width: str, height: str, fps: str) -> None:
    dev = Device(path)
    try:
        got = negotiate(dev, FrameFormat(int(width), int(height), fourcc), float(fps))
        say(format=got.format.to_wire(), fps=got.fps, multiplanar=dev.multiplanar,
            driver_fourcc=got.driver_fourcc)
    except FramebusError as exc:
        say(error=str(exc))
    finally:
        dev.close()


def _resources() -> dict[str, int]:
    with open("/proc/self/maps") as maps:  # buffer mappings (the heap's come and go)
        mappings = sum(1 for line in maps if "/memfd:" in line or "/dev/" in line)
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "tasks": len(os.listdir("/proc/self/task")), "maps": mappings}


def scenario_leaks(path: str, vanishing: str, busy: str, fourcc: str = "YUYV") -> None:
    """Every ending of a source, three times over; resources before and after.

    `path` streams normally, `vanishing` is unplugged mid-stream (and comes
    back), `busy` answers EBUSY; frames are `fourcc` (NV12 on a node that
    has only NM12 streams separate planes).
    """
    sock = os.path.join(tempfile.mkdtemp(prefix="fbl-", dir="/tmp"), "s.sock")
    fmt = FrameFormat(320, 240, fourcc)
    endings: dict[str, str] = {}

    def stream(device: str, memory: str, seconds: float) -> str:
        source = V4L2Source(device, fmt, 200, memory=memory, buffers=4)
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        try:
            with Producer(sock, source.format, 4, pool=source.pool(), reserve=source.reserve) as bus:
                return source.run(bus, stop)
        finally:
            timer.cancel()
            timer.join()
            source.close()
            source.close()  # twice is safe

    def refused(device: str, want: FrameFormat) -> str:
        try:
            V4L2Source(device, want, 30)
        except FramebusError as exc:
            return str(exc).splitlines()[0]
        return "opened"

    stream(path, "copy", 0.1)  # warm up: imports, numpy, zmq's first context
    before = _resources()
    for _ in range(3):
        for memory in ("userptr", "dmabuf", "copy"):
            endings[memory] = stream(path, memory, 0.15)
            time.sleep(0.1)  # the unplugged camera comes back (return_after_ms)
            endings[f"unplug {memory}"] = stream(vanishing, memory, 5.0)
        endings["busy"] = refused(busy, fmt)
        endings["refused"] = refused(path, FrameFormat(1920, 1080, "RGB3"))
    deadline = time.monotonic() + 2
    while _resources()["tasks"] > before["tasks"] and time.monotonic() < deadline:
        time.sleep(0.02)  # a simulated driver thread ends by itself just after its unplug
    after = _resources()
    os.rmdir(os.path.dirname(sock))
    say(before=before, after=after, endings=endings)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s: %(message)s")
    scenario, *rest = sys.argv[1:]
    if scenario == "negotiate":
        scenario_negotiate(*rest)
    elif scenario == "leaks":
        scenario_leaks(*rest)
    else:
        sys.exit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
