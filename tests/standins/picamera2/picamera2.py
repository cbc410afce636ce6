"""``picamera2.Picamera2``: the calls framebus's libcamera source makes.

The event loop picamera2 runs (``process_requests``) is folded into the
camera thread: each completed request either fails (released at once, as
picamera2 drops non-Success frames) or joins ``completed_requests``; pending
``capture_request`` jobs take the oldest; the list keeps at most one
(``queue=True``) and releases older ones back to the camera.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .camera import FORMATS, SimCamera
from .config import record, settings
from .job import Job
from .libcamera_types import FrameStatus, Request, Stream
from .request import CompletedRequest

__all__ = ["Picamera2"]

_state_lock = threading.Lock()
_open_cameras: set[int] = set()
_unplugged_at: float | None = None  # monotonic time the camera went away (once)


def _present() -> bool:
    if _unplugged_at is None:
        return True
    back = settings.return_after_ms
    return back >= 0 and time.monotonic() - _unplugged_at >= back / 1000


def _unplug() -> None:
    global _unplugged_at
    with _state_lock:
        if _unplugged_at is None:
            _unplugged_at = time.monotonic()
            record("unplugged")


class _Allocator:
    """picamera2's allocator, as far as ``buffers(stream)`` goes."""

    def __init__(self) -> None:
        self.frame_buffers: dict[Stream, list[Any]] = {}

    def buffers(self, stream: Stream) -> list[Any]:
        return self.frame_buffers[stream]


class Picamera2:
    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        if not _present():
            return []
        return [{"Model": "framebus-standin", "Location": 2, "Rotation": 0,
                 "Id": f"/base/standin@{n}", "Num": n} for n in range(settings.cameras)]

    def __init__(self, camera_num: int = 0) -> None:
        number = self.global_camera_info()[camera_num]["Num"]  # IndexError, as picamera2's
        with _state_lock:
            if number in _open_cameras:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            _open_cameras.add(number)
        self.camera_idx = number
        self.lock = threading.RLock()  # completed_requests and the job list
        self.request_lock = threading.Lock()  # reference counts
        self.camera: SimCamera | None = None
        self.camera_config: dict[str, Any] = {}
        self.stream_map: dict[str, Stream] = {}
        self.allocator = _Allocator()
        self.started = False
        self.stop_count = 0
        self.completed_requests: list[CompletedRequest] = []
        self._job_list: list[Job] = []
        self._max_queue_len = 1
        self._failure: Exception | None = None
        self.requeued = 0
        self.is_open = True

    # ----------------------------------------------------- configuration
    def create_video_configuration(self, main: dict[str, Any] | None = None,
                                   buffer_count: int = 6, controls: dict[str, Any] | None = None,
                                   queue: bool = True) -> dict[str, Any]:
        stream = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}
        stream.update(main or {})
        return {"use_case": "video", "buffer_count": buffer_count, "queue": queue,
                "main": stream, "controls": dict(controls or {})}

    def configure(self, camera_config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        main = dict(camera_config["main"])
        fmt, (width, height) = main["format"], main["size"]
        if fmt not in FORMATS:
            raise RuntimeError(f"Invalid format {fmt!r}")  # libcamera would pick another
        if self.camera is not None:
            self.camera.close()
        stream = Stream("main")
        self.camera = SimCamera(fmt, width, height, camera_config["buffer_count"], stream)
        main.update(stride=self.camera.layout.stride, framesize=self.camera.layout.framesize)
        self.camera_config = {**camera_config, "main": main}
        self.stream_map = {"main": stream}
        self.allocator.frame_buffers = {stream: list(self.camera.buffers)}
        self._max_queue_len = 1 if camera_config["queue"] and camera_config["buffer_count"] > 1 \
            else 0

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        return dict(self.camera_config[name])

    # ----------------------------------------------------------- running
    def start(self) -> None:
        if self.camera is None:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        fps = float(self.camera_config["controls"].get("FrameRate") or settings.fps)
        self.started = True
        self.camera.start(fps, self._completed, lambda: not _present())
        record("started", buffers=len(self.camera.buffers), fps=fps)

    def _completed(self, request: Request) -> None:
        """process_requests, for one request."""
        camera = self.camera
        assert camera is not None
        if settings.disconnect_after and camera.completed >= settings.disconnect_after:
            _unplug()
        req = CompletedRequest(request, self)
        fb = request.buffers[self.stream_map["main"]]
        if fb.metadata.status != FrameStatus.Success:
            req.release()
            return
        if settings.error_after and camera.completed > settings.error_after:
            self._failure = RuntimeError("standin: the camera failed (injected error)")
        with self.lock:
            req.acquire()
            self.completed_requests.append(req)
            self._run_jobs()
            req.release()
            while len(self.completed_requests) > self._max_queue_len:
                self.completed_requests.pop(0).release()

    def _run_jobs(self) -> None:
        while self._job_list:
            job = self._job_list[0]
            if self._failure is not None:
                job.fail(self._failure)
            elif not job.execute():
                return
            self._job_list.pop(0)
            job.signal()

    def _capture_request_(self) -> tuple[bool, Any]:
        if not self.completed_requests:
            return (False, None)
        return (True, self.completed_requests.pop(0))

    def capture_request(self, wait: Any = None) -> Any:
        with self.lock:
            job = Job([self._capture_request_])
            self._job_list.append(job)
            if self._failure is not None or self.completed_requests:
                self._run_jobs()
        if wait is False:
            return job
        return job.get_result(timeout=None if wait in (None, True) else wait)

    def wait(self, job: Job, timeout: float | None = None) -> Any:
        return job.get_result(timeout=timeout)

    def cancel_all_and_flush(self) -> None:
        with self.lock:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    def stop(self) -> None:
        """As picamera2 with its event loop running: stop runs as a job of
        the loop, after the jobs already pending (a capture job that never
        completes blocks it; this stand-in gives up after 5 s, logs
        ``stop_blocked`` and raises)."""
        if not self.started:
            return
        camera = self.camera
        assert camera is not None
        with self.lock:
            ahead = list(self._job_list)
        for job in ahead:
            try:
                job.get_result(timeout=5)
            except TimeoutError:
                record("stop_blocked")
                raise RuntimeError("standin: stop() blocked behind a capture job that never "
                                   "completes (picamera2 would wait for ever)") from None
            except BaseException:
                pass  # failed or cancelled: done
        self.stop_count += 1
        camera.stop()
        self.started = False
        with self.lock:
            unseen, self.completed_requests = self.completed_requests, []
        for req in unseen:
            req.release()
        record("stopped", completed=camera.completed, underruns=camera.underruns,
               requeued=self.requeued, error_frames=camera.error_frames,
               min_queued=camera.min_queued, buffers=len(camera.buffers))

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        if self.camera is not None:
            self.camera.close()
            self.camera = None
        self.is_open = False
        with _state_lock:
            _open_cameras.discard(self.camera_idx)
        record("closed")
