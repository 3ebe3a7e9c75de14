"""Every captured frame against our codec: decode like zerorpc 0.6.3, re-encode byte for byte.

The vectors are read from the sibling ``shared/spec/vectors`` folder at run time; each file
is its own test id. Behaviour (what the client and server *do* with these frames) is tested
in test_client.py, test_server.py, test_heartbeat.py and test_flow_control.py.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from vectors import (
    C2S,
    S2C,
    SPEC_VECTOR_NAMES,
    VECTORS_DIR,
    load,
    missing_vectors,
    strict,
    vector_names,
    vectors_dir,
    with_events,
)

from rpccore._codec import Encoder, decode, split_frames
from rpccore._errors import RemoteProtocolError

# Frames whose payload is not an event at all: (vector, seq) -> the error we raise.
UNDECODABLE = {
    ("raw_malformed_payloads", 1): "payload is not valid msgpack",  # b"\x93", truncated
    ("raw_malformed_payloads", 2): "event is not a 3-element array",  # ["only", "two"]
}

# Frames the reference cannot decode (non-str map keys) but we deliberately can.
NON_STR_KEYS = {
    ("raw_bin_header_keys", 1),
    ("pitfall_int_map_keys", 2),
}

# Files without frames: the command-line runs.
FRAMELESS = {"cli_outputs"}

ALL_FRAMES = [(name, event.seq) for name in with_events() for event in load(name).events]


def test_the_vectors_are_read_from_the_shared_folder_next_to_the_repository() -> None:
    vectors_dir()  # skipped when they are missing, as on a clone without shared/ beside it
    repo_root = Path(__file__).resolve().parents[2]
    assert VECTORS_DIR.resolve() == (repo_root.parent / "shared" / "spec" / "vectors").resolve()
    assert VECTORS_DIR.is_dir(), missing_vectors()
    assert not VECTORS_DIR.resolve().is_relative_to(repo_root)
    assert set(vector_names()) >= SPEC_VECTOR_NAMES


def test_only_the_cli_runs_have_no_frames() -> None:
    vectors_dir()
    assert set(vector_names()) - set(with_events()) == FRAMELESS


def test_the_expectation_tables_name_real_frames() -> None:
    vectors_dir()
    assert set(UNDECODABLE) <= set(ALL_FRAMES)
    assert set(ALL_FRAMES) >= NON_STR_KEYS


@pytest.mark.parametrize("name", vector_names())
def test_every_payload_decodes_like_the_capture(name: str) -> None:
    vector = load(name)
    if name in FRAMELESS:
        assert vector.events == ()
        assert vector.document["runs"]
        return
    assert vector.events
    for event in vector.events:
        payload = event.frames[-1]
        if payload.has_decoding:  # the capture's typed decoding is plain msgpack
            plain = msgpack.unpackb(payload.raw, raw=False, strict_map_key=False)
            assert strict(plain) == strict(payload.decoded)
        if (name, event.seq) in UNDECODABLE:
            with pytest.raises(RemoteProtocolError, match=UNDECODABLE[name, event.seq]):
                decode(payload.raw)
            assert event.header is None
            continue
        got = decode(payload.raw)
        assert payload.has_decoding, f"seq {event.seq} has no typed decoding"
        assert strict([got.header, got.name, got.args]) == strict(payload.decoded)
        assert strict((got.header, got.name, got.args)) == strict(
            (event.header, event.name, event.args)
        )


@pytest.mark.parametrize("name", with_events())
def test_every_unredacted_frame_reencodes_to_the_captured_bytes(name: str) -> None:
    encoder = Encoder()
    checked = 0
    for event in load(name).events:
        payload = event.frames[-1]
        if payload.redacted or (name, event.seq) in UNDECODABLE:
            continue
        got = decode(payload.raw)
        assert encoder.encode(got.header, got.name, got.args) == payload.raw, f"seq {event.seq}"
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("name", with_events())
def test_frames_follow_the_socket_conventions(name: str) -> None:
    for event in load(name).events:
        wire = event.wire
        if event.direction in (C2S, S2C):
            if name == "raw_no_delimiter" and event.direction == C2S:
                assert len(wire) == 1  # a DEALER request sent without the delimiter
            else:
                assert len(wire) == 2
                assert wire[0] == b""
        else:
            assert event.direction in ("publisher->subscriber", "pusher->puller")
            assert len(wire) == 1  # one frame, no delimiter, no routing id
        assert split_frames(wire)[1] == event.payload


def test_a_router_sees_routing_id_delimiter_payload() -> None:
    # lost_remote_client_side recorded what the bare ROUTER application received.
    vector = load("lost_remote_client_side")
    for event_doc, event in zip(vector.document["events"], vector.events, strict=True):
        received = [bytes.fromhex(h) for h in event_doc["router_received_frames_hex"]]
        assert received[1:] == event.wire
        envelope, payload = split_frames(received)
        assert envelope == (bytes.fromhex("007a6d8d3c"),)
        assert payload == event.payload


@pytest.mark.parametrize(
    ("name", "seq", "header", "value"),
    [
        (
            "raw_bin_header_keys",
            1,
            {b"message_id": b"0000000b000000000000000000000004", b"v": 3},
            [1, 2],
        ),
        ("pitfall_int_map_keys", 2, None, [{1: "one", 2: "two"}]),
    ],
)
def test_non_str_map_keys_decode_where_the_reference_drops_the_event(
    name: str, seq: int, header: dict[bytes, object] | None, value: object
) -> None:
    (event,) = [e for e in load(name).events if e.seq == seq]
    got = decode(event.payload)
    if header is not None:
        assert strict(got.header) == strict(header)
    assert strict(got.args) == strict(value)


def test_a_header_without_message_id_still_decodes() -> None:
    # The third malformed payload is a well-formed event; the server drops it later.
    (event,) = [e for e in load("raw_malformed_payloads").events if e.seq == 3]
    got = decode(event.payload)
    assert (got.header, got.name, got.args) == ({"v": 3}, "add", [1, 2])
