"""Edges between the producer's threads, its relay and its consumers."""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
import zmq

import framebus
from framebus import _control, controls

FMT = framebus.FrameFormat(64, 48, "GREY")


def _publish(bus: framebus.Producer) -> int:
    return bus.publish(bus.acquire(timeout=1))


def _close_while_waiting(wait: Callable[[], object], close: Callable[[], None],
                         join_timeout: float) -> tuple[threading.Thread, list[BaseException]]:
    """Run `wait` in a thread, `close` 0.3 s later; the thread (joined up
    to `join_timeout`) and what `wait` raised."""
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            wait()
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    close()
    thread.join(timeout=join_timeout)
    return thread, outcome


def test_close_during_a_blocked_acquire_raises_bus_closed(sock):
    bus = framebus.Producer(sock, FMT, buffers=2, reserve=1)
    held = [bus.acquire(timeout=1), bus.acquire(timeout=1)]  # every buffer is being written
    thread, outcome = _close_while_waiting(lambda: bus.acquire(timeout=10), bus.close, 10)
    assert not thread.is_alive() and len(held) == 2
    assert len(outcome) == 1 and isinstance(outcome[0], framebus.BusClosed), outcome


def test_a_consumer_attaching_while_acquire_waits_is_served(sock):
    with framebus.Producer(sock, FMT, buffers=4, reserve=1, lease_timeout=30) as bus, \
            framebus.Consumer(sock, name="x", max_held=2) as x:
        _publish(bus)
        first = x.get(timeout=2)
        _publish(bus)
        second = x.get(timeout=2)
        writing = [bus.acquire(timeout=1), bus.acquire(timeout=1)]
        got: list[framebus.Buffer] = []

        def waiter() -> None:
            try:
                got.append(bus.acquire(timeout=8))
            except framebus.Timeout:
                pass

        blocked = threading.Thread(target=waiter)
        blocked.start()
        time.sleep(0.3)
        try:
            with framebus.Consumer(sock, name="y", channel="socket", max_held=1) as y, \
                    y.get(timeout=3) as frame:
                assert frame.seq == second.seq  # the newest, leased to both
        finally:
            first.release()
            second.release()
            for buffer in writing:
                bus.discard(buffer)
            blocked.join(timeout=15)
            for buffer in got:
                bus.discard(buffer)


def test_a_failing_controls_object_is_a_refusal_and_serving_goes_on(sock):
    class Broken:
        def describe(self) -> list[dict[str, object]]:
            return []

        def set(self, values: object) -> dict[str, int]:
            raise KeyError("not what a Controls should raise")

    with framebus.Producer(sock, FMT, controls=Broken()) as bus:
        with pytest.raises(framebus.Refused, match="not what a Controls should raise"):
            controls.set_controls(sock, {"gain": 1})
        with framebus.Consumer(sock) as cam:
            _publish(bus)
            cam.get(timeout=2).release()


def test_a_burst_of_large_acks_cannot_crash_the_relay(sock):
    with framebus.Producer(sock, FMT, buffers=6) as bus, \
            framebus.Consumer(sock, name="innocent") as innocent, \
            framebus.Consumer(sock, name="bursty") as bursty:
        _publish(bus)
        innocent.get(timeout=2).release()
        bursty.get(timeout=2).release()
        dealer = bursty._session._dealer  # type: ignore[union-attr]
        for _ in range(300):  # 300 x 4,000 bytes: more than one link message can carry
            dealer.send(b"\x00" * 4000, zmq.NOBLOCK)
        time.sleep(1.0)
        assert bus.stats()["relays"] == 1
        for _ in range(3):
            _publish(bus)
            innocent.get(timeout=2).release()


def test_a_relay_failure_ends_iteration_with_producer_gone_not_quietly(sock):
    with framebus.Producer(sock, FMT) as bus, framebus.Consumer(sock) as cam:
        _publish(bus)
        cam.get(timeout=2).release()
        relay = bus._server.relays[os.getuid()]
        os.kill(relay.process.pid, signal.SIGKILL)
        with pytest.raises(framebus.ProducerGone) as gone:
            for _ in cam:
                _publish(bus)
        assert not gone.value.clean and "relay" in gone.value.reason


def test_a_clean_shutdown_still_ends_iteration_quietly(sock):
    bus = framebus.Producer(sock, FMT)
    with framebus.Consumer(sock) as cam:
        _publish(bus)
        seen = []
        for frame in cam:
            seen.append(frame.seq)
            bus.close()
        assert seen == [1]


@pytest.mark.parametrize("channel", ["zmq", "socket"])
def test_a_credit_sent_just_after_a_publish_is_answered_when_publishing_stops(sock, channel):
    """Right after acquire() the server thread leaves the acks to it (they
    are muted for HOT_WINDOW); if no acquire() follows, the server thread
    must take them back and answer a waiting `latest` consumer by itself."""
    with framebus.Producer(sock, FMT, buffers=4, reserve=1, lease_timeout=30) as bus, \
            framebus.Consumer(sock, channel=channel) as cam:
        for _ in range(20):
            seq = _publish(bus)  # acquire() ran just now: acks are muted
            with cam.get(timeout=2) as frame:  # its CREDIT arrives while muted
                assert frame.seq == seq
            time.sleep(0.005)


@pytest.mark.parametrize("policy", ["latest", "queue"])
@pytest.mark.parametrize("channel", ["zmq", "socket"])
def test_closing_a_consumer_wakes_a_get_waiting_in_another_thread(sock, channel, policy):
    with framebus.Producer(sock, FMT, buffers=6, reserve=1):
        cam = framebus.Consumer(sock, channel=channel, policy=policy)
        # nothing is published
        thread, outcome = _close_while_waiting(lambda: cam.get(timeout=20), cam.close, 5)
        assert not thread.is_alive(), "get() still waits after close()"
        assert len(outcome) == 1 and isinstance(outcome[0], framebus.FramebusError), outcome


@pytest.mark.parametrize("channel", ["zmq", "socket"])
def test_get_with_timeout_zero_returns_a_frame_already_waiting(sock, channel):
    with framebus.Producer(sock, FMT, buffers=8, reserve=1) as bus, \
            framebus.Consumer(sock, channel=channel, policy="queue", depth=4, max_held=1) as cam:
        while True:  # until its bus channel is up
            _publish(bus)
            try:
                cam.get(timeout=0.2).release()
                break
            except framebus.Timeout:
                continue
        seqs = [_publish(bus) for _ in range(3)]
        deadline = time.monotonic() + 5
        got: list[int] = []
        while len(got) < 3 and time.monotonic() < deadline:  # (zmq: they may still be on the way)
            try:
                with cam.get(timeout=0) as frame:
                    got.append(frame.seq)
            except framebus.Timeout:
                time.sleep(0.01)
        assert got == seqs
        with pytest.raises(framebus.Timeout):
            cam.get(timeout=0)


@pytest.mark.parametrize("timeout", [0.02, 0.15, 0.4])
def test_a_socket_channel_get_times_out_no_earlier_than_asked(sock, timeout):
    """get(timeout) waits in one blocking recv() whose kernel timeout
    (SO_RCVTIMEO, counted in ticks and rounded up) is set short of the
    deadline, then polls the rest: never a Timeout before the time asked,
    and a frame published while it waits is taken."""
    with framebus.Producer(sock, FMT, buffers=8, reserve=1) as bus, \
            framebus.Consumer(sock, channel="socket", policy="queue", depth=4, max_held=1) as cam:
        _publish(bus)
        cam.get(timeout=5).release()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(framebus.Timeout):
                cam.get(timeout=timeout)
            assert time.monotonic() - started >= timeout
        with socket.socket(fileno=os.dup(cam.fileno())) as conn:
            sec, usec = struct.unpack("@ll", conn.getsockopt(socket.SOL_SOCKET,
                                                              socket.SO_RCVTIMEO, 16))
        assert 0 < sec + usec / 1e6 < timeout  # the kernel's timer ends within the deadline
        publisher = threading.Timer(timeout / 2, _publish, (bus,))
        publisher.start()
        try:
            with cam.get(timeout=timeout + 5) as frame:
                assert frame.seq == 2
        finally:
            publisher.join(5)


def test_a_release_sent_while_a_zmq_get_goes_to_sleep_does_not_hide_a_waiting_frame(sock):
    """A zmq send takes in zmq's pending commands, which quiets zmq's fd even
    with a FRAME waiting to be read. A get() that found no frame and is about
    to sleep on that fd must still be woken when a release (sent from another
    thread, or another asyncio task) swallows the news. The release is put in
    that window by wrapping the session's poll: the race is otherwise a
    matter of microseconds. The lease timeout is long, so the consumer's retry
    timer cannot hide a missed wake-up, which sleeps to the get's deadline."""
    with framebus.Producer(sock, FMT, buffers=8, reserve=1, lease_timeout=60) as bus, \
            framebus.Consumer(sock, policy="queue", depth=4, max_held=2) as cam:
        first = None
        while first is None:  # until its bus channel is up
            _publish(bus)
            try:
                first = cam.get(timeout=0.2)
            except framebus.Timeout:
                continue
        session = cam._session
        assert session is not None and session._dealer is not None
        real = session._readable
        zmq_news = select.poll()
        zmq_news.register(session._dealer.fileno(), select.POLLIN)
        sent: list[int] = []

        class ReleaseBeforeSleeping:
            def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
                session._readable = real  # (once)
                sent.append(_publish(bus))  # the next frame comes in ...
                assert zmq_news.poll(5000), "zmq never signalled the frame"
                first.release()  # ... and a send takes in zmq's news of it
                assert not zmq_news.poll(0)  # (what the race does: zmq's fd is quiet)
                return real.poll(timeout)

        session._readable = ReleaseBeforeSleeping()  # type: ignore[assignment]
        started = time.monotonic()
        with cam.get(timeout=10) as frame:
            assert frame.seq == sent[0]
        assert time.monotonic() - started < 5, "get() slept to its deadline on a waiting frame"


@pytest.mark.parametrize("channel", ["zmq", "socket"])
def test_an_infinite_timeout_waits_like_none_and_nan_is_refused(sock, channel):
    with framebus.Producer(sock, FMT, buffers=8, reserve=1) as bus, \
            framebus.Consumer(sock, channel=channel, max_held=1) as cam:
        with pytest.raises(ValueError, match="NaN"):
            cam.get(timeout=math.nan)
        publisher = threading.Timer(0.3, _publish, (bus,))
        publisher.start()
        try:
            with cam.get(timeout=math.inf) as frame:
                assert frame.seq == 1
        finally:
            publisher.join(5)


def test_a_consumer_dropped_before_the_last_frame_is_booked_leaves_the_books_straight(sock):
    """publish() leaves a frame's booking (its leases) to the next call under
    the producer's lock. The server thread can drop a consumer in between
    (it releases the lock while a relay starts, and a publish comes in): the
    frame is booked first, while every consumer it went to is still known."""
    with framebus.Producer(sock, FMT, buffers=8, reserve=1) as bus, \
            framebus.Consumer(sock, name="a", channel="socket", policy="queue", depth=2,
                              max_held=1) as a, \
            framebus.Consumer(sock, name="b", channel="socket", policy="queue", depth=2,
                              max_held=1) as b:
        _publish(bus)
        a.get(timeout=5).release()
        b.get(timeout=5).release()
        seq = _publish(bus)  # sent to both; its booking waits for the next call
        server = bus._server
        assert server is not None
        with bus._lock:
            gone = next(s for s in bus._bus.subscribers.values() if s.name == "b")
            server._drop(gone, "dropped by the test")
        bus.discard(bus.acquire(timeout=5))  # books (and reads the acks)
        with a.get(timeout=5) as frame:
            assert frame.seq == seq
        assert [c["name"] for c in bus.stats()["consumers"]] == ["a"]


def test_closing_a_reconnecting_consumer_during_get_does_not_attach_again(sock):
    with framebus.Producer(sock, FMT, buffers=4, reserve=1) as bus:
        cam = framebus.Consumer(sock, channel="socket", reconnect=True)
        thread, outcome = _close_while_waiting(lambda: cam.get(timeout=20), cam.close, 5)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], framebus.BusClosed), outcome
        time.sleep(0.3)
        assert bus.stats()["consumers"] == []


def _context_switches(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def test_the_server_thread_sleeps_while_acquire_waits_after_running_flat_out(sock):
    """acquire() handles the acks while it waits; the server thread must not
    keep waking up meanwhile (it did, every 2 ms, after a flat-out phase)."""
    with framebus.Producer(sock, FMT, buffers=4, reserve=0, lease_timeout=30) as bus, \
            framebus.Consumer(sock, channel="socket", policy="queue", depth=4,
                              max_held=4) as cam:
        server = next(t for t in threading.enumerate() if t.name == "framebus-server")
        for _ in range(200):  # flat out: acquire() is hot, the acks are muted
            _publish(bus)
            cam.get(timeout=2).release()
        held = []
        for _ in range(4):
            _publish(bus)
            held.append(cam.get(timeout=2))  # every buffer leased now
        before = _context_switches(server.native_id)
        with pytest.raises(framebus.Timeout):
            bus.acquire(timeout=1.0)
        woken = _context_switches(server.native_id) - before
        for frame in held:
            frame.release()
        assert woken < 60, f"the server thread woke {woken} times in 1 s"


def _consume_until_closed(path: str, channel: str) -> None:
    """A child process's loop: take and release every frame until the producer goes."""
    try:
        with framebus.Consumer(path, channel=channel, max_held=1) as cam:
            while True:
                cam.get(timeout=5).release()
    except (framebus.ProducerGone, framebus.Timeout):
        os._exit(0)
    os._exit(1)


@pytest.mark.parametrize("channel", ["zmq", "socket"])
def test_at_a_steady_pace_the_server_thread_leaves_the_releases_to_acquire(sock, channel):
    """A camera's pace (100 fps here) and a consumer that keeps up: acquire()
    drains the releases before each frame, so the server thread must not
    also wake for each one (it did: a wake-up per consumer per frame)."""
    with framebus.Producer(sock, FMT, buffers=4, reserve=1) as bus:
        pid = os.fork()
        if pid == 0:
            _consume_until_closed(sock, channel)
        try:
            server = next(t for t in threading.enumerate() if t.name == "framebus-server")
            deadline = time.monotonic() + 10
            while not bus.stats()["consumers"] or bus.stats()["consumers"][0]["delivered"] < 20:
                assert time.monotonic() < deadline, "the consumer never got going"
                _publish(bus)
                time.sleep(0.01)
            before = _context_switches(server.native_id)
            delivered = bus.stats()["consumers"][0]["delivered"]
            for _ in range(100):
                _publish(bus)
                time.sleep(0.01)
            woken = _context_switches(server.native_id) - before
            delivered = bus.stats()["consumers"][0]["delivered"] - delivered
        finally:
            bus.close()
            os.waitpid(pid, 0)
    assert delivered >= 90, f"the consumer got {delivered} of 100 frames"
    assert woken < 40, f"the server thread woke {woken} times for 100 frames"


@pytest.mark.parametrize("channel", ["zmq", "socket"])
def test_a_latest_consumer_that_fell_behind_gets_the_newest_frame_at_once(sock, channel):
    """While acquire() has the acks, the server thread still answers a
    `latest` consumer that missed frames: its request is answered with the
    newest frame at once, not with the next one a period later."""
    published: list[int] = []
    acquires = [0]  # acquire() calls begun (one drains the acks)
    stop = threading.Event()

    def camera(bus: framebus.Producer) -> None:  # 5 fps: a steady pace
        while not stop.wait(0.2):
            acquires[0] += 1
            published.append(bus.publish(bus.acquire(timeout=1)))

    with framebus.Producer(sock, FMT, buffers=6, reserve=1, lease_timeout=30) as bus, \
            framebus.Consumer(sock, channel=channel, max_held=1) as cam:
        thread = threading.Thread(target=camera, args=(bus,))
        thread.start()
        try:
            for _ in range(4):
                frame = cam.get(timeout=5)
                time.sleep(0.5)  # a slow detector: two or three frames go by
                count = len(published)
                while len(published) == count:  # just after a publish: the next is 0.2 s away
                    time.sleep(0.002)
                newest, calls = published[-1], acquires[0]
                frame.release()
                with cam.get(timeout=5) as frame:
                    assert frame.seq == newest, "the newest frame was not sent when asked for"
                    assert acquires[0] == calls, "the request waited for the next acquire()"
        finally:
            stop.set()
            thread.join(timeout=5)


def test_status_counts_a_release_acquire_has_not_read_yet(sock):
    with framebus.Producer(sock, FMT, buffers=4, reserve=1, lease_timeout=30) as bus, \
            framebus.Consumer(sock, channel="socket", max_held=1) as cam:
        for _ in range(5):
            seq = _publish(bus)  # acquire() ran just now: the acks are its own
            with cam.get(timeout=2) as frame:
                assert frame.seq == seq
            # (on the socket channel the RELEASE is in the producer's socket by now)
            assert bus.stats()["consumers"][0]["held"] == 0
            time.sleep(0.01)
        assert bus.stats()["revoked"] == 0


def test_a_socket_consumer_that_half_closes_its_connection_is_dropped(sock):
    with framebus.Producer(sock, FMT, buffers=4, reserve=1) as bus:
        cam = framebus.Consumer(sock, channel="socket")
        try:
            assert len(bus.stats()["consumers"]) == 1
            cam._session._ctrl.shutdown(socket.SHUT_WR)  # EOF, but no hang-up
            deadline = time.monotonic() + 5
            while bus.stats()["consumers"]:
                assert time.monotonic() < deadline, "the half-closed consumer is still attached"
                _publish(bus)
                time.sleep(0.02)
        finally:
            cam.close()


def test_a_goodbye_as_long_as_a_frame_still_says_the_producer_left(sock):
    """The socket channel reads a message of FRAME's size the fast way; a
    BYE that happens to be that long is still a goodbye, not a bad FRAME."""
    from framebus import _protocol as protocol
    reason = "x" * next(n for n in range(1, 64)
                        if len(protocol.BYE.encode("x" * n, True)) == protocol.FRAME_SIZE)
    bus = framebus.Producer(sock, FMT, buffers=4, reserve=1)
    with framebus.Consumer(sock, channel="socket") as cam:
        bus.close(reason)
        with pytest.raises(framebus.ProducerGone, match=reason):
            cam.get(timeout=5)


def test_a_goodbye_is_read_even_when_the_peer_sent_what_was_not_read():
    # The kernel quirk close_quietly() closes: an AF_UNIX SEQPACKET socket
    # closed with unread data resets its peer, whose recv() then fails with
    # ECONNRESET before it reads what was queued for it (our BYE).
    for closer, expected in ((socket.socket.close, ConnectionResetError),
                             (_control.close_quietly, None)):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            for _ in range(10):
                theirs.send(b"flood")
            ours.send(b"bye")
            closer(ours)
            if expected is None:
                assert theirs.recv(64) == b"bye" and theirs.recv(64) == b""
                with pytest.raises(OSError):  # (EPIPE: it can send no more)
                    theirs.send(b"more")
            else:
                with pytest.raises(expected):
                    theirs.recv(64)
