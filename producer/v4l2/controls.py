"""Camera controls: exposure, gain, white balance, focus, power-line frequency...

The driver lists its controls through ``VIDIOC_QUERY_EXT_CTRL`` (walked with
``V4L2_CTRL_FLAG_NEXT_CTRL``) and the items of each menu through
``VIDIOC_QUERYMENU``; values are read and written with
``VIDIOC_G_EXT_CTRLS`` / ``VIDIOC_S_EXT_CTRLS``, several at once. Controls
are named as ``v4l2-ctl`` names them: the driver's label in lower case, every
run of other characters an underscore ("Exposure Time, Absolute" is
``exposure_time_absolute``).

`V4L2Controls` is the object a V4L2 source offers to the producer
(``framebus.controls.Controls``): `describe()` and `set()` while it streams.
Values are checked before the driver sees them, so an unknown name, a value
out of range, off the step or not in the menu is a `ControlError` (a
`FramebusError` and a `ValueError`) that says what exists.
"""

from __future__ import annotations

import ctypes
import errno
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from framebus import FramebusError
from framebus.linux import videodev2 as v
from framebus.linux.ioctl import ioctl

__all__ = ["Control", "ControlError", "V4L2Controls", "control_name", "query_controls",
           "read_values", "write_values", "format_controls", "parse_assignment"]

#: the type names v4l2-ctl prints, for the scalar types framebus handles
TYPE_NAMES = {
    v.V4L2_CTRL_TYPE_INTEGER: "int", v.V4L2_CTRL_TYPE_BOOLEAN: "bool",
    v.V4L2_CTRL_TYPE_MENU: "menu", v.V4L2_CTRL_TYPE_BUTTON: "button",
    v.V4L2_CTRL_TYPE_INTEGER64: "int64", v.V4L2_CTRL_TYPE_BITMASK: "bitmask",
    v.V4L2_CTRL_TYPE_INTEGER_MENU: "intmenu",
}
_MENUS = (v.V4L2_CTRL_TYPE_MENU, v.V4L2_CTRL_TYPE_INTEGER_MENU)
_FLAG_NAMES = ((v.V4L2_CTRL_FLAG_READ_ONLY, "read-only"), (v.V4L2_CTRL_FLAG_INACTIVE, "inactive"),
               (v.V4L2_CTRL_FLAG_WRITE_ONLY, "write-only"), (v.V4L2_CTRL_FLAG_GRABBED, "grabbed"),
               (v.V4L2_CTRL_FLAG_VOLATILE, "volatile"))
_MAX_CONTROLS = 1024  # a guard against a driver whose enumeration never ends


class ControlError(FramebusError, ValueError):
    """A control that does not exist, a value it cannot take, or a driver
    that refused it."""


def control_name(label: str) -> str:
    """``v4l2-ctl``'s name for a control label: "Exposure Time, Absolute"
    becomes ``exposure_time_absolute``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


@dataclass(frozen=True)
class Control:
    """One control as the driver describes it."""

    id: int
    name: str
    label: str
    type: str
    minimum: int
    maximum: int
    step: int
    default: int
    flags: int
    menu: dict[int, str] = field(default_factory=dict)

    @property
    def flag_names(self) -> list[str]:
        return [name for bit, name in _FLAG_NAMES if self.flags & bit]

    @property
    def readable(self) -> bool:
        return self.type != "button" and not self.flags & v.V4L2_CTRL_FLAG_WRITE_ONLY

    def describe(self, value: int | None) -> dict[str, Any]:
        """The dict `framebus.controls.Controls.describe()` gives for it."""
        return {"name": self.name, "type": self.type, "minimum": self.minimum,
                "maximum": self.maximum, "step": self.step, "default": self.default,
                "value": value, "menu": dict(self.menu), "flags": self.flag_names}

    def check(self, value: int | str) -> int:
        """`value` as the int to write (a menu item may be named); raises
        `ControlError` saying what the control accepts."""
        if self.flags & v.V4L2_CTRL_FLAG_READ_ONLY:
            raise ControlError(f"control {self.name} is read-only")
        number = self._number(value)
        if self.type in ("menu", "intmenu"):
            if number not in self.menu:
                raise ControlError(f"control {self.name}: {value!r} is not one of its menu items: "
                                   f"{_menu_text(self.menu)}")
            return number
        if not self.minimum <= number <= self.maximum:
            raise ControlError(f"control {self.name}: {number} is out of range "
                               f"({self.minimum}..{self.maximum})")
        if self.step > 1 and (number - self.minimum) % self.step:
            raise ControlError(f"control {self.name}: {number} is not on its step "
                               f"({self.minimum}..{self.maximum} step {self.step})")
        return number

    def _number(self, value: int | str) -> int:
        if isinstance(value, bool) or isinstance(value, int):
            return int(value)
        text = str(value).strip()
        for key, item in self.menu.items():
            if item.lower() == text.lower():
                return key
        if self.type == "bool" and text.lower() in ("true", "false", "on", "off"):
            return int(text.lower() in ("true", "on"))
        try:
            return int(text, 0)
        except ValueError:
            accepted = f"one of {_menu_text(self.menu)}" if self.menu else "an integer"
            raise ControlError(f"control {self.name}: {value!r} is not {accepted}") from None


def _menu_text(menu: Mapping[int, str]) -> str:
    return ", ".join(f"{k}: {item}" for k, item in menu.items())


def query_controls(fd: int) -> list[Control]:
    """Every control of the device that framebus can read or set, in the
    driver's order (control classes, disabled controls and compound types
    such as strings and arrays are left out)."""
    found: list[Control] = []
    next_id = v.V4L2_CTRL_FLAG_NEXT_CTRL
    for _ in range(_MAX_CONTROLS):
        q = v.v4l2_query_ext_ctrl(id=next_id)
        try:
            ioctl(fd, v.VIDIOC_QUERY_EXT_CTRL, q)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOTTY):
                break  # past the last control, or a driver without any
            raise
        next_id = q.id | v.V4L2_CTRL_FLAG_NEXT_CTRL
        kind = TYPE_NAMES.get(q.type)
        if kind is None or q.flags & v.V4L2_CTRL_FLAG_DISABLED or q.nr_of_dims:
            continue
        label = bytes(q.name).split(b"\0", 1)[0].decode("utf-8", "replace")
        menu = _menu(fd, q) if q.type in _MENUS else {}
        found.append(Control(q.id, control_name(label), label, kind, q.minimum, q.maximum,
                             q.step, q.default_value, q.flags, menu))
    return found


def _menu(fd: int, q: v.v4l2_query_ext_ctrl) -> dict[int, str]:
    items: dict[int, str] = {}
    for index in range(max(0, q.minimum), min(q.maximum, 255) + 1):
        m = v.v4l2_querymenu(id=q.id, index=index)
        try:
            ioctl(fd, v.VIDIOC_QUERYMENU, m)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                continue  # an item the driver skips (menu_skip_mask)
            raise
        items[index] = (str(m.value) if q.type == v.V4L2_CTRL_TYPE_INTEGER_MENU
                        else v.c_string(m.name))
    return items


def _ext_controls(items: list[tuple[int, int]], which: int = v.V4L2_CTRL_WHICH_CUR_VAL
                  ) -> tuple[v.v4l2_ext_controls, ctypes.Array[v.v4l2_ext_control]]:
    array = (v.v4l2_ext_control * len(items))()
    for slot, (cid, value) in zip(array, items):
        slot.id = cid
        slot.value64 = value
    cs = v.v4l2_ext_controls(which=which, count=len(items),
                             controls=ctypes.cast(array, ctypes.POINTER(v.v4l2_ext_control)))
    return cs, array


def _value(control: Control, slot: v.v4l2_ext_control) -> int:
    return int(slot.value64 if control.type == "int64" else slot.value)


def read_values(fd: int, controls: list[Control]) -> dict[str, int | None]:
    """The current value of each control (None where the driver gives none)."""
    values: dict[str, int | None] = {c.name: None for c in controls}
    readable = [c for c in controls if c.readable]
    if not readable:
        return values
    cs, array = _ext_controls([(c.id, 0) for c in readable])
    try:
        ioctl(fd, v.VIDIOC_G_EXT_CTRLS, cs)
    except OSError:  # one control the driver will not read spoils the batch: one by one
        for c in readable:
            one, slot = _ext_controls([(c.id, 0)])
            try:
                ioctl(fd, v.VIDIOC_G_EXT_CTRLS, one)
            except OSError:
                continue
            values[c.name] = _value(c, slot[0])
        return values
    for c, slot in zip(readable, array):
        values[c.name] = _value(c, slot)
    return values


def write_values(fd: int, path: str, items: list[tuple[Control, int]]) -> None:
    """VIDIOC_S_EXT_CTRLS of checked values, all in one call."""
    cs, array = _ext_controls([(c.id, value) for c, value in items])
    for (c, value), slot in zip(items, array):
        if c.type != "int64":
            slot.value64 = 0
            slot.value = value
    try:
        ioctl(fd, v.VIDIOC_S_EXT_CTRLS, cs)
    except OSError as exc:
        culprit = items[cs.error_idx][0].name if cs.error_idx < len(items) else \
            ", ".join(c.name for c, _ in items)
        raise ControlError(f"{path}: the driver refused {culprit}: {exc.strerror} "
                           f"({errno.errorcode.get(exc.errno or 0, exc.errno)})") from None


def parse_assignment(text: str) -> tuple[str, int | str]:
    """``NAME=VALUE`` (as ``--control`` takes it) as (name, value); VALUE is
    an int, or kept as text for a menu item's name."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ControlError(f"--control wants NAME=VALUE (e.g. gain=10), not {text!r}")
    value = value.strip()
    try:
        return name.strip(), int(value, 0)
    except ValueError:
        return name.strip(), value


class V4L2Controls:
    """A V4L2 device's controls, read and set while it streams
    (``framebus.controls.Controls``).

    `device_fd` gives the open device's fd (None while it is away, e.g.
    unplugged); `lock` is held around every use of it, and by whoever closes
    the device, so a control is never written to a closed (or reused) fd.
    """

    def __init__(self, path: str, device_fd: Callable[[], int | None],
                 lock: threading.Lock) -> None:
        self.path = path
        self._device_fd = device_fd
        self._lock = lock

    def describe(self) -> list[dict[str, Any]]:
        """Every control: name, type, minimum, maximum, step, default, value,
        menu (item number to name) and flags (``inactive``, ``read-only``...)."""
        with self._lock:
            fd = self._fd()
            controls = query_controls(fd)
            values = read_values(fd, controls)
        return [c.describe(values[c.name]) for c in controls]

    def set(self, values: Mapping[str, int | str]) -> dict[str, int]:
        """Set several controls at once; returns their values as the driver
        then reports them. Raises `ControlError` (a `ValueError`) naming what
        exists for an unknown name or a value out of range, and before any
        control is changed."""
        with self._lock:
            fd = self._fd()
            controls = {c.name: c for c in query_controls(fd)}
            items = [(self._control(controls, name), value) for name, value in values.items()]
            checked = [(c, c.check(value)) for c, value in items]
            if not checked:
                return {}
            write_values(fd, self.path, checked)
            after = read_values(fd, [c for c, _ in checked])
        result: dict[str, int] = {}
        for c, value in checked:
            now = after[c.name]
            result[c.name] = value if now is None else now
        return result

    def _control(self, controls: dict[str, Control], name: str) -> Control:
        if name not in controls:
            known = ", ".join(controls) or "none"
            raise ControlError(f"{self.path} has no control {name!r}; it has: {known}")
        return controls[name]

    def _fd(self) -> int:
        fd = self._device_fd()
        if fd is None:
            raise FramebusError(f"{self.path} is not open (unplugged?): its controls are "
                                f"out of reach until it is back")
        return fd


def format_controls(described: list[dict[str, Any]], indent: str = "    ") -> list[str]:
    """Lines listing controls as `describe()` gives them (for `framebus devices`)."""
    lines = []
    width = max((len(f"{c['name']} ({c['type']})") for c in described), default=0)
    for c in described:
        head = f"{c['name']} ({c['type']})".ljust(width)
        parts = ([f"min={c['minimum']} max={c['maximum']}"] +
                 ([f"step={c['step']}"] if c["type"] not in ("menu", "intmenu", "bool") else []) +
                 [f"default={c['default']}", f"value={c['value']}"])
        if c["menu"] and c["value"] in c["menu"]:
            parts[-1] += f" ({c['menu'][c['value']]})"
        if c["flags"]:
            parts.append(f"flags={','.join(c['flags'])}")
        lines.append(f"{indent}{head} : {' '.join(parts)}")
        lines.extend(f"{indent}    {k}: {item}" for k, item in c["menu"].items())
    return lines
