"""One-way events on the gevent driver: Publisher/Subscriber and Pusher/Puller, between
ourselves and against the real zerorpc 0.6.3 in both directions (child processes running
tests/interop/peers/zrpc_oneway.py, killed by PID at teardown, see conftest.py).

PUB/SUB loses what is published before a subscription has propagated (the "slow
joiner"), so PUB/SUB tests publish repeatedly until the subscriber got something, within
bounds on both the count and the time.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from types import ModuleType
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import pytest
import zmq

from rpccore import LocalProtocolError, RPCError, TraceContext, current_trace
from rpccore.green import Publisher, Puller, Pusher, Subscriber

if TYPE_CHECKING:
    from conftest import GreenChildProcesses

pytestmark = pytest.mark.usefixtures("green_test_timeout")

LOOPBACK = "tcp://127.0.0.1:*"
# How long a PUB/SUB test keeps publishing, at most, before the subscriber must have one.
JOIN_TRIES = 200
JOIN_INTERVAL = 0.02
JOIN_WITHIN = 8.0
WITHIN = 10.0  # bound on waiting for any delivery


def _interop_support() -> ModuleType:
    """tests/interop/interop_support.py, which this directory cannot import by name."""
    module = sys.modules.get("interop_support")
    if module is None:
        path = Path(__file__).resolve().parents[1] / "interop" / "interop_support.py"
        spec = importlib.util.spec_from_file_location("interop_support", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


support = _interop_support()
ONEWAY_SCRIPT = support.PEERS_DIR / "zrpc_oneway.py"


class Recorder:
    """Event handlers that remember what they got, the trace context and the thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.traces: list[TraceContext | None] = []
        self.threads: list[int] = []

    def _record(self, method: str, args: tuple[Any, ...]) -> None:
        self.events.append((method, args))
        self.traces.append(current_trace.get())
        self.threads.append(threading.get_ident())

    def tick(self, *args: Any) -> None:
        self._record("tick", args)

    def add(self, *args: Any) -> None:
        self._record("add", args)

    def values(self, *args: Any) -> None:
        self._record("values", args)

    def nap(self, seconds: float, label: str) -> None:
        gevent.sleep(seconds)
        self._record("nap", (label,))

    def fail(self, message: str) -> None:
        raise ValueError(message)


def eventually(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = monotonic() + within
    while not predicate():
        if monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        gevent.sleep(0.01)


def publish_until(pub: Publisher, done: Callable[[], bool], method: str, *args: Any) -> int:
    """Publish ``method(*args)`` until ``done()``; returns how many were published."""
    deadline = monotonic() + JOIN_WITHIN
    for sent in range(1, JOIN_TRIES + 1):
        pub.emit(method, *args)
        gevent.sleep(JOIN_INTERVAL)
        if done():
            return sent
        if monotonic() > deadline:
            break
    raise AssertionError(f"no subscriber got {method} within {JOIN_WITHIN}s")


def inproc() -> str:
    return f"inproc://oneway-{uuid.uuid4().hex}"


# -- between ourselves -------------------------------------------------------------------


def test_a_subscriber_gets_published_events_over_tcp() -> None:
    handlers = Recorder()
    sub = Subscriber(handlers)
    pub = Publisher()
    try:
        (endpoint,) = sub.bind(LOOPBACK)
        assert endpoint.startswith("tcp://127.0.0.1:")
        sub.start()
        assert pub.connect(endpoint) == [endpoint]
        publish_until(pub, lambda: sub.handled > 0, "tick", 1, "a", b"\x00")
    finally:
        pub.close()
        sub.stop()
    assert handlers.events[0] == ("tick", (1, "a", b"\x00"))
    assert sub.problems == {}


def test_a_publisher_that_binds_reaches_several_subscribers_over_inproc() -> None:
    endpoint = inproc()
    recorders = [Recorder(), Recorder()]
    subs = [Subscriber(r) for r in recorders]
    with Publisher() as pub:
        assert pub.bind(endpoint) == [endpoint]
        for sub in subs:
            sub.connect(endpoint)
            sub.start()
        try:
            publish_until(pub, lambda: all(s.handled for s in subs), "tick", "hello")
        finally:
            for sub in subs:
                sub.stop()
    for recorder in recorders:
        assert recorder.events[0] == ("tick", ("hello",))


def test_run_blocks_until_stop() -> None:
    handlers = Recorder()
    sub = Subscriber(handlers)
    endpoint = inproc()
    sub.bind(endpoint)
    runner = gevent.spawn(sub.run)
    pub = Publisher()
    try:
        pub.connect(endpoint)
        publish_until(pub, lambda: sub.handled > 0, "tick")
        assert not runner.ready()
        sub.stop()
        runner.get(timeout=WITHIN)
    finally:
        pub.close()
        sub.stop()


def test_a_publisher_without_subscribers_drops_events_and_never_blocks() -> None:
    with Publisher() as pub:
        pub.bind(LOOPBACK)
        for i in range(5000):  # well over the high-water mark
            pub.tick(i)
        assert pub.queued == 0


def test_a_pusher_queues_until_a_puller_connects_and_keeps_the_order() -> None:
    pusher = Pusher()
    handlers = Recorder()
    puller = Puller(handlers)
    count = 3000  # over the high-water mark of both sockets
    try:
        for i in range(5):
            pusher.add(i, i)  # nobody to push to: they wait, emit returns at once
        assert pusher.queued == 5
        (endpoint,) = puller.bind(LOOPBACK)
        puller.start()
        pusher.connect(endpoint)
        eventually(lambda: puller.handled == 5, WITHIN, "5 queued events")
        assert pusher.queued == 0
        for i in range(count):
            pusher.emit("tick", i)
        eventually(lambda: puller.handled == 5 + count, WITHIN, "all events")
    finally:
        pusher.close()
        puller.stop()
    assert handlers.events == [("add", (i, i)) for i in range(5)] + [
        ("tick", (i,)) for i in range(count)
    ]
    assert puller.problems == {}


def test_each_event_runs_in_its_own_greenlet() -> None:
    handlers = Recorder()
    puller = Puller(handlers)
    endpoint = inproc()
    puller.bind(endpoint)
    puller.start()
    try:
        with Pusher() as pusher:
            pusher.connect(endpoint)
            pusher.nap(0.3, "slow")
            pusher.nap(0, "fast")
            eventually(lambda: puller.handled == 2, WITHIN, "both naps")
    finally:
        puller.stop()
    assert handlers.events == [("nap", ("fast",)), ("nap", ("slow",))]


def test_threaded_handlers_run_in_the_thread_pool_with_the_trace_context() -> None:
    handlers = Recorder()
    puller = Puller(handlers, threaded=True)
    endpoint = inproc()
    puller.bind(endpoint)
    puller.start()
    parent = TraceContext.new_root()

    def emit_traced(pusher: Pusher) -> None:
        current_trace.set(parent)
        pusher.tick("traced")

    try:
        with Pusher() as pusher:
            pusher.connect(endpoint)
            gevent.spawn(emit_traced, pusher).get(timeout=WITHIN)
            eventually(lambda: puller.handled == 1, WITHIN, "the threaded tick")
    finally:
        puller.stop()
    assert handlers.threads[0] != threading.get_ident()
    ctx = handlers.traces[0]
    assert ctx is not None
    assert ctx.trace_id == parent.trace_id
    assert ctx.parent_span_id == parent.span_id


def test_the_events_trace_context_is_current_in_greenlet_handlers() -> None:
    handlers = Recorder()
    puller = Puller(handlers)
    endpoint = inproc()
    puller.bind(endpoint)
    puller.start()
    parent = TraceContext.new_root()

    def emit_traced(pusher: Pusher) -> None:
        current_trace.set(parent)
        pusher.tick("traced")

    try:
        with Pusher() as pusher:
            pusher.connect(endpoint)
            pusher.tick("untraced")
            gevent.spawn(emit_traced, pusher).get(timeout=WITHIN)
            eventually(lambda: puller.handled == 2, WITHIN, "two ticks")
    finally:
        puller.stop()
    traces = dict(zip((args[0] for _, args in handlers.events), handlers.traces, strict=True))
    assert traces["untraced"] is None
    ctx = traces["traced"]
    assert ctx is not None
    assert (ctx.trace_id, ctx.parent_span_id) == (parent.trace_id, parent.span_id)
    assert current_trace.get() is None


def test_unknown_methods_and_failures_are_counted_and_never_stop_the_receiver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handlers = Recorder()
    puller = Puller(handlers)
    endpoint = inproc()
    puller.bind(endpoint)
    puller.start()
    try:
        with Pusher() as pusher:
            pusher.connect(endpoint)
            for _ in range(3):
                pusher.nope(1)
                pusher.fail("bad")
                pusher.emit("_record", "x", ())
                pusher.emit("stop")
            pusher.tick("still here")
            eventually(lambda: puller.handled == 4, WITHIN, "the failures and the tick")
    finally:
        puller.stop()
    assert handlers.events == [("tick", ("still here",))]
    assert puller.problems == {"unknown method": 9, "ValueError in fail": 3}
    assert len([r for r in caplog.records if r.name == "rpccore"]) == 2


def test_malformed_frames_are_dropped_and_counted() -> None:
    handlers = Recorder()
    puller = Puller(handlers)
    (endpoint,) = puller.bind(LOOPBACK)
    puller.start()
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        raw.connect(endpoint)
        raw.send(b"\x93")
        raw.send_multipart([b"not", b"msgpack\xc1"])
        raw.send(b"\x93\x80\xc4\x04tick\x90")  # the name is bin
        raw.send(b"\x93\x80\xa4tick\xc0")  # args are nil
        raw.send(b"\x93\x80\xa4tick\x91\x07")  # fine: tick(7)
        eventually(lambda: puller.handled == 1, WITHIN, "tick(7)")
    finally:
        raw.close()
        puller.stop()
    assert handlers.events == [("tick", (7,))]
    assert puller.problems == {"undecodable": 2, "bad method name": 1, "bad args": 1}


def test_stop_kills_running_handlers() -> None:
    started = gevent.event.Event()
    killed = gevent.event.Event()

    class Sleeper:
        def sleep(self) -> None:
            started.set()
            try:
                gevent.sleep(3600)
            except gevent.GreenletExit:
                killed.set()
                raise

    puller = Puller(Sleeper())
    endpoint = inproc()
    puller.bind(endpoint)
    runner = gevent.spawn(puller.run)
    try:
        with Pusher() as pusher:
            pusher.connect(endpoint)
            pusher.sleep()
            assert started.wait(WITHIN)
            puller.stop()
            runner.get(timeout=WITHIN)
            assert killed.wait(WITHIN)
    finally:
        puller.stop()  # twice is harmless
    assert puller.handled == 0
    assert "closed=True" in repr(puller)


def test_senders_refuse_misuse() -> None:
    pusher = Pusher()
    try:
        with pytest.raises(AttributeError):
            pusher._not_an_event  # noqa: B018
        with pytest.raises(LocalProtocolError):
            pusher.emit("add", {1, 2})
        assert pusher.queued == 0
        assert "Pusher" in repr(pusher)
    finally:
        pusher.close()
    with pytest.raises(RPCError, match="closed"):
        pusher.add(1, 2)
    with Publisher() as pub:
        assert pub.bind([LOOPBACK, inproc()])[1].startswith("inproc://")
    with pytest.raises(RPCError):
        pub.tick()


# -- against zerorpc 0.6.3 ---------------------------------------------------------------


def oneway_argv(role: str, *options: object) -> list[str]:
    return [support.PYTHON, "-u", str(ONEWAY_SCRIPT), role, *map(str, options)]


def start_bound(
    children: GreenChildProcesses, role: str, *options: object, stdin: bytes = b""
) -> tuple[Any, str]:
    """A zerorpc child that binds; returns (process, endpoint)."""
    proc = children.spawn(
        oneway_argv(role, "--bind", *options),
        name=f"zrpc_{role}",
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
    )
    if stdin:
        proc.stdin.write(stdin)
        proc.stdin.close()
    endpoint = children.read_line(proc, support.CHILD_START_TIMEOUT)
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    return proc, endpoint


def received(line: str) -> tuple[str, Any]:
    event = json.loads(line)
    return event["method"], ast.literal_eval(event["args"])


@pytest.fixture
def children(green_child_processes: GreenChildProcesses) -> GreenChildProcesses:
    return green_child_processes


def test_zerorpc_publisher_to_our_subscriber(children: GreenChildProcesses) -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    _, endpoint = start_bound(
        children,
        "publisher",
        *("--count", 0, "--interval", JOIN_INTERVAL, "--method", "values", "--values"),
        *("--trace-id", trace_id, "--span-id", span_id),
        stdin=support.values_input(),
    )
    handlers = Recorder()
    sub = Subscriber(handlers)
    try:
        sub.connect(endpoint)
        sub.start()
        eventually(lambda: sub.handled > 0, JOIN_WITHIN, "an event from zerorpc")
    finally:
        sub.stop()
    method, (index, values) = handlers.events[0]
    assert method == "values"
    assert isinstance(index, int)
    assert support.mismatches(values, support.MSGPACK_VALUES) == {}
    assert handlers.traces[0] == TraceContext(trace_id, span_id)
    assert sub.problems == {}


def test_our_publisher_to_zerorpc_subscriber(children: GreenChildProcesses) -> None:
    proc, endpoint = start_bound(children, "subscriber", "--count", 1)
    first_line = gevent.spawn(children.read_line, proc, JOIN_WITHIN + support.CHILD_START_TIMEOUT)
    with Publisher() as pub:
        pub.connect(endpoint)
        publish_until(pub, first_line.ready, "values", 7, support.MSGPACK_VALUES)
    method, (index, values) = received(first_line.get())
    assert (method, index) == ("values", 7)
    assert support.mismatches(values, support.MSGPACK_VALUES) == {}


def test_zerorpc_pusher_to_our_puller(children: GreenChildProcesses) -> None:
    handlers = Recorder()
    puller = Puller(handlers)
    try:
        (endpoint,) = puller.bind(LOOPBACK)
        puller.start()
        children.spawn(
            oneway_argv("pusher", "--connect", endpoint, "--count", 100, "--method", "add"),
            name="zrpc_pusher",
        )
        eventually(lambda: puller.handled == 100, WITHIN, "100 events from zerorpc")
    finally:
        puller.stop()
    assert handlers.events == [("add", (i,)) for i in range(100)]
    assert handlers.traces == [None] * 100
    assert puller.problems == {}


def test_our_pusher_to_zerorpc_puller(children: GreenChildProcesses) -> None:
    proc, endpoint = start_bound(children, "puller", "--count", 100)
    with Pusher() as pusher:
        for i in range(50):
            pusher.add(i, b"\xff", {"k": [i]})  # queued: not connected yet
        pusher.connect(endpoint)
        for i in range(50, 100):
            pusher.add(i, b"\xff", {"k": [i]})
        lines = [children.read_line(proc, WITHIN) for _ in range(100)]
    assert [received(line) for line in lines] == [
        ("add", [i, b"\xff", {"k": [i]}]) for i in range(100)
    ]
