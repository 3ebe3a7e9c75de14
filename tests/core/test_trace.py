"""Trace context in event headers: trace_id / span_id / parent_span_id and W3C traceparent."""

from __future__ import annotations

import contextvars
import re
from typing import Any

import pytest
from vectors import load

from rpccore import TraceContext, call_metadata, current_trace
from rpccore._trace import is_lowercase_hex, outgoing_trace_header
from rpccore.tracing import are_trace_ids

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = "b7ad6b7169203331"
HEX16 = re.compile(r"[0-9a-f]{16}")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            {"trace_id": TRACE, "span_id": SPAN, "parent_span_id": PARENT},
            TraceContext(TRACE, SPAN, PARENT),
            id="all-three",
        ),
        pytest.param(
            {"trace_id": TRACE, "span_id": SPAN}, TraceContext(TRACE, SPAN), id="no-parent"
        ),
        pytest.param(
            {"trace_id": "1" * 32, "span_id": "2" * 16},
            TraceContext("1" * 32, "2" * 16),
            id="ids-of-digits-only",
        ),
        pytest.param(
            {"trace_id": TRACE, "span_id": SPAN, "parent_span_id": "nope"},
            TraceContext(TRACE, SPAN),
            id="bad-parent-dropped",
        ),
        pytest.param(
            {"traceparent": f"00-{TRACE}-{SPAN}-01"}, TraceContext(TRACE, SPAN), id="traceparent"
        ),
        pytest.param(
            {"traceparent": f"  00-{TRACE.upper()}-{SPAN.upper()}-00 "},
            TraceContext(TRACE, SPAN),
            id="traceparent-case-and-blanks",
        ),
        pytest.param(
            {"trace_id": "0" * 32, "span_id": SPAN, "traceparent": f"00-{TRACE}-{PARENT}-01"},
            TraceContext(TRACE, PARENT),
            id="zero-trace-id-falls-back-to-traceparent",
        ),
        pytest.param(
            {"trace_id": "not-hex", "traceparent": f"00-{TRACE}-{SPAN}-01"},
            TraceContext(TRACE, SPAN),
            id="bad-trace-id-falls-back-to-traceparent",
        ),
    ],
)
def test_from_header(header: dict[str, Any], expected: TraceContext) -> None:
    assert TraceContext.from_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"message_id": b"x", "v": 3}, id="plain-request"),
        pytest.param({"trace_id": TRACE.upper()}, id="uppercase-trace-id"),
        pytest.param({"trace_id": TRACE[:-1]}, id="short-trace-id"),
        pytest.param({"trace_id": TRACE + "0"}, id="long-trace-id"),
        pytest.param({"trace_id": TRACE[:-1], "span_id": "0" + SPAN}, id="ids-that-join-well"),
        pytest.param({"trace_id": TRACE[:-1] + "g", "span_id": SPAN}, id="a-letter-past-f"),
        pytest.param({"trace_id": TRACE[:-1] + "F", "span_id": SPAN}, id="one-uppercase-digit"),
        pytest.param({"trace_id": TRACE[:-2] + " a", "span_id": SPAN}, id="a-blank-inside"),
        pytest.param({"trace_id": TRACE[:-1] + "é", "span_id": SPAN}, id="not-ascii"),
        pytest.param({"trace_id": TRACE.encode()}, id="bin-trace-id"),
        pytest.param({"trace_id": 42}, id="int-trace-id"),
        pytest.param({"trace_id": "0" * 32}, id="zero-trace-id"),
        pytest.param({"traceparent": f"00-{'0' * 32}-{SPAN}-01"}, id="zero-trace"),
        pytest.param({"traceparent": f"00-{TRACE}-{'0' * 16}-01"}, id="zero-span"),
        pytest.param({"traceparent": f"ff-{TRACE}-{SPAN}-01"}, id="version-ff"),
        pytest.param({"traceparent": f"00-{TRACE}-{SPAN}-01-extra"}, id="extra-field"),
        pytest.param({"traceparent": f"00-{TRACE}-{SPAN}"}, id="no-flags"),
        pytest.param({"traceparent": f"00-{TRACE}-{SPAN}-0g"}, id="bad-flags"),
        pytest.param({"traceparent": f"00_{TRACE}_{SPAN}_01"}, id="bad-separators"),
        pytest.param({"traceparent": f"00-{TRACE}-{SPAN}-01".encode()}, id="bin-traceparent"),
        pytest.param({"traceparent": None}, id="nil-traceparent"),
    ],
)
def test_invalid_or_missing_context_is_ignored(header: dict[str, Any]) -> None:
    assert TraceContext.from_header(header) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TRACE, True),
        ("00", True),
        ("1234", True),
        ("", False),
        ("a", False),
        ("abc", False),
        ("AB", False),
        ("aB", False),
        ("ab cd", False),
        (" ab", False),
        ("ab\n", False),
        ("g0", False),
        ("é1", False),
        ("\uff10\uff11", False),  # fullwidth digits: digits to Unicode, not hex
    ],
)
def test_is_lowercase_hex(text: str, expected: bool) -> None:
    assert is_lowercase_hex(text) is expected


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ((TRACE, SPAN, None), True),
        ((TRACE, SPAN, PARENT), True),
        ((TRACE, SPAN, "nope"), False),
        ((TRACE, SPAN, PARENT.upper()), False),
        ((TRACE, SPAN.upper(), None), False),
        ((TRACE[:-1], "0" + SPAN, None), False),  # lengths are checked, not just the sum
        ((TRACE.encode(), SPAN, None), False),
        ((TRACE, 7, None), False),
        ((TRACE, SPAN, 7), False),
    ],
)
def test_are_trace_ids(ids: tuple[Any, Any, Any], expected: bool) -> None:
    assert are_trace_ids(*ids) is expected


@pytest.mark.parametrize("bad_span", [None, 7, "short", SPAN.upper(), SPAN + "00", SPAN.encode()])
def test_a_valid_trace_id_with_a_bad_span_id_gets_a_fresh_span(bad_span: Any) -> None:
    header = {"trace_id": TRACE, "span_id": bad_span}
    ctx = TraceContext.from_header(header)
    assert ctx is not None
    assert ctx.trace_id == TRACE
    assert HEX16.fullmatch(ctx.span_id)
    assert ctx.span_id != bad_span
    assert ctx.parent_span_id is None


@pytest.mark.parametrize("name", ["middleware_task_context", "raw_extra_header_keys"])
def test_the_reference_middleware_trace_ids_are_not_ours(name: str) -> None:
    # The captured trace_id values ("trace-abc-123", "t-1") are not 32-hex ids.
    header = load(name).request.header
    assert header is not None
    assert "trace_id" in header
    assert TraceContext.from_header(header) is None


def test_child_keeps_the_trace_and_points_at_its_parent() -> None:
    parent = TraceContext(TRACE, SPAN, PARENT)
    child = parent.child()
    assert child.trace_id == TRACE
    assert child.parent_span_id == SPAN
    assert HEX16.fullmatch(child.span_id)
    assert child.span_id != SPAN
    assert len({parent.child().span_id for _ in range(200)}) == 200


def test_new_root() -> None:
    root = TraceContext.new_root()
    assert re.fullmatch(r"[0-9a-f]{32}", root.trace_id)
    assert HEX16.fullmatch(root.span_id)
    assert root.parent_span_id is None
    assert TraceContext.new_root().trace_id != root.trace_id


@pytest.mark.parametrize(
    ("ctx", "header"),
    [
        (
            TraceContext(TRACE, SPAN),
            {"trace_id": TRACE, "span_id": SPAN},
        ),
        (
            TraceContext(TRACE, SPAN, PARENT),
            {"trace_id": TRACE, "span_id": SPAN, "parent_span_id": PARENT},
        ),
    ],
)
def test_to_header_round_trips(ctx: TraceContext, header: dict[str, str]) -> None:
    assert ctx.to_header() == header
    assert ctx.traceparent == f"00-{TRACE}-{SPAN}-01"
    assert TraceContext.from_header(ctx.to_header()) == ctx
    assert TraceContext.from_traceparent(ctx.traceparent) == TraceContext(TRACE, SPAN)


def test_outgoing_header_is_a_child_of_the_current_span() -> None:
    def inside() -> tuple[dict[str, str] | None, dict[str, str] | None]:
        before = outgoing_trace_header()
        current_trace.set(TraceContext(TRACE, SPAN))
        return before, outgoing_trace_header()

    before, during = contextvars.copy_context().run(inside)
    assert before is None
    assert during is not None
    assert during["trace_id"] == TRACE
    assert during["parent_span_id"] == SPAN
    assert during["span_id"] != SPAN
    assert "traceparent" not in during  # trace_id and span_id say it all
    assert current_trace.get() is None  # the context of the test was not touched


def test_trace_contexts_are_immutable_values() -> None:
    ctx = TraceContext(TRACE, SPAN)
    assert ctx == TraceContext(TRACE, SPAN)
    assert hash(ctx) == hash(TraceContext(TRACE, SPAN))
    with pytest.raises(AttributeError):
        ctx.span_id = PARENT  # type: ignore[misc]


def test_call_metadata_joins_the_header_and_never_replaces_trace_keys() -> None:
    def outgoing() -> dict[str, Any] | None:
        call_metadata.set({"zerogate_token_id": "tok_1", "trace_id": "f" * 32})
        return outgoing_trace_header()

    assert contextvars.copy_context().run(outgoing) == {
        "zerogate_token_id": "tok_1",
        "trace_id": "f" * 32,
    }

    root = TraceContext.new_root()

    def traced() -> dict[str, Any] | None:
        current_trace.set(root)
        call_metadata.set({"zerogate_token_id": "tok_1", "trace_id": "f" * 32})
        return outgoing_trace_header()

    header = contextvars.copy_context().run(traced)
    assert header is not None
    assert header["trace_id"] == root.trace_id
    assert header["zerogate_token_id"] == "tok_1"


def test_metadata_never_replaces_the_protocol_keys() -> None:
    from rpccore import ClientConnection
    from rpccore._codec import decode, split_frames

    client = ClientConnection()
    cid = client.start_call(
        "add", [1, 2], now=0.0, header={"message_id": b"x" * 32, "v": 1, "caller": "me"}
    )
    frames = client.data_to_send()
    _, payload = split_frames(frames[0])
    event = decode(payload)
    assert event.header["message_id"] == cid
    assert event.header["v"] == 3
    assert event.header["caller"] == "me"


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write one id and leave at once
        os.write(write, TraceContext.new_root().trace_id.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child_id = os.read(read, 64).decode()
    os.close(read)
    assert len(child_id) == 32
    assert child_id != TraceContext.new_root().trace_id


def test_ids_are_unique_lowercase_hex() -> None:
    from rpccore import _trace

    count = 5000
    span_ids = [_trace.new_span_id() for _ in range(count)]
    trace_ids = [_trace.new_trace_id() for _ in range(count)]
    roots = [_trace.new_root_ids() for _ in range(count)]
    assert len(set(span_ids) | {sid for _, sid in roots}) == 2 * count
    assert len(set(trace_ids) | {tid for tid, _ in roots}) == 2 * count
    assert all(HEX16.fullmatch(sid) for sid in span_ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", tid) for tid in trace_ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", tid) and HEX16.fullmatch(sid) for tid, sid in roots)


def test_an_all_zero_draw_is_never_an_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from rpccore import _trace

    draws = iter([0, 0, 1 << 70, 0, 5, 0, 7])  # a zero root draw, then zero trace and span ids
    monkeypatch.setattr(_trace, "_random_bits", lambda bits: next(draws))
    trace_id, span_id = _trace.new_root_ids()
    assert (trace_id, span_id) == ("0" * 16 + "40" + "0" * 14, "05" + "0" * 14)
    assert _trace.new_trace_id() == "07" + "0" * 30
