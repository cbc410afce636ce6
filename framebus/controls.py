"""Camera controls (exposure, gain, white balance...) while the producer streams.

The producer owns the device, so nobody else should open it to change a
control: a client asks the producer over its control socket, under the same
access rules as a consumer. A source that has controls gives the producer an
object with the `Controls` protocol (`Producer(..., controls=...)`); the V4L2
source does.

    framebus.controls.list_controls(path)        # every control, with its value
    framebus.controls.set_controls(path, {"gain": 100, "auto_exposure": 1})

and on the command line, ``framebus controls [--set NAME=VALUE ...] [--json]``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Mapping, Protocol

from . import _handshake as handshake, _protocol as protocol, paths
from .commands import Command

__all__ = ["COMMAND", "Controls", "list_controls", "set_controls"]


class Controls(Protocol):
    """What a source offers the producer to list and set its controls."""

    def describe(self) -> list[dict[str, Any]]:
        """Every control: name, type, minimum, maximum, step, default, value,
        menu (item number to name) and flags."""

    def set(self, values: Mapping[str, int | str]) -> dict[str, int]:
        """Set several controls at once and return their new values; raise
        `ValueError` (naming what exists) for an unknown name or a value out
        of range, before changing anything."""


def list_controls(path: str, timeout: float = 2.0,
                  producer_uid: int | None = None) -> list[dict[str, Any]]:
    """The controls of the camera behind the producer at `path` (run by root,
    by you, or by `producer_uid`)."""
    return _ask(path, None, timeout, producer_uid)[0]


def set_controls(path: str, values: Mapping[str, int | str], timeout: float = 2.0,
                 producer_uid: int | None = None) -> dict[str, int]:
    """Set controls of the camera behind the producer at `path`; returns the
    values the driver reports afterwards. A refusal (unknown name, value out
    of range, no controls) is a `framebus.Refused` saying why."""
    return _ask(path, dict(values), timeout, producer_uid)[1]


def _ask(path: str, values: dict[str, int | str] | None, timeout: float,
         producer_uid: int | None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    with handshake.role_client(path, "controls", protocol.CONTROLS, timeout,
                               producer_uid) as (sock, fields):
        if values is not None:
            fields = handshake.expect_answer(
                handshake.request(sock, path, protocol.SET_CONTROLS.encode(values)),
                protocol.CONTROLS)
    controls, applied = fields
    for control in controls:
        if isinstance(control, dict) and isinstance(control.get("menu"), dict):
            control["menu"] = {int(k): v for k, v in control["menu"].items()}
    return controls, applied


def wire_controls(described: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`describe()`'s list as it travels (msgpack maps need string keys)."""
    return [{**c, "menu": {str(k): v for k, v in c.get("menu", {}).items()}} for c in described]


def _assignment(text: str) -> tuple[str, int | str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, int(value) if value.lstrip("-").isdigit() else value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help=paths.socket_help())
    parser.add_argument("--set", type=_assignment, action="append", default=[],
                        metavar="NAME=VALUE", help="set a control (repeatable); a menu "
                        "control takes its item number or name")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--producer-uid", type=int, help="the uid the producer may run as "
                        "besides root and yours (a service user)")


def _run(args: argparse.Namespace) -> int:
    path = args.socket or paths.default_socket()
    if args.set:
        applied = set_controls(path, dict(args.set), producer_uid=args.producer_uid)
        print(json.dumps(applied) if args.json else
              "\n".join(f"{name} = {value}" for name, value in applied.items()))
        return 0
    controls = list_controls(path, producer_uid=args.producer_uid)
    if args.json:
        print(json.dumps(controls))
        return 0
    for c in controls:
        menu = f"  [{', '.join(f'{k}: {v}' for k, v in c['menu'].items())}]" if c["menu"] else ""
        print(f"{c['name']:<28} {c['type']:<8} value={c['value']} default={c['default']} "
              f"range={c['minimum']}..{c['maximum']}{menu}")
    if not controls:
        print("(this camera has no controls)")
    return 0


COMMAND = Command("controls", "list or set the camera's controls while it streams", _run,
                  _add_arguments,
                  "List the controls of the camera the producer at --socket streams from, or "
                  "set some with --set NAME=VALUE; the producer owns the device and applies them.")
