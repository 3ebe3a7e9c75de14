"""Trace context on the asyncio driver: a handler runs with its request's trace current
(``rpccore.current_trace``, a ContextVar), and the calls it makes are child spans of it.

The chain is client -> server A -> server B: B must see A's trace id, with its parent span
being A's span, whether A's handler is a coroutine, a plain method in the thread pool that
calls back into the loop, or a stream.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aio_support import HB, LOOPBACK, collect, connected, run_async, serving

from rpccore import TraceContext, current_trace
from rpccore.aio import Client, Server

Span = list[str | None] | None


def span() -> Span:
    ctx = current_trace.get()
    return None if ctx is None else [ctx.trace_id, ctx.span_id, ctx.parent_span_id]


class Backend:
    async def whoami(self) -> Span:
        return span()

    def whoami_in_thread(self) -> Span:
        return span()

    def whoami_generated(self) -> Iterator[Span]:
        for _ in range(3):
            yield span()

    async def whoami_agenerated(self) -> AsyncIterator[Span]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield span()


class Front:
    def __init__(self, backend: Client, loop: asyncio.AbstractEventLoop) -> None:
        self._backend = backend
        self._loop = loop

    async def relay(self) -> dict[str, Any]:
        return {"a": span(), "b": await self._backend.whoami()}

    def relay_from_thread(self) -> dict[str, Any]:
        # A plain method runs in the thread pool; it calls back into the loop.
        future = asyncio.run_coroutine_threadsafe(self._backend.whoami(), self._loop)
        return {"a": span(), "b": future.result(5.0)}

    async def relay_stream(self) -> dict[str, Any]:
        items = await collect(self._backend.stream("whoami_agenerated"))
        return {"a": span(), "b": items[-1]}


@pytest.mark.parametrize("method", ["relay", "relay_from_thread", "relay_stream"])
@run_async
async def test_trace_follows_the_call_chain(method: str) -> None:
    loop = asyncio.get_running_loop()
    async with (
        serving(Backend()) as (_, b_endpoint),
        connected(b_endpoint) as to_b,
        serving(Front(to_b, loop)) as (_, a_endpoint),
        connected(a_endpoint) as to_a,
    ):
        root = TraceContext.new_root()
        token = current_trace.set(root)
        try:
            answer = await to_a.call(method)
            assert current_trace.get() is root  # calling does not change the caller's
        finally:
            current_trace.reset(token)
    a, b = answer["a"], answer["b"]
    assert a is not None
    assert b is not None
    assert a[0] == b[0] == root.trace_id
    assert a[2] == root.span_id  # A's span is a child of the caller's
    assert b[2] == a[1]  # B's parent span is A's span
    assert len({root.span_id, a[1], b[1]}) == 3


@pytest.mark.parametrize(
    ("method", "streams"),
    [
        ("whoami", False),
        ("whoami_in_thread", False),
        ("whoami_generated", True),
        ("whoami_agenerated", True),
    ],
)
@run_async
async def test_handler_sees_its_request_trace(method: str, streams: bool) -> None:
    root = TraceContext.new_root()
    async with serving(Backend()) as (_, endpoint), connected(endpoint) as client:
        token = current_trace.set(root)
        try:
            answer = await client.call(method)
            seen = await collect(answer) if streams else [answer]
        finally:
            current_trace.reset(token)
        untraced = await client.call(method)
        assert (await collect(untraced) if streams else [untraced]) == [None] * len(seen)
    assert seen
    for item in seen:
        assert item is not None
        assert item[0] == root.trace_id
        assert item[2] == root.span_id  # the call's span is a child of the caller's
    assert len({item[1] for item in seen}) == 1  # one span for the whole call


@run_async
async def test_untraced_request_sees_no_trace_even_if_the_server_started_in_one() -> None:
    # The server's tasks are created from the context that started it; a request without
    # trace headers must not inherit whatever trace was current there.
    server = Server(Backend(), heartbeat=HB)
    try:
        endpoint = server.bind(LOOPBACK)[0]
        traced = contextvars.copy_context()
        traced.run(current_trace.set, TraceContext.new_root())
        traced.run(server.start)
        async with connected(endpoint) as client:
            assert await client.whoami() is None
            assert await client.whoami_in_thread() is None
    finally:
        server.stop()
