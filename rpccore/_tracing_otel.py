"""Trace records as OpenTelemetry spans (needs ``opentelemetry-sdk``; imported only when
an application uses OpenTelemetry).

Each record becomes one span named ``{service}/{method}``, kind CLIENT or SERVER, with the
record's times, ``rpc.system.name = "zerorpc"``, ``rpc.service`` and ``rpc.method``. Our ids
are kept: the SDK's tracer takes its ids from an id generator, and our tracer's generator
hands out the record's. The server span's id is our ``sid``; the client span's is a fixed
transform of it (``otel_client_span_id``), since both sides of a call share ``sid``. So the
tree is client span -> server span -> the client spans of calls its handler made. The
record's own ids are attributes too (``zerogate.*``).

A gateway's record of an HTTP request (side ``http``, method ``"POST /rpc/calc/add"``)
becomes a SERVER span as OpenTelemetry's HTTP conventions make one: that method as its name,
``http.request.method`` and ``http.route``, ``http.response.status_code`` when the answer
was an error (the record names only those), an ERROR status (and ``error.type``) for a 5xx
only: a 4xx is the caller's mistake. Its parent is the span of the caller's ``traceparent``,
so the gateway's span joins a caller's OpenTelemetry trace.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from ._tracing import (
    ERROR,
    EXTRA_KEY,
    HTTP_SIDE,
    LOST,
    TIMEOUT,
    http_status,
    otel_client_span_id,
)

_FAILED = (ERROR, LOST, TIMEOUT)


class _RecordIds:
    """An id generator that returns the ids of the record being turned into a span."""

    trace_id = 0
    span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return True


class OpenTelemetryHandler(logging.Handler):
    """A ``rpccore.trace`` handler that ends one OpenTelemetry span per record.

    ``keeps_ids`` says whether the provider's tracer let us set the span ids (the SDK's
    does); when not, the spans get the provider's ids and ours are only attributes."""

    def __init__(self, provider: Any = None) -> None:
        super().__init__(logging.INFO)
        if provider is None:
            provider = otel_trace.get_tracer_provider()
        self._tracer = provider.get_tracer("rpccore.tracing")
        self._ids = _RecordIds()
        self.keeps_ids = hasattr(self._tracer, "id_generator")
        if self.keeps_ids:
            self._tracer.id_generator = self._ids

    def __repr__(self) -> str:
        return f"<OpenTelemetryHandler keeps_ids={self.keeps_ids}>"

    def emit(self, record: logging.LogRecord) -> None:
        data = record.__dict__.get(EXTRA_KEY)
        if data is None:
            return
        try:
            self._span(data, bool(record.__dict__.get("zerogate_remote_parent")))
        except Exception:
            self.handleError(record)

    def _span(self, r: dict[str, Any], remote_parent: bool) -> None:
        trace_id = int(r["tid"], 16)
        side, sid = r["side"], r["sid"]
        caller = int(r["par"], 16) if r["par"] else None  # the calling span's id
        client = side == "client"
        if client:
            own, parent = otel_client_span_id(sid), caller
        elif side == HTTP_SIDE:  # the caller's span is its traceparent's
            own, parent = int(sid, 16), caller
        else:  # a server: the parent is its call's client span
            own = int(sid, 16)
            parent = otel_client_span_id(sid) if remote_parent else None
        ctx = otel_context.Context()  # never the thread's current span
        if parent is not None:
            remote = SpanContext(
                trace_id, parent, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
            )
            ctx = otel_trace.set_span_in_context(NonRecordingSpan(remote), ctx)
        self._ids.trace_id, self._ids.span_id = trace_id, own
        if side == HTTP_SIDE:
            name, attributes, failed = _http_span(r)
        else:
            name, attributes = f"{r['svc']}/{r['m']}", _rpc_attributes(r)
            failed = r["out"] in _FAILED
            if r["exc"]:
                attributes["error.type"] = r["exc"]
        attributes |= {
            "zerogate.trace_id": r["tid"],
            "zerogate.span_id": r["sid"],
            "zerogate.outcome": r["out"],
            "process.pid": r["pid"],
            "host.name": r["host"],
            "zerogate.process": r["proc"],
        }
        if r["par"]:
            attributes["zerogate.parent_span_id"] = r["par"]
        if r["n"] is not None:
            attributes["zerogate.stream_items"] = r["n"]
        span = self._tracer.start_span(
            name,
            context=ctx,
            kind=SpanKind.CLIENT if client else SpanKind.SERVER,
            attributes=attributes,
            start_time=int(r["t0"] * 1e9),
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR, r["exc"] or r["out"]))
        span.end(end_time=int(r["t2"] * 1e9))


def _rpc_attributes(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "rpc.system.name": "zerorpc",
        "rpc.system": "zerorpc",
        "rpc.service": r["svc"],
        "rpc.method": r["m"],
    }


def _http_span(r: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """(span name, attributes, whether it failed) of an HTTP request's record: its method
    is the verb and, when a route matched, the route's template."""
    name: str = r["m"]
    verb, _, route = name.partition(" ")
    attributes: dict[str, Any] = {"http.request.method": verb}
    if route:
        attributes["http.route"] = route
    code = http_status(r["exc"])
    if code is None:
        return name, attributes, False
    attributes["http.response.status_code"] = code
    if code < 500:
        return name, attributes, False
    attributes["error.type"] = str(code)
    return name, attributes, True
