"""Framing and msgpack encoding (spec sections 3 and 4), as tables of input -> output."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgpack
import pytest
from vectors import strict

from rpccore._codec import Encoder, WireEvent, decode, new_message_id, split_frames
from rpccore._errors import LocalProtocolError, RemoteProtocolError

MID = b"de7380c214034b10acf0843b8913ca92"
REPLY_MID = b"658ec867e0754653a0fb912a51c7a28d"


@pytest.mark.parametrize(
    ("frames", "envelope", "payload"),
    [
        pytest.param([b"P"], (), b"P", id="pub-pull-single-frame"),
        pytest.param([b"rid", b"P"], (b"rid",), b"P", id="router-no-delimiter"),
        pytest.param([b"rid", b"", b"P"], (b"rid",), b"P", id="router-usual"),
        pytest.param([b"r1", b"r2", b"", b"P"], (b"r1", b"r2"), b"P", id="through-a-proxy"),
        pytest.param([b"rid", b"junk", b"P"], (b"rid",), b"P", id="delimiter-not-checked"),
        pytest.param([b"", b"P"], (b"",), b"P", id="dealer-view"),
    ],
)
def test_split_frames(frames: list[bytes], envelope: tuple[bytes, ...], payload: bytes) -> None:
    assert split_frames(frames) == (envelope, payload)


# The byte layout of spec 4.1 (call_ok_simple), written out by hand.
REQUEST_BYTES = (
    b"\x93"
    + b"\x82"
    + b"\xaamessage_id\xc4\x20"
    + MID
    + b"\xa1v\x03"
    + b"\xa3add"
    + b"\x92\x01\x02"
)
REPLY_BYTES = (
    b"\x93\x83\xaamessage_id\xc4\x20"
    + REPLY_MID
    + b"\xa1v\x03\xabresponse_to\xc4\x20"
    + MID
    + b"\xa2OK\x91\x03"
)


@pytest.mark.parametrize(
    ("header", "name", "args", "expected"),
    [
        pytest.param({"message_id": MID, "v": 3}, "add", [1, 2], REQUEST_BYTES, id="request"),
        pytest.param(
            {"message_id": REPLY_MID, "v": 3, "response_to": MID}, "OK", [3], REPLY_BYTES, id="OK"
        ),
        pytest.param(
            {"message_id": MID, "v": 3, "response_to": MID},
            "STREAM_DONE",
            None,
            b"\x93\x83\xaamessage_id\xc4\x20"
            + MID
            + b"\xa1v\x03\xabresponse_to\xc4\x20"
            + MID
            + b"\xabSTREAM_DONE\xc0",
            id="STREAM_DONE-nil",
        ),
    ],
)
def test_encode_matches_the_spec_layout(
    header: dict[str, Any], name: str, args: Any, expected: bytes
) -> None:
    assert Encoder().encode(header, name, args) == expected
    event = decode(expected)
    assert (event.header, event.name, event.args) == (header, name, args)


@pytest.mark.parametrize(
    ("value", "packed"),
    [
        pytest.param(None, b"\xc0", id="nil"),
        pytest.param(True, b"\xc3", id="true"),
        pytest.param(7, b"\x07", id="fixint"),
        pytest.param(2**64 - 1, b"\xcf" + b"\xff" * 8, id="uint64-max"),
        pytest.param(-(2**63), b"\xd3\x80" + b"\x00" * 7, id="int64-min"),
        pytest.param(3.0, b"\xcb\x40\x08" + b"\x00" * 6, id="float64-always"),
        pytest.param("é", b"\xa2\xc3\xa9", id="str-is-utf8-str"),
        pytest.param(b"\x00\xff", b"\xc4\x02\x00\xff", id="bytes-is-bin"),
        pytest.param((1, (2, 3)), b"\x92\x01\x92\x02\x03", id="tuple-is-array"),
        pytest.param({"k": [None]}, b"\x81\xa1k\x91\xc0", id="map"),
        pytest.param("x" * 32, b"\xd9\x20" + b"x" * 32, id="str8"),
    ],
)
def test_user_values_pack_like_use_bin_type(value: Any, packed: bytes) -> None:
    payload = Encoder().encode({}, "n", value)
    assert payload == b"\x93\x80\xa1n" + packed


@pytest.mark.parametrize(
    ("payload", "header", "name", "args"),
    [
        pytest.param(REQUEST_BYTES, {"message_id": MID, "v": 3}, "add", [1, 2], id="request"),
        pytest.param(
            REQUEST_BYTES + b"\xc0\xc0junk",
            {"message_id": MID, "v": 3},
            "add",
            [1, 2],
            id="trailing-bytes-ignored",
        ),
        pytest.param(b"\x93\x80\xa1n\xc0", {}, "n", None, id="empty-header-nil-args"),
        pytest.param(b"\x93\x81\x01\x02\xc4\x01n\x90", {1: 2}, b"n", [], id="int-key-bin-name"),
        pytest.param(
            b"\x93\x80\xa1x\xd4\x01\x02", {}, "x", msgpack.ExtType(1, b"\x02"), id="ext-type"
        ),
        pytest.param(b"\x93\x80\xa1x\x81\x01\xa3one", {}, "x", {1: "one"}, id="int-keys-accepted"),
    ],
)
def test_decode_valid(payload: bytes, header: dict[Any, Any], name: Any, args: Any) -> None:
    assert strict(decode(payload)) == strict(WireEvent(header, name, args))
    event = decode(payload)
    assert strict((event.header, event.name, event.args)) == strict((header, name, args))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b"", "payload is not valid msgpack", id="empty"),
        pytest.param(b"\x93", "payload is not valid msgpack", id="truncated"),
        pytest.param(b"\xc1", "payload is not valid msgpack", id="reserved-byte"),
        pytest.param(b"\x93\x80\xa2\xff\xfe\x90", "payload is not valid msgpack", id="bad-utf8"),
        pytest.param(b"\x93\x81\x90\x01\xa1n\x90", "payload is not valid msgpack", id="list-key"),
        pytest.param(b"\x92\xa4only\xa3two", "event is not a 3-element array", id="2-array"),
        pytest.param(b"\x94\x80\xa1n\x90\xc0", "event is not a 3-element array", id="4-array"),
        pytest.param(b"\xa3add", "event is not a 3-element array", id="a-str"),
        pytest.param(b"\x83\x01\x01\x02\x02\x03\x03", "event is not a 3-element array", id="map"),
        pytest.param(b"\x93\x90\xa1n\x90", "event header is not a map", id="array-header"),
        pytest.param(b"\x93\xc0\xa1n\x90", "event header is not a map", id="nil-header"),
    ],
)
def test_decode_invalid_raises_remote_protocol_error(payload: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=re.escape(message)):
        decode(payload)


def test_decode_of_deeply_nested_arrays_raises_remote_protocol_error() -> None:
    payload = b"\x91" * 1024 + b"\xc0"  # [[[...[nil]...]]]: not a 3-element event
    with pytest.raises(RemoteProtocolError):
        decode(payload)


@pytest.mark.parametrize(
    ("value", "cause", "message"),
    [
        pytest.param({1, 2}, TypeError, "TypeError: can not serialize 'set' object", id="set"),
        pytest.param(2**64, OverflowError, "OverflowError: Integer value out of range", id="2**64"),
        pytest.param(
            -(2**63) - 1, OverflowError, "OverflowError: Integer value out of range", id="-2**63-1"
        ),
        pytest.param(
            object(), TypeError, "TypeError: can not serialize 'object' object", id="object"
        ),
        pytest.param("\udcff", UnicodeEncodeError, "UnicodeEncodeError: 'utf-8'", id="surrogate"),
    ],
)
def test_unencodable_values_raise_local_protocol_error(
    value: Any, cause: type[Exception], message: str
) -> None:
    encoder = Encoder()
    with pytest.raises(LocalProtocolError, match=re.escape(message)) as info:
        encoder.encode({"message_id": MID, "v": 3}, "add", [1, value])
    assert type(info.value.__cause__) is cause
    # Nothing of the failed event leaks into the next one.
    assert encoder.encode({"message_id": MID, "v": 3}, "add", [1, 2]) == REQUEST_BYTES


def test_new_message_id_is_32_lowercase_hex_bytes_and_random() -> None:
    ids = {new_message_id() for _ in range(2000)}
    assert len(ids) == 2000
    for mid in ids:
        assert type(mid) is bytes
        assert re.fullmatch(rb"[0-9a-f]{32}", mid)
    # Packed as bin8 with length 32, the form 0.6.3 sends.
    assert Encoder().encode({}, "n", mid) == b"\x93\x80\xa1n\xc4\x20" + mid


def test_wire_events_are_immutable_values() -> None:
    event = decode(REQUEST_BYTES)
    assert event == WireEvent({"message_id": MID, "v": 3}, "add", [1, 2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "other"  # type: ignore[misc]
