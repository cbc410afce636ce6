"""The `framebus` subcommands these programs provide: `consume` and `demo`."""

from __future__ import annotations

import argparse

from framebus import PIXEL_FORMATS
from framebus.commands import Command

from .runner import add_common_arguments


def _consume(args: argparse.Namespace) -> int:
    from .monitor import run_cli
    return run_cli(args)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo(args)


def _consume_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--zenoh", metavar="KEY",
                        help="consume from another machine: the stream a 'framebus bridge "
                             "--key KEY' publishes (needs framebus[remote])")
    parser.add_argument("--connect", action="append", default=[], metavar="EP",
                        help="with --zenoh: Zenoh endpoint of the bridge or a router, "
                             "e.g. tcp/10.0.0.2:7447 (repeatable)")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--format", default="RGB3", choices=PIXEL_FORMATS)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--json", help="also write the summary to this JSON file")
    parser.add_argument("--preview-port", type=int, default=8080,
                        help="port of the live preview page (default 8080; 0: any free one)")


CONSUME = Command(
    "consume", "attach a consumer and report fps, latency and drops", _consume,
    _consume_arguments,
    "Attach to a producer and print fps, publish-to-view latency and drops once a second; "
    "exit 0 after --frames frames (or on Ctrl-C). With --zenoh KEY, the frames come from a "
    "'framebus bridge' on another machine instead.")

DEMO = Command(
    "demo", "a synthetic camera and three consumer processes, live figures", _demo,
    _demo_arguments,
    "Start a synthetic producer and three consumers (monitor, motion detector, snapshot "
    "writer) and show their fps, latency, drops, leases and memory.")
