"""``CollectorSource`` against a real rpccore.aio server standing in for the collector's query
service, and the views end to end with it: uvicorn, the source's client, the stub collector in
its own thread and loop; then with no collector at all (503)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final

import httpx
import pytest
import zmq.asyncio
from loopback import free_port
from served import ServedApp
from views_support import TRACE_ID, three_level_trace, views_app

from gateway.trace_records import TraceFilter
from gateway.trace_views import (
    COLLECTOR_SERVICE,
    CollectorSource,
    SourceError,
    SourceUnavailable,
)
from rpccore import TraceContext, current_trace
from rpccore.aio import Server

HB: Final = 0.5


class StubCollector:
    """The query methods of the collector, answering fixed data; remembers the trace context
    each query arrived with."""

    def __init__(self) -> None:
        self.contexts: list[TraceContext | None] = []
        self.filters: list[tuple[str | None, str | None, bool]] = []

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        self.contexts.append(current_trace.get())
        return three_level_trace() if trace_id == TRACE_ID else []

    async def recent(
        self,
        limit: int = 50,
        service: str | None = None,
        method: str | None = None,
        failed: bool = False,
    ) -> list[Any]:
        self.contexts.append(current_trace.get())
        self.filters.append((service, method, failed))
        entry = {"trace_id": bytes.fromhex(TRACE_ID), "start": 1.0, "duration": 0.05}
        return [entry, "junk"][:limit]  # what is not a map is dropped

    async def stats(self, minutes: int | None = None) -> dict[str, Any]:
        return {"calc": {"add": {"count": 3 if minutes is None else minutes, "rate": 1.5}}}

    async def info(self) -> dict[str, Any]:
        return {"store": "memory"}


class WrongShapes:
    async def trace(self, trace_id: str) -> dict[str, Any]:
        return {}

    async def recent(self, limit: int = 50) -> str:
        return "no"

    async def stats(self) -> list[int]:
        return [1]


class Failing:
    async def trace(self, trace_id: str) -> list[Any]:
        raise KeyError(trace_id)


def run(test: Callable[[], Coroutine[Any, Any, None]], timeout: float = 20) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout))


def open_sockets() -> int:
    context = zmq.asyncio.Context.instance()
    return sum(1 for sock in list(context._sockets) if not sock.closed)


async def serve(obj: object) -> tuple[Server, str]:
    server = Server(obj, name=COLLECTOR_SERVICE, heartbeat=HB)
    endpoint = server.bind("tcp://127.0.0.1:*")[0]
    server.start()
    return server, endpoint


def test_queries_and_no_trace_context() -> None:
    stub = StubCollector()

    async def main() -> None:
        before = open_sockets()
        server, endpoint = await serve(stub)
        source = CollectorSource(endpoint, timeout=5)
        assert "idle" in repr(source)
        try:
            # As a gateway request handler would: a current trace that must not be sent.
            token = current_trace.set(TraceContext.new_root())
            try:
                records = await source.trace(TRACE_ID)
                assert "open" in repr(source)
                assert len(records) == len(three_level_trace())
                assert await source.trace("0" * 32) == []
                assert await source.recent(5) == [
                    {"trace_id": bytes.fromhex(TRACE_ID), "start": 1.0, "duration": 0.05}
                ]
                assert len(await source.recent(5, TraceFilter("calc", "add", failed=True))) == 1
                assert stub.filters == [(None, None, False), ("calc", "add", True)]
                assert (await source.stats())["calc"]["add"]["count"] == 3
                assert (await source.stats(7))["calc"]["add"]["count"] == 7
                assert current_trace.get() is not None  # ours is left as it was
            finally:
                current_trace.reset(token)
            assert stub.contexts == [None, None, None, None]
        finally:
            await source.aclose()
            await source.aclose()  # twice is harmless
            server.stop()
        assert "closed" in repr(source)
        with pytest.raises(SourceUnavailable, match="shutting down"):
            await source.stats()
        await asyncio.sleep(0)
        assert open_sockets() == before

    run(main)


def test_wrong_answers_and_remote_errors() -> None:
    async def main() -> None:
        server, endpoint = await serve(WrongShapes())
        failing, failing_endpoint = await serve(Failing())
        source = CollectorSource(endpoint, timeout=5)
        other = CollectorSource(failing_endpoint, timeout=5)
        try:
            for query in (source.trace(TRACE_ID), source.recent(), source.stats()):
                with pytest.raises(SourceError, match="answered something else") as caught:
                    await query
                assert not isinstance(caught.value, SourceUnavailable)
            with pytest.raises(SourceError, match=r"failed trace\(\): KeyError") as failed:
                await other.trace(TRACE_ID)
            assert not isinstance(failed.value, SourceUnavailable)
            with pytest.raises(SourceError, match=r"failed stats\(\)"):
                await other.stats()  # no such method
        finally:
            await source.aclose()
            await other.aclose()
            server.stop()
            failing.stop()

    run(main)


def test_no_collector_is_unavailable() -> None:
    async def main() -> None:
        source = CollectorSource(f"tcp://127.0.0.1:{free_port()}", timeout=0.3, retry_after=9)
        try:
            with pytest.raises(SourceUnavailable, match="does not answer") as caught:
                await source.recent()
            assert caught.value.retry_after == 9
        finally:
            await source.aclose()

    run(main)


class CollectorThread:
    """The stub collector served on its own event loop, in a thread."""

    def __init__(self, obj: object) -> None:
        self.obj = obj
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Server | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = Server(self.obj, name=COLLECTOR_SERVICE, heartbeat=HB)
        self.server.bind(self.endpoint)
        self.ready.set()
        await self.server.run()

    def __enter__(self) -> CollectorThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None
        assert self.server is not None
        self.loop.call_soon_threadsafe(self.server.stop)
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def collector() -> Iterator[CollectorThread]:
    with CollectorThread(StubCollector()) as running:
        yield running


def test_views_end_to_end_with_a_collector(collector: CollectorThread) -> None:
    source = CollectorSource(collector.endpoint, timeout=5)
    with (
        ServedApp(views_app(source, closing=source)) as served,
        httpx.Client(base_url=served.url, timeout=10) as http,
    ):
        tree = http.get(f"/traces/{TRACE_ID}").json()
        assert (tree["spans"], tree["errors"]) == (5, 1)
        page = http.get(f"/traces/{TRACE_ID}", headers={"Accept": "text/html"}).text
        assert page.count('<g class="span') == 5
        assert http.get(f"/traces/{'0' * 32}").status_code == 404
        listed = http.get("/traces?format=json").json()["traces"]
        assert [t["trace_id"] for t in listed] == [TRACE_ID]
        assert http.get("/stats").json()["calc"]["add"]["rate"] == 1.5
        assert http.get("/stats?minutes=5").json()["calc"]["add"]["count"] == 5
    assert "closed" in repr(source)  # the app's lifespan closed it


def test_views_with_the_collector_down() -> None:
    source = CollectorSource(f"tcp://127.0.0.1:{free_port()}", timeout=0.3, retry_after=4)
    with (
        ServedApp(views_app(source, closing=source)) as served,
        httpx.Client(base_url=served.url, timeout=10) as http,
    ):
        for path in ("/traces", f"/traces/{TRACE_ID}", "/stats"):
            answer = http.get(path)
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "4"
            assert answer.json()["code"] == "unavailable"
