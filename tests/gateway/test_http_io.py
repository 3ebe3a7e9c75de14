"""Reading bodies within a limit, X-Timeout-Ms, and waiting for a call while watching for the
client to leave (gateway/http_io.py), with scripted ASGI receive callables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from gateway.http_io import DisconnectWatch, read_body, requested_timeout
from gateway.problems import Problem

Message = dict[str, Any]


def scripted(*messages: Message, then: Callable[[], Awaitable[Message]] | None = None) -> Any:
    """A receive() that returns ``messages`` in order, then awaits ``then`` (or forever)."""
    queue = list(messages)
    calls = {"n": 0}

    async def receive() -> Message:
        calls["n"] += 1
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    receive.calls = calls  # type: ignore[attr-defined]
    return receive


def chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_body_in_several_chunks_is_joined() -> None:
    receive = scripted(chunk(b"[1,", True), chunk(b"", True), chunk(b"2]", False))
    assert asyncio.run(read_body(receive, None, 100)) == b"[1,2]"


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    receive = scripted()
    with pytest.raises(Problem) as caught:
        asyncio.run(read_body(receive, "101", 100))
    assert caught.value.status == 413
    assert receive.calls["n"] == 0


def test_an_undeclared_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    receive = scripted(chunk(b"x" * 60, True), chunk(b"x" * 60, True), chunk(b"x" * 60, False))
    with pytest.raises(Problem) as caught:
        asyncio.run(read_body(receive, None, 100))
    assert caught.value.status == 413
    assert receive.calls["n"] == 2  # the third chunk was never asked for


def test_a_bad_content_length_is_a_400() -> None:
    with pytest.raises(Problem) as caught:
        asyncio.run(read_body(scripted(), "12x", 100))
    assert caught.value.status == 400


def test_a_disconnect_while_reading_raises_client_disconnect() -> None:
    receive = scripted(chunk(b"[1", True), {"type": "http.disconnect"})
    with pytest.raises(ClientDisconnect):
        asyncio.run(read_body(receive, None, 100))


@pytest.mark.parametrize(("header", "seconds"), [(None, None), ("250", 0.25), (" 1000 ", 1.0)])
def test_timeout_header(header: str | None, seconds: float | None) -> None:
    assert requested_timeout(header) == seconds


@pytest.mark.parametrize("header", ["0", "-5", "1.5", "soon", ""])
def test_bad_timeout_headers_are_400(header: str) -> None:
    with pytest.raises(Problem) as caught:
        requested_timeout(header)
    assert caught.value.status == 400
    assert caught.value.extra["errors"][0]["loc"] == ["header", "X-Timeout-Ms"]


def test_a_fast_call_never_starts_a_watcher() -> None:
    receive = scripted()
    watch = DisconnectWatch(period=0.01)

    async def main() -> int:
        value = await watch.until_disconnect(asyncio.sleep(0, 7), receive)
        await asyncio.sleep(0.05)  # a sweep runs, finds nothing and stops
        return value

    assert asyncio.run(main()) == 7
    assert receive.calls["n"] == 0
    assert watch._sweep is None


def test_a_disconnect_cancels_the_call_and_raises_client_disconnect() -> None:
    watch = DisconnectWatch(period=0.01)
    cancelled = asyncio.Event()

    async def leave() -> Message:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def slow_call() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        before = len(asyncio.all_tasks())
        with pytest.raises(ClientDisconnect):
            await watch.until_disconnect(slow_call(), scripted(then=leave))
        assert cancelled.is_set()
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        await asyncio.sleep(0)  # the task is usable afterwards
        assert len(asyncio.all_tasks()) == before  # no watcher left behind
        assert watch._calls == {}

    asyncio.run(asyncio.wait_for(main(), 5))


def test_an_outside_cancellation_is_not_mistaken_for_a_disconnect() -> None:
    watch = DisconnectWatch(period=0.01)

    async def main() -> None:
        before = len(asyncio.all_tasks())
        task = asyncio.create_task(watch.until_disconnect(asyncio.sleep(10), scripted()))
        await asyncio.sleep(0.05)  # long enough for a watcher to start
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == before
        assert watch._calls == {}

    asyncio.run(asyncio.wait_for(main(), 5))


def test_many_calls_share_one_sweep() -> None:
    watch = DisconnectWatch(period=0.01)

    async def main() -> list[int]:
        calls = [watch.until_disconnect(asyncio.sleep(0.03, i), scripted()) for i in range(50)]
        results = await asyncio.gather(*calls)
        return list(results)

    assert asyncio.run(main()) == list(range(50))
    assert watch._calls == {}
