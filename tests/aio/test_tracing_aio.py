"""Trace records on the asyncio driver: one per call and side, linked into a call tree."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from aio_support import collect, connected, eventually, run_async, serving
from trace_capture import Records, recording

import rpccore
from gateway.trace_records import decode_message
from rpccore import RemoteError, TimeoutExpired, current_trace, tracing
from rpccore import _tracing as tracing_impl
from rpccore.aio import Client


@pytest.fixture
def records() -> Iterator[Records]:
    with recording("aio-test") as handler:
        yield handler


class Backend:
    async def whoami(self) -> str | None:
        ctx = current_trace.get()
        return None if ctx is None else ctx.span_id

    async def fail(self) -> None:
        raise KeyError("nope")

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def slow(self) -> None:
        await asyncio.sleep(5)


class Front:
    def __init__(self, backend: Client, loop: asyncio.AbstractEventLoop) -> None:
        self._backend, self._loop = backend, loop

    async def relay(self) -> Any:
        return await self._backend.whoami()

    def relay_from_my_thread(self) -> Any:
        # A plain method (in the pool) starting a thread of its own: rpccore.traced
        # carries the handler's trace into it.
        out: list[Any] = []

        def work() -> None:
            call = self._backend.whoami()
            out.append(asyncio.run_coroutine_threadsafe(call, self._loop).result(5))

        thread = threading.Thread(target=rpccore.traced(work))
        thread.start()
        thread.join()
        return out[0]


@pytest.mark.parametrize("method", ["relay", "relay_from_my_thread"])
@run_async
async def test_records_link_into_a_call_tree(records: Records, method: str) -> None:
    loop = asyncio.get_running_loop()
    async with (
        serving(Backend(), name="back") as (_, b_endpoint),
        connected(b_endpoint) as to_b,
        serving(Front(to_b, loop), name="front") as (_, a_endpoint),
        connected(a_endpoint) as to_a,
    ):
        to_b.remote_name = "back"
        b_span = await to_a.call(method)
        await eventually(lambda: len(records.records) == 4, 5, "four records")
    root_client, front = records.find("client", method), records.find("server", method)
    back_client, back = records.find("client", "whoami"), records.find("server", "whoami")
    assert len({r["tid"] for r in records.records}) == 1  # one trace
    assert root_client["par"] is None  # a root call
    assert root_client["svc"] == a_endpoint  # the remote's name is unknown: its endpoint
    assert front["sid"] == root_client["sid"]
    assert front["svc"] == "front"
    assert back_client["par"] == front["sid"]  # a child of the handler's span
    assert back_client["svc"] == "back"
    assert back["sid"] == back_client["sid"] == b_span
    for r in records.records:
        assert r["out"] == "ok"
        assert r["proc"] == "aio-test"
        assert r["t0"] <= r["t1"] <= r["t2"]
    assert root_client["t0"] <= front["t0"] <= back["t0"] <= back["t2"] <= root_client["t2"]


@run_async
async def test_errors_streams_unknown_methods_and_timeouts(records: Records) -> None:
    errors: list[tuple[str, Any]] = []
    remove = tracing.on_error(lambda record, error: errors.append((record["side"], error)))
    try:
        async with serving(Backend()) as (_, endpoint), connected(endpoint) as client:
            with pytest.raises(RemoteError):
                await client.fail()
            assert await collect(client.stream("count", 3)) == [0, 1, 2]
            with pytest.raises(rpccore.MethodNotFound):
                await client.nothing()
            with pytest.raises(TimeoutExpired):
                await client.call("slow", timeout=0.2)
            stream = await client.call("count", 50)
            await stream.__anext__()
            await stream.aclose()  # abandoned by the caller
            await eventually(lambda: len(records.records) >= 9, 5, "the records")
    finally:
        remove()
    assert (records.find("server", "fail")["out"], records.find("server", "fail")["exc"]) == (
        "error",
        "KeyError",
    )
    assert records.find("client", "fail")["exc"] == "KeyError"
    counts = [r for r in records.records if r["m"] == "count" and r["out"] == "stream"]
    assert sorted(r["n"] for r in counts) == [3, 3]
    assert records.find("server", "nothing")["exc"] == "NameError"
    assert records.find("client", "nothing")["exc"] == "NameError"
    assert records.find("client", "slow")["out"] == "timeout"
    abandoned = [r for r in records.records if r["m"] == "count" and r["side"] == "client"]
    assert {r["out"] for r in abandoned} == {"stream", "abandoned"}
    sides = sorted(side for side, _ in errors)
    assert sides == ["client", "client", "server", "server"]
    assert any(isinstance(error, KeyError) for _, error in errors)


@run_async
async def test_a_request_without_trace_context_starts_a_trace(records: Records) -> None:
    # A zerorpc 0.6.3 client sends no trace keys.
    async with serving(Backend()) as (_, endpoint):
        context = zmq.asyncio.Context.instance()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(endpoint)
            header = {"message_id": b"1" * 32, "v": 3}
            await sock.send_multipart([b"", msgpack.packb([header, "whoami", []])])
            reply = msgpack.unpackb((await sock.recv_multipart())[-1])
        finally:
            sock.close()
        await eventually(lambda: len(records.records) == 1, 5, "a record")
    [record] = records.records
    assert record["par"] is None
    assert reply[2] == [record["sid"]]  # the handler ran under the new context


@run_async
async def test_the_environment_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    context = zmq.asyncio.Context.instance()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    monkeypatch.setenv(tracing.ENV_COLLECTOR, f"tcp://127.0.0.1:{port}")
    monkeypatch.setattr(tracing_impl, "_checked_env", False)
    try:
        async with serving(Backend()) as (_, endpoint), connected(endpoint) as client:
            assert tracing.is_enabled()
            await client.whoami()
            got: list[Any] = []  # as the collector reads them
            while len(got) < 2:
                got += decode_message(await asyncio.wait_for(pull.recv(), 5))[0]
        assert {r.side for r in got} == {"client", "server"}
    finally:
        tracing.disable()
        pull.close()


@run_async
async def test_off_sends_no_trace_keys_and_keeps_no_spans() -> None:
    assert not tracing.is_enabled()
    async with serving(Backend()) as (_, endpoint), connected(endpoint) as client:
        assert await client.whoami() is None  # no context was sent or made up
        assert client._spans == {}
