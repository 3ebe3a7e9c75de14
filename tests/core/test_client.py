"""ClientConnection: captured server replies replayed into our client, then unit behaviour.

Replaying a vector: ``rpccore._client.new_message_id`` is patched to hand out the ids the real
client used, so our request (and every ``_zpc_hb`` / ``_zpc_more`` we send) can be compared
byte for byte with the capture, and the captured replies route to our call. Time is the
capture's ``t``; timers fire in between exactly as a driver would fire them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from peers import Peers, rogue_frames
from vectors import C2S, S2C, IdFeed, Vector, load, strict, with_events

import rpccore._client
from rpccore import (
    CallFailed,
    ChannelLost,
    ClientConnection,
    LocalProtocolError,
    LostRemote,
    MethodNotFound,
    RemoteError,
    RemoteProtocolError,
    Reply,
    ServerConnection,
    StreamEnd,
    StreamItem,
    TimeoutExpired,
)
from rpccore._codec import MessageId
from rpccore._events import ClientEvent

CALL_VECTORS = [name for name in with_events() if load(name).client_outcome is not None]

# Per-call options of the captured client (from each vector's setup).
TIMEOUTS = {"timeout_client": 2.0, "pitfall_int_map_keys": 3.0}
WINDOWS = {"stream_window_slots10": 10}

# Where we deliberately differ from the reference client (documented in DESIGN.md):
# our unpacker accepts non-str map keys, so the reply the reference dropped is delivered.
OUR_OUTCOME = {
    "pitfall_int_map_keys": {
        "outcome": "return",
        "value": {1: "one", 2: "two"},
        "python_type": "dict",
    },
}

# Time at which the outcome must happen (the capture's elapsed_s, to within its jitter).
TIMED = {"timeout_client": 2.0, "lost_remote_client_side": 15.0}


@dataclass
class Replay:
    cid: MessageId
    client: ClientConnection
    ids: IdFeed
    sent: list[list[bytes]] = field(default_factory=list)
    events: list[tuple[float, ClientEvent]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return any(isinstance(e, Reply | StreamEnd | CallFailed) for _, e in self.events)


def replay_client(vector: Vector, monkeypatch: pytest.MonkeyPatch) -> Replay:
    ids = IdFeed(vector.ids(C2S))
    monkeypatch.setattr(rpccore._client, "new_message_id", ids)
    client = ClientConnection(window=WINDOWS.get(vector.name, 100))
    request = vector.request
    assert request.header is not None
    extras = {k: v for k, v in request.header.items() if k not in ("message_id", "v")}
    cid = client.start_call(
        request.name,
        request.args,
        now=request.t,
        timeout=TIMEOUTS.get(vector.name, 30.0),
        header=extras or None,
    )
    replay = Replay(cid, client, ids, client.data_to_send())

    def run_timers(until: float) -> None:
        while (due := client.next_deadline()) is not None and due <= until:
            replay.events.extend((due, e) for e in client.handle_timers(due))
            replay.sent.extend(client.data_to_send())

    for event in vector.events[1:]:
        run_timers(event.t)
        if event.direction != S2C:
            continue
        got = client.receive(event.wire, event.t)
        if got is not None:
            replay.events.append((event.t, got))
            if isinstance(got, StreamItem):
                client.request_next(cid)  # the application reads on
        replay.sent.extend(client.data_to_send())
    assert vector.client_outcome is not None
    if not replay.finished:
        run_timers(request.t + vector.client_outcome["elapsed_s"])
    return replay


def outcome_of(events: list[ClientEvent]) -> dict[str, Any]:
    """Our events, in the shape of a vector's client_outcome."""
    *before, last = events
    items = [e.item for e in before if isinstance(e, StreamItem)]
    assert len(items) == len(before), "only stream items may precede the end of a call"
    if isinstance(last, Reply):
        assert not items
        return {"outcome": "return", "value": last.value, "python_type": type(last.value).__name__}
    if isinstance(last, StreamEnd):
        return {"outcome": "stream", "items": items}
    assert isinstance(last, CallFailed)
    error = last.error
    if isinstance(error, RemoteError):
        return {
            "outcome": "exception",
            "exception_type": "zerorpc.RemoteError",
            "remote_name": error.name,
            "remote_msg": error.message,
            "remote_traceback": error.traceback,
        }
    kind = {TimeoutExpired: "TimeoutExpired", LostRemote: "LostRemote"}[type(error)]
    return {
        "outcome": "exception",
        "exception_type": f"zerorpc.exceptions.{kind}",
        "str": str(error),
    }


def expected_outcome(vector: Vector) -> dict[str, Any]:
    if vector.name in OUR_OUTCOME:
        return OUR_OUTCOME[vector.name]
    assert vector.client_outcome is not None
    return {k: v for k, v in vector.client_outcome.items() if k != "elapsed_s"}


@pytest.mark.parametrize("name", CALL_VECTORS)
def test_client_replays_the_captured_call(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    vector = load(name)
    replay = replay_client(vector, monkeypatch)

    assert strict(outcome_of([e for _, e in replay.events])) == strict(expected_outcome(vector))
    # Everything we sent is byte-identical to what the real client sent: the request
    # (header extras included), every _zpc_hb and every _zpc_more, in the same order.
    assert replay.sent == [event.wire for event in vector.sent(C2S)]
    assert replay.ids.fresh == 0
    # The call is over: nothing open, no timer left.
    assert replay.client.open_channels == 0
    assert replay.client.next_deadline() is None
    if name in TIMED:
        ended_at = replay.events[-1][0]
        assert ended_at == TIMED[name]
        assert vector.client_outcome is not None
        assert ended_at == pytest.approx(vector.client_outcome["elapsed_s"], abs=0.05)


def test_unknown_method_is_method_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    replay = replay_client(load("err_unknown_method"), monkeypatch)
    (_, failed) = replay.events[-1]
    assert isinstance(failed, CallFailed)
    assert type(failed.error) is MethodNotFound
    assert isinstance(failed.error, RemoteError)
    assert (failed.error.name, failed.error.message) == ("NameError", "does_not_exist")


def test_remote_exception_carries_name_message_and_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replay = replay_client(load("err_exception"), monkeypatch)
    (_, failed) = replay.events[-1]
    assert isinstance(failed, CallFailed)
    error = failed.error
    assert type(error) is RemoteError
    assert error.name == "ValueError"
    assert error.message == "something went wrong"
    assert error.traceback is not None
    assert error.traceback.startswith("Traceback (most recent call last):\n")
    assert error.traceback.endswith("ValueError: something went wrong\n")
    assert str(error) == "ValueError: something went wrong"


def test_stream_3_grants_100_after_the_first_item_like_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vector = load("stream_3")
    monkeypatch.setattr(rpccore._client, "new_message_id", IdFeed(vector.ids(C2S)))
    client = ClientConnection()
    cid = client.start_call("count", [3], now=0.0)
    request, more = (event.wire for event in vector.sent(C2S))
    assert client.data_to_send() == [request]
    first = vector.sent(S2C)[0]
    assert client.receive(first.wire, 0.001) == StreamItem(cid, 0)
    assert client.data_to_send() == []  # no grant until the application reads on
    client.request_next(cid)
    assert client.data_to_send() == [more]  # _zpc_more [100], byte for byte


def test_str_message_id_gets_a_str_response_to(monkeypatch: pytest.MonkeyPatch) -> None:
    vector = load("raw_str_message_id")
    request, reply = vector.events
    monkeypatch.setattr(rpccore._client, "new_message_id", lambda: request.message_id)
    client = ClientConnection()
    cid = client.start_call("add", [40, 2], now=0.0)
    assert cid == "6ce9503a-bfb8-486a-ac79-e2ed225ace79"
    assert client.data_to_send() == [request.wire]  # the id goes out as msgpack str
    assert type(reply.response_to) is str
    assert client.receive(reply.wire, 0.002) == Reply(cid, 42)


def test_response_to_must_have_the_type_of_the_message_id() -> None:
    client = ClientConnection()
    cid = client.start_call("add", [1, 2], now=0.0)
    assert isinstance(cid, bytes)
    wrong_type = rogue_frames("OK", [3], response_to=cid.decode())
    assert client.receive(wrong_type, 0.1) is None
    assert client.problems.counts["unroutable"] == 1
    assert client.is_open(cid)
    assert client.receive(rogue_frames("OK", [3], response_to=cid), 0.2) == Reply(cid, 3)


@pytest.mark.parametrize(
    ("v", "args", "expected"),
    [
        pytest.param(
            None,
            ["ValueError('something went wrong')"],
            RemoteError("RemoteError", "ValueError('something went wrong')", None),
            id="no-v",
        ),
        pytest.param(
            1,
            ["ValueError('x')"],
            RemoteError("RemoteError", "ValueError('x')", None),
            id="v1",
        ),
        pytest.param(
            3,
            ["KeyError", "'k'", None],
            RemoteError("KeyError", "'k'", None),
            id="nil-traceback-like-node",
        ),
        pytest.param(
            3,
            ["KeyError", "'k'"],
            RemoteError("KeyError", "'k'", None),
            id="two-elements",
        ),
        pytest.param(
            3,
            ["E", "m", "tb\n"],
            RemoteError("E", "m", "tb\n"),
            id="v3",
        ),
    ],
)
def test_err_forms(v: int | None, args: list[Any], expected: RemoteError) -> None:
    client = ClientConnection()
    cid = client.start_call("fail", [], now=0.0)
    event = client.receive(rogue_frames("ERR", args, response_to=cid, v=v), 0.1)
    assert isinstance(event, CallFailed)
    error = event.error
    assert type(error) is RemoteError
    assert (error.name, error.message, error.traceback) == (
        expected.name,
        expected.message,
        expected.traceback,
    )


def test_v1_server_reply_with_v3_header_and_one_element_is_a_protocol_error() -> None:
    # raw_v1_client's reply says v: 3 but carries the v1 one-element form; the reference
    # client unpacks three elements from a v >= 2 ERR and fails too.
    vector = load("raw_v1_client")
    request, reply = vector.events
    client = ClientConnection()
    request_id = request.message_id
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rpccore._client, "new_message_id", lambda: request_id)
        cid = client.start_call("fail", [], now=0.0)
    event = client.receive(reply.wire, 0.007)
    assert isinstance(event, CallFailed)
    assert type(event.error) is RemoteProtocolError
    assert str(event.error).startswith("ERR args not [name, message, traceback]")
    assert not client.is_open(cid)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        pytest.param("WAT", [1], "unable to find a pattern for: 'WAT'", id="unknown-name"),
        pytest.param("OK", 3, "OK args not [value]: 3", id="OK-not-an-array"),
        pytest.param("OK", [], "OK args not [value]: []", id="OK-empty-array"),
        pytest.param("ERR", "boom", "ERR args not [name, message, traceback]", id="ERR-str"),
        pytest.param("ERR", ["a", "b", "c", "d"], "ERR args not", id="ERR-4-elements"),
    ],
)
def test_malformed_replies_fail_the_call(name: str, args: Any, message: str) -> None:
    client = ClientConnection()
    cid = client.start_call("m", [], now=0.0)
    event = client.receive(rogue_frames(name, args, response_to=cid), 0.1)
    assert isinstance(event, CallFailed)
    assert type(event.error) is RemoteProtocolError
    assert str(event.error).startswith(message)
    assert client.open_channels == 0
    assert client.next_deadline() is None


def deeply_nested(depth: int) -> bytes:
    """msgpack for [[[...[nil]...]]]: msgpack-python decodes up to 1024 levels."""
    return b"\x91" * depth + b"\xc0"


@pytest.mark.parametrize("where", ["err-name", "unroutable-name"])
def test_receive_never_raises_on_deeply_nested_values(where: str) -> None:
    client = ClientConnection()
    cid = client.start_call("m", [], now=0.0)
    assert isinstance(cid, bytes)
    if where == "err-name":
        head = {"message_id": b"x", "v": 3, "response_to": cid}
        packed_head = msgpack.packb(head, use_bin_type=True)
        payload = b"\x93" + packed_head + b"\xa3ERR\x92" + deeply_nested(1015) + b"\xa1m"
    else:
        payload = b"\x93\x81\xabresponse_to\xa1?" + deeply_nested(1015) + b"\x90"
    event = client.receive([b"", payload], 0.1)
    if where == "err-name":
        assert isinstance(event, CallFailed)
        assert client.open_channels == 0
    else:
        assert event is None
        assert dict(client.problems.counts) == {"unroutable": 1}


def test_a_reply_without_the_delimiter_is_accepted() -> None:
    client = ClientConnection()
    cid = client.start_call("add", [1, 2], now=0.0)
    (_, payload) = rogue_frames("OK", [3], response_to=cid)
    assert client.receive([payload], 0.1) == Reply(cid, 3)


def test_control_events_from_the_server_are_not_delivered() -> None:
    client = ClientConnection()
    cid = client.start_call("slow", [], now=0.0)
    assert client.receive(rogue_frames("_zpc_hb", [0], response_to=cid), 1.0) is None
    assert client.receive(rogue_frames("_zpc_more", [5], response_to=cid), 1.0) is None
    assert client.is_open(cid)
    assert client.receive(rogue_frames("OK", ["done"], response_to=cid), 2.0) == Reply(cid, "done")
    assert dict(client.problems.counts) == {}


def test_unroutable_and_undecodable_input_is_dropped_and_counted() -> None:
    client = ClientConnection()
    client.start_call("add", [1, 2], now=0.0)
    inputs = [
        rogue_frames("OK", [3], response_to=b"never-sent"),
        rogue_frames("OK", [3]),  # no response_to: a client has no use for requests
        rogue_frames("OK", [3], response_to=[1, 2]),  # unhashable id
        [b"", b"\x93"],
        [b"", b"not msgpack \xc1"],
    ]
    for frames in inputs:
        assert client.receive(frames, 0.5) is None
    assert dict(client.problems.counts) == {"unroutable": 3, "undecodable": 2}
    assert client.open_channels == 1
    assert len(client.data_to_send()) == 1  # only the request


def test_start_call_with_unencodable_args_queues_nothing() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError, match=re.escape("can not serialize 'set' object")):
        client.start_call("echo", [{1, 2}], now=0.0)
    assert client.data_to_send() == []
    assert client.open_channels == 0
    assert client.next_deadline() is None


def test_request_carries_extra_header_keys_but_control_events_do_not() -> None:
    peers = Peers()
    cid = peers.call("count", [2], header={"trace_id": "t" * 32})
    (request,) = peers.server_events
    assert request.header == {"message_id": cid, "v": 3, "trace_id": "t" * 32}
    peers.serve_stream(request.channel, range(2))
    assert [t.name for t in peers.sent("c2s")] == ["count", "_zpc_more"]
    (more,) = peers.sent("c2s", "_zpc_more")
    assert more.event is not None
    assert list(more.event.header) == ["message_id", "v", "response_to"]


def test_window_must_be_at_least_two() -> None:
    with pytest.raises(ValueError, match="window must be at least 2"):
        ClientConnection(window=1)
    assert ClientConnection(window=2).window == 2


# -- timeouts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (2, "timeout after 2s, when calling remote method slow"),
        (2.0, "timeout after 2s, when calling remote method slow"),
        (2.5, "timeout after 2.5s, when calling remote method slow"),
        (30.0, "timeout after 30s, when calling remote method slow"),
    ],
)
def test_timeout_fires_at_the_deadline_with_the_reference_message(
    timeout: float, message: str
) -> None:
    client = ClientConnection(heartbeat=None)
    cid = client.start_call("slow", [4], now=10.0, timeout=timeout)
    client.data_to_send()
    assert client.next_deadline() == 10.0 + timeout
    assert client.handle_timers(10.0 + timeout - 0.001) == []
    (event,) = client.handle_timers(10.0 + timeout)
    assert isinstance(event, CallFailed)
    assert event.channel == cid
    assert type(event.error) is TimeoutExpired
    assert str(event.error) == message
    assert client.data_to_send() == []  # nothing tells the server
    assert client.open_channels == 0
    assert client.next_deadline() is None


def test_late_reply_after_timeout_is_unroutable(monkeypatch: pytest.MonkeyPatch) -> None:
    vector = load("timeout_client")
    replay = replay_client(vector, monkeypatch)
    assert [type(e) for _, e in replay.events] == [CallFailed]
    assert replay.sent == [vector.request.wire]
    assert dict(replay.client.problems.counts) == {"unroutable": 1}


def test_no_timeout_means_no_deadline() -> None:
    client = ClientConnection(heartbeat=None)
    client.start_call("slow", [], now=0.0, timeout=None)
    assert client.next_deadline() is None
    assert client.handle_timers(1e9) == []
    assert client.open_channels == 1


def test_timeout_applies_only_to_the_first_reply() -> None:
    peers = Peers(client=ClientConnection(window=4))
    cid = peers.call("count", [], timeout=2.0)
    (request,) = peers.server_events
    peers.advance(1.5)
    assert peers.server.can_send(request.channel)
    peers.server.send_stream_item(request.channel, "first")
    peers.pump()
    assert peers.events == [StreamItem(cid, "first")]
    # The rest of the stream trickles in long after the 2 s timeout: no TimeoutExpired.
    for second in range(1, 6):
        peers.advance(20.0)
        peers.server.send_stream_item(request.channel, second)
        peers.pump()
    peers.advance(20.0)
    peers.server.send_stream_done(request.channel)
    peers.pump()
    assert peers.events == [
        StreamItem(cid, "first"),
        *(StreamItem(cid, n) for n in range(1, 6)),
        StreamEnd(cid),
    ]
    assert peers.idle()


def test_heartbeats_do_not_reset_the_timeout() -> None:
    peers = Peers()
    cid = peers.call("slow", [], timeout=12.0)
    peers.advance(30.0)
    # The server was alive and heartbeating at 5 and 10 s, before the 12 s timeout.
    assert [t.at for t in peers.sent("s2c", "_zpc_hb") if t.at < 12.0] == [5.0, 10.0]
    (failed,) = peers.events
    assert isinstance(failed, CallFailed)
    assert failed.channel == cid
    assert type(failed.error) is TimeoutExpired
    assert str(failed.error) == "timeout after 12s, when calling remote method slow"


# -- cancel -------------------------------------------------------------------------------


def test_cancel_forgets_the_call_and_drops_the_late_reply() -> None:
    peers = Peers()
    cid = peers.call("slow", [])
    (request,) = peers.server_events
    peers.client.cancel(cid)
    assert not peers.client.is_open(cid)
    assert peers.client.next_deadline() is None
    assert peers.client.data_to_send() == []  # no cancel message exists
    peers.server.send_reply(request.channel, "late")
    peers.pump()
    assert peers.events == []
    assert dict(peers.client.problems.counts) == {"unroutable": 1}
    assert peers.idle()


def test_cancelled_call_is_noticed_by_the_server_when_heartbeats_stop() -> None:
    peers = Peers()
    cid = peers.call("slow", [])
    (request,) = peers.server_events
    peers.advance(7.0)
    peers.client.cancel(cid)
    # The client's last heartbeat was at 5 s: lost at the first server tick after 15 s.
    peers.run_until(19.999)
    assert peers.server_events == [request]
    peers.run_until(20.0)
    assert peers.server_events == [request, ChannelLost(request.channel)]
    assert [t.at for t in peers.sent("c2s", "_zpc_hb")] == [5.0]
    assert peers.idle()


def test_cancel_and_request_next_of_unknown_calls_are_harmless() -> None:
    client = ClientConnection()
    client.cancel(b"nope")
    client.request_next(b"nope")
    assert client.data_to_send() == []
    assert client.open_channels == 0


# -- many calls ---------------------------------------------------------------------------


def test_many_mixed_calls_leave_nothing_open() -> None:
    peers = Peers(client=ClientConnection(window=4))
    expected: dict[MessageId, list[ClientEvent]] = {}
    for n in range(60):
        kind = n % 6
        cid = peers.call("m", [n], timeout=3.0)
        request = peers.server_events[-1]
        assert request.channel[1] == cid
        if kind == 0:
            peers.server.send_reply(request.channel, n)
            expected[cid] = [Reply(cid, n)]
        elif kind == 1:
            peers.server.send_error(request.channel, "ValueError", f"bad {n}", "tb\n")
        elif kind == 2:
            peers.serve_stream(request.channel, range(n % 11))
            expected[cid] = [StreamItem(cid, i) for i in range(n % 11)] + [StreamEnd(cid)]
        elif kind == 3:
            peers.server.send_exception(request.channel, KeyError(n))
        elif kind == 4:
            peers.client.cancel(cid)  # the server's channel dies by heartbeat
        else:
            pass  # never answered: the client times out, the server loses the client
        peers.pump()
        peers.advance(0.25)
    peers.advance(60.0)
    got: dict[MessageId, list[ClientEvent]] = {}
    for event in peers.events:
        got.setdefault(event.channel, []).append(event)
    for cid, events in expected.items():
        assert got[cid] == events
    failures = [e for e in peers.events if isinstance(e, CallFailed)]
    assert sorted(type(e.error).__name__ for e in failures) == sorted(
        ["RemoteError"] * 20 + ["TimeoutExpired"] * 10
    )
    lost = [e for e in peers.server_events if isinstance(e, ChannelLost)]
    assert len(lost) == 20  # the cancelled and the timed-out calls
    assert peers.open_channels() == (0, 0)
    assert peers.idle()
    assert peers.client.data_to_send() == []
    assert peers.server.data_to_send() == []


def test_repr_tells_the_state() -> None:
    client = ClientConnection(window=8)
    client.start_call("m", [], now=0.0)
    assert repr(client) == "<ClientConnection open=1 heartbeat=5.0 window=8 queued=1>"
    server = ServerConnection(heartbeat=None)
    assert repr(server) == "<ServerConnection open=0 heartbeat=None queued=0>"


def test_per_call_metadata_joins_the_header_after_the_trace_and_replaces_nothing() -> None:
    client = ClientConnection()
    cid = client.start_call(
        "add",
        [1, 2],
        now=0.0,
        header={"trace_id": "a" * 32, "span_id": "b" * 16},
        metadata={"zerogate_token_id": "tok_1", "trace_id": "f" * 32, "message_id": b"x"},
    )
    [[_, payload]] = client.data_to_send()
    header, name, args = msgpack.unpackb(payload, raw=False)
    assert (name, args) == ("add", [1, 2])
    assert header["message_id"] == cid
    assert header["trace_id"] == "a" * 32
    assert header["zerogate_token_id"] == "tok_1"
