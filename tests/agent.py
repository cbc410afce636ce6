"""A consumer process the integration tests drive: each command does one
thing a real consumer might (hold frames, check pixels, measure memory) and
reports JSON lines on stdout."""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import mmap
import os
import sys
import time

import numpy as np
import psutil


import framebus  # noqa: E402
from framebus import _handshake as handshake  # noqa: E402
from framebus.linux import fdpass  # noqa: E402
from framebus.pattern import Pattern  # noqa: E402


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def hold(args: argparse.Namespace) -> None:
    """Take --count frames, keep them, and sleep until killed."""
    cam = framebus.Consumer(args.socket, name=args.name, max_held=args.count)
    frames = [cam.get(timeout=10) for _ in range(args.count)]
    say(held=[f.seq for f in frames])
    while True:
        time.sleep(1)


def count(args: argparse.Namespace) -> None:
    """Report how many frames arrive in --seconds, checking each one's pixels."""
    with framebus.Consumer(args.socket, name=args.name) as cam:
        pattern = Pattern(cam.format)
        cam.get(timeout=10).release()
        n = bad = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            with cam.get(timeout=10) as f:
                if not pattern.check(f.planes, f.seq) and f.valid():
                    bad += 1
                n += 1
        say(frames=n, bad=bad)


def verify(args: argparse.Namespace) -> None:
    """Hold a frame while the producer runs flat out; its pixels must not change."""
    with framebus.Consumer(args.socket, name=args.name, max_held=2) as cam:
        pattern = Pattern(cam.format)
        checked = changed = 0
        for _ in range(args.count):
            with cam.get(timeout=10) as held:
                first = pattern.check(held.planes, held.seq)
                seen = held.seq
                # While we hold it, the producer publishes many frames into
                # the other buffers; ours must stay exactly as announced.
                while True:
                    with cam.get(timeout=10) as other:
                        if other.seq >= seen + 20:
                            break
                if not (first and pattern.check(held.planes, held.seq) and held.valid()):
                    changed += 1
                checked += 1
        say(checked=checked, changed=changed)


def zerocopy(args: argparse.Namespace) -> None:
    """Where the array lives, and whether memory grows over --count frames."""
    me = psutil.Process()
    with framebus.Consumer(args.socket, name=args.name) as cam:
        for _ in range(20):
            with cam.get(timeout=10) as f:
                f.array.sum(dtype=np.uint64)  # read every pixel
        uss_start = me.memory_full_info().uss
        for _ in range(args.count):
            with cam.get(timeout=10) as f:
                f.array.sum(dtype=np.uint64)
                address = f.array.ctypes.data
                writeable = f.array.flags.writeable
        uss_end = me.memory_full_info().uss
        say(mapping=_mapping_of(address), writeable=writeable,
            uss_start=uss_start, uss_end=uss_end, frame_bytes=cam.format.sizeimage)


def _mapping_of(address: int) -> str:
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms, *rest = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return line.strip()
    return ""


def seals(args: argparse.Namespace) -> None:
    """Try to write to the producer's buffers through every door."""
    sock = handshake.connect(args.socket, 5)
    _, fds = handshake.read_hello(sock, args.socket)
    results: dict[str, str] = {}
    fd = fds[0]
    size = os.fstat(fd).st_size
    results["mmap_rw"] = _errno_of(lambda: mmap.mmap(fd, size, mmap.MAP_SHARED,
                                                     mmap.PROT_READ | mmap.PROT_WRITE))
    results["write"] = _errno_of(lambda: os.pwrite(fd, b"x", 0))
    results["ftruncate_shrink"] = _errno_of(lambda: os.ftruncate(fd, 0))
    results["ftruncate_grow"] = _errno_of(lambda: os.ftruncate(fd, size * 2))
    ro = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    address = _address_of(ro)
    rc = libc.mprotect(ctypes.c_void_p(address), size, mmap.PROT_READ | mmap.PROT_WRITE)
    results["mprotect_rw"] = "ok" if rc == 0 else errno.errorcode[ctypes.get_errno()]
    results["mmap_ro"] = "ok"
    ro.close()
    fdpass.close_all(fds)
    sock.close()
    say(**results)


def _address_of(m: mmap.mmap) -> int:
    view = np.frombuffer(m, np.uint8)
    address = view.ctypes.data
    del view
    return address


def _errno_of(action) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["hold", "count", "verify", "zerocopy", "seals"])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--name", default="agent")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    globals()[args.command](args)


if __name__ == "__main__":
    main()
