"""Hostile input: every message the producer parses, on the control socket and
on zmq, fuzzed against a live producer while an honest consumer keeps working.

Each rejected message must be counted and the sender at most disconnected; the
producer and the honest consumer must not notice. The case counts are the
hypothesis `max_examples` below plus the hand-written cases.
"""

from __future__ import annotations

import array
import logging
import os
import socket
import threading

import msgpack
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import framebus
from framebus import _handshake as handshake, _protocol as protocol

from .conftest import wait_for

FMT = framebus.FrameFormat(64, 48, "GREY")
CONTROL_CASES = 300
BUS_CASES = 1000


class Rig:
    """A producer publishing at ~200 fps and an honest consumer, in this process."""

    def __init__(self, path: str) -> None:
        self.bus = framebus.Producer(path, FMT, buffers=16, handshake_timeout=2.0)
        self.path = path
        self.honest = framebus.Consumer(path, name="honest")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, daemon=True)
        self._thread.start()

    def _publish(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.bus.publish(self.bus.acquire(timeout=0.5))
            except framebus.FramebusError:
                return

    def assert_healthy(self) -> None:
        """The honest consumer still gets fresh frames and has no errors."""
        last = 0
        for _ in range(3):
            with self.honest.get(timeout=5) as frame:
                assert frame.seq > last and frame.valid()
                last = frame.seq
        honest = next(c for c in self.bus.stats()["consumers"] if c["name"] == "honest")
        assert honest["errors"] == 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.honest.close()
        self.bus.close()


@pytest.fixture(scope="module")
def rig():
    import tempfile, shutil
    d = tempfile.mkdtemp(prefix="fbz-", dir="/tmp")
    r = Rig(os.path.join(d, "cam.sock"))
    yield r
    r.close()
    shutil.rmtree(d, ignore_errors=True)


class Hostile:
    """A raw client that did the handshake properly and then misbehaves on zmq."""

    def __init__(self, path: str) -> None:
        self.conn = handshake.connect(path, 5)
        values, fds = handshake.read_hello(self.conn, path)
        for fd in fds:
            os.close(fd)
        self.endpoint, self.token = values[4], values[5]
        answer = handshake.attach(self.conn, path, "consumer", "hostile", "latest", 1, 0)
        assert answer.kind is protocol.ACCEPT
        self.ctx = zmq.Context()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.ROUTING_ID, self.token)
        self.dealer.setsockopt(zmq.SNDHWM, 0)  # a flood is never held back on our side
        self.dealer.connect(self.endpoint)

    def disconnected(self) -> bool:
        self.conn.setblocking(False)
        try:
            data = self.conn.recv(4096)
        except BlockingIOError:
            return False
        return data == b"" or protocol.decode(data, protocol.CONTROL, 4096).kind is protocol.BYE

    def close(self) -> None:
        self.dealer.close()
        self.ctx.term()
        self.conn.close()


# ------------------------------------------------------------ control socket
def _attach_raw(path: str, payload: bytes, fds: list[int] | None = None) -> bytes:
    """Do the handshake up to ATTACH, send `payload` instead, return the answer."""
    conn = handshake.connect(path, 5)
    try:
        _, hello_fds = handshake.read_hello(conn, path)
        for fd in hello_fds:
            os.close(fd)
        if fds:
            conn.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", fds).tobytes())])
        else:
            conn.send(payload)
        conn.settimeout(5)
        answer = conn.recv(protocol.MAX_CONTROL_MESSAGE)
        assert conn.recv(16) == b""  # and then it hangs up
        return answer
    finally:
        conn.close()


def _refused(answer: bytes) -> bool:
    decoded = protocol.decode(answer, protocol.CONTROL, protocol.MAX_CONTROL_MESSAGE)
    return decoded.kind is protocol.REFUSE


# Any integer msgpack can carry.
_msgpack_ints = st.integers(-2**63, 2**64 - 1)

_attach_like = st.lists(
    st.one_of(_msgpack_ints, st.text(max_size=40), st.binary(max_size=20),
              st.none(), st.booleans(), st.floats(allow_nan=False),
              st.lists(_msgpack_ints, max_size=3)), max_size=7)


@settings(max_examples=CONTROL_CASES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(st.binary(min_size=1, max_size=2000),
                         _attach_like.map(lambda v: msgpack.packb([2, *v]))))
def test_fuzzed_attach_is_refused_and_nobody_else_notices(rig, payload):
    answer = _attach_raw(rig.path, payload)
    decoded = protocol.decode(answer, protocol.CONTROL, protocol.MAX_CONTROL_MESSAGE)
    # A payload that happens to be a well-formed ATTACH may be accepted or
    # refused for its values; everything else is refused as a protocol error.
    assert decoded.kind in (protocol.REFUSE, protocol.ACCEPT, protocol.STATUS)


def test_control_fuzz_left_the_producer_healthy(rig):
    rig.assert_healthy()
    assert rig.bus.stats()["errors"] > 0


@pytest.mark.parametrize("payload", [
    b"", b"\x00" * (protocol.MAX_CONTROL_MESSAGE + 1), protocol.HELLO.encode(1, 2, {}, {}, "", b"x", 1),
    protocol.ATTACH.encode("admin", "x", "latest", 1, 0, "zmq"),
    protocol.ATTACH.encode("consumer", "x", "fastest", 1, 0, "zmq"),
    protocol.ATTACH.encode("consumer", "x", "latest", 0, 0, "zmq"),
    protocol.ATTACH.encode("consumer", "x", "latest", 256, 0, "zmq"),
    protocol.ATTACH.encode("consumer", "x", "latest", 1, 0, "pigeon"),
    protocol.ATTACH.encode("consumer", "x", "latest", 1, 0),
])
def test_hand_written_bad_attaches_are_refused(rig, payload):
    if payload == b"":
        conn = handshake.connect(rig.path, 5)
        _, fds = handshake.read_hello(conn, rig.path)
        for fd in fds:
            os.close(fd)
        conn.close()  # hang up mid-handshake
    else:
        assert _refused(_attach_raw(rig.path, payload))
    rig.assert_healthy()


def test_fds_sent_to_the_producer_are_refused_and_not_leaked(rig):
    me = psutil.Process()
    before = me.num_fds()
    r, w = os.pipe()
    try:
        good = protocol.ATTACH.encode("consumer", "fd-sender", "latest", 1, 0, "zmq")
        assert _refused(_attach_raw(rig.path, good, fds=[r, w]))
    finally:
        os.close(r)
        os.close(w)
    assert me.num_fds() == before
    rig.assert_healthy()


def test_a_client_that_speaks_before_hello_is_refused(rig):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(rig.path)
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    conn.settimeout(5)
    data, fds = framebus.linux.fdpass.recv_with_fds(conn, protocol.MAX_CONTROL_MESSAGE, 300)
    for fd in fds:
        os.close(fd)
    assert protocol.decode(data, protocol.CONTROL, protocol.MAX_CONTROL_MESSAGE).kind is protocol.HELLO
    assert _refused(conn.recv(protocol.MAX_CONTROL_MESSAGE))
    conn.close()


# ------------------------------------------------------------------------ zmq
class HostilePool:
    """Hands out a connected hostile client, replacing it once it is disconnected."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.client: Hostile | None = None
        self.disconnections = 0

    def get(self) -> Hostile:
        if self.client is not None and self.client.disconnected():
            self.client.close()
            self.client = None
            self.disconnections += 1
        if self.client is None:
            self.client = Hostile(self.path)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


@pytest.fixture(scope="module")
def hostiles(rig):
    pool = HostilePool(rig.path)
    yield pool
    pool.close()


_bus_like = st.lists(
    st.one_of(_msgpack_ints, st.text(max_size=10), st.binary(max_size=10),
              st.none(), st.lists(_msgpack_ints, max_size=70), st.floats()),
    max_size=6)


@settings(max_examples=BUS_CASES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.one_of(
    st.lists(st.binary(max_size=200), min_size=1, max_size=3),
    st.tuples(st.sampled_from([10, 11, 12, 99, -1]), _bus_like).map(
        lambda t: [msgpack.packb([t[0], *t[1]])]),
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=64).map(
        lambda seqs: [protocol.RELEASE.encode(seqs, 0, 0)]),
))
def test_fuzzed_bus_messages_are_rejected_and_counted(rig, hostiles, parts):
    hostiles.get().dealer.send_multipart(parts)


def test_bus_fuzz_left_the_producer_healthy_and_disconnected_the_offenders(rig, hostiles):
    wait_for(lambda: hostiles.get() and hostiles.disconnections >= 1, timeout=10,
             what="a hostile client to be disconnected")
    rig.assert_healthy()


def test_a_flood_is_bounded_in_the_log_and_costs_only_the_flooder(rig, caplog):
    hostile = Hostile(rig.path)
    errors_before = rig.bus.stats()["errors"]
    with caplog.at_level(logging.WARNING, logger="framebus.producer"):
        for seq in range(5000):
            hostile.dealer.send(protocol.RELEASE.encode([10**12 + seq], 0, 0))
        wait_for(hostile.disconnected, timeout=10, what="the flooder's disconnection")
        rig.assert_healthy()
    assert rig.bus.stats()["errors"] - errors_before >= 100
    assert len(caplog.records) <= 10
    hostile.close()


def test_oversized_zmq_messages_are_cut_off_by_zmq(rig):
    hostile = Hostile(rig.path)
    hostile.dealer.send(b"\x00" * (protocol.MAX_ZMQ_MESSAGE * 4))
    rig.assert_healthy()
    hostile.close()
