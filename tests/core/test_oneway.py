"""OneWayConnection: PUSH/PULL and PUB/SUB events without I/O (spec section 12).

Encoding is checked against the frames zerorpc 0.6.3's Publisher and Pusher sent
(publisher_event.json, pusher_event.json): with ``rpccore._oneway.new_message_id`` handing
out the captured ids, our frames equal the capture byte for byte. Decoding takes the
captured frames back, and every kind of malformed input is dropped, counted and logged once.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import IdFeed, load, strict

import rpccore._oneway
from rpccore import LocalProtocolError, TraceContext, current_trace
from rpccore._codec import Encoder
from rpccore._oneway import OneWayConnection, OneWayEvent, event_header
from rpccore._service import Service

ONE_WAY_VECTORS = ["publisher_event", "pusher_event"]


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def without_trace(func: Any, *args: Any) -> Any:
    """Run ``func`` where no trace context is current, whatever the test runner set."""
    context = contextvars.Context()
    return context.run(func, *args)


# -- encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_WAY_VECTORS)
def test_emitted_frames_equal_the_captured_bytes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = load(name)
    feed = IdFeed(event.message_id for event in vector.events)
    monkeypatch.setattr(rpccore._oneway, "new_message_id", feed)
    conn = OneWayConnection(name)
    for event in vector.events:
        without_trace(conn.emit, event.name, tuple(event.args))
        assert conn.data_to_send() == [event.wire], f"seq {event.seq}"
    assert feed.left == 0
    assert feed.fresh == 0
    assert conn.data_to_send() == []


@pytest.mark.parametrize("name", ONE_WAY_VECTORS)
def test_the_decoded_captured_header_reencodes_to_the_same_bytes(name: str) -> None:
    conn = OneWayConnection(name)
    encoder = Encoder()
    for event in load(name).events:
        got = conn.receive(event.wire)
        assert got is not None
        assert encoder.encode(got.header, got.method, got.args) == event.payload
        # Our own header has the same keys, in the same order, with the same types.
        ours = without_trace(event_header)
        assert list(ours) == list(got.header) == ["message_id", "v"]
        assert type(ours["message_id"]) is bytes
        assert len(ours["message_id"]) == len(got.header["message_id"]) == 32
        assert ours["v"] == got.header["v"] == 3


def test_every_event_gets_a_fresh_message_id() -> None:
    conn = OneWayConnection("pusher")
    for _ in range(3):
        conn.emit("add", (1, 2))
    ids = {msgpack.unpackb(frame, raw=False)[0]["message_id"] for [frame] in conn.data_to_send()}
    assert len(ids) == 3


def test_an_event_carries_the_current_trace_context_as_a_child_span() -> None:
    parent = TraceContext.new_root()
    conn = OneWayConnection("publisher")

    def emit() -> None:
        current_trace.set(parent)
        conn.emit("tick", (1,))

    contextvars.Context().run(emit)
    [[frame]] = conn.data_to_send()
    header, name, args = msgpack.unpackb(frame, raw=False)
    assert (name, args) == ("tick", [1])
    # 0.6.3's middleware keys go after message_id and v; ours do too.
    assert list(header) == [
        "message_id",
        "v",
        "trace_id",
        "span_id",
        "parent_span_id",
    ]
    child = TraceContext.from_header(header)
    assert child is not None
    assert child.trace_id == parent.trace_id
    assert child.parent_span_id == parent.span_id
    assert child.span_id != parent.span_id


def test_an_argument_msgpack_cannot_carry_raises_and_queues_nothing() -> None:
    conn = OneWayConnection("pusher")
    with pytest.raises(LocalProtocolError):
        conn.emit("add", ({1, 2},))
    with pytest.raises(TypeError):
        conn.emit(b"add", (1,))  # type: ignore[arg-type]
    assert conn.data_to_send() == []
    conn.emit("add", (1, 2))  # the encoder is still usable
    assert len(conn.data_to_send()) == 1


def test_one_way_sockets_have_no_timers() -> None:
    conn = OneWayConnection("subscriber")
    assert conn.next_deadline() is None
    assert conn.handle_timers(1e9) == []
    assert "subscriber" in repr(conn)


# -- decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_WAY_VECTORS)
def test_captured_frames_decode_into_events(name: str) -> None:
    conn = OneWayConnection(name)
    for event in load(name).events:
        got = conn.receive(event.wire)
        assert got == OneWayEvent(event.name, event.args, event.header)
        assert strict(got.header) == strict(event.header)  # message_id stays bin (bytes)
    assert dict(conn.problems.counts) == {}


def test_extra_frames_are_tolerated_the_payload_is_the_last_one() -> None:
    wire = load("pusher_event").events[0].wire
    conn = OneWayConnection("puller")
    got = conn.receive([b"\x00rid", b"", *wire])
    assert got is not None
    assert (got.method, got.args) == ("add", [1, 2])


def test_an_event_without_message_id_is_still_an_event() -> None:
    # Like 0.6.3's Puller, which never reads the id: nothing answers a one-way event.
    (event,) = [e for e in load("raw_malformed_payloads").events if e.seq == 3]
    got = OneWayConnection("puller").receive(event.wire)
    assert got == OneWayEvent("add", [1, 2], {"v": 3})


GOOD_HEADER = {"message_id": b"0" * 32, "v": 3}

MALFORMED: list[tuple[str, list[bytes], str]] = [
    ("no frames", [], "empty message"),
    ("truncated msgpack", [b"\x93"], "undecodable"),
    ("garbage", [b"\xc1\xc1\xc1"], "undecodable"),
    ("empty payload", [b""], "undecodable"),
    ("two elements", [pack(["only", "two"])], "undecodable"),
    ("four elements", [pack([GOOD_HEADER, "tick", [], 4])], "undecodable"),
    ("not an array", [pack({"a": 1})], "undecodable"),
    ("header is a list", [pack([[1], "tick", []])], "undecodable"),
    ("header is nil", [pack([None, "tick", []])], "undecodable"),
    ("name is bin", [pack([GOOD_HEADER, b"tick", []])], "bad method name"),
    ("name is an int", [pack([GOOD_HEADER, 7, []])], "bad method name"),
    ("name is nil", [pack([GOOD_HEADER, None, []])], "bad method name"),
    ("args are nil", [pack([GOOD_HEADER, "tick", None])], "bad args"),
    ("args are a map", [pack([GOOD_HEADER, "tick", {"a": 1}])], "bad args"),
    ("args are a str", [pack([GOOD_HEADER, "tick", "abc"])], "bad args"),
    ("args are an int", [pack([GOOD_HEADER, "tick", 3])], "bad args"),
]


@pytest.mark.parametrize(
    ("frames", "kind"),
    [(frames, kind) for _, frames, kind in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_input_is_dropped_counted_and_logged_once(
    frames: list[bytes], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rpccore")
    conn = OneWayConnection("subscriber")
    for _ in range(5):
        assert conn.receive(frames) is None
    assert dict(conn.problems.counts) == {kind: 5}
    lines = [r.getMessage() for r in caplog.records if r.name == "rpccore"]
    assert len(lines) == 1, lines
    assert f"subscriber: dropped input ({kind})" in lines[0]
    # A good event right after is still delivered.
    good = conn.receive([pack([GOOD_HEADER, "tick", [1]])])
    assert good == OneWayEvent("tick", [1], GOOD_HEADER)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=3))
def test_receive_never_raises(frames: list[bytes]) -> None:
    conn = OneWayConnection("puller")
    got = conn.receive(frames)
    if got is None:
        assert sum(conn.problems.counts.values()) == 1
    else:
        assert isinstance(got.method, str)
        assert type(got.args) is list


# -- dispatching --------------------------------------------------------------------------


class Handlers:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def tick(self, *args: Any) -> None:
        self.calls.append(args)

    def fail(self) -> None:
        raise ValueError("boom")

    def run(self) -> None:
        """A name the reference never exposes (its own Server.run)."""

    def _private(self) -> None:
        pass


def event(method: str, *args: Any) -> OneWayEvent:
    return OneWayEvent(method, list(args), {"v": 3})


def test_methods_are_found_with_the_servers_exposure_rules() -> None:
    handlers = Handlers()
    methods = Service(handlers).methods
    conn = OneWayConnection("puller")
    func = conn.resolve(methods, event("tick", 1, 2))
    assert func is not None
    func(1, 2)
    assert handlers.calls == [(1, 2)]
    # Private names, the reference's reserved names and the introspection built-ins are
    # not events: a one-way socket answers nothing, so _zerorpc_* would make no sense.
    for name in ("_private", "run", "_zerorpc_list", "_zerorpc_inspect", "nope"):
        assert conn.resolve(methods, event(name)) is None
    assert dict(conn.problems.counts) == {"unknown method": 5}
    assert conn.resolve({"f": print}, event("f")) is print  # a dict exposes its entries


def test_finished_methods_are_counted_and_failures_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rpccore")
    conn = OneWayConnection("subscriber")
    conn.finished("tick")
    for _ in range(3):
        conn.finished("fail", ValueError("boom"))
    conn.finished("fail", KeyError("k"))
    conn.finished("tick", ValueError("other"))
    assert conn.handled == 6
    assert dict(conn.problems.counts) == {
        "ValueError in fail": 3,
        "KeyError in fail": 1,
        "ValueError in tick": 1,
    }
    records = [r for r in caplog.records if r.name == "rpccore"]
    assert [r.getMessage().split(" [")[0] for r in records] == [
        "subscriber: method fail raised ValueError",
        "subscriber: method fail raised KeyError",
        "subscriber: method tick raised ValueError",
    ]
    assert all(r.levelno == logging.ERROR and r.exc_info for r in records)
