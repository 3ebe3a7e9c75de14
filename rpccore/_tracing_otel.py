"""Trace records as OpenTelemetry spans (needs ``opentelemetry-sdk``; imported only when
an application uses OpenTelemetry).

Each record becomes one span named ``{service}/{method}``, kind CLIENT or SERVER, with the
record's times, ``rpc.system.name = "zerorpc"``, ``rpc.service`` and ``rpc.method``. Our ids
are kept: the SDK's tracer takes its ids from an id generator, and our tracer's generator
hands out the record's. The server span's id is our ``sid``; the client span's is a fixed
transform of it (``otel_client_span_id``), since both sides of a call share ``sid``. So the
tree is client span -> server span -> the client spans of calls its handler made. The
record's own ids are attributes too (``zerogate.*``).
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

from ._tracing import ERROR, EXTRA_KEY, LOST, TIMEOUT, otel_client_span_id

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
        client = r["side"] == "client"
        if client:
            own = otel_client_span_id(r["sid"])
            parent = int(r["par"], 16) if r["par"] else None
        else:
            own = int(r["sid"], 16)
            parent = otel_client_span_id(r["sid"]) if remote_parent else None
        ctx = otel_context.Context()  # never the thread's current span
        if parent is not None:
            remote = SpanContext(
                trace_id, parent, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
            )
            ctx = otel_trace.set_span_in_context(NonRecordingSpan(remote), ctx)
        self._ids.trace_id, self._ids.span_id = trace_id, own
        attributes: dict[str, Any] = {
            "rpc.system.name": "zerorpc",
            "rpc.system": "zerorpc",
            "rpc.service": r["svc"],
            "rpc.method": r["m"],
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
        if r["exc"]:
            attributes["error.type"] = r["exc"]
        span = self._tracer.start_span(
            f"{r['svc']}/{r['m']}",
            context=ctx,
            kind=SpanKind.CLIENT if client else SpanKind.SERVER,
            attributes=attributes,
            start_time=int(r["t0"] * 1e9),
        )
        if r["out"] in _FAILED:
            span.set_status(Status(StatusCode.ERROR, r["exc"] or r["out"]))
        span.end(end_time=int(r["t2"] * 1e9))
