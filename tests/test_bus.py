"""The Python API as DESIGN.md's contract states it, producer and consumer in one process."""

import gc
import os
import socket
import time

import pytest

import framebus
from framebus import FrameFormat
from framebus.pattern import Pattern

FMT = FrameFormat(64, 48, "RGB3")


@pytest.fixture
def bus(sock):
    with framebus.Producer(sock, FMT, buffers=8, lease_timeout=1.0) as producer:
        yield producer


def publish(bus, value=None) -> int:
    buf = bus.acquire(timeout=1)
    if value is not None:
        buf.array[...] = value
    return bus.publish(buf)


def test_consumer_sees_the_producers_pixels_read_only(bus, sock):
    with framebus.Consumer(sock, name="t") as cam:
        assert cam.format == FMT
        publish(bus, 7)
        with cam.get(timeout=2) as frame:
            assert frame.array.shape == (48, 64, 3)
            assert not frame.array.flags.writeable
            assert (frame.array == 7).all()
            assert frame.valid()
            with pytest.raises(ValueError):
                frame.array[0, 0, 0] = 1


def test_sequence_numbers_count_up_from_one(bus):
    assert [publish(bus) for _ in range(3)] == [1, 2, 3]


def test_timestamp_is_monotonic_ns_of_publish(bus, sock):
    with framebus.Consumer(sock) as cam:
        before = time.monotonic_ns()
        publish(bus)
        with cam.get(timeout=2) as frame:
            assert before <= frame.timestamp_ns <= time.monotonic_ns()
        buf = bus.acquire(timeout=1)
        bus.publish(buf, timestamp_ns=12345)
        with cam.get(timeout=2) as frame:
            assert frame.timestamp_ns == 12345


def test_latest_gives_the_newest_unseen_frame_and_never_goes_back(bus, sock):
    with framebus.Consumer(sock) as cam:
        for _ in range(5):
            publish(bus)
        time.sleep(0.05)
        with cam.get(timeout=2) as frame:
            assert frame.seq == 5  # stale frames are not queued
        publish(bus)
        seqs = []
        for _ in range(3):
            publish(bus)
            with cam.get(timeout=2) as frame:
                seqs.append(frame.seq)
        assert seqs == sorted(set(seqs)) and seqs[0] > 5


def test_get_waits_for_a_new_frame_rather_than_repeating_one(bus, sock):
    with framebus.Consumer(sock) as cam:
        publish(bus)
        cam.get(timeout=2).release()
        with pytest.raises(TimeoutError):
            cam.get(timeout=0.2)
        publish(bus)
        with cam.get(timeout=2) as frame:  # the credit left by the timeout is used
            assert frame.seq == 2


def test_timeout_is_a_framebus_error_and_a_timeout_error(bus, sock):
    with framebus.Consumer(sock) as cam:
        with pytest.raises(framebus.Timeout) as info:
            cam.get(timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, framebus.FramebusError)


def test_get_beyond_max_held_is_an_error_not_a_deadlock(bus, sock):
    with framebus.Consumer(sock, max_held=1) as cam:
        publish(bus)
        held = cam.get(timeout=2)
        with pytest.raises(framebus.FramebusError, match="max_held"):
            cam.get(timeout=5)
        held.release()


def test_iteration_releases_before_asking_so_max_held_1_works(bus, sock):
    with framebus.Consumer(sock, max_held=1) as cam:
        publish(bus)
        seen = []
        for frame in cam:  # holds one frame while asking for the next
            seen.append(frame.seq)
            if len(seen) == 3:
                break
            publish(bus)
        assert cam.held == 0
    assert seen == [1, 2, 3]


def test_iteration_ends_when_the_producer_shuts_down(sock):
    producer = framebus.Producer(sock, FMT)
    cam = framebus.Consumer(sock)
    publish(producer)
    frames = []
    for frame in cam:
        frames.append(frame.seq)
        producer.close()
    assert frames == [1]
    with pytest.raises(framebus.ProducerGone) as info:
        cam.get(timeout=1)
    assert info.value.clean and "shut down" in info.value.reason
    cam.close()


def test_queue_policy_delivers_every_frame_in_order_then_counts_drops(bus, sock):
    with framebus.Consumer(sock, policy="queue", max_held=1, depth=3) as cam:
        time.sleep(0.1)  # let the consumer's zmq socket connect
        for _ in range(6):
            publish(bus)
        got = []
        for _ in range(3):
            with cam.get(timeout=2) as frame:
                got.append(frame.seq)
        assert got == [1, 2, 3]
        with pytest.raises(TimeoutError):
            cam.get(timeout=0.2)
        [report] = bus.stats()["consumers"]
        assert report["delivered"] == 3
        publish(bus)
        with cam.get(timeout=2) as frame:
            assert frame.seq == 7
        assert cam.dropped == 3  # frames 4, 5, 6


def test_acquire_times_out_when_every_buffer_is_held(sock):
    with framebus.Producer(sock, FMT, buffers=3, reserve=1) as bus, \
            framebus.Consumer(sock, max_held=2) as cam:
        held = []
        for _ in range(2):
            publish(bus)
            held.append(cam.get(timeout=2))
        mine = bus.acquire(timeout=1)  # the reserved buffer
        with pytest.raises(TimeoutError):
            bus.acquire(timeout=0.1)
        held[0].release()
        bus.discard(mine)
        assert bus.acquire(timeout=2) is not None


def test_a_lease_past_its_deadline_is_revoked_and_valid_turns_false(sock):
    with framebus.Producer(sock, FMT, buffers=3, reserve=1, lease_timeout=0.2) as bus, \
            framebus.Consumer(sock, max_held=2) as cam:
        publish(bus, 1)
        frame = cam.get(timeout=2)
        publish(bus, 2)
        other = cam.get(timeout=2)
        other.release()
        assert frame.valid()
        time.sleep(0.4)  # past the deadline: revoked, but the pixels are untouched so far
        assert frame.valid()
        assert bus.stats()["consumers"][0]["revoked"] == 1
        # Now the producer needs buffers: the revoked one gets rewritten.
        for _ in range(3):
            publish(bus, 3)
        assert not frame.valid()
        frame.release()  # a late release is harmless
        time.sleep(0.1)
        report = bus.stats()["consumers"][0]
        assert report["late_releases"] == 1 and report["errors"] == 0


def test_frame_views_are_dropped_on_release(bus, sock):
    with framebus.Consumer(sock) as cam:
        publish(bus)
        frame = cam.get(timeout=2)
        frame.release()
        frame.release()  # twice is fine
        with pytest.raises(framebus.FramebusError, match="released"):
            frame.array


def test_too_many_consumers_for_the_pool_are_refused_with_the_reason(sock):
    with framebus.Producer(sock, FMT, buffers=4, reserve=2) as _:
        with framebus.Consumer(sock, max_held=2):
            with pytest.raises(framebus.Refused, match="not enough buffers"):
                framebus.Consumer(sock, max_held=1)
        with framebus.Consumer(sock, max_held=2):  # the first one's quota came back
            pass


def test_no_producer_is_a_clear_error(workdir):
    path = os.path.join(workdir, "nothing.sock")
    with pytest.raises(framebus.NoProducer) as info:
        framebus.Consumer(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, framebus.FramebusError)


def test_stale_socket_is_reported_then_replaced(workdir):
    path = os.path.join(workdir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: a crashed producer's leftover
    with pytest.raises(ConnectionRefusedError):
        framebus.Consumer(path)
    with framebus.Producer(path, FMT) as bus, framebus.Consumer(path) as cam:
        publish(bus)
        cam.get(timeout=2).release()


def test_a_live_producers_socket_is_never_stolen(bus, sock):
    with pytest.raises(framebus.FramebusError, match="already serving"):
        framebus.Producer(sock, FMT)
    with framebus.Consumer(sock) as cam:  # the first producer is untouched
        publish(bus)
        cam.get(timeout=2).release()


def test_a_file_that_is_not_a_socket_is_not_replaced(workdir):
    path = os.path.join(workdir, "precious")
    with open(path, "w") as f:
        f.write("data")
    with pytest.raises(framebus.FramebusError, match="not a socket"):
        framebus.Producer(path, FMT)
    assert open(path).read() == "data"


def test_close_is_safe_twice_and_from_any_state(sock):
    bus = framebus.Producer(sock, FMT)
    cam = framebus.Consumer(sock)
    publish(bus)
    frame = cam.get(timeout=2)
    cam.close()
    cam.close()
    assert frame.released
    bus.close()
    bus.close()
    assert not os.path.exists(sock)
    with pytest.raises(framebus.BusClosed):
        bus.acquire(timeout=0)


def test_publish_rejects_a_buffer_it_did_not_hand_out(bus):
    buf = bus.acquire(timeout=1)
    bus.publish(buf)
    with pytest.raises(ValueError, match="not acquired"):
        bus.publish(buf)


@pytest.mark.parametrize("fourcc", [f for f in framebus.PIXEL_FORMATS if f != "MJPG"])
def test_every_format_arrives_intact_with_planes(workdir, fourcc):
    fmt = FrameFormat(64, 48, fourcc, bytesperline=64 * 4 + 32)
    path = os.path.join(workdir, f"{fourcc}.sock")
    pattern = Pattern(fmt)
    with framebus.Producer(path, fmt) as bus, framebus.Consumer(path) as cam:
        buf = bus.acquire(timeout=1)
        seq = bus.next_seq
        pattern.draw(buf.views.planes, seq)
        bus.publish(buf)
        with cam.get(timeout=2) as frame:
            assert pattern.check(frame.planes, frame.seq)
            assert frame.array.shape == buf.array.shape
            assert frame.array.strides == buf.array.strides
            assert [p.shape for p in frame.planes] == [p.shape for p in buf.views.planes]


def test_mjpg_view_covers_bytesused(sock):
    fmt = FrameFormat(64, 48, "MJPG", sizeimage=8192)
    with framebus.Producer(sock, fmt) as bus, framebus.Consumer(sock) as cam:
        buf = bus.acquire(timeout=1)
        buf.array[:4] = [0xFF, 0xD8, 0xFF, 0xE0]
        bus.publish(buf, bytesused=1234)
        with cam.get(timeout=2) as frame:
            assert frame.array.shape == (1234,) and frame.bytesused == 1234
            assert bytes(frame.array[:2]) == b"\xff\xd8"
        with pytest.raises(ValueError, match="bytesused"):
            bus.publish(bus.acquire(timeout=1), bytesused=9000)


def test_two_hundred_attach_detach_cycles_leak_nothing(sock, no_leaks):
    with framebus.Producer(sock, FMT) as bus:
        import psutil
        me = psutil.Process()
        for _ in range(5):  # warm up lazily created state (the bus relay, kept 2 s idle)
            with framebus.Consumer(sock):
                pass
        time.sleep(0.2)
        gc.collect()
        fds, threads = me.num_fds(), me.num_threads()
        for n in range(200):
            with framebus.Consumer(sock, name=f"c{n}") as cam:
                if n % 20 == 0:
                    publish(bus)
                    cam.get(timeout=2).release()
        time.sleep(0.2)
        gc.collect()
        assert me.num_fds() == fds
        assert me.num_threads() == threads
        assert bus.stats()["consumers"] == []


@pytest.mark.parametrize("channel, spin", [("zmq", 0.0), ("zmq", 0.001), ("socket", 0.0),
                                            ("socket", 0.001)])
def test_every_channel_keeps_the_contract(sock, channel, spin):
    with framebus.Producer(sock, FMT, buffers=6, lease_timeout=0.3) as bus:
        with framebus.Consumer(sock, channel=channel, spin=spin, max_held=1) as cam:
            publish(bus, 1)
            with cam.get(timeout=2) as frame:  # newest on request
                assert frame.seq == 1 and (frame.array == 1).all()
            with pytest.raises(TimeoutError):
                cam.get(timeout=0.1)
            publish(bus, 2)  # the leftover credit takes it
            frame = cam.get(timeout=2)
            assert frame.seq == 2
            time.sleep(0.5)  # revoked after 0.3 s
            assert bus.stats()["consumers"][0]["revoked"] == 1
            frame.release()
        with framebus.Consumer(sock, channel=channel, policy="queue", depth=3) as cam:
            time.sleep(0.1)
            seqs = [publish(bus) for _ in range(3)]
            assert [cam.get(timeout=2).seq for _ in range(2)] == seqs[:2]
        cam = framebus.Consumer(sock, channel=channel, spin=spin)
    with pytest.raises(framebus.ProducerGone) as info:
        cam.get(timeout=2)
    assert info.value.clean
    cam.close()


def test_unknown_channel_and_bad_spin_are_clear_errors(sock):
    with pytest.raises(ValueError, match="channel"):
        framebus.Consumer(sock, channel="pigeon")
    with pytest.raises(ValueError, match="spin"):
        framebus.Consumer(sock, spin=5)


def test_every_refusal_is_a_permission_denied(sock):
    with framebus.Producer(sock, FMT, buffers=4, reserve=2):
        with framebus.Consumer(sock, max_held=2):
            with pytest.raises(framebus.PermissionDenied) as info:
                framebus.Consumer(sock, max_held=1)
    assert isinstance(info.value, PermissionError) and isinstance(info.value, framebus.Refused)


@pytest.mark.parametrize("settings, what", [
    ({"lease_timeout": 0}, "lease_timeout"), ({"lease_timeout": float("nan")}, "lease_timeout"),
    ({"lease_timeout": 86_401}, "lease_timeout"), ({"max_consumers": 0}, "max_consumers"),
    ({"max_consumers": 4097}, "max_consumers"),
])
def test_reconfigure_refuses_what_the_constructor_refuses(bus, sock, settings, what):
    with pytest.raises(ValueError, match=what):
        framebus.Producer(sock + ".2", FMT, **settings)
    with pytest.raises(ValueError, match=what):
        bus.reconfigure(**settings)
    assert bus.stats()["lease_timeout"] == bus.lease_timeout > 0  # unchanged, still serving
    assert publish(bus) >= 1
