"""producer.v4l2.devices: discovery of capture devices and their strategies.

Runs ``list_devices`` in a child process on top of the simulated driver
(``tests/v4l2/v4l2sim.c``, preloaded), with several simulated nodes at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from framebus.linux import videodev2 as v
from framebus.apps.producer.v4l2.devices import (
    MMAP_COPY,
    MMAP_EXPBUF,
    USERPTR,
    DeviceInfo,
    format_devices,
    list_devices,
)

from .v4l2 import harness



CONFIG = ";".join([
    "path=/dev/video-sim0,formats=YUYV+MJPG,fps=30+15,card=Front Camera",
    "path=/dev/video-sim1,type=mplane,no_userptr,stepwise,formats=NV12,sizes=1280x720",
    "path=/dev/video-sim2,type=meta",
    "path=/dev/video-sim3,busy",
    "path=/dev/video-sim4,no_buf_caps,no_expbuf,no_userptr",
])  # fmt: skip
PATHS = [f"/dev/video-sim{i}" for i in range(5)] + ["/dev/null", "/nonexistent/video0"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.build_sim(tmp_path_factory.mktemp("v4l2sim"))


@pytest.fixture(scope="module")
def probed(sim: Path) -> dict[str, Any]:
    return harness.run_child(sim, CONFIG, "probe", *PATHS)


def by_path(probed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["path"]: d for d in probed["devices"]}


def test_only_capture_nodes_are_listed(probed: dict[str, Any]) -> None:
    # sim2 is a metadata node, /dev/null no V4L2 node at all; unopenable ones are reported
    assert list(by_path(probed)) == [
        "/dev/video-sim0", "/dev/video-sim1", "/dev/video-sim3", "/dev/video-sim4", "/nonexistent/video0"
    ]  # fmt: skip


def test_single_planar_camera_is_described_fully(probed: dict[str, Any]) -> None:
    cam = by_path(probed)["/dev/video-sim0"]
    assert (cam["driver"], cam["card"], cam["bus_info"], cam["version"]) == (
        "v4l2sim", "Front Camera", "platform:v4l2sim-0", "6.1.0"
    )  # fmt: skip
    assert cam["multiplanar"] is False and cam["streaming"] is True
    assert [f["fourcc"] for f in cam["formats"]] == ["YUYV", "MJPG"]
    yuyv, mjpg = cam["formats"]
    assert (yuyv["compressed"], mjpg["compressed"]) == (False, True)
    assert yuyv["sizes"] == [
        {"width": 640, "height": 480, "intervals": [[1, 30], [1, 15]]},
        {"width": 320, "height": 240, "intervals": [[1, 30], [1, 15]]},
    ]
    assert cam["current"] == [640, 480, "YUYV", 1280, 614400]
    assert cam["memory"] == ["mmap", "userptr", "dmabuf"]
    assert cam["strategies"] == [USERPTR, MMAP_EXPBUF, MMAP_COPY]
    assert cam["buf_caps"] & v.V4L2_BUF_CAP_SUPPORTS_USERPTR
    assert cam["error"] is None


def test_multi_planar_stepwise_camera_without_userptr(probed: dict[str, Any]) -> None:
    cam = by_path(probed)["/dev/video-sim1"]
    assert cam["multiplanar"] is True
    assert cam["device_caps"] & v.V4L2_CAP_VIDEO_CAPTURE_MPLANE
    (nv12,) = cam["formats"]
    assert nv12["sizes"] == []
    assert nv12["size_range"] == {
        "min_width": 16, "max_width": 1280, "step_width": 2,
        "min_height": 16, "max_height": 720, "step_height": 2,
        "continuous": False, "intervals": [[1, 30]],
    }  # fmt: skip
    assert cam["strategies"] == [MMAP_EXPBUF, MMAP_COPY]
    assert "userptr" not in cam["memory"]


def test_old_kernel_without_buf_caps_is_probed_by_trying(probed: dict[str, Any]) -> None:
    cam = by_path(probed)["/dev/video-sim4"]
    assert cam["buf_caps"] == 0
    assert cam["memory"] == ["mmap", "dmabuf"]
    assert cam["strategies"] == [MMAP_COPY]  # no EXPBUF in this driver


def test_unopenable_nodes_carry_the_reason(probed: dict[str, Any]) -> None:
    devices = by_path(probed)
    assert devices["/dev/video-sim3"]["error"] == "EBUSY: Device or resource busy"
    assert devices["/nonexistent/video0"]["error"].startswith("ENOENT")


def test_probing_leaves_every_queue_free(probed: dict[str, Any]) -> None:
    assert probed["after"] == {"/dev/video-sim0": None, "/dev/video-sim1": None, "/dev/video-sim4": None}


def test_device_streaming_elsewhere_is_reported_busy(sim: Path) -> None:
    (cam,) = harness.run_child(sim, "path=/dev/video-sim0,fps=200", "probe_busy", "/dev/video-sim0")
    assert cam["error"] == "EBUSY: Device or resource busy"
    assert cam["strategies"] == [] and cam["memory"] == []  # no guess passed off as an answer
    assert cam["card"] == "framebus simulated camera 0"  # what QUERYCAP told is kept
    assert [f["fourcc"] for f in cam["formats"]] == ["YUYV"]
    text = format_devices([DeviceInfo(**{**cam, "formats": ()})])
    assert "capture strategies: none\n  error: EBUSY: Device or resource busy" in text


def test_listing_is_readable(probed: dict[str, Any]) -> None:
    text = probed["text"]
    assert "/dev/video-sim0: Front Camera (v4l2sim, platform:v4l2sim-0, version 6.1.0)" in text
    assert "capture, single-planar; capture strategies: userptr, mmap+expbuf, mmap+copy" in text
    assert "  MJPG  Motion-JPEG (compressed)" in text
    assert "      640x480  30, 15 fps" in text
    assert "      16x16 to 1280x720, stepwise step 2x2  30 fps" in text
    assert "/dev/video-sim3: EBUSY: Device or resource busy" in text


def test_scan_without_paths_only_looks_at_dev_video() -> None:
    devices = list_devices()  # this machine may have no V4L2 at all
    assert all(d.path.startswith("/dev/video") for d in devices)
    assert format_devices([]) == "no V4L2 capture devices found\n"
