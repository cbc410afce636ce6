"""`V4L2Source`: a V4L2 camera as a framebus source.

What the daemon sees (``producer.source.Source``): `format` as negotiated,
`reserve`, `pool()` (the exported DMA-BUFs for ``mmap+expbuf``, the bus's
per-plane memfds for separate-plane formats, None for the bus's own memfds
otherwise), `run(bus, stop)`, `close()`, and `controls()`: the camera's
controls, to read and set while it streams.

Opening a source opens the device, negotiates the format
(``negotiate.py``), picks the memory strategy from what the driver reports
(``strategies.py``, logged with the reason) and requests the driver's buffers
(``queues.py``). `run()` streams (``capture.py``) and returns how it ended:

`STOPPED`    `stop` was set;
`UNPLUGGED`  the camera went away; the bus was closed with "camera unplugged"
             so every consumer is told the stream ended;
`RESTART`    (``--on-unplug wait``) the camera went away and came back: the
             bus was closed as above, the device is open and negotiated again
             with new buffers, and the caller makes a new bus from `format`,
             `pool()` and `reserve` and calls `run()` again.
"""

from __future__ import annotations

import argparse
import errno
import logging
import threading
from collections.abc import Mapping

from framebus import BufferPool, FramebusError, FrameFormat, Producer

from ..source import RESTART, STOPPED, UNPLUGGED, wait_until_back
from .capture import Capture, CaptureStats
from .controls import ControlError, V4L2Controls, parse_assignment
from .device import Device, busy_message
from .devices import list_devices
from .negotiate import negotiate
from .queues import BufferQueue, CopyQueue, UserptrRefused, make_queue
from .strategies import MMAP_COPY, choose

__all__ = ["V4L2Source", "STOPPED", "UNPLUGGED", "RESTART"]

log = logging.getLogger("framebus.v4l2")



class V4L2Source:
    """A V4L2 capture device feeding a framebus `Producer`.

    Args:
        path: the device node (``/dev/video0``).
        want: the format asked for (FourCC, width, height).
        fps: frames per second to ask for (0: the driver's rate).
        memory: ``auto``, ``userptr``, ``dmabuf`` or ``copy``.
        buffers: buffers to ask for (the bus's count for memfd strategies).
        on_unplug: ``exit`` or ``wait`` (for the camera to come back).
        controls: control values to set before streaming (and again when an
            unplugged camera comes back), by name: ``{"gain": 10}``; a menu
            item may be given by its name (``"50 Hz"``).
    """

    #: the stream's format as the driver set it (bytesperline, sizeimage included)
    format: FrameFormat

    def __init__(self, path: str, want: FrameFormat, fps: float, *, memory: str = "auto",
                 buffers: int = 8, on_unplug: str = "exit",
                 controls: Mapping[str, int | str] | None = None) -> None:
        if on_unplug not in ("exit", "wait"):
            raise FramebusError(f"--on-unplug must be exit or wait, not {on_unplug!r}")
        if not 2 <= buffers <= 32:
            raise FramebusError(f"a V4L2 source needs 2..32 buffers (VIDEO_MAX_FRAME), not {buffers}")
        self.path = path
        self.memory = memory
        self.on_unplug = on_unplug
        self.stats = CaptureStats()
        self._want = want
        self._fps = fps
        self._buffers = buffers
        self._copied_before = 0  # bytes copied by queues already closed
        self._dev: Device | None = None
        self._queue: BufferQueue | None = None
        self._initial_controls = dict(controls or {})
        self._device_lock = threading.Lock()  # held to close the device and to use its controls
        self._controls = V4L2Controls(path, self._device_fd, self._device_lock)
        self._setup()

    @classmethod
    def open(cls, path: str, fmt: FrameFormat, fps: float, args: argparse.Namespace,
             controls: Mapping[str, int | str] | None = None) -> V4L2Source:
        """The daemon's entry point: the source for ``--source v4l2:PATH``.

        `controls` (from the config file) are overridden by ``--control``.
        """
        wanted = dict(controls or {})
        wanted.update(parse_assignment(text) for text in getattr(args, "control", None) or [])
        return cls(path, fmt, fps, memory=getattr(args, "memory", "auto"),
                   buffers=getattr(args, "buffers", 8),
                   on_unplug=getattr(args, "on_unplug", "exit"), controls=wanted)

    def controls(self) -> V4L2Controls:
        """The camera's controls (``framebus.controls.Controls``), usable
        from any thread while the source streams."""
        return self._controls

    # ------------------------------------------------------------ Source
    @property
    def reserve(self) -> int:
        """Bus buffers kept out of consumers' quotas for the driver's queue."""
        return self._current_queue().reserve

    @property
    def strategy(self) -> str:
        return self._current_queue().strategy

    @property
    def bytes_copied(self) -> int:
        """Pixel bytes this source copied (0 for the zero-copy strategies)."""
        return self._copied_before + (self._queue.bytes_copied if self._queue else 0)

    def pool(self) -> BufferPool | None:
        return self._current_queue().pool()

    def run(self, bus: Producer, stop: threading.Event) -> str:
        """Stream into `bus` until `stop` is set or the camera goes away."""
        if self._dev is None:
            raise FramebusError(f"{self.path}: the source is closed")
        try:
            outcome = self._stream(bus, stop)
        except FramebusError as exc:
            self._release_device()
            bus.close(f"camera error: {exc}")
            raise
        except BaseException:
            self._release_device()  # before the bus unmaps what the driver writes into
            raise
        self._release_device()  # the driver lets go of the bus's memory before the bus does
        log.info("%s: %s; %s, %d bytes copied", self.path, self.stats.summary(), self.strategy,
                 self.bytes_copied)
        if outcome != UNPLUGGED:
            return outcome
        bus.close("camera unplugged")
        if self.on_unplug == "exit":
            return UNPLUGGED
        return RESTART if wait_until_back(self.path, self._setup, stop) else STOPPED

    def close(self) -> None:
        """Stop and free the device and its buffers; safe twice."""
        self._release_device()

    # ---------------------------------------------------------- internals
    def _setup(self) -> None:
        dev = Device(self.path)
        try:
            negotiated = negotiate(dev, self._want, self._fps)
            self.format = negotiated.format
            info = next(iter(list_devices([self.path])), None)
            if info is None:
                raise FramebusError(f"{self.path} is not a video capture device")
            if info.error and info.error.startswith("EBUSY"):
                raise FramebusError(busy_message(self.path))
            self._apply_controls(dev)
            strategy, reason = choose(info, self.memory)
            log.info("%s (%s, %s): %s", self.path, dev.card, dev.driver, reason)
            self._queue = make_queue(strategy, dev, self.format, self._buffers)
        except OSError as exc:
            dev.close()
            raise FramebusError(f"{self.path}: setting up the camera failed: {exc.strerror} "
                                f"({errno.errorcode.get(exc.errno or 0, exc.errno)})") from None
        except BaseException:
            dev.close()
            raise
        with self._device_lock:
            self._dev = dev
        log.info("%s: %d driver buffers, %s; the bus keeps %d for the driver (reserve)",
                 self.path, self._queue.granted, self.strategy, self.reserve)

    def _current_queue(self) -> BufferQueue:
        """The queue (of the last setup, even once the device is closed)."""
        if self._queue is None:
            raise FramebusError(f"{self.path}: the source was never set up")
        return self._queue

    def _open(self) -> tuple[Device, BufferQueue]:
        """The open device and its queue; a `FramebusError` once closed."""
        if self._dev is None or self._queue is None:
            raise FramebusError(f"{self.path}: the source is closed")
        return self._dev, self._queue

    def _stream(self, bus: Producer, stop: threading.Event) -> str:
        dev, queue = self._open()
        try:
            return Capture(dev, queue, self.stats).run(bus, stop)
        except UserptrRefused as exc:
            if self.memory != "auto":
                raise FramebusError(f"--memory userptr: {exc}") from None
            # auto: the bus's memfds stay; only how frames reach them changes
            log.warning("%s: %s; falling back to %s", self.path, exc, MMAP_COPY)
        queue.close()
        self._queue = CopyQueue(dev, self.format, self._buffers)
        return Capture(dev, self._queue, self.stats).run(bus, stop)

    def _apply_controls(self, dev: Device) -> None:
        if not self._initial_controls:
            return
        controls = V4L2Controls(self.path, lambda: dev.fd, threading.Lock())
        try:
            applied = controls.set(self._initial_controls)
        except ControlError as exc:
            raise ControlError(f"--control: {exc}") from None
        log.info("%s: controls set: %s", self.path,
                 ", ".join(f"{name}={value}" for name, value in applied.items()))

    def _device_fd(self) -> int | None:
        """The open device's fd (None while it is closed); `_device_lock` held."""
        return self._dev.fd if self._dev is not None and self._dev.fd >= 0 else None

    def _release_device(self) -> None:
        if self._queue is not None:
            self._copied_before += self._queue.bytes_copied
            self._queue.bytes_copied = 0
            self._queue.close()
        with self._device_lock:
            if self._dev is not None:
                self._dev.close()
                self._dev = None
