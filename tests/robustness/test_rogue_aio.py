"""Rogue peers against the asyncio driver.

A raw DEALER sends hand-made bad input to our server while a well-behaved client keeps calling
it: every kind of bad input is dropped (or answered with ERR where 0.6.3 answers), counted in
``server.problems``, logged once however often it repeats, and never disturbs the other
client. A raw ROUTER plays a server that breaks the protocol against our client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from rogue_support import (
    LOOPBACK,
    SLACK,
    GoodCaller,
    ProblemLines,
    connected,
    eventually,
    new_id,
    next_event,
    pack,
    rogue_socket,
    run_async,
    serving,
    unpack,
    vm_rss_mib,
)

from rpccore import RemoteProtocolError, RPCError, TimeoutExpired
from rpccore.aio import AsyncStream

REPEAT = 50  # each bad input is sent this many times; it must be logged once
COUNT_BOUND = 5.0 + SLACK  # seconds for the server to count a burst of bad input


class Echo:
    async def echo(self, value: Any) -> Any:
        return value

    async def nap(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    def count(self, n: int) -> Iterator[int]:
        yield from range(n)


def request(message_id: bytes, name: Any = "echo", args: Any = (1,)) -> bytes:
    return pack({"message_id": message_id, "v": 3}, name, args)


def on_channel(channel: bytes, name: str, args: Any) -> bytes:
    return pack({"message_id": new_id(), "v": 3, "response_to": channel}, name, args)


def nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# -- one bad message, many times -------------------------------------------------------------


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
    BadInput(
        "no message_id, nested 1,000 deep",  # the one log line must survive rendering it
        lambda mid: pack({"v": 3, "deep": nest(1000)}, "echo", [1]),
        "no message_id",
    ),
    BadInput("no message_id", lambda mid: pack({"v": 3}, "echo", [1]), "no message_id"),
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
        reply=("ERR", ["NameError", "b'echo'"]),  # 0.6.3's message for a bin name
    ),
    BadInput(
        "event for an unknown channel",
        lambda mid: on_channel(new_id(), "_zpc_hb", [0]),
        "unroutable",
        level=logging.DEBUG,  # also normal after a call ends: not worth a warning
    ),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda bad: bad.name)
@run_async
async def test_bad_input_is_dropped_counted_and_logged_once(
    bad: BadInput, problem_log: ProblemLines
) -> None:
    async with serving(Echo()) as (server, endpoint), connected(endpoint) as client:
        good = GoodCaller(client)
        async with good.running(), rogue_socket(endpoint) as rogue:
            for _ in range(REPEAT):
                mid = new_id()
                await rogue.send_multipart([b"", bad.build(mid)])
                if bad.reply is not None:
                    header, name, args = await next_event(rogue)
                    expected_name, expected_args = bad.reply
                    assert (header["response_to"], name) == (mid, expected_name)
                    assert args[: len(expected_args)] == expected_args
            await eventually(
                lambda: server.problems.get(bad.kind, 0) >= REPEAT,
                COUNT_BOUND,
                f"{REPEAT} x {bad.kind} counted",
            )
            await good.more_answers(3)  # the good client is still answered afterwards
        good.assert_all_answered(at_least=4)
        assert await client.echo("still serving") == "still serving"
        await eventually(lambda: server.open_channels == 0, SLACK, "no channel left open")
    problems = server.problems
    assert problems[bad.kind] >= REPEAT
    if bad.kind != "unroutable":  # the good client's late heartbeats may add some
        assert problems[bad.kind] == REPEAT
    assert set(problems) <= {bad.kind, "unroutable", "disconnected"}
    assert [line.levelno for line in problem_log.of(bad.kind)] == [bad.level]
    # However often it came, the bad input made at most one warning in all.
    warnings = [line for line in problem_log.every() if line.levelno >= logging.WARNING]
    assert len(warnings) == (1 if bad.level >= logging.WARNING else 0)


@run_async
async def test_rogue_events_inside_an_open_call(problem_log: ProblemLines) -> None:
    """Data events from the client side, garbage credit and a duplicate request inside an
    open call are dropped; the call itself still completes."""
    hb = 1.0  # the rogue does not heartbeat: give its call time to finish first
    async with (
        serving(Echo(), heartbeat=hb) as (server, endpoint),
        connected(endpoint, heartbeat=hb) as client,
    ):
        good = GoodCaller(client)
        async with good.running(), rogue_socket(endpoint) as rogue:
            mid = new_id()
            await rogue.send_multipart([b"", request(mid, "nap", [0.2])])
            for i in range(REPEAT):
                name, args = [("OK", [i]), ("STREAM", i), ("ERR", ["E", "m", "t"])][i % 3]
                await rogue.send_multipart([b"", on_channel(mid, name, args)])
                await rogue.send_multipart([b"", on_channel(mid, "_zpc_more", ["lots"])])
                await rogue.send_multipart([b"", request(mid, "nap", [0.2])])
            header, name, args = await next_event(rogue)
            assert (header["response_to"], name, args) == (mid, "OK", [0.2])
            await good.more_answers(3)
        good.assert_all_answered(at_least=4)
    expected = {"unexpected event": REPEAT, "bad credit": REPEAT, "duplicate id": REPEAT}
    assert {kind: server.problems.get(kind) for kind in expected} == expected
    for kind in expected:
        assert [line.levelno for line in problem_log.of(kind)] == [logging.WARNING]


FLOOD = 10_000


@run_async
async def test_flood_of_credit_after_a_stream_ended(problem_log: ProblemLines) -> None:
    async with serving(Echo()) as (server, endpoint), connected(endpoint) as client:
        good = GoodCaller(client)
        async with good.running(), rogue_socket(endpoint) as rogue:
            mid = new_id()
            await rogue.send_multipart([b"", request(mid, "count", [3])])
            assert (await next_event(rogue))[1:] == ("STREAM", 0)
            await rogue.send_multipart([b"", on_channel(mid, "_zpc_more", [10])])
            received = [(await next_event(rogue))[1:] for _ in range(3)]
            assert received == [("STREAM", 1), ("STREAM", 2), ("STREAM_DONE", None)]
            grant = on_channel(mid, "_zpc_more", [10])
            for _ in range(FLOOD):
                await rogue.send_multipart([b"", grant])
            await eventually(
                lambda: server.problems.get("unroutable", 0) >= FLOOD,
                COUNT_BOUND,
                "the flood counted",
            )
            await good.more_answers(3)
        good.assert_all_answered(at_least=4)
        assert server.open_channels == 0
    assert [line.levelno for line in problem_log.of("unroutable")] == [logging.DEBUG]


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

MAX_MESSAGE = 1 << 20
RSS_GROWTH_MIB = 50


@run_async
async def test_oversized_message_cuts_off_the_sender_only(problem_log: ProblemLines) -> None:
    async with (
        serving(Echo(), max_message_size=MAX_MESSAGE) as (server, endpoint),
        connected(endpoint) as client,
    ):
        good = GoodCaller(client)
        async with good.running():
            baseline = peak = vm_rss_mib()
            proc = subprocess.Popen(
                [sys.executable, "-c", BIG_SENDER, endpoint],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline:
                    peak = max(peak, vm_rss_mib())
                    await asyncio.sleep(0.01)
            finally:
                if proc.poll() is None:
                    proc.kill()
                out, err = proc.communicate()
            assert proc.returncode == 0, err.decode()
            assert out.decode().split() == ["CONNECTED", "DISCONNECTED"]
            await eventually(lambda: server.problems.get("disconnected", 0) >= 1, SLACK, "counted")
            await good.more_answers(3)
        good.assert_all_answered(at_least=4)
    assert peak - baseline < RSS_GROWTH_MIB, f"server grew {peak - baseline:.0f} MiB"
    assert len(problem_log.of("disconnected")) == 1


# -- a peer that never stops sending ----------------------------------------------------------

# zmq.asyncio's recv_multipart() returns an already-completed future when a message is
# waiting, and awaiting it does not yield: a reader that never yields on its own lets one peer
# that keeps the socket busy stall every handler, timer and other client until it stops.
SUSTAINED = 100_000  # tiny messages queued at once: the server needs about a second for them
# The share of the flood's time that the loop may spend without running anything else. The
# flood takes over a second; served in batches, the longest stall is a batch or a timer's
# drain before judging heartbeats (up to 10,000 messages), a small fraction even on a loaded
# machine. A reader that does not yield stalls for all of it.
MAX_STALL_SHARE = 0.3


@run_async
async def test_sustained_flood_does_not_starve_other_callers() -> None:
    endpoint = f"inproc://flood-{time.monotonic_ns()}"
    async with (
        serving(Echo(), endpoint, heartbeat=5.0) as (server, bound),
        connected(bound, heartbeat=5.0) as client,
    ):
        good = GoodCaller(client, pause=0.001)
        # Over inproc with no high-water mark the whole flood is queued at once on the
        # server's socket, however loaded this machine is.
        async with good.running(), rogue_socket(bound, sndhwm=0) as rogue:
            raw = zmq.Socket.shadow(rogue.underlying)
            for _ in range(SUSTAINED):
                raw.send_multipart([b"", b"\xc1"])
            start = time.monotonic()
            ticks: list[float] = []

            async def ticker() -> None:
                while True:
                    await asyncio.sleep(0.01)
                    ticks.append(time.monotonic())

            tick = asyncio.create_task(ticker())
            try:
                await eventually(
                    lambda: server.problems.get("undecodable", 0) >= SUSTAINED,
                    20.0,
                    "the flood processed",
                )
            finally:
                tick.cancel()
            end = time.monotonic()
        good.assert_all_answered(at_least=1)
    # The longest time, between queueing the flood and its end, that other tasks could not run.
    times = [start, *(t for t in ticks if start < t < end), end]
    stall = max(later - earlier for earlier, later in itertools.pairwise(times))
    flood = end - start
    assert stall < MAX_STALL_SHARE * flood, (
        f"the loop stalled {stall:.2f}s in {flood:.2f}s of flood"
    )
    during = [took for started, took in good.latencies if start <= started < end]
    assert len(during) >= 5, f"{len(during)} good answers in {flood:.2f}s of flood"
    assert max(during) < MAX_STALL_SHARE * flood


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


async def play_rogue_server(router: Any, events: list[tuple[str, Any] | bytes]) -> None:
    """Answer ``echo`` properly and any other request with ``events``; ignore the rest."""
    while True:
        frames = await router.recv_multipart()
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
            await router.send_multipart([frames[0], b"", payload])


@pytest.mark.parametrize("case", ROGUE_REPLIES, ids=lambda case: case.name)
@run_async
async def test_client_against_a_rogue_server(case: RogueReply) -> None:
    async with rogue_socket(LOOPBACK, zmq.ROUTER) as router:
        endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        rogue = asyncio.create_task(play_rogue_server(router, case.events))
        try:
            async with connected(endpoint, heartbeat=5.0, timeout=0.5) as client:
                assert await client.echo("before") == "before"
                items: list[Any] = []

                async def consume() -> None:
                    result = await client.call("bad")
                    assert isinstance(result, AsyncStream)
                    await asyncio.sleep(0.2)  # every event in before we read (and grant) on
                    async for item in result:  # keeps the items before the error
                        items.append(item)

                with pytest.raises(case.error, match=case.match):
                    await consume()
                assert items == case.items
                assert client.open_channels == 0
                assert await client.echo("after") == "after"  # the client keeps working
                if case.problem is not None:
                    problem = case.problem
                    await eventually(lambda: problem in client.problems, SLACK, problem)
        finally:
            rogue.cancel()
            await asyncio.gather(rogue, return_exceptions=True)


def test_rogue_frames_are_what_they_claim() -> None:
    # The hand-made frames above: a valid request really decodes as one, so the bad ones
    # differ from it only in what their names say.
    mid = new_id()
    assert unpack(request(mid)) == ({"message_id": mid, "v": 3}, "echo", [1])
    assert unpack(on_channel(mid, "_zpc_more", [10]))[0]["response_to"] == mid
