"""The producer's bookkeeping (`framebus._bus.Bus`): every rule without a socket or a clock."""

from __future__ import annotations

import pytest

from framebus._bus import FLOOD_WINDOW, USELESS_LIMIT, Admission, Bus
from framebus._protocol import LATEST, QUEUE, SOCKET, ZMQ
from framebus.linux.fdpass import Credentials

ME = Credentials(pid=100, uid=1000, gid=1000)
OTHER = Credentials(pid=200, uid=2000, gid=2000)


def _admit(bus: Bus, token: bytes = b"t1", peer: Credentials = ME, policy: str = LATEST,
           max_held: int = 2, depth: int = 0, now: float = 0.0):
    sub = bus.admit(token, token.decode(), peer, policy, max_held, depth, ZMQ, now)
    sub.connected = True
    return sub


def _publish(bus: Bus, seq: int, stamp: int = 0) -> int:
    index = bus.start_writing()
    assert index is not None
    bus.published(index, seq, stamp, 100)
    return index


def test_a_latest_consumer_gets_a_frame_only_when_it_has_credit():
    bus = Bus(8, 2)
    sub = _admit(bus)
    _publish(bus, 1)
    assert bus.recipients() == []
    index = bus.on_credit(sub, 1, now=0.0)  # asks: the newest frame, which it has not seen
    assert index is not None and bus.frames[index].seq == 1
    bus.delivered([sub], index, deadline=10.0)
    assert sub.credit == 0 and sub.last_seq == 1
    assert bus.on_credit(sub, 1, now=0.0) is None  # nothing newer yet: it waits
    _publish(bus, 2)
    assert bus.recipients() == [sub]


def test_a_queue_consumer_gets_every_frame_up_to_its_depth():
    bus = Bus(8, 2)
    sub = _admit(bus, policy=QUEUE, max_held=1, depth=3)
    for seq in (1, 2, 3):
        index = _publish(bus, seq)
        assert bus.recipients() == [sub]
        bus.delivered([sub], index, deadline=10.0)
    _publish(bus, 4)
    assert bus.recipients() == []  # full: the frame is dropped for it


def test_drops_are_counted_from_sequence_gaps():
    bus = Bus(8, 2)
    sub = _admit(bus, policy=QUEUE, max_held=4, depth=4)
    bus.delivered([sub], _publish(bus, 1), 10.0)
    _publish(bus, 2)
    bus.delivered([sub], _publish(bus, 3), 10.0)
    assert sub.dropped == 1 and sub.delivered == 2


def test_a_release_frees_the_buffer_and_a_stale_one_is_only_counted():
    bus = Bus(3, 1)
    sub = _admit(bus, max_held=2)
    bus.on_credit(sub, 2, 0.0)
    first = _publish(bus, 1)
    bus.delivered([sub], first, 1.0)
    second = _publish(bus, 2)
    bus.delivered([sub], second, 1.0)
    assert bus.start_writing() is not None  # the third buffer
    assert bus.on_release(sub, [1], now=0.5) is True
    assert bus.revoke_expired(now=2.0) == 1  # frame 2's lease ran out
    assert bus.on_release(sub, [2], now=2.0) is False
    assert sub.late_releases == 1 and sub.errors == 0


def test_releasing_what_it_does_not_hold_is_a_violation():
    bus = Bus(8, 2)
    sub = _admit(bus)
    bus.on_release(sub, [77], now=0.0)
    assert sub.errors == 1 and bus.counters["errors"] == 1


def test_the_newest_buffer_is_forgotten_when_it_is_rewritten():
    bus = Bus(2, 0)
    sub = _admit(bus, max_held=1)
    first = _publish(bus, 1)
    _publish(bus, 2)
    assert bus.start_writing() == first  # the oldest free one
    assert bus.frames[first] is None and bus.newest != first
    assert bus.on_credit(sub, 1, 0.0) is not None  # frame 2 is still there


def test_quotas_leave_the_reserve_and_refuse_with_the_numbers():
    bus = Bus(8, 2)
    _admit(bus, b"a", max_held=3)
    _admit(bus, b"b", OTHER, max_held=3)
    with pytest.raises(Admission, match="0 of 6 left"):
        _admit(bus, b"c", max_held=1)


def test_one_uid_cannot_reserve_every_buffer_while_others_attach():
    bus = Bus(10, 2)  # 8 buffers for leases; one uid may reserve 6 of them
    _admit(bus, b"a", max_held=4)
    _admit(bus, b"b", OTHER, max_held=1)
    with pytest.raises(Admission, match="uid 1000 already reserves 4"):
        _admit(bus, b"c", max_held=3)
    _admit(bus, b"d", max_held=2)


def test_alone_a_uid_may_use_every_buffer():
    bus = Bus(10, 2)
    _admit(bus, b"a", max_held=4)
    _admit(bus, b"b", max_held=4)


def test_bad_terms_are_refused():
    bus = Bus(8, 2)
    for policy, channel, max_held in (("sideways", ZMQ, 1), (LATEST, "pigeon", 1), (LATEST, ZMQ, 0)):
        with pytest.raises(Admission) as refused:
            bus.admit(b"x", "x", ME, policy, max_held, 0, channel, 0.0)
        assert refused.value.code == "protocol"
    bus.admit(b"s", "s", ME, LATEST, 1, 0, SOCKET, 0.0)


def test_removing_a_consumer_reclaims_its_leases():
    bus = Bus(8, 2)
    sub = _admit(bus, policy=QUEUE, max_held=2, depth=2)
    bus.delivered([sub], _publish(bus, 1), 10.0)
    bus.delivered([sub], _publish(bus, 2), 10.0)
    assert bus.remove(sub) == 2
    assert bus.counters["reclaimed"] == 2 and bus.leases.leased_count() == 0
    assert bus.remove(sub) == 0


def test_a_source_that_is_not_live_waits_for_a_full_queue_consumer():
    bus = Bus(8, 2, live=False)
    sub = _admit(bus, policy=QUEUE, max_held=1, depth=2)
    bus.delivered([sub], _publish(bus, 1), 10.0)
    bus.delivered([sub], _publish(bus, 2), 10.0)
    assert bus.start_writing() is None
    bus.on_release(sub, [1], 0.0)
    assert bus.start_writing() is not None


def test_a_flood_of_messages_that_do_nothing_cuts_the_flooder_off():
    bus = Bus(8, 2)
    sub = _admit(bus, max_held=1)
    for _ in range(USELESS_LIMIT + 1):
        bus.on_credit(sub, 1, now=0.5)  # credit is full after the first
    assert not sub.cut_off
    bus.on_credit(sub, 1, now=0.6)
    assert "flooding" in sub.cut_off and bus.to_cut() == [sub]


def test_useless_messages_spread_over_time_are_tolerated():
    bus = Bus(8, 2)
    sub = _admit(bus, max_held=1)
    for n in range(3 * USELESS_LIMIT):
        bus.on_credit(sub, 1, now=n * 3 * FLOOD_WINDOW / USELESS_LIMIT)
    assert not sub.cut_off


def test_a_report_is_kept_when_small_and_refused_when_not():
    bus = Bus(8, 2)
    sub = _admit(bus)
    bus.on_report(sub, {"sent": 10, "link": "tcp"}, 0.0)
    assert sub.figures == {"sent": 10, "link": "tcp"}
    bus.on_report(sub, {f"k{n}": n for n in range(40)}, 0.0)
    assert sub.errors == 1 and sub.figures == {"sent": 10, "link": "tcp"}
    assert bus.report(1.0)["consumers"][0]["figures"] == {"sent": 10, "link": "tcp"}
