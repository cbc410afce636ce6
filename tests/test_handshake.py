"""The consumer's side of the handshake against a fake producer that lies:
wrong protocol version, a truncated or short fd list, buffers smaller than
the table says. Each is a clear error, and no fd is left open."""

from __future__ import annotations

import os
import socket
import sys
import threading

import psutil
import pytest

import framebus
from framebus import _protocol as protocol
from framebus.buffers import MEMFD, BufferTable, Memory, Plane
from framebus.linux import fdpass, memfd

FMT = framebus.FrameFormat(64, 48, "GREY")


ENDPOINT = "ipc:///nowhere"  # replaced by the `bus_endpoint` fixture, which every test uses


def _hello(version: int = protocol.VERSION, memory_size: int = 4096, endpoint: str = "") -> bytes:
    table = BufferTable((Memory(memory_size, MEMFD),), ((Plane(0, 0, FMT.sizeimage, 64),),))
    return protocol.HELLO.encode(version, 7, FMT.to_wire(), table.to_wire(),
                                 endpoint or ENDPOINT, b"Ftoken", 1000)


@pytest.fixture(autouse=True)
def bus_endpoint(workdir, monkeypatch):
    """A real ipc endpoint of this uid's, as a producer's private directory
    holds one: consumers refuse a HELLO naming anything else."""
    private = os.path.join(os.path.realpath(workdir), "bus")
    os.mkdir(private, 0o700)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(os.path.join(private, "bus-0"))
    monkeypatch.setattr(sys.modules[__name__], "ENDPOINT", "ipc://" + bound.getsockname())
    yield ENDPOINT
    bound.close()


def _sealed_memfd(size: int) -> int:
    fd = memfd.create("fake", size)
    memfd.add_seals(fd, memfd.READ_ONLY_SEALS)
    return fd


class FakeProducer:
    """Accepts one connection and sends `hello` with `fds` attached."""

    def __init__(self, path: str, hello: bytes, fds: list[int]) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, args=(hello, fds), daemon=True)
        self.thread.start()

    def _serve(self, hello: bytes, fds: list[int]) -> None:
        conn, _ = self.listener.accept()
        with conn:
            fdpass.send_with_fds(conn, hello, fds)
            conn.settimeout(5)
            try:
                conn.recv(4096)  # until the consumer hangs up
            except OSError:
                pass
        fdpass.close_all(fds)

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def fds_unchanged():
    me = psutil.Process()
    before = me.num_fds()
    yield
    assert me.num_fds() == before


def attach_to_fake(sock: str, hello: bytes, fds: list[int]) -> None:
    fake = FakeProducer(sock, hello, fds)
    try:
        framebus.Consumer(sock, timeout=5)
    finally:
        fake.close()


def test_a_protocol_version_mismatch_is_a_clear_error(sock, fds_unchanged):
    with pytest.raises(framebus.ProtocolError, match="speaks protocol 99, this client 1"):
        attach_to_fake(sock, _hello(version=99), [_sealed_memfd(4096), _sealed_memfd(4096)])


def test_a_hello_with_too_few_fds_is_a_clear_error(sock, fds_unchanged):
    with pytest.raises(framebus.ProtocolError, match="carried 1 fds, expected 2"):
        attach_to_fake(sock, _hello(), [_sealed_memfd(4096)])


def test_a_buffer_smaller_than_the_table_says_is_refused_before_mapping(sock, fds_unchanged):
    # Mapping it would SIGBUS the consumer on the first access past its end.
    with pytest.raises(framebus.FramebusError, match="buffer fd is 4096 bytes, the table says 1048576"):
        attach_to_fake(sock, _hello(memory_size=1 << 20), [_sealed_memfd(4096), _sealed_memfd(4096)])


def test_an_unsealed_buffer_is_refused(sock, fds_unchanged):
    unsealed = memfd.create("unsealed", 4096)  # the producer could shrink it under us
    with pytest.raises(framebus.FramebusError, match="not sealed"):
        attach_to_fake(sock, _hello(), [unsealed, _sealed_memfd(4096)])


def test_a_truncated_fd_list_is_refused_and_what_arrived_is_closed(fds_unchanged):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sent = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]
    try:
        fdpass.send_with_fds(a, b"hello", sent)
        with pytest.raises(fdpass.TruncatedMessage, match="fd list"):
            fdpass.recv_with_fds(b, 64, max_fds=1)
    finally:
        fdpass.close_all(sent)
        a.close()
        b.close()


def test_received_fds_are_close_on_exec():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    os.set_inheritable(r, True)
    try:
        fdpass.send_with_fds(a, b"x", [r])
        _, [got] = fdpass.recv_with_fds(b, 64, max_fds=4)
        assert not os.get_inheritable(got)
        os.close(got)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
