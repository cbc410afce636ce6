"""Restarts, signals, configuration reload and limits."""

import json
import os
import pwd
import resource
import signal
import subprocess
import sys
import time

import pytest

import framebus
from framebus import _handshake as handshake, _protocol as protocol
from framebus.report import query_status

from .conftest import ROOT, wait_for

FMT = framebus.FrameFormat(64, 48, "GREY")


def test_reconnect_resumes_with_the_new_producer_and_drops_old_frames(sock, procs):
    first = procs.producer(sock, fps=100)
    with framebus.Consumer(sock, reconnect=True, max_held=2) as cam:
        old = cam.get(timeout=5)
        old_session = cam._session
        first.kill()
        first.wait(timeout=5)
        procs.producer(sock, fps=100)  # replaces the stale socket the crash left
        frame = cam.get(timeout=10)
        assert cam.sessions == 2 and cam._session is not old_session
        assert old.released  # the old run's frames are gone with its mappings
        old.release()  # and releasing one again reaches nobody
        frame.release()
        for _ in range(5):
            cam.get(timeout=5).release()
        report = query_status(sock)
        assert report["errors"] == 0
        assert report["consumers"][0]["late_releases"] == 0


def test_reconnect_waits_while_no_producer_is_there(sock, procs):
    producer = procs.producer(sock, fps=100)
    with framebus.Consumer(sock, reconnect=True) as cam:
        cam.get(timeout=5).release()
        producer.send_signal(signal.SIGTERM)
        producer.wait(timeout=10)
        with pytest.raises(TimeoutError):
            while True:
                cam.get(timeout=0.5).release()
        procs.producer(sock, fps=100)
        cam.get(timeout=10).release()
        assert cam.sessions == 2


def test_sigterm_tells_consumers_why(sock, procs):
    producer = procs.producer(sock)
    with framebus.Consumer(sock) as cam:
        producer.send_signal(signal.SIGTERM)
        with pytest.raises(framebus.ProducerGone) as info:
            while True:
                cam.get(timeout=5).release()
    assert info.value.clean and info.value.reason == "producer stopped by signal"
    assert producer.wait(timeout=10) == 0


NOBODY = pwd.getpwnam("nobody")

_WAIT_AS_NOBODY = """
import json, os, sys
import framebus, framebus._session, zmq, numpy
os.setgroups([]); os.setgid({gid}); os.setuid({uid})
with framebus.Consumer({sock!r}, name="nobody") as cam:
    cam.get(timeout=5).release()
    print(json.dumps({{"attached": True}}), flush=True)
    try:
        while True:
            cam.get(timeout=20).release()
    except framebus.ProducerGone as exc:
        print(json.dumps({{"gone": exc.reason}}), flush=True)
"""


@pytest.mark.skipif(os.getuid() != 0, reason="dropping to another uid needs root")
def test_sighup_reloads_the_config_and_evicts_consumers_no_longer_allowed(workdir, procs):
    os.chmod(workdir, 0o755)
    sock = os.path.join(workdir, "cam.sock")
    conf = os.path.join(workdir, "framebus.toml")
    with open(conf, "w") as f:
        f.write(f"allow_uids = [{NOBODY.pw_uid}]\nlease_timeout = 2.0\n")
    producer = procs.producer(sock, "--config", conf, "--mode", "666", fps=50)
    assert query_status(sock)["lease_timeout"] == 2.0
    child = procs.start("-c", _WAIT_AS_NOBODY.format(root=ROOT, gid=NOBODY.pw_gid,
                                                      uid=NOBODY.pw_uid, sock=sock))
    from .conftest import read_json
    assert read_json(child) == {"attached": True}
    with open(conf, "w") as f:
        f.write("allow_uids = []\nlease_timeout = 0.5\n")
    producer.send_signal(signal.SIGHUP)
    assert read_json(child) == {"gone": "access revoked by the producer"}
    wait_for(lambda: query_status(sock)["lease_timeout"] == 0.5, what="the reload")
    assert query_status(sock)["consumers"] == []
    with open(conf, "w") as f:
        f.write("lease_timeout = -1\n")  # a bad file keeps the running settings
    producer.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert producer.poll() is None and query_status(sock)["lease_timeout"] == 0.5


def test_bad_config_is_a_clear_error(workdir, sock):
    conf = os.path.join(workdir, "bad.toml")
    with open(conf, "w") as f:
        f.write("allow_uids = 'everyone'\n")
    done = subprocess.run([sys.executable, "-m", "framebus", "produce", "--socket", sock,
                           "--config", conf], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 1 and "allow_uids must be a list" in done.stderr


def test_max_consumers_refuses_the_newcomer_and_spares_the_others(sock, procs):
    procs.producer(sock, "--max-consumers", "2", fps=100)
    with framebus.Consumer(sock, max_held=1) as a, framebus.Consumer(sock, max_held=1) as b:
        with pytest.raises(framebus.Refused, match="max_consumers"):
            framebus.Consumer(sock, max_held=1)
        for cam in (a, b):
            cam.get(timeout=5).release()


def _low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))


@pytest.mark.timeout(120)
def test_out_of_fds_the_newcomer_is_refused_naming_rlimit_nofile(sock, procs):
    producer = procs.start("-m", "framebus", "produce", "--socket", sock, "--fps", "100",
                           "--buffers", "64", "--width", "64", "--height", "48",
                           preexec_fn=_low_fd_limit, stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(sock), what="the producer")
    cams = []
    try:
        with pytest.raises(framebus.Refused, match="RLIMIT_NOFILE"):
            for _ in range(40):
                cams.append(framebus.Consumer(sock, max_held=1))
        assert len(cams) >= 2
        for cam in cams:  # everyone already attached is untouched
            cam.get(timeout=5).release()
    finally:
        for cam in cams:
            cam.close()
    assert producer.poll() is None
    wait_for(lambda: _status_or_none(sock), what="the producer to take clients again")


def _status_or_none(sock):
    try:
        return query_status(sock)
    except framebus.FramebusError:
        return None


def test_max_map_count_is_checked_before_mapping(sock, monkeypatch):
    from framebus import _mapping as mapping
    with framebus.Producer(sock, FMT) as bus:
        monkeypatch.setattr(mapping, "max_map_count", lambda: mapping.map_count() + 10)
        with pytest.raises(framebus.FramebusError, match="vm.max_map_count"):
            framebus.Consumer(sock)
        monkeypatch.undo()
        with framebus.Consumer(sock) as cam:
            bus.publish(bus.acquire(timeout=1))
            cam.get(timeout=2).release()


def test_a_client_that_never_attaches_is_dropped_after_the_handshake_timeout(sock):
    with framebus.Producer(sock, FMT, handshake_timeout=0.3):
        conn = handshake.connect(sock, 5)
        _, fds = handshake.read_hello(conn, sock)
        for fd in fds:
            os.close(fd)
        conn.settimeout(5)
        reply = protocol.decode(conn.recv(4096), protocol.CONTROL, 4096)
        assert reply.kind is protocol.REFUSE and reply.values[0] == "timeout"
        assert conn.recv(4096) == b""
        conn.close()


def test_consume_reconnect_carries_on_across_a_producer_restart(sock, procs):
    first = procs.producer(sock, fps=50)
    consume = procs.start("-m", "framebus", "consume", "--socket", sock, "--frames", "60",
                          "--reconnect", "--json", "--interval", "0.2")
    from .conftest import read_json
    wait_for(lambda: read_json(consume)["frames"] >= 5, what="the first frames")
    first.kill()
    first.wait(timeout=5)
    time.sleep(0.5)
    procs.producer(sock, fps=50)
    assert consume.wait(timeout=30) == 0, consume.stderr.read()
    final = [json.loads(line) for line in consume.stdout.read().splitlines() if line.strip()][-1]
    assert final["final"] is True and final["frames"] >= 60
