"""One-way events on the asyncio driver: Publisher/Subscriber and Pusher/Puller, between
ourselves and against the real zerorpc 0.6.3 in both directions (child processes running
tests/interop/peers/zrpc_oneway.py, killed by PID at teardown).

PUB/SUB loses what is published before a subscription has propagated (the "slow
joiner"), so PUB/SUB tests publish repeatedly until the subscriber got something, within
bounds on both the count and the time.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import monotonic
from types import ModuleType
from typing import Any

import pytest
import zmq
from aio_support import LOOPBACK, eventually, run_async

from rpccore import LocalProtocolError, RPCError, TraceContext, current_trace
from rpccore.aio import Publisher, Puller, Pusher, Subscriber

# How long a PUB/SUB test keeps publishing, at most, before the subscriber must have one.
JOIN_TRIES = 200
JOIN_INTERVAL = 0.02
JOIN_WITHIN = 8.0
WITHIN = 10.0  # bound on waiting for any delivery


def _interop_support() -> ModuleType:
    """tests/interop/interop_support.py, shared with the interop suites (not importable
    by name from this directory unless tests/interop was collected first)."""
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

    async def atick(self, *args: Any) -> None:
        await asyncio.sleep(0)
        self._record("atick", args)

    def fail(self, message: str) -> None:
        raise ValueError(message)

    async def afail(self) -> None:
        raise KeyError("async")


async def publish_until(pub: Publisher, done: Callable[[], bool], method: str, *args: Any) -> int:
    """Publish ``method(*args)`` until ``done()``; returns how many were published."""
    deadline = monotonic() + JOIN_WITHIN
    for sent in range(1, JOIN_TRIES + 1):
        pub.emit(method, *args)
        await asyncio.sleep(JOIN_INTERVAL)
        if done():
            return sent
        if monotonic() > deadline:
            break
    raise AssertionError(f"no subscriber got {method} within {JOIN_WITHIN}s")


def inproc() -> str:
    return f"inproc://oneway-{uuid.uuid4().hex}"


# -- between ourselves -------------------------------------------------------------------


@run_async
async def test_a_subscriber_gets_published_events_over_tcp() -> None:
    handlers = Recorder()
    async with Subscriber(handlers) as sub:
        (endpoint,) = sub.bind(LOOPBACK)
        assert endpoint.startswith("tcp://127.0.0.1:")
        pub = Publisher()
        try:
            assert pub.connect(endpoint) == [endpoint]
            await publish_until(pub, lambda: sub.handled > 0, "tick", 1, "a", b"\x00")
            pub.atick(2)  # attribute sugar; a coroutine method
            await eventually(lambda: ("atick", (2,)) in handlers.events, WITHIN, "atick")
        finally:
            pub.close()
    assert handlers.events[0] == ("tick", (1, "a", b"\x00"))
    assert sub.problems == {}


@run_async
async def test_a_publisher_that_binds_reaches_several_subscribers_over_inproc() -> None:
    endpoint = inproc()
    pub = Publisher()
    recorders = [Recorder(), Recorder()]
    subs = [Subscriber(r) for r in recorders]
    try:
        assert pub.bind(endpoint) == [endpoint]
        for sub in subs:
            sub.connect(endpoint)
            sub.start()
        await publish_until(pub, lambda: all(s.handled for s in subs), "tick", "hello")
    finally:
        pub.close()
        for sub in subs:
            sub.stop()
    for recorder in recorders:
        assert recorder.events[0] == ("tick", ("hello",))


@run_async
async def test_a_publisher_without_subscribers_drops_events_and_never_blocks() -> None:
    pub = Publisher()
    try:
        pub.bind(LOOPBACK)
        for i in range(5000):  # well over the high-water mark
            pub.tick(i)
        assert pub.queued == 0
    finally:
        pub.close()


@run_async
async def test_a_pusher_queues_until_a_puller_connects_and_keeps_the_order() -> None:
    pusher = Pusher()
    handlers = Recorder()
    puller = Puller(handlers)
    try:
        for i in range(5):
            pusher.add(i, i)  # nobody to push to: they wait, emit returns at once
        assert pusher.queued == 5
        (endpoint,) = puller.bind(LOOPBACK)
        puller.start()
        pusher.connect(endpoint)
        await eventually(lambda: puller.handled == 5, WITHIN, "5 queued events")
        assert pusher.queued == 0
        count = 3000  # over the high-water mark of both sockets
        for i in range(count):
            pusher.emit("atick", i)
        await eventually(lambda: puller.handled == 5 + count, WITHIN, "all events")
    finally:
        pusher.close()
        puller.stop()
    assert handlers.events[:5] == [("add", (i, i)) for i in range(5)]
    # Coroutine handlers start in arrival order and do not wait on each other.
    assert sorted(a[0] for m, a in handlers.events[5:]) == list(range(count))
    assert puller.problems == {}


@run_async
async def test_coroutine_methods_run_on_the_loop_plain_ones_in_the_executor() -> None:
    handlers = Recorder()
    loop_thread = threading.get_ident()
    with ThreadPoolExecutor(1, thread_name_prefix="oneway-test") as executor:
        async with Puller(handlers, executor=executor) as puller:
            endpoint = inproc()
            puller.bind(endpoint)
            pusher = Pusher()
            try:
                pusher.connect(endpoint)
                pusher.atick(1)
                await eventually(lambda: puller.handled == 1, WITHIN, "atick")
                pusher.tick(2)
                await eventually(lambda: puller.handled == 2, WITHIN, "tick")
            finally:
                pusher.close()
    assert handlers.threads[0] == loop_thread
    assert handlers.threads[1] != loop_thread


@run_async
async def test_the_events_trace_context_is_current_in_handlers() -> None:
    handlers = Recorder()
    parent = TraceContext.new_root()
    async with Puller(handlers) as puller:
        endpoint = inproc()
        puller.bind(endpoint)
        pusher = Pusher()
        try:
            pusher.connect(endpoint)
            pusher.tick("no trace")
            token = current_trace.set(parent)
            try:
                pusher.tick("plain")
                pusher.atick("coroutine")
            finally:
                current_trace.reset(token)
            await eventually(lambda: puller.handled == 3, WITHIN, "three events")
        finally:
            pusher.close()
    traces = dict(zip((args[0] for _, args in handlers.events), handlers.traces, strict=True))
    assert traces["no trace"] is None
    for name in ("plain", "coroutine"):
        ctx = traces[name]
        assert ctx is not None
        assert ctx.trace_id == parent.trace_id
        assert ctx.parent_span_id == parent.span_id
    assert current_trace.get() is None


@run_async
async def test_unknown_methods_and_failures_are_counted_and_never_stop_the_receiver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handlers = Recorder()
    async with Puller(handlers) as puller:
        endpoint = inproc()
        puller.bind(endpoint)
        pusher = Pusher()
        try:
            pusher.connect(endpoint)
            for _ in range(3):
                pusher.nope(1)
                pusher.fail("bad")
                pusher.afail()
                pusher.emit("_private")
                pusher.emit("run")
            pusher.tick("still here")
            await eventually(lambda: ("tick", ("still here",)) in handlers.events, WITHIN, "tick")
            await eventually(lambda: puller.handled == 7, WITHIN, "the failures")
        finally:
            pusher.close()
    assert puller.problems == {
        "unknown method": 9,
        "ValueError in fail": 3,
        "KeyError in afail": 3,
    }
    logged = [r for r in caplog.records if r.name == "rpccore"]
    assert len(logged) == 3


@run_async
async def test_malformed_frames_are_dropped_and_counted() -> None:
    handlers = Recorder()
    async with Puller(handlers) as puller:
        (endpoint,) = puller.bind(LOOPBACK)
        raw = zmq.Context.instance().socket(zmq.PUSH)
        raw.setsockopt(zmq.LINGER, 0)
        try:
            raw.connect(endpoint)
            raw.send(b"\x93")
            raw.send_multipart([b"not", b"msgpack\xc1"])
            raw.send(b"\x93\x80\xc4\x04tick\x90")  # the name is bin
            raw.send(b"\x93\x80\xa4tick\xc0")  # args are nil
            raw.send(b"\x93\x80\xa4tick\x91\x07")  # fine: tick(7)
            await eventually(lambda: puller.handled == 1, WITHIN, "tick(7)")
        finally:
            raw.close()
    assert handlers.events == [("tick", (7,))]
    assert puller.problems == {"undecodable": 2, "bad method name": 1, "bad args": 1}


@run_async
async def test_stop_cancels_running_handlers_and_ends_run() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Sleeper:
        async def sleep(self) -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    puller = Puller(Sleeper())
    endpoint = inproc()
    puller.bind(endpoint)
    running = asyncio.create_task(puller.run())
    pusher = Pusher()
    try:
        pusher.connect(endpoint)
        pusher.sleep()
        await asyncio.wait_for(started.wait(), WITHIN)
        puller.stop()
        await asyncio.wait_for(running, WITHIN)
        await asyncio.wait_for(cancelled.wait(), WITHIN)
    finally:
        pusher.close()
        puller.stop()  # twice is harmless
    assert puller.handled == 0
    assert "closed=True" in repr(puller)


@run_async
async def test_senders_refuse_misuse() -> None:
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
    async with Publisher() as pub:
        assert pub.bind([LOOPBACK, inproc()])[1].startswith("inproc://")
    with pytest.raises(RPCError):
        pub.tick()


def test_emit_needs_a_running_loop() -> None:
    pusher = Pusher()
    try:
        with pytest.raises(RuntimeError):
            pusher.add(1, 2)
    finally:
        pusher.close()


# -- against zerorpc 0.6.3 ---------------------------------------------------------------


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Any]:
    procs = support.ChildProcesses(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


def oneway_argv(role: str, *options: object) -> list[str]:
    return [support.PYTHON, "-u", str(ONEWAY_SCRIPT), role, *map(str, options)]


def write_all(pipe: Any, data: bytes) -> None:
    """Write ``data`` to an unbuffered pipe (a raw write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[pipe.write(view) :]


async def start_bound(children: Any, role: str, *options: object, stdin: bytes = b"") -> Any:
    """A zerorpc child that binds; returns (process, endpoint)."""
    proc = children.spawn(
        oneway_argv(role, "--bind", *options),
        name=f"zrpc_{role}",
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
    )
    if stdin:
        await asyncio.to_thread(write_all, proc.stdin, stdin)
        proc.stdin.close()
    endpoint = await asyncio.to_thread(children.read_line, proc, support.CHILD_START_TIMEOUT)
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    return proc, endpoint


def received(line: str) -> tuple[str, Any]:
    event = json.loads(line)
    return event["method"], ast.literal_eval(event["args"])


@run_async
async def test_zerorpc_publisher_to_our_subscriber(children: Any) -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    _, endpoint = await start_bound(
        children,
        "publisher",
        *("--count", 0, "--interval", JOIN_INTERVAL, "--method", "values", "--values"),
        *("--trace-id", trace_id, "--span-id", span_id),
        stdin=support.values_input(),
    )
    handlers = Recorder()
    async with Subscriber(handlers) as sub:
        sub.connect(endpoint)
        await eventually(lambda: sub.handled > 0, JOIN_WITHIN, "an event from zerorpc")
    method, (index, values) = handlers.events[0]
    assert method == "values"
    assert isinstance(index, int)
    assert support.mismatches(values, support.MSGPACK_VALUES) == {}
    assert handlers.traces[0] == TraceContext(trace_id, span_id)
    assert sub.problems == {}


@run_async
async def test_our_publisher_to_zerorpc_subscriber(children: Any) -> None:
    proc, endpoint = await start_bound(children, "subscriber", "--count", 1)
    first_line = asyncio.create_task(
        asyncio.to_thread(children.read_line, proc, JOIN_WITHIN + support.CHILD_START_TIMEOUT)
    )
    pub = Publisher()
    try:
        pub.connect(endpoint)
        await publish_until(pub, first_line.done, "values", 7, support.MSGPACK_VALUES)
    finally:
        pub.close()
    method, (index, values) = received(first_line.result())
    assert (method, index) == ("values", 7)
    assert support.mismatches(values, support.MSGPACK_VALUES) == {}


@run_async
async def test_zerorpc_pusher_to_our_puller(children: Any) -> None:
    handlers = Recorder()
    async with Puller(handlers) as puller:
        (endpoint,) = puller.bind(LOOPBACK)
        children.spawn(
            oneway_argv("pusher", "--connect", endpoint, "--count", 100, "--method", "add"),
            name="zrpc_pusher",
        )
        await eventually(lambda: puller.handled == 100, WITHIN, "100 events from zerorpc")
    assert handlers.events == [("add", (i,)) for i in range(100)]
    assert handlers.traces == [None] * 100
    assert puller.problems == {}


@run_async
async def test_our_pusher_to_zerorpc_puller(children: Any) -> None:
    proc, endpoint = await start_bound(children, "puller", "--count", 100)
    pusher = Pusher()
    try:
        for i in range(50):
            pusher.add(i, b"\xff", {"k": [i]})  # queued: not connected yet
        pusher.connect(endpoint)
        for i in range(50, 100):
            pusher.add(i, b"\xff", {"k": [i]})
        lines = []
        for _ in range(100):
            lines.append(await asyncio.to_thread(children.read_line, proc, WITHIN))
    finally:
        pusher.close()
    assert [received(line) for line in lines] == [
        ("add", [i, b"\xff", {"k": [i]}]) for i in range(100)
    ]
