"""What a frame source is to the daemon."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Protocol

from framebus import BufferPool, FramebusError, FrameFormat, Producer
from framebus.controls import Controls

log = logging.getLogger("framebus.source")

REOPEN_EVERY = 0.25  # seconds between looks for a camera that went away

#: How `Source.run()` ended.
STOPPED = "stopped"  # `stop` was set
UNPLUGGED = "unplugged"  # the source went away; it closed the bus saying why
RESTART = "restart"  # it went away and came back with new buffers: serve a new bus


class Source(Protocol):
    """Fills the bus's buffers: a test pattern, a camera, a decoder...

    The daemon asks the source for its format (already negotiated), for the
    buffers it needs if it brings its own (a driver's exported DMA-BUFs), and
    how many buffers it must always be able to get; then calls `run()` until
    `stop` is set.
    """

    format: FrameFormat

    @property
    def reserve(self) -> int:
        """Buffers the bus keeps out of consumers' quotas for this source."""

    def controls(self) -> Controls | None:
        """The camera's controls, for clients to list and set through the
        producer (`framebus.controls`), or None."""

    def pool(self) -> BufferPool | None:
        """Buffers the source brings, or None for the bus's own memfds."""

    def run(self, bus: Producer, stop: threading.Event) -> str:
        """Publish frames until `stop` is set or the source ends; returns
        `STOPPED`, `UNPLUGGED` or `RESTART`."""

    def close(self) -> None:
        """Free whatever the source holds; safe twice."""


def wait_until_back(name: str, setup: Callable[[], None], stop: threading.Event) -> bool:
    """``--on-unplug wait``: try `setup` (which raises `FramebusError` while
    the camera is away) every REOPEN_EVERY seconds; True once it worked,
    False if `stop` was set first."""
    log.info("%s: waiting for the camera to come back (--on-unplug wait)", name)
    while not stop.wait(REOPEN_EVERY):
        try:
            setup()
        except FramebusError as exc:
            log.debug("%s: not back yet: %s", name, exc)
            continue
        log.info("%s: the camera is back: streaming again", name)
        return True
    return False
