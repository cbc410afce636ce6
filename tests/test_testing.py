"""The fixture framebus ships for its users' tests."""

import os

import framebus
from framebus.testing import synthetic_producer
from framebus.pattern import Pattern


def test_the_shipped_fixture_serves_checkable_frames(framebus_producer):
    with framebus.Consumer(framebus_producer) as cam, cam.get(timeout=5) as frame:
        assert Pattern(cam.format).check(frame.planes, frame.seq)


def test_synthetic_producer_cleans_up_after_itself():
    with synthetic_producer(width=64, height=48, pixel_format="GREY") as path:
        with framebus.Consumer(path) as cam:
            assert cam.format.pixel_format == "GREY"
            cam.get(timeout=5).release()
    assert not os.path.exists(os.path.dirname(path))
