"""The lease table's rules, without processes or clocks."""

import pytest

from framebus._leases import LeaseTable, Release


def published(table: LeaseTable, seq: int) -> int:
    index = table.start_writing()
    assert index is not None
    table.published(index, seq)
    return index


def test_a_leased_buffer_is_never_handed_out_for_writing():
    table = LeaseTable(2)
    table.add_holder(1)
    a = published(table, 1)
    table.grant_each([1], a, deadline=10)
    b = table.start_writing()
    assert b != a
    table.published(b, 2)
    table.grant_each([1], b, deadline=10)
    assert table.start_writing() is None  # both leased


def test_the_oldest_free_frame_is_rewritten_first():
    table = LeaseTable(3)
    indexes = [published(table, seq) for seq in (1, 2, 3)]
    assert table.start_writing() == indexes[0]


def test_release_frees_the_buffer_and_a_second_release_is_unknown():
    table = LeaseTable(1)
    table.add_holder(1)
    index = published(table, 1)
    table.grant_each([1], index, deadline=10)
    assert table.release(1, 1) is Release.RELEASED
    assert table.release(1, 1) is Release.UNKNOWN
    assert table.start_writing() == index


def test_a_holder_cannot_release_another_holders_lease():
    table = LeaseTable(1)
    table.add_holder(1)
    table.add_holder(2)
    index = published(table, 1)
    table.grant_each([1], index, deadline=10)
    assert table.release(2, 1) is Release.UNKNOWN
    assert table.holders[index] == 1


def test_one_frame_granted_to_several_holders_in_one_call():
    table = LeaseTable(2)
    for holder in (1, 2, 3):
        table.add_holder(holder)
    index = published(table, 7)
    assert table.grant_each([1, 3], index, deadline=10) == 7
    assert table.holders[index] == 2
    assert table.seqs_held(1) == table.seqs_held(3) == [7] and table.seqs_held(2) == []
    lease = table.by_holder[3][7]
    assert (lease.holder, lease.seq, lease.index, lease.deadline) == (3, 7, index, 10)
    with pytest.raises(ValueError, match="already leases"):
        table.grant_each([2, 1], index, deadline=10)  # holder 1 has it already: none granted
    assert table.seqs_held(2) == [] and table.holders[index] == 2
    assert table.release(1, 7) is Release.RELEASED
    assert table.release(3, 7) is Release.RELEASED
    assert table.holders[index] == 0


def test_shared_frame_stays_leased_until_every_holder_releases():
    table = LeaseTable(2)
    table.add_holder(1)
    table.add_holder(2)
    index = published(table, 1)
    table.grant_each([1], index, deadline=10)
    table.grant_each([2], index, deadline=10)
    table.release(1, 1)
    assert table.holders[index] == 1
    table.release(2, 1)
    assert table.holders[index] == 0


def test_removing_a_holder_reclaims_all_its_leases():
    table = LeaseTable(3)
    table.add_holder(1)
    for seq in (1, 2):
        table.grant_each([1], published(table, seq), deadline=10)
    assert len(table.remove_holder(1)) == 2
    assert table.free_count() == 3


def test_expired_leases_are_revoked_and_their_late_release_is_harmless():
    table = LeaseTable(2)
    table.add_holder(1)
    index = published(table, 1)
    table.grant_each([1], index, deadline=5.0)
    assert table.next_deadline() == 5.0
    assert table.revoke_expired(now=4.9) == []
    [lease] = table.revoke_expired(now=5.0)
    assert lease.seq == 1 and table.holders[index] == 0
    assert table.release(1, 1) is Release.LATE


def test_stale_release_cannot_free_a_newer_frame_in_the_same_buffer():
    table = LeaseTable(1)
    table.add_holder(1)
    index = published(table, 1)
    table.grant_each([1], index, deadline=1.0)
    table.revoke_expired(now=2.0)
    assert published(table, 2) == index
    table.grant_each([1], index, deadline=10.0)
    assert table.release(1, 1) is Release.LATE  # the old frame's release
    assert table.holders[index] == 1  # the new frame is still leased


def test_grant_of_an_unpublished_buffer_is_a_bug():
    table = LeaseTable(1)
    table.add_holder(1)
    with pytest.raises(ValueError):
        table.grant_each([1], 0, deadline=1)
    index = table.start_writing()
    with pytest.raises(ValueError):
        table.grant_each([1], index, deadline=1)
    table.abandon(index)
    with pytest.raises(ValueError):
        table.abandon(index)
