"""The simulated camera: memfd buffers laid out as libcamera lays them out,
and a thread that fills the oldest queued request at the frame rate.

Layouts (``stride`` rounded up to ``stride_align``, as libcamera's Pi
pipeline does): YUV420 is Y (``stride`` x height), then U and V (each
``stride/2`` x height/2); RGB888/BGR888 3 and XRGB8888/XBGR8888 4 bytes a
pixel. ``framesize`` is the planes plus ``frame_pad``. Each buffer is a memfd
of its own (as a dma-heap buffer is), named ``v4l2sim-dmabuf picamera2-N`` so
that a consumer process with the V4L2 simulator preloaded (tests/v4l2)
answers ``DMA_BUF_IOCTL_SYNC`` on it as the kernel does on a DMA-BUF.

Every frame is framebus's test pattern, computed here independently: byte
column x of row y of every plane is ``(x + 2*y + 4*sequence) % 256``, the
first 8 bytes of the frame hold the sequence number (little-endian), and
every byte past a row's pixels (stride padding) and past the planes
(``frame_pad``) is 0xAA. A request handed back to the camera is overwritten
with 0xEE at once (a test aid: a consumer still reading it sees the damage).
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import record, settings
from .libcamera_types import FrameBuffer, FrameStatus, Plane, Request, Stream

__all__ = ["FORMATS", "Layout", "SimCamera", "layout_of"]

#: picamera2 format name -> bytes a pixel (YUV420: of luma)
FORMATS = {"YUV420": 1, "RGB888": 3, "BGR888": 3, "XRGB8888": 4, "XBGR8888": 4}
PAGE = mmap.PAGESIZE
PAD, POISON = 0xAA, 0xEE


@dataclass(frozen=True)
class Layout:
    stride: int
    framesize: int
    planes: tuple[tuple[int, int, int, int, int], ...]  # (offset, rows, stride, row bytes, length)


def layout_of(fmt: str, width: int, height: int) -> Layout:
    bpp = FORMATS[fmt]
    align = settings.stride_align
    stride = -(-width * bpp // align) * align
    planes = [(0, height, stride, width * bpp, stride * height)]
    if fmt == "YUV420":
        chroma = (stride // 2) * (height // 2)
        planes.append((stride * height, height // 2, stride // 2, width // 2, chroma))
        planes.append((stride * height + chroma, height // 2, stride // 2, width // 2, chroma))
    used = planes[-1][0] + planes[-1][4]
    return Layout(stride, used + settings.frame_pad, tuple(planes))


def _draw(memory: mmap.mmap, layout: Layout, sequence: int) -> None:
    frame = np.frombuffer(memory, np.uint8, layout.framesize)
    frame[...] = PAD
    for offset, rows, stride, row_bytes, _ in layout.planes:
        region = frame[offset:offset + rows * stride].reshape(rows, stride)
        x, y = np.arange(row_bytes)[None, :], np.arange(rows)[:, None]
        region[:, :row_bytes] = (x + 2 * y + 4 * sequence) % 256
    frame[:8] = np.frombuffer(sequence.to_bytes(8, "little"), np.uint8)


class SimCamera:
    """Buffers, the queue of requests, and the thread completing them.

    `complete` is called (from the camera thread, without locks held) with
    each filled request; `lock` guards `queue`.
    """

    def __init__(self, fmt: str, width: int, height: int, count: int, stream: Stream) -> None:
        self.layout = layout_of(fmt, width, height)
        self.stream = stream
        self.fds: list[int] = []
        self.maps: list[mmap.mmap] = []
        self.buffers: list[FrameBuffer] = []
        size = -(-self.layout.framesize // PAGE) * PAGE  # a dma-heap buffer is whole pages
        try:
            for n in range(count):
                fd = os.memfd_create(f"v4l2sim-dmabuf picamera2-{n}", os.MFD_CLOEXEC)
                self.fds.append(fd)
                os.ftruncate(fd, size)
                self.maps.append(mmap.mmap(fd, size, mmap.MAP_SHARED))
                self.buffers.append(FrameBuffer(self._planes(fd)))
        except BaseException:
            self.close()
            raise
        self.requests = [Request({stream: fb}, n) for n, fb in enumerate(self.buffers)]
        self.queue: list[Request] = []
        self.lock = threading.RLock()
        self.sequence = 0
        self.completed = 0
        self.underruns = 0
        self.error_frames = 0
        self.min_queued = count
        self.dead = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _planes(self, fd: int) -> list[Plane]:
        if settings.planes == 3 and len(self.layout.planes) == 3:
            return [Plane(fd, offset, length) for offset, _, _, _, length in self.layout.planes]
        return [Plane(fd, 0, self.layout.framesize)]

    def start(self, fps: float, complete: Callable[[Request], None],
              gone: Callable[[], bool]) -> None:
        with self.lock:
            self.queue = list(self.requests)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(fps, complete, gone),
                                        name="standin-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        with self.lock:
            self.queue = []

    def requeue(self, request: Request) -> None:
        """A released request: poisoned, then queued for the next tick."""
        memory = self.maps[request.index]
        np.frombuffer(memory, np.uint8, self.layout.framesize)[...] = POISON
        with self.lock:
            self.queue.append(request)

    def _run(self, fps: float, complete: Callable[[Request], None], gone: Callable[[], bool]) -> None:
        period = 1.0 / fps
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            now = time.monotonic()
            next_at = max(next_at + period, now - period)  # late: a new schedule, no burst
            stamp = time.monotonic_ns()
            sequence = self.sequence
            self.sequence += 1
            if self.dead or gone():
                self.dead = True  # a camera that went away never completes a request again
                continue  # (libcamera cancels its requests; picamera2 drops cancelled ones)
            with self.lock:
                queued = len(self.queue)
                if self.completed:
                    self.min_queued = min(self.min_queued, queued)
                if not queued:
                    self.underruns += 1
                    record("underrun", sequence=sequence)
                    continue
                request = self.queue.pop(0)
            fb = request.buffers[self.stream]
            _draw(self.maps[request.index], self.layout, sequence)
            error = bool(settings.error_every) and sequence % settings.error_every == 0 \
                and sequence > 0
            self.error_frames += error
            fb.metadata.sequence = sequence
            fb.metadata.timestamp = stamp
            fb.metadata.status = FrameStatus.Error if error else FrameStatus.Success
            self.completed += 1
            complete(request)

    def close(self) -> None:
        self.stop()
        for m in self.maps:
            m.close()
        for fd in self.fds:
            os.close(fd)
        self.maps, self.fds = [], []
