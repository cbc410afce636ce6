"""A self-pipe: one thread makes another's poll() return."""

from __future__ import annotations

import os


class WakePipe:
    """A non-blocking pipe: `wake()` makes its `fileno()` readable until
    `drain()`. Wake-ups that come before the drain collapse into one."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def fileno(self) -> int:
        return self._read

    def wake(self) -> None:
        try:
            os.write(self._write, b"x")
        except BlockingIOError:
            pass  # full: a wake-up is already pending

    def drain(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close both ends; safe twice."""
        for fd in (self._read, self._write):
            if fd >= 0:
                os.close(fd)
        self._read = self._write = -1
