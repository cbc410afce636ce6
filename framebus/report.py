"""`framebus status`: ask a producer for its report and show it."""

from __future__ import annotations

import argparse
import json
import pwd
import sys
import time
from typing import Any

from . import _handshake as handshake, _protocol as protocol, paths
from .commands import Command


def query_status(path: str, timeout: float = 2.0,
                 producer_uid: int | None = None) -> dict[str, Any]:
    """The producer's report: counters, and a `consumers` list.

    The producer must run as root, as this process's uid, or as
    `producer_uid`; otherwise `framebus.PermissionDenied` naming its uid.
    """
    with handshake.role_client(path, "status", protocol.STATUS, timeout,
                               producer_uid) as (_, fields):
        report: dict[str, Any] = fields[0]
        return report


def format_status(report: dict[str, Any]) -> str:
    fmt = report["format"]
    lines = [
        f"producer pid {report['pid']} at {report['socket']}: {fmt['pixel_format']} "
        f"{fmt['width']}x{fmt['height']}, {report['buffers']} buffers "
        f"({report['leased']} leased, {report['free']} free)",
        f"published {report['published']} frames ({report['fps']:.1f} fps), "
        f"leases revoked {report['revoked']}, reclaimed {report['reclaimed']}, "
        f"refused {report['refused']}, protocol errors {report['errors']}",
    ]
    header = f"{'consumer':<16} {'pid':>7} {'policy':>7} {'held':>5} {'queued':>6} {'delivered':>10} " \
             f"{'dropped':>8} {'revoked':>8} {'errors':>7} {'fps':>7}"
    lines += ["", header]
    for c in report["consumers"]:
        lines.append(f"{c['name'][:16]:<16} {c['pid']:>7} {c['policy']:>7} "
                     f"{c['held']:>2}/{c['max_held']:<2} {c.get('queued', 0):>6} {c['delivered']:>10} {c['dropped']:>8} "
                     f"{c['revoked']:>8} {c['errors']:>7} {c['fps']:>7.1f}")
    if not report["consumers"]:
        lines.append("(no consumers attached)")
    return "\n".join(lines)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help=paths.socket_help())
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--watch", type=float, nargs="?", const=1.0, metavar="SECONDS",
                        help="report again every SECONDS (default 1) until Ctrl-C: redrawn "
                             "in place on a terminal, one report (or JSON line) after another "
                             "otherwise")
    add_producer_uid_argument(parser)


def add_producer_uid_argument(parser: argparse.ArgumentParser) -> None:
    """``--producer-uid N``: trust a producer run by uid N (a service user)."""
    parser.add_argument("--producer-uid", type=_uid, metavar="UID",
                        help="trust a producer running as this uid or user name (default: "
                             "only root or your own uid; a service such as framebus@.service "
                             "runs as user 'framebus')")


def _uid(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no user named {value!r}") from None


def run_status(args: argparse.Namespace) -> int:
    """`framebus status`."""
    path = args.socket or paths.default_socket()
    if args.watch is not None and args.watch <= 0:
        raise ValueError("--watch needs a positive number of seconds")
    redraw = args.watch is not None and not args.json and sys.stdout.isatty()
    while True:
        report = query_status(path, producer_uid=args.producer_uid)
        text = json.dumps(report) if args.json else format_status(report)
        # On a terminal, clear and redraw (ANSI); in a pipe, one report after another.
        print("\x1b[H\x1b[J" + text if redraw else text, flush=True)
        if args.watch is None:
            return 0
        time.sleep(args.watch)


COMMAND = Command("status", "show the producer's consumers, leases, rates and drops", run_status,
                  _add_arguments)
