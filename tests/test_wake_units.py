"""The wake rules with an injected clock: batching window, minimum interval, backoff."""

from __future__ import annotations

import random

from agentcom_skill.wake import WakeBatcher, idempotency_key


def test_a_burst_waits_for_the_window_then_wakes_at_most_once_per_interval():
    b = WakeBatcher(window=2, min_interval=10, rng=random.Random(1))
    assert b.due_at() is None
    b.note_waiting(100.0, 1)
    b.note_waiting(100.5, 30)  # more arrive: the window does not move
    assert b.due_at() == 102.0
    b.woke(102.0)
    b.note_waiting(102.1, 30)  # the rest of the burst
    assert b.due_at() == 112.0, "held by the minimum interval"
    b.woke(112.0)
    b.note_waiting(112.0, 0)
    assert b.due_at() is None
    b.note_waiting(500.0, 1)  # a lone message long after: just the window
    assert b.due_at() == 502.0


def test_fifty_in_one_second_are_three_wakes_of_twenty_at_most():
    b = WakeBatcher(window=2, min_interval=10)
    waiting, now, wakes = 0, 0.0, []
    for n in range(50):
        waiting += 1
        b.note_waiting(n / 50, waiting)
    while waiting:
        now = max(now, b.due_at())
        carried = min(20, waiting)
        wakes.append(carried)
        waiting -= carried
        b.woke(now)
        b.note_waiting(now, waiting)
    assert wakes == [20, 20, 10]


def test_failures_back_off_with_jitter_or_retry_after():
    b = WakeBatcher(window=0, min_interval=0, rng=random.Random(3))
    b.note_waiting(0.0, 1)
    delays = [b.failed(0.0) for _ in range(8)]
    assert all(0 <= d <= 60 for d in delays) and max(delays) > 2, "grows, capped at 60 s"
    assert b.failed(0.0, retry_after=7) == 7 and b.due_at() == 7
    assert b.failed(0.0, retry_after=0) == 1.0, "a Retry-After of 0 still waits a second"
    b.woke(8.0)
    b.note_waiting(8.0, 1)
    assert b.due_at() == 8.0


def test_idempotency_key_is_stable_for_a_retry_and_new_for_a_redelivery():
    assert idempotency_key(["b", "a"], [1, 1]) == idempotency_key(["a", "b"], [1, 1])
    assert idempotency_key(["a", "b"], [1, 1]) != idempotency_key(["a", "b"], [2, 1])
