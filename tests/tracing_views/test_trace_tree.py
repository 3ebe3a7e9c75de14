"""``gateway.trace_tree``: records in, call tree out (no I/O)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from views_support import (
    A_RUN,
    B_WORK,
    C_FAIL,
    C_NUMBERS,
    HTTP,
    T0,
    TRACE_ID,
    record,
    three_level_trace,
)

from gateway.payloads import encode_json
from gateway.trace_tree import MAX_DEPTH, Span, Trace, build_trace, hex_id, trace_json


def ms(seconds: float) -> Any:
    """``seconds`` give or take a microsecond (Unix times are floats)."""
    return pytest.approx(seconds, abs=1e-6)


def shape(trace: Trace) -> list[tuple[int, str]]:
    return [(depth, span.span_id) for depth, span in trace.walk()]


def by_id(trace: Trace) -> dict[str, Span]:
    return {span.span_id: span for _, span in trace.walk()}


def test_three_level_trace_merges_both_sides_of_each_call() -> None:
    trace = build_trace(TRACE_ID, three_level_trace())
    assert shape(trace) == [(0, HTTP), (1, A_RUN), (2, B_WORK), (3, C_NUMBERS), (3, C_FAIL)]
    assert (trace.spans, trace.errors) == (5, 1)
    assert trace.start == T0
    assert trace.duration == ms(0.050)

    spans = by_id(trace)
    http = spans[HTTP]
    assert (http.kind, http.label, list(http.sides)) == (
        "http",
        "gateway POST /rpc/a/run",
        ["http"],
    )
    work = spans[B_WORK]
    assert (work.kind, work.service, work.method, work.label) == ("rpc", "b", "work", "b.work")
    assert set(work.sides) == {"client", "server"}
    # The caller's view of the times: its start, and the network time in the duration.
    assert work.start == T0 + 0.003
    assert work.duration == ms(0.042)
    assert work.sides["server"]["start"] == ms(T0 + 0.0031)
    assert work.process == {"proc": "b", "host": "box", "pid": 4242}  # where it ran
    assert work.sides["client"]["process"]["proc"] == "a"

    numbers = spans[C_NUMBERS]
    assert (numbers.outcome, numbers.items, numbers.failed) == ("stream", 5, False)
    fail = spans[C_FAIL]
    assert (fail.outcome, fail.error, fail.failed) == ("error", "ValueError", True)


def test_json_shape() -> None:
    document = trace_json(TRACE_ID, three_level_trace())
    json.dumps(document)  # plain JSON values only
    assert {k: document[k] for k in ("trace_id", "spans", "errors")} == {
        "trace_id": TRACE_ID,
        "spans": 5,
        "errors": 1,
    }
    assert document["start"] == T0
    (root,) = document["roots"]
    assert set(root) >= {
        "span_id",
        "parent_span_id",
        "service",
        "method",
        "start",
        "duration",
        "outcome",
        "error",
        "items",
        "process",
        "children",
    }
    assert (root["span_id"], root["parent_span_id"]) == (HTTP, None)
    work = root["children"][0]["children"][0]
    assert (work["service"], work["method"], work["parent_span_id"]) == ("b", "work", A_RUN)
    numbers, fail = work["children"]
    assert (numbers["outcome"], numbers["items"], numbers["children"]) == ("stream", 5, [])
    assert (fail["outcome"], fail["error"]) == ("error", "ValueError")


def test_children_are_sorted_by_start_whatever_the_record_order() -> None:
    records = three_level_trace()
    expected = shape(build_trace(TRACE_ID, records))
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(records)
        assert shape(build_trace(TRACE_ID, records)) == expected


def test_only_one_side_seen() -> None:
    records = [
        record("b000000000000001", "client", "calc.add", 0, 10, out="timeout"),
        record("b000000000000002", "server", "calc.sub", 2, 5, out="ok", proc="calc-1"),
    ]
    spans = by_id(build_trace(TRACE_ID, records))
    client_only = spans["b000000000000001"]
    assert (client_only.outcome, client_only.failed, list(client_only.sides)) == (
        "timeout",
        True,
        ["client"],
    )
    server_only = spans["b000000000000002"]
    assert server_only.start == T0 + 0.002
    assert server_only.duration == ms(0.003)
    assert server_only.process["proc"] == "calc-1"


def test_outcome_is_the_servers_unless_the_caller_saw_a_failure() -> None:
    sid = "b000000000000001"
    ok_both = build_trace(
        TRACE_ID,
        [
            record(sid, "client", "calc.add", 0, 10, out="ok"),
            record(sid, "server", "calc.add", 1, 9, out="error", exc="KeyError"),
        ],
    )
    assert (ok_both.roots[0].outcome, ok_both.roots[0].error) == ("error", "KeyError")
    late = build_trace(
        TRACE_ID,
        [
            record(sid, "client", "calc.add", 0, 10, out="timeout"),
            record(sid, "server", "calc.add", 1, 30, out="ok"),
        ],
    )
    assert late.roots[0].outcome == "timeout"  # the server finished after the caller gave up
    assert late.errors == 1


def test_missing_parent_makes_a_root_and_roots_are_sorted() -> None:
    records = [
        record("c000000000000002", "server", "b.late", 20, 30, par="ffffffffffffffff"),
        record("c000000000000001", "server", "a.early", 0, 10, par="eeeeeeeeeeeeeeee"),
        record("c000000000000003", "server", "c.child", 21, 25, par="c000000000000002"),
    ]
    trace = build_trace(TRACE_ID, records)
    assert shape(trace) == [
        (0, "c000000000000001"),
        (0, "c000000000000002"),
        (1, "c000000000000003"),
    ]
    # The missing parent's id stays: it says where the span came from.
    assert trace.roots[0].parent_span_id == "eeeeeeeeeeeeeeee"


def within(seconds: float, fn: Callable[[], Trace]) -> Trace:
    """``fn()``, failing (not hanging) when it does not return in time."""
    done: list[Trace] = []
    worker = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert done, f"did not return in {seconds} s"
    return done[0]


def test_cycles_do_not_hang_and_every_span_is_shown_once() -> None:
    records = [
        # a <-> b, with c below b; and d its own parent
        record("d000000000000001", "server", "s.a", 0, 10, par="d000000000000002"),
        record("d000000000000002", "server", "s.b", 1, 9, par="d000000000000001"),
        record("d000000000000003", "server", "s.c", 2, 8, par="d000000000000002"),
        record("d000000000000004", "server", "s.d", 3, 4, par="d000000000000004"),
        # a longer loop x -> y -> z -> x, entered from w below z
        record("d000000000000005", "server", "s.x", 5, 6, par="d000000000000007"),
        record("d000000000000006", "server", "s.y", 6, 7, par="d000000000000005"),
        record("d000000000000007", "server", "s.z", 7, 8, par="d000000000000006"),
        record("d000000000000008", "server", "s.w", 8, 9, par="d000000000000007"),
    ]
    trace = within(5, lambda: build_trace(TRACE_ID, records))
    seen = [span_id for _, span_id in shape(trace)]
    assert sorted(seen) == sorted(r["sid"] for r in records)
    assert shape(trace) == [
        (0, "d000000000000001"),  # the earliest of its cycle
        (1, "d000000000000002"),
        (2, "d000000000000003"),
        (0, "d000000000000004"),
        (0, "d000000000000005"),
        (1, "d000000000000006"),
        (2, "d000000000000007"),
        (3, "d000000000000008"),
    ]
    json.dumps(trace.to_json())


def test_duplicates_count_once_and_the_complete_one_wins() -> None:
    sid = "e000000000000001"
    partial = record(sid, "server", "calc.add", 0, None, out="?")
    complete = record(sid, "server", "calc.add", 0, 5, out="ok")
    trace = build_trace(TRACE_ID, [partial, complete, dict(complete), partial])
    assert trace.spans == 1
    (span,) = trace.roots
    assert (span.outcome, span.duration) == ("ok", ms(0.005))
    doubled = build_trace(TRACE_ID, three_level_trace() * 2)
    assert shape(doubled) == shape(build_trace(TRACE_ID, three_level_trace()))


def test_a_span_without_an_end() -> None:
    span = build_trace(
        TRACE_ID, [record("f000000000000001", "client", "calc.slow", 0, None, out="lost")]
    ).roots[0]
    assert (span.duration, span.end, span.outcome) == (None, span.start, "lost")


def test_bytes_ids_and_garbage_records() -> None:
    sid = bytes.fromhex("0102030405060708")
    par = bytes.fromhex("1112131415161718")
    records: list[Any] = [
        {**record("x", "server", "calc.add", 0, 1), "sid": sid, "par": par},
        {**record("a1", "server", "calc.add", 0, 1), "sid": None},  # no span id
        {**record("a2", "sideways", "calc.add", 0, 1)},  # unknown side
        {**record("a3", "server", "calc.add", 0, 1), "t0": "soon"},  # no start
        {**record("a4", "server", "calc.add", 0, 1), "t0": True},
        "not a record",
        {**record("a5", "server", "calc.add", 0, 1), "svc": None, "m": b"m\xff", "pid": "x"},
    ]
    trace = build_trace(TRACE_ID, records)
    spans = by_id(trace)
    assert set(spans) == {"0102030405060708", "a5"}
    assert spans["0102030405060708"].parent_span_id == "1112131415161718"
    odd = spans["a5"]
    assert (odd.service, odd.method, odd.process["pid"]) == ("?", "m\ufffd", None)
    assert hex_id(b"") is None
    assert hex_id("ABCD") == "abcd"
    assert hex_id(12) is None


def test_empty() -> None:
    trace = build_trace(TRACE_ID, [])
    assert (trace.spans, trace.errors, trace.roots, trace.start, trace.duration) == (
        0,
        0,
        [],
        None,
        None,
    )
    assert trace_json(TRACE_ID, [])["roots"] == []
    assert "spans=0" in repr(trace)


def test_deep_chain_continues_as_new_roots() -> None:
    depth = 3000  # far beyond Python's recursion limit
    records = [
        record(
            f"{i:016x}", "server", "s.m", i / 100, depth, par=None if i == 0 else f"{i - 1:016x}"
        )
        for i in range(depth)
    ]
    trace = build_trace(TRACE_ID, records)
    assert [d for d, _ in trace.walk()] == [i % MAX_DEPTH for i in range(depth)]
    assert [span.span_id for _, span in trace.walk()] == [f"{i:016x}" for i in range(depth)]
    assert len(trace.roots) == -(-depth // MAX_DEPTH)
    assert trace.roots[1].parent_span_id == f"{MAX_DEPTH - 1:016x}"
    document = trace.to_json()
    assert json.loads(json.dumps(document)) == document  # within the nesting limits
    assert len(encode_json(document)) > 0
    node, levels = document["roots"][0], 1
    while node["children"]:
        node, levels = node["children"][0], levels + 1
    assert levels == MAX_DEPTH
    assert "children=1" in repr(trace.roots[0])
