"""Camera controls through the producer: listed and set by a client while it streams."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any, Mapping

import pytest

import framebus
from framebus import controls

FMT = framebus.FrameFormat(64, 48, "GREY")


class FakeCamera:
    """A `framebus.controls.Controls` with a gain and a menu, counting calls."""

    def __init__(self) -> None:
        self.values = {"gain": 10, "power_line_frequency": 1}
        self.calls = 0
        self.thread: str | None = None

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": "gain", "type": "int", "minimum": 0, "maximum": 255, "step": 1,
                 "default": 10, "value": self.values["gain"], "menu": {}, "flags": []},
                {"name": "power_line_frequency", "type": "menu", "minimum": 0, "maximum": 2,
                 "step": 1, "default": 1, "value": self.values["power_line_frequency"],
                 "menu": {0: "Disabled", 1: "50 Hz", 2: "60 Hz"}, "flags": []}]

    def set(self, values: Mapping[str, int | str]) -> dict[str, int]:
        self.calls += 1
        self.thread = threading.current_thread().name
        for name, value in values.items():
            if name not in self.values:
                raise ValueError(f"no control {name!r}; there are: {', '.join(self.values)}")
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise ValueError(f"{name} must be 0..255, not {value!r}")
        self.values.update(values)  # type: ignore[arg-type]
        return {name: self.values[name] for name in values}


def test_a_client_lists_and_sets_controls_while_frames_flow(sock):
    camera = FakeCamera()
    with framebus.Producer(sock, FMT, controls=camera) as bus, framebus.Consumer(sock) as cam:
        listed = controls.list_controls(sock)
        assert [c["name"] for c in listed] == ["gain", "power_line_frequency"]
        assert listed[1]["menu"] == {0: "Disabled", 1: "50 Hz", 2: "60 Hz"}
        bus.publish(bus.acquire(timeout=1))
        with cam.get(timeout=2):
            assert controls.set_controls(sock, {"gain": 100}) == {"gain": 100}
        assert camera.values["gain"] == 100 and camera.thread == "framebus-server"
        assert controls.list_controls(sock)[0]["value"] == 100
        bus.publish(bus.acquire(timeout=1))
        cam.get(timeout=2).release()


def test_unknown_names_and_bad_values_are_refused_naming_what_exists(sock):
    camera = FakeCamera()
    with framebus.Producer(sock, FMT, controls=camera):
        with pytest.raises(framebus.Refused, match="no control 'exposure'; there are: gain"):
            controls.set_controls(sock, {"exposure": 5})
        with pytest.raises(framebus.Refused, match="0..255"):
            controls.set_controls(sock, {"gain": 900})
        assert camera.values["gain"] == 10


def test_a_source_without_controls_says_so(sock):
    with framebus.Producer(sock, FMT):
        with pytest.raises(framebus.Refused, match="no controls"):
            controls.list_controls(sock)


def test_the_cli_lists_and_sets(sock):
    camera = FakeCamera()
    with framebus.Producer(sock, FMT, controls=camera):
        run = [sys.executable, "-m", "framebus", "controls", "--socket", sock]
        listed = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)[0]["name"] == "gain"
        done = subprocess.run([*run, "--set", "gain=42"], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0 and done.stdout.strip() == "gain = 42", done.stderr
        bad = subprocess.run([*run, "--set", "gain"], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr
    assert camera.values["gain"] == 42
