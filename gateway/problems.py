"""Errors as RFC 9457 problem documents, with DESIGN.md's status and code table.

Everything the gateway refuses or fails is raised as a ``Problem`` and rendered in one place
as ``application/problem+json``: ``type``, ``title``, ``status``, ``detail``, plus ``code``
(a gRPC/Connect-style code string), ``trace_id``, ``rpc: {service, method}``,
``remote: {name, message}`` for backend exceptions and ``errors: [{loc, msg, type}]`` for
argument problems. ``problem_from_rpc_error`` maps what a backend call raised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from rpccore import (
    LocalProtocolError,
    LostRemote,
    MethodNotFound,
    RemoteError,
    RPCError,
    TimeoutExpired,
)

PROBLEM_JSON: Final = "application/problem+json"

# The code strings of DESIGN.md's table (gRPC/Connect names).
UNIMPLEMENTED: Final = "unimplemented"
INVALID_ARGUMENT: Final = "invalid_argument"
UNAUTHENTICATED: Final = "unauthenticated"
PERMISSION_DENIED: Final = "permission_denied"
RESOURCE_EXHAUSTED: Final = "resource_exhausted"
UNKNOWN: Final = "unknown"
DEADLINE_EXCEEDED: Final = "deadline_exceeded"
UNAVAILABLE: Final = "unavailable"
INTERNAL: Final = "internal"
NOT_FOUND: Final = "not_found"

# The code for a backend exception mapped to a status by a service's `errors:` table.
_CODE_OF_STATUS: Final = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    409: "aborted",
    429: RESOURCE_EXHAUSTED,
    501: UNIMPLEMENTED,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """An HTTP error answer. ``extra`` holds members beyond the standard ones (``rpc``,
    ``remote``, ``errors``...); ``headers`` go on the response (``Allow``, ``Retry-After``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.title = title or _title(status)
        self.headers = dict(headers or {})
        self.extra = extra

    def __repr__(self) -> str:
        return f"Problem({self.status}, {self.detail!r}, code={self.code!r})"

    @property
    def type(self) -> str:
        # "about:blank" means the title is the HTTP status phrase (RFC 9457, 4.2.1); a
        # coded problem gets a URN naming its code, stable for clients to switch on.
        return f"urn:zerogate:problem:{self.code}" if self.code else "about:blank"

    def document(self, trace_id: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.code is not None:
            doc["code"] = self.code
        if trace_id is not None:
            doc["trace_id"] = trace_id
        doc.update(self.extra)
        return doc


def not_found(detail: str, service: str | None = None, method: str | None = None) -> Problem:
    if service is None:
        return Problem(404, detail, code=UNIMPLEMENTED)
    return Problem(404, detail, code=UNIMPLEMENTED, rpc={"service": service, "method": method})


def method_not_allowed(allowed: Sequence[str]) -> Problem:
    return Problem(
        405,
        f"this path accepts {', '.join(allowed)}",
        headers={"Allow": ", ".join(allowed)},
    )


def invalid_argument(
    detail: str, errors: Sequence[Mapping[str, Any]] | None = None, **extra: Any
) -> Problem:
    if errors is not None:
        extra["errors"] = [dict(e) for e in errors]
    return Problem(400, detail, code=INVALID_ARGUMENT, **extra)


def unavailable(detail: str, retry_after: float, **extra: Any) -> Problem:
    seconds = max(1, math.ceil(retry_after))
    return Problem(503, detail, code=UNAVAILABLE, headers={"Retry-After": str(seconds)}, **extra)


def problem_from_rpc_error(
    exc: RPCError,
    service: str,
    method: str,
    error_statuses: Mapping[str, int] | None = None,
    *,
    expose_tracebacks: bool = False,
) -> Problem:
    """The answer for what a backend call raised (DESIGN.md's table)."""
    rpc = {"service": service, "method": method}
    if isinstance(exc, MethodNotFound):
        return Problem(404, f"{service} has no method {method}", code=UNIMPLEMENTED, rpc=rpc)
    if isinstance(exc, RemoteError):
        remote: dict[str, Any] = {"name": exc.name, "message": exc.message}
        if expose_tracebacks and exc.traceback:
            remote["traceback"] = exc.traceback
        status = (error_statuses or {}).get(exc.name, 500)
        code = UNKNOWN if status == 500 else _CODE_OF_STATUS.get(status, UNKNOWN)
        return Problem(status, f"{exc.name}: {exc.message}", code=code, rpc=rpc, remote=remote)
    if isinstance(exc, TimeoutExpired):
        return Problem(
            504, f"{service}.{method} did not answer in time", code=DEADLINE_EXCEEDED, rpc=rpc
        )
    if isinstance(exc, LostRemote):
        return Problem(
            502,
            f"the {service} backend stopped answering during the call",
            code=UNAVAILABLE,
            rpc=rpc,
        )
    if isinstance(exc, LocalProtocolError):
        # The call could not even be sent: its arguments cannot be packed (an integer beyond
        # 64 bits, ...). The caller's request, not the backend, is at fault.
        return Problem(
            400,
            f"the arguments of {service}.{method} cannot be sent: {exc}",
            code=INVALID_ARGUMENT,
            rpc=rpc,
        )
    # A protocol error or a refused message: the backend spoke nonsense, or too much.
    return Problem(502, f"the {service} backend failed the call: {exc}", code=UNAVAILABLE, rpc=rpc)
