"""One installed name, and a library that never imports its applications."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

from .conftest import ROOT

LIBRARY = pathlib.Path(ROOT, "framebus")
# An application, by any of the names it could be reached by (module, -m string).
APP = re.compile(r"\b(framebus\.apps|framebus_bench|benchmarks|producer|consumers)\.\w|"
                 r"^\s*(from|import)\s+(producer|consumers|benchmarks|framebus\.apps|framebus_bench)\b|"
                 r"sys\.path", re.M)


def test_the_library_names_no_application():
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        if path.parent.name == "apps":
            continue  # the namespace the applications install into
        for match in APP.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)!r}")
    assert offenders == []


@pytest.mark.timeout(180)
def test_the_wheel_installs_one_top_level_name(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(tmp_path), ROOT],
                   check=True, capture_output=True, timeout=170)
    (wheel,) = tmp_path.glob("framebus-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        assert top_level == {"framebus"}
        assert "framebus/py.typed" in names
        assert any(n.startswith("framebus/apps/producer/") for n in names)
        assert not any("bench" in n.split("/")[0] for n in names)


@pytest.fixture
def users_directory(tmp_path):
    """A user's working directory holding their own `producer.py` and `consumers/`."""
    (tmp_path / "producer.py").write_text("raise SystemExit('the user producer.py was imported')\n")
    (tmp_path / "consumers").mkdir()
    (tmp_path / "consumers" / "__init__.py").write_text(
        "raise SystemExit('the user consumers package was imported')\n")
    return tmp_path


def test_produce_and_the_fixture_work_beside_a_users_own_modules(users_directory, workdir):
    sock = os.path.join(workdir, "cam.sock")
    script = (
        "import framebus, sys\n"
        "from framebus.testing import synthetic_producer\n"
        "with synthetic_producer(width=64, height=48, pixel_format='GREY') as path:\n"
        "    with framebus.Consumer(path) as cam, cam.get(timeout=5) as frame:\n"
        "        print('fixture', frame.seq)\n"
    )
    fixture = subprocess.run([sys.executable, "-c", script], cwd=users_directory,
                             capture_output=True, text=True, timeout=60)
    assert fixture.returncode == 0 and fixture.stdout.startswith("fixture"), fixture.stderr
    producer = subprocess.Popen(
        [sys.executable, "-m", "framebus", "produce", "--socket", sock, "--width", "64",
         "--height", "48", "--format", "GREY", "--fps", "50"],
        cwd=users_directory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        consume = subprocess.run(
            [sys.executable, "-m", "framebus", "consume", "--socket", sock, "--frames", "5",
             "--wait", "10"], cwd=users_directory, capture_output=True, text=True, timeout=60)
        assert consume.returncode == 0, consume.stderr
    finally:
        producer.terminate()
        assert producer.wait(timeout=10) == 0, producer.stderr.read()
        producer.stderr.close()
