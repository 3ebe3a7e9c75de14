"""The asyncio driver end to end over loopback TCP: calls, streams, errors, timeouts,
cancellation, abandoned streams, ``describe()`` and the introspection built-ins.

Client and server share one event loop here; the heartbeat is short (HB) so that "the server
notices a silent client" happens within a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aio_support import HB, SLACK, collect, connected, eventually, run_async, serving

from rpccore import DEFAULT_WINDOW, MethodNotFound, RemoteError, TimeoutExpired
from rpccore.aio import AsyncStream, stream

LOST_BOUND = 3 * HB + SLACK  # a silent client is lost within three heartbeat periods
ENDLESS = 100_000  # "endless" streams are bounded too; back-pressure stops them long before


class Calc:
    """A calculator for the tests."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.produced = 0
        self.closed = 0

    async def add(self, a: int, b: int) -> int:
        """Add two numbers.

        Returns a + b.
        """
        return a + b

    def mul(self, a: int, b: int) -> int:
        return a * b

    async def echo(self, value: Any) -> Any:
        return value

    async def fail(self, message: str) -> None:
        raise ValueError(message)

    async def nap(self, seconds: float) -> float:
        self.started += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return seconds

    @stream
    def listed(self, n: int) -> list[int]:
        return list(range(n))

    def generated(self, n: int) -> Iterator[int]:
        yield from range(n)

    async def agenerated(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def failing(self, good: int) -> Iterator[int]:
        yield from range(good)
        raise ValueError(f"failed after {good}")

    async def afailing(self, good: int) -> AsyncIterator[int]:
        for i in range(good):
            yield i
        raise ValueError(f"failed after {good}")

    def endless(self) -> Iterator[int]:
        try:
            for i in range(ENDLESS):
                self.produced += 1
                yield i
        finally:
            self.closed += 1

    async def aendless(self) -> AsyncIterator[int]:
        try:
            for i in range(ENDLESS):
                self.produced += 1
                yield i
        finally:
            self.closed += 1

    def modern(
        self, a: int, /, b: str = "x", *rest: int, flag: bool = False, **options: Any
    ) -> dict[str, int]:
        """A modern signature."""
        return {b: a}

    def keyword_only(self, *, flag: bool = False, **options: Any) -> None:
        return None

    def odd_default(self, marker: frozenset[int] = frozenset({1})) -> None:
        return None


PUBLIC = sorted(name for name in dir(Calc) if not name.startswith("_"))

# -- calls -------------------------------------------------------------------------------

VALUES = [
    (None, None),
    (True, True),
    (0, 0),
    (-(2**63), -(2**63)),
    (2**64 - 1, 2**64 - 1),
    (1.5, 1.5),
    ("", ""),
    ("héllo ✓", "héllo ✓"),
    (b"\x00\xff", b"\x00\xff"),
    ([], []),
    ((1, (2, 3)), [1, [2, 3]]),  # tuples travel as arrays
    ({"k": "v", "n": [1, None]}, {"k": "v", "n": [1, None]}),
]


@pytest.mark.parametrize(("value", "expected"), VALUES)
@run_async
async def test_echo_round_trips_msgpack_values(value: Any, expected: Any) -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        assert await client.call("echo", value) == expected


@run_async
async def test_call_attribute_sugar_and_thread_pool_methods() -> None:
    async with serving(Calc()) as (server, endpoint), connected(endpoint) as client:
        assert await client.call("add", 1, 2) == 3
        assert await client.add(2, 3) == 5  # attribute sugar
        assert await client.mul(4, 5) == 20  # a plain method: runs in the thread pool
        assert await asyncio.gather(*(client.add(i, i) for i in range(50))) == [
            2 * i for i in range(50)
        ]
        assert client.open_channels == 0
        await eventually(lambda: server.open_channels == 0, SLACK, "server channels closed")
    with pytest.raises(AttributeError):
        client._private  # noqa: B018 -- names starting with _ are never remote calls


@run_async
async def test_unknown_method_raises_method_not_found() -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        with pytest.raises(MethodNotFound) as info:
            await client.call("nope", 1)
        assert (info.value.name, info.value.message) == ("NameError", "nope")
        with pytest.raises(MethodNotFound):
            await client.nope()
        assert client.open_channels == 0


@run_async
async def test_remote_exception_raises_remote_error() -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        with pytest.raises(RemoteError) as info:
            await client.fail("boom")
        error = info.value
        assert type(error) is RemoteError
        assert (error.name, error.message) == ("ValueError", "boom")
        assert error.traceback is not None
        assert error.traceback.startswith("Traceback (most recent call last):")
        assert error.traceback.endswith("ValueError: boom\n")
        # A plain method called with the wrong arguments fails the same way.
        with pytest.raises(RemoteError) as info:
            await client.mul(1)
        assert info.value.name == "TypeError"
        assert "missing 1 required positional argument" in info.value.message
        assert await client.add(1, 1) == 2  # the connection is fine afterwards


# -- streams -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3, 3 * DEFAULT_WINDOW])  # 0: the empty stream
@pytest.mark.parametrize("method", ["listed", "generated", "agenerated"])
@run_async
async def test_stream_methods(method: str, n: int) -> None:
    async with serving(Calc()) as (server, endpoint), connected(endpoint) as client:
        assert await collect(client.stream(method, n)) == list(range(n))
        result = await client.call(method, n)  # call() answers a stream with an AsyncStream
        assert isinstance(result, AsyncStream)
        assert await collect(result) == list(range(n))
        assert client.open_channels == 0
        await eventually(lambda: server.open_channels == 0, SLACK, "server channels closed")


@run_async
async def test_stream_of_a_plain_method_is_a_type_error() -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        with pytest.raises(TypeError, match="answered a value"):
            await collect(client.stream("add", 1, 2))


# good=1: the error comes when the stream has used its credit (the request's implicit one)
# and must wait for the client's grant like any data event (it once hung the client).
@pytest.mark.parametrize("good", [0, 1, 3])
@pytest.mark.parametrize("method", ["failing", "afailing"])
@run_async
async def test_error_mid_stream(method: str, good: int) -> None:
    got: list[Any] = []

    async def consume(client: Any) -> None:
        async for item in client.stream(method, good):
            got.append(item)

    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        with pytest.raises(RemoteError) as info:
            await asyncio.wait_for(consume(client), 5 * HB + SLACK)
        assert got == list(range(good))
        assert (info.value.name, info.value.message) == ("ValueError", f"failed after {good}")
        assert client.open_channels == 0


@pytest.mark.parametrize("method", ["endless", "aendless"])
@run_async
async def test_abandoned_stream_ends_on_both_sides(method: str) -> None:
    calc = Calc()
    async with serving(calc) as (server, endpoint), connected(endpoint) as client:
        items = await client.call(method)
        assert isinstance(items, AsyncStream)
        assert [await items.__anext__() for _ in range(3)] == [0, 1, 2]
        await items.aclose()
        assert client.open_channels == 0  # the client forgets the call at once
        # Nothing is sent: the server notices that the channel's heartbeats stopped.
        await eventually(lambda: server.open_channels == 0, LOST_BOUND, "server channel closed")
        await eventually(lambda: calc.closed == 1, SLACK, "the server closed the generator")
        assert calc.produced < 3 * DEFAULT_WINDOW  # back-pressure: far from ENDLESS
        assert await client.add(1, 2) == 3


# -- timeouts and cancellation -------------------------------------------------------------


@run_async
async def test_timeout_raises_and_forgets_the_call() -> None:
    calc = Calc()
    async with serving(calc) as (server, endpoint), connected(endpoint) as client:
        with pytest.raises(TimeoutExpired, match=r"timeout after 0\.1s.*nap"):
            await client.call("nap", 2.0, timeout=0.1)
        assert client.open_channels == 0
        assert await client.add(1, 1) == 2
        # The server learns nothing but the silence of the channel's heartbeats.
        await eventually(lambda: server.open_channels == 0, LOST_BOUND, "server channel closed")
        await eventually(lambda: calc.cancelled == 1, SLACK, "the handler was cancelled")


@run_async
async def test_cancelling_the_awaiting_task_abandons_the_call() -> None:
    calc = Calc()
    async with serving(calc) as (server, endpoint), connected(endpoint) as client:
        task = asyncio.create_task(client.call("nap", 30.0))
        await eventually(lambda: calc.started == 1, SLACK, "the call reached the server")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.open_channels == 0
        await eventually(lambda: server.open_channels == 0, LOST_BOUND, "server channel closed")
        await eventually(lambda: calc.cancelled == 1, SLACK, "the handler was cancelled")
        assert await client.add(1, 2) == 3


# -- introspection -----------------------------------------------------------------------

INTEGER = {"type": "integer"}


@run_async
async def test_describe_answers_with_our_extension_keys() -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        description = await client.describe()
    assert description["introspection"] == "inspect"
    assert description["name"] == "Calc"
    methods = description["methods"]
    assert sorted(methods) == PUBLIC
    streams = {"listed", "generated", "agenerated", "failing", "afailing", "endless", "aendless"}
    assert {name for name, entry in methods.items() if entry["stream"]} == streams
    assert methods["add"] == {
        "args": [
            {"name": "self", "kind": "self"},
            {"name": "a", "kind": "named", "schema": INTEGER},
            {"name": "b", "kind": "named", "schema": INTEGER},
        ],
        "doc": "Add two numbers.\n\nReturns a + b.",
        "returns": INTEGER,
        "stream": False,
    }
    modern = methods["modern"]
    assert modern["args"] == [
        {"name": "self", "kind": "self"},
        {"name": "a", "kind": "positional", "schema": INTEGER},
        {"name": "b", "default": "x", "kind": "named", "schema": {"type": "string"}},
    ]
    assert modern["varargs"] == "rest"
    assert modern["returns"] == {"type": "object", "additionalProperties": INTEGER}
    assert methods["listed"]["returns"] == {"type": "array", "items": INTEGER}


BUILTINS = [
    ("_zerorpc_name", [], "Calc"),
    ("_zerorpc_ping", [], ["pong", "Calc"]),
    ("_zerorpc_list", [], PUBLIC),
    ("_zerorpc_help", ["add"], "Add two numbers.\n\nReturns a + b."),
    ("_zerorpc_help", ["mul"], None),
    ("_zerorpc_args", ["add"], [["self", "a", "b"], None, None, None]),
    ("_zerorpc_args", ["modern"], [["self", "a", "b"], "rest", "options", ["x"]]),
    ("_zerorpc_args", ["keyword_only"], [["self"], None, "options", None]),
    ("_zerorpc_args", ["odd_default"], [["self", "marker"], None, None, ["frozenset({1})"]]),
]


@pytest.mark.parametrize(("method", "args", "expected"), BUILTINS)
@run_async
async def test_introspection_builtins(method: str, args: list[Any], expected: Any) -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        assert await client.call(method, *args) == expected


@run_async
async def test_zerorpc_inspect_works_on_modern_signatures() -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        answer = await client.call("_zerorpc_inspect")
        with pytest.raises(RemoteError) as info:
            await client.call("_zerorpc_help", "nope")
    assert answer["name"] == "Calc"
    assert sorted(answer["methods"]) == PUBLIC
    assert answer["methods"]["keyword_only"]["args"] == [{"name": "self", "kind": "self"}]
    assert answer["methods"]["odd_default"]["args"][1]["default"] == "frozenset({1})"
    assert info.value.name == "KeyError"  # like 0.6.3
