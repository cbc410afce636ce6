"""``picamera2.request.CompletedRequest``: a completed libcamera request with
a reference count; the last ``release()`` gives it back to the camera (if
the camera is still running the same session: picamera2 does not requeue
the requests of a stopped camera)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .config import record
from .libcamera_types import Request

if TYPE_CHECKING:
    from .picamera2 import Picamera2

__all__ = ["CompletedRequest"]


class CompletedRequest:
    def __init__(self, request: Request, picam2: Picamera2) -> None:
        self.request: Request | None = request
        self.ref_count = 1
        self.picam2 = picam2
        self.stop_count = picam2.stop_count
        self.stream_map = dict(picam2.stream_map)

    def acquire(self) -> None:
        with self.picam2.request_lock:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1

    def release(self) -> None:
        with self.picam2.request_lock:
            self.ref_count -= 1
            if self.ref_count < 0:
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")
            if self.ref_count > 0:
                return
            request, self.request = self.request, None
        assert request is not None
        picam2 = self.picam2
        fb = next(iter(request.buffers.values()))
        if picam2.camera is not None and self.stop_count == picam2.stop_count and picam2.started:
            picam2.requeued += 1
            record("requeue", sequence=fb.metadata.sequence, t=time.monotonic_ns())
            picam2.camera.requeue(request)
        else:
            record("release_stopped", sequence=fb.metadata.sequence)

    def get_metadata(self) -> dict[str, Any]:
        """The request's metadata; the source reads ``SensorTimestamp``."""
        if self.request is None:
            raise RuntimeError("the request was released")
        fb = next(iter(self.request.buffers.values()))
        return {"SensorTimestamp": fb.metadata.timestamp, "FrameDuration": 0}
