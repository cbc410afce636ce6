"""`framebus doctor`: for real on this machine, and with each check's failure simulated.

The checks read the machine through a `Probe`; each test replaces one of its
fields (a seal that the kernel refuses, a low limit, a camera the user may not
open...) and checks the line that results, its fix, and whether the run
still counts as meeting the core needs.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from framebus import FramebusError
from framebus.apps.producer import doctor
from framebus.apps.producer.doctor import FAIL, INFO, OK, WARN, Check, Probe
from framebus.linux import memfd

CORE = {"memfd seals", "SO_PEERGROUPS", "vm.max_map_count", "RLIMIT_NOFILE", "python packages"}


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def one(probe: Probe, name: str) -> Check:
    checks = doctor.run_checks(probe)
    return by_name(checks)[name]


def fail_with(code: int):  # type: ignore[no-untyped-def]
    def raiser(*_args: object) -> None:
        raise OSError(code, os.strerror(code))
    return raiser


# ---------------------------------------------------------------- for real

def test_doctor_runs_for_real_and_the_core_needs_are_met_here() -> None:
    proc = subprocess.run([sys.executable, "-m", "framebus", "doctor"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "core needs met: framebus can run here"
    for line in lines[:-1]:
        assert line.split()[0] in (OK, WARN, FAIL, INFO), line
    text = proc.stdout
    assert "ok    memfd seals" in text and "F_SEAL_SHRINK|GROW|FUTURE_WRITE|SEAL work" in text
    assert "ok    SO_PEERGROUPS" in text
    for name in ("vm.max_map_count", "RLIMIT_NOFILE", "socket directory", "DMA-BUF heaps",
                 "udmabuf", "python packages", "extra [record]", "extra [remote]", "extra [cv]",
                 "extra [preview]"):
        assert f"  {name}" in text, name
    assert "camera" in text  # a line for each /dev/video* node, or one saying there are none


def test_doctor_json_is_one_object_with_every_check() -> None:
    proc = subprocess.run([sys.executable, "-m", "framebus", "doctor", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    names = {c["name"] for c in report["checks"]}
    assert CORE <= names
    assert all(set(c) == {"name", "status", "detail", "fix", "core"} for c in report["checks"])
    assert {c["name"] for c in report["checks"] if c["core"]} == CORE


def test_a_failed_core_need_makes_the_exit_status_non_zero() -> None:
    """A real failure: run under an open-file limit below what a producer needs."""
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    proc = subprocess.run([sys.executable, "-m", "framebus", "doctor"], capture_output=True,
                          text=True, timeout=60, preexec_fn=low_limit)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  RLIMIT_NOFILE" in proc.stdout and "soft 128, hard 128" in proc.stdout
    assert "fix: ulimit -n 4096" in proc.stdout
    assert proc.stdout.endswith("core needs NOT met: fix the FAIL lines above\n")


# ------------------------------------------------------ simulated failures

def test_a_kernel_without_future_write_seals_fails_the_core() -> None:
    def refuse_future_write(fd: int, seals: int) -> None:
        if seals & memfd.F_SEAL_FUTURE_WRITE:
            raise OSError(errno.EINVAL, "Invalid argument")
        memfd.add_seals(fd, seals)

    checks = doctor.run_checks(Probe(add_seals=refuse_future_write, kernel=lambda: "4.19.0"))
    check = by_name(checks)["memfd seals"]
    assert (check.status, check.core) == (FAIL, True)
    assert "F_SEAL_FUTURE_WRITE failed (EINVAL) on Linux 4.19.0" in check.detail
    assert "Linux 5.1 or later" in check.fix
    assert not doctor.core_ok(checks)
    assert doctor.format_checks(checks).endswith("core needs NOT met: fix the FAIL lines above\n")


def test_a_seal_the_kernel_ignores_is_caught_by_trying_it() -> None:
    def ignore_future_write(fd: int, seals: int) -> None:
        memfd.add_seals(fd, seals & ~memfd.F_SEAL_FUTURE_WRITE)

    check = one(Probe(add_seals=ignore_future_write), "memfd seals")
    assert check.status == FAIL and "could still be mapped writable" in check.detail


def test_no_memfd_at_all() -> None:
    check = one(Probe(memfd_create=fail_with(errno.ENOSYS)), "memfd seals")
    assert check.status == FAIL and "memfd_create failed" in check.detail


def test_no_so_peergroups() -> None:
    check = one(Probe(peergroups=fail_with(errno.ENOPROTOOPT)), "SO_PEERGROUPS")
    assert (check.status, check.core) == (FAIL, True)
    assert "ENOPROTOOPT" in check.detail and "Linux 4.13" in check.fix


@pytest.mark.parametrize("count,status", [(512, FAIL), (8000, WARN), (65530, OK)])
def test_max_map_count(count: int, status: str) -> None:
    check = one(Probe(max_map_count=lambda: count), "vm.max_map_count")
    assert check.status == status and str(count) in check.detail
    assert ("sysctl -w vm.max_map_count" in check.fix) == (status != OK)


def test_max_map_count_unreadable() -> None:
    check = one(Probe(max_map_count=fail_with(errno.ENOENT)), "vm.max_map_count")
    assert check.status == WARN and "cannot read it" in check.detail


@pytest.mark.parametrize("limits,status", [((128, 128), FAIL), ((512, 4096), WARN),
                                           ((4096, 4096), OK)])
def test_open_file_limit(limits: tuple[int, int], status: str) -> None:
    check = one(Probe(nofile=lambda: limits), "RLIMIT_NOFILE")
    assert check.status == status and check.core


def test_socket_directory_cases(tmp_path: Path) -> None:
    def where(path: Path) -> Probe:
        return Probe(runtime_dir=lambda: str(path), uid=os.geteuid)

    def no_xdg() -> str:
        raise FramebusError("no default socket directory: XDG_RUNTIME_DIR is not set (log in ...)")

    check = one(Probe(runtime_dir=no_xdg), "socket directory")
    assert check.status == WARN and "XDG_RUNTIME_DIR is not set" in check.detail
    assert "--socket PATH" in check.fix
    assert one(where(tmp_path / "framebus"), "socket directory").detail.endswith(
        "does not exist yet; framebus produce creates it")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    check = one(where(shared), "socket directory")
    assert check.status == WARN and "world-writable" in check.detail and "chmod o-w" in check.fix
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    check = one(where(theirs), "socket directory")
    assert check.status == WARN and "not a directory owned by you or root" in check.detail
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    assert one(where(good), "socket directory").status == OK


def test_cameras_and_their_permissions(tmp_path: Path) -> None:
    node = tmp_path / "video0"
    node.touch()
    node.chmod(0o660)
    os.chown(node, 0, 44)  # root:video, as udev makes them
    group = doctor._group_name(44)
    checks = doctor.check_cameras(Probe(video_nodes=lambda: [str(node)], uid=lambda: 1000,
                                        groups=lambda: [1000], can_open=lambda _: False))
    (check,) = checks
    assert check.status == WARN and f"are not in its group {group}" in check.detail
    assert check.fix.startswith(f"sudo usermod -aG {group} ") and "log in again" in check.fix
    (member,) = doctor.check_cameras(Probe(video_nodes=lambda: [str(node)], uid=lambda: 1000,
                                           groups=lambda: [1000, 44], can_open=lambda _: False))
    assert member.status == WARN and "getfacl" in member.fix
    (fine,) = doctor.check_cameras(Probe(video_nodes=lambda: [str(node)], can_open=lambda _: True))
    assert fine.status == OK and f"root:{group} -rw-rw----" in fine.detail
    (none,) = doctor.check_cameras(Probe(video_nodes=lambda: []))
    assert none.status == INFO and none.detail.startswith("no /dev/video* nodes")


def test_dma_buf_heaps_and_udmabuf(tmp_path: Path) -> None:
    heaps = tmp_path / "dma_heap"
    heaps.mkdir()
    (heaps / "system").touch()
    (tmp_path / "udmabuf").touch()
    found = by_name(doctor.check_dma_buf(Probe(dma_heap_dir=str(heaps),
                                               udmabuf=str(tmp_path / "udmabuf"))))
    assert found["DMA-BUF heaps"].detail == f"{heaps}: system"
    assert "present" in found["udmabuf"].detail
    missing = by_name(doctor.check_dma_buf(Probe(dma_heap_dir=str(tmp_path / "none"),
                                                 udmabuf=str(tmp_path / "none"))))
    assert "modprobe udmabuf" in missing["udmabuf"].fix
    assert all(c.status == INFO and not c.core for c in missing.values())


def test_python_packages_core_and_extras() -> None:
    real = Probe().find_spec

    def without_zmq(name: str) -> object:
        return None if name == "zmq" else real(name)

    checks = by_name(doctor.run_checks(Probe(find_spec=without_zmq)))
    assert (checks["python packages"].status, checks["python packages"].core) == (FAIL, True)
    assert checks["python packages"].detail == "missing pyzmq"
    everything = by_name(doctor.check_packages(Probe(find_spec=lambda _: object(),
                                                     version=lambda _: "1.0")))
    assert everything["extra [record]"] == Check("extra [record]", OK, "av 1.0")
    assert everything["extra [preview]"].detail == "aiohttp 1.0, simplejpeg 1.0"
    nothing = by_name(doctor.check_packages(Probe(find_spec=lambda name: real(name) if name in
                                                  ("numpy", "zmq", "msgpack", "psutil") else None)))
    assert nothing["python packages"].status == OK
    assert nothing["extra [remote]"].detail == "not installed (eclipse-zenoh, simplejpeg missing)"
    assert nothing["extra [remote]"].fix == "pip install 'framebus[remote]'"
