"""A trace's call tree, from the records the collector stores (pure: records in, tree out).

Each call is recorded up to twice, by the caller (``side: "client"``) and by the server that
ran it (``"server"``), under the same span id ``sid``; the gateway records the HTTP request
itself as an ``"http"`` span. A record is a dict::

    tid sid par   trace id (32 hex), span id (16 hex), parent span id or None
    side          "client" | "server" | "http"
    svc m         service and method
    t0 t1 t2      start, first reply (or None), end: Unix seconds
    out exc n     outcome ("ok" "error" "stream" "lost" "timeout" "abandoned"),
                  exception (or None), stream items (or None)
    proc host pid the process that wrote it

``build_trace`` merges the records of one span id into one ``Span``:

- service and method are the caller's (the name it called, as the gateway's config and
  routes spell it), else the server's;
- the start and the end are the caller's when it recorded the call (so the duration includes
  the network), else the server's;
- the outcome is the server's, unless the caller saw a failure the server did not (a timeout
  or a lost server, while the server went on to finish): then the caller's, since that is
  what the call amounted to;
- the exception, the stream items and the process are the server's, else the caller's.

The parent is ``par``. A span whose parent is not in the trace is a root (the HTTP span
whose ``traceparent`` came from outside, or a record the collector never got). Records that
claim a cycle (a span its own ancestor) cannot all hang below a root: the earliest span of
the cycle becomes a root, so every span is shown once. A chain deeper than ``MAX_DEPTH``
continues as a new root, so the JSON stays within what any parser nests. Children and roots
are sorted by start. Duplicate records (a side sent twice) count once: the more complete one
is kept. Records without a span id, a known side or a numeric start are ignored.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ERROR_OUTCOMES",
    "MAX_DEPTH",
    "SIDES",
    "Span",
    "Trace",
    "build_trace",
    "hex_id",
    "trace_json",
]

SIDES: Final = ("client", "server", "http")
ERROR_OUTCOMES: Final = frozenset({"error", "lost", "timeout"})
MAX_DEPTH: Final = 200  # deeper, a chain continues as a new root (JSON parsers limit nesting)
UNKNOWN: Final = "?"


def hex_id(value: Any) -> str | None:
    """An id as lowercase hex: bytes are hex-encoded, strings lowercased; None otherwise."""
    if isinstance(value, bytes | bytearray):
        return binascii.hexlify(value).decode() if value else None
    if isinstance(value, str) and value:
        return value.lower()
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True, slots=True)
class _Record:
    sid: str
    par: str | None
    side: str
    svc: str
    m: str
    t0: float
    t1: float | None
    t2: float | None
    out: str
    exc: str | None
    n: int | None
    process: dict[str, Any]

    @property
    def completeness(self) -> int:
        return (self.t2 is not None) + (self.t1 is not None) + (self.out != UNKNOWN)


def _record(raw: Any) -> _Record | None:
    if not isinstance(raw, Mapping):
        return None
    sid = hex_id(raw.get("sid"))
    side = _text(raw.get("side"))
    t0 = _number(raw.get("t0"))
    if sid is None or side not in SIDES or t0 is None:
        return None
    n = raw.get("n")
    return _Record(
        sid=sid,
        par=hex_id(raw.get("par")),
        side=side,
        svc=_text(raw.get("svc")) or UNKNOWN,
        m=_text(raw.get("m")) or UNKNOWN,
        t0=t0,
        t1=_number(raw.get("t1")),
        t2=_number(raw.get("t2")),
        out=_text(raw.get("out")) or UNKNOWN,
        exc=_text(raw.get("exc")),
        n=n if isinstance(n, int) and not isinstance(n, bool) else None,
        process={
            "proc": _text(raw.get("proc")),
            "host": _text(raw.get("host")),
            "pid": raw.get("pid") if isinstance(raw.get("pid"), int) else None,
        },
    )


@dataclass(slots=True, eq=False)
class Span:
    """One call (or the HTTP request), both sides merged."""

    span_id: str
    parent_span_id: str | None
    kind: str  # "rpc", or "http" for the gateway's own span of the request
    service: str
    method: str
    start: float
    duration: float | None  # None when no side recorded an end
    outcome: str
    error: str | None
    items: int | None
    process: dict[str, Any]
    sides: dict[str, dict[str, Any]]
    children: list[Span] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"<Span {self.span_id} {self.service}.{self.method} {self.outcome} "
            f"children={len(self.children)}>"
        )

    @property
    def failed(self) -> bool:
        return self.outcome in ERROR_OUTCOMES

    @property
    def end(self) -> float:
        return self.start + (self.duration or 0.0)

    @property
    def label(self) -> str:
        sep = " " if self.kind == "http" else "."
        return f"{self.service}{sep}{self.method}"

    def fields(self) -> dict[str, Any]:
        """The JSON object of this span, without its children."""
        return {
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "kind": self.kind,
            "service": self.service,
            "method": self.method,
            "start": self.start,
            "duration": self.duration,
            "outcome": self.outcome,
            "error": self.error,
            "items": self.items,
            "process": self.process,
            "sides": self.sides,
        }


@dataclass(slots=True)
class Trace:
    trace_id: str
    roots: list[Span]
    spans: int
    errors: int

    def __repr__(self) -> str:
        return f"<Trace {self.trace_id} spans={self.spans} errors={self.errors}>"

    @property
    def start(self) -> float | None:
        return min((span.start for span in self.roots), default=None)

    @property
    def duration(self) -> float | None:
        start = self.start
        if start is None:
            return None
        return max(span.end for _, span in self.walk()) - start

    def walk(self) -> Iterator[tuple[int, Span]]:
        """Every span with its depth (roots are 0), depth first, in display order."""
        stack = [(0, span) for span in reversed(self.roots)]
        while stack:
            depth, span = stack.pop()
            yield depth, span
            stack.extend((depth + 1, child) for child in reversed(span.children))

    def to_json(self) -> dict[str, Any]:
        """``{trace_id, start, duration, spans, errors, roots: [span, ...]}``, each span with
        its ``children``. Built without recursion: a deep chain cannot hit Python's limit."""
        order = [span for _, span in self.walk()]
        objects = {id(span): {**span.fields(), "children": []} for span in order}
        for span in order:
            objects[id(span)]["children"] = [objects[id(child)] for child in span.children]
        roots = [objects[id(root)] for root in self.roots]
        return {
            "trace_id": self.trace_id,
            "start": self.start,
            "duration": self.duration,
            "spans": self.spans,
            "errors": self.errors,
            "roots": roots,
        }


def _merge(records: list[_Record]) -> Span:
    by_side: dict[str, _Record] = {}
    for record in records:
        kept = by_side.get(record.side)
        if kept is None or record.completeness > kept.completeness:
            by_side[record.side] = record
    client, server, http = (by_side.get(side) for side in SIDES)
    caller = client or server or http
    worker = server or client or http
    assert caller is not None
    assert worker is not None
    # The caller's name (as the gateway's config spells it) unless all it knew was the
    # endpoint it called: then the server's own name says more.
    named = (
        client
        if client is not None and client.svc != UNKNOWN and "://" not in client.svc
        else worker
    )
    outcome = worker.out
    if client is not None and client.out in ERROR_OUTCOMES and outcome not in ERROR_OUTCOMES:
        outcome = client.out
    error = next((r.exc for r in (server, client, http) if r is not None and r.exc), None)
    items = next((r.n for r in (server, client, http) if r is not None and r.n is not None), None)
    end = caller.t2 if caller.t2 is not None else worker.t2
    return Span(
        span_id=caller.sid,
        parent_span_id=next((r.par for r in (client, server, http) if r and r.par), None),
        kind="http" if client is None and server is None else "rpc",
        service=named.svc,
        method=named.m,
        start=caller.t0,
        duration=None if end is None else max(0.0, end - caller.t0),
        outcome=outcome,
        error=error,
        items=items,
        process=dict(worker.process),
        sides={
            side: {
                "start": r.t0,
                "first_reply": r.t1,
                "end": r.t2,
                "outcome": r.out,
                "error": r.exc,
                "items": r.n,
                "process": dict(r.process),
            }
            for side, r in by_side.items()
        },
    )


def _order(span: Span) -> tuple[float, str]:
    return span.start, span.span_id


def build_trace(trace_id: str, records: Iterable[Any]) -> Trace:
    """The call tree of ``records`` (the collector's records of trace ``trace_id``)."""
    grouped: dict[str, list[_Record]] = {}
    for raw in records:
        record = _record(raw)
        if record is not None:
            grouped.setdefault(record.sid, []).append(record)
    spans = {sid: _merge(group) for sid, group in grouped.items()}

    children: dict[str, list[Span]] = {}
    roots: list[Span] = []
    for span in spans.values():
        parent = span.parent_span_id
        if parent is None or parent not in spans or parent == span.span_id:
            roots.append(span)
        else:
            children.setdefault(parent, []).append(span)

    placed: set[str] = set()
    continued: list[Span] = []

    def place(root: Span) -> None:
        stack = [(0, root)]
        while stack:
            depth, span = stack.pop()
            placed.add(span.span_id)
            kids = sorted(
                (c for c in children.get(span.span_id, ()) if c.span_id not in placed),
                key=_order,
            )
            if depth + 1 < MAX_DEPTH:
                span.children = kids
                stack.extend((depth + 1, kid) for kid in kids)
            else:
                span.children = []
                continued.extend(kids)
                stack.extend((0, kid) for kid in kids)

    roots.sort(key=_order)
    for root in roots:
        place(root)
    # What is left hangs below a cycle: cut each cycle at its earliest span.
    for span in sorted(spans.values(), key=_order):
        if span.span_id in placed:
            continue
        cycle_start = _cycle_member(span, spans)
        roots.append(cycle_start)
        place(cycle_start)
    roots.extend(continued)
    roots.sort(key=_order)

    return Trace(
        trace_id=trace_id,
        roots=roots,
        spans=len(spans),
        errors=sum(1 for span in spans.values() if span.failed),
    )


def _cycle_member(span: Span, spans: Mapping[str, Span]) -> Span:
    """The earliest span of the cycle above ``span`` (every unplaced span has one)."""
    seen: list[str] = []
    current = span.span_id
    while current not in seen:
        seen.append(current)
        parent = spans[current].parent_span_id
        assert parent is not None  # else it would be a root, placed
        current = parent
    cycle = seen[seen.index(current) :]
    return min((spans[sid] for sid in cycle), key=_order)


def trace_json(trace_id: str, records: Iterable[Any]) -> dict[str, Any]:
    return build_trace(trace_id, records).to_json()
