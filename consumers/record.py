"""`framebus record`: H.264 into MP4 or MKV from the bus (PyAV; `framebus[record]`).

Attaches one `queue` consumer (every frame, in order), hands each frame to a
`framebus.recorder.Recorder` and releases it once the encoder has read it.
Prints progress on stderr once a second; SIGINT or SIGTERM stops it with the
file finalized; with --pre-seconds, SIGUSR1 triggers the write.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType
from typing import Any

import psutil

from framebus import Consumer, FramebusError, NoProducer, ProducerGone, ProducerRefusedConnection
from framebus import Timeout, paths
from framebus.commands import Command
from framebus.recorder import Recorder, import_av
from framebus.report import query_status

MB = 1024 * 1024


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help=paths.socket_help())
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output file, .mp4 or .mkv (segments: FILE-0000.mp4, ...)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop after this many seconds of frames (after the trigger with "
                             "--pre-seconds); 0: until Ctrl-C / SIGTERM")
    parser.add_argument("--segment", type=float, default=0.0, metavar="S",
                        help="start a new file every S seconds")
    parser.add_argument("--pre-seconds", type=float, default=0.0, metavar="N",
                        help="keep the last N seconds in memory and write nothing until SIGUSR1 "
                             "(kill -USR1 PID); then write them and what follows")
    parser.add_argument("--fps-hint", type=float, default=0.0, metavar="FPS",
                        help="expected frame rate for rate control and the keyframe interval "
                             "(default: the producer's measured rate, else 30); timestamps "
                             "always come from the bus")
    parser.add_argument("--codec", default="h264",
                        help="FFmpeg H.264 encoder (default h264: FFmpeg's own choice)")
    parser.add_argument("--preset", default="", help="encoder preset (libx264 default: ultrafast; veryfast makes much smaller "
                             "files for about 2.5 times the CPU)")
    parser.add_argument("--crf", type=int, help="constant quality, 0-51 (libx264 default 23)")
    parser.add_argument("--pix-fmt", help="encoder pixel format (default: the frame's when the "
                                          "encoder takes it, else yuv420p)")
    parser.add_argument("--depth", type=int, default=4,
                        help="frames the producer may queue for the recorder (default 4)")
    parser.add_argument("--name", default="record", help="name shown by 'framebus status'")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for the producer to appear (default: fail at once)")
    parser.add_argument("--json", action="store_true",
                        help="print the final summary as one JSON object on stdout")


def _attach(args: argparse.Namespace, path: str) -> Consumer:
    deadline = time.monotonic() + args.wait
    while True:
        try:
            return Consumer(path, name=args.name, policy="queue", depth=args.depth, max_held=1)
        except (NoProducer, ProducerRefusedConnection):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _fps_hint(args: argparse.Namespace, path: str) -> float:
    if args.fps_hint:
        return float(args.fps_hint)
    try:
        measured = float(query_status(path, timeout=1.0).get("fps", 0))
    except FramebusError:
        measured = 0.0
    return round(measured) if measured >= 1 else 30.0


def run_record(args: argparse.Namespace) -> int:
    """`framebus record`."""
    import_av()  # the missing-extra error before anything else
    if args.seconds < 0 or args.segment < 0 or args.pre_seconds < 0:
        raise FramebusError("--seconds, --segment and --pre-seconds must be >= 0")
    path = args.socket or paths.default_socket()
    stopping: list[int] = []

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    options = {k: str(v) for k, v in (("preset", args.preset), ("crf", args.crf)) if v}
    with _attach(args, path) as cam:
        recorder = Recorder(args.out, cam.format, segment_seconds=args.segment,
                            pre_seconds=args.pre_seconds, fps_hint=_fps_hint(args, path),
                            codec=args.codec, pix_fmt=args.pix_fmt, options=options)
        previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda *_: recorder.trigger())
        progress = _Progress(args, recorder, cam)
        status = 0
        try:
            with recorder:
                status = _loop(args, cam, recorder, progress, stopping)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        summary = progress.summary()
    print(progress.line(summary, final=True), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(summary), flush=True)
    return status


def _loop(args: argparse.Namespace, cam: Consumer, recorder: Recorder, progress: _Progress,
          stopping: list[int]) -> int:
    limit_ns = int(args.seconds * 1e9)
    while not stopping:
        try:
            frame = cam.get(timeout=0.2)
        except Timeout:
            progress.tick()
            continue
        except ProducerGone as exc:
            print(f"record: producer gone: {exc.reason}", file=sys.stderr)
            return 0 if exc.clean else 1
        try:
            if limit_ns and recorder.recording and \
                    frame.timestamp_ns - recorder.triggered_at_ns >= limit_ns:
                break
            progress.last_seq = frame.seq
            recorder.write(frame)  # the encoder has read the shared view when this returns
        finally:
            frame.release()
        progress.tick()
    return 0


class _Progress:
    """The once-a-second line on stderr, and the final summary."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder, cam: Consumer) -> None:
        self.args, self.recorder, self.cam = args, recorder, cam
        self.process = psutil.Process()
        self.cpu0 = self._cpu()
        self.started = self.mark = time.monotonic()
        self.mark_frames = 0
        self.last_seq = 0
        self.next_at = self.started + 1.0

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at += 1.0
        fps = (self.recorder.frames_in - self.mark_frames) / max(now - self.mark, 1e-9)
        self.mark, self.mark_frames = now, self.recorder.frames_in
        print(self.line(self.summary(), fps=fps), file=sys.stderr, flush=True)

    def summary(self) -> dict[str, Any]:
        r = self.recorder
        elapsed = max(time.monotonic() - self.started, 1e-9)
        published = self.last_seq - r.first_seq + 1 if r.first_seq else 0
        return {
            "out": self.args.out, "format": f"{r.format.width}x{r.format.height} "
                                            f"{r.format.pixel_format}",
            "frames_published": published, "frames_received": r.frames_in,
            "frames_written": r.frames_written, "dropped": r.frames_missing,
            "recording": r.recording, "ring_seconds": round(r.ring_seconds, 3),
            "seconds": round(elapsed, 3), "cpu_cores": round((self._cpu() - self.cpu0) / elapsed, 3),
            "files": [{"path": f.path, "frames": f.frames, "first_seq": f.first_seq,
                       "last_seq": f.last_seq, "first_timestamp_ns": f.first_timestamp_ns,
                       "span_s": round(f.span_s, 4), "bytes": f.bytes} for f in r.files],
            "triggered_at_ns": r.triggered_at_ns,
        }

    def line(self, s: dict[str, Any], fps: float | None = None, final: bool = False) -> str:
        head = "record: done" if final else f"record: {s['seconds']:.0f} s"
        rate = "" if fps is None else f", {fps:.1f} fps"
        if not s["recording"] and not final:
            return (f"{head}: waiting for SIGUSR1 (kill -USR1 {self.process.pid}), ring holds "
                    f"{s['ring_seconds']:.1f} s{rate}, dropped {s['dropped']}, "
                    f"{s['cpu_cores']:.2f} cores")
        size = sum(f["bytes"] for f in s["files"]) / MB
        where = s["files"][-1]["path"] if s["files"] else s["out"]
        return (f"{head}: {s['frames_written']} frames written / {s['frames_published']} "
                f"published, dropped {s['dropped']}{rate}, {s['cpu_cores']:.2f} cores, "
                f"{len(s['files'])} file(s){f', {size:.1f} MB' if final else ''} -> {where}")


COMMAND = Command(
    "record", "record the stream to H.264 in MP4/MKV (needs framebus[record])", run_record,
    _add_arguments,
    "Encode every frame to H.264 into an MP4 or MKV file with PyAV, timestamps from the bus "
    "(a dropped frame is a gap in the file's time line). NV12, YU12 and GREY go to the encoder "
    "without a copy; other formats are converted once. --segment cuts files; --pre-seconds "
    "keeps a ring of the last N seconds that SIGUSR1 writes out. Needs: "
    "pip install 'framebus[record]'.")
