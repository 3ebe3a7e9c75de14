"""Interop with the real zerorpc 0.6.3, asyncio driver, over real sockets on 127.0.0.1.

(B) zerorpc's client (a child process, peers/zrpc_client.py) against our aio Server, and
(C) our aio Client against zerorpc's server (a child process, peers/zrpc_server.py).
The gevent driver's twin of this file is tests/green/test_interop_green.py (A and D).

Each test runs its own event loop (``run``), bounded by TEST_TIMEOUT; every child process
is bounded and killed by PID at teardown (conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from time import monotonic
from typing import Any, TypeVar

import msgpack
import pytest
import zmq
from interop_support import (
    CHILD_RUN_TIMEOUT,
    CHILD_START_TIMEOUT,
    CONCURRENT_CALL_TIMEOUT,
    CONCURRENT_CALLS,
    DESCRIBE_FALLBACK,
    GET_TUPLE_ANSWER,
    HEARTBEAT,
    HELD_CALL_SECONDS,
    INSPECT_ANSWER_063,
    LONG_CALL_SECONDS,
    LOST_REMOTE_BOUND,
    METHOD_ARGS,
    METHOD_DOCS,
    METHOD_NAMES,
    MSGPACK_VALUES,
    NO_GETARGSPEC,
    QUIET_HEARTBEAT,
    SERVICE_NAME,
    SHORT_TIMEOUT,
    SLOW_DOC,
    STREAM_METHODS,
    STREAM_SIZE,
    TEST_TIMEOUT,
    ChildProcesses,
    InteropMethods,
    ZerorpcServer,
    as_063_inspect,
    assert_remote_error_fields,
    mismatches,
    parse_client_output,
    typed,
    values_input,
    zerorpc_client_argv,
)

from rpccore import LostRemote, MethodNotFound, RemoteError, TimeoutExpired
from rpccore.aio import AsyncStream, Client, Server

T = TypeVar("T")


class Interop(InteropMethods):
    """The test service on our asyncio server: ``slow`` is a coroutine, so a lost
    client cancels it; the other methods are plain and run in the loop's executor."""

    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    slow.__doc__ = SLOW_DOC


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = monotonic() + timeout
    while not predicate():
        if monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout}s")
        await asyncio.sleep(0.01)


async def collect(stream: AsyncIterator[Any], *, into: list[Any]) -> None:
    async for item in stream:
        into.append(item)


@contextlib.asynccontextmanager
async def our_server(heartbeat: float = HEARTBEAT) -> AsyncIterator[tuple[Server, str]]:
    server = Server(Interop(), heartbeat=heartbeat)
    (endpoint,) = server.bind("tcp://127.0.0.1:*")
    server.start()
    try:
        yield server, endpoint
    finally:
        server.stop()


async def run_zerorpc_client(
    children: ChildProcesses,
    endpoint: str,
    scenario: str,
    *args: object,
    heartbeat: float = HEARTBEAT,
    timeout: float = 10.0,
    stdin: bytes | None = None,
) -> Any:
    """Run one scenario in a zerorpc client process while our loop keeps serving."""
    proc = children.spawn(
        zerorpc_client_argv(endpoint, scenario, *args, heartbeat=heartbeat, timeout=timeout),
        name=f"zrpc_client-{scenario}",
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
    )
    try:
        stdout, _ = await asyncio.to_thread(proc.communicate, stdin, CHILD_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"zerorpc client {scenario} hung; stderr:\n{children.stderr(proc)}")
    assert proc.returncode == 0, f"zerorpc client {scenario} failed:\n{children.stderr(proc)}"
    return parse_client_output(stdout)


# -- (B) zerorpc 0.6.3 client -> our asyncio server ----------------------------------


def test_zerorpc_client_to_aio_server_every_msgpack_type(child_processes: ChildProcesses) -> None:
    async def scenario() -> Any:
        async with our_server() as (server, endpoint):
            outcome = await run_zerorpc_client(
                child_processes, endpoint, "echo_values", stdin=values_input()
            )
            assert server.open_channels == 0
        return outcome

    outcome = run(scenario())
    assert mismatches(outcome["echoed"], MSGPACK_VALUES) == {}
    assert typed(outcome["get_tuple"]) == typed(GET_TUPLE_ANSWER)


@pytest.mark.parametrize(
    ("scenario", "name", "message"),
    [
        ("remote_error", "ValueError", "boom ✓ déjà vu"),
        ("unknown_method", "NameError", "no_such_method"),
    ],
)
def test_zerorpc_client_to_aio_server_errors(
    child_processes: ChildProcesses, scenario: str, name: str, message: str
) -> None:
    async def run_scenario() -> Any:
        async with our_server() as (server, endpoint):
            outcome = await run_zerorpc_client(child_processes, endpoint, scenario)
            assert server.open_channels == 0
        return outcome

    assert_remote_error_fields(run(run_scenario()), name, message)


@pytest.mark.parametrize(
    ("method", "args", "items", "error"),
    [
        ("count", [STREAM_SIZE], list(range(STREAM_SIZE)), None),
        ("empty_stream", [], [], None),
        ("fail_midway", [3], [0, 1, 2], ("KeyError", "'boom'")),
    ],
    ids=["10000_items", "empty", "error_midway"],
)
def test_zerorpc_client_to_aio_server_streams(
    child_processes: ChildProcesses,
    method: str,
    args: list[int],
    items: list[int],
    error: tuple[str, str] | None,
) -> None:
    async def scenario() -> Any:
        async with our_server() as (server, endpoint):
            outcome = await run_zerorpc_client(child_processes, endpoint, "stream", method, *args)
            assert server.open_channels == 0
        return outcome

    outcome = run(scenario())
    assert outcome["items"] == items
    if error is None:
        assert outcome["error"] is None
    else:
        assert_remote_error_fields(outcome["error"], *error)


def test_zerorpc_client_to_aio_server_long_call_kept_alive_by_heartbeats(
    child_processes: ChildProcesses,
) -> None:
    async def scenario() -> Any:
        async with our_server(heartbeat=HEARTBEAT) as (server, endpoint):
            outcome = await run_zerorpc_client(
                child_processes, endpoint, "long_call", LONG_CALL_SECONDS, heartbeat=HEARTBEAT
            )
            assert server.open_channels == 0
        return outcome

    outcome = run(scenario())
    assert outcome["result"] == LONG_CALL_SECONDS
    assert outcome["elapsed"] >= LONG_CALL_SECONDS


def test_zerorpc_client_to_aio_server_timeout(child_processes: ChildProcesses) -> None:
    """zerorpc's client gives up; our server notices when its heartbeats stop."""

    async def scenario() -> Any:
        async with our_server() as (server, endpoint):
            outcome = await run_zerorpc_client(
                child_processes, endpoint, "timeout", HELD_CALL_SECONDS, SHORT_TIMEOUT
            )
            await wait_until(lambda: server.open_channels == 0, LOST_REMOTE_BOUND)
        return outcome

    outcome = run(scenario())
    assert outcome["type"] == "TimeoutExpired"
    assert outcome["text"] == "timeout after 0.3s, when calling remote method slow"


def test_zerorpc_client_to_aio_server_introspection_has_063_shapes(
    child_processes: ChildProcesses,
) -> None:
    async def scenario() -> Any:
        async with our_server() as (server, endpoint):
            outcome = await run_zerorpc_client(child_processes, endpoint, "introspection")
            assert server.open_channels == 0
        return outcome

    outcome = run(scenario())
    assert outcome["list"] == METHOD_NAMES
    assert outcome["name"] == SERVICE_NAME
    assert outcome["ping"] == ["pong", SERVICE_NAME]
    assert outcome["help"] == METHOD_DOCS
    assert_remote_error_fields(outcome["help_unknown"], "KeyError", "'nope'")
    assert typed(outcome["args"]) == typed(METHOD_ARGS)
    inspect_answer = outcome["inspect"]
    assert typed(as_063_inspect(inspect_answer)) == typed(INSPECT_ANSWER_063)
    streams = {m for m, entry in inspect_answer["methods"].items() if entry["stream"]}
    assert streams == set(STREAM_METHODS)  # our extension key, ignored by 0.6.3


def test_zerorpc_client_to_aio_server_1000_concurrent_calls(
    child_processes: ChildProcesses,
) -> None:
    async def scenario() -> Any:
        async with our_server(heartbeat=QUIET_HEARTBEAT) as (server, endpoint):
            outcome = await run_zerorpc_client(
                child_processes,
                endpoint,
                "concurrent",
                CONCURRENT_CALLS,
                heartbeat=QUIET_HEARTBEAT,
                timeout=CONCURRENT_CALL_TIMEOUT,
            )
            assert server.open_channels == 0
        return outcome

    assert run(scenario())["results"] == [2 * i for i in range(CONCURRENT_CALLS)]


def test_aio_server_drops_channel_of_killed_zerorpc_client(
    child_processes: ChildProcesses,
) -> None:
    """kill -9 of the zerorpc client mid-call: our server closes the channel (and
    cancels the method) within 3 heartbeat periods."""

    async def scenario() -> float:
        async with our_server(heartbeat=HEARTBEAT) as (server, endpoint):
            proc = child_processes.spawn(
                zerorpc_client_argv(endpoint, "hold_call", HELD_CALL_SECONDS, heartbeat=HEARTBEAT),
                name="zrpc_client-hold_call",
            )
            await wait_until(lambda: server.open_channels == 1, CHILD_START_TIMEOUT)
            await asyncio.sleep(2 * HEARTBEAT)  # heartbeats flow both ways: the call is alive
            assert server.open_channels == 1
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = monotonic()
            await wait_until(lambda: server.open_channels == 0, 2 * LOST_REMOTE_BOUND)
            lost_after = monotonic() - killed_at
            assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL
        return lost_after

    lost_after = run(scenario())
    assert lost_after <= LOST_REMOTE_BOUND


# -- (C) our asyncio client -> zerorpc 0.6.3 server ----------------------------------


def test_aio_client_to_zerorpc_server_every_msgpack_type(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    async def scenario() -> tuple[dict[str, Any], Any]:
        async with Client(
            quiet_zerorpc_server.endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT
        ) as client:
            echoed = {name: await client.echo(value) for name, value in MSGPACK_VALUES.items()}
            answer = await client.get_tuple()
            assert client.open_channels == 0
        return echoed, answer

    echoed, answer = run(scenario())
    assert mismatches(echoed, MSGPACK_VALUES) == {}
    assert typed(answer) == typed(GET_TUPLE_ANSWER)


def test_aio_client_to_zerorpc_server_remote_error(quiet_zerorpc_server: ZerorpcServer) -> None:
    async def scenario() -> RemoteError:
        async with Client(
            quiet_zerorpc_server.endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT
        ) as client:
            with pytest.raises(RemoteError) as caught:
                await client.fail("boom ✓ déjà vu")
            assert client.open_channels == 0
        return caught.value

    error = run(scenario())
    assert type(error) is RemoteError
    assert_remote_error_fields(error, "ValueError", "boom ✓ déjà vu")


def test_aio_client_to_zerorpc_server_unknown_method(quiet_zerorpc_server: ZerorpcServer) -> None:
    async def scenario() -> MethodNotFound:
        async with Client(
            quiet_zerorpc_server.endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT
        ) as client:
            with pytest.raises(MethodNotFound) as caught:
                await client.no_such_method(1, 2)
            assert client.open_channels == 0
        return caught.value

    assert_remote_error_fields(run(scenario()), "NameError", "no_such_method")


def test_aio_client_to_zerorpc_server_streams_10000_items(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    async def scenario() -> list[Any]:
        async with Client(
            quiet_zerorpc_server.endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT
        ) as client:
            items = [item async for item in client.stream("count", STREAM_SIZE)]
            assert client.open_channels == 0
        return items

    assert run(scenario()) == list(range(STREAM_SIZE))


def test_aio_client_to_zerorpc_server_empty_stream(quiet_zerorpc_server: ZerorpcServer) -> None:
    async def scenario() -> tuple[Any, list[Any]]:
        async with Client(
            quiet_zerorpc_server.endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT
        ) as client:
            answer = await client.call("empty_stream")
            items = [item async for item in answer]
            assert client.open_channels == 0
        return answer, items

    answer, items = run(scenario())
    assert isinstance(answer, AsyncStream)
    assert items == []


def test_aio_client_to_zerorpc_server_error_mid_stream(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    async def scenario() -> tuple[list[Any], RemoteError]:
        items: list[Any] = []
        async with Client(
            quiet_zerorpc_server.endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT
        ) as client:
            with pytest.raises(RemoteError) as caught:
                await collect(client.stream("fail_midway", 3), into=items)
            assert client.open_channels == 0
        return items, caught.value

    items, error = run(scenario())
    assert items == [0, 1, 2]
    assert_remote_error_fields(error, "KeyError", "'boom'")


def test_aio_client_to_zerorpc_server_long_call_kept_alive_by_heartbeats(
    zerorpc_server: ZerorpcServer,
) -> None:
    async def scenario() -> Any:
        async with Client(zerorpc_server.endpoint, timeout=10, heartbeat=HEARTBEAT) as client:
            result = await client.slow(LONG_CALL_SECONDS)
            assert client.open_channels == 0
        return result

    assert run(scenario()) == LONG_CALL_SECONDS


def test_aio_client_to_zerorpc_server_timeout(zerorpc_server: ZerorpcServer) -> None:
    async def scenario() -> tuple[TimeoutExpired, float]:
        async with Client(zerorpc_server.endpoint, heartbeat=HEARTBEAT) as client:
            started = monotonic()
            with pytest.raises(TimeoutExpired) as caught:
                await client.slow(HELD_CALL_SECONDS, timeout=SHORT_TIMEOUT)
            elapsed = monotonic() - started
            assert client.open_channels == 0
        return caught.value, elapsed

    error, elapsed = run(scenario())
    assert str(error) == "timeout after 0.3s, when calling remote method slow"
    assert SHORT_TIMEOUT <= elapsed < SHORT_TIMEOUT + 1.0


def test_aio_client_to_zerorpc_server_introspection(quiet_zerorpc_server: ZerorpcServer) -> None:
    """0.6.3 on Python 3.11 fails _zerorpc_inspect and _zerorpc_args; describe() falls
    back to _zerorpc_list + _zerorpc_help."""

    async def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with Client(
            quiet_zerorpc_server.endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT
        ) as client:
            found["list"] = await client.call("_zerorpc_list")
            found["name"] = await client.call("_zerorpc_name")
            found["ping"] = await client.call("_zerorpc_ping")
            found["help"] = {m: await client.call("_zerorpc_help", m) for m in METHOD_NAMES}
            with pytest.raises(RemoteError) as caught:
                await client.call("_zerorpc_help", "nope")
            found["help_unknown"] = caught.value
            with pytest.raises(RemoteError) as caught:
                await client.call("_zerorpc_inspect")
            found["inspect"] = caught.value
            with pytest.raises(RemoteError) as caught:
                await client.call("_zerorpc_args", "add")
            found["args"] = caught.value
            found["describe"] = await client.describe()
            assert client.open_channels == 0
        return found

    found = run(scenario())
    assert found["list"] == METHOD_NAMES
    assert found["name"] == SERVICE_NAME
    assert found["ping"] == ["pong", SERVICE_NAME]
    assert found["help"] == METHOD_DOCS
    assert_remote_error_fields(found["help_unknown"], "KeyError", "'nope'")
    assert_remote_error_fields(found["inspect"], *NO_GETARGSPEC)
    assert_remote_error_fields(found["args"], *NO_GETARGSPEC)
    assert found["describe"] == DESCRIBE_FALLBACK


def test_aio_client_to_zerorpc_server_1000_concurrent_calls(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    async def scenario() -> list[Any]:
        async with Client(
            quiet_zerorpc_server.endpoint,
            timeout=CONCURRENT_CALL_TIMEOUT,
            heartbeat=QUIET_HEARTBEAT,
        ) as client:
            results = await asyncio.gather(*(client.add(i, i) for i in range(CONCURRENT_CALLS)))
            assert client.open_channels == 0
        return results

    assert run(scenario()) == [2 * i for i in range(CONCURRENT_CALLS)]


def test_aio_client_lost_remote_after_zerorpc_server_killed(
    zerorpc_server: ZerorpcServer,
) -> None:
    """kill -9 of the zerorpc server mid-call: LostRemote within 3 heartbeat periods."""

    async def scenario() -> tuple[LostRemote, float]:
        async with Client(zerorpc_server.endpoint, timeout=10, heartbeat=HEARTBEAT) as client:
            call = asyncio.ensure_future(client.slow(HELD_CALL_SECONDS))
            await asyncio.to_thread(zerorpc_server.wait_for_slow_call)
            await asyncio.sleep(2 * HEARTBEAT)  # heartbeats flow both ways: the call is alive
            assert not call.done()
            os.kill(zerorpc_server.proc.pid, signal.SIGKILL)
            killed_at = monotonic()
            with pytest.raises(LostRemote) as caught:
                await call
            lost_after = monotonic() - killed_at
            assert client.open_channels == 0
        return caught.value, lost_after

    error, lost_after = run(scenario())
    assert lost_after <= LOST_REMOTE_BOUND
    assert str(error) == "Lost remote after 0.4s heartbeat"


# -- regression: a message that arrives just before the asyncio driver sends ----------


@contextlib.contextmanager
def raw_dealer(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    """A plain blocking DEALER speaking the wire protocol by hand (spec 3-4)."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    try:
        yield dealer
    finally:
        dealer.close()
        context.term()


def send_raw_request(dealer: zmq.Socket[bytes], method: str, args: list[Any]) -> bytes:
    message_id = uuid.uuid4().hex.encode()
    header = {"message_id": message_id, "v": 3}
    dealer.send_multipart([b"", msgpack.packb([header, method, args], use_bin_type=True)])
    return message_id


async def receive_raw_replies(
    dealer: zmq.Socket[bytes], expected: set[bytes], timeout: float
) -> dict[bytes, tuple[str, Any]]:
    """The data replies (not heartbeats) to the ``expected`` requests, by request id."""
    replies: dict[bytes, tuple[str, Any]] = {}
    deadline = monotonic() + timeout
    while set(replies) != expected and monotonic() < deadline:
        if not dealer.poll(0):
            await asyncio.sleep(0.01)
            continue
        header, name, args = msgpack.unpackb(dealer.recv_multipart()[-1], raw=False)
        if name in ("OK", "ERR", "STREAM", "STREAM_DONE"):
            replies[header["response_to"]] = (name, args)
    return replies


def test_aio_server_reads_a_request_that_arrives_while_it_replies() -> None:
    """The deterministic form of the stalls that 1,000 concurrent zerorpc calls hit.

    The loop is frozen until both our timer and the end of ``slow(0.2)`` are due, so they
    resume in the same loop iteration, ours first: we send a second request and wait
    (blocking) until libzmq has delivered it, then the handler flushes slow's reply.
    That send swallows the wake-up of the server's reader, and the second request is
    never read (nothing else happens on the socket).
    """

    async def scenario() -> tuple[dict[bytes, tuple[str, Any]], bytes, bytes]:
        async with our_server(heartbeat=QUIET_HEARTBEAT) as (server, endpoint):
            with raw_dealer(endpoint) as dealer:
                # One exchange first: libzmq answers the first send on a connection with a
                # command of its own, which would hide the bug.
                warm_up = send_raw_request(dealer, "echo", ["warm-up"])
                assert await receive_raw_replies(dealer, {warm_up}, timeout=2.0)
                first = send_raw_request(dealer, "slow", [0.2])
                await wait_until(lambda: server.open_channels == 1, CHILD_START_TIMEOUT)
                asyncio.get_running_loop().call_soon(time.sleep, 0.4)  # freeze the loop
                await asyncio.sleep(0.1)  # due before slow(0.2) ends: we resume first
                second = send_raw_request(dealer, "echo", ["second"])
                time.sleep(0.1)  # blocking: the request reaches the server's socket now
                replies = await receive_raw_replies(dealer, {first, second}, timeout=2.0)
        return replies, first, second

    replies, first, second = run(scenario())
    assert replies == {first: ("OK", [0.2]), second: ("OK", ["second"])}


@contextlib.contextmanager
def raw_router() -> Iterator[tuple[zmq.Socket[bytes], str]]:
    """A plain blocking ROUTER on 127.0.0.1 that the test drives by hand."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield router, f"tcp://127.0.0.1:{port}"
    finally:
        router.close()
        context.term()


async def receive_raw_request(
    router: zmq.Socket[bytes], timeout: float = 2.0
) -> tuple[list[bytes], bytes, str]:
    """The next request (not a heartbeat): (envelope, message id, method name)."""
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        if not router.poll(0):
            await asyncio.sleep(0.01)
            continue
        frames = router.recv_multipart()
        header, name, _ = msgpack.unpackb(frames[-1], raw=False)
        if "response_to" not in header:
            return frames[:-2], header["message_id"], name
    raise AssertionError(f"no request within {timeout}s")


def send_raw_reply(router: zmq.Socket[bytes], envelope: list[bytes], request_id: bytes) -> None:
    header = {"message_id": uuid.uuid4().hex.encode(), "v": 3, "response_to": request_id}
    payload = msgpack.packb([header, "OK", ["reply"]], use_bin_type=True)
    router.send_multipart([*envelope, b"", payload])


def test_aio_client_reads_a_reply_that_arrives_while_it_sends() -> None:
    """The same bug on the client side: a reply that reaches the client's socket just
    before another call sends its request is not read (that call hangs until its timeout
    or some unrelated socket event)."""

    async def scenario() -> bool:
        with raw_router() as (router, endpoint):
            async with Client(endpoint, timeout=10, heartbeat=QUIET_HEARTBEAT) as client:
                warm_up = asyncio.ensure_future(client.call("warm_up"))
                send_raw_reply(router, *(await receive_raw_request(router))[:2])
                await warm_up
                first = asyncio.ensure_future(client.call("first"))
                envelope, first_id, _ = await receive_raw_request(router)

                async def second_call_later() -> None:
                    await asyncio.sleep(0.15)  # due after our own sleep below
                    await client.call("second")

                second = asyncio.ensure_future(second_call_later())
                asyncio.get_running_loop().call_soon(time.sleep, 0.4)  # freeze the loop
                await asyncio.sleep(0.1)  # due before second_call_later: we resume first
                send_raw_reply(router, envelope, first_id)
                time.sleep(0.1)  # blocking: the reply reaches the client's socket now
                done, _ = await asyncio.wait({first}, timeout=1.5)
                for call in (first, second):
                    call.cancel()
                await asyncio.gather(first, second, return_exceptions=True)
        return first in done

    assert run(scenario()), "the reply to the first call was never read"
