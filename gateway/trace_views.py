"""Viewing traces and live statistics: ``/traces``, ``/traces/{trace_id}`` and ``/stats``.

    GET /traces             recent traces: an HTML table, or JSON (``Accept: application/json``);
                            ``?service=S&method=M&failed=1``: only the traces with a span of S.M
                            (that failed), each part optional (the statistics page links there)
    GET /traces/{trace_id}  the call tree: JSON, or a timeline page when the client prefers
                            text/html (a browser)
    GET /stats              request rates and latency percentiles per service and method: JSON,
                            or a page of small charts that reloads itself every few seconds
                            (``?minutes=N``: over the last N minutes, else since the start)

``?format=json`` or ``?format=html`` overrides the ``Accept`` header. The data comes from a
``TraceSource``: ``CollectorSource`` asks the collector's query service over rpccore; a
collector that does not answer is a 503 problem with ``Retry-After``.

The pages are rendered here, with no script and nothing fetched from elsewhere: the timeline
and the charts are inline SVG, the one stylesheet is inline and allowed by its hash in the
Content-Security-Policy, and the statistics page reloads with ``<meta http-equiv=refresh>``.
Every string that reaches a page (service and method names, exception names, process names:
all written by backends) is escaped. Links are relative to the page, so the pages work behind
a path prefix.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from html import escape
from typing import Any, Final, Protocol
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from auth.gate import authorize_operator
from rpccore import LostRemote, RemoteError, RPCError, TimeoutExpired, current_trace
from rpccore.aio import Client
from rpccore.tracing import untraced

from .args import query_value
from .observe import request_info
from .payloads import JSON, ResultFormat, encode_result
from .problems import NOT_FOUND, UNAVAILABLE, Problem, invalid_argument, unavailable
from .responses import problem_response
from .trace_records import TraceFilter
from .trace_store import EVERY_TRACE, MAX_SCANNED
from .trace_tree import Span, Trace, build_trace, hex_id

__all__ = [
    "CollectorSource",
    "SourceError",
    "SourceUnavailable",
    "TraceSource",
    "TraceViews",
    "prefers_html",
    "render_stats",
    "render_trace",
    "render_traces",
    "trace_routes",
]

COLLECTOR_SERVICE: Final = "zerogate-collector"
DEFAULT_QUERY_TIMEOUT: Final = 3.0  # seconds a query may take before the collector is "down"
DEFAULT_RETRY_AFTER: Final = 5.0
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
MAX_MINUTES: Final = 60  # the collector keeps per-minute statistics for an hour
STATS_REFRESH: Final = 5  # seconds between reloads of the statistics page
HISTORY: Final = 60  # samples of each method's rate kept for the sparklines
MAX_HISTORY_KEYS: Final = 1000
_MAX_BUCKETS: Final = 40
_TRACE_ID: Final = re.compile(r"[0-9a-fA-F]{32}")
HTML: Final = "text/html; charset=utf-8"

# -- where the data comes from ----------------------------------------------------------


class SourceError(Exception):
    """The source answered with a failure (a 502)."""


class SourceUnavailable(SourceError):
    """The source did not answer (a 503 with Retry-After)."""

    def __init__(self, detail: str, retry_after: float = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TraceSource(Protocol):
    """What the views read. Raise ``SourceUnavailable`` when the data cannot be had now."""

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The records of one trace (see ``trace_tree``); empty when it is not known."""
        ...

    async def recent(
        self, limit: int = DEFAULT_LIMIT, where: TraceFilter = EVERY_TRACE
    ) -> list[dict[str, Any]]:
        """Newest first: ``{trace_id, start, duration, spans, errors, root: {svc, m}}``, of
        the traces ``where`` matches."""
        ...

    async def stats(self, minutes: int | None = None) -> dict[str, Any]:
        """``{svc: {m: {count, errors, rate, p50, p90, p99, buckets, side}}}``: in total, or
        over the last ``minutes``."""
        ...


class CollectorSource:
    """The collector's query service (``zerogate-collector``) at ``endpoint``, over one
    rpccore.aio client, opened by the first query (on the app's loop) and closed by
    ``aclose()`` (in the app's lifespan). Queries carry no trace context: looking at traces
    does not make new ones."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = DEFAULT_QUERY_TIMEOUT,
        retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.retry_after = retry_after
        self._client: Client | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._client else "idle"
        return f"<CollectorSource {self.endpoint} {state}>"

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return _list(await self._query("trace", trace_id), "trace")

    async def recent(
        self, limit: int = DEFAULT_LIMIT, where: TraceFilter = EVERY_TRACE
    ) -> list[dict[str, Any]]:
        if not where:  # as a collector that knows no filters is asked
            return _list(await self._query("recent", limit), "recent")
        answer = await self._query("recent", limit, where.service, where.method, where.failed)
        return _list(answer, "recent")

    async def stats(self, minutes: int | None = None) -> dict[str, Any]:
        answer = await (self._query("stats") if minutes is None else self._query("stats", minutes))
        if not isinstance(answer, dict):
            raise SourceError("the collector's stats() answered something else than a map")
        return answer

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _query(self, method: str, *args: Any) -> Any:
        if self._closed:
            raise SourceUnavailable("the gateway is shutting down", self.retry_after)
        if self._client is None:
            self._client = Client(self.endpoint, timeout=self.timeout)
        token = current_trace.set(None)
        try:
            with untraced():
                return await self._client.call(method, *args)
        except RemoteError as exc:
            raise SourceError(
                f"the collector failed {method}(): {exc.name}: {exc.message}"
            ) from None
        except (TimeoutExpired, LostRemote) as exc:
            raise SourceUnavailable(
                f"the trace collector at {self.endpoint} does not answer ({type(exc).__name__})",
                self.retry_after,
            ) from None
        except RPCError as exc:
            raise SourceUnavailable(
                f"the trace collector failed: {exc}", self.retry_after
            ) from None
        finally:
            current_trace.reset(token)


def _list(answer: Any, method: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list):
        raise SourceError(f"the collector's {method}() answered something else than a list")
    return [item for item in answer if isinstance(item, dict)]


# -- the routes -------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def trace_routes(source: TraceSource, *, refresh: int = STATS_REFRESH) -> list[BaseRoute]:
    """The routes of the trace and statistics views, reading ``source``."""
    views = TraceViews(source, refresh=refresh)
    return [
        Route("/traces", _answering(views.traces, "traces"), methods=["GET"]),
        Route("/traces/{trace_id}", _answering(views.trace, "traces"), methods=["GET"]),
        Route("/stats", _answering(views.stats, "statistics"), methods=["GET"]),
    ]


def _answering(endpoint: Endpoint, what: str) -> Endpoint:
    """Only for an operator, when auth is on (``what`` the view shows); problems and source
    failures become problem documents, in this one place."""

    async def answer(request: Request) -> Response:
        try:
            authorize_operator(request_info(request.scope), what)
            return await endpoint(request)
        except (Problem, SourceError) as exc:
            return problem_response(_problem(exc), request_info(request.scope))

    answer.__name__ = endpoint.__name__
    return answer


def _problem(exc: Problem | SourceError) -> Problem:
    if isinstance(exc, SourceUnavailable):
        return unavailable(str(exc), exc.retry_after)
    if isinstance(exc, SourceError):
        return Problem(502, str(exc), code=UNAVAILABLE)
    return exc


class TraceViews:
    def __init__(self, source: TraceSource, *, refresh: int = STATS_REFRESH) -> None:
        self.source = source
        self.refresh = refresh
        self.history = RateHistory()

    def __repr__(self) -> str:
        return f"<TraceViews {self.source!r} history={len(self.history.rates)}>"

    async def traces(self, request: Request) -> Response:
        limit = _bounded(request.query_params.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
        assert limit is not None
        where = _trace_filter(request.query_params)
        summaries = (_summary(item) for item in await self.source.recent(limit, where))
        recent = [item for item in summaries if item is not None][:limit]
        if _wants_html(request, default=True):
            return _page(render_traces(recent, where))
        return _json({"traces": recent})

    async def trace(self, request: Request) -> Response:
        raw = request.path_params["trace_id"]
        if not _TRACE_ID.fullmatch(raw):
            raise invalid_argument("a trace id is 32 hexadecimal digits")
        trace_id = raw.lower()
        records = await self.source.trace(trace_id)
        trace = build_trace(trace_id, records)
        if trace.spans == 0:
            raise Problem(404, f"no trace {trace_id} (unknown, or expired)", code=NOT_FOUND)
        if _wants_html(request, default=False):
            return _page(render_trace(trace))
        return _json(trace.to_json())

    async def stats(self, request: Request) -> Response:
        minutes = _bounded(request.query_params.get("minutes"), "minutes", None, MAX_MINUTES)
        stats = await self.source.stats(minutes)
        if minutes is None:  # the rates are the same either way; sample one series
            self.history.add(stats, time.monotonic())
        if _wants_html(request, default=False):
            page = render_stats(stats, self.history, refresh=self.refresh, minutes=minutes)
            return _page(page)
        return _json(stats)


def _trace_filter(params: Mapping[str, str]) -> TraceFilter:
    """``?service=&method=&failed=`` as a filter; an empty service or method is none.
    ``failed`` is read as every query value is (``query_value``: 1, 0, true, false)."""
    failed = query_value(params.get("failed", "0"))
    if not isinstance(failed, int) or failed not in (0, 1):  # bool is an int
        raise invalid_argument("failed is 1 or 0 (true or false)")
    try:
        return TraceFilter.checked(
            params.get("service") or None, params.get("method") or None, bool(failed)
        )
    except ValueError as exc:
        raise invalid_argument(str(exc)) from None


def _bounded(value: str | None, name: str, default: int | None, top: int) -> int | None:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= top:
        raise invalid_argument(f"{name} is a whole number from 1 to {top}")
    return int(value)


def _summary(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """One entry of ``recent()``, ids as hex, or None when it names no trace."""
    trace_id = hex_id(item.get("trace_id"))
    if trace_id is None or not _TRACE_ID.fullmatch(trace_id):
        return None
    root = item.get("root")
    root = root if isinstance(root, Mapping) else {}
    return {
        "trace_id": trace_id,
        "start": _num(item.get("start")),
        "duration": _num(item.get("duration")),
        "spans": _count(item.get("spans")),
        "errors": _count(item.get("errors")),
        "root": {"svc": _str(root.get("svc")), "m": _str(root.get("m"))},
    }


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


# -- content negotiation ------------------------------------------------------------------


def prefers_html(accept: str | None, *, default: bool) -> bool:
    """Whether ``accept`` ranks text/html above application/json (RFC 9110 12.5.1: the most
    specific range that matches gives a type its quality); ``default`` on a tie."""
    html, json = _quality(accept, "text", "html"), _quality(accept, "application", "json")
    return default if html == json else html > json


def _quality(accept: str | None, kind: str, sub: str) -> float:
    if not accept:
        return 1.0
    best, specificity = 0.0, -1
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        main, _, minor = media.lower().partition("/")
        if (main, minor) == (kind, sub):
            level = 2
        elif (main, minor) == (kind, "*"):
            level = 1
        elif (main, minor) == ("*", "*"):
            level = 0
        else:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 0.0
        if level > specificity or (level == specificity and q > best):
            best, specificity = q, level
    return best


def _wants_html(request: Request, *, default: bool) -> bool:
    forced = request.query_params.get("format")
    if forced in ("json", "html"):
        return forced == "html"
    if forced is not None:
        raise invalid_argument("format is json or html")
    return prefers_html(request.headers.get("accept"), default=default)


def _json(value: Any) -> Response:
    headers = {"Vary": "Accept", "Cache-Control": "no-store"}
    return Response(encode_result(value, ResultFormat.JSON), 200, headers, JSON)


# -- the pages ------------------------------------------------------------------------------

_STYLE: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1f2937}
h1{font-size:1.3em}h1 code{font-size:.9em}
a{color:#1d4ed8}
table{border-collapse:collapse;margin:1em 0}
th,td{padding:.25em .7em;text-align:left;border-bottom:1px solid #e5e7eb;vertical-align:middle}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td,td.failed{color:#b91c1c}
.summary{color:#4b5563}
svg{display:block;max-width:100%;height:auto}
svg text{font:12px system-ui,sans-serif;fill:#1f2937}
svg .axis text{fill:#6b7280;font-size:11px}
svg .axis line{stroke:#e5e7eb}
svg .stripe{fill:#f9fafb}
svg .bar{fill:#3b82f6}
svg .bar.http{fill:#64748b}
svg .bar.stream{fill:#10b981}
svg .bar.abandoned,svg .bar.unknown{fill:#a3a3a3}
svg .bar.open{fill:#bfdbfe;stroke:#3b82f6;stroke-dasharray:3 2}
svg .span.error .bar{fill:#dc2626}
svg .span.error text{fill:#b91c1c;font-weight:600}
svg .info{fill:#4b5563}
svg .spark{fill:none;stroke:#2563eb;stroke-width:1.5}
svg.percentiles text{font-size:10px}
svg .pct{fill:#93c5fd}svg .pct.p90{fill:#3b82f6}svg .pct.p99{fill:#1e40af}
svg .hist{fill:#6366f1}
form.filter{display:flex;gap:.8em;align-items:center;flex-wrap:wrap;margin:.5em 0}
form.filter input[type=text]{font:inherit;padding:.15em .35em;width:12em}
"""
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_CSP: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _page(body: bytes) -> Response:
    headers = {
        "Content-Security-Policy": PAGE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Vary": "Accept",
    }
    return Response(body, 200, headers, HTML)


def _t(value: Any) -> str:
    return escape(str(value), quote=True)


def _document(title: str, body: str, *, refresh: int | None = None) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">\n' if refresh else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{meta}<title>{_t(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    ).encode()


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    if ms >= 1000:
        return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"
    return f"{ms:.3g} ms" if ms >= 0.001 else "0 ms"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    seconds = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))
    return f"{seconds}.{int(stamp % 1 * 1000):03d}Z"


def render_traces(recent: Sequence[Mapping[str, Any]], where: TraceFilter = EVERY_TRACE) -> bytes:
    """The list of recent traces (entries as ``_summary`` makes them) that ``where`` chose."""
    rows = []
    for item in recent:
        root = item["root"]
        name = f"{root['svc'] or '?'}.{root['m'] or '?'}"
        failed = ' class="failed"' if item["errors"] else ""
        rows.append(
            f"<tr{failed}><td>{_t(_when(item['start']))}</td>"
            f'<td><a href="traces/{_t(item["trace_id"])}">{_t(name)}</a></td>'
            f'<td class="num">{_t(_ms(item["duration"]))}</td>'
            f'<td class="num">{item["spans"]}</td><td class="num">{item["errors"]}</td>'
            f"<td><code>{_t(item['trace_id'])}</code></td></tr>"
        )
    table = (
        "<table><thead><tr><th>started (UTC)</th><th>root call</th><th>duration</th>"
        f"<th>spans</th><th>errors</th><th>trace id</th></tr></thead><tbody>{''.join(rows)}"
        "</tbody></table>"
        if rows
        else f'<p class="summary">{_t(_no_traces(where))}</p>'
    )
    chosen, query = "", ""
    if where:
        chosen = (
            f'<p class="summary">Traces with {_t(_wanted(where))} · '
            '<a href="traces">all traces</a></p>'
        )
        query = "&amp;" + _t(_filter_query(where))
    body = (
        f'<h1>Recent traces</h1>{chosen}<p class="summary"><a href="stats">statistics</a> · '
        f'<a href="traces?format=json{query}">JSON</a></p>{_filter_form(where)}{table}'
    )
    return _document("Recent traces", body)


def _filter_form(where: TraceFilter) -> str:
    """The form that asks this page for a filter (a plain GET: no script); empty fields ask
    for none."""
    checked = " checked" if where.failed else ""
    return (
        '<form class="filter" method="get" action="traces">'
        f'<label>service <input type="text" name="service" value="{_t(where.service or "")}">'
        "</label>"
        f'<label>method <input type="text" name="method" value="{_t(where.method or "")}">'
        "</label>"
        f'<label><input type="checkbox" name="failed" value="1"{checked}> failed only</label>'
        "<button>Show</button></form>"
    )


def _wanted(where: TraceFilter) -> str:
    """What a filter asks for, in words: "a failed call of calc.add"."""
    name = ".".join(part for part in (where.service, where.method) if part is not None)
    call = "a failed call" if where.failed else "a call"
    return f"{call} of {name}" if name else call


def _no_traces(where: TraceFilter) -> str:
    if not where:
        return "No traces yet."
    if where.failed:  # the stores look through the failed traces alone (trace_store.recent)
        if where.service is None and where.method is None:
            return "No failed traces."
        return f"None of the newest {MAX_SCANNED} failed traces has {_wanted(where)}."
    return f"None of the newest {MAX_SCANNED} traces has {_wanted(where)}."


def _filter_query(where: TraceFilter) -> str:
    """The query string that asks ``/traces`` for ``where`` (not HTML-escaped)."""
    params = {"service": where.service, "method": where.method}
    query = {key: value for key, value in params.items() if value is not None}
    if where.failed:
        query["failed"] = "1"
    return urlencode(query)


# The timeline's geometry, in SVG user units.
_WIDTH: Final = 1200
_LABEL_W: Final = 380
_BAR_X: Final = 390
_BAR_W: Final = 640
_ROW_H: Final = 22
_AXIS_H: Final = 24
_INDENT: Final = 14
_MAX_INDENT_DEPTH: Final = 12
_CHAR_W: Final = 6.6  # about the width of one character at 12px


def _fit(text: str, width: float) -> str:
    chars = max(4, int(width / _CHAR_W))
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _span_title(span: Span, offset: float) -> str:
    lines = [
        span.label,
        f"span {span.span_id}" + (f", parent {span.parent_span_id}" if span.parent_span_id else ""),
        f"starts at +{_ms(offset)}, lasts {_ms(span.duration)}",
        f"outcome: {span.outcome}",
    ]
    if span.error:
        lines.append(f"error: {span.error}")
    if span.items is not None:
        lines.append(f"stream items: {span.items}")
    process = _process(span.process)
    if process:
        lines.append(f"process: {process}")
    lines.append(f"recorded by: {', '.join(span.sides)}")
    return "\n".join(lines)


def _process(process: Mapping[str, Any]) -> str:
    name, host, pid = process.get("proc"), process.get("host"), process.get("pid")
    where = "@".join(str(part) for part in (name, host) if part)
    return f"{where} pid {pid}" if pid is not None else where


def _bar_class(span: Span) -> str:
    if span.kind == "http":
        return "http"
    if span.outcome in ("ok", "error", "lost", "timeout"):
        return ""
    return span.outcome if span.outcome in ("stream", "abandoned") else "unknown"


def render_timeline(trace: Trace) -> str:
    """The trace as an SVG: one row per span, indented by depth, each bar placed by its start
    and length on the trace's time axis; failed spans in red with their exception."""
    start = trace.start or 0.0
    total = trace.duration or 0.0
    scale = _BAR_W / total if total > 0 else 0.0
    rows = list(trace.walk())
    height = _AXIS_H + _ROW_H * len(rows) + 6
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="timeline of {len(rows)} spans">',
        '<g class="axis">',
    ]
    for i in range(5):
        x = _BAR_X + _BAR_W * i / 4
        parts.append(
            f'<line x1="{x:.1f}" y1="{_AXIS_H - 4}" x2="{x:.1f}" y2="{height}"/>'
            f'<text x="{x:.1f}" y="{_AXIS_H - 8}" text-anchor="middle">'
            f"{_t(_ms(total * i / 4))}</text>"
        )
    parts.append("</g>")
    for index, (depth, span) in enumerate(rows):
        y = _AXIS_H + index * _ROW_H
        offset = span.start - start
        indent = 6 + _INDENT * min(depth, _MAX_INDENT_DEPTH)
        x = _BAR_X + offset * scale
        is_open = span.duration is None
        width = (total - offset) * scale if is_open else (span.duration or 0.0) * scale
        width = max(2.0, width)
        state = " error" if span.failed else ""
        bar = _bar_class(span) + (" open" if is_open else "")
        info = _ms(span.duration) if not is_open else "no end recorded"
        if span.failed:
            info += f" ✕ {span.error or span.outcome}"
        elif span.items is not None:
            info += f" · {span.items} items"
        after = x + width + 6
        if after + len(info) * _CHAR_W <= _WIDTH:
            info_at = f'x="{after:.1f}"'
        else:  # no room after the bar: write it before
            info_at = f'x="{max(_BAR_X, x - 6):.1f}" text-anchor="end"'
        stripe = (
            f'<rect class="stripe" x="0" y="{y}" width="{_WIDTH}" height="{_ROW_H}"/>'
            if index % 2
            else ""
        )
        parts.append(
            f'<g class="span{state}" data-span-id="{_t(span.span_id)}" data-depth="{depth}" '
            f'data-outcome="{_t(span.outcome)}"><title>{_t(_span_title(span, offset))}</title>'
            f"{stripe}"
            f'<text class="label" x="{indent}" y="{y + 15}">'
            f"{_t(_fit(span.label, _LABEL_W - indent))}</text>"
            f'<rect class="bar {bar.strip()}" x="{x:.1f}" y="{y + 5}" width="{width:.1f}" '
            f'height="{_ROW_H - 10}" rx="2"/>'
            f'<text class="info" {info_at} y="{y + 15}">{_t(_fit(info, 400))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_trace(trace: Trace) -> bytes:
    """The page of one trace: a summary, the timeline, then every span in a table."""
    start = trace.start or 0.0
    rows = []
    for depth, span in trace.walk():
        failed = ' class="failed"' if span.failed else ""
        rows.append(
            f'<tr{failed} data-span-id="{_t(span.span_id)}">'
            f'<td><span class="depth">{"· " * depth}</span>{_t(span.label)}</td>'
            f'<td class="num">+{_t(_ms(span.start - start))}</td>'
            f'<td class="num">{_t(_ms(span.duration))}</td><td>{_t(span.outcome)}</td>'
            f"<td>{_t(span.error or '')}</td>"
            f'<td class="num">{"" if span.items is None else span.items}</td>'
            f"<td>{_t(_process(span.process))}</td><td><code>{_t(span.span_id)}</code></td></tr>"
        )
    errors = f"{trace.errors} error{'s' if trace.errors != 1 else ''}"
    body = (
        f"<h1>Trace <code>{_t(trace.trace_id)}</code></h1>"
        f'<p class="summary">started {_t(_when(trace.start))} · {_t(_ms(trace.duration))} · '
        f"{trace.spans} span{'s' if trace.spans != 1 else ''} · "
        f"<span{' class=failed' if trace.errors else ''}>{errors}</span> · "
        f'<a href="../traces">recent traces</a> · '
        f'<a href="{_t(trace.trace_id)}?format=json">JSON</a></p>'
        f"{render_timeline(trace)}"
        "<table><thead><tr><th>span</th><th>start</th><th>duration</th><th>outcome</th>"
        "<th>error</th><th>items</th><th>process</th><th>span id</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _document(f"Trace {trace.trace_id}", body)


# -- statistics --------------------------------------------------------------------------


class RateHistory:
    """The last ``HISTORY`` rates of each method, sampled at most once a second from the
    statistics this gateway fetched: a sparkline when the collector gives no series."""

    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self.rates: dict[tuple[str, str], deque[float]] = {}
        self._last = -math.inf

    def __repr__(self) -> str:
        return f"<RateHistory methods={len(self.rates)}>"

    def add(self, stats: Mapping[str, Any], now: float) -> None:
        if now - self._last < 1.0:
            return
        self._last = now
        seen = set()
        for svc, m, entry in _entries(stats):
            key = (svc, m)
            seen.add(key)
            if key not in self.rates and len(self.rates) >= MAX_HISTORY_KEYS:
                continue
            rate = _num(entry.get("rate"))
            self.rates.setdefault(key, deque(maxlen=self.size)).append(rate or 0.0)
        for key in [k for k in self.rates if k not in seen]:
            del self.rates[key]


def _entries(stats: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    found = []
    for svc, methods in stats.items():
        if isinstance(methods, Mapping):
            for m, entry in methods.items():
                if isinstance(entry, Mapping):
                    found.append((_str(svc) or "?", _str(m) or "?", entry))
    return sorted(found, key=lambda e: (e[0], e[1]))


def _sparkline(values: Sequence[float], width: int = 160, height: int = 28) -> str:
    if not values:
        return ""
    top = max(values) or 1.0
    step = width / max(1, len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    if len(values) == 1:
        points += f" {width},{height - 2 - (values[0] / top) * (height - 4):.1f}"
    return (
        f'<svg class="sparkline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="rate history">'
        f'<polyline class="spark" points="{points}"/></svg>'
    )


def _percentiles(entry: Mapping[str, Any], top: float) -> str:
    width, bar_h = 220, 9
    parts = [
        f'<svg class="percentiles" width="{width + 80}" height="{3 * (bar_h + 3)}" '
        f'viewBox="0 0 {width + 80} {3 * (bar_h + 3)}" role="img" aria-label="latency">'
    ]
    for i, name in enumerate(("p50", "p90", "p99")):
        value = _num(entry.get(name))
        length = max(1.0, (value or 0.0) / top * width) if top > 0 and value else 1.0
        y = i * (bar_h + 3)
        parts.append(
            f'<rect class="pct {name}" x="0" y="{y}" width="{length:.1f}" height="{bar_h}">'
            f"<title>{name} {_t(_ms(value))}</title></rect>"
            f'<text x="{length + 4:.1f}" y="{y + bar_h - 1}">{name} {_t(_ms(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bucket_pairs(buckets: Any) -> list[tuple[float | None, float]]:
    """The collector's latency buckets, ``[[upper bound in seconds, calls], ...]`` (the last
    bound None: unbounded), as pairs; anything else gives none."""
    pairs: list[tuple[float | None, float]] = []
    if isinstance(buckets, list):
        for pair in buckets[:_MAX_BUCKETS]:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                return []
            bound, hits = _num(pair[0]), _num(pair[1])
            if hits is None or (bound is None and pair[0] is not None):
                return []
            pairs.append((bound, hits))
    return pairs


def _histogram(pairs: Sequence[tuple[float | None, float]]) -> str:
    """Calls per latency bucket, as small bars."""
    top = max((hits for _, hits in pairs), default=0.0) or 1.0
    width, height = 6 * len(pairs), 34
    bars = []
    for i, (bound, hits) in enumerate(pairs):
        tall = hits / top * (height - 2)
        where = f"≤ {_ms(bound)}" if bound is not None else "slower"
        bars.append(
            f'<rect class="hist" x="{i * 6}" y="{height - tall:.1f}" width="5" '
            f'height="{tall:.1f}"><title>{_t(where)}: {hits:g} calls</title></rect>'
        )
    return (
        f'<svg class="histogram" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="latency histogram">'
        f"{''.join(bars)}</svg>"
    )


def _traces_link(svc: str, m: str, text: object, *, failed: bool = False) -> str:
    """A link to the recent traces with a call (a failed call) of ``svc.m``."""
    query = _filter_query(TraceFilter(svc, m, failed))
    return f'<a href="traces?{_t(query)}">{_t(text)}</a>'


def render_stats(
    stats: Mapping[str, Any], history: RateHistory, *, refresh: int, minutes: int | None = None
) -> bytes:
    entries = _entries(stats)
    top = max((_num(e.get("p99")) or 0.0 for _, _, e in entries), default=0.0)
    rows = []
    for svc, m, entry in entries:
        series = list(history.rates.get((svc, m), ()))
        pairs = _bucket_pairs(entry.get("buckets"))
        rate, side = _num(entry.get("rate")), entry.get("side")
        errors = _count(entry.get("errors"))
        rows.append(
            f'<tr{" class=failed" if errors else ""} data-service="{_t(svc)}" '
            f'data-method="{_t(m)}"><td>{_traces_link(svc, m, f"{svc}.{m}")}</td>'
            f'<td>{_t(_str(side) or "")}</td><td class="num">{_count(entry.get("count"))}</td>'
            f'<td class="num">{_traces_link(svc, m, errors, failed=True) if errors else 0}</td>'
            f'<td class="num">{"-" if rate is None else f"{rate:.3g}/s"}</td>'
            f"<td>{_sparkline(series)}</td><td>{_percentiles(entry, top)}</td>"
            f"<td>{_histogram(pairs) if pairs else ''}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>method</th><th>seen by</th><th>calls</th><th>errors</th>"
        "<th>rate (60 s)</th><th>rate, recent</th><th>latency</th><th>latency histogram</th>"
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else '<p class="summary">No calls recorded yet.</p>'
    )
    span, query = ("since the collector started", "")
    if minutes is not None:
        span, query = (f"over the last {int(minutes)} min", f"&amp;minutes={int(minutes)}")
    body = (
        f'<h1>Statistics</h1><p class="summary">calls {span}; updated '
        f"{_t(_when(time.time()))}, every {int(refresh)} s · "
        f'<a href="traces">recent traces</a> · <a href="stats?format=json{query}">JSON</a></p>'
        f"{table}"
    )
    return _document("Statistics", body, refresh=refresh)
