"""`framebus doctor`: what this machine has of what framebus needs, and the fix.

Each check makes one line: a status, what was found, and what to do about it.
``--json`` prints the same as one object. The exit status is 0 only when
every *core* need is met: sealed memfd buffers (``F_SEAL_FUTURE_WRITE``,
Linux 5.1), ``SO_PEERGROUPS`` (Linux 4.13), a usable ``vm.max_map_count`` and
``RLIMIT_NOFILE``, and the Python packages framebus imports. Cameras and
their permissions, the default socket directory, DMA-BUF heaps, udmabuf and
the optional packages are reported without failing the run.

Every check reads the machine through a `Probe`, whose fields default to the
real system calls and files; the tests replace one field at a time to
simulate each failure.
"""

from __future__ import annotations

import argparse
import errno
import glob
import grp
import importlib.util
import json
import mmap
import os
import platform
import pwd
import resource
import shutil
import socket
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata

from framebus import FramebusError, paths
from framebus.commands import Command
from framebus.linux import memfd

__all__ = ["Check", "Probe", "run_checks", "format_checks", "COMMAND", "OK", "WARN", "FAIL", "INFO"]

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
#: the checks whose failure means framebus cannot work here (exit status 1)
CORE_CHECKS = frozenset({"memfd seals", "SO_PEERGROUPS", "vm.max_map_count", "RLIMIT_NOFILE",
                         "python packages"})
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # asm-generic/socket.h
MIN_MAP_COUNT, GOOD_MAP_COUNT = 1024, 65530
MIN_NOFILE, GOOD_NOFILE = 256, 1024
#: what `import framebus` needs: (module, distribution)
CORE_PACKAGES = (("numpy", "numpy"), ("zmq", "pyzmq"), ("msgpack", "msgpack"), ("psutil", "psutil"))
#: the optional extras and the modules each brings: extra -> [(module, distribution)]
EXTRAS = {
    "record": [("av", "av")],
    "remote": [("zenoh", "eclipse-zenoh"), ("simplejpeg", "simplejpeg")],
    "cv": [("cv2", "opencv-python-headless|opencv-python")],
    "preview": [("aiohttp", "aiohttp"), ("simplejpeg", "simplejpeg")],
}


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str  #: ok, warn, FAIL or info
    detail: str  #: what was found
    fix: str = ""  #: what to do (empty when nothing needs doing)
    core: bool = False  #: a core need: framebus cannot work here while it fails


def _peergroups() -> bytes:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        return a.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 256)
    finally:
        a.close()
        b.close()


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def _groups() -> list[int]:
    return sorted({os.getegid(), *os.getgroups()})


def _video_nodes() -> list[str]:
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))


@dataclass
class Probe:
    """How the checks see the machine (each field replaceable in tests)."""

    kernel: Callable[[], str] = platform.release
    memfd_create: Callable[[str, int], int] = memfd.create
    add_seals: Callable[[int, int], None] = memfd.add_seals
    peergroups: Callable[[], bytes] = _peergroups
    max_map_count: Callable[[], int] = lambda: _read_int("/proc/sys/vm/max_map_count")
    nofile: Callable[[], tuple[int, int]] = lambda: resource.getrlimit(resource.RLIMIT_NOFILE)
    runtime_dir: Callable[[], str] = paths.runtime_dir
    uid: Callable[[], int] = os.geteuid
    groups: Callable[[], list[int]] = _groups
    video_nodes: Callable[[], list[str]] = _video_nodes
    can_open: Callable[[str], bool] = lambda path: os.access(path, os.R_OK | os.W_OK)
    which: Callable[[str], str | None] = shutil.which
    libcamera_compat: Callable[[], list[str]] = lambda: sorted(
        glob.glob("/usr/lib/*/libcamera/v4l2-compat.so")
        + glob.glob("/usr/lib*/libcamera/v4l2-compat.so")
        + glob.glob("/usr/libexec/libcamera/v4l2-compat.so"))
    dma_heap_dir: str = "/dev/dma_heap"
    udmabuf: str = "/dev/udmabuf"
    find_spec: Callable[[str], object] = importlib.util.find_spec
    version: Callable[[str], str] = metadata.version
    extras: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: dict(EXTRAS))


# ------------------------------------------------------------------ the kernel

def check_kernel(probe: Probe) -> Check:
    return Check("kernel", INFO, f"Linux {probe.kernel()} ({platform.machine()})")


def check_memfd_seals(probe: Probe) -> Check:
    """Make a buffer as the producer does, seal it, and see that a second
    writable mapping is refused while the first stays writable."""
    name, fix = "memfd seals", "run on Linux 5.1 or later (F_SEAL_FUTURE_WRITE arrived in 5.1)"
    try:
        fd = probe.memfd_create("framebus-doctor", mmap.PAGESIZE)
    except OSError as exc:
        return Check(name, FAIL, f"memfd_create failed: {exc.strerror}", fix)
    try:
        own = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            probe.add_seals(fd, memfd.READ_ONLY_SEALS)
            try:
                other = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            except PermissionError:
                pass
            else:
                other.close()
                return Check(name, FAIL, "a sealed buffer could still be mapped writable "
                             "(F_SEAL_FUTURE_WRITE not enforced)", fix)
            own[0] = 1  # the producer's own mapping stays writable
        finally:
            own.close()
    except OSError as exc:
        what = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return Check(name, FAIL, f"sealing a buffer with F_SEAL_FUTURE_WRITE failed ({what}) on "
                     f"Linux {probe.kernel()}: consumers could write into frames", fix)
    finally:
        os.close(fd)
    return Check(name, OK, "memfd_create and F_SEAL_SHRINK|GROW|FUTURE_WRITE|SEAL work: "
                 "consumers can only map buffers read-only")


def check_peergroups(probe: Probe) -> Check:
    name = "SO_PEERGROUPS"
    try:
        raw = probe.peergroups()
    except OSError as exc:
        what = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return Check(name, FAIL, f"getsockopt(SO_PEERGROUPS) failed ({what}): the producer cannot "
                     f"see a peer's supplementary groups, so --group/--allow-gid would miss them",
                     "run on Linux 4.13 or later")
    return Check(name, OK, f"peer credentials include supplementary groups "
                 f"({len(raw) // 4} here): --group and --allow-gid work")


# -------------------------------------------------------------------- limits

def check_max_map_count(probe: Probe) -> Check:
    name, fix = "vm.max_map_count", "sudo sysctl -w vm.max_map_count=65530 (persist it in " \
                                    "/etc/sysctl.d/)"
    try:
        count = probe.max_map_count()
    except (OSError, ValueError) as exc:
        return Check(name, WARN, f"cannot read it: {exc}", "check /proc/sys/vm/max_map_count")
    if count < MIN_MAP_COUNT:
        return Check(name, FAIL, f"{count}: a consumer maps every buffer (one mapping per DMA-BUF "
                     f"plane); fewer than {MIN_MAP_COUNT} leaves no room", fix)
    if count < GOOD_MAP_COUNT:
        return Check(name, WARN, f"{count}: enough for a few buses, below the usual {GOOD_MAP_COUNT}",
                     fix)
    return Check(name, OK, f"{count} mappings per process")


def check_nofile(probe: Probe) -> Check:
    name = "RLIMIT_NOFILE"
    soft, hard = probe.nofile()
    fix = f"ulimit -n {GOOD_NOFILE * 4} (or LimitNOFILE={GOOD_NOFILE * 4} in the systemd unit)"
    text = f"soft {soft}, hard {hard}"
    if soft < MIN_NOFILE:
        return Check(name, FAIL, f"{text}: each consumer costs the producer sockets and each "
                     f"DMA-BUF plane an fd; below {MIN_NOFILE} it runs out", fix)
    if soft < GOOD_NOFILE:
        return Check(name, WARN, f"{text}: enough for a few consumers only", fix)
    return Check(name, OK, f"{text} open files")


# ------------------------------------------------------- sockets and cameras

def check_socket_dir(probe: Probe) -> Check:
    name = "socket directory"
    try:
        path = probe.runtime_dir()
    except FramebusError as exc:
        return Check(name, WARN, str(exc).split(" (")[0],
                     "log in through a session manager (sets XDG_RUNTIME_DIR), or pass "
                     "--socket PATH in a directory only you can write")
    uid = probe.uid()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if os.access(parent, os.W_OK | os.X_OK):
            return Check(name, OK, f"{path} does not exist yet; framebus produce creates it")
        return Check(name, WARN, f"{path} is missing and {parent} is not writable",
                     f"create it: sudo install -d -o {uid} -m 0755 {path}")
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, uid):
        return Check(name, WARN, f"{path} is not a directory owned by you or root; framebus "
                     f"will not use it", f"remove it, or pass --socket PATH")
    if st.st_mode & 0o002:
        return Check(name, WARN, f"{path} is world-writable; framebus will not use it",
                     f"chmod o-w {path}")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(name, WARN, f"{path} is not writable by you", "pass --socket PATH")
    return Check(name, OK, f"{path} (mode {stat.S_IMODE(st.st_mode):04o})")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_cameras(probe: Probe) -> list[Check]:
    nodes = probe.video_nodes()
    if not nodes:
        v4l2 = os.path.isdir("/sys/module/videodev")
        return [Check("cameras", INFO, "no /dev/video* nodes" +
                      ("" if v4l2 else " (and no V4L2 in this kernel)"),
                      "plug in a camera (its driver, e.g. uvcvideo, then loads); the synthetic "
                      "source needs none")]
    uid, groups = probe.uid(), probe.groups()
    mine = ", ".join(_group_name(g) for g in groups)
    found = []
    for node in nodes:
        try:
            st = os.stat(node)
        except OSError as exc:
            found.append(Check(f"camera {node}", WARN, f"cannot stat it: {exc.strerror}"))
            continue
        owner = f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)} {stat.filemode(st.st_mode)}"
        if probe.can_open(node):
            found.append(Check(f"camera {node}", OK, f"{owner}; you can open it"))
            continue
        group = _group_name(st.st_gid)
        member = st.st_gid in groups
        why = (f"you are in {group}, yet it refuses read-write" if member else
               f"you (uid {uid}, groups {mine or 'none'}) are not in its group {group}")
        fix = (f"sudo usermod -aG {group} {_user_name(uid)}, then log in again" if not member
               else f"check its mode and ACLs (getfacl {node})")
        found.append(Check(f"camera {node}", WARN, f"{owner}: {why}", fix))
    return found


def check_dma_buf(probe: Probe) -> list[Check]:
    heaps = sorted(os.listdir(probe.dma_heap_dir)) if os.path.isdir(probe.dma_heap_dir) else []
    out = [Check("DMA-BUF heaps", INFO,
                 f"{probe.dma_heap_dir}: {', '.join(heaps)}" if heaps else
                 f"none ({probe.dma_heap_dir} missing): not needed; V4L2's own DMA-BUFs "
                 f"(mmap+expbuf) do not use them",
                 "" if heaps else "CONFIG_DMABUF_HEAPS_SYSTEM=y gives /dev/dma_heap/system")]
    if os.path.exists(probe.udmabuf):
        out.append(Check("udmabuf", INFO, f"{probe.udmabuf} present (memfds can become DMA-BUFs)"))
    else:
        out.append(Check("udmabuf", INFO, f"{probe.udmabuf} missing: not needed by framebus today",
                         "sudo modprobe udmabuf (CONFIG_UDMABUF) if a GPU or encoder should "
                         "import the bus's memfds"))
    return out


def check_libcamera(probe: Probe) -> list[Check]:
    """The two libcamera routes (a Raspberry Pi camera module needs one):
    picamera2 for ``--source libcamera``, and libcamera's V4L2 compatibility
    layer (``libcamerify``) under the V4L2 source. Neither ran on a Pi here."""
    out = []
    version = _package(probe, "picamera2", "picamera2")
    if version is None:
        out.append(Check("libcamera source", INFO, "picamera2 not importable: --source "
                         "libcamera[:N] unavailable (needed for Raspberry Pi camera modules)",
                         "on Raspberry Pi OS: sudo apt install python3-picamera2; in a "
                         "virtualenv, make it with --system-site-packages"))
    else:
        out.append(Check("libcamera source", OK, f"picamera2 {version}: framebus produce "
                         f"--source libcamera:0 --format YU12 (zero-copy from libcamera's "
                         f"buffers; tested against a stand-in, not on a Pi)"))
    wrapper, layers = probe.which("libcamerify"), probe.libcamera_compat()
    found = wrapper or (layers[0] if layers else "")
    hint = ("libcamerify framebus produce --source v4l2:/dev/video0 --format YU12 "
            "(libcamera's V4L2 compatibility layer: MMAP buffers only, so framebus uses "
            "mmap+expbuf, or mmap+copy if EXPBUF is refused; not verified on a Pi)")
    if found:
        out.append(Check("libcamerify", INFO, f"{found}: {hint}"))
    else:
        out.append(Check("libcamerify", INFO, "libcamera's V4L2 compatibility layer is not "
                         "installed (only needed to run the V4L2 source on a libcamera camera)",
                         f"sudo apt install libcamera-v4l2, then: {hint}"))
    return out


# ------------------------------------------------------------------ packages

def _package(probe: Probe, module: str, distribution: str) -> str | None:
    """The installed version of `module` ("?" when unknown), None when missing."""
    try:
        if probe.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    for name in distribution.split("|"):  # the first of the distributions that install it
        try:
            return probe.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "?"


def check_packages(probe: Probe) -> list[Check]:
    core = {dist: _package(probe, module, dist) for module, dist in CORE_PACKAGES}
    missing = [dist for dist, version in core.items() if version is None]
    out = [Check("python packages", FAIL, f"missing {', '.join(missing)}",
                 f"pip install {' '.join(missing)} (or reinstall framebus)")
           if missing else Check("python packages", OK,
                                 ", ".join(f"{d} {v}" for d, v in core.items()))]
    for extra, modules in probe.extras.items():
        versions = {dist: _package(probe, module, dist) for module, dist in modules}
        absent = [dist for dist, version in versions.items() if version is None]
        if absent:
            names = ", ".join(d.split("|")[0] for d in absent)
            out.append(Check(f"extra [{extra}]", INFO, f"not installed ({names} missing)",
                             f"pip install 'framebus[{extra}]'"))
        else:
            out.append(Check(f"extra [{extra}]", OK,
                             ", ".join(f"{d.split('|')[0]} {v}" for d, v in versions.items())))
    return out


def run_checks(probe: Probe | None = None) -> list[Check]:
    """Every check, in the order they are printed; the core needs marked."""
    p = probe or Probe()
    checks = [check_kernel(p), check_memfd_seals(p), check_peergroups(p), check_max_map_count(p),
              check_nofile(p), check_socket_dir(p), *check_cameras(p), *check_libcamera(p),
              *check_dma_buf(p), *check_packages(p)]
    return [replace(c, core=c.name in CORE_CHECKS) for c in checks]


def core_ok(checks: list[Check]) -> bool:
    return not any(c.core and c.status == FAIL for c in checks)


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<4}  {c.name:<{width}}  {c.detail}" + (f"; fix: {c.fix}" if c.fix else "")
             for c in checks]
    lines.append("core needs met: framebus can run here" if core_ok(checks) else
                 "core needs NOT met: fix the FAIL lines above")
    return "\n".join(lines) + "\n"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"ok": bool, "checks": [...]}')


def _run(args: argparse.Namespace) -> int:
    checks = run_checks()
    if args.json:
        print(json.dumps({"ok": core_ok(checks), "checks": [asdict(c) for c in checks]}))
    else:
        print(format_checks(checks), end="")
    return 0 if core_ok(checks) else 1


COMMAND = Command(
    "doctor", "check this machine for what framebus needs and say what is missing", _run,
    _arguments,
    "Check the kernel (memfd seals incl. F_SEAL_FUTURE_WRITE, SO_PEERGROUPS), vm.max_map_count, "
    "RLIMIT_NOFILE, the default socket directory, cameras and their permissions, DMA-BUF heaps "
    "and udmabuf, and the Python packages of each extra; one line each with a fix. Exit status "
    "0 only when the core needs are met.")
