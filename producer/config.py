"""The daemon's configuration file (TOML), read at start and on SIGHUP.

Keys (all optional; command-line options give the defaults):

    allow_uids = [1000, 1001]   # admitted besides the producer's own uid and root
    allow_gids = [44]           # peers whose primary gid is one of these
    lease_timeout = 1.0         # seconds, at most 86400
    max_consumers = 64          # 1 to 4096

    [controls]                  # v4l2 camera controls, set before streaming
    exposure_time_absolute = 200
    auto_exposure = 1           # a menu item by number...
    power_line_frequency = "50 Hz"   # ...or by name

All are applied again on SIGHUP; consumers no longer admitted are
disconnected with the reason "access revoked". `--control NAME=VALUE` on the
command line overrides the same name in `[controls]`. A file the daemon
would refuse at start-up is refused whole on SIGHUP (the running settings
stay), except `[controls]` for a source without camera controls (synthetic,
libcamera) or controls the camera refuses: those are logged as not set and
the rest of the file applies.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from framebus import FramebusError
from framebus.producer import LEASE_TIMEOUT_MAX, MAX_CONSUMERS_MAX

_INT_LISTS = ("allow_uids", "allow_gids")

# `framebus.Producer`'s own bounds, checked here too so that a value beyond
# them is a clear error at start-up and a refused reload on SIGHUP.


def lease_timeout(value: object) -> float:
    """`value` as a lease timeout in seconds; `ValueError` (saying what is
    accepted) unless it is a number above 0 and at most `LEASE_TIMEOUT_MAX`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value <= LEASE_TIMEOUT_MAX:  # NaN fails this too
        raise ValueError(f"must be a number of seconds, more than 0 and at most "
                         f"{LEASE_TIMEOUT_MAX}, not {value!r}")
    return float(value)


def max_consumers(value: object) -> int:
    """`value` as a consumer limit; `ValueError` unless an int from 1 to
    `MAX_CONSUMERS_MAX`."""
    if type(value) is not int or not 1 <= value <= MAX_CONSUMERS_MAX:
        raise ValueError(f"must be an int from 1 to {MAX_CONSUMERS_MAX}, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    allow_uids: tuple[int, ...] = ()
    allow_gids: tuple[int, ...] = ()
    lease_timeout: float = 1.0
    max_consumers: int = 64
    extra: dict[str, object] = field(default_factory=dict, compare=False)
    #: camera controls by name: an int, or a menu item's name
    controls: dict[str, int | str] = field(default_factory=dict)


def load(path: str | None, defaults: Settings) -> Settings:
    """`defaults` overridden by the file at `path`; a clear error for bad content."""
    if path is None:
        return defaults
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise FramebusError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FramebusError(f"config {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"allow_uids", "allow_gids", "lease_timeout", "max_consumers", "controls"}
    if unknown:
        raise FramebusError(f"config {path}: unknown keys {sorted(unknown)}")
    for key in _INT_LISTS:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(type(v) is int and v >= 0 for v in value):
            raise FramebusError(f"config {path}: {key} must be a list of non-negative ints")
    try:
        lease = lease_timeout(data.get("lease_timeout", defaults.lease_timeout))
    except ValueError as exc:
        raise FramebusError(f"config {path}: lease_timeout {exc}") from None
    try:
        consumers = max_consumers(data.get("max_consumers", defaults.max_consumers))
    except ValueError as exc:
        raise FramebusError(f"config {path}: max_consumers {exc}") from None
    return Settings(
        allow_uids=tuple(defaults.allow_uids) + tuple(data.get("allow_uids", [])),
        allow_gids=tuple(defaults.allow_gids) + tuple(data.get("allow_gids", [])),
        lease_timeout=lease, max_consumers=consumers,
        controls={**defaults.controls, **_controls(path, data.get("controls", {}))})


def _controls(path: str, table: object) -> dict[str, int | str]:
    """The `[controls]` table: names to ints (or menu items' names)."""
    if not isinstance(table, dict):
        raise FramebusError(f"config {path}: controls must be a table ([controls] NAME = VALUE)")
    for name, value in table.items():
        if isinstance(value, bool):
            table[name] = int(value)
        elif not isinstance(value, (int, str)):
            raise FramebusError(f"config {path}: [controls] {name} must be an integer or a menu "
                                f"item's name, not {value!r}")
    return dict(table)
