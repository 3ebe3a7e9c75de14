"""Helpers of the asyncio driver tests: run an ``async def`` test, serve an object, poll.

pytest-asyncio is not a dependency: ``run_async`` turns a coroutine test into a plain one that
runs it with ``asyncio.run``, bounded in time so that a hung call fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from asyncrun import async_runner

from rpccore.aio import Client, Server

HB = 0.2  # heartbeat period of every server and client in these tests
SLACK = 1.0  # seconds added to every time bound, for a loaded two-core machine
TEST_TIMEOUT = 30.0
LOOPBACK = "tcp://127.0.0.1:*"


run_async = async_runner(TEST_TIMEOUT)


@asynccontextmanager
async def serving(
    obj: object, endpoint: str = LOOPBACK, **options: Any
) -> AsyncIterator[tuple[Server, str]]:
    """A started Server for ``obj`` (heartbeat HB unless given) and its bound endpoint."""
    options.setdefault("heartbeat", HB)
    server = Server(obj, **options)
    try:
        bound = server.bind(endpoint)[0]
        server.start()
        yield server, bound
    finally:
        server.stop()


@asynccontextmanager
async def connected(endpoint: str, **options: Any) -> AsyncIterator[Client]:
    options.setdefault("heartbeat", HB)
    options.setdefault("timeout", 10.0)
    client = Client(endpoint, **options)
    try:
        yield client
    finally:
        client.close()


async def eventually(
    predicate: Callable[[], bool], within: float, what: str, interval: float = 0.01
) -> float:
    """Wait until ``predicate()`` holds; return how long it took; fail after ``within`` s."""
    start = time.monotonic()
    deadline = start + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def collect(items: AsyncIterator[Any], limit: int = 100_000) -> list[Any]:
    out: list[Any] = []
    async for item in items:
        out.append(item)
        if len(out) >= limit:
            break
    return out
