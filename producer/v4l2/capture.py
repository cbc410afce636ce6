"""The capture loop: poll the device, dequeue, account, publish, requeue.

`Capture.run()` streams one device through one `BufferQueue` into one bus
until `stop` is set or the camera goes away. Per frame it:

- counts gaps in ``v4l2_buffer.sequence`` as frames the camera lost
  (``camera_drops``: dropped upstream, or while no buffer was queued);
- drops frames flagged ``V4L2_BUF_FLAG_ERROR`` (or empty), counting them and
  logging at a bounded rate, and gives their buffer back for requeueing;
- publishes the driver's timestamp as ``timestamp_ns`` when the buffer says
  ``V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`` (the bus's clock), and the time of
  DQBUF otherwise; the clock used is logged once.

The device is polled (it is opened ``O_NONBLOCK``): DQBUF's EAGAIN is "not
yet". ENODEV is an unplugged camera: the loop ends with `UNPLUGGED`. EIO (the
driver's queue in error) restarts streaming, up to `MAX_RESTARTS` times a
minute. Streaming is always stopped before `run()` returns, so a driver never
writes into memory after the bus has let go of it.
"""

from __future__ import annotations

import errno
import logging
import select
import threading
import time
from dataclasses import dataclass

from framebus import FramebusError, Producer
from framebus.linux import videodev2 as v
from framebus._ratelimit import RateLimitedLog

from ..source import STOPPED, UNPLUGGED
from .device import Device, VideoBuffer
from .queues import BufferQueue

__all__ = ["Capture", "CaptureStats", "MAX_RESTARTS"]

log = logging.getLogger("framebus.v4l2")

#: EIO restarts allowed within a minute before the camera is given up on
MAX_RESTARTS = 3

_IDLE_MS = 200  # poll timeout while every slot is queued (stop is checked this often)
_STARVED_MS = 5  # poll timeout while the bus had no buffer to queue
_POLL_BAD = select.POLLERR | select.POLLHUP | select.POLLNVAL


@dataclass
class CaptureStats:
    """What happened to the frames the camera made."""

    frames: int = 0  #: published to the bus
    camera_drops: int = 0  #: sequence numbers never seen (lost before the bus)
    error_frames: int = 0  #: dequeued with V4L2_BUF_FLAG_ERROR (or empty) and dropped
    restarts: int = 0  #: streaming restarted after EIO
    dequeued: int = 0  #: buffers dequeued (published, error, or no bus buffer free)
    last_sequence: int = -1  #: the newest v4l2_buffer.sequence seen

    def summary(self) -> str:
        return (f"{self.dequeued} frames dequeued, {self.frames} published, "
                f"{self.camera_drops} lost by the camera (sequence gaps), "
                f"{self.error_frames} error frames dropped, {self.restarts} streaming restarts, "
                f"last sequence {self.last_sequence}")


class Capture:
    """One streaming session of `dev` through `queue`."""

    def __init__(self, dev: Device, queue: BufferQueue, stats: CaptureStats) -> None:
        self.dev = dev
        self.queue = queue
        self.stats = stats
        self._last_sequence: int | None = None
        self._clock_logged = False
        self._rate_log = RateLimitedLog(log)
        self._restarts: list[float] = []

    def run(self, bus: Producer, stop: threading.Event) -> str:
        """Stream into `bus` until `stop` (`STOPPED`) or an unplug (`UNPLUGGED`)."""
        poller = select.poll()
        poller.register(self.dev.fd, select.POLLIN | select.POLLPRI)
        try:
            self._start(bus)
            starved = False
            while not stop.is_set():
                events = poller.poll(_STARVED_MS if starved else _IDLE_MS)
                if events:
                    vb = self._dequeue(events[0][1], stop)
                    if vb is not None:
                        self._handle(vb)
                starved = not self.queue.refill()
            return STOPPED
        except _Unplugged:
            log.warning("%s: the camera is gone (ENODEV): unplugged", self.dev.path)
            return UNPLUGGED
        except OSError as exc:  # QBUF and friends: ENODEV is an unplug too
            if exc.errno == errno.ENODEV:
                log.warning("%s: the camera is gone (ENODEV): unplugged", self.dev.path)
                return UNPLUGGED
            raise FramebusError(f"{self.dev.path}: {exc.strerror} "
                                f"({errno.errorcode.get(exc.errno or 0, exc.errno)})") from None
        finally:
            self._stop_streaming()

    def _start(self, bus: Producer) -> None:
        self.queue.start(bus)
        self._last_sequence = None  # STREAMON starts sequence numbers again
        try:
            self.dev.streamon()
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise _Unplugged from None
            raise FramebusError(f"{self.dev.path}: VIDIOC_STREAMON failed: {exc.strerror}") from None

    def _dequeue(self, revents: int, stop: threading.Event) -> VideoBuffer | None:
        try:
            vb = self.dev.dqbuf(self.queue.memory)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise _Unplugged from None
            if exc.errno == errno.EIO:
                self._restart_after_eio()
                return None
            raise FramebusError(f"{self.dev.path}: VIDIOC_DQBUF failed: {exc.strerror}") from None
        if vb is None and revents & _POLL_BAD:
            stop.wait(0.01)  # POLLERR with nothing to dequeue: do not spin
        return vb

    def _handle(self, vb: VideoBuffer) -> None:
        seq = vb.sequence
        self.stats.dequeued += 1
        if self._last_sequence is not None and seq > self._last_sequence + 1:
            lost = seq - self._last_sequence - 1
            self.stats.camera_drops += lost
            log.debug("%s: sequence %d after %d: %d frames lost", self.dev.path, seq,
                      self._last_sequence, lost)
        self._last_sequence = self.stats.last_sequence = seq
        ok = not vb.flags & v.V4L2_BUF_FLAG_ERROR and vb.bytesused > 0
        if not ok:
            self.stats.error_frames += 1
            self._rate_log.warning("error-frame", "%s: frame %d dropped: %s (%d so far)",
                                   self.dev.path, seq,
                                   "V4L2_BUF_FLAG_ERROR" if vb.bytesused else "empty (bytesused 0)",
                                   self.stats.error_frames)
        if self.queue.complete(vb, ok, self._timestamp(vb)):
            self.stats.frames += 1

    def _timestamp(self, vb: VideoBuffer) -> int:
        kind = vb.flags & v.V4L2_BUF_FLAG_TIMESTAMP_MASK
        monotonic = kind == v.V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
        if not self._clock_logged:
            self._clock_logged = True
            if monotonic:
                source = ("start of exposure" if vb.flags & v.V4L2_BUF_FLAG_TSTAMP_SRC_MASK
                          == v.V4L2_BUF_FLAG_TSTAMP_SRC_SOE else "end of frame")
                log.info("%s: timestamps are the driver's CLOCK_MONOTONIC (%s)",
                         self.dev.path, source)
            else:
                log.warning("%s: the driver's timestamps are not CLOCK_MONOTONIC (flags 0x%x); "
                            "using the time of VIDIOC_DQBUF instead", self.dev.path, kind)
        return vb.timestamp_ns if monotonic else time.monotonic_ns()

    def _restart_after_eio(self) -> None:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            raise FramebusError(f"{self.dev.path}: the driver keeps failing with EIO "
                                f"({MAX_RESTARTS} restarts within a minute); giving up")
        self.stats.restarts += 1
        log.warning("%s: VIDIOC_DQBUF: EIO (the driver's queue is in error): restarting "
                    "streaming", self.dev.path)
        self._stop_streaming()
        self._start(self.queue.bus)

    def _stop_streaming(self) -> None:
        """STREAMOFF (every buffer comes back to userspace) and tell the queue."""
        try:
            self.dev.streamoff()
        except OSError:
            pass  # ENODEV: an unplugged device has stopped already
        self.queue.stopped()


class _Unplugged(Exception):
    """ENODEV from the device: the camera went away."""
