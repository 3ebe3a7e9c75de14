"""Interop with the real zerorpc 0.6.3, gevent driver, over real sockets on 127.0.0.1.

(A) zerorpc's client (a child process, tests/interop/peers/zrpc_client.py) against our
green Server, and (D) our green Client against zerorpc's server (a child process,
tests/interop/peers/zrpc_server.py). The asyncio twin of this file is
tests/interop/test_interop_aio.py (B and C); both share tests/interop/interop_support.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from types import ModuleType
from typing import TYPE_CHECKING, Any

import gevent
import pytest

from rpccore import LostRemote, MethodNotFound, RemoteError, TimeoutExpired
from rpccore.green import Client, Server, Stream

if TYPE_CHECKING:
    from conftest import GreenChildProcesses


def _load_interop_support() -> ModuleType:
    """tests/interop/interop_support.py, which this directory cannot import by name."""
    path = Path(__file__).resolve().parents[1] / "interop" / "interop_support.py"
    spec = importlib.util.spec_from_file_location("interop_support", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


support = _load_interop_support()
HEARTBEAT: float = support.HEARTBEAT
QUIET_HEARTBEAT: float = support.QUIET_HEARTBEAT
LOST_REMOTE_BOUND: float = support.LOST_REMOTE_BOUND
STREAM_SIZE: int = support.STREAM_SIZE
CONCURRENT_CALLS: int = support.CONCURRENT_CALLS

pytestmark = pytest.mark.usefixtures("green_test_timeout")


class Interop(support.InteropMethods):
    """The test service on our gevent server: ``slow`` sleeps cooperatively, so a lost
    client's LostRemote interrupts it."""

    def slow(self, seconds):
        gevent.sleep(seconds)
        return seconds

    slow.__doc__ = support.SLOW_DOC


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = monotonic() + timeout
    while not predicate():
        if monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout}s")
        gevent.sleep(0.01)


@contextlib.contextmanager
def our_server(heartbeat: float = HEARTBEAT) -> Iterator[tuple[Server, str]]:
    server = Server(Interop(), heartbeat=heartbeat)
    (endpoint,) = server.bind("tcp://127.0.0.1:*")
    server.start()
    try:
        yield server, endpoint
    finally:
        server.stop()


def run_zerorpc_client(
    children: GreenChildProcesses,
    endpoint: str,
    scenario: str,
    *args: object,
    heartbeat: float = HEARTBEAT,
    timeout: float = 10.0,
    stdin: bytes | None = None,
) -> Any:
    """Run one scenario in a zerorpc client process while the hub keeps serving."""
    proc = children.spawn(
        support.zerorpc_client_argv(
            endpoint, scenario, *args, heartbeat=heartbeat, timeout=timeout
        ),
        name=f"zrpc_client-{scenario}",
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
    )
    try:
        stdout, _ = proc.communicate(stdin, timeout=support.CHILD_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"zerorpc client {scenario} hung; stderr:\n{children.stderr(proc)}")
    assert proc.returncode == 0, f"zerorpc client {scenario} failed:\n{children.stderr(proc)}"
    return support.parse_client_output(stdout)


@dataclass(frozen=True)
class ZerorpcServer:
    """A running zerorpc 0.6.3 server process."""

    endpoint: str
    proc: Any
    children: GreenChildProcesses

    def wait_for_slow_call(self) -> None:
        line = self.children.read_line(self.proc, support.CHILD_START_TIMEOUT)
        assert line == "started slow", line


def start_zerorpc_server(children: GreenChildProcesses, *, heartbeat: float) -> ZerorpcServer:
    proc = children.spawn(support.zerorpc_server_argv(heartbeat=heartbeat), name="zrpc_server")
    endpoint = children.read_line(proc, support.CHILD_START_TIMEOUT)
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    return ZerorpcServer(endpoint, proc, children)


@pytest.fixture
def zerorpc_server(green_child_processes: GreenChildProcesses) -> ZerorpcServer:
    """zerorpc 0.6.3's Server with the test service, heartbeat HEARTBEAT."""
    return start_zerorpc_server(green_child_processes, heartbeat=HEARTBEAT)


@pytest.fixture
def quiet_zerorpc_server(green_child_processes: GreenChildProcesses) -> ZerorpcServer:
    """The same with the default heartbeat, for tests that are not about heartbeats."""
    return start_zerorpc_server(green_child_processes, heartbeat=QUIET_HEARTBEAT)


@contextlib.contextmanager
def our_client(endpoint: str, heartbeat: float, **options: Any) -> Iterator[Client]:
    client = Client(endpoint, heartbeat=heartbeat, **options)
    try:
        yield client
    finally:
        client.close()


# -- (A) zerorpc 0.6.3 client -> our gevent server -----------------------------------


def test_zerorpc_client_to_green_server_every_msgpack_type(
    green_child_processes: GreenChildProcesses,
) -> None:
    with our_server() as (server, endpoint):
        outcome = run_zerorpc_client(
            green_child_processes, endpoint, "echo_values", stdin=support.values_input()
        )
        assert server.open_channels == 0
    assert support.mismatches(outcome["echoed"], support.MSGPACK_VALUES) == {}
    assert support.typed(outcome["get_tuple"]) == support.typed(support.GET_TUPLE_ANSWER)


@pytest.mark.parametrize(
    ("scenario", "name", "message"),
    [
        ("remote_error", "ValueError", "boom ✓ déjà vu"),
        ("unknown_method", "NameError", "no_such_method"),
    ],
)
def test_zerorpc_client_to_green_server_errors(
    green_child_processes: GreenChildProcesses, scenario: str, name: str, message: str
) -> None:
    with our_server() as (server, endpoint):
        outcome = run_zerorpc_client(green_child_processes, endpoint, scenario)
        assert server.open_channels == 0
    support.assert_remote_error_fields(outcome, name, message)


@pytest.mark.parametrize(
    ("method", "args", "items", "error"),
    [
        ("count", [STREAM_SIZE], list(range(STREAM_SIZE)), None),
        ("empty_stream", [], [], None),
        ("fail_midway", [3], [0, 1, 2], ("KeyError", "'boom'")),
    ],
    ids=["10000_items", "empty", "error_midway"],
)
def test_zerorpc_client_to_green_server_streams(
    green_child_processes: GreenChildProcesses,
    method: str,
    args: list[int],
    items: list[int],
    error: tuple[str, str] | None,
) -> None:
    with our_server() as (server, endpoint):
        outcome = run_zerorpc_client(green_child_processes, endpoint, "stream", method, *args)
        assert server.open_channels == 0
    assert outcome["items"] == items
    if error is None:
        assert outcome["error"] is None
    else:
        support.assert_remote_error_fields(outcome["error"], *error)


def test_zerorpc_client_to_green_server_long_call_kept_alive_by_heartbeats(
    green_child_processes: GreenChildProcesses,
) -> None:
    with our_server(heartbeat=HEARTBEAT) as (server, endpoint):
        outcome = run_zerorpc_client(
            green_child_processes,
            endpoint,
            "long_call",
            support.LONG_CALL_SECONDS,
            heartbeat=HEARTBEAT,
        )
        assert server.open_channels == 0
    assert outcome["result"] == support.LONG_CALL_SECONDS
    assert outcome["elapsed"] >= support.LONG_CALL_SECONDS


def test_zerorpc_client_to_green_server_timeout(
    green_child_processes: GreenChildProcesses,
) -> None:
    """zerorpc's client gives up; our server notices when its heartbeats stop."""
    with our_server() as (server, endpoint):
        outcome = run_zerorpc_client(
            green_child_processes,
            endpoint,
            "timeout",
            support.HELD_CALL_SECONDS,
            support.SHORT_TIMEOUT,
        )
        wait_until(lambda: server.open_channels == 0, LOST_REMOTE_BOUND)
    assert outcome["type"] == "TimeoutExpired"
    assert outcome["text"] == "timeout after 0.3s, when calling remote method slow"


def test_zerorpc_client_to_green_server_introspection_has_063_shapes(
    green_child_processes: GreenChildProcesses,
) -> None:
    with our_server() as (server, endpoint):
        outcome = run_zerorpc_client(green_child_processes, endpoint, "introspection")
        assert server.open_channels == 0
    assert outcome["list"] == support.METHOD_NAMES
    assert outcome["name"] == support.SERVICE_NAME
    assert outcome["ping"] == ["pong", support.SERVICE_NAME]
    assert outcome["help"] == support.METHOD_DOCS
    support.assert_remote_error_fields(outcome["help_unknown"], "KeyError", "'nope'")
    assert support.typed(outcome["args"]) == support.typed(support.METHOD_ARGS)
    inspect_answer = outcome["inspect"]
    assert support.typed(support.as_063_inspect(inspect_answer)) == support.typed(
        support.INSPECT_ANSWER_063
    )
    streams = {m for m, entry in inspect_answer["methods"].items() if entry["stream"]}
    assert streams == set(support.STREAM_METHODS)  # our extension key, ignored by 0.6.3


def test_zerorpc_client_to_green_server_1000_concurrent_calls(
    green_child_processes: GreenChildProcesses,
) -> None:
    with our_server(heartbeat=QUIET_HEARTBEAT) as (server, endpoint):
        outcome = run_zerorpc_client(
            green_child_processes,
            endpoint,
            "concurrent",
            CONCURRENT_CALLS,
            heartbeat=QUIET_HEARTBEAT,
            timeout=support.CONCURRENT_CALL_TIMEOUT,
        )
        assert server.open_channels == 0
    assert outcome["results"] == [2 * i for i in range(CONCURRENT_CALLS)]


def test_green_server_drops_channel_of_killed_zerorpc_client(
    green_child_processes: GreenChildProcesses,
) -> None:
    """kill -9 of the zerorpc client mid-call: our server closes the channel (and
    interrupts the method) within 3 heartbeat periods."""
    with our_server(heartbeat=HEARTBEAT) as (server, endpoint):
        proc = green_child_processes.spawn(
            support.zerorpc_client_argv(
                endpoint, "hold_call", support.HELD_CALL_SECONDS, heartbeat=HEARTBEAT
            ),
            name="zrpc_client-hold_call",
        )
        wait_until(lambda: server.open_channels == 1, support.CHILD_START_TIMEOUT)
        gevent.sleep(2 * HEARTBEAT)  # heartbeats flow both ways: the call is alive
        assert server.open_channels == 1
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = monotonic()
        wait_until(lambda: server.open_channels == 0, 2 * LOST_REMOTE_BOUND)
        lost_after = monotonic() - killed_at
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert lost_after <= LOST_REMOTE_BOUND


# -- (D) our gevent client -> zerorpc 0.6.3 server -----------------------------------


def test_green_client_to_zerorpc_server_every_msgpack_type(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    with our_client(quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=10) as client:
        echoed = {name: client.echo(value) for name, value in support.MSGPACK_VALUES.items()}
        answer = client.get_tuple()
        assert client.open_channels == 0
    assert support.mismatches(echoed, support.MSGPACK_VALUES) == {}
    assert support.typed(answer) == support.typed(support.GET_TUPLE_ANSWER)


def test_green_client_to_zerorpc_server_remote_error(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    with our_client(quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=10) as client:
        with pytest.raises(RemoteError) as caught:
            client.fail("boom ✓ déjà vu")
        assert client.open_channels == 0
    assert type(caught.value) is RemoteError
    support.assert_remote_error_fields(caught.value, "ValueError", "boom ✓ déjà vu")


def test_green_client_to_zerorpc_server_unknown_method(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    with our_client(quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=10) as client:
        with pytest.raises(MethodNotFound) as caught:
            client.no_such_method(1, 2)
        assert client.open_channels == 0
    support.assert_remote_error_fields(caught.value, "NameError", "no_such_method")


def test_green_client_to_zerorpc_server_streams_10000_items(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    with our_client(quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=10) as client:
        items = list(client.stream("count", STREAM_SIZE))
        assert client.open_channels == 0
    assert items == list(range(STREAM_SIZE))


def test_green_client_to_zerorpc_server_empty_stream(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    with our_client(quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=10) as client:
        answer = client.call("empty_stream")
        items = list(answer)
        assert client.open_channels == 0
    assert isinstance(answer, Stream)
    assert items == []


def test_green_client_to_zerorpc_server_error_mid_stream(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    items: list[Any] = []
    with our_client(quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=10) as client:
        stream = client.stream("fail_midway", 3)
        with pytest.raises(RemoteError) as caught:
            items.extend(stream)
        assert client.open_channels == 0
    assert items == [0, 1, 2]
    support.assert_remote_error_fields(caught.value, "KeyError", "'boom'")


def test_green_client_to_zerorpc_server_long_call_kept_alive_by_heartbeats(
    zerorpc_server: ZerorpcServer,
) -> None:
    with our_client(zerorpc_server.endpoint, HEARTBEAT, timeout=10) as client:
        assert client.slow(support.LONG_CALL_SECONDS) == support.LONG_CALL_SECONDS
        assert client.open_channels == 0


def test_green_client_to_zerorpc_server_timeout(zerorpc_server: ZerorpcServer) -> None:
    with our_client(zerorpc_server.endpoint, HEARTBEAT) as client:
        started = monotonic()
        with pytest.raises(TimeoutExpired) as caught:
            client.slow(support.HELD_CALL_SECONDS, timeout=support.SHORT_TIMEOUT)
        elapsed = monotonic() - started
        assert client.open_channels == 0
    assert str(caught.value) == "timeout after 0.3s, when calling remote method slow"
    assert support.SHORT_TIMEOUT <= elapsed < support.SHORT_TIMEOUT + 1.0


def test_green_client_to_zerorpc_server_introspection(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    """0.6.3 on Python 3.11 fails _zerorpc_inspect and _zerorpc_args; describe() falls
    back to _zerorpc_list + _zerorpc_help."""
    with our_client(quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=10) as client:
        assert client.call("_zerorpc_list") == support.METHOD_NAMES
        assert client.call("_zerorpc_name") == support.SERVICE_NAME
        assert client.call("_zerorpc_ping") == ["pong", support.SERVICE_NAME]
        docs = {m: client.call("_zerorpc_help", m) for m in support.METHOD_NAMES}
        assert docs == support.METHOD_DOCS
        with pytest.raises(RemoteError) as caught:
            client.call("_zerorpc_help", "nope")
        support.assert_remote_error_fields(caught.value, "KeyError", "'nope'")
        with pytest.raises(RemoteError) as caught:
            client.call("_zerorpc_inspect")
        support.assert_remote_error_fields(caught.value, *support.NO_GETARGSPEC)
        with pytest.raises(RemoteError) as caught:
            client.call("_zerorpc_args", "add")
        support.assert_remote_error_fields(caught.value, *support.NO_GETARGSPEC)
        assert client.describe() == support.DESCRIBE_FALLBACK
        assert client.open_channels == 0


def test_green_client_to_zerorpc_server_1000_concurrent_calls(
    quiet_zerorpc_server: ZerorpcServer,
) -> None:
    with our_client(
        quiet_zerorpc_server.endpoint, QUIET_HEARTBEAT, timeout=support.CONCURRENT_CALL_TIMEOUT
    ) as client:
        calls = [client.add(i, i, async_=True) for i in range(CONCURRENT_CALLS)]
        results = [call.get() for call in calls]
        assert client.open_channels == 0
    assert results == [2 * i for i in range(CONCURRENT_CALLS)]


def test_green_client_lost_remote_after_zerorpc_server_killed(
    zerorpc_server: ZerorpcServer,
) -> None:
    """kill -9 of the zerorpc server mid-call: LostRemote within 3 heartbeat periods."""
    with our_client(zerorpc_server.endpoint, HEARTBEAT, timeout=10) as client:
        call = client.call("slow", support.HELD_CALL_SECONDS, async_=True)
        zerorpc_server.wait_for_slow_call()
        gevent.sleep(2 * HEARTBEAT)  # heartbeats flow both ways: the call is alive
        assert not call.ready()
        os.kill(zerorpc_server.proc.pid, signal.SIGKILL)
        killed_at = monotonic()
        with pytest.raises(LostRemote) as caught:
            call.get()
        lost_after = monotonic() - killed_at
        assert client.open_channels == 0
    assert lost_after <= LOST_REMOTE_BOUND
    assert str(caught.value) == "Lost remote after 0.4s heartbeat"
