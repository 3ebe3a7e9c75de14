"""HTTP answers: results, streams and problem documents.

A result is one body in the negotiated format (JSON or msgpack). A stream is NDJSON (one
``{"result": x}`` line per item) or SSE (``Accept: text/event-stream``), sent item by item:
the next item is asked of the backend (which grants it stream credit) only after the
previous one was handed to the transport, and uvicorn's ``send`` waits while the client
reads slowly, so a slow reader slows the backend and memory stays flat. A failure after the
first byte becomes a final error line or ``event: error``; the client going away closes the
backend stream, which stops its credit and heartbeats.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from rpccore import RemoteError, RPCError

from .observe import RequestInfo
from .payloads import (
    ResultFormat,
    StreamFormat,
    encode_result,
    ndjson_error,
    ndjson_line,
    sse_end,
    sse_error,
    sse_event,
)
from .pool import PooledStream
from .problems import PROBLEM_JSON, Problem, problem_from_rpc_error

log = logging.getLogger("zerogate.gateway")

_STREAM_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # ask nginx-style proxies not to buffer the stream
}


class Answer(Response):
    """A whole body in two ASGI messages: what Starlette's Response does, without its
    header-building and background-task machinery, for the hot path."""

    def __init__(
        self, body: bytes, status: int, media_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.body = body
        self.status_code = status
        raw = [
            (b"content-type", media_type.encode("latin-1")),
            (b"content-length", b"%d" % len(body)),
        ]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


def problem_response(problem: Problem, info: RequestInfo) -> Response:
    """The ``application/problem+json`` answer; records its code for metrics and the log."""
    info.code = problem.code
    document = problem.document(info.trace.trace_id)
    if "rpc" not in document and info.service is not None:
        document["rpc"] = {"service": info.service, "method": info.method}
    body = encode_result(document, ResultFormat.JSON)
    return Answer(body, problem.status, PROBLEM_JSON, problem.headers)


def result_response(value: Any, fmt: ResultFormat) -> Response:
    return Answer(encode_result(value, fmt), 200, fmt.media_type)


def log_remote_error(exc: RPCError, service: str, method: str, info: RequestInfo) -> None:
    """Backend exceptions always reach the gateway's log with their traceback and trace id,
    whether or not the HTTP client may see the traceback."""
    if isinstance(exc, RemoteError):
        log.warning(
            "%s.%s raised %s: %s (trace_id %s)%s",
            service,
            method,
            exc.name,
            exc.message,
            info.trace.trace_id,
            f"\n{exc.traceback.rstrip()}" if exc.traceback else "",
        )
    else:
        log.warning(
            "%s.%s failed: %s: %s (trace_id %s)",
            service,
            method,
            type(exc).__name__,
            exc,
            info.trace.trace_id,
        )


def stream_response(
    stream: PooledStream,
    fmt: StreamFormat,
    info: RequestInfo,
    *,
    errors: dict[str, int],
    expose_tracebacks: bool,
) -> StreamingResponse:
    service, method = info.service or "", info.method or ""

    async def body() -> AsyncIterator[bytes]:
        item_bytes = ndjson_line if fmt is StreamFormat.NDJSON else sse_event
        try:
            async for item in stream:
                try:
                    yield item_bytes(item)
                except Problem as unrepresentable:  # an item JSON cannot hold: end here
                    yield _failure(unrepresentable, fmt, info)
                    return
            if fmt is StreamFormat.SSE:
                yield sse_end()
        except RPCError as exc:
            log_remote_error(exc, service, method, info)
            failure = problem_from_rpc_error(
                exc, service, method, errors, expose_tracebacks=expose_tracebacks
            )
            yield _failure(failure, fmt, info)
        finally:
            stream.close()

    return StreamingResponse(body(), 200, _STREAM_HEADERS, fmt.media_type)


def _failure(problem: Problem, fmt: StreamFormat, info: RequestInfo) -> bytes:
    info.code = problem.code
    document = problem.document(info.trace.trace_id)
    return ndjson_error(document) if fmt is StreamFormat.NDJSON else sse_error(document)
