"""The outermost ASGI layer: trace context, response headers, metrics and the access log.

Every HTTP request gets a span: it continues an incoming W3C ``traceparent`` (our span is a
child of the caller's) or starts a new trace. The span is made current
(``rpccore.current_trace``) so every RPC call the request makes carries the trace id in its
header, and every response carries ``X-Trace-Id`` and our ``traceparent``. When the request
ends, one ``zerogate_requests_total`` sample and one JSON access-log line record it.

Endpoints tell this layer what the request resolved to through ``RequestInfo`` (found in
``scope["zerogate"]``): the service and method once they are known to be exposed (never raw
user input, so metrics labels stay bounded) and the problem code of an error answer.

While tracing is on, the request's span also becomes a trace record (side ``http``), named
as OpenTelemetry names HTTP server spans: the verb and the route's template
(``GET /shop/sum/{a}/{b}``, ``POST /rpc/shop/add`` once resolved). Never the raw path, nor a
verb outside HTTP's own (``_OTHER``): the collector counts statistics per name, and callers
must not be able to invent names without end. Requests that matched no API route make no
record: a 404 (a scanner's, a browser's ``/favicon.ico``) or a request refused before routing
would be a trace of one span named by its verb alone, telling nothing the access log and the
metrics do not, and a stream of them would push the traces of real calls out of the recent
list. Nor do requests to the gateway's own pages (``unrecorded``: health, metrics, docs,
traces).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPMethod
from typing import TYPE_CHECKING, Any, Final

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rpccore import TraceContext, _tracing, current_trace

from .access_log import AccessLog
from .metrics import Metrics

if TYPE_CHECKING:
    from auth.verify import TokenInfo

log = logging.getLogger("zerogate.gateway")

SCOPE_KEY: Final = "zerogate"
CLIENT_CLOSED: Final = 499  # nginx's convention: the client went away before the answer
# The verbs a trace record names (RFC 9110's and PATCH); any other is "_OTHER"
# (OpenTelemetry's convention).
HTTP_METHODS: Final = frozenset(method.value for method in HTTPMethod)


@dataclass(slots=True)
class RequestInfo:
    trace: TraceContext
    started: float  # time.perf_counter()
    started_at: float  # time.time(), for trace records
    service: str | None = None  # set once the request resolved to an exposed method
    method: str | None = None
    status: int = 0  # the status sent, CLIENT_CLOSED if none could be
    code: str | None = None  # the problem code of an error answer (or of a failed stream)
    body_bytes: int = 0
    token: TokenInfo | None = None  # the caller's API token, when auth is on
    metadata: dict[str, str] | None = None  # RPC header keys naming the token (auth.gate)
    route_path: str | None = None  # http_io.raw_route_path, once worked out
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # e.g. RateLimit-*


def request_info(scope: Scope) -> RequestInfo:
    info: RequestInfo = scope[SCOPE_KEY]
    return info


def incoming_trace(scope: Scope) -> TraceContext:
    """A child of the caller's ``traceparent`` span, or a new root."""
    for name, value in scope["headers"]:
        if name == b"traceparent":
            parent = TraceContext.from_traceparent(value.decode("latin-1"))
            if parent is not None:
                return parent.child()
            break
    return TraceContext.new_root()


class Observed:
    """Wraps the app: trace context, trace headers, metrics and the access log."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        access_log: AccessLog,
        *,
        unrecorded: Iterable[BaseRoute] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # By identity: Starlette's routes compare equal by path, endpoint and methods.
        self._unrecorded = frozenset(map(id, unrecorded))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = incoming_trace(scope)
        info = RequestInfo(trace, time.perf_counter(), time.time())
        scope[SCOPE_KEY] = info
        trace_headers = [
            (b"x-trace-id", trace.trace_id.encode()),
            (b"traceparent", trace.traceparent.encode()),
        ]

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    *trace_headers,
                    *info.response_headers,
                ]
            elif message["type"] == "http.response.body":
                info.body_bytes += len(message.get("body", b""))
            await send(message)

        token = current_trace.set(trace)
        try:
            await self.app(scope, receive, send_with_trace)
        except Exception:
            # Starlette has already answered 500 (our handler writes the problem document);
            # log it here once, with the trace id, instead of letting uvicorn log it again.
            log.exception("unhandled error (trace_id %s)", trace.trace_id)
        finally:
            current_trace.reset(token)
            self._record(scope, info)

    def _record(self, scope: Scope, info: RequestInfo) -> None:
        seconds = time.perf_counter() - info.started
        status = info.status or CLIENT_CLOSED
        self.metrics.observe(info.service, info.method, status, seconds, info.code)
        self.access_log.write(access_line(scope, info, status, seconds))
        if _tracing.ON:
            route = scope.get("route")  # what Starlette's router matched, if it ran
            if id(route) not in self._unrecorded:
                what = record_name(scope["method"], route, info)
                if what is not None:
                    _tracing.http_request(info.trace, what, info.started_at, status)


def record_name(verb: str, route: object, info: RequestInfo) -> str | None:
    """A request's trace record name (see the module doc), bounded whatever the caller sent;
    None when it matched no API route (it makes no record)."""
    if verb not in HTTP_METHODS:
        verb = "_OTHER"
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return f"{verb} {template}"
    if info.service is not None and info.method is not None:  # FrontDoor's /rpc/{s}/{m}
        return f"{verb} /rpc/{info.service}/{info.method}"
    return None


def access_line(scope: Scope, info: RequestInfo, status: int, seconds: float) -> str:
    """One JSON object per request: what happened, for whom, how long it took.

    Written by hand rather than with json.dumps: it runs once per request, and only the
    path (user input) needs escaping; every other field is a number or a fixed form."""
    client = scope.get("client")
    now = time.time()
    line = (
        f'{{"time":"{_second(int(now))}.{int(now % 1 * 1000):03d}Z",'
        f'"client":{_quoted(client[0]) if client else "null"},'
        f'"method":{_quoted(scope["method"])},"path":{_quoted(scope["path"])},'
        f'"status":{status},"duration_ms":{seconds * 1000:.3f},"bytes":{info.body_bytes},'
        f'"trace_id":"{info.trace.trace_id}"'
    )
    if info.service is not None:
        line += f',"rpc":{_quoted(f"{info.service}.{info.method}")}'
    if info.code is not None:
        line += f',"code":{_quoted(info.code)}'
    return line + "}"


_json_string = json.JSONEncoder().encode  # a str as an ASCII-only JSON string
_PLAIN: Final = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII but '"' and '\': no escaping


_stamp: list[Any] = [None, ""]  # the last second formatted, and its text


def _second(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC), formatted once per second rather than per request."""
    if _stamp[0] != second:
        _stamp[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    text: str = _stamp[1]
    return text


def _quoted(text: str) -> str:
    return f'"{text}"' if _PLAIN.fullmatch(text) else _json_string(text)
