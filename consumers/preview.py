"""`framebus preview`: the live picture and figures in a browser (MJPEG over HTTP).

One bus consumer (policy latest) in one thread turns the newest frame into a
JPEG once; every viewer of ``/stream.mjpg`` is a coroutine that sends each
new JPEG it has not sent yet, so N viewers cost one consumer and one encode per
frame, and a slow viewer skips frames instead of queueing them. A viewer that
goes away ends its own coroutine and nothing else. Frames are encoded only
while someone watches (a stream or a snapshot request).

Pages: ``/`` (picture and figures), ``/stream.mjpg``, ``/snapshot.jpg`` (the
next frame) and ``/status.json`` (this server's figures and the producer's
`framebus status` report). Needs ``pip install 'framebus[preview]'``
(aiohttp, simplejpeg).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections import deque
from importlib import resources
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from framebus import (Consumer, Frame, FrameFormat, FramebusError, NoProducer, ProducerGone,
                      ProducerRefusedConnection, Timeout, paths)
from framebus.commands import Command
from framebus.report import query_status

if TYPE_CHECKING:
    from aiohttp import web

INSTALL_HINT = "pip install 'framebus[preview]'"
BOUNDARY = "framebus-frame"
STATUS_MAX_AGE = 0.5  # seconds a producer report is reused for


def jpeg_encoder(fmt: FrameFormat, quality: int = 80) -> Callable[[Frame], bytes]:
    """A function that makes a JPEG of a frame of `fmt`, reading the shared
    view: YUV formats go to libjpeg as planes (NV12's and YUYV's chroma
    de-interleaved first), RGB3/BGR3/GREY as they are, MJPG passes through."""
    try:
        import simplejpeg
    except ImportError:
        raise FramebusError(f"the preview needs simplejpeg: {INSTALL_HINT}") from None
    kind, h, w = fmt.pixel_format, fmt.height, fmt.width
    if kind == "MJPG":
        return lambda frame: frame.array.tobytes()
    if kind in ("RGB3", "BGR3", "XR24", "XB24"):  # XR24 is B, G, R, X in memory; XB24 R, G, B, X
        space = {"RGB3": "RGB", "BGR3": "BGR", "XR24": "BGRX", "XB24": "RGBX"}[kind]
        return lambda frame: bytes(simplejpeg.encode_jpeg(
            frame.planes[0], quality, space, colorsubsampling="420", fastdct=True))
    if kind == "GREY":
        return lambda frame: bytes(simplejpeg.encode_jpeg_yuv_planes(
            frame.planes[0], None, None, quality, fastdct=True))
    if kind == "YU12":
        return lambda frame: bytes(simplejpeg.encode_jpeg_yuv_planes(
            *frame.planes, quality, fastdct=True))
    if kind == "NV12":
        u, v = np.empty((h // 2, w // 2), np.uint8), np.empty((h // 2, w // 2), np.uint8)

        def nv12(frame: Frame) -> bytes:
            y, uv = frame.planes[:2]
            np.copyto(u, uv[:, :, 0])
            np.copyto(v, uv[:, :, 1])
            return bytes(simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality, fastdct=True))
        return nv12
    if kind in ("YUYV", "UYVY"):
        luma = 0 if kind == "YUYV" else 1
        y = np.empty((h, w), np.uint8)
        u, v = np.empty((h, w // 2), np.uint8), np.empty((h, w // 2), np.uint8)

        def packed(frame: Frame) -> bytes:  # 4:2:2 planes, as libjpeg takes them
            pixels = frame.planes[0]
            np.copyto(y, pixels[:, :, luma])
            np.copyto(u, pixels[:, 0::2, 1 - luma])
            np.copyto(v, pixels[:, 1::2, 1 - luma])
            return bytes(simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality, fastdct=True))
        return packed
    raise FramebusError(f"the preview cannot show {kind} frames")


@dataclass(frozen=True)
class Picture:
    """One encoded frame, shared by every viewer."""

    jpeg: bytes
    seq: int
    timestamp_ns: int  # the frame's CLOCK_MONOTONIC publish time
    ready_ns: int  # when its JPEG was ready


class Broadcast:
    """The newest picture, and a wake-up for the viewers waiting for the next.
    Lives in the event loop; the source thread hands pictures in with
    `loop.call_soon_threadsafe(broadcast.publish, picture)`."""

    def __init__(self) -> None:
        self.latest: Picture | None = None
        self.viewers = 0
        self.waiting = 0  # snapshot requests in flight
        self.sent = 0  # parts written to viewers
        self._new = asyncio.Event()
        self.closed = False

    def publish(self, picture: Picture) -> None:
        self.latest = picture
        new, self._new = self._new, asyncio.Event()
        new.set()

    def close(self) -> None:
        self.closed = True
        self._new.set()

    async def next(self, after: int, timeout: float | None = None) -> Picture | None:
        """The newest picture with a seq above `after`; None once closed (or on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.closed:
            latest = self.latest
            if latest is not None and latest.seq > after:
                return latest
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except asyncio.TimeoutError:
                return None
        return None


class FrameSource(threading.Thread):
    """The one bus consumer: takes every newest frame, and encodes it once while anyone watches."""

    def __init__(self, cam: Consumer, quality: int, loop: asyncio.AbstractEventLoop,
                 broadcast: Broadcast) -> None:
        super().__init__(name="preview-source", daemon=True)
        self.cam, self.quality, self.loop, self.broadcast = cam, quality, loop, broadcast
        self.format = cam.format  # a producer that comes back may bring another one
        self.encode = jpeg_encoder(cam.format, quality)
        self.stopping = threading.Event()
        self.encoded = 0
        self.torn = 0  # frames overwritten while being encoded (lease revoked)
        self.error = ""
        self._window: deque[tuple[int, int, int]] = deque(maxlen=300)  # ready, latency, encode

    def wanted(self) -> bool:
        return self.broadcast.viewers > 0 or self.broadcast.waiting > 0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    frame = self.cam.get(timeout=0.2)
                except Timeout:
                    continue
                with frame:  # taken even when nobody watches: drop counts stay true
                    if not self.wanted():
                        continue
                    if self.cam.format != self.format:  # a new producer run, a new format
                        self.format = self.cam.format
                        self.encode = jpeg_encoder(self.format, self.quality)
                    started = time.monotonic_ns()
                    jpeg = self.encode(frame)
                    intact = frame.valid()
                    seq, stamp = frame.seq, frame.timestamp_ns
                if not intact:
                    self.torn += 1
                    continue
                ready = time.monotonic_ns()
                self._window.append((ready, ready - stamp, ready - started))
                self.encoded += 1
                self.loop.call_soon_threadsafe(self.broadcast.publish,
                                               Picture(jpeg, seq, stamp, ready))
        except (ProducerGone, FramebusError) as exc:
            self.error = str(exc)
        finally:
            self.cam.close()

    def figures(self) -> dict[str, Any]:
        now = time.monotonic_ns()
        recent = [w for w in list(self._window) if now - w[0] <= 2_000_000_000]
        fps = 0.0
        if len(recent) >= 2:
            fps = (len(recent) - 1) / max((recent[-1][0] - recent[0][0]) / 1e9, 1e-9)
        latency = [w[1] / 1e6 for w in recent]
        return {"fps": round(fps, 2), "latency_ms_p50": _percentile(latency, 50),
                "latency_ms_p99": _percentile(latency, 99),
                "encode_ms_p50": _percentile([w[2] / 1e6 for w in recent], 50),
                "encoded": self.encoded, "dropped": self.cam.dropped, "torn": self.torn,
                "error": self.error}


def _percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, rounded; None (JSON null) when there is nothing to measure."""
    return round(float(np.percentile(values, q)), 2) if values else None


class Preview:
    """The HTTP side: the page, the stream, snapshots and status."""

    def __init__(self, socket_path: str, cam: Consumer, quality: int) -> None:
        self.socket_path = socket_path
        self.broadcast = Broadcast()
        self.source = FrameSource(cam, quality, asyncio.get_running_loop(), self.broadcast)
        self._status: tuple[float, dict[str, Any] | None, str] = (0.0, None, "")
        self._status_lock = asyncio.Lock()

    def app(self) -> web.Application:
        from aiohttp import web
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/stream.mjpg", self.stream)
        app.router.add_get("/snapshot.jpg", self.snapshot)
        app.router.add_get("/status.json", self.status)
        return app

    async def page(self, request: web.Request) -> web.Response:
        from aiohttp import web
        latest = self.broadcast.latest
        fmt = self.source.format
        page = _page().replace("$W", str(fmt.width)).replace("$H", str(fmt.height)).replace(
            "$FORMAT", fmt.pixel_format).replace("$SEQ", str(latest.seq if latest else 0))
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-store"})
        self.broadcast.viewers += 1
        try:
            await response.prepare(request)
            sent = 0
            while (picture := await self.broadcast.next(sent)) is not None:
                await response.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(picture.jpeg)}\r\nX-Frame-Seq: {picture.seq}\r\n"
                    f"X-Timestamp-Ns: {picture.timestamp_ns}\r\n\r\n".encode()
                    + picture.jpeg + b"\r\n")
                sent = picture.seq
                self.broadcast.sent += 1
        except (ConnectionError, RuntimeError):
            pass  # the viewer went away (RuntimeError: aiohttp's closed-transport write)
        finally:
            self.broadcast.viewers -= 1
        return response

    async def snapshot(self, request: web.Request) -> web.Response:
        from aiohttp import web
        latest = self.broadcast.latest
        self.broadcast.waiting += 1
        try:
            picture = await self.broadcast.next(latest.seq if latest else 0, timeout=5.0)
        finally:
            self.broadcast.waiting -= 1
        if picture is None:
            raise web.HTTPServiceUnavailable(text="no frame from the producer within 5 s\n")
        return web.Response(body=picture.jpeg, content_type="image/jpeg",
                            headers={"X-Frame-Seq": str(picture.seq), "Cache-Control": "no-store",
                                     "X-Timestamp-Ns": str(picture.timestamp_ns)})

    async def status(self, request: web.Request) -> web.Response:
        from aiohttp import web
        producer, problem = await self._producer_status()
        latest = self.broadcast.latest
        body = {"preview": {**self.source.figures(), "seq": latest.seq if latest else 0,
                            "viewers": self.broadcast.viewers, "sent": self.broadcast.sent,
                            "format": self.source.format.to_wire()},
                "producer": producer, "producer_error": problem}
        return web.Response(text=json.dumps(body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def _producer_status(self) -> tuple[dict[str, Any] | None, str]:
        """`framebus status`'s report, asked at most every STATUS_MAX_AGE s."""
        async with self._status_lock:
            asked, report, problem = self._status
            if time.monotonic() - asked > STATUS_MAX_AGE:
                try:
                    report, problem = await asyncio.to_thread(
                        query_status, self.socket_path, 1.0), ""
                except FramebusError as exc:
                    report, problem = None, str(exc)
                self._status = (time.monotonic(), report, problem)
            return report, problem


async def serve(args: argparse.Namespace, announce: Callable[[str], None]) -> int:
    """Run the preview until SIGINT/SIGTERM; `announce` gets the page's address."""
    try:
        from aiohttp import web
    except ImportError:
        raise FramebusError(f"the preview needs aiohttp: {INSTALL_HINT}") from None
    path = args.socket or paths.default_socket()
    cam = await asyncio.to_thread(_attach, path, args.name, args.wait)
    preview = Preview(path, cam, args.quality)
    runner = web.AppRunner(preview.app(), access_log=None, shutdown_timeout=1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
        site = web.TCPSite(runner, args.bind, args.port)
        try:
            await site.start()
        except OSError as exc:
            raise FramebusError(f"cannot listen on {args.bind}:{args.port}: {exc.strerror}") \
                from None
        preview.source.start()
        host, port = runner.addresses[0][:2]
        announce(f"http://{'[%s]' % host if ':' in host else host}:{port}/")
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        preview.broadcast.close()
        await runner.cleanup()
        preview.source.stopping.set()
        if preview.source.is_alive():
            await asyncio.to_thread(preview.source.join, 5.0)
        else:
            cam.close()
    return 0


def _page() -> str:
    """The page (consumers/preview.html): the picture, and figures polled from /status.json."""
    return resources.files(__package__).joinpath("preview.html").read_text(encoding="utf-8")


def _attach(path: str, name: str, wait: float) -> Consumer:
    deadline = time.monotonic() + wait
    while True:
        try:
            return Consumer(path, name=name, max_held=1, reconnect=True)
        except (NoProducer, ProducerRefusedConnection):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help=paths.socket_help())
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0: any)")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality 1-100 (default 80)")
    parser.add_argument("--name", default="preview", help="name shown by 'framebus status'")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for the producer to appear (default: fail at once)")


def run_preview(args: argparse.Namespace) -> int:
    """`framebus preview`."""
    if not 1 <= args.quality <= 100 or not 0 <= args.port <= 65535:
        raise FramebusError("--quality must be 1..100 and --port 0..65535")
    if args.bind not in ("127.0.0.1", "::1", "localhost"):
        print(f"preview: listening on {args.bind}: anyone who can reach it sees the camera",
              file=sys.stderr)

    def announce(url: str) -> None:
        print(f"preview: {url}", flush=True)
    return asyncio.run(serve(args, announce))


COMMAND = Command(
    "preview", "serve the live picture and figures to a browser (needs framebus[preview])",
    run_preview, _add_arguments,
    "Serve a page with the live picture (MJPEG) and live figures (fps, latency, consumers, "
    "drops) at http://127.0.0.1:8080/, plus /stream.mjpg, /snapshot.jpg and /status.json. "
    "Any number of viewers cost one bus consumer and one JPEG encode per frame. Binds to "
    "127.0.0.1 unless --bind says otherwise. Needs: pip install 'framebus[preview]'.")
