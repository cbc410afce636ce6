"""`framebus produce`: run a producer in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from framebus import FramebusError, FrameFormat, Producer

from .source import Source
from .synthetic import SyntheticSource

log = logging.getLogger("framebus.daemon")


def open_source(spec: str, fmt: FrameFormat, fps: float, args: argparse.Namespace) -> Source:
    """The source named by `spec`: ``synthetic`` or ``v4l2:/dev/videoN``."""
    if spec == "synthetic":
        return SyntheticSource(fmt, fps)
    if spec.startswith("v4l2:"):
        from .v4l2.source import V4L2Source  # imported only when asked for
        return V4L2Source.open(spec[len("v4l2:"):], fmt, fps, args)
    raise FramebusError(f"unknown source {spec!r}: use 'synthetic' or 'v4l2:/dev/videoN'")


def run(args: argparse.Namespace) -> int:
    """Serve frames from the chosen source until a signal arrives."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        fmt = FrameFormat(args.width, args.height, args.format)
        source = open_source(args.source, fmt, args.fps, args)
        try:
            with Producer(args.socket, source.format, args.buffers, pool=source.pool(),
                          reserve=source.reserve, lease_timeout=args.lease_timeout,
                          mode=int(args.mode, 8), group=args.group,
                          allow_uids=args.allow_uid, allow_gids=args.allow_gid,
                          max_consumers=args.max_consumers) as bus:
                log.info("serving %s %dx%d at %s on %s", source.format.pixel_format,
                         source.format.width, source.format.height,
                         f"{args.fps:g} fps" if args.fps else "full speed", args.socket)
                source.run(bus, stop)
                stats = bus.stats()
        finally:
            source.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("published %d frames, %d leases revoked, %d reclaimed",
             stats["published"], stats["revoked"], stats["reclaimed"])
    return 0
