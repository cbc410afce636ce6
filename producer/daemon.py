"""`framebus produce`: run a producer in the foreground.

SIGINT/SIGTERM stop it: every consumer gets a goodbye with the reason, the
socket is removed and the exit status is 0. SIGHUP re-reads `--config` (and
sets its `[controls]` again, those `--control` does not override; what a
reload does with a file it cannot apply: docs/reload.md).
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import threading
from collections.abc import Mapping
from types import FrameType

from framebus import FramebusError, FrameFormat, Producer, paths

from . import config
from .source import RESTART, STOPPED, UNPLUGGED, Source
from .synthetic import SyntheticSource

log = logging.getLogger("framebus.daemon")


def open_source(spec: str, fmt: FrameFormat, fps: float, args: argparse.Namespace,
                controls: Mapping[str, int | str] | None = None) -> Source:
    """The source named by `spec`: ``synthetic``, ``v4l2:/dev/videoN`` or
    ``libcamera[:N]``.

    `controls` are the config file's; ``args.control`` (``--control``) the
    command line's, which win.
    """
    if spec == "synthetic":
        if controls or getattr(args, "control", None):
            raise FramebusError("--control / [controls]: the synthetic source has no controls "
                                "(they are a camera's: --source v4l2:/dev/videoN)")
        return SyntheticSource(fmt, fps)
    if spec.startswith("v4l2:"):
        from .v4l2.source import V4L2Source  # imported only when asked for
        return V4L2Source.open(spec[len("v4l2:"):], fmt, fps, args, controls)
    if spec == "libcamera" or spec.startswith("libcamera:"):
        from .libcamera.source import LibcameraSource  # picamera2 is imported only when asked for
        return LibcameraSource.open(spec, fmt, fps, args, controls)
    raise FramebusError(f"unknown source {spec!r}: use 'synthetic', 'v4l2:/dev/videoN' or "
                        f"'libcamera[:N]'")


def _raise_fd_limit(needed: int = 1024) -> None:
    """Take the whole hard RLIMIT_NOFILE: every consumer costs the daemon a
    control connection, and a connection flood must meet a refusal, never EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        log.warning("RLIMIT_NOFILE is %d: raise it (LimitNOFILE= in systemd) to serve many "
                    "consumers", hard)


def run(args: argparse.Namespace) -> int:
    """Serve frames from the chosen source until a signal arrives.

    Exit status 0 after SIGINT/SIGTERM, 1 if the source went away for good
    (so a service manager can restart the daemon).
    """
    if args.socket is None:
        args.socket = paths.default_socket()
        paths.make_runtime_dir()
    _raise_fd_limit()
    defaults = config.Settings(tuple(args.allow_uid), tuple(args.allow_gid),
                               args.lease_timeout, args.max_consumers)
    settings = config.load(args.config, defaults)
    stop, reload = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only set flags here: the main thread may hold the bus lock right now.
        (reload if signum == signal.SIGHUP else stop).set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        fmt = FrameFormat(args.width, args.height, args.format)
        source = open_source(args.source, fmt, args.fps, args, settings.controls)
        try:
            while True:  # a new bus each time the source comes back with new buffers
                outcome, settings = _serve(source, args, settings, defaults, stop, reload)
                if outcome != RESTART or stop.is_set():
                    break
                settings = _reread(args.config, defaults, settings)
        finally:
            source.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if outcome == UNPLUGGED else 0


def _serve(source: Source, args: argparse.Namespace, settings: config.Settings,
           defaults: config.Settings, stop: threading.Event, reload: threading.Event
           ) -> tuple[str, config.Settings]:
    """One bus over the source's current buffers, until the source returns:
    how it ended, and the settings last applied (SIGHUP may change them)."""
    with Producer(args.socket, source.format, args.buffers, pool=source.pool(),
                  reserve=source.reserve, lease_timeout=settings.lease_timeout,
                  mode=int(args.mode, 8), group=args.group,
                  allow_uids=settings.allow_uids, allow_gids=settings.allow_gids,
                  max_consumers=settings.max_consumers,
                  controls=source.controls()) as bus:
        reloader = _Reloader(bus, args.config, defaults, settings, reload, source=source,
                             source_name=args.source, overridden=_cli_controls(args))
        reloader.start()
        log.info("serving %s %dx%d at %s on %s", source.format.pixel_format,
                 source.format.width, source.format.height,
                 f"{args.fps:g} fps" if args.fps else "full speed", args.socket)
        try:
            outcome = source.run(bus, stop)
        finally:
            reloader.finish()
        stats = bus.stats()
        # A source that went away has already told the consumers why.
        bus.close("producer stopped by signal" if outcome == STOPPED else "source ended")
    log.info("%s: published %d frames, %d leases revoked, %d reclaimed", outcome,
             stats["published"], stats["revoked"], stats["reclaimed"])
    return outcome, reloader.settings


def _reread(path: str | None, defaults: config.Settings,
            current: config.Settings) -> config.Settings:
    """The config file read again for the source's new bus; `current` (with
    the reason logged) if the file has gone bad meanwhile, as on SIGHUP."""
    try:
        return config.load(path, defaults)
    except FramebusError as exc:
        log.error("the source is back: keeping the current settings: %s", exc)
        return current


def _cli_controls(args: argparse.Namespace) -> set[str]:
    """The control names `--control` sets (the config file cannot override them)."""
    return {text.partition("=")[0].strip() for text in getattr(args, "control", None) or []}


def _set_config_controls(source: Source, source_name: str,
                         wanted: Mapping[str, int | str]) -> None:
    """Set the config file's `[controls]` again (on SIGHUP); what cannot be
    set is logged, and the rest of the reload stands."""
    if not wanted:
        return
    controls = source.controls()
    if controls is None:
        log.warning("SIGHUP: [controls] not set: the %s source has no camera controls (the "
                    "daemon refuses [controls] for it at start-up)", source_name)
        return
    try:
        applied = controls.set(dict(wanted))
    except (FramebusError, OSError) as exc:  # OSError: e.g. ENODEV, the camera just went away
        log.error("SIGHUP: [controls] not set: %s", exc)
        return
    log.info("SIGHUP: controls set: %s", ", ".join(f"{k}={v}" for k, v in applied.items()))


class _Reloader(threading.Thread):
    """Applies the config file again on each SIGHUP (`reload` set) while one
    bus serves. A file the daemon would refuse at start-up is refused whole;
    `settings` are the ones last applied."""

    def __init__(self, bus: Producer, path: str | None, defaults: config.Settings,
                 settings: config.Settings, reload: threading.Event, *, source: Source,
                 source_name: str, overridden: set[str]) -> None:
        super().__init__(name="framebus-reload")
        self.settings = settings
        self._bus, self._path, self._defaults = bus, path, defaults
        self._source, self._source_name, self._overridden = source, source_name, overridden
        self._reload = reload
        self._done = threading.Event()

    def finish(self) -> None:
        """Stop (the bus is about to close) and wait for the thread to end."""
        self._done.set()
        self._reload.set()  # wake the thread so it sees `_done`
        self.join()

    def run(self) -> None:
        while True:
            self._reload.wait()
            self._reload.clear()
            if self._done.is_set():
                return
            try:
                settings = config.load(self._path, self._defaults)
            except FramebusError as exc:
                log.error("SIGHUP: keeping the current settings: %s", exc)
                continue
            evicted = self._bus.reconfigure(
                allow_uids=settings.allow_uids, allow_gids=settings.allow_gids,
                lease_timeout=settings.lease_timeout, max_consumers=settings.max_consumers)
            self.settings = settings
            log.info("SIGHUP: reloaded %s%s", self._path or "settings",
                     f"; disconnected {', '.join(evicted)}" if evicted else "")
            _set_config_controls(self._source, self._source_name,
                                 {name: value for name, value in settings.controls.items()
                                  if name not in self._overridden})
