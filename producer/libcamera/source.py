"""`LibcameraSource`: a libcamera camera, through picamera2, as a framebus source.

What the daemon sees (``producer.source.Source``): `format` as libcamera
configured it (stride and frame size included), `reserve`, `pool()` (the
camera's own buffers, ``requests.RequestPool``), `run(bus, stop)`, `close()`;
no `controls()` yet.

`run()` starts the camera and loops on ``capture_request()``: each completed
request is published in place (no copy: `bytes_copied` is always 0) with
libcamera's ``SensorTimestamp`` and its buffer's sequence number (gaps
counted as frames the camera lost), and handed back to libcamera only once
the bus frees its buffer (``RequestPool.refill``). It returns how it ended:

`STOPPED`    `stop` was set;
`UNPLUGGED`  no frame came for `frame_timeout` seconds (picamera2 never
             returns the requests of a camera that went away: libcamera
             cancels them) or the camera could not be started again; the
             bus was closed with "camera unplugged";
`RESTART`    (``--on-unplug wait``) the camera went away and came back: the
             camera is open and configured again with new buffers, and the
             caller makes a new bus from `format`, `pool()` and `reserve`.

An exception from picamera2 (a failed job) is a camera error: the bus is
closed with "camera error: ..." and a `FramebusError` raised, as the V4L2
source does.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import CancelledError
from typing import Any

from framebus import BufferPool, FramebusError, FrameFormat, Producer

from ..source import RESTART, STOPPED, UNPLUGGED, wait_until_back
from .camera import Camera, open_camera
from .formats import picamera2_format
from .requests import RequestPool, RequestStats, reserve_for

__all__ = ["LibcameraSource", "parse_spec"]

log = logging.getLogger("framebus.libcamera")

_IDLE_WAIT = 0.2  # seconds per wait for a request while libcamera has all it needs
_STARVED_WAIT = 0.005  # ... while a lease keeps a request from libcamera


def parse_spec(spec: str) -> int:
    """The camera number of ``libcamera`` or ``libcamera:N``."""
    _, _, number = spec.partition(":")
    if not number:
        return 0
    if not number.isdigit():
        raise FramebusError(f"--source {spec}: the camera number must be 0, 1, ... "
                            f"(libcamera:N), not {number!r}")
    return int(number)


class LibcameraSource:
    """Camera `number` as libcamera numbers them (picamera2's ``Picamera2(N)``).

    Args:
        number: the camera (0 for the first).
        want: the format asked for (FourCC and size; see `formats`).
        fps: frames per second to ask for (0: the camera's default).
        buffers: libcamera buffers (= requests) to allocate.
        on_unplug: ``exit`` or ``wait`` (for the camera to come back).
        frame_timeout: seconds without a frame after which the camera is
            taken to be gone (default: 2 s, or 10 frame periods if longer).
    """

    format: FrameFormat

    def __init__(self, number: int, want: FrameFormat, fps: float, *, buffers: int = 8,
                 on_unplug: str = "exit", frame_timeout: float | None = None) -> None:
        if on_unplug not in ("exit", "wait"):
            raise FramebusError(f"--on-unplug must be exit or wait, not {on_unplug!r}")
        if fps < 0:
            raise FramebusError(f"fps must be positive (or 0 for the camera's default), not {fps}")
        smallest = reserve_for(64) + 1
        if not smallest <= buffers <= 32:
            raise FramebusError(f"a libcamera source needs {smallest}..32 buffers ({smallest - 1} "
                                f"stay with libcamera and picamera2), not {buffers}")
        picamera2_format(want.pixel_format)  # an unmappable format fails before any import
        self.number = number
        self.on_unplug = on_unplug
        self.frame_timeout = frame_timeout or max(2.0, 10.0 / fps if fps else 0.0)
        self.stats = RequestStats()
        self.bytes_copied = 0  #: pixel bytes copied: none, ever (the pool is libcamera's)
        self._want, self._fps, self._buffers = want, fps, buffers
        self._camera: Camera | None = None
        self._requests: RequestPool | None = None
        self._setup()

    @classmethod
    def open(cls, spec: str, fmt: FrameFormat, fps: float, args: argparse.Namespace,
             controls: Mapping[str, int | str] | None = None) -> LibcameraSource:
        """The daemon's entry point: the source for ``--source libcamera[:N]``."""
        if controls or getattr(args, "control", None):
            raise FramebusError("--control / [controls]: the libcamera source does not set "
                                "camera controls yet")
        return cls(parse_spec(spec), fmt, fps, buffers=getattr(args, "buffers", 8),
                   on_unplug=getattr(args, "on_unplug", "exit"))

    @property
    def name(self) -> str:
        return f"libcamera camera {self.number}"

    # ------------------------------------------------------------ Source
    @property
    def reserve(self) -> int:
        """Bus buffers kept out of consumers' quotas for libcamera's queue."""
        return reserve_for(self._current().count)

    def controls(self) -> None:
        """Camera controls are not offered through framebus yet."""
        return None

    def pool(self) -> BufferPool | None:
        return self._current().pool()

    def run(self, bus: Producer, stop: threading.Event) -> str:
        """Stream into `bus` until `stop` is set or the camera goes away."""
        camera, requests = self._open()
        try:
            outcome = self._stream(camera, requests, bus, stop)
        except FramebusError as exc:
            self._release_camera()
            bus.close(f"camera error: {exc}")
            raise
        except BaseException:
            self._release_camera()
            raise
        self._release_camera()
        log.info("%s: %s; %d bytes copied", self.name, self.stats.summary(), self.bytes_copied)
        if outcome != UNPLUGGED:
            return outcome
        bus.close("camera unplugged")
        if self.on_unplug == "exit":
            return UNPLUGGED
        return RESTART if wait_until_back(self.name, self._setup, stop) else STOPPED

    def close(self) -> None:
        """Stop and close the camera; safe twice."""
        self._release_camera()

    # ---------------------------------------------------------- internals
    def _setup(self) -> None:
        camera = open_camera(self.number, self._want, self._fps, self._buffers)
        try:
            requests = RequestPool(camera.format, camera.framebuffers)
        except BaseException:
            camera.close()
            raise
        requests.stats = self.stats  # one tally across restarts
        self.format = camera.format
        self._camera, self._requests = camera, requests
        log.info("%s: %s %dx%d (stride %d, %d bytes a frame), %d libcamera buffers shared as "
                 "DMA-BUFs; the bus keeps %d for libcamera (reserve)", self.name,
                 self.format.pixel_format, self.format.width, self.format.height,
                 self.format.bytesperline, self.format.sizeimage, requests.count, self.reserve)

    def _current(self) -> RequestPool:
        if self._requests is None:
            raise FramebusError(f"{self.name}: the source was never set up")
        return self._requests

    def _open(self) -> tuple[Camera, RequestPool]:
        if self._camera is None or self._requests is None:
            raise FramebusError(f"{self.name}: the source is closed")
        return self._camera, self._requests

    def _stream(self, camera: Camera, requests: RequestPool, bus: Producer,
                stop: threading.Event) -> str:
        requests.start(bus)
        try:
            camera.picam2.start()
        except Exception as exc:
            raise FramebusError(f"starting the camera failed: {exc}") from None
        job: Any = None
        last_frame = time.monotonic()
        starved = False
        try:
            while not stop.is_set():
                if job is None:
                    job = camera.picam2.capture_request(wait=False)
                try:
                    request = camera.picam2.wait(job, timeout=_STARVED_WAIT if starved
                                                 else _IDLE_WAIT)
                except TimeoutError:
                    if time.monotonic() - last_frame > self.frame_timeout:
                        log.warning("%s: no frame for %.1f s: the camera is gone or stalled",
                                    self.name, self.frame_timeout)
                        return UNPLUGGED
                    starved = not requests.refill()
                    continue
                except CancelledError:
                    raise FramebusError("picamera2 cancelled the capture") from None
                except Exception as exc:
                    raise FramebusError(f"picamera2: {type(exc).__name__}: {exc}") from None
                job = None
                last_frame = time.monotonic()
                self._handle(camera, requests, request)
                starved = not requests.refill()
            return STOPPED
        finally:
            self._abandon(camera, job)

    def _handle(self, camera: Camera, requests: RequestPool, request: Any) -> None:
        """Publish one completed request (or give it straight back if it is
        not one of the stream's buffers' frames)."""
        self.stats.completed += 1
        try:
            framebuffer = request.request.buffers[camera.stream]
            sequence = int(framebuffer.metadata.sequence)
            index = requests.index_of(framebuffer)
            timestamp = request.get_metadata().get("SensorTimestamp")
        except BaseException:
            request.release()
            raise
        last = self.stats.last_sequence
        if last >= 0 and sequence > last + 1:
            self.stats.camera_drops += sequence - last - 1
        self.stats.last_sequence = sequence
        # libcamera documents SensorTimestamp as CLOCK_BOOTTIME (the same as
        # CLOCK_MONOTONIC until the machine suspends); picamera2 itself
        # compares it with time.monotonic_ns().
        requests.publish(request, index,
                         int(timestamp) if isinstance(timestamp, int) else time.monotonic_ns())

    def _abandon(self, camera: Camera, job: Any) -> None:
        """Drop a capture job still pending, then stop the camera (libcamera
        writes nothing more); a request the job already took is released.

        The job goes first: picamera2 runs ``stop()`` as a job of its event
        loop, behind any pending one, so a capture job that never completes
        (a camera that went away) would block ``stop()`` for ever.
        """
        if job is not None:
            try:
                camera.picam2.cancel_all_and_flush()
            except Exception as exc:
                log.debug("%s: cancel_all_and_flush: %s", self.name, exc)
        try:
            camera.picam2.stop()
        except Exception as exc:
            log.debug("%s: stop: %s", self.name, exc)
        if job is None:
            return
        try:
            late = camera.picam2.wait(job, timeout=0)
        except Exception:
            return  # cancelled, failed or never run: it holds no request
        late.release()

    def _release_camera(self) -> None:
        if self._requests is not None:
            self._requests.release_all()
            self._requests.close()
        if self._camera is not None:
            self._camera.close()
            self._camera = None
