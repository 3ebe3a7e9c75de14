"""Rogue peers and leaks against the gevent driver.

A raw DEALER sends hand-made bad input to our server while a well-behaved client keeps calling
it; a raw ROUTER plays a server that breaks the protocol against our client; and 20,000 calls
mixing normal calls, timeouts, clients that go away and abandoned streams leave nothing alive.
Everything this module needs is defined here (the directory's conftest belongs to the interop
tests).
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.subprocess
import msgpack
import pytest
import zmq
import zmq.green
from green_support import HB, LOOPBACK, connected, eventually, serving

from rpccore import RemoteProtocolError, RPCError, TimeoutExpired
from rpccore.green import Client, Server, Stream, stream

SLACK = 1.0
TEST_TIMEOUT = 60.0
REPEAT = 50  # each bad input is sent this many times; it must be logged once
COUNT_BOUND = 5.0 + SLACK

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


class ProblemLines:
    """rpccore's "dropped input" log lines, captured by caplog."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __repr__(self) -> str:
        return f"<ProblemLines {len(self._caplog.records)} records>"

    def of(self, kind: str, role: str = "server") -> list[logging.LogRecord]:
        return self._starting(f"{role}: dropped input ({kind})")

    def every(self, role: str = "server") -> list[logging.LogRecord]:
        return self._starting(f"{role}: dropped input (")

    def _starting(self, prefix: str) -> list[logging.LogRecord]:
        return [
            record
            for record in self._caplog.records
            if record.name == "rpccore" and record.getMessage().startswith(prefix)
        ]


@pytest.fixture
def green_problem_log(caplog: pytest.LogCaptureFixture) -> ProblemLines:
    caplog.set_level(logging.DEBUG, logger="rpccore")
    return ProblemLines(caplog)


def new_id() -> bytes:
    return os.urandom(16).hex().encode()


def pack(header: Any, name: Any, args: Any) -> bytes:
    return msgpack.packb([header, name, args], use_bin_type=True)


def unpack(payload: bytes) -> tuple[dict[Any, Any], Any, Any]:
    header, name, args = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return header, name, args


def request(message_id: bytes, name: Any = "echo", args: Any = (1,)) -> bytes:
    return pack({"message_id": message_id, "v": 3}, name, args)


def on_channel(channel: bytes, name: str, args: Any) -> bytes:
    return pack({"message_id": new_id(), "v": 3, "response_to": channel}, name, args)


@contextmanager
def rogue_socket(endpoint: str, kind: int = zmq.DEALER, **sockopts: int) -> Iterator[Any]:
    """A raw zmq.green socket, connected (DEALER) or bound (ROUTER) to ``endpoint``."""
    sock = zmq.green.Context.instance().socket(kind)
    sock.linger = 0
    for name, value in sockopts.items():
        setattr(sock, name, value)
    try:
        if kind == zmq.ROUTER:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
        yield sock
    finally:
        sock.close()


def next_event(sock: Any, within: float = 5.0) -> tuple[dict[Any, Any], Any, Any]:
    """The next event a rogue DEALER receives, heartbeats skipped."""
    with gevent.Timeout(within, AssertionError(f"no event within {within}s")):
        while True:
            event = unpack(sock.recv_multipart()[-1])
            if event[1] != "_zpc_hb":
                return event


class GoodCaller:
    """Calls ``echo(i)`` in a greenlet until stopped (bounded in count), recording all."""

    def __init__(self, client: Client, pause: float = 0.005, limit: int = 20_000) -> None:
        self._client = client
        self._pause = pause
        self._limit = limit
        self._stopping = False
        self.answers = 0
        self.failures: list[str] = []
        self.latencies: list[tuple[float, float]] = []  # (started at, seconds)

    def _run(self) -> None:
        for i in range(self._limit):
            if self._stopping:
                return
            start = time.monotonic()
            try:
                value = self._client.call("echo", i, timeout=5.0)
            except RPCError as exc:
                self.failures.append(f"call {i}: {exc!r}")
            else:
                if value == i:
                    self.answers += 1
                    self.latencies.append((start, time.monotonic() - start))
                else:
                    self.failures.append(f"call {i}: answered {value!r}")
            gevent.sleep(self._pause)

    def more_answers(self, count: int, within: float = 5.0) -> None:
        target = self.answers + count
        eventually(lambda: self.answers >= target, within, f"{count} more good answers")

    @contextmanager
    def running(self) -> Iterator[GoodCaller]:
        worker = gevent.spawn(self._run)
        try:
            self.more_answers(1)
            yield self
        finally:
            self._stopping = True
            worker.join(timeout=10.0)
            worker.kill()

    def assert_all_answered(self, at_least: int) -> None:
        assert self.failures == [], self.failures[:5]
        assert self.answers >= at_least


def vm_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class Echo:
    def echo(self, value: Any) -> Any:
        return value

    def nap(self, seconds: float) -> float:
        gevent.sleep(seconds)
        return seconds

    def count(self, n: int) -> Iterator[int]:
        yield from range(n)

    @stream
    def blobs(self, n: int, size: int) -> list[bytes]:
        return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(n)]


# -- one bad message, many times -------------------------------------------------------------


def nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@dataclass(frozen=True)
class BadInput:
    name: str
    build: Callable[[bytes], bytes]  # a fresh message id -> the payload to send
    kind: str  # the key it is counted under in server.problems
    level: int = logging.WARNING
    reply: tuple[str, list[Any]] | None = None  # the event the rogue gets back: name, args


BAD_INPUTS = [
    BadInput("not msgpack", lambda mid: b"\xc1\xc1 this is not msgpack", "undecodable"),
    BadInput("truncated msgpack", lambda mid: request(mid)[:-4], "undecodable"),
    BadInput("not a 3-array", lambda mid: msgpack.packb(["only", "two"]), "undecodable"),
    BadInput("header not a map", lambda mid: pack([mid], "echo", [1]), "undecodable"),
    BadInput("no message_id", lambda mid: pack({"v": 3}, "echo", [1]), "no message_id"),
    BadInput(
        "no message_id, nested 1,000 deep",
        lambda mid: pack({"v": 3, "deep": nest(1000)}, "echo", [1]),
        "no message_id",
    ),
    BadInput(
        "bin header keys",
        lambda mid: pack({b"message_id": mid, b"v": 3}, "echo", [1]),
        "bin header keys",
    ),
    BadInput(
        "args a map",
        lambda mid: request(mid, args={"a": 1}),
        "bad args",
        reply=("ERR", ["TypeError", "arguments must be an array, not map"]),
    ),
    BadInput(
        "args nil",
        lambda mid: request(mid, args=None),
        "bad args",
        reply=("ERR", ["TypeError", "arguments must be an array, not nil"]),
    ),
    BadInput(
        "int method name",
        lambda mid: request(mid, name=42),
        "bad method name",
        reply=("ERR", ["NameError", "42"]),
    ),
    BadInput(
        "bin method name",
        lambda mid: request(mid, name=b"echo"),
        "bad method name",
        reply=("ERR", ["NameError", "b'echo'"]),
    ),
    BadInput(
        "event for an unknown channel",
        lambda mid: on_channel(new_id(), "_zpc_hb", [0]),
        "unroutable",
        level=logging.DEBUG,
    ),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda bad: bad.name)
def test_bad_input_is_dropped_counted_and_logged_once(
    bad: BadInput, green_problem_log: ProblemLines
) -> None:
    with serving(Echo()) as (server, endpoint), connected(endpoint) as client:
        good = GoodCaller(client)
        with good.running(), rogue_socket(endpoint) as rogue:
            for _ in range(REPEAT):
                mid = new_id()
                rogue.send_multipart([b"", bad.build(mid)])
                if bad.reply is not None:
                    header, name, args = next_event(rogue)
                    expected_name, expected_args = bad.reply
                    assert (header["response_to"], name) == (mid, expected_name)
                    assert args[: len(expected_args)] == expected_args
            eventually(
                lambda: server.problems.get(bad.kind, 0) >= REPEAT,
                COUNT_BOUND,
                f"{REPEAT} x {bad.kind} counted",
            )
            good.more_answers(3)
        good.assert_all_answered(at_least=4)
        assert client.echo("still serving") == "still serving"
        eventually(lambda: server.open_channels == 0, SLACK, "no channel left open")
    problems = server.problems
    assert problems[bad.kind] >= REPEAT
    if bad.kind != "unroutable":  # the good client's late heartbeats may add some
        assert problems[bad.kind] == REPEAT
    assert set(problems) <= {bad.kind, "unroutable", "disconnected"}
    assert [line.levelno for line in green_problem_log.of(bad.kind)] == [bad.level]
    warnings = [line for line in green_problem_log.every() if line.levelno >= logging.WARNING]
    assert len(warnings) == (1 if bad.level >= logging.WARNING else 0)


def test_rogue_events_inside_an_open_call(green_problem_log: ProblemLines) -> None:
    hb = 1.0  # the rogue does not heartbeat: give its call time to finish first
    with (
        serving(Echo(), heartbeat=hb) as (server, endpoint),
        connected(endpoint, heartbeat=hb) as client,
    ):
        good = GoodCaller(client)
        with good.running(), rogue_socket(endpoint) as rogue:
            mid = new_id()
            rogue.send_multipart([b"", request(mid, "nap", [0.2])])
            for i in range(REPEAT):
                name, args = [("OK", [i]), ("STREAM", i), ("ERR", ["E", "m", "t"])][i % 3]
                rogue.send_multipart([b"", on_channel(mid, name, args)])
                rogue.send_multipart([b"", on_channel(mid, "_zpc_more", ["lots"])])
                rogue.send_multipart([b"", request(mid, "nap", [0.2])])
            header, name, args = next_event(rogue)
            assert (header["response_to"], name, args) == (mid, "OK", [0.2])
            good.more_answers(3)
        good.assert_all_answered(at_least=4)
    expected = {"unexpected event": REPEAT, "bad credit": REPEAT, "duplicate id": REPEAT}
    assert {kind: server.problems.get(kind) for kind in expected} == expected
    for kind in expected:
        assert [line.levelno for line in green_problem_log.of(kind)] == [logging.WARNING]


FLOOD = 10_000


def test_flood_of_credit_after_a_stream_ended(green_problem_log: ProblemLines) -> None:
    with serving(Echo()) as (server, endpoint), connected(endpoint) as client:
        good = GoodCaller(client)
        with good.running(), rogue_socket(endpoint) as rogue:
            mid = new_id()
            rogue.send_multipart([b"", request(mid, "count", [3])])
            assert next_event(rogue)[1:] == ("STREAM", 0)
            rogue.send_multipart([b"", on_channel(mid, "_zpc_more", [10])])
            received = [next_event(rogue)[1:] for _ in range(3)]
            assert received == [("STREAM", 1), ("STREAM", 2), ("STREAM_DONE", None)]
            grant = on_channel(mid, "_zpc_more", [10])
            for _ in range(FLOOD):
                rogue.send_multipart([b"", grant])
            eventually(
                lambda: server.problems.get("unroutable", 0) >= FLOOD,
                COUNT_BOUND,
                "the flood counted",
            )
            good.more_answers(3)
        good.assert_all_answered(at_least=4)
        assert server.open_channels == 0
    assert [line.levelno for line in green_problem_log.of("unroutable")] == [logging.DEBUG]


SUSTAINED = 100_000  # tiny messages queued at once: the server needs about a second for them
# The share of the flood's time that the hub may spend without running anything else. The
# flood takes over a second; served in batches, the longest stall is a batch or a timer's
# drain before judging heartbeats (up to 10,000 messages), a small fraction even on a loaded
# machine. A reader that does not yield stalls for all of it.
MAX_STALL_SHARE = 0.3


def test_sustained_flood_does_not_starve_other_callers() -> None:
    endpoint = f"inproc://green-flood-{time.monotonic_ns()}"
    with (
        serving(Echo(), endpoint, heartbeat=5.0) as (server, bound),
        connected(bound, heartbeat=5.0) as client,
    ):
        good = GoodCaller(client, pause=0.001)
        # Over inproc with no high-water mark the whole flood is queued at once.
        with good.running(), rogue_socket(bound, sndhwm=0) as rogue:
            for _ in range(SUSTAINED):
                rogue.send_multipart([b"", b"\xc1"])
            start = time.monotonic()
            ticks: list[float] = []

            def ticker() -> None:
                while True:
                    gevent.sleep(0.01)
                    ticks.append(time.monotonic())

            tick = gevent.spawn(ticker)
            try:
                eventually(
                    lambda: server.problems.get("undecodable", 0) >= SUSTAINED,
                    20.0,
                    "the flood processed",
                )
            finally:
                tick.kill()
            end = time.monotonic()
        good.assert_all_answered(at_least=1)
    times = [start, *(t for t in ticks if start < t < end), end]
    stall = max(later - earlier for earlier, later in itertools.pairwise(times))
    flood = end - start
    assert stall < MAX_STALL_SHARE * flood, f"the hub stalled {stall:.2f}s in {flood:.2f}s of flood"
    during = [took for started, took in good.latencies if start <= started < end]
    assert len(during) >= 5, f"{len(during)} good answers in {flood:.2f}s of flood"
    assert max(during) < MAX_STALL_SHARE * flood


# -- a message larger than max_message_size ------------------------------------------------

BIG_SENDER = r"""
import sys, time, zmq
from zmq.utils.monitor import recv_monitor_message

context = zmq.Context()
sock = context.socket(zmq.DEALER)
sock.linger = 0
monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
sock.connect(sys.argv[1])
sock.send_multipart([b"", b"\x00" * (100 << 20)])  # 100 MiB
events, deadline = [], time.monotonic() + 20
while time.monotonic() < deadline and "DISCONNECTED" not in events:
    if monitor.poll(100):
        events.append(zmq.Event(recv_monitor_message(monitor)["event"]).name)
print(" ".join(events), flush=True)
sock.disable_monitor()
monitor.close()
sock.close()
context.term()
"""


def test_oversized_message_cuts_off_the_sender_only(green_problem_log: ProblemLines) -> None:
    with (
        serving(Echo(), max_message_size=1 << 20) as (server, endpoint),
        connected(endpoint) as client,
    ):
        good = GoodCaller(client)
        with good.running():
            baseline = peak = vm_rss_mib()
            proc = gevent.subprocess.Popen(
                [sys.executable, "-c", BIG_SENDER, endpoint],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline:
                    peak = max(peak, vm_rss_mib())
                    gevent.sleep(0.01)
            finally:
                if proc.poll() is None:
                    proc.kill()
                out, err = proc.communicate()
            assert proc.returncode == 0, err.decode()
            assert out.decode().split() == ["CONNECTED", "DISCONNECTED"]
            eventually(lambda: server.problems.get("disconnected", 0) >= 1, SLACK, "counted")
            good.more_answers(3)
        good.assert_all_answered(at_least=4)
    assert peak - baseline < 50, f"server grew {peak - baseline:.0f} MiB"
    assert len(green_problem_log.of("disconnected")) == 1


# -- delivery: complete and in order ---------------------------------------------------------


def test_stream_items_stay_in_order_when_the_hub_was_busy() -> None:
    endpoint = f"inproc://green-order-{time.monotonic_ns()}"
    with rogue_socket(endpoint, zmq.ROUTER) as router, connected(endpoint, timeout=5.0) as client:
        call = gevent.spawn(client.call, "items")
        routing_id, _, payload = next_routed(router)
        channel = unpack(payload)[0]["message_id"]

        def send(name: str, args: Any) -> None:
            header = {"message_id": new_id(), "v": 3, "response_to": channel}
            router.send_multipart([routing_id, b"", pack(header, name, args)])

        send("STREAM", 0)
        items = call.get(timeout=5)
        assert isinstance(items, Stream)
        got = [next(items)]
        following = gevent.spawn(next, items)  # grants credit
        while unpack(next_routed(router)[-1])[1] != "_zpc_more":
            pass
        for i in range(1, 6):
            send("STREAM", i)
        send("STREAM_DONE", None)
        time.sleep(0.3)  # the hub is busy past the client's next heartbeat tick
        got.append(following.get(timeout=5))
        got += list(items)
    assert got == [0, 1, 2, 3, 4, 5]


def next_routed(router: Any, within: float = 5.0) -> list[bytes]:
    with gevent.Timeout(within, AssertionError(f"nothing routed within {within}s")):
        frames: list[bytes] = router.recv_multipart()
    return frames


BURST = 20_000  # items of 1 KiB: far more than the pipes and kernel buffers hold


# The server's ROUTER once had the default high-water mark (1,000), past which libzmq
# silently drops what a ROUTER sends: a slow reader lost stream items, then waited forever.


def test_burst_to_a_slow_reader_is_not_dropped() -> None:
    with (
        serving(Echo(), heartbeat=None) as (_, endpoint),
        rogue_socket(endpoint, rcvhwm=10, rcvbuf=4096) as rogue,
    ):
        mid = new_id()
        rogue.send_multipart([b"", request(mid, "blobs", [BURST, 1024])])
        rogue.send_multipart([b"", on_channel(mid, "_zpc_more", [BURST + 10])])
        gevent.sleep(1.0)  # not reading yet
        names: list[str] = []
        indexes: list[int] = []
        while not names or names[-1] == "STREAM":
            try:
                with gevent.Timeout(1.0 + SLACK):
                    frames = rogue.recv_multipart()
            except gevent.Timeout:
                break
            _, name, args = unpack(frames[-1])
            names.append(name)
            if name == "STREAM":
                indexes.append(int.from_bytes(args[:4], "big"))
    assert names[-1:] == ["STREAM_DONE"], f"{len(indexes)} items, then silence"
    assert indexes == list(range(BURST))


# -- a rogue server against our client ----------------------------------------------------------


@dataclass(frozen=True)
class RogueReply:
    name: str
    events: list[tuple[str, Any] | bytes]  # what the rogue answers: events or raw payloads
    error: type[RPCError]
    match: str
    items: list[Any] = field(default_factory=list)  # stream items before the error
    problem: str | None = None  # what our client counts meanwhile


ROGUE_REPLIES = [
    RogueReply(
        "more STREAM events than granted",
        [("STREAM", 0), ("STREAM", 1), ("STREAM", 2), ("STREAM", 3)],
        RemoteProtocolError,
        "more events than granted",
        items=[0],
        problem="unroutable",
    ),
    RogueReply("unknown pattern", [("WAT", [1])], RemoteProtocolError, "unable to find a pattern"),
    RogueReply("OK without a value", [("OK", [])], RemoteProtocolError, "OK args"),
    RogueReply("ERR of the wrong shape", [("ERR", ["x"])], RemoteProtocolError, "ERR args"),
    RogueReply(
        "undecodable reply",
        [b"\xc1 garbage"],
        TimeoutExpired,
        "timeout after",
        problem="undecodable",
    ),
]


def play_rogue_server(router: Any, events: list[tuple[str, Any] | bytes]) -> None:
    """Answer ``echo`` properly and any other request with ``events``; ignore the rest."""
    while True:
        frames = router.recv_multipart()
        header, name, args = unpack(frames[-1])
        if "response_to" in header:
            continue  # our client's heartbeats and credit
        reply_to = {"v": 3, "response_to": header["message_id"]}
        answer: list[tuple[str, Any] | bytes] = [("OK", [args[0]])] if name == "echo" else events
        for event in answer:
            payload = (
                event
                if isinstance(event, bytes)
                else pack({"message_id": new_id(), **reply_to}, *event)
            )
            router.send_multipart([frames[0], b"", payload])


@pytest.mark.parametrize("case", ROGUE_REPLIES, ids=lambda case: case.name)
def test_client_against_a_rogue_server(case: RogueReply) -> None:
    with rogue_socket(LOOPBACK, zmq.ROUTER) as router:
        endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        rogue = gevent.spawn(play_rogue_server, router, case.events)
        try:
            with connected(endpoint, heartbeat=5.0, timeout=0.5) as client:
                assert client.echo("before") == "before"
                items: list[Any] = []

                def consume() -> None:
                    result = client.call("bad")
                    assert isinstance(result, Stream)
                    gevent.sleep(0.2)  # every event in before we read (and grant) on
                    items.extend(result)

                with pytest.raises(case.error, match=case.match):
                    consume()
                assert items == case.items
                assert client.open_channels == 0
                assert client.echo("after") == "after"  # the client keeps working
                if case.problem is not None:
                    problem = case.problem
                    eventually(lambda: problem in client.problems, SLACK, problem)
        finally:
            rogue.kill()


# -- leaks ------------------------------------------------------------------------------------

TOTAL = 20_000
BATCH = 500
MIX = {"normal": 455, "timeout": 15, "abandoned": 15, "lost": 15}
assert sum(MIX.values()) == BATCH
SETTLE = 3 * HB + SLACK


class LeakService(Echo):
    def __init__(self) -> None:
        self.hanging = 0

    def hang(self) -> None:
        self.hanging += 1
        gevent.sleep(60.0)


def normal(client: Client, i: int) -> list[str]:
    assert client.call("echo", i) == i
    return ["normal"]


def timeout(client: Client) -> list[str]:
    try:
        client.call("nap", 0.3, timeout=0.02)
    except TimeoutExpired:
        return ["timeout"]
    return ["answered before its timeout"]


def abandoned(client: Client) -> list[str]:
    items = client.stream("count", 10_000)
    assert [next(items), next(items)] == [0, 1]  # then walk away
    items.close()
    return ["abandoned"]


def lost(endpoint: str, service: LeakService, calls: int) -> list[str]:
    client = Client(endpoint, heartbeat=HB, timeout=10.0)
    try:
        assert client.call("echo", "connected") == "connected"
        target = service.hanging + calls - 1
        hanging = [client.call("hang", async_=True) for _ in range(calls - 1)]
        eventually(lambda: service.hanging >= target, SLACK, "lost calls reached the server")
    finally:
        client.close()  # goes away mid-call: the server only sees its heartbeats stop
    gevent.joinall(hanging, timeout=10.0)
    errors = [greenlet.exception for greenlet in hanging]
    assert all(type(error) is RPCError for error in errors), errors[:3]
    return ["normal"] + ["lost"] * len(errors)


def live_state(server: Server, clients: list[Client]) -> dict[str, int]:
    """Everything that must drain to zero: the public channel counts, and also the drivers'
    own per-call tables."""
    return {
        "client channels": sum(client.open_channels for client in clients),
        "server channels": server.open_channels,
        "client pending calls": sum(len(client._calls) for client in clients),
        "server handlers": len(server._handlers),
        "server credit waiters": len(server._credit),
        "client timers": sum(len(client._client._timers) for client in clients),
        "server timers": len(server._server._timers),
    }


def test_20k_mixed_calls_leave_nothing_alive() -> None:
    service = LeakService()
    outcomes: Counter[str] = Counter()
    start = time.monotonic()
    with (
        serving(service) as (server, endpoint),
        connected(endpoint) as client,
        connected(endpoint) as streamer,  # a second client, for the streams
    ):
        for batch in range(TOTAL // BATCH):
            base = batch * BATCH
            jobs = [gevent.spawn(normal, client, base + i) for i in range(MIX["normal"])]
            jobs += [gevent.spawn(timeout, client) for _ in range(MIX["timeout"])]
            jobs += [gevent.spawn(abandoned, streamer) for _ in range(MIX["abandoned"])]
            jobs.append(gevent.spawn(lost, endpoint, service, MIX["lost"]))
            gevent.joinall(jobs, timeout=20.0, raise_error=True)
            for job in jobs:
                outcomes.update(job.get(block=False))
        took = time.monotonic() - start
        zero = dict.fromkeys(live_state(server, [client, streamer]), 0)
        settled = eventually(
            lambda: live_state(server, [client, streamer]) == zero, SETTLE, "nothing alive"
        )
        assert client.echo("after") == "after"
    batches = TOTAL // BATCH
    assert outcomes == {
        "normal": batches * (MIX["normal"] + 1),
        "timeout": batches * MIX["timeout"],
        "abandoned": batches * MIX["abandoned"],
        "lost": batches * (MIX["lost"] - 1),
    }
    assert sum(outcomes.values()) == TOTAL
    assert settled < SETTLE
    assert took < 40.0, f"{TOTAL} calls took {took:.1f}s"
