"""The synthetic source: a moving test pattern that needs no hardware.

Every byte of every plane is a function of the frame's sequence number,
``(x + 2*y + 4*seq) mod 256`` for byte column x of row y, and the first 8 bytes
of the frame hold the sequence number itself (little-endian), so any process
can recompute what a frame must contain and prove that nothing corrupted it.

It draws straight into the shared buffer: each row is one copy from a fixed
256-byte-periodic ramp, seen through a strided view, so no frame-sized array is
ever allocated.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from numpy.lib.stride_tricks import as_strided

from framebus import Buffer, BufferPool, FramebusError, FrameFormat, Producer, Timeout

from .source import STOPPED

log = logging.getLogger("framebus.synthetic")

_ROW_STEP = 2
_FRAME_STEP = 4


def byte_rows(plane: np.ndarray) -> np.ndarray:
    """A (rows, bytes-per-row) uint8 view of a plane view (no copy)."""
    rows = plane.shape[0]
    return plane.reshape(rows, -1) if plane.ndim > 1 else plane.reshape(1, -1)


class Pattern:
    """Draws pattern frames of one format."""

    def __init__(self, fmt: FrameFormat) -> None:
        if fmt.compressed:
            raise FramebusError(f"the synthetic source cannot make {fmt.pixel_format} frames; "
                                f"pick a raw format")
        self.format = fmt
        widest = max(p.bytesperline for p in fmt.planes)
        rows = max(p.shape[0] for p in fmt.planes)
        self._ramp = (np.arange(256 + _ROW_STEP * rows + widest) % 256).astype(np.uint8)

    def source_rows(self, seq: int, rows: int, width: int) -> np.ndarray:
        """The pattern of one plane as a strided view of the ramp (no copy)."""
        start = self._ramp[(_FRAME_STEP * seq) % 256:]
        return as_strided(start, shape=(rows, width), strides=(_ROW_STEP, 1), writeable=False)

    def draw(self, planes: tuple[np.ndarray, ...], seq: int) -> None:
        """Write frame `seq` into `planes` (the buffer's writable plane views)."""
        for plane in planes:
            dst = byte_rows(plane)
            np.copyto(dst, self.source_rows(seq, *dst.shape))
        stamp(planes[0], seq)

    def expected(self, seq: int) -> list[np.ndarray]:
        """What each plane of frame `seq` must hold (for checks; allocates)."""
        out = []
        for n, layout in enumerate(self.format.planes):
            rows = layout.shape[0]
            width = int(np.prod(layout.shape[1:]))
            plane = self.source_rows(seq, rows, width).copy()
            if n == 0:
                plane.reshape(-1)[:8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)
            out.append(plane)
        return out

    def check(self, planes: tuple[np.ndarray, ...], seq: int) -> bool:
        """True if `planes` hold exactly frame `seq`."""
        return all(np.array_equal(byte_rows(p), e) for p, e in zip(planes, self.expected(seq)))


def stamp(plane: np.ndarray, seq: int) -> None:
    byte_rows(plane)[0, :8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)


def read_stamp(plane: np.ndarray) -> int:
    """The sequence number stamped in a frame's first 8 bytes."""
    return int.from_bytes(byte_rows(plane)[0, :8].tobytes(), "little")


class SyntheticSource:
    """A paced (or, with fps=0, flat-out) stream of test-pattern frames."""

    reserve = 2

    def __init__(self, fmt: FrameFormat, fps: float = 30.0) -> None:
        if fps < 0:
            raise FramebusError(f"fps must be positive (or 0 for as fast as possible), not {fps}")
        self.format = fmt
        self.fps = fps
        self._pattern = Pattern(fmt)
        self.skipped = 0  # frames not made because every buffer was held

    def pool(self) -> BufferPool | None:
        return None

    def run(self, bus: Producer, stop: threading.Event) -> str:
        period = 1.0 / self.fps if self.fps else 0.0
        next_at = time.monotonic()
        while not stop.is_set():
            if period:
                delay = next_at - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                next_at = max(next_at + period, time.monotonic() - period)
            self.publish_one(bus, timeout=max(period, 0.1))
        return STOPPED

    def publish_one(self, bus: Producer, timeout: float = 1.0) -> int | None:
        """Draw and publish one frame; None if no buffer was free in time (a
        live camera would drop that frame too)."""
        try:
            buffer: Buffer = bus.acquire(timeout=timeout)
        except Timeout:
            self.skipped += 1
            log.warning("no free buffer: skipped a frame (%d so far)", self.skipped)
            return None
        # The sequence number publish() will give is known: the bus counts up.
        seq = bus.next_seq
        self._pattern.draw(buffer.views.planes, seq)
        return bus.publish(buffer)

    def close(self) -> None:
        pass
