"""The test tooling framebus ships for its users' tests: fixtures, a producer
of given images or of a function's frames, and MJPG in the test pattern."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import cv2  # the cv extra, which `make test` installs
import numpy as np
import pytest

import framebus
from framebus.convert import to_bgr
from framebus.pattern import Pattern, read_stamp
from framebus.testing import _overrides, producer_fixture, synthetic_producer

GREYS = [np.full((16, 32), level, np.uint8) for level in (10, 120, 230)]


def frame_of(seq: int) -> np.ndarray:
    """A frame function the producer's child process imports by name."""
    image = np.zeros((16, 32), np.uint8)
    image[...] = seq % 256
    return image


def wrong_shape(seq: int) -> np.ndarray:
    print("a frames function may print")  # into the producer's log, not its "ready" line
    return np.zeros((3, 3), np.uint8)


def chatty(seq: int) -> np.ndarray:
    print(f"frame {seq}")
    return frame_of(seq)


def frames(path: str, count: int, **consumer: object) -> list[tuple[int, np.ndarray, int]]:
    """`count` frames' (seq, pixels, bytesused), read intact (a frame whose
    lease a stalled test lost is skipped: read, then check valid())."""
    got = []
    with framebus.Consumer(path, **consumer) as cam:  # type: ignore[arg-type]
        for _ in range(count * 5):
            with cam.get(timeout=10) as frame:
                pixels = np.array(frame.array)
                if frame.valid():
                    got.append((frame.seq, pixels, frame.bytesused))
            if len(got) == count:
                return got
    pytest.fail(f"only {len(got)} of {count} frames arrived intact")


def test_the_shipped_fixture_serves_checkable_frames(framebus_producer):
    with framebus.Consumer(framebus_producer) as cam, cam.get(timeout=5) as frame:
        assert (cam.format.width, cam.format.pixel_format) == (320, "RGB3")
        assert Pattern(cam.format).check(frame.planes, frame.seq)


@pytest.mark.parametrize("framebus_producer", [
    dict(width=64, height=48, pixel_format="NV12", bytesperline=96),
    dict(width=40, height=30, pixel_format="YUYV", fps=20),
], indirect=True)
def test_the_shipped_fixture_takes_indirect_parameters(framebus_producer, request):
    want = request.node.callspec.params["framebus_producer"]
    with framebus.Consumer(framebus_producer) as cam, cam.get(timeout=5) as frame:
        fmt = cam.format
        assert (fmt.width, fmt.height, fmt.pixel_format) == (want["width"], want["height"],
                                                             want["pixel_format"])
        assert fmt.bytesperline == want.get("bytesperline", fmt.bytesperline)
        assert Pattern(fmt).check(frame.planes, frame.seq)


tiny_grey = producer_fixture(width=32, height=16, pixel_format="GREY", fps=50, scope="module")
SEEN_PATHS: list[str] = []


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_module_scoped_fixture_is_one_producer_for_the_module(tiny_grey, attempt):
    SEEN_PATHS.append(tiny_grey)
    assert len(set(SEEN_PATHS)) == 1 and len(SEEN_PATHS) == attempt
    with framebus.Consumer(tiny_grey) as cam:
        assert (cam.format.width, cam.format.height, cam.format.pixel_format) == (32, 16, "GREY")


named = producer_fixture(pixel_format="UYVY", width=16, height=8, name="uyvy_cam")


@pytest.mark.parametrize("uyvy_cam", [dict(width=24)], indirect=True)
def test_a_factory_fixture_has_its_name_and_takes_overrides(uyvy_cam):
    with framebus.Consumer(uyvy_cam) as cam:
        assert (cam.format.width, cam.format.height, cam.format.pixel_format) == (24, 8, "UYVY")


def test_parameters_that_are_not_stream_options_are_refused():
    request = SimpleNamespace(param=dict(widht=64), fixturename="framebus_producer")
    with pytest.raises(framebus.FramebusError, match="unknown stream option.*widht.*known: width"):
        _overrides(request)
    request = SimpleNamespace(param=64, fixturename="framebus_producer")
    with pytest.raises(framebus.FramebusError, match="with dicts of stream options"):
        _overrides(request)
    assert _overrides(SimpleNamespace(fixturename="x")) == {}


def test_a_producer_serves_given_images_in_a_cycle():
    with synthetic_producer(width=32, height=16, pixel_format="GREY", frames=GREYS,
                            fps=50) as path:
        got = frames(path, 6, policy="queue")
    for seq, pixels, _ in got:
        np.testing.assert_array_equal(pixels, GREYS[(seq - 1) % 3])
    assert len({int(p[0, 0]) for _, p, _ in got}) == 3


def test_planar_images_are_their_planes_one_after_the_other_whatever_the_padding():
    bgr = np.zeros((16, 32, 3), np.uint8)
    bgr[:, 16:] = (40, 200, 90)
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # (24, 32): Y, then U, then V
    with synthetic_producer(width=32, height=16, pixel_format="YU12", bytesperline=48,
                            frames=[i420], fps=50) as path:
        with framebus.Consumer(path) as cam, cam.get(timeout=10) as frame:
            y, u, v = (np.array(p) for p in frame.planes)
            bgr_back = to_bgr(SimpleNamespace(format=cam.format, planes=frame.planes,
                                              array=frame.array))
    flat = i420.reshape(-1)
    np.testing.assert_array_equal(y, flat[:512].reshape(16, 32))
    np.testing.assert_array_equal(u, flat[512:640].reshape(8, 16))
    np.testing.assert_array_equal(v, flat[640:].reshape(8, 16))
    assert np.abs(bgr_back.astype(int) - bgr).max() <= 3


def test_mjpg_images_keep_their_own_size():
    jpegs = [cv2.imencode(".jpg", np.full((16, 32, 3), level, np.uint8))[1].ravel()
             for level in (0, 255)]
    jpegs.append(cv2.imencode(".jpg", np.random.default_rng(1).integers(
        0, 256, (16, 32, 3), dtype=np.uint8))[1].ravel())
    with synthetic_producer(width=32, height=16, pixel_format="MJPG", frames=jpegs,
                            fps=50) as path:
        got = frames(path, 4, policy="queue")
    for seq, data, bytesused in got:
        np.testing.assert_array_equal(data, jpegs[(seq - 1) % 3])
        assert bytesused == jpegs[(seq - 1) % 3].size


@pytest.mark.parametrize("source", ["object", "name", "chatty"])
def test_a_producer_serves_a_function_of_the_sequence_number(source):
    given = {"object": frame_of, "name": f"{frame_of.__module__}:frame_of",
             "chatty": chatty}[source]
    with synthetic_producer(width=32, height=16, pixel_format="GREY", frames=given,
                            fps=50) as path:
        got = frames(path, 3)
    for seq, pixels, _ in got:
        assert (pixels == seq % 256).all()


@pytest.mark.parametrize("bad, why", [
    ([np.zeros((16, 31), np.uint8)], r"frames\[0\]: a GREY image has shape \(16, 32\)"),
    ([np.zeros((16, 32), np.float32)], r"frames\[0\] must be a uint8 numpy array, not float32"),
    (np.zeros((16, 32), np.uint8), r"wrap one image as \[image\]"),
    ([], "empty"),
])
def test_images_that_do_not_fit_the_stream_are_refused_before_anything_starts(bad, why):
    with pytest.raises(ValueError, match=why) as info:
        with synthetic_producer(width=32, height=16, pixel_format="GREY", frames=bad):
            pytest.fail("no producer should start")
    assert isinstance(info.value, framebus.FramebusError)


def test_a_function_the_child_cannot_import_is_refused():
    with pytest.raises(framebus.FramebusError, match="module-level function"):
        with synthetic_producer(frames=lambda seq: GREYS[0]):
            pytest.fail("no producer should start")
    with pytest.raises(framebus.FramebusError, match="cannot be imported"):
        with synthetic_producer(frames="no_such_module_here:frames"):
            pytest.fail("no producer should start")


def test_a_function_making_wrong_frames_stops_the_start_with_its_error():
    with pytest.raises(framebus.FramebusError, match=r"producer exited(.|\n)*wrong_shape\(1\): "
                                                     r"a GREY image has shape \(16, 32\)"):
        with synthetic_producer(width=32, height=16, pixel_format="GREY", frames=wrong_shape):
            pytest.fail("no producer should start")


def test_synthetic_producer_cleans_up_after_itself():
    with synthetic_producer(width=64, height=48, pixel_format="GREY") as path:
        with framebus.Consumer(path) as cam:
            assert cam.format.pixel_format == "GREY"
            cam.get(timeout=5).release()
    assert not os.path.exists(os.path.dirname(path))


def test_the_synthetic_source_makes_mjpg_with_a_readable_stamp_and_varying_size(procs, sock):
    procs.producer(sock, fmt="MJPG", width=320, height=240, fps=100)
    with framebus.Consumer(sock, policy="queue") as cam:
        pattern, sizes = Pattern(cam.format), set()
        for _ in range(12):
            with cam.get(timeout=10) as frame:
                assert frame.array.size == frame.bytesused < cam.format.sizeimage
                assert read_stamp(frame.planes[0]) == frame.seq
                assert pattern.check(frame.planes, frame.seq)
                picture = cv2.imdecode(np.array(frame.array), cv2.IMREAD_GRAYSCALE)
                seq = frame.seq
            sizes.add(frame.bytesused)
            assert picture.shape == (240, 320)
            # The first 8 blocks of the top row show the sequence number's bytes.
            stamp = bytes(int(b) for b in picture[4, 4:64:8])
            assert int.from_bytes(stamp, "little") == seq
            assert picture[12, 4 + 8 * 10] == (8 * 10 + 16 + 4 * seq) % 256
    assert len(sizes) > 1


def test_python_m_framebus_testing_explains_itself():
    out = subprocess.run([sys.executable, "-m", "framebus.testing", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "JSON" in out.stdout



def test_a_producer_that_is_not_ready_in_time_is_stopped_and_reported():
    with pytest.raises(framebus.FramebusError, match="was not ready in 0.001 s"):
        with synthetic_producer(startup_timeout=0.001):
            pytest.fail("the producer cannot be ready in a millisecond")
