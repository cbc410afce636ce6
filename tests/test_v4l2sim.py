"""The raw V4L2 layer against the simulated driver, below Python at libc.

Each test runs ``tests/v4l2/simchild.py`` in a child process with the
simulator preloaded (``LD_PRELOAD``); the child uses only
``framebus.linux.ioctl``/``videodev2``/``dma_buf`` with real ``os.open``,
``fcntl.ioctl``, ``mmap`` and ``poll``, and reports what it saw as JSON.
"""

from __future__ import annotations

import select
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from framebus.linux import videodev2 as v

from .v4l2 import harness


DEV = "/dev/video-sim0"
FAST = f"path={DEV},fps=200"
TYPES = {"single": "", "mplane": ",type=mplane"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator, compiled warning-free into a temporary directory."""
    return harness.build_sim(tmp_path_factory.mktemp("v4l2sim"))


def run(sim: Path, config: str, scenario: str, *args: str) -> Any:
    return harness.run_child(sim, config, scenario, *args)


def assert_sequences_increase_from_zero(frames: list[dict[str, Any]]) -> None:
    """Sequence numbers start at 0 and only grow.

    A gap is legitimate (a tick that finds no buffer queued drops its frame,
    as real drivers do when the application is late), so exact runs are only
    asserted where the test controls the timing.
    """
    sequences = [f["sequence"] for f in frames]
    assert sequences[0] == 0
    assert all(a < b for a, b in zip(sequences, sequences[1:])), sequences


def check_frames(frames: list[dict[str, Any]], sizeimage: int) -> None:
    """Every frame carries the pattern of its sequence number, stamped correctly."""
    assert frames
    for frame in frames:
        seq = frame["sequence"]
        assert frame["head"] == seq
        assert frame["bytesused"] == sizeimage
        assert frame["crc"] == zlib.crc32(harness.expected_frame(seq, frame["bytesused"])), seq
        assert frame["flags"] & v.V4L2_BUF_FLAG_TIMESTAMP_MASK == v.V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
        assert not frame["flags"] & (v.V4L2_BUF_FLAG_QUEUED | v.V4L2_BUF_FLAG_DONE | v.V4L2_BUF_FLAG_ERROR)
        assert frame["field"] == v.V4L2_FIELD_NONE
        assert 0 <= frame["now_ns"] - frame["timestamp_ns"] < 1_000_000_000


# --- capability and format -----------------------------------------------------


@pytest.mark.parametrize("kind", TYPES)
def test_querycap_describes_the_configured_device(sim: Path, kind: str) -> None:
    cap = run(sim, FAST + TYPES[kind] + ",card=Test Cam", "querycap", DEV)
    assert (cap["driver"], cap["card"], cap["bus_info"]) == ("v4l2sim", "Test Cam", "platform:v4l2sim-0")
    wanted = v.V4L2_CAP_VIDEO_CAPTURE_MPLANE if kind == "mplane" else v.V4L2_CAP_VIDEO_CAPTURE
    assert cap["device_caps"] & wanted
    assert cap["device_caps"] & v.V4L2_CAP_STREAMING
    assert cap["capabilities"] & v.V4L2_CAP_DEVICE_CAPS
    assert cap["cloexec"]  # os.open's O_CLOEXEC reached the simulated fd


@pytest.mark.parametrize("kind", TYPES)
def test_format_negotiation(sim: Path, kind: str) -> None:
    out = run(sim, FAST + TYPES[kind] + ",formats=YUYV+GREY,fps=200+14", "formats", DEV)
    assert [f["fourcc"] for f in out["formats"]] == ["YUYV", "GREY"]
    assert out["formats"][0]["description"] == "YUYV 4:2:2"
    assert out["formats"][0]["sizes"] == [[640, 480, [[1, 200], [1, 14]]], [320, 240, [[1, 200], [1, 14]]]]
    assert out["g_fmt"] == [640, 480, v.V4L2_PIX_FMT_YUYV, 1280, 640 * 480 * 2]
    assert out["try_fmt"] == [320, 240, "YUYV"]  # nearest size, first format
    assert out["g_fmt_after_try"] == out["g_fmt"]  # TRY changes nothing
    assert out["g_fmt_after_set"] == [320, 240, v.V4L2_PIX_FMT_GREY, 320, 320 * 240]
    assert out["s_fmt_field"] == v.V4L2_FIELD_NONE
    if kind == "mplane":
        assert out["s_fmt_planes"] == 1
    assert out["g_parm"] == [v.V4L2_CAP_TIMEPERFRAME, 1, 200]
    assert out["s_parm"] == [1, 14]
    assert out["wrong_type_g_fmt"] == "EINVAL"
    assert out["wrong_type_enum_fmt"] == "EINVAL"


def test_stepwise_sizes_and_row_padding(sim: Path) -> None:
    out = run(sim, FAST + ",stepwise,sizes=1280x720,pad=64,formats=NV12+RGB3", "formats", DEV)
    nv12 = out["formats"][0]
    assert nv12["sizes"] == [["stepwise", 16, 1280, 2, 16, 720, 2, [[1, 200]]]]
    assert out["try_fmt"] == [332, 250, "NV12"]  # rounded down to the step
    bpl = 320 * 3 + 64
    assert out["g_fmt_after_set"] == [320, 240, v.V4L2_PIX_FMT_RGB24, bpl, bpl * 240]


# --- the queue cycle, in every memory mode --------------------------------------

MODES = ["mmap", "userptr", "dmabuf", "expbuf"]


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("memory", MODES)
def test_queue_cycle_delivers_recomputable_frames(sim: Path, kind: str, memory: str) -> None:
    out = run(sim, FAST + TYPES[kind] + ",sizes=320x240", "capture", DEV, memory, "3", "7")
    assert out["error"] is None
    assert out["fds_leaked"] == 0
    assert out["granted"] == 3
    assert out["not_readable_before"] == 0  # poll: nothing done yet
    assert out["dqbuf_before_streamon"] == "EINVAL"
    frames = out["frames"]
    assert_sequences_increase_from_zero(frames)
    assert [f["index"] for f in frames] == [0, 1, 2, 0, 1, 2, 0]  # FIFO incoming queue
    check_frames(frames, 320 * 240 * 2)
    if memory == "userptr":  # the driver wrote into the application's own memory
        assert len({f["userptr"] for f in frames}) == 3 and all(f["userptr"] for f in frames)
    if memory in ("mmap", "expbuf"):
        assert out["offsets"] == [0, 155648, 311296]  # page-aligned mmap cookies
    caps = v.V4L2_BUF_CAP_SUPPORTS_MMAP | v.V4L2_BUF_CAP_SUPPORTS_USERPTR | v.V4L2_BUF_CAP_SUPPORTS_DMABUF
    assert out["capabilities"] & caps == caps


def test_frames_come_at_the_configured_rate(sim: Path) -> None:
    out = run(sim, f"path={DEV},fps=100,sizes=64x48", "capture", DEV, "mmap", "4", "11")
    frames = out["frames"]
    per_tick = sorted(
        (b["timestamp_ns"] - a["timestamp_ns"]) / (b["sequence"] - a["sequence"])
        for a, b in zip(frames, frames[1:])
    )
    median = per_tick[len(per_tick) // 2]
    assert 8e6 < median < 20e6  # 10 ms nominal; the median shrugs off a stalled tick or two
    assert per_tick[0] > 5e6  # a late driver thread never bursts to catch up


def test_mjpg_frames_have_varying_bytesused(sim: Path) -> None:
    out = run(sim, FAST + ",formats=MJPG,sizes=320x240", "capture", DEV, "mmap", "2", "4")
    for frame in out["frames"]:
        used = harness.mjpg_bytesused(frame["sequence"], 320 * 240 * 2)
        assert frame["bytesused"] == used
        assert frame["crc"] == zlib.crc32(harness.expected_frame(frame["sequence"], used))
    assert len({f["bytesused"] for f in out["frames"]}) == 4


def test_blocking_dqbuf_waits_for_the_next_frame(sim: Path) -> None:
    out = run(sim, f"path={DEV},fps=20,sizes=64x48", "blocking", DEV)
    assert out["sequence"] == 0
    assert 0.02 < out["waited"] < 1.0


def test_streamoff_wakes_a_dqbuf_blocked_in_another_thread(sim: Path) -> None:
    out = run(sim, FAST + ",sizes=64x48", "streamoff_wakes_dqbuf", DEV)
    assert out["still_blocked"] and out["returned"]
    assert out["dqbuf"] == "EINVAL"
    assert 0.15 < out["waited"] < 3


def test_streamoff_returns_every_buffer_to_userspace(sim: Path) -> None:
    out = run(sim, FAST + ",sizes=64x48", "streamoff", DEV)
    mapped_mono = v.V4L2_BUF_FLAG_MAPPED | v.V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
    assert out["flags_queued"] == [mapped_mono | v.V4L2_BUF_FLAG_QUEUED] * 4
    assert all(f & v.V4L2_BUF_FLAG_DONE for f in out["flags_streaming"])  # 4 done, none dequeued
    assert out["flags_after"] == [mapped_mono] * 4
    assert out["readable_after"] == 0
    assert out["dqbuf_after"] == "EINVAL"
    assert out["first_sequence_again"] == 0
    assert out["requeue_twice"] == "EINVAL"
    assert out["mapped_flags"] == [0, 1, 1, 1]  # munmap is seen
    assert out["freed_count"] == 0
    assert out["querybuf_after_free"] == "EINVAL"
    assert out["orphaned_mapping_head"] == (1).to_bytes(8, "little").hex()  # mapping outlives REQBUFS(0)


# --- misbehaving devices --------------------------------------------------------


def test_driver_grants_fewer_buffers_than_asked(sim: Path) -> None:
    out = run(sim, FAST + ",max_buffers=3,sizes=64x48", "capture", DEV, "userptr", "8", "6")
    assert out["granted"] == 3
    assert sorted({f["index"] for f in out["frames"]}) == [0, 1, 2]
    check_frames(out["frames"], 64 * 48 * 2)


def test_driver_without_userptr_refuses_it_and_says_so(sim: Path) -> None:
    out = run(sim, FAST + ",no_userptr", "memory_probe", DEV)
    assert out["mmap"] is None and out["dmabuf"] is None
    assert out["userptr"] == "EINVAL"
    assert not out["mmap_caps"] & v.V4L2_BUF_CAP_SUPPORTS_USERPTR
    assert out["mmap_caps"] & v.V4L2_BUF_CAP_SUPPORTS_MMAP
    old = run(sim, FAST + ",no_buf_caps", "memory_probe", DEV)  # a pre-4.20 kernel
    assert old["userptr"] is None and old["mmap_caps"] == 0


@pytest.mark.parametrize("kind", TYPES)
def test_device_that_vanishes_mid_stream_reports_enodev_and_pollerr(sim: Path, kind: str) -> None:
    out = run(sim, FAST + TYPES[kind] + ",vanish_after=5,sizes=64x48", "capture", DEV, "mmap", "3", "50")
    # the 5th completed frame is lost with the device; at least 2 were requeued to get there
    assert 2 <= len(out["frames"]) <= 4
    assert_sequences_increase_from_zero(out["frames"])
    assert out["error"] == "ENODEV"
    assert out["querycap_after"] == "ENODEV"
    assert out["streamoff_after"] == "ENODEV"
    assert out["mmap_after"] == "ENODEV"
    assert out["revents_after"] & select.POLLERR and out["revents_after"] & select.POLLHUP
    assert out["fds_leaked"] == 0  # close() on a vanished device still releases everything


def test_error_flag_marks_every_nth_frame(sim: Path) -> None:
    out = run(sim, FAST + ",error_every=3,sizes=64x48", "capture", DEV, "mmap", "3", "9")
    flagged = [bool(f["flags"] & v.V4L2_BUF_FLAG_ERROR) for f in out["frames"]]
    assert flagged == [False, False, True] * 3


def test_sequence_gaps_when_frames_are_lost(sim: Path) -> None:
    out = run(sim, FAST + ",skip_every=4,sizes=64x48", "capture", DEV, "mmap", "3", "6")
    sequences = [f["sequence"] for f in out["frames"]]
    assert_sequences_increase_from_zero(out["frames"])
    assert not [s for s in sequences if s % 4 == 3]  # 3, 7, 11... never delivered
    assert sequences[-1] >= 6  # so at least one gap was crossed
    check_frames(out["frames"], 64 * 48 * 2)


def test_busy_device_refuses_open(sim: Path) -> None:
    assert run(sim, FAST + ",busy", "busy", DEV) == {"open": "EBUSY", "s_fmt": None}


def test_busy_device_refuses_s_fmt_but_not_try_fmt(sim: Path) -> None:
    out = run(sim, FAST + ",busy_fmt", "busy", DEV)
    assert (out["open"], out["s_fmt"], out["try_fmt"]) == (None, "EBUSY", None)


@pytest.mark.parametrize("kind", TYPES)
def test_malformed_requests_fail_as_the_kernel_would(sim: Path, kind: str) -> None:
    out = run(sim, FAST + TYPES[kind] + ",sizes=64x48", "errors", DEV)
    expected = {
        "short_struct": "ENOTTY",  # wrong struct size = a request code no driver knows
        "unknown_request": "ENOTTY",
        "streamon_without_buffers": "EINVAL",
        "qbuf_without_buffers": "EINVAL",
        "reqbufs_bad_memory": "EINVAL",
        "querybuf_out_of_range": "EINVAL",
        "qbuf_wrong_memory": "EINVAL",
        "mmap_private": "EINVAL",
        "mmap_bad_offset": "EINVAL",
        "mmap_too_long": "EINVAL",
        "s_fmt_with_buffers": "EBUSY",
        "dqbuf_nothing_done": "EAGAIN",  # O_NONBLOCK and nothing done yet
        "reqbufs_while_streaming": "EBUSY",
        "second_handle_reqbufs": "EBUSY",  # the queue belongs to the first opener
        "second_handle_querycap": None,
        "querycap_on_memfd": "ENOTTY",  # other fds reach the real kernel
        "dma_buf_sync_on_memfd": "ENOTTY",
        "enoent": "ENOENT",
    }
    if kind == "mplane":
        expected["mplane_null_planes"] = "EFAULT"
    assert out == expected


def test_userptr_shorter_than_the_image_is_refused(sim: Path) -> None:
    assert run(sim, FAST + ",sizes=64x48", "userptr_short", DEV) == {"short": "EINVAL", "null": "EINVAL"}


@pytest.mark.parametrize("kind", TYPES)
def test_expbuf_hands_out_real_dma_buf_fds(sim: Path, kind: str) -> None:
    out = run(sim, FAST + TYPES[kind] + ",sizes=64x48", "expbuf", DEV)
    assert out["inheritable"] == [False, True]  # O_CLOEXEC honoured
    assert out["link"].startswith("/memfd:")
    assert (out["bad_flags"], out["bad_plane"], out["bad_index"]) == ("EINVAL",) * 3
    assert (out["sync_start"], out["sync_end"], out["sync_rw"]) == (None, None, None)
    assert out["sync_bad_flags"] == "EINVAL"
    assert out["shared_bytes"] == "ABCD"  # the same memory as the device mapping
    frame = out["frame"]
    assert frame["crc"] == zlib.crc32(harness.expected_frame(frame["sequence"], frame["bytesused"]))
    assert out["sync_after_free"] is None  # a DMA-BUF outlives the driver's buffers
    assert out["head_after_free"] == frame["sequence"]
    assert out["expbuf_userptr"] == "EINVAL"


# --- the simulator itself -------------------------------------------------------


def test_unknown_option_is_refused_loudly(sim: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "pass"],
        env=harness.sim_env(sim, f"path={DEV},no_such_option"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert "unknown option" in proc.stderr and "no_such_option" in proc.stderr


def test_unconfigured_paths_reach_the_real_kernel(sim: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(harness.CHILD), "querycap", DEV],
        env=harness.sim_env(sim, "path=/dev/video-sim9"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode != 0
    assert "FileNotFoundError" in proc.stderr


# --- separate planes (NV12M & co.) --------------------------------------------


@pytest.mark.parametrize("fourcc,geometry", [
    ("NM12", [(336, 336 * 240), (336, 336 * 120)]),
    ("NM21", [(336, 336 * 240), (336, 336 * 120)]),
    ("YM12", [(336, 336 * 240), (168, 168 * 120), (168, 168 * 120)]),
])
def test_separate_planes_each_have_their_own_memory(sim: Path, fourcc: str,
                                                    geometry: list[tuple[int, int]]) -> None:
    out = run(sim, f"{FAST},type=mplane,formats={fourcc},sizes=320x240,pad=16", "planes", DEV)
    n = len(geometry)
    assert out["fourcc"] == fourcc
    assert out["geometry"] == [list(g) for g in geometry]
    assert out["querybuf_one_plane"] == "EINVAL"  # a plane array too short for the format
    assert out["lengths"] == [[size for _, size in geometry]] * 2
    offsets = [o for per_buffer in out["offsets"] for o in per_buffer]
    assert len(set(offsets)) == 2 * n  # every plane its own mmap cookie...
    assert out["exported_inodes"] == 2 * n  # ...and its own DMA-BUF
    assert out["expbuf_beyond"] == "EINVAL"
    assert out["userptr_short_plane"] == "EINVAL"
    total = sum(size for _, size in geometry)
    for frame in (out["mmap_frame"], out["userptr_frame"]):
        # the planes, end to end, are the frame a single-buffer format would hold
        assert frame["crc"] == zlib.crc32(harness.expected_frame(frame["sequence"], total))
    assert out["mmap_frame"]["bytesused"] == [size for _, size in geometry]


def test_separate_planes_need_the_multi_planar_api(sim: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; os.open('/dev/null', os.O_RDONLY)"],
                          env=harness.sim_env(sim, f"{FAST},formats=NM12"), capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 2
    assert "separate-plane formats (NM12 NM21 YM12) need: type=mplane" in proc.stderr
