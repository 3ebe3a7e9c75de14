"""The fixed parts of the document: the ``Problem`` schema, the headers every answer carries,
the request headers every call takes, the error responses of DESIGN.md's table, the security
schemes and the JSON-RPC 2.0 envelopes. Operations refer to them by these names."""

from __future__ import annotations

from typing import Any, Final

from gateway.jsonrpc import ErrorCode
from gateway.problems import PROBLEM_JSON

from ._schemas import SCHEMAS_REF, JsonSchema

PROBLEM: Final = "Problem"
STREAM_ERROR: Final = "StreamError"
SSE_END: Final = "SseEnd"
SSE_ERROR: Final = "SseError"
JSONRPC_REQUEST: Final = "JsonRpcRequest"
JSONRPC_RESPONSE: Final = "JsonRpcResponse"

# components/parameters: the request headers of every call.
TIMEOUT_PARAM: Final = "X-Timeout-Ms"
TRACEPARENT_PARAM: Final = "traceparent"

# components/securitySchemes, when auth is on.
BEARER: Final = "bearerAuth"
API_KEY: Final = "apiKeyAuth"

TRACE_ID_PATTERN: Final = "^[0-9a-f]{32}$"
TRACEPARENT_PATTERN: Final = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


def ref(kind: str, name: str) -> dict[str, str]:
    """A reference to ``components/{kind}/{name}``."""
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS_REF + name}


# -- schemas ----------------------------------------------------------------------------

_PROBLEM: Final[JsonSchema] = {
    "type": "object",
    "description": "An error, as an RFC 9457 problem document (application/problem+json).",
    "properties": {
        "type": {
            "type": "string",
            "description": "urn:zerogate:problem:{code} for a coded problem, else about:blank.",
        },
        "title": {"type": "string", "description": "The HTTP status phrase."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong, for people."},
        "code": {
            "type": "string",
            "description": "A gRPC/Connect-style code for programs: unimplemented, "
            "invalid_argument, unauthenticated, permission_denied, resource_exhausted, "
            "unknown, deadline_exceeded, unavailable, internal, not_found, aborted.",
        },
        "trace_id": {
            "type": "string",
            "pattern": TRACE_ID_PATTERN,
            "description": "The request's trace id, as in the X-Trace-Id header.",
        },
        "rpc": {
            "type": "object",
            "description": "The call that failed.",
            "properties": {"service": {"type": "string"}, "method": {"type": ["string", "null"]}},
        },
        "remote": {
            "type": "object",
            "description": "The exception the backend raised.",
            "properties": {
                "name": {"type": "string"},
                "message": {"type": "string"},
                "traceback": {
                    "type": "string",
                    "description": "Only when the gateway is configured to expose tracebacks.",
                },
            },
            "required": ["name", "message"],
        },
        "errors": {
            "type": "array",
            "description": "Every problem found with the arguments.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"type": ["string", "integer"]},
                        "description": 'Where: ["body", 0], ["query", "name"], ["header", ...].',
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["loc", "msg", "type"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}

_STREAM_ERROR: Final[JsonSchema] = {
    "type": "object",
    "description": "The last line of a stream that failed after it started.",
    "properties": {"error": schema_ref(PROBLEM)},
    "required": ["error"],
    "additionalProperties": False,
}

# Server-sent events, each described as the object an SSE parser makes of it: its ``data``
# (a string, here JSON: contentMediaType and contentSchema say what it holds) and its
# ``event`` type ("message" when the event names none). That is OpenAPI 3.2's model of an
# event, and how tools read a 3.1 text/event-stream schema (one event, not the stream).
_SSE_END: Final[JsonSchema] = {
    "type": "object",
    "description": "The last event of a stream that ended well (`event: end`, empty data).",
    "properties": {"event": {"const": "end"}, "data": {"const": ""}},
    "required": ["event"],
}

_SSE_ERROR: Final[JsonSchema] = {
    "type": "object",
    "description": "The last event of a stream that failed after it started (`event: error`); "
    "its data is the problem document.",
    "properties": {
        "event": {"const": "error"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": schema_ref(PROBLEM),
        },
    },
    "required": ["event", "data"],
}

_REQUEST_ID: Final[JsonSchema] = {
    "type": ["string", "number", "null"],
    "description": "Echoed in the response; leave it out for a notification (no response).",
}

_JSONRPC_REQUEST: Final[JsonSchema] = {
    "type": "object",
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "method": {
            "type": "string",
            "description": "service.method, a method the gateway exposes.",
        },
        "params": {
            "type": ["array", "object"],
            "items": {},  # any values; said, since SDK generators refuse arrays without items
            "description": "Positional (array) or named (object) arguments, as for "
            "POST /rpc/{service}/{method}.",
        },
        "id": _REQUEST_ID,
    },
    "required": ["jsonrpc", "method"],
}

_JSONRPC_RESPONSE: Final[JsonSchema] = {
    "type": "object",
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "number", "null"]},
        "result": {"description": "The method's result, as POST /rpc answers it."},
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "integer",
                    "enum": [int(code) for code in ErrorCode],
                    "description": "-32700 parse error, -32600 invalid request, -32601 "
                    "unknown method, -32602 bad params, -32603 internal error, -32000 the "
                    "backend raised, -32001 timeout, -32002 backend unavailable, -32003 "
                    "permission denied.",
                },
                "message": {"type": "string"},
                "data": schema_ref(PROBLEM),
            },
            "required": ["code", "message"],
        },
    },
    "required": ["jsonrpc", "id"],
}

BUILTIN_SCHEMAS: Final[tuple[tuple[str, JsonSchema], ...]] = (
    (PROBLEM, _PROBLEM),
    (STREAM_ERROR, _STREAM_ERROR),
    (SSE_END, _SSE_END),
    (SSE_ERROR, _SSE_ERROR),
    (JSONRPC_REQUEST, _JSONRPC_REQUEST),
    (JSONRPC_RESPONSE, _JSONRPC_RESPONSE),
)

# -- headers and parameters -------------------------------------------------------------

HEADERS: Final[dict[str, dict[str, Any]]] = {
    "X-Trace-Id": {
        "description": "The request's trace id (32 lowercase hex digits); it is also in the "
        "logs and in a problem's trace_id.",
        "schema": {"type": "string", "pattern": TRACE_ID_PATTERN},
    },
    "traceparent": {
        "description": "The W3C trace context of the gateway's span for this request.",
        "schema": {"type": "string", "pattern": TRACEPARENT_PATTERN},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "The Bearer challenge.",
        "schema": {"type": "string"},
    },
    "RateLimit-Limit": {
        "description": "The calls the token may make at once (its bucket size).",
        "schema": {"type": "integer"},
    },
    "RateLimit-Remaining": {
        "description": "The calls left now.",
        "schema": {"type": "integer"},
    },
    "RateLimit-Reset": {
        "description": "Seconds until a call is available again.",
        "schema": {"type": "integer"},
    },
}
_AUTH_HEADERS: Final = frozenset(
    {"WWW-Authenticate", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
)

PARAMETERS: Final[dict[str, dict[str, Any]]] = {
    TIMEOUT_PARAM: {
        "name": "X-Timeout-Ms",
        "in": "header",
        "required": False,
        "description": "Milliseconds the call may take. It can only lower the service's "
        "configured timeout, never raise it.",
        "schema": {"type": "integer", "minimum": 1},
    },
    TRACEPARENT_PARAM: {
        "name": "traceparent",
        "in": "header",
        "required": False,
        "description": "A W3C trace context: the call joins that trace.",
        "schema": {"type": "string", "pattern": TRACEPARENT_PATTERN},
    },
}
CALL_PARAMETERS: Final = (ref("parameters", TIMEOUT_PARAM), ref("parameters", TRACEPARENT_PARAM))


def trace_headers() -> dict[str, Any]:
    """The headers on every answer."""
    return {
        "X-Trace-Id": ref("headers", "X-Trace-Id"),
        "traceparent": ref("headers", "traceparent"),
    }


# -- error responses --------------------------------------------------------------------


class ErrorResponse:
    """A reusable error response: its status, component name, meaning and extra headers."""

    __slots__ = ("description", "headers", "name", "status")

    def __init__(
        self, status: int, name: str, description: str, headers: tuple[str, ...] = ()
    ) -> None:
        self.status = status
        self.name = name
        self.description = description
        self.headers = headers

    def __repr__(self) -> str:
        return f"ErrorResponse({self.status}, {self.name!r})"

    def component(self) -> dict[str, Any]:
        headers = trace_headers()
        headers.update({name: ref("headers", name) for name in self.headers})
        return {
            "description": self.description,
            "headers": headers,
            "content": {PROBLEM_JSON: {"schema": schema_ref(PROBLEM)}},
        }


BAD_REQUEST: Final = ErrorResponse(
    400,
    "BadRequest",
    "Malformed JSON, wrong arity, an unknown or missing argument, or a bad X-Timeout-Ms "
    "(code invalid_argument; errors lists each problem).",
)
NOT_FOUND: Final = ErrorResponse(404, "NotFound", "No such service or method (code unimplemented).")
TOO_LARGE: Final = ErrorResponse(413, "PayloadTooLarge", "The body is larger than the limit.")
UNSUPPORTED: Final = ErrorResponse(
    415,
    "UnsupportedMediaType",
    "A body that is neither JSON (UTF-8) nor msgpack.",
)
BACKEND_RAISED: Final = ErrorResponse(
    500,
    "BackendError",
    "The backend raised an exception (code unknown; remote has its name and message).",
)
BAD_GATEWAY: Final = ErrorResponse(
    502,
    "BadGateway",
    "The backend was lost during the call (code unavailable), or its result cannot be "
    "written as JSON (ask for application/msgpack).",
)
UNAVAILABLE: Final = ErrorResponse(
    503,
    "ServiceUnavailable",
    "No backend of the service is reachable, or it was never described (code unavailable).",
    ("Retry-After",),
)
TIMED_OUT: Final = ErrorResponse(
    504, "GatewayTimeout", "The call did not finish in time (code deadline_exceeded)."
)
UNAUTHORIZED: Final = ErrorResponse(
    401,
    "Unauthorized",
    "A missing, invalid or expired token (code unauthenticated).",
    ("WWW-Authenticate",),
)
FORBIDDEN: Final = ErrorResponse(
    403, "Forbidden", "The token lacks the scope for this call (code permission_denied)."
)
RATE_LIMITED: Final = ErrorResponse(
    429,
    "TooManyRequests",
    "The token's rate limit is spent (code resource_exhausted).",
    ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"),
)
MAPPED: Final = ErrorResponse(
    500, "MappedError", "The backend raised an exception the config maps to this status."
)

CALL_ERRORS: Final = (BAD_REQUEST, NOT_FOUND, BACKEND_RAISED, BAD_GATEWAY, UNAVAILABLE, TIMED_OUT)
BODY_ERRORS: Final = (TOO_LARGE, UNSUPPORTED)  # only where a body is read
AUTH_ERRORS: Final = (UNAUTHORIZED, FORBIDDEN, RATE_LIMITED)
_ALL_ERRORS: Final = (*CALL_ERRORS, *BODY_ERRORS, MAPPED)


def response_components(auth: bool) -> dict[str, Any]:
    errors = sorted((*_ALL_ERRORS, *(AUTH_ERRORS if auth else ())), key=lambda e: e.status)
    return {error.name: error.component() for error in errors}


def header_components(auth: bool) -> dict[str, Any]:
    return {name: header for name, header in HEADERS.items() if auth or name not in _AUTH_HEADERS}


SECURITY_SCHEMES: Final[dict[str, dict[str, Any]]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (zgw_...) from `zerogate token create`.",
    },
    API_KEY: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API token, in the X-API-Key header.",
    },
}
SECURITY: Final[tuple[dict[str, list[str]], ...]] = ({BEARER: []}, {API_KEY: []})
