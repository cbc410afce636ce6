"""The `framebus` command line."""

from __future__ import annotations

import argparse
import grp
import logging
import sys

from .errors import FramebusError
from .formats import PIXEL_FORMATS

DEFAULT_SOCKET = "/tmp/framebus-cam0.sock"


def _group(value: str) -> int:
    return int(value) if value.isdigit() else grp.getgrnam(value).gr_gid


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framebus",
        description="Zero-copy shared-memory frame bus: one producer, many consumer processes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    produce = commands.add_parser(
        "produce", help="run a producer until SIGINT/SIGTERM",
        description="Serve frames from a source at --socket until SIGINT or SIGTERM, "
                    "then remove the socket and exit 0.")
    produce.add_argument("--socket", default=DEFAULT_SOCKET, help="control socket path "
                         f"(default {DEFAULT_SOCKET})")
    produce.add_argument("--source", default="synthetic",
                         help="'synthetic' (a test pattern, the default) or 'v4l2:/dev/videoN'")
    produce.add_argument("--width", type=int, default=1920)
    produce.add_argument("--height", type=int, default=1080)
    produce.add_argument("--format", default="RGB3", choices=PIXEL_FORMATS,
                         help="V4L2 FourCC (default RGB3)")
    produce.add_argument("--fps", type=float, default=30.0, help="frame rate; 0 = flat out")
    produce.add_argument("--buffers", type=int, default=8, help="frame buffers (default 8)")
    produce.add_argument("--lease-timeout", type=float, default=1.0,
                         help="seconds a consumer may hold a frame before revocation (default 1)")
    produce.add_argument("--mode", default="660", help="socket file mode, octal (default 660)")
    produce.add_argument("--group", type=_group, help="socket group (name or gid)")
    produce.add_argument("--allow-uid", type=int, action="append", default=[],
                         help="admit this uid too (repeatable; own uid and root always)")
    produce.add_argument("--allow-gid", type=int, action="append", default=[],
                         help="admit peers whose primary gid is this (repeatable)")
    produce.add_argument("--max-consumers", type=int, default=64)
    produce.add_argument("--config", help="TOML file with allow_uids, allow_gids, lease_timeout, "
                                          "max_consumers; re-read on SIGHUP")
    produce.add_argument("--memory", choices=("auto", "userptr", "dmabuf", "copy"), default="auto",
                         help="v4l2: how frames reach the bus (default: the best the driver has)")
    produce.add_argument("--on-unplug", choices=("exit", "wait"), default="exit",
                         help="v4l2: when the camera goes away, exit (default) or wait for it "
                              "to come back")

    consume = commands.add_parser(
        "consume", help="attach a consumer and report fps, latency and drops",
        description="Attach to a producer and print fps, publish-to-view latency and drops "
                    "once a second; exit 0 after --frames frames (or on Ctrl-C).")
    from consumers.runner import add_common_arguments
    add_common_arguments(consume, socket=DEFAULT_SOCKET)

    status = commands.add_parser(
        "status", help="show the producer's consumers, leases, rates and drops")
    status.add_argument("--socket", default=DEFAULT_SOCKET)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    demo = commands.add_parser(
        "demo", help="a synthetic camera and three consumer processes, live figures",
        description="Start a synthetic producer and three consumers (monitor, motion detector, "
                    "snapshot writer) and show their fps, latency, drops, leases and memory.")
    demo.add_argument("--seconds", type=float, default=10.0, help="how long (default 10)")
    demo.add_argument("--width", type=int, default=1920)
    demo.add_argument("--height", type=int, default=1080)
    demo.add_argument("--format", default="RGB3", choices=PIXEL_FORMATS)
    demo.add_argument("--fps", type=float, default=30.0)
    demo.add_argument("--json", help="also write the summary to this JSON file")

    # Listed for --help only: main() hands `bench` its arguments untouched.
    commands.add_parser("bench", help="side-by-side benchmark against other transports "
                                      "(framebus bench --help)")

    devices = commands.add_parser("devices", help="list V4L2 cameras, formats and memory modes")
    devices.add_argument("paths", nargs="*", help="device nodes (default: every /dev/video*)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from benchmarks.cli import main as bench_main
        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        return _run(args)
    except FramebusError as exc:
        print(f"framebus {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    # Each command imports its own code, so `framebus status` stays light.
    if args.command == "produce":
        from producer.daemon import run
        return run(args)
    if args.command == "consume":
        from consumers.monitor import run_cli
        return run_cli(args)
    if args.command == "status":
        from .report import run_status
        return run_status(args)
    if args.command == "demo":
        from .demo import run_demo
        return run_demo(args)
    if args.command == "devices":
        from producer.v4l2.devices import format_devices, list_devices
        print(format_devices(list_devices(args.paths or None)))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
