"""Build the simulated V4L2 driver and run programs on top of it.

``v4l2sim.c`` is compiled into a shared library that a child process loads
with ``LD_PRELOAD``; ``FRAMEBUS_V4L2SIM`` tells it which device paths to
simulate and how (see ``tests/v4l2/README.md``). Used by the tests of the raw
V4L2 layer, of device discovery and, later, of the V4L2 capture source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIM_SOURCE = HERE / "v4l2sim.c"
CHILD = HERE / "simchild.py"
CFLAGS = ["-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared"]
LIBS = ["-ldl", "-lpthread"]


def build_sim(outdir: Path) -> Path:
    """Compile the simulator into ``outdir`` (warnings are errors); return the .so."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the simulated V4L2 driver"
    lib = outdir / "libv4l2sim.so"
    subprocess.run(
        [gcc, *CFLAGS, "-o", str(lib), str(SIM_SOURCE), *LIBS],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return lib


def sim_env(lib: Path, config: str) -> dict[str, str]:
    """The environment of a process that sees the devices ``config`` describes."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(lib)
    env["FRAMEBUS_V4L2SIM"] = config
    return env


def run_child(lib: Path, config: str, scenario: str, *args: str, timeout: float = 20) -> Any:
    """Run ``simchild.py scenario args...`` on the simulator; return its JSON answer.

    The child is always reaped (``subprocess.run`` kills it on timeout). A
    child that fails raises ``AssertionError`` with its stderr.
    """
    proc = subprocess.run(
        [sys.executable, str(CHILD), scenario, *args],
        env=sim_env(lib, config),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"child {scenario} exited {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout)


def expected_frame(sequence: int, size: int) -> bytes:
    """The pattern the simulator writes for frame ``sequence``: ``size`` bytes.

    Bytes 0..7: the sequence number, little-endian; byte i >= 8:
    ``(i + 13 * sequence) & 0xff``.
    """
    base = bytes((i + 13 * sequence) & 0xFF for i in range(256))
    body = (base * (size // 256 + 1))[:size]
    head = sequence.to_bytes(8, "little")[: min(8, size)]
    return head + body[len(head) :]


def mjpg_bytesused(sequence: int, sizeimage: int) -> int:
    """How many bytes the simulator reports for an MJPG frame."""
    return min(sizeimage, 1024 + 256 * (sequence % 97))
