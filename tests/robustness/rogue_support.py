"""Helpers of the rogue-peer and leak tests on the asyncio driver.

A rogue is a plain ZeroMQ socket that speaks hand-made frames. A ``GoodCaller`` is a
well-behaved client calling ``echo`` in the background the whole time, so a test can show that
the server kept answering everybody else while it was being abused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from asyncrun import async_runner

from rpccore.aio import Client, Server

HB = 0.2  # heartbeat period of the servers and clients in these tests
SLACK = 1.0  # seconds added to every time bound, for a loaded two-core machine
TEST_TIMEOUT = 60.0
LOOPBACK = "tcp://127.0.0.1:*"


run_async = async_runner(TEST_TIMEOUT)


@asynccontextmanager
async def serving(
    obj: object, endpoint: str = LOOPBACK, **options: Any
) -> AsyncIterator[tuple[Server, str]]:
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
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


# -- hand-made frames ----------------------------------------------------------------------


def new_id() -> bytes:
    return os.urandom(16).hex().encode()


def pack(header: Any, name: Any, args: Any) -> bytes:
    return msgpack.packb([header, name, args], use_bin_type=True)


def unpack(payload: bytes) -> tuple[dict[Any, Any], Any, Any]:
    header, name, args = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return header, name, args


@asynccontextmanager
async def rogue_socket(
    endpoint: str, kind: int = zmq.DEALER, **sockopts: int
) -> AsyncIterator[Any]:
    """A raw pyzmq socket, connected (DEALER) or bound (ROUTER) to ``endpoint``."""
    sock = zmq.asyncio.Context.instance().socket(kind)
    sock.linger = 0
    for name, value in sockopts.items():
        setattr(sock, name, value)
    try:
        if kind == zmq.ROUTER:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
        yield sock
    finally:
        sock.close()


async def next_event(sock: Any, within: float = 5.0) -> tuple[dict[Any, Any], Any, Any]:
    """The next event a rogue DEALER receives, heartbeats skipped."""
    deadline = time.monotonic() + within
    while True:
        frames = await asyncio.wait_for(sock.recv_multipart(), deadline - time.monotonic())
        event = unpack(frames[-1])
        if event[1] != "_zpc_hb":
            return event


# -- a well-behaved client in the background -----------------------------------------------


class GoodCaller:
    """Calls ``echo(i)`` in a loop until stopped (bounded in count), recording everything."""

    def __init__(self, client: Client, pause: float = 0.005, limit: int = 20_000) -> None:
        self._client = client
        self._pause = pause
        self._limit = limit
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.answers = 0
        self.failures: list[str] = []
        self.latencies: list[tuple[float, float]] = []  # (started at, seconds)

    async def _run(self) -> None:
        for i in range(self._limit):
            if self._stopping:
                return
            start = time.monotonic()
            try:
                value = await self._client.call("echo", i, timeout=5.0)
            except Exception as exc:
                self.failures.append(f"call {i}: {exc!r}")
            else:
                if value == i:
                    self.answers += 1
                    self.latencies.append((start, time.monotonic() - start))
                else:
                    self.failures.append(f"call {i}: answered {value!r}")
            await asyncio.sleep(self._pause)

    async def more_answers(self, count: int, within: float = 5.0) -> None:
        """Wait until ``count`` more calls have been answered."""
        target = self.answers + count
        await eventually(lambda: self.answers >= target, within, f"{count} more good answers")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[GoodCaller]:
        self._task = asyncio.create_task(self._run())
        try:
            await self.more_answers(1)
            yield self
        finally:
            self._stopping = True
            await asyncio.wait_for(self._task, 10.0)

    def assert_all_answered(self, at_least: int) -> None:
        assert self.failures == [], self.failures[:5]
        assert self.answers >= at_least


def vm_rss_mib() -> float:
    """This process's resident memory in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class ProblemLines:
    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __repr__(self) -> str:
        return f"<ProblemLines {len(self._caplog.records)} records>"

    def of(self, kind: str, role: str = "server") -> list[logging.LogRecord]:
        """The lines logged for one kind of problem."""
        return self._starting(f"{role}: dropped input ({kind})")

    def every(self, role: str = "server") -> list[logging.LogRecord]:
        """The lines logged for every kind of problem."""
        return self._starting(f"{role}: dropped input (")

    def _starting(self, prefix: str) -> list[logging.LogRecord]:
        return [
            record
            for record in self._caplog.records
            if record.name == "rpccore" and record.getMessage().startswith(prefix)
        ]
