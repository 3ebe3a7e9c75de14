"""Credit-based flow control (spec section 8): ``_zpc_more`` grants, server credit, and the
guarantee both ways: the server never sends without credit, the client never accepts more
than it granted."""

from __future__ import annotations

import pytest
from peers import Peers, credit_audit, reference_grants, rogue_frames
from vectors import C2S, S2C, IdFeed, load

import rpccore._server
from rpccore import (
    CallFailed,
    ClientConnection,
    CreditGranted,
    LocalProtocolError,
    RemoteError,
    RemoteProtocolError,
    Request,
    ServerConnection,
    StreamEnd,
    StreamItem,
)
from rpccore._codec import decode

# -- the reference receiver -------------------------------------------------------------


@pytest.mark.parametrize("name", ["stream_3", "stream_window_slots10", "middleware_task_context"])
def test_the_reference_model_predicts_the_captured_grants(name: str) -> None:
    vector = load(name)
    assert vector.client_outcome is not None
    window = 10 if name == "stream_window_slots10" else 100
    captured = [e.args[0] for e in vector.sent(C2S) if e.name == "_zpc_more"]
    assert reference_grants(window, len(vector.client_outcome["items"])) == captured


def test_window_10_grants_match_the_capture() -> None:
    vector = load("stream_window_slots10")
    peers = Peers(client=ClientConnection(window=10))
    cid = peers.call("count", [20])
    (request,) = peers.server_events
    peers.serve_stream(request.channel, range(20))
    assert peers.events == [*(StreamItem(cid, n) for n in range(20)), StreamEnd(cid)]
    ours = [t.args for t in peers.sent("c2s", "_zpc_more")]
    captured = [e.args for e in vector.sent(C2S) if e.name == "_zpc_more"]
    assert ours == captured == [[10], [6], [6], [6]]


@pytest.mark.parametrize("window", [2, 3, 4, 10, 100])
@pytest.mark.parametrize("items", [0, 1, 2, 7, 50, 250])
def test_streams_respect_credit_and_grant_like_the_reference(window: int, items: int) -> None:
    peers = Peers(client=ClientConnection(window=window))
    cid = peers.call("count", [items])
    (request,) = peers.server_events
    stream = peers.serve_stream(request.channel, range(items))
    assert stream.done
    assert peers.events == [*(StreamItem(cid, n) for n in range(items)), StreamEnd(cid)]
    grants = [t.args[0] for t in peers.sent("c2s", "_zpc_more")]
    assert grants == reference_grants(window, items)
    sent, granted = credit_audit(peers.wire)[cid]  # raises if a send lacked credit
    assert sent == items + 1
    assert granted - sent < window  # never granted more than a window ahead
    assert peers.idle()


@pytest.mark.parametrize("window", [2, 5, 16])
def test_a_slow_reader_never_holds_more_than_a_window(window: int) -> None:
    peers = Peers(client=ClientConnection(window=window), auto_read=False)
    cid = peers.call("count", [60])
    (request,) = peers.server_events
    stream = peers.serve_stream(request.channel, range(60))
    read = 0
    high_water = 0
    while True:
        received = len(peers.events)
        high_water = max(high_water, received - read)
        assert received - read <= window
        if read == received:
            break
        if isinstance(peers.events[read], StreamEnd):
            read += 1
            break
        read += 1
        peers.read_next(cid)  # the application takes one item and asks for the next
    assert stream.done
    assert peers.events[-1] == StreamEnd(cid)
    assert [e.item for e in peers.events if isinstance(e, StreamItem)] == list(range(60))
    assert high_water == window
    credit_audit(peers.wire)
    waits = [e for e in peers.server_events if isinstance(e, CreditGranted)]
    assert len(waits) == len(peers.sent("c2s", "_zpc_more"))  # the server always waited


# -- a rogue server ---------------------------------------------------------------------


def test_a_server_that_sends_more_than_granted_fails_the_call() -> None:
    client = ClientConnection(window=4)
    cid = client.start_call("count", [10], now=0.0)
    assert client.receive(rogue_frames("STREAM", 0, response_to=cid), 0.1) == StreamItem(cid, 0)
    # Nothing granted beyond the implicit credit: a second item is a protocol violation.
    event = client.receive(rogue_frames("STREAM", 1, response_to=cid), 0.2)
    assert isinstance(event, CallFailed)
    assert type(event.error) is RemoteProtocolError
    assert str(event.error) == "server sent more events than granted"
    assert client.open_channels == 0
    assert client.receive(rogue_frames("STREAM", 2, response_to=cid), 0.3) is None
    assert dict(client.problems.counts) == {"unroutable": 1}


def test_a_server_may_use_exactly_what_was_granted() -> None:
    client = ClientConnection(window=4)
    cid = client.start_call("count", [], now=0.0)
    assert client.receive(rogue_frames("STREAM", 0, response_to=cid), 0.1) == StreamItem(cid, 0)
    client.request_next(cid)  # grants 4
    (_, more) = client.data_to_send()
    assert decode(more[-1]).args == [4]
    for n in range(1, 5):
        got = client.receive(rogue_frames("STREAM", n, response_to=cid), 0.2)
        assert got == StreamItem(cid, n)
    event = client.receive(rogue_frames("STREAM_DONE", None, response_to=cid), 0.3)
    assert isinstance(event, CallFailed)  # a fifth event after the grant of four
    assert type(event.error) is RemoteProtocolError


# -- server credit ----------------------------------------------------------------------


def test_raw_stream_manual_more(monkeypatch: pytest.MonkeyPatch) -> None:
    vector = load("raw_stream_manual_more")
    request_event, *_ = vector.events
    grants = [e for e in vector.sent(C2S) if e.name == "_zpc_more"]
    replies = [[b"r", *e.wire] for e in vector.sent(S2C)]
    monkeypatch.setattr(rpccore._server, "new_message_id", IdFeed(vector.ids(S2C)))
    server = ServerConnection()
    request = server.receive([b"r", *request_event.wire], 0.0)
    assert isinstance(request, Request)
    assert (request.method, request.args) == ("count", [4])
    ch = request.channel
    items = iter(range(4))

    def send_while_credit() -> list[list[bytes]]:
        while server.can_send(ch):
            item = next(items, None)
            if item is None:
                server.send_stream_done(ch)
                break
            server.send_stream_item(ch, item)
        return server.data_to_send()

    assert send_while_credit() == replies[:1]  # STREAM 0 on the implicit credit, then wait
    assert server.receive([b"r", *grants[0].wire], 1.018) == CreditGranted(ch)  # [2]
    assert send_while_credit() == replies[1:3]  # STREAM 1, STREAM 2, wait
    assert server.receive([b"r", *grants[1].wire], 2.032) == CreditGranted(ch)  # [5]
    assert send_while_credit() == replies[3:]  # STREAM 3, STREAM_DONE
    assert server.open_channels == 0


SENDS = [
    pytest.param("send_stream_item", (1,), id="STREAM"),
    pytest.param("send_stream_done", (), id="STREAM_DONE"),
    pytest.param("send_reply", (1,), id="OK"),
    pytest.param("send_exception", (KeyError("boom"),), id="ERR-exception"),
    pytest.param("send_error", ("KeyError", "'boom'"), id="ERR"),
]


@pytest.mark.parametrize(("method", "args"), SENDS)
def test_sending_without_credit_is_a_local_error(method: str, args: tuple[object, ...]) -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("count", [], message_id=b"m")], 0.0)
    assert isinstance(request, Request)
    server.send_stream_item(request.channel, 0)
    with pytest.raises(LocalProtocolError, match="no credit: wait for CreditGranted"):
        getattr(server, method)(request.channel, *args)
    assert len(server.data_to_send()) == 1
    assert server.is_open(request.channel)


def test_credit_granted_wakes_a_waiting_sender_once() -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("count", [], message_id=b"m")], 0.0)
    assert isinstance(request, Request)
    ch = request.channel
    server.send_stream_item(ch, 0)
    assert server.can_send(ch) is False  # the sender now waits
    more = [b"r", *rogue_frames("_zpc_more", [2], response_to=b"m")]
    assert server.receive(more, 0.1) == CreditGranted(ch)
    assert server.receive(more, 0.2) is None  # nobody waits any more: no second wake-up
    assert server.can_send(ch)
    for n in range(1, 5):  # 2 + 2 grants: additive, like the Python reference
        server.send_stream_item(ch, n)
    assert server.can_send(ch) is False


def test_a_grant_that_arrives_before_the_wait_is_kept() -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("count", [], message_id=b"m")], 0.0)
    assert isinstance(request, Request)
    more = [b"r", *rogue_frames("_zpc_more", [3], response_to=b"m")]
    assert server.receive(more, 0.1) is None
    for n in range(4):  # the implicit credit plus three
        assert server.can_send(request.channel)
        server.send_stream_item(request.channel, n)
    assert not server.can_send(request.channel)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([-1], id="negative"),
        pytest.param([True], id="bool"),
        pytest.param([1.5], id="float"),
        pytest.param(["3"], id="str"),
        pytest.param([], id="empty"),
        pytest.param(None, id="nil"),
        pytest.param(5, id="not-an-array"),
    ],
)
def test_bad_credit_is_dropped_and_counted(args: object) -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("count", [], message_id=b"m")], 0.0)
    assert isinstance(request, Request)
    server.send_stream_item(request.channel, 0)
    assert not server.can_send(request.channel)
    bad = [b"r", *rogue_frames("_zpc_more", args, response_to=b"m")]
    assert server.receive(bad, 0.1) is None
    assert not server.can_send(request.channel)
    assert dict(server.problems.counts) == {"bad credit": 1}


@pytest.mark.parametrize(("v", "grants"), [(None, True), (1, True), (2, True), (3, False)])
def test_before_v3_a_heartbeat_doubles_as_credit(v: int | None, grants: bool) -> None:
    server = ServerConnection()
    request = server.receive([b"r", *rogue_frames("count", [], message_id=b"m", v=v)], 0.0)
    assert isinstance(request, Request)
    server.send_stream_item(request.channel, 0)
    assert not server.can_send(request.channel)
    beat = [b"r", *rogue_frames("_zpc_hb", [2], response_to=b"m", v=v)]
    assert server.receive(beat, 1.0) == (CreditGranted(request.channel) if grants else None)
    assert server.can_send(request.channel) is grants


def test_a_flood_of_grants_after_the_stream_ended_is_dropped_and_counted() -> None:
    peers = Peers()
    cid = peers.call("count", [3])
    (request,) = peers.server_events
    peers.serve_stream(request.channel, range(3))
    assert peers.events[-1] == StreamEnd(cid)
    before = len(peers.server_events)
    flood = [b"\x00client", *rogue_frames("_zpc_more", [100], response_to=cid)]
    for n in range(5000):
        assert peers.server.receive(flood, 1.0 + n / 1000) is None
    assert peers.server.problems.counts["unroutable"] == 5000
    assert len(peers.server_events) == before
    assert peers.server.data_to_send() == []
    assert peers.server.open_channels == 0
    assert peers.server.next_deadline() is None


def test_an_err_in_the_middle_of_a_stream_needs_credit_too() -> None:
    peers = Peers(auto_read=False)
    cid = peers.call("stream_fail", [])
    (request,) = peers.server_events
    peers.server.send_stream_item(request.channel, "first")
    peers.pump()
    assert peers.events == [StreamItem(cid, "first")]
    with pytest.raises(LocalProtocolError, match="no credit"):
        peers.server.send_exception(request.channel, KeyError("boom"))
    assert not peers.server.can_send(request.channel)  # the handler waits for credit
    peers.read_next(cid)  # _zpc_more [100]
    assert peers.server_events[-1] == CreditGranted(request.channel)
    peers.server.send_exception(request.channel, KeyError("boom"))
    peers.pump()
    failed = peers.events[-1]
    assert isinstance(failed, CallFailed)
    assert type(failed.error) is RemoteError
    assert (failed.error.name, failed.error.message) == ("KeyError", "'boom'")
    assert peers.idle()
