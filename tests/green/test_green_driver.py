"""The gevent driver end to end over loopback TCP: calls, ``async_``, streams, errors,
timeouts, abandoned streams, ``describe()``, the introspection built-ins, trace context (also
with ``threaded=True``) and heartbeats while a handler blocks the CPU.

Everything this module needs is defined here (the directory's conftest belongs to the interop
tests). Each test runs under a gevent.Timeout and must close what it opens.
"""

from __future__ import annotations

import contextvars
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import gevent.event
import gevent.subprocess
import pytest
import zmq
import zmq.green
from green_support import HB, connected, eventually, serving

from rpccore import (
    DEFAULT_WINDOW,
    CallFailed,
    ClientConnection,
    LostRemote,
    MethodNotFound,
    RemoteError,
    Reply,
    TimeoutExpired,
    TraceContext,
    current_trace,
)
from rpccore._trace import outgoing_trace_header
from rpccore.green import Client, Stream, stream

SLACK = 1.0  # seconds added to every time bound, for a loaded two-core machine
LOST_BOUND = 3 * HB + SLACK  # a silent client is lost within three heartbeat periods
TEST_TIMEOUT = 30.0
ENDLESS = 100_000


# -- fixtures and helpers of this module ----------------------------------------------------


@pytest.fixture(autouse=True)
def bounded_and_tidy() -> Iterator[None]:
    """Bound every test in time, and check it closed every socket it opened."""
    context = zmq.green.Context.instance()
    before = set(context._sockets)
    with gevent.Timeout(TEST_TIMEOUT):
        yield
    left = [sock for sock in context._sockets if sock not in before and not sock.closed]
    assert not left, f"{len(left)} socket(s) left open by the test"


# -- the service -------------------------------------------------------------------------------


class Calc:
    """A calculator for the tests."""

    def __init__(self) -> None:
        self.started = 0
        self.killed = 0
        self.produced = 0
        self.closed = 0

    def add(self, a: int, b: int) -> int:
        """Add two numbers.

        Returns a + b.
        """
        return a + b

    def echo(self, value: Any) -> Any:
        return value

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def nap(self, seconds: float) -> float:
        self.started += 1
        try:
            gevent.sleep(seconds)
        except BaseException:
            self.killed += 1  # LostRemote, injected when the client went silent
            raise
        return seconds

    @stream
    def listed(self, n: int) -> list[int]:
        return list(range(n))

    def generated(self, n: int) -> Iterator[int]:
        yield from range(n)

    def failing(self, good: int) -> Iterator[int]:
        yield from range(good)
        raise ValueError(f"failed after {good}")

    def endless(self) -> Iterator[int]:
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


PUBLIC = sorted(name for name in dir(Calc) if not name.startswith("_"))

# -- calls -------------------------------------------------------------------------------------

VALUES = [
    (None, None),
    (True, True),
    (-(2**63), -(2**63)),
    (2**64 - 1, 2**64 - 1),
    (1.5, 1.5),
    ("héllo ✓", "héllo ✓"),
    (b"\x00\xff", b"\x00\xff"),
    ((1, (2, 3)), [1, [2, 3]]),
    ({"k": "v", "n": [1, None]}, {"k": "v", "n": [1, None]}),
]


@pytest.mark.parametrize(("value", "expected"), VALUES)
def test_echo_round_trips_msgpack_values(value: Any, expected: Any) -> None:
    with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        assert client.call("echo", value) == expected


@pytest.mark.parametrize("threaded", [False, True])
def test_call_attribute_sugar_and_async(threaded: bool) -> None:
    with serving(Calc(), threaded=threaded) as (server, endpoint), connected(endpoint) as client:
        assert client.call("add", 1, 2) == 3
        assert client.add(2, 3) == 5  # attribute sugar
        future = client.call("add", 20, 22, async_=True)
        assert isinstance(future, gevent.Greenlet | gevent.event.AsyncResult)
        assert future.get(timeout=5) == 42
        assert future.ready()
        assert future.successful()
        futures = [client.add(i, i, async_=True) for i in range(50)]
        assert [f.get(timeout=5) for f in futures] == [2 * i for i in range(50)]
        assert client.open_channels == 0
        eventually(lambda: server.open_channels == 0, SLACK, "server channels closed")
    with pytest.raises(AttributeError):
        client._private  # noqa: B018 -- names starting with _ are never remote calls


def test_unknown_method_raises_method_not_found() -> None:
    with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        with pytest.raises(MethodNotFound) as info:
            client.call("nope", 1)
        assert (info.value.name, info.value.message) == ("NameError", "nope")
        with pytest.raises(MethodNotFound):
            client.nope()
        with pytest.raises(MethodNotFound):
            client.nope(async_=True).get(timeout=5)


@pytest.mark.parametrize("threaded", [False, True])
def test_remote_exception_raises_remote_error(threaded: bool) -> None:
    with serving(Calc(), threaded=threaded) as (_, endpoint), connected(endpoint) as client:
        with pytest.raises(RemoteError) as info:
            client.fail("boom")
        error = info.value
        assert type(error) is RemoteError
        assert (error.name, error.message) == ("ValueError", "boom")
        assert error.traceback is not None
        assert error.traceback.startswith("Traceback (most recent call last):")
        assert error.traceback.endswith("ValueError: boom\n")
        with pytest.raises(RemoteError) as info:
            client.add(1)
        assert info.value.name == "TypeError"
        assert "missing 1 required positional argument" in info.value.message
        assert client.add(1, 1) == 2


# -- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3, 3 * DEFAULT_WINDOW])  # 0: the empty stream
@pytest.mark.parametrize("method", ["listed", "generated"])
@pytest.mark.parametrize("threaded", [False, True])
def test_stream_methods(threaded: bool, method: str, n: int) -> None:
    with serving(Calc(), threaded=threaded) as (server, endpoint), connected(endpoint) as client:
        assert list(client.stream(method, n)) == list(range(n))
        result = client.call(method, n)
        assert isinstance(result, Stream)
        with result:
            assert list(result) == list(range(n))
        assert client.open_channels == 0
        eventually(lambda: server.open_channels == 0, SLACK, "server channels closed")


def test_stream_of_a_plain_method_is_a_type_error() -> None:
    with (
        serving(Calc()) as (_, endpoint),
        connected(endpoint) as client,
        pytest.raises(TypeError, match="answered a value"),
    ):
        client.stream("add", 1, 2)


# good=1: the error comes when the stream has used its credit (the request's implicit one)
# and must wait for the client's grant like any data event (it once hung the client).
@pytest.mark.parametrize("good", [0, 1, 3])
def test_error_mid_stream(good: int) -> None:
    got: list[Any] = []
    with serving(Calc()) as (_, endpoint), connected(endpoint) as client:

        def consume() -> None:
            got.extend(client.stream("failing", good))

        with pytest.raises(RemoteError) as info, gevent.Timeout(5 * HB + SLACK):
            consume()
        assert got == list(range(good))
        assert (info.value.name, info.value.message) == ("ValueError", f"failed after {good}")
        assert client.open_channels == 0


@pytest.mark.parametrize("threaded", [False, True])
def test_abandoned_stream_ends_on_both_sides(threaded: bool) -> None:
    calc = Calc()
    with serving(calc, threaded=threaded) as (server, endpoint), connected(endpoint) as client:
        items = client.stream("endless")
        assert [next(items) for _ in range(3)] == [0, 1, 2]
        items.close()
        assert client.open_channels == 0  # the client forgets the call at once
        # Nothing is sent: the server notices that the channel's heartbeats stopped.
        eventually(lambda: server.open_channels == 0, LOST_BOUND, "server channel closed")
        eventually(lambda: calc.closed == 1, SLACK, "the server closed the generator")
        assert calc.produced < 3 * DEFAULT_WINDOW  # back-pressure: far from ENDLESS
        assert client.add(1, 2) == 3


# -- timeouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("async_", [False, True])
def test_timeout_raises_and_forgets_the_call(async_: bool) -> None:
    calc = Calc()
    with serving(calc) as (server, endpoint), connected(endpoint) as client:

        def call() -> Any:
            if async_:
                return client.call("nap", 2.0, timeout=0.1, async_=True).get(timeout=5)
            return client.call("nap", 2.0, timeout=0.1)

        with pytest.raises(TimeoutExpired, match=r"timeout after 0\.1s.*nap"):
            call()
        assert client.open_channels == 0
        assert client.add(1, 1) == 2
        eventually(lambda: server.open_channels == 0, LOST_BOUND, "server channel closed")
        eventually(lambda: calc.killed == 1, SLACK, "the handler was stopped")


def test_killing_the_calling_greenlet_abandons_the_call() -> None:
    calc = Calc()
    with serving(calc) as (server, endpoint), connected(endpoint) as client:
        caller = gevent.spawn(client.call, "nap", 30.0)
        eventually(lambda: calc.started == 1, SLACK, "the call reached the server")
        caller.kill(block=True)
        assert client.open_channels == 0
        eventually(lambda: server.open_channels == 0, LOST_BOUND, "server channel closed")
        eventually(lambda: calc.killed == 1, SLACK, "the handler was stopped")


# -- introspection ------------------------------------------------------------------------------

INTEGER = {"type": "integer"}


def test_describe_answers_with_our_extension_keys() -> None:
    with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        description = client.describe()
    assert description["introspection"] == "inspect"
    assert description["name"] == "Calc"
    methods = description["methods"]
    assert sorted(methods) == PUBLIC
    streams = {"listed", "generated", "failing", "endless"}
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


BUILTINS = [
    ("_zerorpc_name", [], "Calc"),
    ("_zerorpc_ping", [], ["pong", "Calc"]),
    ("_zerorpc_list", [], PUBLIC),
    ("_zerorpc_help", ["add"], "Add two numbers.\n\nReturns a + b."),
    ("_zerorpc_args", ["add"], [["self", "a", "b"], None, None, None]),
    ("_zerorpc_args", ["modern"], [["self", "a", "b"], "rest", "options", ["x"]]),
    ("_zerorpc_args", ["keyword_only"], [["self"], None, "options", None]),
]


@pytest.mark.parametrize(("method", "args", "expected"), BUILTINS)
def test_introspection_builtins(method: str, args: list[Any], expected: Any) -> None:
    with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        assert client.call(method, *args) == expected


def test_zerorpc_inspect_works_on_modern_signatures() -> None:
    with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        answer = client.call("_zerorpc_inspect")
    assert answer["name"] == "Calc"
    assert sorted(answer["methods"]) == PUBLIC
    assert answer["methods"]["keyword_only"]["args"] == [{"name": "self", "kind": "self"}]
    assert answer["methods"]["listed"]["stream"] is True


# -- trace context -----------------------------------------------------------------------------

Span = list[str | None] | None


def span() -> Span:
    ctx = current_trace.get()
    return None if ctx is None else [ctx.trace_id, ctx.span_id, ctx.parent_span_id]


def sync_call(endpoint: str, method: str, *args: Any) -> Any:
    """A blocking call over plain (not green) pyzmq, for code running in a real thread: the
    trace of the calling context goes into the request, like every driver does."""
    conn = ClientConnection(heartbeat=None)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        conn.start_call(
            method, args, now=time.monotonic(), timeout=5.0, header=outgoing_trace_header()
        )
        for frames in conn.data_to_send():
            sock.send_multipart(frames)
        deadline = time.monotonic() + 5.0
        while (left := deadline - time.monotonic()) > 0:
            if sock.poll(int(left * 1000) + 1):
                event = conn.receive(sock.recv_multipart(), time.monotonic())
                if isinstance(event, Reply):
                    return event.value
                if isinstance(event, CallFailed):
                    raise event.error
        raise TimeoutExpired(f"sync call of {method}")
    finally:
        sock.close()
        context.term()


class Backend:
    def whoami(self) -> Span:
        return span()

    def whoami_generated(self) -> Iterator[Span]:
        for _ in range(3):
            gevent.sleep(0)
            yield span()


class Front:
    def __init__(self, backend: Client, backend_endpoint: str) -> None:
        self._backend = backend
        self._endpoint = backend_endpoint

    def relay(self) -> dict[str, Any]:
        return {"a": span(), "b": self._backend.whoami()}

    def relay_async(self) -> dict[str, Any]:
        return {"a": span(), "b": self._backend.whoami(async_=True).get(timeout=5)}

    def relay_stream(self) -> dict[str, Any]:
        return {"a": span(), "b": list(self._backend.stream("whoami_generated"))[-1]}

    def relay_from_thread(self) -> dict[str, Any]:
        # With threaded=True this runs in a real thread, where green sockets cannot be used.
        return {"a": span(), "b": sync_call(self._endpoint, "whoami")}


CHAIN = [
    ("relay", False),
    ("relay_async", False),
    ("relay_stream", False),
    ("relay_from_thread", True),
]


@pytest.mark.parametrize(("method", "threaded"), CHAIN)
def test_trace_follows_the_call_chain(method: str, threaded: bool) -> None:
    with serving(Backend()) as (_, b_endpoint), connected(b_endpoint) as to_b:
        front = Front(to_b, b_endpoint)
        with serving(front, threaded=threaded) as (_, a_endpoint), connected(a_endpoint) as to_a:
            root = TraceContext.new_root()
            token = current_trace.set(root)
            try:
                answer = to_a.call(method)
                assert current_trace.get() is root
            finally:
                current_trace.reset(token)
            assert to_a.call(method) == {"a": None, "b": None}  # untraced stays untraced
    a, b = answer["a"], answer["b"]
    assert a is not None
    assert b is not None
    assert a[0] == b[0] == root.trace_id
    assert a[2] == root.span_id  # A's span is a child of the caller's
    assert b[2] == a[1]  # B's parent span is A's span
    assert len({root.span_id, a[1], b[1]}) == 3


@pytest.mark.parametrize("threaded", [False, True])
def test_handler_sees_its_request_trace(threaded: bool) -> None:
    root = TraceContext.new_root()
    with serving(Backend(), threaded=threaded) as (_, endpoint), connected(endpoint) as client:
        token = current_trace.set(root)
        try:
            direct = client.whoami()
            streamed = list(client.stream("whoami_generated"))
            spawned = client.whoami(async_=True).get(timeout=5)  # async_ copies the context
        finally:
            current_trace.reset(token)
        assert client.whoami() is None
        # A greenlet the caller spawns itself starts with an empty context: no trace.
        assert gevent.spawn(client.whoami).get(timeout=5) is None
        assert gevent.spawn(contextvars.copy_context().run, client.whoami).get(timeout=5) is None
    for seen in [direct, spawned, *streamed]:
        assert seen is not None
        assert seen[0] == root.trace_id
        assert seen[2] == root.span_id


# -- long handlers and heartbeats ---------------------------------------------------------------

BUSY = 1.2  # seconds of pure-Python CPU work: six heartbeat periods
assert BUSY > 3 * HB

WORKER = r"""
import sys, time
import gevent, gevent.select
from rpccore.green import Server

class Worker:
    def busy(self, seconds):
        # Pure Python: gevent cannot switch, only the interpreter's GIL switches happen.
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            n += 1
        return n

server = Server(Worker(), heartbeat=float(sys.argv[1]), threaded=sys.argv[2] == "threaded")
print(server.bind("tcp://127.0.0.1:*")[0], flush=True)
server.start()
gevent.select.select([sys.stdin], [], [])  # until the test closes our stdin
server.stop()
"""


@contextmanager
def worker_process(mode: str) -> Iterator[str]:
    """A green server in another process: in this one, a blocked hub would stall the
    client too, and the heartbeat's grace for our own stalls would hide the failure."""
    proc = gevent.subprocess.Popen(
        [sys.executable, "-c", WORKER, str(HB), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        with gevent.Timeout(20.0, AssertionError("the worker process did not start")):
            endpoint = proc.stdout.readline().decode().strip()
        assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
        yield endpoint
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5.0)
        except gevent.subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_threaded_server_keeps_heartbeating_through_a_cpu_bound_method() -> None:
    with worker_process("threaded") as endpoint, connected(endpoint) as client:
        start = time.monotonic()
        assert client.call("busy", BUSY) > 0  # LostRemote if the heartbeats stopped
        assert time.monotonic() - start >= BUSY


def test_plain_server_blocked_by_a_cpu_bound_method_is_lost() -> None:
    """Why ``threaded=True`` exists: without it the busy method stops the hub, the server
    stops heartbeating, and its client gives up on it (zerorpc's most reported problem)."""
    with worker_process("plain") as endpoint, connected(endpoint) as client:
        start = time.monotonic()
        with pytest.raises(LostRemote, match=r"Lost remote after 0\.4s heartbeat"):
            client.call("busy", BUSY)
        assert time.monotonic() - start < BUSY  # given up while the method still ran
        assert client.open_channels == 0
        gevent.sleep(BUSY)  # let the worker finish before it is stopped
        assert client.call("busy", 0.0) >= 0  # it serves again once the method is done
