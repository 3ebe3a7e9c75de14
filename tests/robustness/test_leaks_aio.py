"""No leaks on the asyncio driver: 100,000 calls mixing normal calls, timeouts, clients that go
away mid-call and streams abandoned mid-way leave nothing alive on either side once the
heartbeats have had a few periods to notice the silent channels."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from rogue_support import HB, SLACK, connected, eventually, run_async, serving

from rpccore import RPCError, TimeoutExpired
from rpccore.aio import AsyncStream, Client, Server

TOTAL = 100_000
BATCH = 500
# Per batch of concurrent calls. "lost": one client per batch makes these calls (one of them
# answered, to be sure it is connected), then closes while the others are still running.
MIX = {"normal": 455, "timeout": 15, "abandoned": 15, "lost": 15}
assert sum(MIX.values()) == BATCH
assert TOTAL % BATCH == 0
SETTLE = 3 * HB + SLACK  # silent channels are lost within three heartbeat periods


class Service:
    def __init__(self) -> None:
        self.hanging = 0  # calls of lost clients that reached the server

    async def echo(self, value: Any) -> Any:
        return value

    async def nap(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def hang(self) -> None:
        self.hanging += 1
        await asyncio.sleep(60.0)

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


async def normal(client: Client, i: int) -> str:
    assert await client.call("echo", i) == i
    return "normal"


async def timeout(client: Client) -> str:
    try:
        await client.call("nap", 0.3, timeout=0.02)
    except TimeoutExpired:
        return "timeout"
    return "answered before its timeout"


async def abandoned(client: Client) -> str:
    items = await client.call("count", 10_000)
    assert isinstance(items, AsyncStream)
    assert [await items.__anext__(), await items.__anext__()] == [0, 1]  # then walk away
    await items.aclose()
    return "abandoned"


async def lost(endpoint: str, service: Service, calls: int) -> list[str]:
    client = Client(endpoint, heartbeat=HB, timeout=10.0)
    try:
        assert await client.call("echo", "connected") == "connected"
        target = service.hanging + calls - 1
        hanging = [asyncio.create_task(client.call("hang")) for _ in range(calls - 1)]
        await eventually(lambda: service.hanging >= target, SLACK, "lost calls reached the server")
    finally:
        client.close()  # goes away mid-call: the server only sees its heartbeats stop
    outcomes = await asyncio.gather(*hanging, return_exceptions=True)
    assert all(type(outcome) is RPCError for outcome in outcomes), outcomes[:3]
    return ["normal"] + ["lost"] * len(outcomes)


def live_state(
    server: Server, clients: list[Client], tasks: set[asyncio.Task[Any]]
) -> dict[str, int]:
    """Everything that must drain to zero: the public channel counts, and also the drivers'
    own per-call tables and the tasks started since ``tasks`` was taken."""
    return {
        "client channels": sum(client.open_channels for client in clients),
        "server channels": server.open_channels,
        "client pending calls": sum(len(client._calls) for client in clients),
        "server handlers": len(server._handlers),
        "server credit waiters": len(server._credit),
        "client timers": sum(len(client._client._timers) for client in clients),
        "server timers": len(server._server._timers),
        "new tasks": len(asyncio.all_tasks() - tasks),
    }


@run_async
async def test_100k_mixed_calls_leave_nothing_alive() -> None:
    service = Service()
    outcomes: Counter[str] = Counter()
    start = time.monotonic()
    async with (
        serving(service) as (server, endpoint),
        connected(endpoint) as client,
        connected(endpoint) as streamer,  # a second client, for the streams
    ):
        assert await client.echo(0) == 0
        assert await streamer.echo(0) == 0
        baseline = asyncio.all_tasks()
        for batch in range(TOTAL // BATCH):
            base = batch * BATCH
            calls = [normal(client, base + i) for i in range(MIX["normal"])]
            calls += [timeout(client) for _ in range(MIX["timeout"])]
            calls += [abandoned(streamer) for _ in range(MIX["abandoned"])]
            results = await asyncio.gather(*calls, lost(endpoint, service, MIX["lost"]))
            outcomes.update(results[:-1])
            outcomes.update(results[-1])
        took = time.monotonic() - start
        zero = dict.fromkeys(live_state(server, [client, streamer], baseline), 0)
        settled = await eventually(
            lambda: live_state(server, [client, streamer], baseline) == zero,
            SETTLE,
            "nothing alive",
        )
        assert await client.echo("after") == "after"  # and the pair still works
    batches = TOTAL // BATCH
    assert outcomes == {
        "normal": batches * (MIX["normal"] + 1),
        "timeout": batches * MIX["timeout"],
        "abandoned": batches * MIX["abandoned"],
        "lost": batches * (MIX["lost"] - 1),
    }
    assert sum(outcomes.values()) == TOTAL
    assert settled < SETTLE
    assert took < 60.0, f"{TOTAL} calls took {took:.1f}s"
