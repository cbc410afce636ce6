"""Rolling figures a consumer reports: fps, publish→view latency, drops."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from framebus import Consumer, Frame


class FrameStats:
    """Latency of the last `window` frames and the frame rate since the last report."""

    def __init__(self, window: int = 2000) -> None:
        self._latency_ns: deque[int] = deque(maxlen=window)
        self.frames = 0
        self._mark_frames = 0
        self._mark_time = time.monotonic()

    def record(self, frame: Frame) -> None:
        """Call as soon as a frame is in hand (the "view" end of publish→view)."""
        self._latency_ns.append(time.monotonic_ns() - frame.timestamp_ns)
        self.frames += 1

    def report(self, cam: Consumer, **extra: object) -> dict[str, object]:
        """The figures since the previous report (fps) and over the window (latency)."""
        now = time.monotonic()
        fps = (self.frames - self._mark_frames) / max(now - self._mark_time, 1e-9)
        self._mark_frames, self._mark_time = self.frames, now
        if self._latency_ns:
            p50, p99 = np.percentile(np.fromiter(self._latency_ns, np.int64), [50, 99]) / 1000
        else:
            p50 = p99 = float("nan")
        return {"name": cam.name, "frames": self.frames, "fps": round(fps, 2),
                "latency_p50_us": round(float(p50), 1), "latency_p99_us": round(float(p99), 1),
                "dropped": cam.dropped, "held": cam.held, **extra}


def format_report(report: dict[str, object]) -> str:
    return (f"{report['name']}: {report['frames']} frames, {report['fps']:.1f} fps, "
            f"latency p50 {report['latency_p50_us']:.0f} us p99 {report['latency_p99_us']:.0f} us, "
            f"dropped {report['dropped']}")
