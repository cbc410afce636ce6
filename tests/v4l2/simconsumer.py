"""A consumer process for the capture tests: attach, check pixels, report JSON.

Run as ``python simconsumer.py --socket PATH [--frames N | --until-gone]``,
in a process of its own (with the simulator preloaded when the frames are
DMA-BUFs: ``DMA_BUF_IOCTL_SYNC`` on them is the simulator's). For every frame
it reads the V4L2 sequence number the simulated driver stamped into the
first 8 bytes, recomputes the whole frame with ``harness.expected_frame`` and
compares it through the bus's own views (so ``bytesperline`` padding and
planes are checked as consumers see them). It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

import framebus  # noqa: E402
from harness import expected_frame  # noqa: E402
from framebus.pattern import read_stamp  # noqa: E402


def mapping_of(address: int) -> tuple[int, str]:
    """(start, "file perms") of the mapping that holds `address` (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return start, f"{fields[5].strip() if len(fields) > 5 else ''} {fields[1]}"
    return 0, "?"


def backing_file(address: int) -> str:
    """The file behind the mapping that holds `address`."""
    return mapping_of(address)[1]


def check(frame: framebus.Frame, fmt: framebus.FrameFormat) -> tuple[int, bool]:
    """(V4L2 sequence, pixels right) for one frame."""
    sequence = read_stamp(frame.planes[0])
    expected = fmt.views(bytearray(expected_frame(sequence, fmt.sizeimage)))
    if fmt.compressed:
        ok = np.array_equal(frame.array, expected.raw[:frame.bytesused])
    else:
        ok = all(np.array_equal(p, e) for p, e in zip(frame.planes, expected.planes))
    return sequence, ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--until-gone", action="store_true", help="read until the producer ends")
    parser.add_argument("--sessions", type=int, default=1,
                        help="reconnect and read --frames frames in each of this many runs")
    parser.add_argument("--policy", default="latest")
    parser.add_argument("--max-held", type=int, default=2)
    parser.add_argument("--depth", type=int, default=0, help="queue depth (default: --max-held)")
    parser.add_argument("--name", default="checker")
    parser.add_argument("--wait", type=float, default=0,
                        help="wait up to this many seconds for the socket to appear")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while not os.path.exists(args.socket) and time.monotonic() < deadline:
        time.sleep(0.005)

    report: dict[str, object] = {"frames": 0, "bad": 0, "sequences": [], "backing": [],
                                 "stale_timestamps": 0, "unstamped": 0, "per_session": [],
                                 "plane_backing": [], "planes_apart": 0}
    cam = framebus.Consumer(args.socket, name=args.name, policy=args.policy,
                            max_held=args.max_held, depth=args.depth or args.max_held,
                            reconnect=args.sessions > 1, timeout=10)
    try:
        report["format"] = cam.format.to_wire()
        while True:
            try:
                frame = cam.get(timeout=10)
            except framebus.ProducerGone as exc:
                report["gone"] = {"reason": exc.reason, "clean": exc.clean}
                break
            per_session: list[int] = report["per_session"]  # type: ignore[assignment]
            while len(per_session) < cam.sessions:
                per_session.append(0)
            per_session[-1] += 1
            with frame:
                sequence, ok = check(frame, cam.format)
                age = time.monotonic_ns() - frame.timestamp_ns
                report["frames"] = int(report["frames"]) + 1
                report["bad"] = int(report["bad"]) + (not ok and frame.valid())
                report["sequences"].append(sequence)  # type: ignore[attr-defined]
                # the driver's timeval has microseconds: a publish-time stamp would not
                report["unstamped"] = int(report["unstamped"]) + (frame.timestamp_ns % 1000 != 0)
                report["stale_timestamps"] = int(report["stale_timestamps"]) + (not 0 <= age < 2e9)
                where = backing_file(frame.array.__array_interface__["data"][0])
                if where not in report["backing"]:  # type: ignore[operator]
                    report["backing"].append(where)  # type: ignore[attr-defined]
                # each plane: which file it lives in, and whether the planes
                # are in mappings of their own (one DMA-BUF per plane)
                maps = [mapping_of(p.__array_interface__["data"][0]) for p in frame.planes]
                for n, (_, file) in enumerate(maps):
                    if f"{n} {file}" not in report["plane_backing"]:  # type: ignore[operator]
                        report["plane_backing"].append(f"{n} {file}")  # type: ignore[attr-defined]
                starts = {start for start, _ in maps}
                report.setdefault("plane_strides", [list(p.strides) for p in frame.planes])
                report["planes_apart"] = int(report["planes_apart"]) + (len(starts) == len(maps) > 1)
            if not args.until_gone and len(per_session) >= args.sessions \
                    and per_session[-1] >= args.frames:
                break
    finally:
        cam.close()
    report["pid"] = os.getpid()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
