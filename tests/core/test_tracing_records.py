"""Trace records without a driver: their format and size, switching tracing on and off,
the collector handler (batches, drops, never blocking), error hooks, Sentry and
OpenTelemetry."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from trace_capture import Records, recording

import rpccore
from rpccore import RemoteError, TraceContext, call_metadata, current_trace, tracing
from rpccore import _tracing as tracing_impl
from rpccore._tracing import PAR, SID, SVC, T0, TID, M, N

KEYS = {
    "v", "tid", "sid", "par", "side", "svc", "m", "t0", "t1", "t2", "out", "exc", "n",
    "proc", "host", "pid",
}  # fmt: skip
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = "b7ad6b7169203331"


@pytest.fixture
def records() -> Iterator[Records]:
    with recording("test-proc") as handler:
        yield handler


def server_record() -> None:
    span = tracing_impl.server_begin(TraceContext(TRACE, SPAN, PARENT), "calc", "add")
    tracing_impl.end(span, tracing.OK)
    tracing_impl.emit(span)


def test_a_server_record_has_the_agreed_keys(records: Records) -> None:
    server_record()
    [record] = records.records
    assert set(record) == KEYS
    assert record["v"] == 1
    assert (record["tid"], record["sid"], record["par"]) == (TRACE, SPAN, PARENT)
    assert (record["side"], record["svc"], record["m"]) == ("server", "calc", "add")
    assert (record["out"], record["exc"], record["n"]) == ("ok", None, None)
    assert record["proc"] == "test-proc"
    assert record["t0"] <= record["t1"] <= record["t2"]
    assert abs(record["t2"] - time.time()) < 5


def test_a_request_without_context_starts_a_trace_on_the_server(records: Records) -> None:
    span = tracing_impl.server_begin(None, "calc", "add")
    assert re.fullmatch(r"[0-9a-f]{32}", span[TID])
    assert span[PAR] is None
    tracing_impl.end(span, tracing.ERROR, KeyError("k"))
    tracing_impl.emit(span)
    [record] = records.records
    assert (record["out"], record["exc"], record["tid"]) == ("error", "KeyError", span[TID])


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ({"trace_id": TRACE, "span_id": SPAN, "parent_span_id": PARENT}, (TRACE, SPAN, PARENT)),
        ({"trace_id": TRACE, "span_id": SPAN}, (TRACE, SPAN, None)),
        ({"trace_id": TRACE, "span_id": SPAN, "parent_span_id": "zz"}, (TRACE, SPAN, None)),
        ({"trace_id": TRACE, "span_id": 7}, (TRACE, None, None)),  # a new span id
        ({"trace_id": TRACE.upper(), "span_id": SPAN}, (None, None, None)),  # a new trace
        ({"trace_id": "0" * 32, "span_id": SPAN}, (None, None, None)),
        ({"traceparent": f"00-{TRACE}-{SPAN}-01"}, (TRACE, SPAN, None)),
        ({}, (None, None, None)),
    ],
)
def test_server_start_gives_the_handler_the_context_of_its_span(
    header: dict[str, Any], kept: tuple[str | None, str | None, str | None]
) -> None:
    ctx, span = tracing_impl.server_start({"v": 3, **header}, "calc", "add")
    assert span is not None
    assert ctx == (span[TID], span[SID], span[PAR])  # the handler's calls are its children
    assert tracing.are_trace_ids(*ctx)
    for got, want in zip(ctx, kept, strict=True):
        assert want is None or got == want
    assert (ctx.trace_id == TRACE) is (kept[0] is not None)  # a new trace when not kept
    assert tracing_impl.remote_of(span) is (kept[0] is not None)
    assert tracing_impl.error_of(span) is None
    # A span is its row alone unless it carries more than its side implies.
    assert len(span) == tracing_impl.ROW_WIDTH + (0 if kept[0] is not None else 2)


def test_server_start_records_no_builtin_but_keeps_its_context() -> None:
    header = {"trace_id": TRACE, "span_id": SPAN}
    assert tracing_impl.server_start(header, "calc", "_zerorpc_ping") == (
        TraceContext(TRACE, SPAN),
        None,
    )
    assert tracing_impl.server_start({}, "calc", "_zerorpc_inspect") == (None, None)


def test_a_root_call_starts_a_trace_and_a_nested_one_continues_it(records: Records) -> None:
    def root() -> tuple[dict[str, Any], tracing_impl.Span | None]:
        call_metadata.set({"caller": "me", "trace_id": "theirs"})
        return tracing_impl.client_begin("add", "tcp://x:1")

    header, span = contextvars.copy_context().run(root)
    assert header["caller"] == "me"
    assert header["trace_id"] == span[TID]  # the trace keys win over the metadata
    assert header["span_id"] == span[SID]
    assert "parent_span_id" not in header
    assert span[PAR] is None

    def nested() -> tuple[dict[str, Any], tracing_impl.Span | None]:
        current_trace.set(TraceContext(TRACE, SPAN))
        return tracing_impl.client_begin("add", "calc")

    header, span = contextvars.copy_context().run(nested)
    assert (span[TID], span[PAR]) == (TRACE, SPAN)
    assert header == {"trace_id": TRACE, "span_id": span[SID], "parent_span_id": SPAN}
    assert span[SID] != SPAN
    for i in range(3):
        tracing_impl.item(span)
        assert span[N] == i + 1
    tracing_impl.finish(span, tracing.STREAM)
    [record] = records.records
    assert (record["side"], record["out"], record["n"], record["svc"]) == (
        "client",
        "stream",
        3,
        "calc",
    )
    assert record["t0"] <= record["t1"] <= record["t2"]


@pytest.mark.parametrize(
    ("error", "out", "exc"),
    [
        (rpccore.TimeoutExpired("t"), "timeout", None),
        (rpccore.LostRemote("l"), "lost", None),
        (RemoteError("ValueError", "bad", None), "error", "ValueError"),
        (rpccore.RemoteProtocolError("odd"), "error", "RemoteProtocolError"),
    ],
)
def test_how_a_failed_call_is_recorded(
    records: Records, error: rpccore.RPCError, out: str, exc: str | None
) -> None:
    _, span = tracing_impl.client_begin("add", "calc")
    assert span is not None
    tracing_impl.end_failed(span, error)
    tracing_impl.ship(span)
    [record] = records.records
    assert (record["out"], record["exc"]) == (out, exc)
    assert record["t1"] is (None if out in ("timeout", "lost") else record["t2"])


names = st.text(max_size=400) | st.text(alphabet="abc", max_size=400)


@given(svc=names, method=names, exc=st.none() | names, n=st.none() | st.integers(0, 2**40))
def test_a_record_packs_to_300_bytes_at_most(
    svc: str, method: str, exc: str | None, n: int | None
) -> None:
    out = tracing.ERROR if exc is not None else tracing.ABANDONED
    row = ("f" * 32, "e" * 16, "d" * 16, "client", svc, method, 0.5, 0.5, 0.5, out, exc, n)
    record = tracing_impl._as_record(tracing_impl._fitted(row))
    assert len(msgpack.packb(record)) <= tracing.MAX_RECORD_BYTES
    assert record["svc"] == svc or len(svc.encode("utf-8", "backslashreplace")) > 20


def test_short_names_are_kept_whole() -> None:
    svc, method = "tcp://127.0.0.1:4242", "get_user"
    row = (TRACE, SPAN, None, "client", svc, method, 1.0, 2.0, 2.0, "error", "ZeroDivisionError", 3)
    record = tracing_impl._as_record(tracing_impl._fitted(row))
    assert (record["svc"], record["m"], record["exc"]) == (
        "tcp://127.0.0.1:4242",
        "get_user",
        "ZeroDivisionError",
    )
    assert len(msgpack.packb(record)) <= 300


def test_process_name_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.ENV_PROCESS_NAME, "billing-worker")
    try:
        tracing.enable()
        assert tracing_impl._ident.proc == "billing-worker"
    finally:
        tracing.disable()


def test_off_means_no_records_and_on_off_is_tidy() -> None:
    assert not tracing.is_enabled()
    tracing.enable()
    assert tracing.is_enabled()
    assert tracing.collector_handler() is None  # no collector named: logging only
    tracing.disable()
    assert not tracing.is_enabled()


# -- the collector handler -------------------------------------------------------------


def pull_socket() -> tuple[zmq.Context[Any], Any, str]:
    context: zmq.Context[Any] = zmq.Context()
    sock = context.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return context, sock, f"tcp://127.0.0.1:{port}"


def unpack_batch(message: bytes) -> list[dict[str, Any]]:
    """A batch as the collector reads it: rows under one sender header, made records."""
    version, proc, host, pid, rows = msgpack.unpackb(message)
    assert version == tracing_impl.BATCH_VERSION
    assert len(rows) <= tracing_impl.BATCH_SIZE
    return [
        {"v": 1, **dict(zip(tracing_impl.ROW_FIELDS, row, strict=True)), "proc": proc,
         "host": host, "pid": pid}
        for row in rows
    ]  # fmt: skip


@contextmanager
def collector_alone(
    monkeypatch: pytest.MonkeyPatch,
    process_name: str | None = None,
    *,
    passes_by_hand: bool = False,
) -> Iterator[tuple[tracing_impl.CollectorHandler, Any]]:
    """Tracing on, shipping to a PULL socket (5 s timeout), our collector handler the only one
    on the logger (other tests' capture handlers aside): the fast path. ``passes_by_hand``:
    its sender thread sleeps for a minute, and the test makes the passes."""
    context, pull, endpoint = pull_socket()
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        handler = tracing.enable(endpoint, process_name=process_name)
        assert handler is not None
        if passes_by_hand:
            handler._interval = handler._pause = 60.0
            handler.flush()
            time.sleep(0.2)
        monkeypatch.setattr(logging.getLogger(tracing.LOGGER_NAME), "handlers", [handler])
        assert tracing_impl._route() is handler
        yield handler, pull
    finally:
        tracing.disable()
        pull.close()
        context.term()


def test_records_reach_the_collector_in_batches(records: Records) -> None:
    context, pull, endpoint = pull_socket()
    try:
        handler = tracing.enable(endpoint)
        assert handler is not None
        for _ in range(300):
            server_record()
        got: list[dict[str, Any]] = []
        pull.setsockopt(zmq.RCVTIMEO, 5000)
        while len(got) < 300:
            got += unpack_batch(pull.recv())
        assert set(got[0]) == KEYS
        assert got[0] == records.records[0]  # what the logging handler saw, the same
        assert handler.sent == 300
        assert handler.dropped == 0
        assert "sent=300" in repr(handler)
    finally:
        tracing.disable()
        pull.close()
        context.term()


def test_with_only_the_collector_listening_rows_go_straight_and_say_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with collector_alone(monkeypatch, "rows-only") as (_, pull):
        server_record()
        [record] = unpack_batch(pull.recv())
        assert set(record) == KEYS
        assert (record["tid"], record["sid"], record["par"]) == (TRACE, SPAN, PARENT)
        assert (record["side"], record["svc"], record["m"], record["out"]) == (
            "server",
            "calc",
            "add",
            "ok",
        )
        assert (record["proc"], record["pid"]) == ("rows-only", os.getpid())


def test_a_handler_added_while_the_collector_listens_alone_gets_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace_logger = logging.getLogger(tracing.LOGGER_NAME)
    late = Records()
    with collector_alone(monkeypatch, passes_by_hand=True) as (handler, pull):
        try:
            assert tracing_impl._ship == handler.take  # the fast path: spans queued as they are
            server_record()
            trace_logger.addHandler(late)
            server_record()  # queued too: no pass has looked at the logger since
            assert late.records == []
            handler._send_queued()  # the pass sees the new handler: both go through logging
            assert len(late.records) == 2
            assert tracing_impl._ship is tracing_impl._through_logging
            server_record()  # from now on, through logging at once
            assert len(late.records) == 3
            handler._send_queued()
            got: list[dict[str, Any]] = []
            while len(got) < 3:  # the collector gets each record once, too
                got += unpack_batch(pull.recv())
            assert got == late.records
        finally:
            trace_logger.removeHandler(late)


def test_a_dead_collector_drops_and_counts_and_never_blocks() -> None:
    # Nobody listens: ZeroMQ queues a few batches, then refuses; emit never waits.
    handler = tracing_impl.CollectorHandler(
        "tcp://127.0.0.1:9", high_water_mark=1, batch_size=10, max_buffered=50, interval=0.01
    )
    logger = logging.getLogger(tracing.LOGGER_NAME)
    logger.addHandler(handler)
    tracing.enable()
    try:
        start = time.perf_counter()
        for _ in range(2000):
            server_record()
        elapsed = time.perf_counter() - start
        assert elapsed < 2.0
        deadline = time.monotonic() + 5
        while handler.dropped + handler.sent < 2000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handler.dropped > 0
        assert handler.dropped + handler.sent + handler.queued == 2000
    finally:
        logger.removeHandler(handler)
        tracing.disable()
        handler.close()
    assert handler._sock.closed


def test_closing_sends_what_is_left() -> None:
    context, pull, endpoint = pull_socket()
    handler = tracing_impl.CollectorHandler(endpoint, interval=60.0)
    logger = logging.getLogger(tracing.LOGGER_NAME)
    logger.addHandler(handler)
    tracing.enable()
    try:
        for _ in range(3):
            server_record()
        logger.removeHandler(handler)
        handler.close()  # the thread sleeps for a minute: close must not wait for it
        pull.setsockopt(zmq.RCVTIMEO, 5000)
        assert len(unpack_batch(pull.recv())) == 3
        handler.close()  # twice is harmless
    finally:
        tracing.disable()
        pull.close()
        context.term()


@contextmanager
def shipping(**options: Any) -> Iterator[tuple[tracing_impl.CollectorHandler, Any]]:
    """A CollectorHandler (with ``options``) and the PULL socket it ships to (5 s timeout)."""
    context, pull, endpoint = pull_socket()
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    handler = tracing_impl.CollectorHandler(endpoint, **options)
    try:
        yield handler, pull
    finally:
        handler.close()
        pull.close()
        context.term()
    assert handler._sock.closed


def test_an_idle_sender_waits_longer_and_longer_then_sends_what_comes() -> None:
    with shipping(interval=0.01) as (handler, pull):
        deadline = time.monotonic() + 5
        while handler._pause < tracing_impl.IDLE_INTERVAL:  # nothing to send: backs off
            assert time.monotonic() < deadline, f"the sender never backed off: {handler._pause}"
            time.sleep(0.01)
        handler.put(("row",))
        assert msgpack.unpackb(pull.recv())[-1] == [["row"]]  # within IDLE_INTERVAL
        assert handler._pause == 0.01  # records came: back to the interval


def test_a_row_msgpack_cannot_pack_is_counted_and_never_raises() -> None:
    with shipping(interval=0.01) as (handler, pull):
        handler.put(("\udcff",))  # a lone surrogate has no UTF-8
        handler.put(("fine",))
        assert msgpack.unpackb(pull.recv())[-1] == [["fine"]]
        assert handler.dropped == 1


def test_queued_spans_go_in_one_batch_and_one_that_cannot_pack_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with collector_alone(monkeypatch, "spans", passes_by_hand=True) as (handler, pull):
        spans = [tracing_impl.client_begin("add", "calc")[1] for _ in range(3)]
        for span in spans:
            assert span is not None
            tracing_impl.end(span, tracing.OK)
            handler.take(span)
        spans[1][M] = 42  # its row cannot be made
        handler.put(tracing_impl.row_of(spans[0]))  # a row queued packed, as emit() queues one
        handler._send_queued()
        got = unpack_batch(pull.recv())
        sids = sorted([spans[0][SID], spans[0][SID], spans[2][SID]])
        assert sorted(record["sid"] for record in got) == sids
        assert {record["proc"] for record in got} == {"spans"}
        assert (handler.sent, handler.dropped) == (3, 1)


def test_spans_alone_go_in_one_batch_even_with_names_the_strict_packer_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Name(str):  # a str subclass: msgpack's strict packer refuses it, the default does not
        pass

    with collector_alone(monkeypatch, "spans", passes_by_hand=True) as (handler, pull):
        spans = [tracing_impl.client_begin("add", "calc")[1] for _ in range(3)]
        for span in spans:
            assert span is not None
            tracing_impl.finish(span, tracing.OK)
        spans[1][SVC] = Name("calc-by-subclass")
        handler._send_queued()
        got = unpack_batch(pull.recv())
        assert [record["sid"] for record in got] == [span[SID] for span in spans]
        assert [record["svc"] for record in got] == ["calc", "calc-by-subclass", "calc"]
        assert (handler.sent, handler.dropped) == (3, 0)


def test_a_span_that_cannot_pack_among_spans_alone_is_counted_and_the_rest_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with collector_alone(monkeypatch, passes_by_hand=True) as (handler, pull):
        spans = [tracing_impl.client_begin("add", "calc")[1] for _ in range(3)]
        for span in spans:
            assert span is not None
            tracing_impl.finish(span, tracing.OK)
        spans[1][M] = 42  # its row cannot be made
        handler._send_queued()
        got = unpack_batch(pull.recv())
        assert [record["sid"] for record in got] == [spans[0][SID], spans[2][SID]]
        assert (handler.sent, handler.dropped, handler.queued) == (2, 1, 0)


def test_the_sender_packs_each_span_as_its_row_whatever_it_carries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with collector_alone(monkeypatch, "spans", passes_by_hand=True) as (handler, pull):
        plain = tracing_impl.client_begin("add", "calc")[1]
        failed = tracing_impl.client_begin("add", "calc")[1]
        root = tracing_impl.server_begin(None, "calc", "add")  # REMOTE and ERR follow its row
        long = tracing_impl.client_begin("m" * 400, "calc")[1]  # its name must be shortened
        spans = [plain, failed, root, long]
        assert None not in spans
        tracing_impl.finish(plain, tracing.OK)
        tracing_impl.end_failed(failed, RemoteError("KeyError", "k", None))
        tracing_impl.ship(failed)
        tracing_impl.end(root, tracing.OK)
        tracing_impl.emit(root)
        tracing_impl.finish(long, tracing.OK)
        assert [len(span) for span in (plain, failed, root, long)] == [12, 14, 14, 12]
        handler._send_queued()
        got = unpack_batch(pull.recv())
        assert [record["sid"] for record in got] == [
            span[SID] for span in (plain, failed, root, long)
        ]
        assert [record["exc"] for record in got] == [None, "KeyError", None, None]
        assert got[2]["side"] == "server"
        assert 0 < len(got[3]["m"]) < 400
        assert all(len(msgpack.packb(record)) <= tracing.MAX_RECORD_BYTES for record in got)
        assert (handler.sent, handler.dropped) == (4, 0)


def test_spans_past_max_buffered_are_dropped_and_counted_by_the_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # take() is the queue's own append, with no check: the sender keeps the bound.
    with collector_alone(monkeypatch, passes_by_hand=True) as (handler, pull):
        handler._max = 5
        spans = [tracing_impl.client_begin("add", "calc")[1] for _ in range(8)]
        for span in spans:
            assert span is not None
            tracing_impl.finish(span, tracing.OK)  # through _ship: take
        assert handler.queued == 8
        handler._send_queued()
        got = unpack_batch(pull.recv())
        assert [record["sid"] for record in got] == [span[SID] for span in spans[:5]]
        assert (handler.sent, handler.dropped, handler.queued) == (5, 3, 0)


def test_a_bad_collector_endpoint_fails_at_enable() -> None:
    with pytest.raises(zmq.ZMQError):
        tracing.enable("nonsense://x")
    tracing.disable()


# -- error hooks, Sentry, OpenTelemetry --------------------------------------------------


def test_error_hooks_see_every_err_and_cannot_break_calls(records: Records) -> None:
    seen: list[tuple[str, Any]] = []

    def broken(record: dict[str, Any], error: Any) -> None:
        raise RuntimeError("hook bug")

    remove = tracing.on_error(lambda record, error: seen.append((record["tid"], error)))
    remove_broken = tracing.on_error(broken)
    try:
        problem = KeyError("k")
        span = tracing_impl.server_begin(TraceContext(TRACE, SPAN), "calc", "get")
        tracing_impl.end(span, tracing.ERROR, problem)
        tracing_impl.emit(span)
        _, client = tracing_impl.client_begin("get", "calc")
        remote = RemoteError("KeyError", "k", None)
        tracing_impl.end_failed(client, remote)
        tracing_impl.ship(client)
        ok = tracing_impl.server_begin(None, "calc", "get")
        tracing_impl.end(ok, tracing.OK)
        tracing_impl.emit(ok)
    finally:
        remove()
        remove_broken()
    assert seen == [(TRACE, problem), (client[TID], remote)]
    assert len(records.records) == 3


def test_server_errors_go_to_an_initialised_sentry(records: Records) -> None:
    sentry_sdk = pytest.importorskip("sentry_sdk")
    from sentry_sdk.transport import Transport

    events: list[dict[str, Any]] = []

    class Fake(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            for item in envelope.items:
                if item.type == "event":
                    events.append(item.payload.json)

    sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=Fake, default_integrations=False)
    try:
        span = tracing_impl.server_begin(TraceContext(TRACE, SPAN), "calc", "divide")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError as exc:
            tracing_impl.end(span, tracing.ERROR, exc)
        tracing_impl.emit(span)
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
    [event] = events
    assert event["tags"]["trace_id"] == TRACE
    assert event["tags"]["rpc.service"] == "calc"
    assert event["tags"]["rpc.method"] == "divide"
    assert event["exception"]["values"][0]["type"] == "ZeroDivisionError"


@contextmanager
def opentelemetry_spans() -> Iterator[Any]:
    """An OpenTelemetry SDK provider whose finished spans an in-memory exporter keeps,
    our handler on it while inside; yields the exporter."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = tracing.use_opentelemetry(provider)
    try:
        yield exporter
    finally:
        logging.getLogger(tracing.LOGGER_NAME).removeHandler(handler)
        handler.close()


def test_records_become_opentelemetry_spans_with_our_ids(records: Records) -> None:
    with opentelemetry_spans() as exporter:
        from opentelemetry.trace import SpanKind, StatusCode

        _, client = tracing_impl.client_begin("add", "calc")
        server = tracing_impl.server_begin(
            TraceContext(client[TID], client[SID], client[PAR]), "calc", "add"
        )
        tracing_impl.end(server, tracing.ERROR, ValueError("v"))
        tracing_impl.emit(server)
        tracing_impl.finish(client, tracing.OK)
    spans = {span.kind: span for span in exporter.get_finished_spans()}
    s, c = spans[SpanKind.SERVER], spans[SpanKind.CLIENT]
    assert s.name == c.name == "calc/add"
    assert s.attributes is not None
    assert c.attributes is not None
    assert s.attributes["rpc.system.name"] == "zerorpc"
    assert (s.attributes["rpc.service"], s.attributes["rpc.method"]) == ("calc", "add")
    assert s.context is not None
    assert c.context is not None
    assert format(s.context.trace_id, "032x") == format(c.context.trace_id, "032x") == client[TID]
    assert format(s.context.span_id, "016x") == client[SID]  # the server span is our sid
    assert s.parent is not None
    assert s.parent.span_id == c.context.span_id
    assert c.parent is None  # a root call
    assert s.status.status_code is StatusCode.ERROR
    assert s.start_time == int(server[T0] * 1e9)


@pytest.mark.parametrize(
    ("exc", "status"),
    [("HTTP 404", 404), ("HTTP 502", 502), (None, None), ("ValueError", None), ("HTTP 5x2", None)],
)
def test_http_status_reads_back_what_http_request_wrote(
    exc: str | None, status: int | None
) -> None:
    assert tracing_impl.http_status(exc) == status


def test_http_records_become_opentelemetry_http_server_spans(records: Records) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    request = TraceContext(TRACE, SPAN, PARENT)  # a child of the caller's traceparent
    t0 = time.time()
    with opentelemetry_spans() as exporter:
        token = current_trace.set(request)
        try:
            _, call = tracing_impl.client_begin("add", "calc")  # a call the request made
        finally:
            current_trace.reset(token)
        tracing_impl.finish(call, tracing.OK)
        tracing_impl.http_request(request, "POST /rpc/calc/add", t0, 200)
        tracing_impl.http_request(TraceContext(TRACE, "1" * 16, None), "GET", t0, 404)
        tracing_impl.http_request(TraceContext(TRACE, "2" * 16, None), "POST /jsonrpc", t0, 502)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == ["GET", "POST /jsonrpc", "POST /rpc/calc/add", "calc/add"]
    http, rpc = spans["POST /rpc/calc/add"], spans["calc/add"]
    assert http.kind is SpanKind.SERVER
    assert http.attributes is not None
    assert http.attributes["http.request.method"] == "POST"
    assert http.attributes["http.route"] == "/rpc/calc/add"
    assert "http.response.status_code" not in http.attributes  # a success names none
    assert "rpc.system.name" not in http.attributes
    assert http.status.status_code is StatusCode.UNSET
    assert http.context is not None
    assert format(http.context.span_id, "016x") == SPAN
    assert http.parent is not None  # the caller's span: the trace goes on upstream
    assert (format(http.parent.span_id, "016x"), http.parent.is_remote) == (PARENT, True)
    assert rpc.parent is not None
    assert rpc.parent.span_id == http.context.span_id  # the call is the request's child
    missed, failed = spans["GET"], spans["POST /jsonrpc"]
    assert missed.attributes is not None
    assert failed.attributes is not None
    assert "http.route" not in missed.attributes
    assert missed.attributes["http.response.status_code"] == 404
    assert "error.type" not in missed.attributes
    assert missed.status.status_code is StatusCode.UNSET  # a 4xx is the caller's mistake
    assert failed.attributes["http.response.status_code"] == 502
    assert failed.attributes["error.type"] == "502"
    assert failed.status.status_code is StatusCode.ERROR
    assert missed.parent is None


# -- carrying the context into threads -------------------------------------------------


def test_traced_carries_the_trace_into_a_thread() -> None:
    ctx = TraceContext(TRACE, SPAN)
    seen: list[TraceContext | None] = []

    def work() -> None:
        seen.append(current_trace.get())

    def handler() -> None:
        current_trace.set(ctx)
        plain = threading.Thread(target=work)
        wrapped = threading.Thread(target=rpccore.traced(work))
        plain.start()
        plain.join()
        wrapped.start()
        wrapped.join()

    contextvars.copy_context().run(handler)
    assert seen == [None, ctx]


@pytest.mark.parametrize("method", ["_zerorpc_ping", "_zerorpc_inspect"])
def test_protocol_built_ins_are_never_recorded(method: str) -> None:
    header, span = tracing_impl.client_begin(method, "calc")
    assert span is None
    assert header is None  # no trace here: nothing to carry either
    assert tracing_impl.server_begin(None, "calc", method) is None
    assert tracing_impl.client_begin("add", "calc")[1] is not None
    assert tracing_impl.server_begin(None, "calc", "add") is not None


def test_untraced_calls_are_not_recorded() -> None:
    from rpccore.tracing import untraced

    with untraced():
        assert tracing_impl.client_begin("trace", "calc")[1] is None
        assert tracing_impl.server_begin(None, "calc", "trace") is None
    assert tracing_impl.client_begin("trace", "calc")[1] is not None
