"""Child process for the control tests: drives controls on the simulator.

Run with the simulator preloaded, as ``python controlchild.py SCENARIO PATH``;
prints one JSON object. Scenarios:

``raw PATH``
    the control ioctls by hand: enumeration, menus, G/S/TRY_EXT_CTRLS and
    the errors the v4l2-ctrls core gives.
``streaming PATH``
    a `V4L2Source` streams into a bus in another thread while its
    `controls()` object reads and sets controls; what the driver reports on a
    second fd (as another program would see it) is recorded after each step.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

from framebus import FramebusError, FrameFormat, Producer
from framebus.apps.producer.v4l2.controls import ControlError, query_controls
from framebus.apps.producer.v4l2.source import V4L2Source
from framebus.linux import videodev2 as v
from framebus.linux.ioctl import ioctl


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def ext(fd: int, request: int, items: list[tuple[int, int]],
        which: int = v.V4L2_CTRL_WHICH_CUR_VAL) -> dict[str, Any]:
    """One G/S/TRY_EXT_CTRLS call: the values after it, or the errno and error_idx."""
    array = (v.v4l2_ext_control * max(1, len(items)))()
    for slot, (cid, value) in zip(array, items):
        slot.id, slot.value = cid, value
    cs = v.v4l2_ext_controls(which=which, count=len(items),
                             controls=ctypes.cast(array, ctypes.POINTER(v.v4l2_ext_control)))
    try:
        ioctl(fd, request, cs)
    except OSError as exc:
        return {"errno": errno.errorcode[exc.errno or 0], "error_idx": cs.error_idx}
    return {"values": [array[i].value for i in range(len(items))]}


def driver_values(path: str) -> dict[str, int]:
    """The controls' values as the driver reports them on a fd of its own."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        controls = query_controls(fd)
        got = ext(fd, v.VIDIOC_G_EXT_CTRLS, [(c.id, 0) for c in controls])
        return dict(zip((c.name for c in controls), got["values"]))
    finally:
        os.close(fd)


def scenario_raw(path: str) -> None:
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    out: dict[str, Any] = {}
    try:
        ids, q = [], v.v4l2_query_ext_ctrl(id=v.V4L2_CTRL_FLAG_NEXT_CTRL)
        while True:
            try:
                ioctl(fd, v.VIDIOC_QUERY_EXT_CTRL, q)
            except OSError as exc:
                out["end"] = errno.errorcode[exc.errno or 0]
                break
            ids.append([q.id, q.type, v.c_string(q.name), q.flags])
            q = v.v4l2_query_ext_ctrl(id=q.id | v.V4L2_CTRL_FLAG_NEXT_CTRL)
        out["enumerated"] = ids
        menu = []
        for index in range(4):
            m = v.v4l2_querymenu(id=v.V4L2_CID_EXPOSURE_AUTO, index=index)
            try:
                ioctl(fd, v.VIDIOC_QUERYMENU, m)
                menu.append(v.c_string(m.name))
            except OSError as exc:
                menu.append(errno.errorcode[exc.errno or 0])
        out["menu"] = menu
        gain, plf = v.V4L2_CID_GAIN, v.V4L2_CID_POWER_LINE_FREQUENCY
        out["get"] = ext(fd, v.VIDIOC_G_EXT_CTRLS, [(gain, 0), (plf, 0)])
        out["clamped"] = ext(fd, v.VIDIOC_S_EXT_CTRLS, [(gain, 999)])
        out["try_menu_range"] = ext(fd, v.VIDIOC_TRY_EXT_CTRLS, [(gain, 5), (plf, 7)])
        out["skipped_item"] = ext(fd, v.VIDIOC_S_EXT_CTRLS, [(v.V4L2_CID_EXPOSURE_AUTO, 0)])
        out["unknown"] = ext(fd, v.VIDIOC_S_EXT_CTRLS, [(gain, 1), (v.V4L2_CID_BRIGHTNESS, 1)])
        out["class"] = ext(fd, v.VIDIOC_G_EXT_CTRLS, [(v.V4L2_CID_USER_CLASS, 0)])
        out["defaults"] = ext(fd, v.VIDIOC_G_EXT_CTRLS, [(gain, 0)], v.V4L2_CTRL_WHICH_DEF_VAL)
        out["after"] = ext(fd, v.VIDIOC_G_EXT_CTRLS, [(gain, 0), (plf, 0)])
    finally:
        os.close(fd)
    say(**out)


def scenario_streaming(path: str) -> None:
    sock = os.path.join(tempfile.mkdtemp(prefix="fbc-", dir="/tmp"), "s.sock")
    source = V4L2Source(path, FrameFormat(320, 240, "YUYV"), 100, buffers=4,
                        controls={"gain": 10, "power_line_frequency": "60 Hz"})
    controls = source.controls()
    out: dict[str, Any] = {"at_start": driver_values(path)}
    stop = threading.Event()
    try:
        with Producer(sock, source.format, 4, pool=source.pool(), reserve=source.reserve) as bus:
            runner = threading.Thread(target=source.run, args=(bus, stop))
            runner.start()
            try:
                deadline = time.monotonic() + 10
                while bus.stats()["published"] < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
                out["published_before"] = bus.stats()["published"]
                out["set"] = controls.set({"auto_exposure": 1, "exposure_time_absolute": 500,
                                           "gain": 100, "power_line_frequency": "Disabled"})
                out["driver_after_set"] = driver_values(path)
                out["described"] = {c["name"]: c for c in controls.describe()}
                errors = {}
                for name, values in [("unknown", {"gain": 3, "bogus": 1}),
                                     ("range", {"gain": 300}), ("step", {"focus_absolute": 7}),
                                     ("menu", {"auto_exposure": 0}),
                                     ("word", {"power_line_frequency": "70 Hz"})]:
                    try:
                        controls.set(values)
                        errors[name] = "accepted"
                    except ControlError as exc:
                        errors[name] = f"{type(exc).__name__}: {exc}"
                out["errors"] = errors
                out["is_value_error"] = issubclass(ControlError, ValueError)
                out["driver_after_errors"] = driver_values(path)
                time.sleep(0.1)
                out["published_after"] = bus.stats()["published"]
            finally:
                stop.set()
                runner.join(timeout=10)
    finally:
        source.close()
        os.rmdir(os.path.dirname(sock))
    try:
        controls.describe()
        out["after_close"] = "answered"
    except FramebusError as exc:
        out["after_close"] = str(exc)
    say(**out)


def main() -> None:
    scenario, path = sys.argv[1:]
    {"raw": scenario_raw, "streaming": scenario_streaming}[scenario](path)


if __name__ == "__main__":
    main()
