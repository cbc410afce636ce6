"""Camera controls on the simulated driver: listed, set at start, set while streaming.

The simulated driver (tests/v4l2/v4l2sim.c) offers a webcam's controls as
uvcvideo names them and, with ``ctrl_log=FILE``, appends a line for every
control it is told to change (``Gain=100 streaming=1 frames=5``), so a test
in another process sees what the driver saw and when.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from framebus.apps.producer.v4l2.controls import ControlError, control_name, parse_assignment
from tests.conftest import Processes, read_json, wait_for
from tests.test_v4l2_capture import (BASE, DEV, HERE, consume, produce, refused, sim,  # noqa: F401
                                     stop)
from tests.v4l2 import harness

CHILD = str(HERE / "controlchild.py")
NAMES = ["gain", "power_line_frequency", "white_balance_temperature", "auto_exposure",
         "exposure_time_absolute", "focus_absolute"]


def child(sim: Path, config: str, scenario: str) -> dict:
    import json
    proc = subprocess.run([sys.executable, CHILD, scenario, DEV], env=harness.sim_env(sim, config),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def driver_log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_names_are_v4l2_ctl_names() -> None:
    assert control_name("Exposure Time, Absolute") == "exposure_time_absolute"
    assert control_name("White Balance Temperature") == "white_balance_temperature"
    assert control_name("Power Line Frequency") == "power_line_frequency"
    assert parse_assignment("gain=0x10") == ("gain", 16)
    assert parse_assignment(" power_line_frequency = 50 Hz") == ("power_line_frequency", "50 Hz")
    for bad in ("gain", "=3", "gain="):
        with pytest.raises(ControlError, match="--control wants NAME=VALUE"):
            parse_assignment(bad)


def test_the_simulated_driver_follows_the_control_ioctls_rules(sim: Path) -> None:
    out = child(sim, f"{BASE},sizes=320x240", "raw")
    assert out["end"] == "EINVAL"  # past the last control
    assert [name for _, _, name, _ in out["enumerated"]] == [
        "User Controls", "Gain", "Power Line Frequency", "White Balance Temperature",
        "Camera Controls", "Auto Exposure", "Exposure Time, Absolute", "Focus, Absolute"]
    assert out["menu"] == ["EINVAL", "Manual Mode", "EINVAL", "Aperture Priority Mode"]
    assert out["get"] == {"values": [32, 1]}
    assert out["clamped"] == {"values": [255]}  # an integer is clamped to its range, as the core does
    assert out["try_menu_range"] == {"errno": "ERANGE", "error_idx": 1}
    assert out["skipped_item"] == {"errno": "EINVAL", "error_idx": 0}
    assert out["unknown"] == {"errno": "EINVAL", "error_idx": 1}
    assert out["class"] == {"errno": "EACCES", "error_idx": 0}
    assert out["defaults"] == {"values": [32]}
    assert out["after"] == {"values": [255, 1]}  # a refused batch changed nothing


def test_controls_set_while_streaming_are_seen_by_the_driver(sim: Path, tmp_path: Path) -> None:
    log = tmp_path / "controls.log"
    out = child(sim, f"{BASE},sizes=320x240,ctrl_log={log}", "streaming")
    # set at start (the source's `controls=`), before streaming
    assert out["at_start"]["gain"] == 10 and out["at_start"]["power_line_frequency"] == 2
    # set while streaming, read back by the driver on a fd of its own
    assert out["set"] == {"auto_exposure": 1, "exposure_time_absolute": 500, "gain": 100,
                          "power_line_frequency": 0}
    assert {k: out["driver_after_set"][k] for k in out["set"]} == out["set"]
    assert out["published_after"] > out["published_before"] >= 5  # it kept streaming
    described = out["described"]
    assert list(described) == NAMES
    assert described["gain"] == {"name": "gain", "type": "int", "minimum": 0, "maximum": 255,
                                 "step": 1, "default": 32, "value": 100, "menu": {}, "flags": []}
    assert described["auto_exposure"]["menu"] == {"1": "Manual Mode", "3": "Aperture Priority Mode"}
    assert described["exposure_time_absolute"]["flags"] == []  # active now that exposure is manual
    # every mistake is a ValueError that says what exists, and changes nothing
    assert out["is_value_error"]
    errors = out["errors"]
    assert errors["unknown"].endswith("has no control 'bogus'; it has: " + ", ".join(NAMES))
    assert errors["range"] == "ControlError: control gain: 300 is out of range (0..255)"
    assert "7 is not on its step (0..250 step 5)" in errors["step"]
    assert "1: Manual Mode, 3: Aperture Priority Mode" in errors["menu"]
    assert "'70 Hz' is not one of 0: Disabled, 1: 50 Hz, 2: 60 Hz" in errors["word"]
    assert out["driver_after_errors"] == out["driver_after_set"]
    assert "is not open (unplugged?)" in out["after_close"]
    lines = driver_log(log)
    assert lines[:2] == ["Gain=10 streaming=0 frames=0", "Power Line Frequency=2 streaming=0 frames=0"]
    streaming = [line for line in lines if "streaming=1" in line]
    assert [line.rsplit(" streaming=", 1)[0] for line in streaming] == [
        "Auto Exposure=1", "Exposure Time, Absolute=500", "Gain=100", "Power Line Frequency=0"]
    assert all(int(line.rsplit("frames=", 1)[1]) >= 5 for line in streaming)


def test_devices_lists_each_cameras_controls(sim: Path) -> None:
    config = f"{BASE};path=/dev/video-sim1,no_controls"
    proc = subprocess.run([sys.executable, "-m", "framebus", "devices", DEV, "/dev/video-sim1"],
                          env=harness.sim_env(sim, config), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "  controls (set with framebus produce --control NAME=VALUE):" in text
    assert "    gain (int)                      : min=0 max=255 step=1 default=32 value=32\n" in text
    assert ("    power_line_frequency (menu)     : min=0 max=2 default=1 value=1 (50 Hz)\n"
            "        0: Disabled\n        1: 50 Hz\n        2: 60 Hz\n") in text
    assert "value=3 (Aperture Priority Mode)\n        1: Manual Mode\n" in text
    assert "exposure_time_absolute (int)    : min=3 max=2047 step=1 default=250 value=250 " \
           "flags=inactive" in text
    sim1 = text[text.index("/dev/video-sim1:"):]
    assert "  controls: none" in sim1 and "gain" not in sim1  # a driver without controls


def test_produce_sets_controls_from_the_command_line_and_the_config(
        procs: Processes, sim: Path, sock: str, tmp_path: Path) -> None:
    log = tmp_path / "controls.log"
    conf = tmp_path / "camera.toml"
    conf.write_text('[controls]\ngain = 40\npower_line_frequency = "60 Hz"\nfocus_absolute = 25\n')
    config = f"{BASE},ctrl_log={log}"
    producer = produce(procs, sim, config, sock, "--config", str(conf), "--control", "gain=77",
                       "--control", "auto_exposure=Manual Mode")
    report = read_json(consume(procs, sim, config, sock, "--frames", "5"), timeout=30)
    assert report["bad"] == 0
    # SIGHUP: the file's controls are set again while streaming; --control still wins for gain
    conf.write_text('[controls]\ngain = 5\nfocus_absolute = 50\n')
    producer.send_signal(signal.SIGHUP)
    wait_for(lambda: "Focus, Absolute=50 streaming=1" in log.read_text(), timeout=15,
             what="the config's control after SIGHUP")
    status, err = stop(producer)
    assert status == 0, err
    lines = driver_log(log)
    start = [line.rsplit(" streaming=", 1)[0] for line in lines if "streaming=0" in line]
    assert sorted(start) == sorted(["Gain=77", "Power Line Frequency=2", "Focus, Absolute=25",
                                    "Auto Exposure=1"])
    assert not any(line.startswith("Gain=5") for line in lines)
    assert "controls set: " in err and "gain=77" in err and "SIGHUP: controls set: focus_absolute=50" in err


@pytest.mark.parametrize("args,message", [
    (("--control", "bogus=1"), "--control: /dev/video-sim0 has no control 'bogus'; it has: "
                               + ", ".join(NAMES)),
    (("--control", "gain=999"), "--control: control gain: 999 is out of range (0..255)"),
    (("--control", "power_line_frequency=40 Hz"), "is not one of 0: Disabled, 1: 50 Hz, 2: 60 Hz"),
    (("--control", "gain"), "--control wants NAME=VALUE (e.g. gain=10), not 'gain'"),
])
def test_bad_controls_are_refused_with_what_exists(sim: Path, args: tuple[str, ...],
                                                   message: str) -> None:
    status, err = refused(sim, BASE, *args)
    assert status == 1
    assert message in err
    assert "Traceback" not in err


def test_the_synthetic_source_has_no_controls(sock: str, tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[controls]\ngain = [1, 2]\n")
    for extra in (["--control", "gain=1"], ["--config", str(conf)]):
        proc = subprocess.run([sys.executable, "-m", "framebus", "produce", "--socket", sock,
                               *extra], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert ("the synthetic source has no controls" in proc.stderr
                or "[controls] gain must be an integer or a menu item's name" in proc.stderr)
    assert not os.path.exists(sock)


def test_controls_are_set_again_when_an_unplugged_camera_comes_back(
        procs: Processes, sim: Path, sock: str, tmp_path: Path) -> None:
    """A camera plugged in again starts from its defaults (the simulator
    resets them, as hardware does); `--on-unplug wait` sets `--control` again."""
    log = tmp_path / "controls.log"
    config = f"{BASE},vanish_after=60,return_after_ms=300,ctrl_log={log}"
    producer = produce(procs, sim, config, sock, "--on-unplug", "wait", "--control", "gain=77")
    report = read_json(consume(procs, sim, config, sock, "--sessions", "2", "--frames", "5"),
                       timeout=30)
    status, err = stop(producer)
    assert status == 0, err
    assert len(report["per_session"]) >= 2 and report["bad"] == 0
    assert driver_log(log).count("Gain=77 streaming=0 frames=0") >= 2  # at start, after the replug
