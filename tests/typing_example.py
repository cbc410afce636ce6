"""A user's script written the way README.md and docs/ show the public API.

`tests/test_typing.py` checks it with ``mypy --strict`` against the installed
package (its ``py.typed``), and runs it: ``python tests/typing_example.py``
serves a few synthetic frames and reads them back every way the API offers.
`assert_type` pins the types users get (views are ``NDArray[np.uint8]``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from typing import assert_type

import numpy as np
from numpy.typing import NDArray

import framebus
from framebus.formats import PIXEL_FORMATS, PixelFormat
from framebus.testing import synthetic_producer


def detect(pixels: NDArray[np.uint8]) -> float:
    """Stands for the user's own numpy/OpenCV work on the shared view."""
    return float(pixels.mean())


def render_into(image: NDArray[np.uint8], seq: int) -> None:
    """Stands for a decoder or simulator writing a frame in place."""
    image[...] = seq % 256


def produce(path: str, count: int) -> list[int]:
    """README: the producer side, for a program that makes its own frames."""
    fmt = framebus.FrameFormat(width=320, height=240, pixel_format="RGB3")
    seqs: list[int] = []
    with framebus.Producer(path, fmt, buffers=8) as bus:
        for _ in range(count):
            buf = bus.acquire(timeout=1.0)  # a buffer no consumer holds
            assert_type(buf.array, NDArray[np.uint8])
            render_into(buf.array, bus.next_seq)
            seqs.append(bus.publish(buf))
    return seqs


def consume(path: str, count: int) -> list[float]:
    """README: a consumer, by iteration and by get()."""
    scores: list[float] = []
    with framebus.Consumer(path, name="detector") as cam:
        fmt: framebus.FrameFormat = cam.format
        assert_type(fmt.pixel_format, PixelFormat)
        for frame in cam:  # each frame is released when the next is taken
            pixels = frame.array
            assert_type(pixels, NDArray[np.uint8])
            age_us = (time.monotonic_ns() - frame.timestamp_ns) / 1000
            score = detect(pixels)
            if not frame.valid():  # lease revoked and buffer reused while we worked?
                continue
            scores.append(score + 0 * age_us)
            if len(scores) == count:
                break
        with cam.get(timeout=5.0) as frame:
            planes = frame.planes
            assert_type(planes, tuple[NDArray[np.uint8], ...])
            seq: int = frame.seq
            try:
                bgr = frame.to_bgr()  # needs framebus[cv]
                assert_type(bgr, NDArray[np.uint8])
                bgr = frame.to_bgr(dst=bgr)
            except framebus.FramebusError as exc:
                print(f"frame {seq}: {exc}", file=sys.stderr)
    return scores


async def consume_async(path: str, count: int) -> list[int]:
    """asyncio: aget() and async for, never blocking the loop."""
    seqs: list[int] = []
    with framebus.Consumer(path, name="async-detector", policy="queue", channel="socket") as cam:
        fd: int = cam.fileno()
        assert fd >= 0
        first = await cam.aget(timeout=5.0)  # never blocks the event loop
        seqs.append(first.seq)
        first.release()
        async for frame in cam:
            assert_type(frame, framebus.Frame)
            seqs.append(frame.seq)
            if len(seqs) == count:
                break
    return seqs


def wait_or_explain(path: str) -> str:
    """Errors: every one is a FramebusError, and the matching built-in."""
    try:
        with framebus.Consumer(path, timeout=0.5) as cam, cam.get(timeout=0.5) as frame:
            return f"got frame {frame.seq}"
    except framebus.NoProducer as exc:  # also a FileNotFoundError
        return f"no producer: {exc}"
    except framebus.Timeout:  # also a TimeoutError
        return "no frame in time"
    except framebus.ProducerGone as exc:
        return f"producer gone ({'clean' if exc.clean else 'crashed'})"
    except framebus.FramebusError as exc:
        return f"other bus error: {exc}"


def remote(key: str, count: int) -> list[tuple[int, int]]:
    """docs/remote.md: frames from a bridge over the network (type-checked only)."""
    got: list[tuple[int, int]] = []
    with framebus.RemoteConsumer(key, connect=["tcp/robot.local:7447"], color="BGR3") as cam:
        for frame in cam:
            assert_type(frame.array, NDArray[np.uint8])
            got.append((frame.seq, frame.timestamp_ns))
            if len(got) == count:
                break
    return got


def pick_format(name: str) -> PixelFormat:
    """A FourCC read from a config file: narrow a str to a `PixelFormat`."""
    for known in PIXEL_FORMATS:
        if known == name:
            return known
    raise ValueError(f"unknown pixel format {name!r}")


def main() -> int:
    with synthetic_producer(width=320, height=240, pixel_format=pick_format("NV12"),
                            fps=100.0) as path:
        scores = consume(path, 3)
        seqs = asyncio.run(consume_async(path, 3))
    with tempfile.TemporaryDirectory() as folder:
        published = produce(os.path.join(folder, "own.sock"), 3)
        explained = wait_or_explain(os.path.join(folder, "nobody.sock"))
    print(f"scores {len(scores)}, async seqs {seqs}, published {published}, {explained}")
    return 0 if len(scores) == 3 and len(seqs) == 3 and len(published) == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
