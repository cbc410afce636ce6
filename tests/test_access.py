"""Access control with a real second uid: the tests run as root, so each
consumer that must be refused is a child that drops to `nobody` first."""

import json
import os
import pwd
import subprocess
import sys

import pytest
import zmq

import framebus
from framebus import _protocol as protocol
from framebus.report import query_status

from .conftest import ROOT, publishing, wait_for

NOBODY = pwd.getpwnam("nobody")
FMT = framebus.FrameFormat(64, 48, "GREY")

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="dropping to another uid needs root")

# Runs in a child as `nobody`: attach, take one frame, print what happened.
# Everything is imported first: nobody cannot read this machine's Python install.
_AS_NOBODY = """
import json, os, sys
import framebus, framebus._session, zmq, numpy
os.setgroups([]); os.setgid({gid}); os.setuid({uid})
try:
    with framebus.Consumer({sock!r}, name="nobody") as cam:
        with cam.get(timeout=5) as frame:
            print(json.dumps({{"ok": True, "seq": frame.seq, "uid": os.getuid()}}))
except framebus.FramebusError as exc:
    print(json.dumps({{"ok": False, "type": type(exc).__name__, "message": str(exc),
                      "permission": isinstance(exc, PermissionError)}}))
"""


def run_as_nobody(sock: str) -> dict:
    code = _AS_NOBODY.format(root=ROOT, gid=NOBODY.pw_gid, uid=NOBODY.pw_uid, sock=sock)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def open_dir(workdir):
    os.chmod(workdir, 0o755)  # let nobody reach the socket file itself
    return workdir


def test_socket_mode_keeps_other_users_out(open_dir):
    sock = os.path.join(open_dir, "cam.sock")
    with framebus.Producer(sock, FMT):  # default mode 0660, owner root
        result = run_as_nobody(sock)
    assert result["ok"] is False and result["permission"] is True
    assert result["type"] == "PermissionDenied"
    assert "not allowed to open" in result["message"]


def test_peer_credentials_refuse_a_uid_not_on_the_list(open_dir):
    sock = os.path.join(open_dir, "cam.sock")
    with framebus.Producer(sock, FMT, mode=0o666) as bus:
        result = run_as_nobody(sock)
        assert query_status(sock)["refused"] == 1
        assert query_status(sock)["consumers"] == []
        assert bus is not None
    assert result["ok"] is False and result["type"] == "PermissionDenied"
    assert f"uid {NOBODY.pw_uid}" in result["message"] and "may not attach" in result["message"]


def test_an_allowed_uid_attaches_and_reaches_the_private_bus(open_dir):
    sock = os.path.join(open_dir, "cam.sock")
    with framebus.Producer(sock, FMT, mode=0o666, allow_uids=[NOBODY.pw_uid]) as bus:
        stop, thread = publishing(bus)
        try:
            result = run_as_nobody(sock)
        finally:
            stop.set()
            thread.join(timeout=5)
    assert result == {"ok": True, "seq": result["seq"], "uid": NOBODY.pw_uid}


def test_an_allowed_gid_attaches(open_dir):
    sock = os.path.join(open_dir, "cam.sock")
    with framebus.Producer(sock, FMT, mode=0o666, allow_gids=[NOBODY.pw_gid]) as bus:
        stop, thread = publishing(bus)
        try:
            assert run_as_nobody(sock)["ok"] is True
        finally:
            stop.set()
            thread.join(timeout=5)


def test_the_zmq_endpoint_directory_cannot_be_listed_by_others(open_dir):
    sock = os.path.join(open_dir, "cam.sock")
    with framebus.Producer(sock, FMT, mode=0o666) as bus:
        private = bus._dir.path
        assert os.stat(private).st_mode & 0o777 == 0o751
    with framebus.Producer(sock, FMT) as bus:
        assert os.stat(bus._dir.path).st_mode & 0o777 == 0o750
    with framebus.Producer(sock, FMT, mode=0o600) as bus:
        assert os.stat(bus._dir.path).st_mode & 0o777 == 0o700
        assert os.stat(sock).st_mode & 0o777 == 0o600
    assert not os.path.exists(private)


def test_socket_group_is_applied(workdir):
    sock = os.path.join(workdir, "cam.sock")
    with framebus.Producer(sock, FMT, group=NOBODY.pw_gid) as bus:
        assert os.stat(sock).st_gid == NOBODY.pw_gid
        assert os.stat(bus._dir.path).st_gid == NOBODY.pw_gid


def test_a_consumer_cannot_release_another_consumers_lease(sock):
    with framebus.Producer(sock, FMT, buffers=6) as bus, \
            framebus.Consumer(sock, name="victim") as victim, \
            framebus.Consumer(sock, name="thief") as thief:
        bus.publish(bus.acquire(timeout=1))
        frame = victim.get(timeout=2)
        # The thief names the victim's frame in a RELEASE on its own session.
        thief._session.send(protocol.RELEASE.encode([frame.seq], 0, 0))
        wait_for(lambda: _consumer(bus, "thief")["errors"] == 1, what="the thief's error")
        assert _consumer(bus, "victim")["held"] == 1
        assert frame.valid()
        frame.release()


def test_a_second_connection_to_the_bus_is_cut_and_never_heard(sock):
    """Only an attached consumer's own zmq connection is kept (matched by its
    kernel credentials): a second one from the same process, with a guessed
    routing id, is shut down at once and nothing it sends is acted on."""
    with framebus.Producer(sock, FMT, buffers=6, lease_timeout=30) as bus, \
            framebus.Consumer(sock, name="victim") as victim:
        bus.publish(bus.acquire(timeout=1))
        frame = victim.get(timeout=2)
        ctx = zmq.Context()
        forger = ctx.socket(zmq.DEALER)
        try:
            forger.setsockopt(zmq.LINGER, 0)
            forger.setsockopt(zmq.ROUTING_ID, b"F" + b"\x00" * 15)  # a guessed token
            forger.connect(bus._server.endpoint_for(os.getuid()))
            forger.send(protocol.RELEASE.encode([frame.seq], 0, 0))
            wait_for(lambda: bus.stats()["relay"].get("cut", 0) >= 1, what="the cut connection")
            assert _consumer(bus, "victim")["held"] == 1
            assert frame.valid()
        finally:
            forger.close()
            ctx.term()
        frame.release()


def _consumer(bus, name):
    return next(c for c in bus.stats()["consumers"] if c["name"] == name)
