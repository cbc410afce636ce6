"""Whose turn it is to read the acks (`_acks.AckTurns`): pure state, each rule a test."""

from __future__ import annotations

import pytest

from framebus._acks import HOLD_MIN, PACE_MAX, AckTurns


def _paced(period: float, calls: int = 5) -> tuple[AckTurns, float]:
    turns = AckTurns()
    now = 1000.0
    for _ in range(calls):
        now += period
        turns.acquiring(now, new_call=True)
    return turns, now


@pytest.mark.parametrize("period", [0.00001, 0.01, 0.033])
def test_a_steady_pace_keeps_the_acks_for_the_minimum_hold(period):
    turns, now = _paced(period)
    assert turns.acquires(now + HOLD_MIN - 0.001)
    assert not turns.acquires(now + HOLD_MIN + 0.001)


def test_a_slow_steady_pace_keeps_them_for_two_periods():
    period = PACE_MAX * 0.9
    turns, now = _paced(period)
    assert turns.acquires(now + 2 * period - 0.001)
    assert not turns.acquires(now + 2 * period + 0.001)


def test_slower_than_pace_max_leaves_them_to_the_server_thread():
    turns, now = _paced(PACE_MAX * 1.5)
    assert not turns.acquires(now)
    turns.acquiring(now, new_call=False)  # (a waiting acquire() looking again)
    assert not turns.acquires(now)


def test_a_waiting_acquire_keeps_them_however_long():
    turns = AckTurns()
    turns.waiters = 1
    assert turns.acquires(1e9)
    turns.muted = True
    assert turns.sleep_until(1e9, 1e9 + 5) == 1e9 + 5


def test_the_muted_server_thread_sleeps_to_the_end_of_the_hold_then_takes_them_back():
    turns, now = _paced(0.01)
    turns.muted = True
    assert turns.sleep_until(now, now + 10) == pytest.approx(now + HOLD_MIN)
    assert turns.sleep_until(now, now + 0.01) == now + 0.01  # an earlier timer first
    assert turns.sleep_until(now + HOLD_MIN + 0.001, now + 10) is None
    turns.muted = False
    assert turns.sleep_until(now + HOLD_MIN + 0.001, now + 10) == now + 10


def test_acquire_wakes_the_server_thread_only_if_it_sleeps_past_the_hold():
    turns, now = _paced(0.01)
    turns.muted = True
    turns.sleeping_until = turns.hot_until
    assert not turns.left_unattended()
    turns.sleeping_until = turns.hot_until + 1  # it slept while acquire() waited
    assert turns.left_unattended()
    turns.waiters = 1
    assert not turns.left_unattended()
