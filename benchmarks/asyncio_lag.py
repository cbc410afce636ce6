"""Event-loop lag of an asyncio app consuming a 30 fps bus: `await cam.aget()`
against the blocking `cam.get()` called in a coroutine (what users write first).

    python -m framebus_bench.asyncio_lag [--seconds 5] [--fps 30]

A ticker coroutine asks to wake every 5 ms; its lag is how late it woke. The
consumer runs in the same loop. Prints p50/p99/max lag and the frames taken.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import framebus
from framebus.testing import synthetic_producer

TICK = 0.005


async def _ticker(stop: asyncio.Event, lags: list[float]) -> None:
    while True:
        asked = time.monotonic()
        await asyncio.sleep(TICK)
        lags.append(time.monotonic() - asked - TICK)
        if stop.is_set():
            return


async def _consume(path: str, seconds: float, blocking: bool) -> tuple[list[float], int]:
    lags: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop, lags))
    frames = 0
    with framebus.Consumer(path) as cam:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            frame = cam.get(timeout=1) if blocking else await cam.aget(timeout=1)
            frames += 1
            frame.release()
            await asyncio.sleep(0)  # a well-behaved app yields between frames
    stop.set()
    await ticker
    return lags, frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    with synthetic_producer(width=640, height=480, pixel_format="YUYV", fps=args.fps) as path:
        print(f"| consumer call | frames | loop lag p50 | p99 | max |\n|---|---|---|---|---|")
        for name, blocking in (("await cam.aget()", False), ("cam.get() in a coroutine", True)):
            lags, frames = asyncio.run(_consume(path, args.seconds, blocking))
            lags.sort()
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            print(f"| `{name}` | {frames} | {statistics.median(lags) * 1e3:.2f} ms | "
                  f"{p99 * 1e3:.1f} ms | {lags[-1] * 1e3:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
