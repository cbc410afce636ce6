"""The loop every consumer program shares: attach, take frames, report, stop cleanly."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType
from typing import Callable, cast

from framebus import paths
from framebus.report import add_producer_uid_argument
from framebus import (Consumer, Frame, FramebusError, NoProducer, ProducerGone,
                      ProducerRefusedConnection, Timeout)

from .stats import FrameStats, format_report

Process = Callable[[Frame], dict[str, object] | None]
_REMOTE_LOOKUP = 3.0  # seconds a remote consumer looks for its bridge by default


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every consumer program takes."""
    parser.add_argument("--socket", help=paths.socket_help())
    parser.add_argument("--name", default="", help="name shown by 'framebus status'")
    parser.add_argument("--frames", type=int, default=0, help="stop after N frames (0: run on)")
    parser.add_argument("--policy", choices=("latest", "queue"), default="latest")
    parser.add_argument("--max-held", type=int, default=2)
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for the producer to appear (default: fail at once)")
    parser.add_argument("--json", action="store_true", help="report as JSON lines on stdout")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
    parser.add_argument("--reconnect", action="store_true",
                        help="when the producer goes away, wait for it and carry on")
    parser.add_argument("--channel", choices=("zmq", "socket"), default="zmq",
                        help="where frame messages travel: zmq (default) or the control "
                             "socket (lower latency and CPU)")
    parser.add_argument("--spin", type=float, default=0.0,
                        help="seconds to busy-poll before sleeping (default 0; costs CPU)")
    add_producer_uid_argument(parser)


def attach(args: argparse.Namespace, name: str) -> Consumer:
    """A Consumer for `args`, retrying for up to --wait seconds while no producer is there."""
    if getattr(args, "zenoh", None):
        return _attach_remote(args, name)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            return Consumer(args.socket or paths.default_socket(), name=name,
                            policy=args.policy, max_held=args.max_held, channel=args.channel,
                            spin=args.spin, reconnect=args.reconnect,
                            producer_uid=args.producer_uid)
        except (NoProducer, ProducerRefusedConnection):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _attach_remote(args: argparse.Namespace, name: str) -> Consumer:
    """A RemoteConsumer (`--zenoh KEY`): the same API as a Consumer, duck-typed."""
    from framebus.remote import RemoteConsumer
    return cast(Consumer, RemoteConsumer(
        args.zenoh, connect=args.connect, name=name, max_held=args.max_held,
        timeout=max(args.wait, _REMOTE_LOOKUP), reconnect=args.reconnect))


def run(args: argparse.Namespace, name: str, process: Process) -> int:
    """Feed frames to `process` until --frames, a signal, or the producer ends.

    `process` gets each frame while it is held and may return extra figures
    for the report. Exit status: 0 on a clean end, 1 if the producer vanished.
    """
    stopping = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    stats = FrameStats()
    extra: dict[str, object] = {}
    emit = _emitter(args.json)
    status = 0
    try:
        cam = attach(args, args.name or name)
    except FramebusError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    with cam:
        next_report = time.monotonic() + args.interval
        while not stopping and not (args.frames and stats.frames >= args.frames):
            try:
                with cam.get(timeout=0.2) as frame:
                    stats.record(frame)
                    extra = process(frame) or extra
            except Timeout:
                pass
            except ProducerGone as exc:
                print(f"{cam.name}: producer gone: {exc.reason}", file=sys.stderr)
                status = 0 if exc.clean else 1
                break
            if time.monotonic() >= next_report:
                emit(stats.report(cam, **extra))
                next_report += args.interval
        emit(stats.report(cam, final=True, **extra))
    return status


def _emitter(as_json: bool) -> Callable[[dict[str, object]], None]:
    def emit(report: dict[str, object]) -> None:
        print(json.dumps(report) if as_json else format_report(report), flush=True)
    return emit
