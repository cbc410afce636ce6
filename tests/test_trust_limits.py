"""Trust, continued (DESIGN.md): fair admission against a handshake hoarder, a
10,000-connection flood on the control socket, default socket paths out of
/tmp, and every error that leaves the API a FramebusError.

Hostile peers run as `nobody` (tests/hostile.py)."""

from __future__ import annotations

import errno
import os
import pwd
import socket
import subprocess
import sys

import psutil
import pytest

import framebus
from framebus import _handshake as handshake, paths
from framebus.buffers import MEMFD, BufferTable, Memory, Plane
from framebus.linux import memfd
from framebus.report import query_status

from .conftest import ROOT, read_json
from .test_trust import FMT, attach_to_fake, hostile, publishing, run_hostile

NOBODY = pwd.getpwnam("nobody")

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="hostile peers of another uid need root")


@pytest.fixture
def open_sock(workdir):
    os.chmod(workdir, 0o755)
    return os.path.join(workdir, "cam.sock")


# --- fair admission -------------------------------------------------------------------------

@needs_root
@pytest.mark.timeout(120)
def test_a_handshake_hoarder_cannot_lock_out_another_uid(open_sock, procs):
    with framebus.Producer(open_sock, FMT, mode=0o666, allow_uids=[NOBODY.pw_uid],
                           max_consumers=64) as bus:
        stop, thread = publishing(bus)
        try:
            hoarder = hostile(procs, "--as", "nobody", "hoard", open_sock, "--count", "64",
                              "--settle", "2")
            seen = read_json(hoarder)
            # Only its own few handshakes are pending; the rest were refused at once.
            assert seen["outcomes"]["hello"] == 8, seen
            assert seen["outcomes"]["refuse:limit"] > 0
            assert f"uid {NOBODY.pw_uid} already has 8 unfinished handshakes" in seen["reasons"][0]
            for _ in range(5):  # another uid attaches every time, while the hoarder hoards
                with framebus.Consumer(open_sock, timeout=10) as cam, cam.get(timeout=10):
                    pass
            assert query_status(open_sock)["consumers"] == []
            assert hoarder.poll() is None
        finally:
            stop.set()
            thread.join(timeout=5)


@needs_root
def test_pending_handshakes_reserve_no_consumer_slot(sock):
    """max_consumers counts attached consumers, not handshakes in flight."""
    with framebus.Producer(sock, FMT, max_consumers=1) as bus:
        idle = [handshake.connect(sock, 5) for _ in range(3)]
        try:
            for conn in idle:
                _, fds = handshake.read_hello(conn, sock)
                for fd in fds:
                    os.close(fd)
            with framebus.Consumer(sock) as cam:
                bus.publish(bus.acquire(timeout=1))
                cam.get(timeout=5).release()
                with pytest.raises(framebus.Refused, match="max_consumers"):
                    framebus.Consumer(sock)
        finally:
            for conn in idle:
                conn.close()


@needs_root
@pytest.mark.timeout(240)
def test_ten_thousand_raw_connections_leave_the_producer_serving(open_sock, procs):
    producer = procs.producer(open_sock, "--mode", "666", "--allow-uid", str(NOBODY.pw_uid),
                              fps=100, width=64, height=48, fmt="GREY")
    with framebus.Consumer(open_sock, name="honest", timeout=10) as honest:
        honest.get(timeout=10).release()
        flood = hostile(procs, "--as", "nobody", "flood", open_sock, "--count", "10000")
        report = read_json(flood, timeout=180)
        assert report["opened"] == 10000, report
        # The producer refused them (all but its per-uid handful) and kept no fd for them.
        assert report["outcomes"].get("hello", 0) <= 8
        assert producer.poll() is None
        assert psutil.Process(producer.pid).num_fds() < 200
        last = 0
        for _ in range(20):  # the attached consumer is still served
            with honest.get(timeout=10) as frame:
                assert frame.seq > last
                last = frame.seq
        with framebus.Consumer(open_sock, name="newcomer", timeout=10) as newcomer:
            newcomer.get(timeout=10).release()  # and a newcomer of another uid attaches
        assert flood.poll() is None  # the flood is still held open
    flood.stdin.close()
    assert flood.wait(timeout=60) == 0
    assert producer.poll() is None


# --- default socket paths -------------------------------------------------------------------

def test_the_default_socket_is_never_under_tmp(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.default_socket() == "/run/framebus/cam0.sock"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert paths.default_socket() == "/run/user/1000/framebus/cam0.sock"
    for unusable in ("", "relative/dir"):
        monkeypatch.setenv("XDG_RUNTIME_DIR", unusable)
        with pytest.raises(framebus.FramebusError, match="XDG_RUNTIME_DIR"):
            paths.default_socket()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    with pytest.raises(framebus.FramebusError, match="XDG_RUNTIME_DIR is not set"):
        paths.default_socket()


def test_every_command_names_the_default_socket():
    for command in ("produce", "consume", "status"):
        done = subprocess.run([sys.executable, "-m", "framebus", command, "--help"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0
        assert paths.default_socket() in " ".join(done.stdout.split()), command
        assert "/tmp" not in done.stdout


# Run as nobody without XDG_RUNTIME_DIR: the commands' entry points are loaded
# before dropping privileges (nobody cannot read the install).
_COMMAND_AS_NOBODY = """
import os, sys
import framebus.cli, framebus.commands, framebus.report
commands = framebus.commands.load_commands()
for c in commands.values():
    c.add_arguments(__import__("argparse").ArgumentParser())
import framebus.apps.consumers.monitor, framebus.apps.producer.daemon
os.setgroups([]); os.setgid({gid}); os.setuid({uid})
framebus.cli.load_commands = lambda: commands
sys.exit(framebus.cli.main(sys.argv[1:]))
"""


@needs_root
@pytest.mark.parametrize("command", ["status", "consume", "produce"])
def test_without_xdg_runtime_dir_a_non_root_command_says_so(command):
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = _COMMAND_AS_NOBODY.format(gid=NOBODY.pw_gid, uid=NOBODY.pw_uid)
    done = subprocess.run([sys.executable, "-c", code, command], capture_output=True,
                          text=True, timeout=60, env=env, cwd="/")
    assert done.returncode == 1, done
    assert "XDG_RUNTIME_DIR is not set" in done.stderr and "Traceback" not in done.stderr


# --- every error that leaves the API is a FramebusError -------------------------------------

def _table(memories, buffers):
    return {"memories": memories, "buffers": buffers}


@pytest.mark.parametrize("wire, message", [
    (_table([[4096.5, "memfd"]], [[[0, 0, 3072, 64]]]), "memory size must be an int"),
    (_table([[float("inf"), "memfd"]], [[[0, 0, 3072, 64]]]), "memory size must be an int"),
    (_table([[4096, "memfd"]], [[[0, 0, float("inf"), 64]]]), "plane field must be an int"),
    (_table([[2**70, "memfd"]], [[[0, 0, 3072, 64]]]), "memory size must be an int"),
    (_table([[4096, "memfd"]], [[[0, -4096, 3072, 64]]]), "plane field must be an int"),
    (_table([[4096, "memfd"]], [[[True, 0, 3072, 64]]]), "plane field must be an int"),
    (_table([[8192, "memfd"]], [[[0, 100, 3072, 64]]]), "not page-aligned"),
    (_table([[4096, 7]], [[[0, 0, 3072, 64]]]), "memory kind must be a str"),
    (_table([[4096]], [[[0, 0, 3072, 64]]]), "malformed"),
    (_table([[4096, "memfd"]], [[[0, 0, 3072]]]), "malformed"),
    (_table("x", [[[0, 0, 3072, 64]]]), "malformed"),
    ([1, 2], "malformed"),
])
def test_a_bad_buffer_table_is_a_framebus_error(wire, message):
    with pytest.raises(framebus.FramebusError, match=message):
        BufferTable.from_wire(wire, FMT)


def test_an_unaligned_offset_from_a_producer_is_refused(sock):
    wire = _table([[8192, "memfd"]], [[[0, 512, 3072, 64]]])
    table = BufferTable((Memory(8192, MEMFD),), ((Plane(0, 512, 3072, 64),),))
    assert table.to_wire() == wire
    with pytest.raises(framebus.FramebusError, match="not page-aligned"):
        attach_to_fake(sock, _own_endpoint(sock), table, [memfd.create("x", 8192)])


@pytest.mark.parametrize("seals, message", [
    (0, "not sealed against shrink, grow, future-write, seal"),
    (memfd.F_SEAL_SHRINK, "not sealed against grow, future-write, seal"),
    (memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW | memfd.F_SEAL_SEAL, "future-write"),
])
def test_seals_are_checked_on_every_memfd_before_its_size(sock, seals, message):
    # The buffer is also too small: the seal check must come first.
    fd = memfd.create("unsealed", 4096)
    if seals:
        memfd.add_seals(fd, seals)
    table = BufferTable((Memory(8192, MEMFD),), ((Plane(0, 0, 3072, 64),),))
    with pytest.raises(framebus.FramebusError, match=message):
        attach_to_fake(sock, _own_endpoint(sock), table, [fd])


def _own_endpoint(sock):
    private = os.path.join(os.path.dirname(os.path.realpath(sock)), "bus")
    if not os.path.isdir(private):
        os.mkdir(private, 0o700)
        bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound.bind(os.path.join(private, "bus-0"))
        bound.close()  # the file stays: enough for the consumer's ownership check
    return "ipc://" + os.path.join(private, "bus-0")


@needs_root
def test_listen_without_permission_keeps_its_errno(workdir):
    os.chmod(workdir, 0o755)  # nobody may enter but not create
    result = run_hostile("--as", "nobody", "listen", os.path.join(workdir, "cam.sock"))
    assert result["type"] == "PermissionDenied" and result["permission"] is True, result
    assert result["errno"] == errno.EACCES
    assert "cannot create socket" in result["message"]


def test_a_full_listen_backlog_is_a_retryable_framebus_error(sock):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(sock)
    listener.listen(0)
    queued = []
    try:
        while True:  # fill the backlog (nobody accepts)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
            try:
                conn.connect(sock)
            except BlockingIOError:
                conn.close()
                break
            queued.append(conn)
        with pytest.raises(framebus.Timeout, match="backlog stayed full.*try again") as full:
            framebus.Consumer(sock, timeout=0.3)
        assert isinstance(full.value, framebus.FramebusError)
        listener.accept()[0].close()  # room again: the next attempt connects
        handshake.connect(sock, 5).close()
    finally:
        for conn in queued:
            conn.close()
        listener.close()


def test_attaching_to_something_that_is_not_a_socket_is_a_framebus_error(workdir):
    path = os.path.join(workdir, "file")
    open(path, "w").close()
    with pytest.raises(framebus.FramebusError):
        framebus.Consumer(path, timeout=1)
    with pytest.raises(framebus.FramebusError):
        framebus.Consumer(os.path.join(workdir, "x" * 120), timeout=1)
