"""Median time of `framebus.convert.to_bgr` per pixel format, rows tight and
padded, into a reused `dst`, OpenCV on one thread.

    python -m framebus_bench.convert [--width 1920 --height 1080 --runs 40]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np

from framebus.convert import to_bgr
from framebus.formats import PIXEL_FORMATS, FrameFormat
from framebus.pattern import Pattern

_BYTES_PER_PIXEL = {"YUYV": 2, "UYVY": 2, "RGB3": 3, "BGR3": 3, "XR24": 4, "XB24": 4}


def median_ms(fourcc: str, width: int, height: int, pad: int, runs: int) -> float:
    """to_bgr's median time on a read-only test-pattern frame, in ms."""
    bpl = width * _BYTES_PER_PIXEL.get(fourcc, 1) + pad if pad else 0
    fmt = FrameFormat(width, height, fourcc, bytesperline=bpl)
    memory = np.zeros(fmt.sizeimage, np.uint8)
    used = Pattern(fmt).draw(fmt.views(memory).planes, 7)
    memory.flags.writeable = False  # as a consumer maps it
    views = fmt.views(memory)
    frame = SimpleNamespace(format=fmt, planes=views.planes,
                            array=views.array[:used] if fmt.compressed else views.array)
    dst = np.empty((height, width, 3), np.uint8)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        to_bgr(frame, dst)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m framebus_bench.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--pad", type=int, default=64, help="bytes of padding per row")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    import cv2
    cv2.setNumThreads(1)
    print(f"to_bgr at {args.width}x{args.height}, median of {args.runs}, one OpenCV thread")
    for fourcc in PIXEL_FORMATS:
        tight = median_ms(fourcc, args.width, args.height, 0, args.runs)
        padded = ("-" if fourcc == "MJPG" else
                  f"{median_ms(fourcc, args.width, args.height, args.pad, args.runs):.2f} ms")
        print(f"{fourcc}  tight {tight:.2f} ms  padded {padded}")


if __name__ == "__main__":
    main()
