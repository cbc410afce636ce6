"""The `framebus` subcommands of the producer daemon: `produce` and `devices`."""

from __future__ import annotations

import argparse
import grp

from collections.abc import Callable

from framebus import PIXEL_FORMATS, paths
from framebus.commands import Command
from framebus.producer import LEASE_TIMEOUT_MAX, MAX_CONSUMERS_MAX

from . import config


def _group(value: str) -> int:
    try:
        return int(value) if value.isdigit() else grp.getgrnam(value).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no group named {value!r}") from None


def _checked(parse: Callable[[str], object], what: str, check: Callable[[object], object]
             ) -> Callable[[str], object]:
    """An argparse type: `parse` the text (`what` it must be), then `check`
    it as the config file's value is checked."""
    def convert(text: str) -> object:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def _produce_arguments(produce: argparse.ArgumentParser) -> None:
    produce.add_argument("--socket", help=paths.socket_help())
    produce.add_argument("--source", default="synthetic",
                         help="'synthetic' (a test pattern, the default), 'v4l2:/dev/videoN', "
                              "or 'libcamera[:N]' (camera N through picamera2, e.g. a "
                              "Raspberry Pi camera; --format YU12, BGR3, RGB3, XR24 or XB24)")
    produce.add_argument("--width", type=int, default=1920)
    produce.add_argument("--height", type=int, default=1080)
    produce.add_argument("--format", default="RGB3", choices=PIXEL_FORMATS,
                         help="V4L2 FourCC (default RGB3)")
    produce.add_argument("--fps", type=float, default=30.0, help="frame rate; 0 = flat out")
    produce.add_argument("--buffers", type=int, default=8,
                         help="frame buffers (default 8; libcamera: the buffers picamera2 "
                              "allocates, 5..32)")
    produce.add_argument("--lease-timeout", type=_checked(float, "a number", config.lease_timeout),
                         default=1.0,
                         help="seconds a consumer may hold a frame before revocation (default 1, "
                              f"at most {LEASE_TIMEOUT_MAX})")
    produce.add_argument("--mode", default="660",
                         help="socket file mode, octal (default 660); with --group, a mode "
                              "that lets the group write (660) admits the group's members")
    produce.add_argument("--group", type=_group,
                         help="socket group (name or gid); with --mode 660 its members, "
                              "supplementary ones included, may attach")
    produce.add_argument("--allow-uid", type=int, action="append", default=[],
                         help="admit this uid too (repeatable; own uid and root always)")
    produce.add_argument("--allow-gid", type=int, action="append", default=[],
                         help="admit members of this gid, primary or supplementary "
                              "(repeatable); they must also be able to open the socket "
                              "(--mode/--group)")
    produce.add_argument("--max-consumers", type=_checked(int, "an integer", config.max_consumers),
                         default=64,
                         help=f"consumers served at once (default 64, at most "
                              f"{MAX_CONSUMERS_MAX})")
    produce.add_argument("--config", help="TOML file with allow_uids, allow_gids, lease_timeout, "
                                          "max_consumers and a [controls] table; re-read on "
                                          "SIGHUP")
    produce.add_argument("--memory", choices=("auto", "userptr", "dmabuf", "copy"), default="auto",
                         help="v4l2: how frames reach the bus (default: the best the driver has)")
    produce.add_argument("--on-unplug", choices=("exit", "wait"), default="exit",
                         help="v4l2, libcamera: when the camera goes away, exit (default) or "
                              "wait for it to come back")
    produce.add_argument("--control", action="append", default=[], metavar="NAME=VALUE",
                         help="v4l2: set a camera control before streaming, e.g. "
                              "exposure_time_absolute=200 or power_line_frequency='50 Hz' "
                              "(repeatable; `framebus devices` lists them; overrides the "
                              "config file's [controls])")


def _produce(args: argparse.Namespace) -> int:
    from .daemon import run
    return run(args)


def _devices_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", help="device nodes (default: every /dev/video*)")


def _devices(args: argparse.Namespace) -> int:
    from .v4l2.devices import format_devices, list_devices
    print(format_devices(list_devices(args.paths or None)))
    return 0


PRODUCE = Command(
    "produce", "run a producer until SIGINT/SIGTERM", _produce, _produce_arguments,
    "Serve frames from a source at --socket until SIGINT or SIGTERM, then remove the socket "
    "and exit 0.")

DEVICES = Command("devices", "list V4L2 cameras: formats, memory modes and controls", _devices,
                  _devices_arguments)
