"""Logging at a bounded rate, so a flood of bad input cannot flood the log."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs at most `burst` messages per `period` seconds for each key, then
    says how many it held back when the next period begins."""

    def __init__(self, logger: logging.Logger, burst: int = 5, period: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (start, count)

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self._period:
            if count > self._burst:
                self._logger.warning("(%d more like this were not logged)", count - self._burst)
            start, count = now, 0
        count += 1
        if len(self._windows) > 1024:  # keys come from peers: keep the table bounded
            self._windows.clear()
        self._windows[key] = (start, count)
        if count <= self._burst:
            self._logger.warning(msg, *args)
