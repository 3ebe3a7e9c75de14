"""The memory store: bounded (traces, spans per trace, statistics keys), expiring after its
ttl, and answering trace / recent / stats. Time is a fake clock: nothing sleeps."""

from __future__ import annotations

from typing import Any

import pytest
from tracing_support import (
    check_filtered_recent,
    failed_trace_ids,
    run_async,
    span_id,
    trace_id,
    wire_record,
)

from gateway.trace_records import Record, parse_record
from gateway.trace_store import MemoryTraceStore


class FakeClock:
    def __init__(self, now: float = 1_700_000_040.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(tid: int = 1, sid: int = 1, **overrides: Any) -> Record:
    parsed = parse_record(wire_record(tid=trace_id(tid), sid=span_id(sid), **overrides))
    assert parsed is not None
    return parsed


def timed(tid: int, start: float, duration: float = 0.01, **overrides: Any) -> Record:
    return record(tid, t0=start, t1=None, t2=start + duration, **overrides)


@run_async
async def test_a_trace_lists_its_records_by_start_time() -> None:
    store = MemoryTraceStore()
    later, earlier = timed(1, 20.0, sid=2), timed(1, 10.0, sid=3)
    assert await store.add([later, timed(2, 5.0), earlier]) == 3
    assert [r["sid"] for r in await store.trace(trace_id(1))] == [span_id(3), span_id(2)]
    assert await store.trace(trace_id(1).upper()) == await store.trace(trace_id(1))
    assert await store.trace(trace_id(99)) == []
    with pytest.raises(ValueError, match="32 hex"):
        await store.trace("not-a-trace")


@run_async
async def test_at_most_max_traces_are_kept_the_least_recently_updated_go_first() -> None:
    store = MemoryTraceStore(max_traces=3)
    await store.add([timed(n, 100.0 + n) for n in (1, 2, 3)])
    await store.add([timed(1, 101.5, sid=9)])  # trace 1 is updated: 2 is now the oldest
    await store.add([timed(4, 104.0)])
    assert len(store) == 3
    assert store.evicted == 1
    assert await store.trace(trace_id(2)) == []
    assert len(await store.trace(trace_id(1))) == 2
    assert [line["trace_id"] for line in await store.recent(10)] == [
        trace_id(4),
        trace_id(3),
        trace_id(1),
    ]


@run_async
async def test_traces_expire_ttl_seconds_after_their_last_record() -> None:
    clock = FakeClock()
    store = MemoryTraceStore(ttl=60, clock=clock)
    await store.add([timed(1, 1.0), timed(2, 2.0)])
    clock.now += 30
    await store.add([timed(2, 3.0, sid=2)])
    clock.now += 31
    assert await store.trace(trace_id(1)) == []
    assert len(await store.trace(trace_id(2))) == 2
    clock.now += 30
    assert await store.recent() == []
    assert store.evicted == 0  # expiry is not eviction


@run_async
async def test_failed_traces_are_found_until_evicted_or_expired() -> None:
    clock = FakeClock()
    store = MemoryTraceStore(max_traces=3, ttl=60, clock=clock)

    await store.add([timed(1, 1.0, out="error"), timed(2, 2.0), timed(3, 3.0, out="timeout")])
    assert await failed_trace_ids(store) == [trace_id(3), trace_id(1)]
    await store.add([timed(4, 4.0)])  # trace 1 is evicted
    assert await failed_trace_ids(store) == [trace_id(3)]
    await store.add([timed(2, 2.5, sid=2, out="lost")])  # trace 2 fails later on
    assert await failed_trace_ids(store) == [trace_id(3), trace_id(2)]
    clock.now += 61
    assert await failed_trace_ids(store) == []
    await store.add([timed(5, 5.0, out="abandoned"), timed(6, 6.0, out="stream")])
    assert await failed_trace_ids(store) == []  # neither is a failure


@run_async
async def test_a_trace_stops_growing_at_max_spans() -> None:
    store = MemoryTraceStore(max_spans=5)
    assert await store.add([record(1, sid) for sid in range(8)]) == 5
    assert store.dropped_spans == 3
    assert [r["sid"] for r in await store.trace(trace_id(1))] == [span_id(n) for n in range(5)]


@run_async
async def test_recent_lists_the_newest_traces_first_with_their_summary() -> None:
    store = MemoryTraceStore()
    await store.add([timed(n, 1000.0 + n) for n in range(20)])
    await store.add([timed(3, 999.0, sid=7, out="error", par=span_id(1))])
    lines = await store.recent(3)
    assert [line["trace_id"] for line in lines] == [trace_id(19), trace_id(18), trace_id(17)]
    (three,) = [line for line in await store.recent(20) if line["trace_id"] == trace_id(3)]
    assert three == {
        "trace_id": trace_id(3),
        "start": 999.0,
        "duration": pytest.approx(4.01),
        "spans": 2,
        "errors": 1,
        "root": {"svc": "calc", "m": "add"},
    }
    for limit in (0, 1001, "5", 2.0):
        with pytest.raises(ValueError, match="limit"):
            await store.recent(limit)  # type: ignore[arg-type]


@run_async
async def test_recent_with_a_filter_lists_the_newest_traces_with_such_a_span() -> None:
    await check_filtered_recent(MemoryTraceStore(), 1_700_000_000.0)


@run_async
async def test_stats_count_calls_errors_latencies_and_the_rate_of_the_last_minute() -> None:
    clock = FakeClock(60 * 28_333_334 + 40.0)  # 40 s into a minute window
    store = MemoryTraceStore(clock=clock)
    await store.add([timed(n, 1.0, 0.004) for n in range(60)])  # the previous window...
    clock.now += 30  # ...10 s into the next one
    await store.add([timed(100 + n, 2.0, 0.2, out="error") for n in range(30)])
    await store.add([timed(200, 3.0, side="client", svc="calc", m="add")])  # server wins
    await store.add([timed(201, 3.0, side="client", svc="users", m="get")])
    stats = await store.stats()
    add = stats["calc"]["add"]
    assert (add["count"], add["errors"], add["side"]) == (90, 30, "server")
    # the last 60 s: all 30 of this window, and 50 s of the previous one's 60
    assert add["rate"] == pytest.approx((30 + 60 * 50 / 60) / 60)
    assert 0.0025 < add["p50"] <= 0.005
    assert 0.1 < add["p90"] <= 0.25
    assert sum(hits for _, hits in add["buckets"]) == 90
    assert stats["users"]["get"]["side"] == "client"
    # over the last minute only: the current window
    assert (await store.stats(minutes=1))["calc"]["add"]["count"] == 30
    assert (await store.stats(minutes=2))["calc"]["add"]["count"] == 90
    clock.now += 120
    assert (await store.stats())["calc"]["add"]["rate"] == 0.0
    assert await store.stats(minutes=1) == {}
    with pytest.raises(ValueError, match="minutes"):
        await store.stats(minutes=61)


@run_async
async def test_statistics_keys_are_bounded() -> None:
    store = MemoryTraceStore(max_stat_keys=2)
    await store.add([timed(n, 1.0, m=f"m{n}") for n in range(5)])
    assert sorted((await store.stats())["calc"]) == ["m0", "m1"]
    assert store.untallied == 3
    assert len(store) == 5  # the records themselves are kept
    assert store.counters() == {"traces": 5, "evicted": 0, "dropped_spans": 0, "untallied": 3}


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_traces"):
        MemoryTraceStore(max_traces=0)
    assert "traces=0/10" in repr(MemoryTraceStore(max_traces=10))
