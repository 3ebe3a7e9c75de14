"""The Redis store on a real redis-server: one pipeline per batch, lists with a TTL, the
recent set trimmed, counters and latency buckets per minute window, and records of at most
300 bytes (with the measurements the README quotes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from loopback import free_port
from redis.asyncio import Redis
from redis_support import RedisServer
from tracing_support import (
    check_filtered_recent,
    failed_trace_ids,
    run_async,
    span_id,
    trace_id,
    wire_record,
)

from gateway import trace_store
from gateway.config import RedisStore, TracingConfig
from gateway.trace_records import MAX_PACKED_BYTES, Record, TraceFilter, parse_record
from gateway.trace_store import RedisTraceStore, StoreUnavailable, store_from_config

NOW = time.time()


def record(tid: int = 1, sid: int = 1, start: float | None = None, **overrides: Any) -> Record:
    t0 = NOW - 10 if start is None else start
    fields: dict[str, Any] = {"t0": t0, "t1": None, "t2": t0 + 0.003, **overrides}
    parsed = parse_record(wire_record(tid=trace_id(tid), sid=span_id(sid), **fields))
    assert parsed is not None
    return parsed


async def keys(redis: Redis, prefix: str) -> list[str]:
    return sorted(key.decode() for key in await redis.keys(prefix + "*"))


@pytest.fixture
def make_store(redis_url: str, redis_prefix: str) -> Callable[..., RedisTraceStore]:
    return lambda **options: RedisTraceStore(redis_url, prefix=redis_prefix, **options)


Opener = Callable[..., AbstractAsyncContextManager[tuple[RedisTraceStore, Redis]]]


@pytest.fixture
def opened(make_store: Callable[..., RedisTraceStore], redis_url: str) -> Opener:
    """``async with opened(**options) as (store, redis)``: a store and a client of its Redis,
    to look at the keys, both closed after."""

    @asynccontextmanager
    async def opened(**options: Any) -> AsyncIterator[tuple[RedisTraceStore, Redis]]:
        store, redis = make_store(**options), Redis.from_url(redis_url)
        try:
            yield store, redis
        finally:
            await redis.aclose()
            await store.aclose()

    return opened


@run_async
async def test_a_batch_lands_as_lists_a_recent_set_and_counters(
    opened: Opener, redis_prefix: str
) -> None:
    async with opened(ttl=3600) as (store, redis):
        assert await store.add([record(1, 1), record(1, 2), record(2, 3, out="error")]) == 3
        assert await keys(redis, redis_prefix) == sorted(
            [
                f"{redis_prefix}trace:{trace_id(1)}",
                f"{redis_prefix}trace:{trace_id(2)}",
                f"{redis_prefix}traces",
                f"{redis_prefix}traces:failed",  # trace 2 failed
                f"{redis_prefix}stats",
                f"{redis_prefix}stats:{int(time.time() // 60)}",
            ]
        )
        assert await redis.llen(f"{redis_prefix}trace:{trace_id(1)}") == 2
        for key in await keys(redis, redis_prefix):
            ttl = await redis.ttl(key)
            assert 0 < ttl <= 3660, (key, ttl)
        stats = await redis.hgetall(f"{redis_prefix}stats")
        assert stats[b"server\tcalc\tadd\tn"] == b"3"
        assert stats[b"server\tcalc\tadd\te"] == b"1"
        assert stats[b"server\tcalc\tadd\tb4"] == b"3"  # 3 ms: (2.5 ms, 5 ms]
        records = await store.trace(trace_id(1))
        assert [r["sid"] for r in records] == [span_id(1), span_id(2)]
        assert records[0] == pytest.approx(record(1, 1).to_dict())
    await store.aclose()  # closing twice is harmless


@run_async(timeout=20)
async def test_traces_expire_after_the_ttl(make_store: Callable[..., RedisTraceStore]) -> None:
    store = make_store(ttl=1)
    try:
        await store.add([record(1)])
        assert len(await store.trace(trace_id(1))) == 1
        deadline = time.monotonic() + 5
        while await store.trace(trace_id(1)):
            assert time.monotonic() < deadline, "the trace never expired"
            await asyncio.sleep(0.1)
        assert await store.recent() == []
    finally:
        await store.aclose()


@run_async
async def test_recent_with_a_filter_lists_the_newest_traces_with_such_a_span(
    make_store: Callable[..., RedisTraceStore],
) -> None:
    store = make_store()
    try:
        await check_filtered_recent(store, NOW)
    finally:
        await store.aclose()


@run_async
async def test_a_filter_reads_at_most_max_scanned_records(
    make_store: Callable[..., RedisTraceStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big traces: the scan stops once it has read its budget of records, whatever is left."""
    store = make_store(max_spans=50)
    try:
        batch = []
        for n in range(1, 31):  # 30 traces of 50 records, trace 30 the newest
            for k in range(1, 51):
                method = {(1, 1): "rare", (29, 1): "recent"}.get((n, k), "add")
                batch.append(record(n, k, start=NOW - 100 + n, m=method))
        assert await store.add(batch) == 1500

        async def found(method: str) -> list[str]:
            lines = await store.recent(5, TraceFilter(method=method))
            return [line["trace_id"] for line in lines]

        assert await found("rare") == [trace_id(1)]  # 1,500 records: within the budget
        monkeypatch.setattr(trace_store, "MAX_SCANNED_RECORDS", 400)  # the newest 8 traces
        assert await found("recent") == [trace_id(29)]
        assert await found("rare") == []
    finally:
        await store.aclose()


@run_async
async def test_the_recent_set_keeps_the_newest_max_traces(
    opened: Opener, redis_prefix: str
) -> None:
    async with opened(max_traces=3) as (store, redis):
        await store.add([record(n, start=NOW - 100 + n) for n in range(1, 6)])
        assert await redis.zcard(f"{redis_prefix}traces") == 3
        lines = await store.recent(10)
        assert [line["trace_id"] for line in lines] == [trace_id(5), trace_id(4), trace_id(3)]
        # a trace's start only moves earlier: an earlier record lowers it, a later one not
        await store.add([record(4, 2, start=NOW - 200), record(5, 2, start=NOW - 50)])
        lines = await store.recent(10)
        assert [line["trace_id"] for line in lines] == [trace_id(5), trace_id(3), trace_id(4)]
        assert lines[2]["start"] == pytest.approx(NOW - 200)
        assert lines[2]["spans"] == 2
        # an entry whose list is gone is skipped and forgotten
        await redis.delete(f"{redis_prefix}trace:{trace_id(3)}")
        assert [line["trace_id"] for line in await store.recent(10)] == [trace_id(5), trace_id(4)]
        assert await redis.zcard(f"{redis_prefix}traces") == 2
        # entries older than the ttl go
        await store.add([record(9, start=NOW - 90_000)])
        assert await redis.zscore(f"{redis_prefix}traces", trace_id(9)) is None


@run_async
async def test_the_failed_set_keeps_the_newest_max_traces_failures(
    opened: Opener, redis_prefix: str
) -> None:
    failed_key = f"{redis_prefix}traces:failed"
    async with opened(max_traces=3) as (store, redis):
        await store.add([record(n, start=NOW - 100 + n) for n in range(1, 4)])
        assert await redis.exists(failed_key) == 0  # written only by batches with a failure
        outcomes = ["error", "timeout", "lost", "ok", "abandoned", "stream", "error"]
        await store.add(
            [record(n, start=NOW - 10 + n, out=out) for n, out in enumerate(outcomes, 11)]
        )
        assert 0 < await redis.ttl(failed_key) <= store.ttl
        # 11 fell off: max 3
        assert await failed_trace_ids(store) == [trace_id(17), trace_id(13), trace_id(12)]
        # a trace's own failure later on lists it, at its start
        await store.add([record(14, 2, start=NOW - 10 + 14, out="error")])
        assert await failed_trace_ids(store) == [trace_id(17), trace_id(14), trace_id(13)]
        # an entry whose list is gone is skipped and forgotten
        await redis.delete(f"{redis_prefix}trace:{trace_id(17)}")
        assert await failed_trace_ids(store) == [trace_id(14), trace_id(13)]
        assert await redis.zcard(failed_key) == 2
        # failures older than the ttl go
        await store.add([record(19, start=NOW - 90_000, out="error")])
        assert await redis.zscore(failed_key, trace_id(19)) is None


@run_async
async def test_a_trace_stops_growing_at_max_spans(opened: Opener, redis_prefix: str) -> None:
    async with opened(max_spans=5) as (store, redis):
        assert await store.add([record(1, sid) for sid in range(3)]) == 3
        assert await store.add([record(1, sid) for sid in range(3, 8)]) == 2
        assert await redis.llen(f"{redis_prefix}trace:{trace_id(1)}") == 5
        assert store.dropped_spans == 3
        assert [r["sid"] for r in await store.trace(trace_id(1))] == [span_id(n) for n in range(5)]


@run_async
async def test_stats_buckets_and_windows(make_store: Callable[..., RedisTraceStore]) -> None:
    store = make_store()
    try:
        await store.add([record(n, t2=NOW - 10 + 0.0004) for n in range(40)])
        await store.add([record(100 + n, t2=NOW - 10 + 0.2, out="timeout") for n in range(10)])
        await store.add([record(200, side="client"), record(201, side="http", svc="users")])
        stats = await store.stats()
        add = stats["calc"]["add"]
        assert (add["count"], add["errors"], add["side"]) == (50, 10, "server")
        assert add["rate"] >= 50 / 60 - 1e-9  # all in the current window
        assert 0.00025 < add["p50"] <= 0.0005
        assert 0.1 < add["p99"] <= 0.25
        assert add["buckets"][1] == [0.0005, 40]
        assert stats["users"]["add"]["side"] == "http"
        assert await store.stats(minutes=1) == stats
        with pytest.raises(ValueError, match="minutes"):
            await store.stats(minutes=0)
    finally:
        await store.aclose()


@run_async
async def test_a_stored_record_is_at_most_300_bytes(opened: Opener, redis_prefix: str) -> None:
    four_bytes = "\U0001f600" * 100
    largest = record(
        2,
        par=span_id(7),
        side="client",
        out="error",
        svc="s" * 200,
        m="m" * 200,
        exc=four_bytes,
        proc=four_bytes,
        host="h" * 200,
        n=2**63 - 1,
        pid=2**32 - 1,
        t2=NOW + 10**8,
    )
    async with opened() as (store, redis):
        await store.add([record(1), largest])
        typical = await redis.lindex(f"{redis_prefix}trace:{trace_id(1)}", 0)
        biggest = await redis.lindex(f"{redis_prefix}trace:{trace_id(2)}", 0)
        assert len(typical) <= 80
        assert len(biggest) <= MAX_PACKED_BYTES
        # the whole key (name, list, one record) as Redis counts it
        usage = await redis.memory_usage(f"{redis_prefix}trace:{trace_id(1)}")
        print(
            f"\nstored record: typical {len(typical)} B, largest {len(biggest)} B; "
            f"MEMORY USAGE of a one-record trace: {usage} B"
        )
        assert usage is not None
        assert usage <= MAX_PACKED_BYTES


@run_async(timeout=60)
async def test_calls_per_day_in_one_gib(redis_url: str) -> None:
    """What the README quotes: Redis's used memory per call, for calls of one trace each
    (a client and a server record) and for traces of 10 calls."""
    redis = Redis.from_url(redis_url)
    results = {}
    try:
        for calls_per_trace in (1, 10):
            # as long a prefix as the real one ("zerogate:"); the recent set is bounded by
            # max_traces, whatever the traffic: leave it out
            prefix = f"zg{uuid.uuid4().hex[:6]}:"
            store = RedisTraceStore(redis_url, prefix=prefix, max_traces=1)
            calls = 20_000
            await redis.memory_purge()
            before = (await redis.info("memory"))["used_memory"]
            for first in range(0, calls, 1000):
                batch = []
                for call in range(first, first + 1000):
                    tid = 1_000_000 * calls_per_trace + call // calls_per_trace
                    batch += [record(tid, call, side="client"), record(tid, call)]
                await store.add(batch)
            after = (await redis.info("memory"))["used_memory"]
            per_call = (after - before) / calls
            results[calls_per_trace] = per_call
            await redis.delete(*await redis.keys(prefix + "*"))
            await store.aclose()
        for calls_per_trace, per_call in results.items():
            print(
                f"\n{calls_per_trace} call(s) per trace: {per_call:.0f} B per call "
                f"(2 records), {2**30 / per_call:,.0f} calls per GiB"
            )
        assert results[1] < 2 * MAX_PACKED_BYTES
    finally:
        await redis.aclose()


@run_async
async def test_an_unreachable_redis_is_reported_not_raised_raw() -> None:
    store = RedisTraceStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable, match="Redis at"):
            await store.add([record(1)])
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.aclose()


def test_the_config_picks_the_store() -> None:
    store = store_from_config(
        TracingConfig(store=RedisStore("redis://127.0.0.1:1/0"), ttl=5, max_traces=7)
    )
    assert (store.kind, store.ttl, store.max_traces) == ("redis", 5, 7)
    assert store_from_config(TracingConfig()).kind == "memory"


@run_async(timeout=40)
async def test_the_store_comes_back_with_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    store = RedisTraceStore(server.url, timeout=0.5)
    try:
        assert await store.add([record(1)]) == 1
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.add([record(2)])
        server.start()  # a new server: no data, no scripts loaded
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await store.add([record(3)]) == 1
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert len(await store.trace(trace_id(3))) == 1
    finally:
        await store.aclose()
        server.stop()
