"""ServerConnection: captured requests replayed into our server, then unit behaviour.

Replaying a vector: the captured client->server frames go into our server as a ROUTER sees
them (``[routing_id] + frames``); wherever the real server sent a reply, ours is asked to send
the same thing (send_reply / send_stream_item / send_error ...), and its heartbeats come from
its own timers on the capture's clock. With ``rpccore._server.new_message_id`` handing out
the real server's ids, what we send must equal the capture byte for byte.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

import pytest
from peers import Peers, rogue_frames
from vectors import C2S, S2C, IdFeed, Vector, load, with_events

import rpccore._client
import rpccore._server
from rpccore import (
    LocalProtocolError,
    Reply,
    Request,
    ServerConnection,
)
from rpccore._codec import Encoder, Frames, decode
from rpccore._events import ServerEvent

# Vectors whose requests our server deliberately answers differently (tested one by one
# below), and one whose "server" was a bare socket that never answered.
SPECIAL = {
    "raw_args_nil",
    "raw_args_map",
    "raw_bin_method_name",
    "raw_bin_header_keys",
    "raw_malformed_payloads",
    "raw_v1_client",
    "lost_remote_client_side",
}
SERVER_VECTORS = [
    name for name in with_events() if load(name).events[0].direction == C2S and name not in SPECIAL
]

# Header keys the reference's middleware added to its replies; the core adds none.
MIDDLEWARE_KEYS = {"middleware_task_context": {"trace_id"}}

# Input our server drops while replaying (late grants after the stream ended).
DROPPED = {"stream_window_slots10": {"unroutable": 1}}

ROUTING_ID = b"\x00rid01"


@dataclass
class ServerReplay:
    server: ServerConnection
    ids: IdFeed
    rid: bytes
    sent: list[Frames] = field(default_factory=list)
    events: list[tuple[float, ServerEvent]] = field(default_factory=list)

    @property
    def requests(self) -> list[Request]:
        return [e for _, e in self.events if isinstance(e, Request)]


def replay_server(vector: Vector, monkeypatch: pytest.MonkeyPatch) -> ServerReplay:
    ids = IdFeed(vector.ids(S2C))
    monkeypatch.setattr(rpccore._server, "new_message_id", ids)
    server = ServerConnection()
    rid = vector.routing_id or ROUTING_ID
    replay = ServerReplay(server, ids, rid)

    def run_timers(until: float) -> None:
        while (due := server.next_deadline()) is not None and due <= until:
            replay.events.extend((due, e) for e in server.handle_timers(due))
            replay.sent.extend(server.data_to_send())

    for event in vector.events:
        run_timers(event.t)
        if event.direction == C2S:
            got = server.receive([rid, *event.wire], event.t)
            if got is not None:
                replay.events.append((event.t, got))
        elif event.name != "_zpc_hb":  # our heartbeats come from our timers
            (channel,) = {r.channel for r in replay.requests}
            assert server.can_send(channel), f"no credit to send seq {event.seq}"
            if event.name == "OK":
                server.send_reply(channel, event.args[0])
            elif event.name == "STREAM":
                assert server.send_stream_item(channel, event.args)
            elif event.name == "STREAM_DONE":
                server.send_stream_done(channel)
            else:
                assert event.name == "ERR"
                server.send_error(channel, *event.args)
        replay.sent.extend(server.data_to_send())
    return replay


def expected_frames(vector: Vector, rid: bytes) -> list[Frames]:
    drop = MIDDLEWARE_KEYS.get(vector.name, set())
    frames = []
    for event in vector.sent(S2C):
        payload = event.payload
        if drop:
            assert event.header is not None
            header = {k: v for k, v in event.header.items() if k not in drop}
            payload = Encoder().encode(header, event.name, event.args)
        frames.append([rid, b"", payload])
    return frames


@pytest.mark.parametrize("name", SERVER_VECTORS)
def test_server_replays_the_captured_conversation(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = load(name)
    replay = replay_server(vector, monkeypatch)
    request = vector.request
    assert request.header is not None

    (got,) = replay.requests
    assert got == Request(
        ((replay.rid,), request.message_id), request.name, request.args, request.header
    )
    # What we sent is what the real server sent, envelope and bytes, heartbeats included.
    assert replay.sent == expected_frames(vector, replay.rid)
    assert replay.ids.fresh == 0
    assert dict(replay.server.problems.counts) == DROPPED.get(name, {})
    replied = any(e.name in ("OK", "ERR", "STREAM_DONE") for e in vector.sent(S2C))
    assert replay.server.open_channels == (0 if replied else 1)


# -- requests the reference answers oddly ------------------------------------------------


def serve_one(name: str, monkeypatch: pytest.MonkeyPatch) -> ServerReplay:
    vector = load(name)
    monkeypatch.setattr(rpccore._server, "new_message_id", IdFeed(vector.ids(S2C)))
    server = ServerConnection()
    replay = ServerReplay(server, IdFeed([]), ROUTING_ID)
    for event in vector.sent(C2S):
        got = server.receive([ROUTING_ID, *event.wire], event.t)
        if got is not None:
            replay.events.append((event.t, got))
    replay.sent = server.data_to_send()
    return replay


@pytest.mark.parametrize(
    ("name", "error_name", "message", "problem"),
    [
        pytest.param(
            "raw_args_nil",
            "TypeError",
            "arguments must be an array, not nil",
            "bad args",
            id="args-nil",
        ),
        pytest.param(
            "raw_args_map",
            "TypeError",
            "arguments must be an array, not map",  # the reference passed the map's keys
            "bad args",
            id="args-map",
        ),
        pytest.param(
            "raw_bin_method_name",
            "NameError",
            "b'add'",  # the reference's very message
            "bad method name",
            id="bin-method-name",
        ),
    ],
)
def test_bad_requests_are_answered_with_err(
    name: str, error_name: str, message: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = load(name)
    replay = serve_one(name, monkeypatch)
    assert replay.events == []  # the application never sees the request
    (frames,) = replay.sent
    assert frames[:2] == [ROUTING_ID, b""]
    reply = decode(frames[-1])
    assert reply.name == "ERR"
    assert reply.args == [error_name, message, f"{error_name}: {message}\n"]
    assert reply.header["response_to"] == vector.request.message_id
    assert reply.header["message_id"] == vector.sent(S2C)[0].message_id
    assert dict(replay.server.problems.counts) == {problem: 1}
    assert replay.server.open_channels == 0
    assert replay.server.next_deadline() is None


def test_bin_method_name_error_matches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = load("raw_bin_method_name").sent(S2C)[0]
    (frames,) = serve_one("raw_bin_method_name", monkeypatch).sent
    assert decode(frames[-1]).args[:2] == reference.args[:2] == ["NameError", "b'add'"]


@pytest.mark.parametrize(
    ("name", "problems"),
    [
        ("raw_bin_header_keys", {"bin header keys": 1}),
        ("raw_malformed_payloads", {"undecodable": 2, "no message_id": 1}),
    ],
)
def test_undeliverable_requests_are_dropped_counted_and_unanswered(
    name: str, problems: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    replay = serve_one(name, monkeypatch)
    assert replay.events == []
    assert replay.sent == []
    assert dict(replay.server.problems.counts) == problems
    assert replay.server.open_channels == 0
    assert replay.server.next_deadline() is None
    assert replay.server.handle_timers(60.0) == []
    assert replay.server.data_to_send() == []


def test_v1_request_gets_the_repr_error_and_passive_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vector = load("raw_v1_client")
    request, reply = vector.events
    monkeypatch.setattr(rpccore._server, "new_message_id", IdFeed([reply.message_id]))
    server = ServerConnection()
    event = server.receive([ROUTING_ID, *request.wire], request.t)
    assert event == Request(
        ((ROUTING_ID,), request.message_id), "fail", [], {"message_id": request.message_id}
    )
    # Passive: no heartbeat of ours until the client heartbeats (observed for 7 s).
    assert server.next_deadline() is None
    assert server.handle_timers(7.0) == []
    assert server.data_to_send() == []
    server.send_exception(event.channel, ValueError("something went wrong"))
    assert server.data_to_send() == [[ROUTING_ID, *reply.wire]]  # ERR [repr], byte for byte
    assert server.open_channels == 0


def test_v1_client_heartbeat_starts_ours() -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("slow", [], message_id=b"m", v=None)], 0.0)
    assert isinstance(request, Request)
    assert server.next_deadline() is None
    hb = rogue_frames("_zpc_hb", [0], response_to=b"m", v=None)
    assert server.receive([b"r", *hb], 3.0) is None
    assert server.next_deadline() == 8.0
    assert server.handle_timers(8.0) == []
    (frames,) = server.data_to_send()
    assert decode(frames[-1]).name == "_zpc_hb"


@pytest.mark.parametrize(
    ("v", "passive", "err_args"),
    [
        pytest.param(None, True, ["KeyError('k')"], id="absent"),
        pytest.param(1, True, ["KeyError('k')"], id="v1"),
        pytest.param(0, True, ["KeyError('k')"], id="v0-as-v1"),
        pytest.param("3", True, ["KeyError('k')"], id="str-as-v1"),
        pytest.param(True, True, ["KeyError('k')"], id="bool-as-v1"),
        pytest.param(2, False, ["KeyError", "'k'", "KeyError: 'k'\n"], id="v2"),
        pytest.param(3, False, ["KeyError", "'k'", "KeyError: 'k'\n"], id="v3"),
        pytest.param(9, False, ["KeyError", "'k'", "KeyError: 'k'\n"], id="v9"),
    ],
)
def test_protocol_version_decides_error_form_and_heartbeat_mode(
    v: Any, passive: bool, err_args: list[str]
) -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("get", [], message_id=b"m", v=v)], 0.0)
    assert isinstance(request, Request)
    assert server.next_deadline() == (None if passive else 5.0)
    server.send_exception(request.channel, KeyError("k"))
    (frames,) = server.data_to_send()
    assert decode(frames[-1]).args == err_args


def test_extra_header_keys_reach_the_application_but_are_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replay = replay_server(load("raw_extra_header_keys"), monkeypatch)
    (request,) = replay.requests
    assert request.header["trace_id"] == "t-1"
    assert request.header["x-custom"] == 7
    (frames,) = replay.sent
    assert list(decode(frames[-1]).header) == ["message_id", "v", "response_to"]


def test_request_without_delimiter_is_served_and_the_reply_has_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vector = load("raw_no_delimiter")
    assert len(vector.request.wire) == 1
    replay = replay_server(vector, monkeypatch)
    (request,) = replay.requests
    assert (request.method, request.args) == ("add", [2, 3])
    (frames,) = replay.sent
    assert frames[:2] == [replay.rid, b""]
    assert decode(frames[-1]).args == [5]


def test_str_message_id_is_echoed_as_str(monkeypatch: pytest.MonkeyPatch) -> None:
    replay = replay_server(load("raw_str_message_id"), monkeypatch)
    (request,) = replay.requests
    assert request.channel == ((replay.rid,), "6ce9503a-bfb8-486a-ac79-e2ed225ace79")
    (frames,) = replay.sent
    assert frames[-1].count(b"\xd9\x246ce9503a") == 1  # response_to packed as str8
    assert decode(frames[-1]).header["response_to"] == "6ce9503a-bfb8-486a-ac79-e2ed225ace79"


# -- replies -----------------------------------------------------------------------------


def single_request(server: ServerConnection, **header: Any) -> Request:
    request = server.receive([b"r", *rogue_frames("m", [], message_id=b"m", **header)], 0.0)
    assert isinstance(request, Request)
    return request


@pytest.mark.parametrize(
    ("value", "vector"),
    [
        ({1, 2}, "err_unserializable_result"),
        (2**64, "err_int_overflow_result"),
    ],
)
def test_unencodable_reply_becomes_err_like_the_reference(value: Any, vector: str) -> None:
    reference = load(vector).sent(S2C)[0]
    server = ServerConnection()
    request = single_request(server)
    server.send_reply(request.channel, value)
    (frames,) = server.data_to_send()
    reply = decode(frames[-1])
    assert reply.name == "ERR"
    name, message, text = reply.args
    assert [name, message] == reference.args[:2]
    assert text.endswith(f"{name}: {message}\n")
    assert server.open_channels == 0


def test_a_reply_with_a_lone_surrogate_becomes_err() -> None:
    server = ServerConnection()
    request = single_request(server)
    server.send_reply(request.channel, "bad \udcff")
    (frames,) = server.data_to_send()
    reply = decode(frames[-1])
    assert reply.name == "ERR"
    assert reply.args[0] == "UnicodeEncodeError"
    assert reply.args[1] == (
        "'utf-8' codec can't encode character '\\udcff' in position 4: surrogates not allowed"
    )
    assert server.open_channels == 0


def test_unencodable_stream_item_ends_the_stream_with_err() -> None:
    server = ServerConnection()
    request = single_request(server)
    assert server.send_stream_item(request.channel, {"a"}) is False
    (frames,) = server.data_to_send()
    reply = decode(frames[-1])
    assert reply.name == "ERR"
    assert reply.args[:2] == ["TypeError", "can not serialize 'set' object"]
    assert server.open_channels == 0


def test_send_exception_sends_the_traceback() -> None:
    server = ServerConnection()
    request = single_request(server)

    def fail() -> None:
        raise ValueError("something went wrong")

    try:
        fail()
    except ValueError as exc:
        server.send_exception(request.channel, exc)
        expected_text = traceback.format_exc()
    (frames,) = server.data_to_send()
    reply = decode(frames[-1])
    assert reply.name == "ERR"
    assert reply.args == ["ValueError", "something went wrong", expected_text]
    assert "in fail\n" in reply.args[2]


@pytest.mark.parametrize(
    ("exc", "name", "message"),
    [
        (KeyError("boom"), "KeyError", "'boom'"),
        (RuntimeError("café ☃"), "RuntimeError", "café ☃"),
        (ValueError(42, {"k": "v"}), "ValueError", "(42, {'k': 'v'})"),
    ],
)
def test_send_exception_names_and_messages_like_the_reference(
    exc: Exception, name: str, message: str
) -> None:
    server = ServerConnection()
    request = single_request(server)
    server.send_exception(request.channel, exc)
    (frames,) = server.data_to_send()
    assert decode(frames[-1]).args[:2] == [name, message]


def test_send_exception_with_an_unencodable_message_still_answers() -> None:
    server = ServerConnection()
    request = single_request(server)
    server.send_exception(request.channel, ValueError("bad file name \udcff.txt"))
    (frames,) = server.data_to_send()
    reply = decode(frames[-1])
    assert reply.name == "ERR"
    assert reply.args[0] == "ValueError"
    assert server.open_channels == 0


def test_send_error_without_traceback_sends_a_one_line_one() -> None:
    server = ServerConnection()
    request = single_request(server)
    server.send_error(request.channel, "NameError", "nope")
    (frames,) = server.data_to_send()
    assert decode(frames[-1]).args == ["NameError", "nope", "NameError: nope\n"]


# -- channels ----------------------------------------------------------------------------


def test_two_clients_with_the_same_message_id_do_not_collide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpccore._client, "new_message_id", lambda: b"same-id")
    peers = Peers(rid=b"A")
    peers.add_client(b"B")
    a = peers.call("add", [1, 2], rid=b"A")
    b = peers.call("add", [10, 20], rid=b"B")
    assert a == b == b"same-id"
    first, second = peers.server_events
    assert isinstance(first, Request)
    assert isinstance(second, Request)
    assert (first.channel, second.channel) == (((b"A",), b"same-id"), ((b"B",), b"same-id"))
    assert peers.server.open_channels == 2
    peers.server.send_reply(second.channel, 30)
    peers.server.send_reply(first.channel, 3)
    peers.pump()
    assert peers.client_events == {b"A": [Reply(a, 3)], b"B": [Reply(b, 30)]}
    assert dict(peers.server.problems.counts) == {}


def test_a_peer_cannot_reach_into_another_peers_channel() -> None:
    server = ServerConnection()
    request = server.receive([b"A", *rogue_frames("count", [], message_id=b"m")], 0.0)
    assert isinstance(request, Request)
    assert server.can_send(request.channel)
    server.send_stream_item(request.channel, 0)
    assert not server.can_send(request.channel)
    # Peer B guesses A's channel id and grants credit: it goes nowhere.
    assert server.receive([b"B", *rogue_frames("_zpc_more", [5], response_to=b"m")], 0.1) is None
    assert not server.can_send(request.channel)
    assert dict(server.problems.counts) == {"unroutable": 1}


def test_duplicate_request_ids_are_dropped_while_the_call_is_open() -> None:
    server = ServerConnection()
    frames = [b"r", *rogue_frames("slow", [], message_id=b"dup")]
    first = server.receive(frames, 0.0)
    assert isinstance(first, Request)
    assert server.receive(frames, 0.1) is None
    assert server.receive(frames, 0.2) is None
    assert dict(server.problems.counts) == {"duplicate id": 2}
    assert server.open_channels == 1
    assert server.data_to_send() == []


def test_the_whole_envelope_is_kept_through_proxies() -> None:
    server = ServerConnection()
    request = server.receive([b"hop1", b"hop2", *rogue_frames("m", [], message_id=b"x")], 0.0)
    assert isinstance(request, Request)
    assert request.channel == ((b"hop1", b"hop2"), b"x")
    server.send_reply(request.channel, 1)
    (frames,) = server.data_to_send()
    assert frames[:3] == [b"hop1", b"hop2", b""]


def test_close_forgets_the_channel_silently() -> None:
    server = ServerConnection()
    request = single_request(server)
    server.close(request.channel)
    server.close(request.channel)  # twice is harmless
    assert server.open_channels == 0
    assert server.next_deadline() is None
    assert server.data_to_send() == []
    assert not server.can_send(request.channel)
    with pytest.raises(LocalProtocolError, match="the channel is closed"):
        server.send_reply(request.channel, 1)
    hb = rogue_frames("_zpc_hb", [0], response_to=b"m")
    assert server.receive([b"r", *hb], 1.0) is None
    assert dict(server.problems.counts) == {"unroutable": 1}


@pytest.mark.parametrize(
    ("method", "args"),
    [
        pytest.param("send_reply", (2,), id="OK"),
        pytest.param("send_stream_item", (2,), id="STREAM"),
        pytest.param("send_stream_done", (), id="STREAM_DONE"),
        pytest.param("send_exception", (ValueError(),), id="ERR-exception"),
        pytest.param("send_error", ("E", "m"), id="ERR"),
    ],
)
def test_sending_on_a_finished_call_is_a_local_error(method: str, args: tuple[object, ...]) -> None:
    server = ServerConnection()
    request = single_request(server)
    server.send_reply(request.channel, 1)
    with pytest.raises(LocalProtocolError, match="the channel is closed"):
        getattr(server, method)(request.channel, *args)
    assert len(server.data_to_send()) == 1


def test_unexpected_client_events_inside_a_call_are_dropped() -> None:
    server = ServerConnection()
    request = single_request(server)
    for name in ("OK", "STREAM", "add"):
        frames = [b"r", *rogue_frames(name, [1], response_to=b"m")]
        assert server.receive(frames, 0.5) is None
    assert dict(server.problems.counts) == {"unexpected event": 3}
    assert server.is_open(request.channel)


def test_request_with_a_non_id_message_id_is_dropped() -> None:
    server = ServerConnection()
    for mid in (None, 1.5, [1], {"a": 1}):
        assert server.receive([b"r", *rogue_frames("m", [], message_id=mid)], 0.0) is None
    assert dict(server.problems.counts) == {"no message_id": 4}
    assert server.open_channels == 0


def test_int_message_ids_are_ids_too() -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("m", [], message_id=7)], 0.0)
    assert isinstance(request, Request)
    assert request.channel == ((b"r",), 7)
    server.send_reply(request.channel, None)
    (frames,) = server.data_to_send()
    assert decode(frames[-1]).header["response_to"] == 7


def test_every_call_is_heartbeated_independently() -> None:
    peers = Peers()
    peers.call("slow", [1])
    peers.call("slow", [2])
    peers.advance(5.0)
    assert len(peers.sent("s2c", "_zpc_hb")) == 2
    assert len(peers.sent("c2s", "_zpc_hb")) == 2
    assert {t.channel for t in peers.sent("s2c", "_zpc_hb")} == {
        r.channel[1] for r in peers.server_events if isinstance(r, Request)
    }


def test_receive_never_raises_on_a_deeply_nested_method_name() -> None:
    server = ServerConnection()
    payload = b"\x93\x81\xaamessage_id\xa1x" + b"\x91" * 1020 + b"\xc0" + b"\x90"
    assert server.receive([b"r", b"", payload], 0.0) is None
    assert server.open_channels == 0


def test_repr_tells_the_state() -> None:
    server = ServerConnection()
    request = single_request(server)
    server.send_stream_item(request.channel, 1)
    assert repr(server) == "<ServerConnection open=1 heartbeat=5.0 queued=1>"
    assert repr(Peers()) == (
        "<Peers t=0.0 clients=1 wire=0 server=<ServerConnection open=0 heartbeat=5.0 queued=0>>"
    )
