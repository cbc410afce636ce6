"""Separate-plane formats (NV12M, NV21M, YUV420M) on a multi-planar-only driver.

The simulated driver (tests/v4l2/v4l2sim.c, ``type=mplane,formats=NM12``)
offers NV12 only as ``NM12``: the Y plane and the UV plane each in a memory
of its own, the pattern running on from one plane into the next as if the
frame were one buffer. `framebus produce --format NV12` streams it; a
consumer in another process checks every plane of 30 consecutive frames byte
for byte through the same views a single-buffer NV12 gives, and reports in
which files and mappings the planes live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Processes, read_json
from tests.test_v4l2_capture import (DEV, assert_pixels, consume, produce, refused, sim,  # noqa: F401
                                     stop, summary, _run)

BASE = f"path={DEV},type=mplane,fps=30,sizes=320x240+160x120"
FRAMES = 30

CASES = [
    # (--memory, driver FourCC, --format, pad, strategy, file behind every plane)
    ("userptr", "NM12", "NV12", 32, "userptr", "/memfd:framebus"),
    ("dmabuf", "NM12", "NV12", 32, "mmap+expbuf", "/memfd:v4l2sim-dmabuf"),
    ("copy", "NM12", "NV12", 32, "mmap+copy", "/memfd:framebus"),
    ("auto", "NM21", "NV21", 16, "userptr", "/memfd:framebus"),
    ("dmabuf", "NM21", "NV21", 16, "mmap+expbuf", "/memfd:v4l2sim-dmabuf"),
    ("auto", "YM12", "YU12", 64, "userptr", "/memfd:framebus"),
    ("dmabuf", "YM12", "YU12", 64, "mmap+expbuf", "/memfd:v4l2sim-dmabuf"),
    ("copy", "YM12", "YU12", 64, "mmap+copy", "/memfd:framebus"),
]


def _strides(fmt: str, bpl: int) -> list[list[int]]:
    """The plane strides a single-buffer `fmt` with rows of `bpl` bytes has."""
    if fmt == "YU12":
        return [[bpl, 1], [bpl // 2, 1], [bpl // 2, 1]]
    return [[bpl, 1], [bpl, 2, 1]]


def _consecutive(sequences: list[int]) -> bool:
    return all(b == a + 1 for a, b in zip(sequences, sequences[1:]))


@pytest.mark.parametrize("memory,fourcc,fmt,pad,strategy,backing", CASES,
                         ids=[f"{m}-{c}" for m, c, *_ in CASES])
def test_separate_planes_reach_consumers_byte_for_byte(
        procs: Processes, sim: Path, sock: str, memory: str, fourcc: str, fmt: str, pad: int,
        strategy: str, backing: str) -> None:
    config = f"{BASE},formats={fourcc},pad={pad}"
    producer = produce(procs, sim, config, sock, "--memory", memory, "--buffers", "12",
                       fmt=fmt, fps=30)
    report = read_json(consume(procs, sim, config, sock, "--frames", str(FRAMES), "--policy",
                               "queue", "--depth", "6"), timeout=60)
    status, log = stop(producer)
    assert status == 0, log
    assert f"as {fourcc}: {len(_strides(fmt, 0))} planes in separate buffers" in log
    assert f"using {strategy}" in log
    assert_pixels(report, FRAMES)
    assert _consecutive(report["sequences"]), report["sequences"]
    # the same format and views as the single-buffer format, the driver's rows honoured
    wire = report["format"]
    assert (wire["pixel_format"], wire["width"], wire["height"], wire["bytesperline"]) == \
        (fmt, 320, 240, 320 + pad)
    assert report["plane_strides"] == _strides(fmt, 320 + pad)
    planes = len(report["plane_strides"])
    assert [b.split()[0] for b in sorted(report["plane_backing"])] == [str(n) for n in range(planes)]
    assert all(b.split()[1].startswith(backing) and b.endswith(" r--s")
               for b in report["plane_backing"]), report["plane_backing"]
    counts = summary(log)
    assert counts["strategy"] == strategy and counts["published"] >= FRAMES
    if strategy == "mmap+expbuf":  # one DMA-BUF per plane: every plane in a mapping of its own
        assert report["planes_apart"] == report["frames"]
    if strategy == "mmap+copy":
        assert counts["bytes_copied"] == counts["published"] * wire["sizeimage"]
    else:
        assert counts["bytes_copied"] == 0


def test_userptr_refused_at_qbuf_falls_back_to_copying_plane_by_plane(
        procs: Processes, sim: Path, sock: str) -> None:
    """`auto` picked userptr with a bus of separate-plane buffers; the driver
    refuses user memory at QBUF; the copy fallback fills those same buffers."""
    config = f"{BASE},formats=NM12,pad=32,userptr_contig"
    producer = produce(procs, sim, config, sock, fmt="NV12", fps=30)
    report = read_json(consume(procs, sim, config, sock, "--frames", "10"), timeout=60)
    status, log = stop(producer)
    assert status == 0, log
    assert "falling back to mmap+copy" in log
    assert summary(log)["strategy"] == "mmap+copy"
    assert_pixels(report, 10)
    assert len(report["plane_backing"]) == 2
    assert all(b.split()[1].startswith("/memfd:framebus") for b in report["plane_backing"])
    assert report["planes_apart"] == 0  # both planes in the one pool memfd mapping


def test_chroma_rows_the_bus_cannot_describe_are_refused(sim: Path) -> None:
    status, err = refused(sim, f"{BASE},formats=NM12,chroma_pad=64", fmt="NV12")
    assert status == 1
    assert "the driver's NM12 planes (bytesperline 320/384" in err
    assert "do not fit NV12 with bytesperline 320/320" in err


@pytest.mark.parametrize("formats,driver", [("NM12", "NM12"), ("NV12+NM12", "NV12"),
                                            ("NM12+NV12", "NV12")])
def test_negotiation_takes_the_separate_planes_only_when_it_must(
        sim: Path, formats: str, driver: str) -> None:
    out = _run(sim, f"{BASE},formats={formats},pad=8", "negotiate", DEV, "NV12", "320", "240", "30")
    assert "error" not in out, out["error"]
    assert out["driver_fourcc"] == driver
    assert out["format"]["pixel_format"] == "NV12" and out["format"]["bytesperline"] == 328
    assert out["format"]["sizeimage"] == 328 * 240 * 3 // 2


def test_a_refusal_says_which_separate_plane_formats_it_can_capture(sim: Path) -> None:
    status, err = refused(sim, f"{BASE},formats=NM12+YM12", fmt="RGB3")
    assert status == 1
    assert "NM12 Y/UV 4:2:0 (N-C) [captured as NV12]" in err
    assert "YM12 Planar YUV 4:2:0 (N-C) [captured as YU12]" in err


def test_nothing_leaks_with_separate_planes(sim: Path) -> None:
    planar = "type=mplane,formats=NM12,fps=200,sizes=320x240"
    config = ";".join([f"path={DEV},{planar}",
                       f"path=/dev/video-sim1,{planar},vanish_after=5,return_after_ms=50",
                       "path=/dev/video-sim2,busy"])
    out = _run(sim, config, "leaks", DEV, "/dev/video-sim1", "/dev/video-sim2", "NV12")
    assert out["before"] == out["after"]
    endings = out["endings"]
    assert [endings[m] for m in ("userptr", "dmabuf", "copy")] == ["stopped"] * 3
    assert [endings[f"unplug {m}"] for m in ("userptr", "dmabuf", "copy")] == ["unplugged"] * 3
