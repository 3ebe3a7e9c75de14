"""A collector in this process, on real loopback sockets: records pushed to its PULL socket
are stored and can be queried through rpccore.aio; garbage costs a counter, nothing more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import zmq
from tracing_support import Sender, pack, run_async, span_id, trace_id, wire_record

from gateway.collector import SERVICE_NAME, Collector, endpoints_for
from gateway.config import ConfigError, TracingConfig
from gateway.trace_store import MemoryTraceStore
from rpccore import RemoteError
from rpccore.aio import Client

NOW = time.time()


def call_records(tid: int, sid: int, **overrides: Any) -> list[dict[str, Any]]:
    """A call's client and server records (they share the span id)."""
    t0 = NOW - 1
    common = {"tid": trace_id(tid), "sid": span_id(sid), "t0": t0, "t1": None, **overrides}
    return [
        wire_record(side="client", t2=t0 + 0.004, **common),
        wire_record(side="server", **{**common, "t0": t0 + 0.001, "t2": t0 + 0.003}),
    ]


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def in_memory(**options: Any) -> Collector:
    return Collector(
        MemoryTraceStore(), bind="tcp://127.0.0.1:0", query="tcp://127.0.0.1:0", **options
    )


async def started(**options: Any) -> Collector:
    collector = in_memory(**options)
    await collector.start()
    return collector


@asynccontextmanager
async def running(collector: Collector) -> AsyncIterator[Collector]:
    """``collector`` started and reading in the background; stopped and closed after."""
    await collector.start()
    runner = asyncio.create_task(collector.run())
    try:
        yield collector
    finally:
        collector.stop()
        await runner
        await collector.aclose()


@run_async
async def test_pushed_records_are_stored_and_queried_over_rpc() -> None:
    async with running(in_memory()) as collector:
        assert collector.endpoint is not None
        assert collector.query_endpoint is not None
        with Sender(collector.endpoint) as sender:
            sender.send(pack(call_records(1, 1) + call_records(2, 2, out="error", exc="E: x")))
            sender.send(pack(call_records(1, 3)))
            await wait_until(lambda: collector.stored == 6)
        async with Client(collector.query_endpoint, timeout=5) as client:
            description = await client.describe()
            assert description["name"] == SERVICE_NAME
            assert {"trace", "recent", "stats", "info"} <= set(description["methods"])
            records = await client.call("trace", trace_id(1))
            assert [(r["sid"], r["side"]) for r in records] == [
                (span_id(1), "client"),
                (span_id(3), "client"),
                (span_id(1), "server"),
                (span_id(3), "server"),
            ]
            wire = call_records(1, 1)[0]
            assert records[0] == {key: value for key, value in wire.items() if key != "v"}
            recent = await client.call("recent", 10)
            assert [line["trace_id"] for line in recent] == [trace_id(2), trace_id(1)]
            assert (recent[0]["spans"], recent[0]["errors"]) == (1, 1)  # one call failed
            stats = await client.call("stats")
            assert stats["calc"]["add"]["count"] == 3  # the server records
            assert stats["calc"]["add"]["errors"] == 1
            info = await client.call("info")
            assert {key: info[key] for key in ("received", "stored", "dropped_malformed")} == {
                "received": 6,
                "stored": 6,
                "dropped_malformed": 0,
            }
            assert (info["store"], info["ttl"], info["messages"]) == ("memory", 86400, 2)
            with pytest.raises(RemoteError) as caught:
                await client.call("trace", "nope")
            assert caught.value.name == "ValueError"
            with pytest.raises(RemoteError):
                await client.call("recent", 0)
            # Filtered: the traces with a failed call of calc.add (trace 2's), then any.
            failed = await client.call("recent", 10, "calc", "add", True)
            assert [line["trace_id"] for line in failed] == [trace_id(2)]
            assert await client.call("recent", 10, "calc", "nope") == []
            assert len(await client.call("recent", 10, None, None, False)) == 2
            for wrong in ((10, 7), (10, None, ["add"]), (10, None, None, "yes")):
                with pytest.raises(RemoteError) as caught:
                    await client.call("recent", *wrong)
                assert caught.value.name == "ValueError"
    await collector.aclose()  # closing twice is harmless


@run_async
async def test_garbage_is_counted_and_never_stops_the_collector() -> None:
    async with running(in_memory(max_message_size=4096)) as collector:
        assert collector.endpoint is not None
        with Sender(collector.endpoint) as sender:
            garbage = [
                b"",
                b"\xc1\xc1",
                b"not msgpack at all",
                msgpack.packb({"v": 1}),
                pack([wire_record(v=2), "x", None]),  # 3 refused records
            ]
            for frame in garbage:
                sender.send(frame)
            sender.sock.send_multipart([pack([wire_record()]), b"second frame"])
            await wait_until(lambda: collector.dropped_malformed == 8)
        with Sender(collector.endpoint) as sender:
            # over max_message_size: ZeroMQ refuses it unread and cuts the sender off
            sender.send(b"\x91" * 5000)
            await asyncio.sleep(0.2)
        with Sender(collector.endpoint) as sender:
            sender.send(pack([wire_record(), wire_record(tid=trace_id(5))]))
            await wait_until(lambda: collector.stored == 2)
        assert collector.received == 10
        assert collector.dropped_malformed == 8
        assert "stored=2" in repr(collector)


@run_async
async def test_a_lingering_collector_does_not_spin() -> None:
    # While records gather (linger) the collector must sleep, even with a message waiting:
    # it once kept watching the socket's descriptor, which stays readable until read, and
    # the loop woke without end: a core's worth of CPU.
    async with running(in_memory(linger=1.0)) as collector:
        assert collector.endpoint is not None
        with Sender(collector.endpoint) as sender:
            sender.send(pack(call_records(1, 1)))
            await wait_until(lambda: collector.stored == 2)  # then it lingers for 1 s
            cpu = time.thread_time()
            sender.send(pack(call_records(2, 2)))
            await asyncio.sleep(0.4)
            spent = time.thread_time() - cpu
            assert collector.stored == 2  # still lingering
            assert spent < 0.1, f"{spent:.3f} s of CPU in 0.4 s of lingering"
            await wait_until(lambda: collector.stored == 4)


class FailingStore(MemoryTraceStore):
    async def add(self, records: Any) -> int:
        from gateway.trace_store import StoreUnavailable

        raise StoreUnavailable("down for the test")


@run_async
async def test_an_unavailable_store_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    async with running(
        Collector(FailingStore(), bind="tcp://127.0.0.1:0", query=None)
    ) as collector:
        assert collector.endpoint is not None
        assert collector.query_endpoint is None
        with Sender(collector.endpoint) as sender:
            for _ in range(3):
                sender.send(pack(call_records(1, 1)))
            await wait_until(lambda: collector.dropped_store == 6)
        assert collector.stored == 0
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1  # at most one a minute


@run_async
async def test_a_busy_endpoint_leaves_nothing_open() -> None:
    first = await started()
    assert first.endpoint is not None
    second = Collector(MemoryTraceStore(), bind=first.endpoint, query="tcp://127.0.0.1:0")
    with pytest.raises(zmq.ZMQError):
        await second.start()
    third = Collector(MemoryTraceStore(), bind="tcp://127.0.0.1:0", query=first.endpoint)
    with pytest.raises(zmq.ZMQError):
        await third.start()
    await first.aclose()


@pytest.mark.parametrize(
    ("collector", "query", "bind_option", "query_option", "expected"),
    [
        (None, None, None, None, ("tcp://127.0.0.1:5570", "tcp://127.0.0.1:5571")),
        ("tcp://10.0.0.1:7000", None, None, None, ("tcp://10.0.0.1:7000", "tcp://10.0.0.1:7001")),
        ("tcp://10.0.0.1:7000", "ipc:///q", None, None, ("tcp://10.0.0.1:7000", "ipc:///q")),
        ("tcp://10.0.0.1:7000", "ipc:///q", "tcp://*:8000", None, ("tcp://*:8000", "tcp://*:8001")),
        (None, None, "tcp://127.0.0.1:0", None, ("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")),
        (None, None, None, "tcp://127.0.0.1:9", ("tcp://127.0.0.1:5570", "tcp://127.0.0.1:9")),
        (None, None, "ipc:///tmp/c", None, ("ipc:///tmp/c", "ipc:///tmp/c.query")),
    ],
)
def test_endpoints_come_from_options_then_config_then_defaults(
    collector: str | None,
    query: str | None,
    bind_option: str | None,
    query_option: str | None,
    expected: tuple[str, str],
) -> None:
    tracing = TracingConfig(collector=collector, query=query)
    assert endpoints_for(tracing, bind_option, query_option) == expected


def test_no_next_port_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="give --query"):
        endpoints_for(TracingConfig(), "tcp://127.0.0.1:65535", None)
