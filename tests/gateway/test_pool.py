"""The pooled client of one service (gateway/pool.py).

``choose`` and ``effective_timeout`` are pure and tested on plain values; the rest runs real
``rpccore.aio`` servers on loopback with a 0.2 s heartbeat. pytest-asyncio is not a
dependency: ``run_async`` runs each ``async def`` test with ``asyncio.run``, bounded in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import zmq.asyncio
from async_support import run_async

from gateway.config import ServiceConfig
from gateway.pool import (
    TASK_PREFIX,
    EndpointState,
    NoBackendAvailable,
    PooledStream,
    ServicePool,
    choose,
    effective_timeout,
)
from rpccore import LostRemote, RemoteError, RPCError, TimeoutExpired
from rpccore.aio import Server

HB = 0.2  # heartbeat of every server and pool here
SLACK = 1.0  # added to every time bound, for a loaded two-core machine
DOWN_WITHIN = 4 * HB + SLACK  # a probe: up to one period asleep, then two periods to fail
LOOPBACK = "tcp://127.0.0.1:*"


@pytest.fixture(autouse=True)
def no_socket_left_open() -> Iterator[None]:
    context = zmq.asyncio.Context.instance()
    before = set(context._sockets)
    yield
    left = [sock for sock in context._sockets if sock not in before and not sock.closed]
    assert not left, f"{len(left)} socket(s) left open by the test"


class Backend:
    """A demo service that records the calls it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[str] = []

    async def who(self) -> str:
        self.seen.append("who")
        return self.name

    async def slow(self, seconds: float, tag: str = "") -> str:
        self.seen.append(f"slow {tag}")
        await asyncio.sleep(seconds)
        return self.name

    async def ticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def slow_ticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
            await asyncio.sleep(0.05)

    async def fail(self) -> None:
        raise ValueError("no")


def serve(obj: object, endpoint: str = LOOPBACK) -> tuple[Server, str]:
    server = Server(obj, heartbeat=HB)
    bound = server.bind(endpoint)[0]
    server.start()
    return server, bound


def service(*endpoints: str, timeout: float = 10.0) -> ServiceConfig:
    return ServiceConfig(name="calc", endpoints=endpoints, timeout=timeout, heartbeat=HB)


async def eventually(predicate: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def state(pool: ServicePool, endpoint: str) -> dict[str, Any]:
    states: list[dict[str, Any]] = pool.snapshot()["endpoints"]
    return next(s for s in states if s["endpoint"] == endpoint)


def pool_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(TASK_PREFIX)]


# -- pure decisions ------------------------------------------------------------------------


def E(name: str, in_flight: int = 0, *, up: bool = True) -> EndpointState:
    return EndpointState(name, up=up, in_flight=in_flight)


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ([], None),
        ([E("a", up=False)], None),
        ([E("a", up=False), E("b", 5, up=False)], None),
        ([E("a")], "a"),
        ([E("a", 2), E("b", 1), E("c", 3)], "b"),
        ([E("a", 1), E("b", 1)], "a"),  # ties: the first in the given order
        ([E("b", 1), E("a", 1)], "b"),
        ([E("a", 0, up=False), E("b", 9)], "b"),  # down never wins, however idle
        ([E("a", 3), E("b", 0, up=False), E("c", 3), E("d", 2)], "d"),
    ],
)
def test_choose(endpoints: list[EndpointState], expected: str | None) -> None:
    before = [(s.endpoint, s.up, s.in_flight) for s in endpoints]
    chosen = choose(endpoints)
    assert (chosen.endpoint if chosen else None) == expected
    assert [(s.endpoint, s.up, s.in_flight) for s in endpoints] == before  # pure


@pytest.mark.parametrize(
    ("service_timeout", "requested", "expected"),
    [(30.0, None, 30.0), (30.0, 2.5, 2.5), (30.0, 60.0, 30.0), (1.0, 1.0, 1.0)],
)
def test_timeout_only_lowers(
    service_timeout: float, requested: float | None, expected: float
) -> None:
    assert effective_timeout(service_timeout, requested) == expected


# -- on real servers -----------------------------------------------------------------------


@run_async
async def test_calls_go_to_the_endpoint_with_fewest_in_flight() -> None:
    a, b = Backend("a"), Backend("b")
    (sa, ea), (sb, eb) = serve(a), serve(b)
    try:
        async with ServicePool(service(ea, eb)) as pool:
            assert await pool.call("who") in ("a", "b")
            calls = [asyncio.create_task(pool.call("slow", [0.5])) for _ in range(10)]
            await eventually(lambda: len(a.seen) + len(b.seen) == 11, 2 + SLACK, "all sent")
            assert (state(pool, ea)["in_flight"], state(pool, eb)["in_flight"]) == (5, 5)
            assert "in_flight=5" in repr(pool)
            assert sorted(await asyncio.gather(*calls)) == ["a"] * 5 + ["b"] * 5
            assert [s["in_flight"] for s in pool.snapshot()["endpoints"]] == [0, 0]
            # Idle and equal: round-robin among equals, so sequential calls use both.
            assert {await pool.call("who") for _ in range(4)} == {"a", "b"}
    finally:
        sa.stop()
        sb.stop()


@run_async
async def test_lost_call_marks_down_is_not_retried_and_probe_brings_it_back() -> None:
    a, b = Backend("a"), Backend("b")
    (sa, ea), (sb, eb) = serve(a), serve(b)
    try:
        async with ServicePool(service(ea, eb)) as pool:
            call = asyncio.create_task(pool.call("slow", [30.0, "doomed"]))
            await eventually(lambda: bool(a.seen or b.seen), 1 + SLACK, "the call arrived")
            victim, victim_ep, other = (sa, ea, b) if a.seen else (sb, eb, a)
            victim.stop()
            with pytest.raises(LostRemote):
                await call
            assert "slow doomed" not in other.seen  # never retried elsewhere
            down = state(pool, victim_ep)
            assert down["up"] is False
            assert "LostRemote" in down["last_error"]
            assert down["in_flight"] == 0
            assert pool.ready
            assert f"{victim_ep} down" in repr(pool)
            assert {await pool.call("who") for _ in range(4)} == {other.name}

            revived = Backend("revived")
            server, _ = serve(revived, victim_ep)  # the same port again
            try:
                await eventually(lambda: state(pool, victim_ep)["up"], 2 * HB + SLACK, "up")
                names = {await pool.call("who") for _ in range(4)}
                assert names == {"revived", other.name}
            finally:
                server.stop()
    finally:
        sa.stop()
        sb.stop()


@run_async
async def test_idle_probe_marks_a_dead_endpoint_down_and_all_down_is_no_backend() -> None:
    a, b = Backend("a"), Backend("b")
    (sa, ea), (sb, eb) = serve(a), serve(b)
    try:
        async with ServicePool(service(ea, eb)) as pool:
            sa.stop()  # no call in flight: only the idle probe can notice
            await eventually(lambda: not state(pool, ea)["up"], DOWN_WITHIN, "a probed down")
            assert state(pool, ea)["last_error"] is not None
            assert {await pool.call("who") for _ in range(3)} == {"b"}

            sb.stop()
            await eventually(lambda: not pool.ready, DOWN_WITHIN, "b probed down")
            seen = len(b.seen)
            with pytest.raises(NoBackendAvailable) as raised:
                await pool.call("who")
            assert raised.value.retry_after == HB
            assert len(b.seen) == seen
            assert pool.snapshot()["service"] == "calc"
            assert [s["in_flight"] for s in pool.snapshot()["endpoints"]] == [0, 0]
    finally:
        sa.stop()
        sb.stop()


@run_async
async def test_streams_stay_in_flight_until_consumed_or_closed() -> None:
    server, endpoint = serve(Backend("a"))
    try:
        async with ServicePool(service(endpoint)) as pool:
            stream = await pool.call("ticks", [3])
            assert isinstance(stream, PooledStream)
            assert state(pool, endpoint)["in_flight"] == 1
            assert [item async for item in stream] == [0, 1, 2]
            assert state(pool, endpoint)["in_flight"] == 0
            stream.close()  # after the end: still counted down once only
            assert state(pool, endpoint)["in_flight"] == 0

            async with await pool.call("ticks", [1000]) as partial:
                assert await partial.__anext__() == 0
                assert state(pool, endpoint)["in_flight"] == 1
            assert state(pool, endpoint)["in_flight"] == 0
            await partial.aclose()  # closing twice is harmless
            assert state(pool, endpoint)["in_flight"] == 0

            dropped = await pool.call("ticks", [1000])
            assert state(pool, endpoint)["in_flight"] == 1
            del dropped
            assert state(pool, endpoint)["in_flight"] == 0

            lost = await pool.call("slow_ticks", [1000])
            assert await lost.__anext__() == 0
            server.stop()
            with pytest.raises(LostRemote):
                async for _ in lost:
                    pass
            assert state(pool, endpoint)["in_flight"] == 0
            assert state(pool, endpoint)["up"] is False
    finally:
        server.stop()


@run_async
async def test_timeout_lowers_never_raises_and_errors_pass_through() -> None:
    server, endpoint = serve(Backend("a"))
    try:
        async with ServicePool(service(endpoint, timeout=1.0)) as pool:
            start = time.monotonic()
            with pytest.raises(TimeoutExpired):
                await pool.call("slow", [5.0], timeout=0.1)
            assert time.monotonic() - start < 0.9  # lowered below the service's 1 s
            start = time.monotonic()
            with pytest.raises(TimeoutExpired):
                await pool.call("slow", [5.0], timeout=60.0)
            assert 0.9 < time.monotonic() - start < 1.0 + SLACK  # not raised above it
            with pytest.raises(RemoteError) as raised:
                await pool.call("fail")
            assert raised.value.name == "ValueError"
            cancelled = asyncio.create_task(pool.call("slow", [5.0]))
            await eventually(lambda: state(pool, endpoint)["in_flight"] == 1, SLACK, "sent")
            cancelled.cancel()  # e.g. the HTTP client went away
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            snapshot = state(pool, endpoint)
            assert snapshot["up"] is True  # slow, failing or abandoned: not a dead backend
            assert snapshot["in_flight"] == 0
    finally:
        server.stop()


@run_async
async def test_close_leaves_nothing_running() -> None:
    server, endpoint = serve(Backend("a"))
    try:
        pool = ServicePool(service(endpoint, "tcp://127.0.0.1:1"))  # one never answers
        assert "new" in repr(pool)
        assert not pool.ready
        await pool.open()
        await pool.open()  # harmless
        assert len(pool_tasks()) == 2
        stream = await pool.call("ticks", [1000])
        call = asyncio.create_task(pool.call("slow", [30.0]))
        await asyncio.sleep(0.05)
        clients = [backend.client for backend in pool._backends.values()]
        await pool.close()
        await pool.close()  # harmless
        assert pool_tasks() == []
        assert [client.open_channels for client in clients] == [0, 0]
        with pytest.raises(RPCError, match="closed"):
            await call
        stream.close()
        assert [s["in_flight"] for s in pool.snapshot()["endpoints"]] == [0, 0]
        assert "closed" in repr(pool)
        assert not pool.ready
        with pytest.raises(NoBackendAvailable):
            await pool.call("who")
        with pytest.raises(RuntimeError):
            await pool.open()
    finally:
        server.stop()
