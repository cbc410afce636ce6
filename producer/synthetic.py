"""The synthetic source: a moving test pattern (`framebus.pattern`) that
needs no hardware, drawn straight into the shared buffers."""

from __future__ import annotations

import logging
import threading
import time

from framebus import Buffer, BufferPool, FramebusError, FrameFormat, Producer, Timeout
from framebus.pattern import Pattern

from .source import STOPPED

log = logging.getLogger("framebus.synthetic")


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

    def controls(self) -> None:
        """A test pattern has no controls."""
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
        used = self._pattern.draw(buffer.planes, seq)  # an MJPG frame's size varies
        return bus.publish(buffer, bytesused=used)

    def close(self) -> None:
        pass
