"""TimerQueue: one pending deadline per key, stale entries skipped, memory kept bounded."""

from __future__ import annotations

import random

import pytest

from rpccore._timers import TimerQueue


def test_empty_queue() -> None:
    queue: TimerQueue[str] = TimerQueue()
    assert len(queue) == 0
    assert queue.next_deadline() is None
    assert queue.pop_due(1e9) == []


def test_pop_due_returns_due_keys_in_deadline_order() -> None:
    queue: TimerQueue[str] = TimerQueue()
    for key, when in [("c", 3.0), ("a", 1.0), ("d", 4.0), ("b", 2.0)]:
        queue.schedule(key, when)
    assert queue.next_deadline() == 1.0
    assert queue.pop_due(0.999) == []
    assert queue.pop_due(2.5) == ["a", "b"]
    assert queue.next_deadline() == 3.0
    assert len(queue) == 2
    assert queue.pop_due(10.0) == ["c", "d"]
    assert len(queue) == 0
    assert queue.next_deadline() is None


def test_equal_deadlines_fire_in_scheduling_order() -> None:
    queue: TimerQueue[int] = TimerQueue()
    for key in (5, 3, 9, 1):
        queue.schedule(key, 7.0)
    assert queue.pop_due(7.0) == [5, 3, 9, 1]


def test_a_deadline_exactly_now_is_due() -> None:
    queue: TimerQueue[str] = TimerQueue()
    queue.schedule("k", 5.0)
    assert queue.pop_due(5.0) == ["k"]


def test_cancel_removes_the_pending_deadline() -> None:
    queue: TimerQueue[str] = TimerQueue()
    queue.schedule("a", 1.0)
    queue.schedule("b", 2.0)
    queue.cancel("a")
    queue.cancel("a")  # twice is harmless
    queue.cancel("never-scheduled")
    assert len(queue) == 1
    assert queue.next_deadline() == 2.0
    assert queue.pop_due(5.0) == ["b"]


@pytest.mark.parametrize(("first", "second"), [(10.0, 2.0), (2.0, 10.0)])
def test_rescheduling_keeps_only_the_latest_deadline(first: float, second: float) -> None:
    queue: TimerQueue[str] = TimerQueue()
    queue.schedule("k", first)
    queue.schedule("k", second)
    assert len(queue) == 1
    assert queue.next_deadline() == second
    assert queue.pop_due(min(first, second) - 0.5) == []
    assert queue.pop_due(max(first, second)) == ["k"]  # once, not twice
    assert queue.pop_due(1e9) == []


def test_a_popped_key_can_be_scheduled_again() -> None:
    queue: TimerQueue[str] = TimerQueue()
    queue.schedule("k", 1.0)
    assert queue.pop_due(1.0) == ["k"]
    queue.schedule("k", 6.0)
    assert queue.next_deadline() == 6.0
    assert queue.pop_due(6.0) == ["k"]


def test_rescheduling_one_key_forever_keeps_the_heap_small() -> None:
    queue: TimerQueue[str] = TimerQueue()
    queue.schedule("other", 1e9)
    for n in range(100_000):
        queue.schedule("hot", float(n))
    assert len(queue) == 2
    assert len(queue._heap) <= 2 * len(queue) + 65
    assert queue.next_deadline() == 99_999.0
    assert queue.pop_due(1e9) == ["hot", "other"]


def test_cancelled_keys_do_not_pile_up() -> None:
    queue: TimerQueue[int] = TimerQueue()
    for round_ in range(50):
        for key in range(1000):
            queue.schedule(key, float(round_ * 1000 + key))
        for key in range(1000):
            queue.cancel(key)
    queue.schedule(-1, 0.0)
    assert len(queue) == 1
    assert len(queue._heap) <= 2 * len(queue) + 65
    assert queue.pop_due(1e9) == [-1]


def test_random_operations_match_a_simple_model() -> None:
    rng = random.Random(20260527)
    queue: TimerQueue[int] = TimerQueue()
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(20_000):
        op = rng.random()
        key = rng.randrange(50)
        if op < 0.5:
            when = now + rng.uniform(0.0, 10.0)
            queue.schedule(key, when)
            model[key] = when
        elif op < 0.7:
            queue.cancel(key)
            model.pop(key, None)
        else:
            now += rng.uniform(0.0, 2.0)
            due = sorted((when, key) for key, when in model.items() if when <= now)
            assert queue.pop_due(now) == [key for _, key in due]
            for _, key in due:
                del model[key]
        assert len(queue) == len(model)
        assert queue.next_deadline() == (min(model.values()) if model else None)
        # Memory stays proportional to the keys that can be live at once (50 here).
        assert len(queue._heap) <= 2 * 50 + 65


def test_repr() -> None:
    queue: TimerQueue[str] = TimerQueue()
    queue.schedule("a", 1.0)
    queue.schedule("a", 2.0)
    assert repr(queue) == "<TimerQueue live=1 heap=2>"
