"""`mypy --strict` on the package and on a user's script, as CI runs it.

The package (library and apps) is checked from the repository root with the
configuration in pyproject.toml (`make typecheck`). The user's script
(`typing_example.py`) is checked the way a user's project sees an installed
framebus: from a folder outside the repository, with the package found on the
interpreter's path, so it types only because of `framebus/py.typed`. A script
that misuses the API must fail, so these checks can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

import framebus
from framebus.errors import InvalidFormat
from framebus.formats import PIXEL_FORMATS, FrameFormat, PixelFormat

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(framebus.__file__).resolve().parent
EXAMPLE = Path(__file__).resolve().parent / "typing_example.py"
MYPY_TIMEOUT = 120  # a cold run takes about 5 s here

MISUSE = '''\
import framebus
fmt = framebus.FrameFormat(640, 480, "NV12")
bus = framebus.Producer("/tmp/cam.sock", 12)
odd = framebus.FrameFormat(640, 480, "NV13")
with framebus.Consumer("/tmp/cam.sock") as cam:
    name: str = cam.get(timeout=1.0).array
framebus.Consumer("/tmp/cam.sock", policy="newest")
'''


def mypy(args: list[str], cwd: Path, cache: Path, pythonpath: Path | None = None
         ) -> tuple[int, str]:
    """Run mypy --strict; its exit status and output."""
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
         "--no-error-summary", "--show-error-codes", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=MYPY_TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A user's folder outside the repository, and a site folder where
    framebus is installed (the package itself, linked: no copy to go stale)."""
    base = tmp_path_factory.mktemp("typing")
    site, project = base / "site", base / "project"
    site.mkdir()
    project.mkdir()
    (site / "framebus").symlink_to(PACKAGE, target_is_directory=True)
    shutil.copy(EXAMPLE, project / "example.py")
    (project / "misuse.py").write_text(MISUSE)
    return site, project, base / "cache"


def test_package_is_strict_clean(tmp_path: Path) -> None:
    status, out = mypy([], ROOT, tmp_path / "cache")  # files = pyproject's [tool.mypy]
    assert status == 0 and out.strip() == "", out


def test_readme_example_is_strict_clean(user_project: tuple[Path, Path, Path]) -> None:
    site, project, cache = user_project
    status, out = mypy(["example.py"], project, cache, pythonpath=site)
    assert status == 0 and out.strip() == "", out


def test_misuse_fails(user_project: tuple[Path, Path, Path]) -> None:
    site, project, cache = user_project
    status, out = mypy(["misuse.py"], project, cache, pythonpath=site)
    errors = re.findall(r"^misuse\.py:(\d+): error: .*\[([a-z-]+)\]$", out, re.M)
    assert status == 1, out
    assert errors == [("3", "arg-type"), ("4", "arg-type"), ("6", "assignment"),
                      ("7", "arg-type")], out
    assert '"int"; expected "FrameFormat"' in out, out


def test_without_py_typed_the_user_gets_nothing(user_project: tuple[Path, Path, Path],
                                                tmp_path: Path) -> None:
    """The marker is what makes the example check: a copy without it fails."""
    _, project, _ = user_project
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "framebus",
                    ignore=shutil.ignore_patterns("py.typed", "__pycache__"))
    status, out = mypy(["misuse.py"], project, tmp_path / "cache", pythonpath=site)
    assert status == 1 and "missing library stubs or py.typed marker" in out, out


def test_example_runs() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scores 3, async seqs" in proc.stdout


def test_pixel_format_literal_matches_runtime() -> None:
    assert set(get_args(PixelFormat)) == set(PIXEL_FORMATS)
    name: str = "NV13"  # a str from a config file: accepted, and checked at run time
    with pytest.raises(InvalidFormat, match="unknown pixel format 'NV13'; known: GREY"):
        FrameFormat(640, 480, name)  # type: ignore[arg-type]
