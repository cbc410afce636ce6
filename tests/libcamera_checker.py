"""A consumer process for the libcamera tests: attach, check every pixel, report JSON.

Run as ``python libcamera_checker.py --socket PATH [--frames N | --until-gone]``
in a process of its own, with the V4L2 simulator preloaded (tests/v4l2): the
stand-in's buffers are memfds named as the simulator's DMA-BUFs, so the
``DMA_BUF_IOCTL_SYNC`` a consumer brackets its reads with is answered (and
its flags checked) as the kernel answers it on a real DMA-BUF.

Each frame's camera sequence number is read from its first 8 bytes and the
whole frame is compared with framebus's test pattern for it, through the
bus's views (strides and planes as consumers see them); with ``--hold S`` the
frame is held S seconds and checked again just before it is released (the
stand-in poisons a request's buffer the moment it goes back to the camera,
so a request released under a lease shows here). It records, per frame, the
sequence and the CLOCK_MONOTONIC time its release began, which the test
compares with the stand-in's log of when each request went back.

``--stall`` takes ``--max-held`` frames and keeps them until killed (a
consumer that stopped), printing its report once it holds them; with
``--greedy`` it first asks for the most frames the bus admits (from 32 down).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "v4l2"))

import framebus  # noqa: E402
from framebus.pattern import Pattern, read_stamp  # noqa: E402
from simconsumer import backing_file  # type: ignore[import-not-found]  # noqa: E402 (tests/v4l2)


def attach(args: argparse.Namespace, quotas: Iterable[int]) -> framebus.Consumer:
    """A consumer with the first of `quotas` (max_held) the bus admits."""
    refusal: Exception | None = None
    for quota in quotas:
        try:
            return framebus.Consumer(args.socket, name=args.name, max_held=quota, depth=quota,
                                     reconnect=args.sessions > 1, timeout=10)
        except framebus.Refused as exc:
            refusal = exc
    raise SystemExit(f"refused: {refusal}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--until-gone", action="store_true")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--max-held", type=int, default=2)
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--name", default="checker")
    parser.add_argument("--wait", type=float, default=0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while not os.path.exists(args.socket) and time.monotonic() < deadline:
        time.sleep(0.005)

    report: dict[str, object] = {"frames": 0, "bad": 0, "bad_after_hold": 0, "synced": 0,
                                 "stale_timestamps": 0, "backing": [], "held": [],
                                 "per_session": []}
    held: list[list[int]] = report["held"]  # type: ignore[assignment]
    backing: list[str] = report["backing"]  # type: ignore[assignment]
    per_session: list[int] = report["per_session"]  # type: ignore[assignment]
    cam = attach(args, range(32, 0, -1) if args.greedy else [args.max_held])
    args.max_held = cam.max_held
    kept = []
    ages: list[int] = []
    try:
        report["format"] = cam.format.to_wire()
        report["max_held"] = cam.max_held
        while True:
            try:
                frame = cam.get(timeout=10)
            except framebus.ProducerGone as exc:
                report["gone"] = {"reason": exc.reason, "clean": exc.clean}
                break
            while len(per_session) < cam.sessions:
                per_session.append(0)
            per_session[-1] += 1
            pattern = Pattern(frame.format)
            sequence = read_stamp(frame.planes[0])
            report["frames"] = int(report["frames"]) + 1  # type: ignore[call-overload]
            report["bad"] = int(report["bad"]) + (not pattern.check(frame.planes, sequence))  # type: ignore[call-overload]
            report["synced"] = int(report["synced"]) + bool(frame.session.sync_fds[frame.index])  # type: ignore[call-overload]
            age = time.monotonic_ns() - frame.timestamp_ns
            ages.append(age)
            report["stale_timestamps"] = int(report["stale_timestamps"]) + (not 0 <= age < 2e9)  # type: ignore[call-overload]
            where = backing_file(frame.planes[0].__array_interface__["data"][0])
            if where not in backing:
                backing.append(where)
            if args.stall:
                kept.append(frame)
                if len(kept) == args.max_held:
                    print(json.dumps(report), flush=True)
                    while True:
                        time.sleep(1)
                continue
            if args.hold:
                time.sleep(args.hold)
                report["bad_after_hold"] = int(report["bad_after_hold"]) + (  # type: ignore[call-overload]
                    not pattern.check(frame.planes, sequence))
            held.append([sequence, time.monotonic_ns()])
            frame.release()
            if not args.until_gone and len(per_session) >= args.sessions \
                    and per_session[-1] >= args.frames:
                break
    finally:
        cam.close()
    report["median_age_ms"] = sorted(ages)[len(ages) // 2] / 1e6 if ages else None
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
