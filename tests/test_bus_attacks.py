"""Attacks on the zmq side of a producer, by an admitted consumer of another uid.

Each test runs a real producer (root), an honest consumer (root) and an
attacker (`nobody`, admitted with --allow-uid) that does its worst on its own
bus endpoint. What must hold: the producer stays up with bounded memory, the
honest consumer keeps getting frames in order during the attack, and a new
consumer attaches afterwards. How fast the honest consumer goes meanwhile is a
figure for `tests/bus_attacker.py`'s users (see docs/trust.md), not asserted
here: these machines are shared and noisy.
"""

from __future__ import annotations

import os
import pwd
import subprocess

import psutil
import pytest

import framebus

from .conftest import ROOT, read_json

NOBODY = pwd.getpwnam("nobody")
ATTACKER = os.path.join(ROOT, "tests", "bus_attacker.py")

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="dropping to another uid needs root")


@pytest.fixture
def open_sock(workdir):
    """A socket path in a directory `nobody` can enter."""
    os.chmod(workdir, 0o755)
    return os.path.join(workdir, "cam.sock")


def _producer(procs, sock):
    return procs.producer(sock, "--mode", "666", "--allow-uid", str(NOBODY.pw_uid),
                          "--buffers", "10", fps=60, width=160, height=120, fmt="GREY")


def _attack(procs, sock, command, *extra):
    return procs.start(ATTACKER, "--as", "nobody", command, sock, *extra,
                       stdin=subprocess.PIPE)


def _honest(procs, sock, seconds):
    proc = procs.start(ATTACKER, "honest", sock, "--seconds", str(seconds))
    assert read_json(proc)["attached"]
    return proc


def _after(procs, sock, producer, honest):
    figures = read_json(honest, timeout=60)
    assert producer.poll() is None, "the producer died"
    assert figures["frames"] > 0 and figures["increasing"], figures
    with framebus.Consumer(sock, name="newcomer") as cam, cam.get(timeout=5) as frame:
        assert frame.seq > 0
    return figures


@pytest.mark.timeout(120)
def test_ten_thousand_raw_connections_to_the_bus_endpoint(open_sock, procs):
    producer = _producer(procs, open_sock)
    honest = _honest(procs, open_sock, 8)
    attacker = _attack(procs, open_sock, "connect", "--count", "10000")
    result = read_json(attacker, timeout=90)
    assert result["opened"] + result["refused"] == 10000
    _after(procs, open_sock, producer, honest)
    fds = psutil.Process(producer.pid).num_fds()
    assert fds < 200, f"the producer holds {fds} fds"


@pytest.mark.timeout(120)
def test_a_credit_flood_cuts_off_the_flooder_only(open_sock, procs):
    producer = _producer(procs, open_sock)
    honest = _honest(procs, open_sock, 6)
    attacker = _attack(procs, open_sock, "flood", "--seconds", "3")
    result = read_json(attacker, timeout=60)
    assert "flooding" in result["cut_off"], result
    _after(procs, open_sock, producer, honest)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", ["latest", "queue"])
def test_a_credit_flood_on_the_socket_channel_cuts_off_the_flooder_only(open_sock, procs, policy):
    # At a camera's pace acquire() reads the acks, a bounded batch per frame:
    # a flood must still be read at its own rate, and so be seen as one.
    producer = _producer(procs, open_sock)
    honest = _honest(procs, open_sock, 6)
    attacker = _attack(procs, open_sock, "sockflood", "--seconds", "3", "--policy", policy)
    result = read_json(attacker, timeout=60)
    assert "flooding" in result["cut_off"], result
    _after(procs, open_sock, producer, honest)


@pytest.mark.timeout(120)
def test_multipart_messages_cannot_bloat_the_producer(open_sock, procs):
    producer = _producer(procs, open_sock)
    honest = _honest(procs, open_sock, 8)
    rss_before = psutil.Process(producer.pid).memory_info().rss
    attacker = _attack(procs, open_sock, "multipart")  # 3 x 20,000 x 4,000 bytes
    result = read_json(attacker, timeout=90)
    growth = psutil.Process(producer.pid).memory_info().rss - rss_before
    assert growth < 150 * 2**20, f"the producer grew by {growth / 2**20:.0f} MB"
    assert result["cut_off"], "the attacker was not disconnected"
    _after(procs, open_sock, producer, honest)
