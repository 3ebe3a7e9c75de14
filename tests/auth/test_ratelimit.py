"""Rate limits: the token bucket on a fake clock, the memory limiter's bounds and atomicity, and
the Redis limiter against a real redis-server (shared buckets, atomicity, expiry, outages)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis_support import RedisServer, free_port

from auth.ratelimit import (
    Bucket,
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    address_key,
    decide,
    limiter_from_config,
    token_key,
)
from gateway.config import MemoryStore, RateLimitConfig, RedisStore, parse_config

T = TypeVar("T")
TEST_TIMEOUT = 30.0
SLOW = 1e-6  # a rate so slow that nothing refills during a test


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the bucket ------------------------------------------------------------------------------

# (rate, burst, [(time, cost)], [(allowed, remaining, reset, retry_after)]); starts full at 0.
VECTORS = [
    pytest.param(
        1.0,
        3,
        [(0, 1), (0, 1), (0, 1), (0, 1), (0.5, 1), (1.0, 1), (11.0, 1)],
        [
            (True, 2, 1, 0),
            (True, 1, 2, 0),
            (True, 0, 3, 0),
            (False, 0, 3, 1),  # empty: one token in 1 s
            (False, 0, 3, 1),  # half a token: 0.5 s, announced as 1
            (True, 0, 3, 0),  # a whole token again
            (True, 2, 1, 0),  # 10 s idle refilled to the burst, not beyond
        ],
        id="1/s burst 3",
    ),
    pytest.param(
        10.0,  # 600/m
        1,
        [(0, 1), (0.05, 1), (0.1, 1), (0.1, 1)],
        [(True, 0, 1, 0), (False, 0, 1, 1), (True, 0, 1, 0), (False, 0, 1, 1)],
        id="600/m burst 1",
    ),
    pytest.param(
        1 / 60,  # 1/m
        2,
        [(0, 1), (0, 1), (0, 1), (59.9, 1), (60, 1)],
        [
            (True, 1, 60, 0),
            (True, 0, 120, 0),
            (False, 0, 120, 60),
            (False, 0, 61, 1),  # 59.9 s: 0.998 tokens
            (True, 0, 120, 0),
        ],
        id="1/m burst 2",
    ),
    pytest.param(
        2.0,
        4,
        [(0, 3), (0, 2), (0.5, 2), (0, 0)],
        [(True, 1, 2, 0), (False, 1, 2, 1), (True, 0, 2, 0), (True, 0, 2, 0)],
        id="costs",  # the last one: a clock that went back, refilling nothing
    ),
]


@pytest.mark.parametrize(("rate", "burst", "calls", "expected"), VECTORS)
def test_bucket_vectors(
    rate: float,
    burst: int,
    calls: list[tuple[float, float]],
    expected: list[tuple[bool, int, int, int]],
) -> None:
    bucket = Bucket(burst, 0.0)
    got = []
    for now, cost in calls:
        d = bucket.take(now, rate, burst, cost)
        got.append((d.allowed, d.remaining, d.reset_seconds, d.retry_after_seconds))
        assert d.limit == burst
    assert got == expected


def test_fresh_bucket_gives_burst_at_once_then_rate() -> None:
    bucket = Bucket(200, 0.0)
    assert all(bucket.take(0.0, 100.0, 200).allowed for _ in range(200))
    denied = bucket.take(0.0, 100.0, 200)
    assert denied == Decision(False, 200, 0, 2, 1)
    # 100/s: one call per 10 ms, no more
    allowed = sum(bucket.take(i / 1000, 100.0, 200).allowed for i in range(1, 1001))
    assert allowed == 100


def test_tenths_of_a_second_add_up_despite_float_noise() -> None:
    bucket = Bucket(1, 0.0)
    now = 0.0
    assert bucket.take(now, 10.0, 1).allowed
    for _ in range(100):
        now += 0.1  # 0.30000000000000004, ...
        assert bucket.take(now, 10.0, 1).allowed


def test_clock_going_back_refills_nothing_and_restarts_from_there() -> None:
    bucket = Bucket(2, 100.0)
    assert bucket.take(100.0, 1.0, 2).allowed
    assert bucket.take(100.0, 1.0, 2).allowed
    # back an hour: no refill, no error, and no hour-long freeze either
    assert not bucket.take(-3500.0, 1.0, 2).allowed
    assert bucket.updated_at == -3500.0
    assert bucket.take(-3499.0, 1.0, 2).allowed


def test_a_lowered_burst_clamps_the_bucket() -> None:
    bucket = Bucket(100, 0.0)
    decision = bucket.take(0.0, 1.0, 5)  # a token's own, smaller burst
    assert decision == Decision(True, 5, 4, 1, 0)


def test_a_cost_above_the_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="never fit"):
        Bucket(3, 0.0).take(0.0, 1.0, 3, cost=4)


def test_headers() -> None:
    allowed = Decision(True, 200, 199, 1, 0)
    assert allowed.headers() == [
        (b"ratelimit-limit", b"200"),
        (b"ratelimit-remaining", b"199"),
        (b"ratelimit-reset", b"1"),
    ]
    refused = Decision(False, 5000, 0, 3600, 1200)
    assert refused.headers() == [
        (b"ratelimit-limit", b"5000"),
        (b"ratelimit-remaining", b"0"),
        (b"ratelimit-reset", b"3600"),
        (b"retry-after", b"1200"),
    ]


steps = st.lists(
    st.tuples(st.floats(0, 5, allow_nan=False), st.sampled_from([0, 1, 1, 1, 2])),
    max_size=60,
)


@settings(deadline=None, max_examples=300)
@given(
    rate=st.floats(0.01, 1000, allow_nan=False),
    burst=st.integers(2, 50),
    steps=steps,
)
def test_bucket_invariants(rate: float, burst: int, steps: list[tuple[float, int]]) -> None:
    bucket = Bucket(burst, 0.0)
    now = 0.0
    taken = 0
    for delay, cost in steps:
        now += delay
        before = bucket.tokens
        d = bucket.take(now, rate, burst, cost)
        assert 0 <= bucket.tokens <= burst
        assert 0 <= d.remaining <= d.limit == burst
        assert d.remaining == math.floor(bucket.tokens + 1e-9)
        assert d == decide(d.allowed, bucket.tokens, rate, burst, cost)  # one arithmetic
        if d.allowed:
            taken += cost
            assert d.retry_after_seconds == 0
        else:
            assert d.retry_after_seconds >= 1
            assert bucket.tokens >= before  # a refusal takes nothing
            # waiting as told is enough
            probe = Bucket(bucket.tokens, now)
            assert probe.take(now + d.retry_after_seconds, rate, burst, cost).allowed
        # waiting RateLimit-Reset seconds gives the whole burst back
        probe = Bucket(bucket.tokens, now)
        assert probe.take(now + d.reset_seconds, rate, burst, 0).remaining == burst
        # never more than the burst plus what the rate refilled
        assert taken <= burst + rate * now + 1e-6


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "addr:203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "addr:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "addr:2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "addr:203.0.113.7"),
        ("testclient", "addr:testclient"),
    ],
)
def test_address_key(address: str, key: str) -> None:
    assert address_key(address) == key


def test_token_and_address_keys_never_collide() -> None:
    assert token_key("addr:1.2.3.4") != address_key("1.2.3.4")


# -- the memory limiter ----------------------------------------------------------------------


def test_memory_limiter_per_key_with_overrides() -> None:
    async def main() -> None:
        clock = FakeClock()
        limiter = MemoryRateLimiter(rate=1.0, burst=2, clock=clock)
        assert [(await limiter.hit("a")).allowed for _ in range(3)] == [True, True, False]
        assert (await limiter.hit("b")).allowed  # its own bucket
        big = [(await limiter.hit("c", burst=5, rate=10.0)).allowed for _ in range(6)]
        assert big == [True] * 5 + [False]
        clock.now += 0.1  # 10/s: one more for c, nothing yet for a
        assert (await limiter.hit("c", burst=5, rate=10.0)).allowed
        assert not (await limiter.hit("a")).allowed
        clock.now += 1.0
        decision = await limiter.hit("a")
        assert decision == Decision(True, 2, 0, 2, 0)

    run(main())


def test_memory_limiter_is_bounded_and_evicts_the_least_recently_used() -> None:
    async def main() -> None:
        clock = FakeClock()
        limiter = MemoryRateLimiter(rate=SLOW, burst=3, max_keys=100, clock=clock)
        await limiter.hit("keep")
        for i in range(1000):
            await limiter.hit(f"k{i}")
            if i % 10 == 0:
                await limiter.hit("keep")  # recently used: survives
            assert len(limiter) <= 100
        assert limiter.evicted == 1000 + 1 - 100
        assert (await limiter.hit("keep")).remaining < 2  # still its own, used bucket
        assert (await limiter.hit("k0")).remaining == 2  # evicted: a full bucket again

    run(main())


def test_memory_limiter_drops_full_buckets_first() -> None:
    async def main() -> None:
        clock = FakeClock()
        limiter = MemoryRateLimiter(rate=10.0, burst=5, max_keys=50, clock=clock)
        for i in range(50):
            await limiter.hit(f"old{i}")
        clock.now += 0.1  # each bucket is full again
        for i in range(25):
            await limiter.hit(f"new{i}")
        assert len(limiter) == 25  # each new key swept two full ones
        assert limiter.evicted == 0

    run(main())


def test_memory_limiter_is_atomic_under_many_tasks() -> None:
    async def main() -> int:
        limiter = MemoryRateLimiter(rate=SLOW, burst=100)

        async def one() -> bool:
            await asyncio.sleep(0)
            return (await limiter.hit("hot")).allowed

        results = await asyncio.gather(*(one() for _ in range(2000)))
        return sum(results)

    assert run(main()) == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0, "burst": 1}, "rate"),
        ({"rate": float("nan"), "burst": 1}, "rate"),
        ({"rate": float("inf"), "burst": 1}, "rate"),
        ({"rate": 1.0, "burst": 0}, "burst"),
        ({"rate": 1.0, "burst": 1, "max_keys": 0}, "max_keys"),
    ],
)
def test_memory_limiter_refuses_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemoryRateLimiter(**kwargs)


def test_memory_limiter_refuses_nonsense_overrides() -> None:
    limiter = MemoryRateLimiter(rate=1.0, burst=1)
    with pytest.raises(ValueError, match="rate"):
        run(limiter.hit("k", rate=-1.0))
    with pytest.raises(ValueError, match="never fit"):
        run(limiter.hit("k", cost=2))


def test_memory_limiter_repr_and_close() -> None:
    limiter = MemoryRateLimiter(rate=100.0, burst=200)
    run(limiter.hit("k"))
    assert repr(limiter) == "<MemoryRateLimiter rate=100/s burst=200 keys=1/100000 evicted=0>"
    run(limiter.aclose())
    run(limiter.aclose())
    assert len(limiter) == 0


def test_limiter_from_config() -> None:
    config = parse_config("rate_limit: {per_token: 600/m, burst: 20}\n").rate_limit
    memory = limiter_from_config(config)
    assert isinstance(memory, MemoryRateLimiter)
    assert (memory.rate, memory.burst) == (10.0, 20)
    redis = limiter_from_config(
        RateLimitConfig(per_token=5.0, burst=7, store=RedisStore("redis://u:pw@127.0.0.1:1/2")),
        fail_open=False,
    )
    assert isinstance(redis, RedisRateLimiter)
    assert repr(redis) == (
        "<RedisRateLimiter redis://127.0.0.1:1/2 rate=5/s burst=7 up fail-closed>"
    )
    run(redis.aclose())  # never connected: nothing to do
    assert isinstance(RateLimitConfig().store, MemoryStore)


# -- the Redis limiter -----------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_limiter(url: str, **kwargs: Any) -> RedisRateLimiter:
    # A generous timeout: a loaded test machine must not look like an outage.
    options: dict[str, Any] = {"rate": SLOW, "burst": 3, "timeout": 5.0} | kwargs
    return RedisRateLimiter(url, **options)


async def hits(limiter: RateLimiter, key: str, count: int, **kwargs: Any) -> list[Decision]:
    return [await limiter.hit(key, **kwargs) for _ in range(count)]


def test_redis_decisions_match_the_bucket(redis_server: RedisServer) -> None:
    async def main() -> None:
        limiter = redis_limiter(redis_server.url, rate=SLOW, burst=3)
        try:
            got = await hits(limiter, "k", 5)
        finally:
            await limiter.aclose()
        bucket = Bucket(3, 0.0)
        assert got == [bucket.take(0.0, SLOW, 3) for _ in range(5)]
        assert not any(d.degraded for d in got)

    run(main())


def test_redis_refills_at_the_rate(redis_server: RedisServer) -> None:
    async def main() -> None:
        limiter = redis_limiter(redis_server.url, rate=4.0, burst=1)
        try:
            assert (await limiter.hit("k")).allowed
            refused = await limiter.hit("k")
            assert not refused.allowed
            assert refused.retry_after_seconds == 1
            await asyncio.sleep(0.3)  # 4/s: a token per 250 ms
            assert (await limiter.hit("k")).allowed
            # overrides are per call: another key, its own limits
            assert sum(d.allowed for d in await hits(limiter, "o", 12, burst=10)) == 10
        finally:
            await limiter.aclose()

    run(main())


def test_two_replicas_share_one_bucket_exactly(redis_server: RedisServer) -> None:
    async def main() -> None:
        one = redis_limiter(redis_server.url, burst=6)
        two = redis_limiter(redis_server.url, burst=6)
        try:
            got = []
            for _ in range(4):
                got += [await one.hit("shared"), await two.hit("shared")]
        finally:
            await one.aclose()
            await two.aclose()
        assert [d.remaining for d in got] == [5, 4, 3, 2, 1, 0, 0, 0]
        assert [d.allowed for d in got] == [True] * 6 + [False] * 2

    run(main())


def test_redis_is_atomic_under_concurrent_hits(redis_server: RedisServer) -> None:
    async def main() -> int:
        replicas = [redis_limiter(redis_server.url, burst=100) for _ in range(2)]
        try:
            decisions = await asyncio.gather(*(replicas[i % 2].hit("hot") for i in range(400)))
        finally:
            for limiter in replicas:
                await limiter.aclose()
        assert not any(d.degraded for d in decisions)
        return sum(d.allowed for d in decisions)

    assert run(main()) == 100


def test_redis_buckets_expire_when_full_again(redis_server: RedisServer) -> None:
    async def main() -> None:
        limiter = redis_limiter(redis_server.url, rate=4.0, burst=2, prefix="rl:")
        client = Redis.from_url(redis_server.url)
        try:
            await limiter.hit("k")
            pttl = await client.pttl("rl:k")
            assert 0 < pttl <= 250  # one token at 4/s: full again in 250 ms
            await asyncio.sleep(0.3)
            assert not await client.exists("rl:k")
            await limiter.hit("k", cost=0)  # a full bucket is never written
            assert not await client.exists("rl:k")
            # a bucket that would take millennia to refill still gets a TTL Redis accepts
            assert not (await limiter.hit("slow", rate=1e-15, burst=3)).degraded
            assert await client.pttl("rl:slow") > 10**14
        finally:
            await limiter.aclose()
            await client.aclose()

    run(main())


def test_redis_script_edge_cases_match_the_bucket(redis_server: RedisServer) -> None:
    async def main() -> None:
        limiter = redis_limiter(redis_server.url, prefix="rl:")
        client = Redis.from_url(redis_server.url)
        try:
            seconds, micros = await client.time()
            now = seconds + micros / 1e6
            # 1.5 s ago with 0.25 tokens, at 1/s: 1.75 now, so one call and 0.75 left
            await client.hset("rl:old", mapping={"t": "0.25", "u": repr(now - 1.5)})
            got = await limiter.hit("old", rate=1.0, burst=5)
            assert got == Bucket(0.25, 0.0).take(1.5, 1.0, 5)
            # written in the future (a failover to a server whose clock is behind): no
            # refill, and the bucket restarts from the server's now instead of freezing
            await client.hset("rl:future", mapping={"t": "1", "u": repr(now + 3600)})
            assert (await limiter.hit("future", rate=1.0, burst=5)).allowed
            stored = await client.hget("rl:future", "u")
            assert stored is not None
            assert float(stored) < now + 60
            # more tokens than a lowered burst: clamped
            await client.hset("rl:big", mapping={"t": "50", "u": repr(now)})
            assert await limiter.hit("big", rate=SLOW, burst=3) == Decision(
                True, 3, 2, 1_000_000, 0
            )
            # a flushed script cache (or a restarted server): EVAL, then EVALSHA again
            await client.script_flush()
            assert (await limiter.hit("fresh")).allowed
            assert (await limiter.hit("fresh")).remaining == 1
        finally:
            await limiter.aclose()
            await client.aclose()

    run(main())


def test_redis_outage_fail_open_limits_locally(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zerogate.ratelimit")

    async def main() -> None:
        limiter = redis_limiter(redis_server.url, burst=3, retry_interval=0.2)
        try:
            assert not (await limiter.hit("k")).degraded
            redis_server.stop()
            during = await hits(limiter, "k", 5)
            assert all(d.degraded for d in during)
            # this replica's own bucket, fresh: the burst, then refusals
            assert [d.allowed for d in during] == [True] * 3 + [False] * 2
            assert not limiter.up
            redis_server.start()  # the same port, empty
            await asyncio.sleep(0.25)
            after = await limiter.hit("k")
            assert not after.degraded
            assert after.remaining == 2
            assert limiter.up
        finally:
            await limiter.aclose()

    run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "zerogate.ratelimit"]
    assert len(messages) == 2, messages  # one warning for the outage, however many calls
    assert "unreachable" in messages[0]
    assert "local limits" in messages[0]
    assert "answers again" in messages[1]


def test_redis_outage_fail_closed_refuses(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zerogate.ratelimit")

    async def main() -> None:
        limiter = redis_limiter(redis_server.url, fail_open=False, retry_interval=1.5)
        try:
            assert (await limiter.hit("k")).allowed
            redis_server.stop()
            refused = await limiter.hit("k")
            assert refused == Decision(False, 3, 0, 2, 2, degraded=True)
            assert refused.headers()[-1] == (b"retry-after", b"2")
        finally:
            await limiter.aclose()

    run(main())
    assert "refusing every call" in caplog.records[0].getMessage()


def test_redis_never_reached_and_credentials_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="zerogate.ratelimit")
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"

    async def main() -> None:
        limiter = RedisRateLimiter(url, rate=SLOW, burst=2)
        try:
            got = await hits(limiter, "k", 3)
        finally:
            await limiter.aclose()
            await limiter.aclose()  # twice is harmless
        assert [(d.allowed, d.degraded) for d in got] == [(True, True)] * 2 + [(False, True)]

    run(main())
    assert "s3cret" not in caplog.text
    assert "redis://127.0.0.1:" in caplog.text


def test_redis_that_never_answers_costs_one_timeout_per_retry_interval() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until the limiter gives up and hangs up
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clock = FakeClock()
        limiter = RedisRateLimiter(
            f"redis://127.0.0.1:{port}/0", rate=SLOW, burst=5, timeout=0.2, clock=clock
        )
        calls = 0
        evalsha = limiter._redis.evalsha

        def counting(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            return evalsha(*args)

        limiter._redis.evalsha = counting  # type: ignore[method-assign, assignment]
        try:
            started = time.monotonic()
            first = await limiter.hit("k")
            assert first.degraded
            assert 0.15 < time.monotonic() - started < 3
            # within the retry interval: nobody waits for Redis
            started = time.monotonic()
            assert all(d.degraded for d in await hits(limiter, "k", 3))
            assert time.monotonic() - started < 0.1
            assert calls == 1
            # after it: one call probes, the others keep the local limits meanwhile
            clock.now += 1.0
            probes = await asyncio.gather(*(limiter.hit("k") for _ in range(5)))
            assert all(d.degraded for d in probes)
            assert calls == 2
        finally:
            await limiter.aclose()
            server.close()
            await server.wait_closed()

    run(main())


def test_retry_after_peeks_without_taking_or_creating() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(rate=1.0, burst=2, clock=clock)
    assert limiter.retry_after("addr:a") == 0
    assert len(limiter) == 0  # a peek creates no bucket
    run(limiter.hit("addr:a"))
    run(limiter.hit("addr:a"))
    assert limiter.retry_after("addr:a") == 1  # empty: one token in one second
    assert limiter.retry_after("addr:a") == 1  # and peeking took nothing
    clock.now += 1.0
    assert limiter.retry_after("addr:a") == 0
    assert run(limiter.hit("addr:a")).allowed
