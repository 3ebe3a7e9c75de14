"""Hypothesis fuzzing: the decoder only ever raises RemoteProtocolError, and neither
connection's receive() raises at all, whatever bytes or msgpack structures arrive."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import Peers, credit_audit
from vectors import strict

from rpccore import (
    CallFailed,
    ChannelLost,
    ClientConnection,
    CreditGranted,
    Reply,
    Request,
    ServerConnection,
    StreamEnd,
    StreamItem,
)
from rpccore._codec import WireEvent, decode
from rpccore._errors import RemoteProtocolError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NAMES = ["OK", "ERR", "STREAM", "STREAM_DONE", "_zpc_hb", "_zpc_more", "add", "count", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
keys = st.text(max_size=10) | st.binary(max_size=10) | st.integers(-5, 5)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
ids = st.binary(min_size=0, max_size=32) | st.text(max_size=36) | st.integers(0, 2**32)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


@st.composite
def events(draw: st.DrawFn, known_ids: list[Any] | None = None) -> bytes:
    """A payload that looks like an event, more or less: header, name, args."""
    header: dict[Any, Any] = {}
    if draw(st.booleans()):
        header["message_id"] = draw(ids | values)
    if draw(st.booleans()):
        header["v"] = draw(st.sampled_from([1, 2, 3]) | values)
    if draw(st.booleans()):
        choices = ids | values
        if known_ids:
            choices = st.sampled_from(known_ids) | choices
        header["response_to"] = draw(choices)
    header.update(draw(st.dictionaries(keys, values, max_size=2)))
    name = draw(st.sampled_from(NAMES) | values)
    args = draw(
        st.one_of(
            values,
            st.lists(values, max_size=3),
            st.integers(-3, 200).map(lambda n: [n]),
        )
    )
    shape = draw(st.sampled_from(["event", "event", "event", "other"]))
    if shape == "other":
        return pack(draw(values))
    return pack([header, name, args])


payloads = st.binary(max_size=200) | events()


@FUZZ
@given(st.binary(max_size=200))
def test_decode_random_bytes_raises_only_remote_protocol_error(data: bytes) -> None:
    try:
        event = decode(data)
    except RemoteProtocolError:
        return
    assert isinstance(event, WireEvent)
    assert type(event.header) is dict


@FUZZ
@given(values)
def test_decode_any_msgpack_value_is_an_event_or_a_remote_protocol_error(value: Any) -> None:
    payload = pack(value)
    is_event = type(value) is list and len(value) == 3 and type(value[0]) is dict
    try:
        event = decode(payload)
    except RemoteProtocolError:
        assert not is_event
        return
    assert is_event
    assert strict([event.header, event.name, event.args]) == strict(value)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), values, max_size=5), values, values)
def test_every_event_round_trips(header: dict[str, Any], name: Any, args: Any) -> None:
    event = decode(pack([header, name, args]) + b"trailing")
    assert strict((event.header, event.name, event.args)) == strict((header, name, args))


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.lists(st.binary(max_size=6), min_size=0, max_size=3),  # envelope and delimiter
            payloads,
            st.floats(min_value=0.0, max_value=20.0),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_server_receive_never_raises(messages: list[tuple[list[bytes], bytes, float]]) -> None:
    server = ServerConnection()
    now = 0.0
    for head, payload, step in messages:
        now += step
        event = server.receive([*head, payload], now)
        assert event is None or isinstance(event, Request | CreditGranted | ChannelLost)
        for lost in server.handle_timers(now):
            assert isinstance(lost, ChannelLost)
        for frames in server.data_to_send():
            assert frames[-2] == b""
            assert isinstance(decode(frames[-1]), WireEvent)
    assert server.open_channels >= 0


@FUZZ
@given(st.data(), st.integers(2, 12))
def test_client_receive_never_raises(data: st.DataObject, window: int) -> None:
    client = ClientConnection(window=window)
    known = [client.start_call("m", [n], now=0.0, timeout=30.0) for n in range(3)]
    client.data_to_send()
    messages = data.draw(
        st.lists(
            st.tuples(st.binary(max_size=200) | events(known_ids=known), st.floats(0.0, 20.0)),
            min_size=1,
            max_size=12,
        )
    )
    now = 0.0
    for payload, step in messages:
        now += step
        event = client.receive([b"", payload], now)
        assert event is None or isinstance(event, Reply | StreamItem | StreamEnd | CallFailed)
        if isinstance(event, StreamItem):
            client.request_next(event.channel)
        for failed in client.handle_timers(now):
            assert isinstance(failed, CallFailed)
        for frames in client.data_to_send():
            assert frames[0] == b""
            assert isinstance(decode(frames[-1]), WireEvent)
    assert 0 <= client.open_channels <= len(known)


@settings(max_examples=100, deadline=None, database=None)
@given(
    window=st.integers(2, 20),
    items=st.integers(0, 120),
    reads=st.lists(st.integers(0, 5), min_size=1, max_size=60),
)
def test_any_reading_pace_keeps_credit_and_delivers_everything(
    window: int, items: int, reads: list[int]
) -> None:
    peers = Peers(client=ClientConnection(window=window), auto_read=False)
    cid = peers.call("count", [items])
    (request,) = peers.server_events
    stream = peers.serve_stream(request.channel, range(items))
    consumed = 0
    pace = iter(reads * (items + 2))
    for _ in range(10 * (items + 2)):
        if peers.events and isinstance(peers.events[-1], StreamEnd):
            break
        # The application takes a few of the items that arrived (asking for the next one
        # each time), then the network catches up.
        for _ in range(max(1, next(pace, 1))):
            if consumed < len(peers.events):
                consumed += 1
                peers.client.request_next(cid)
        peers.pump()
        assert len(peers.events) - consumed <= window
    else:
        raise AssertionError("the stream stalled")
    assert stream.done
    assert [e.item for e in peers.events if isinstance(e, StreamItem)] == list(range(items))
    credit_audit(peers.wire)
    assert peers.open_channels() == (0, 0)
