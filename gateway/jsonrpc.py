"""The JSON-RPC 2.0 endpoint (``POST /jsonrpc``), apart from any web framework.

The HTTP layer parses the body and hands the value to ``handle_jsonrpc`` with a ``CallTarget``
(the same path a ``/rpc/{service}/{method}`` call takes: authorisation, argument mapping, the
pool, result conversion). What comes back is the JSON body to send, or ``None`` when nothing
must be answered (notifications only: the HTTP layer sends 204). A body that is not JSON at
all gets ``parse_error_response``.

    answer = await handle_jsonrpc(body, call, trace_id=trace_id)

Rules, from the JSON-RPC 2.0 specification and DESIGN.md:

- ``method`` is ``"service.method"``, split on the first dot (service names have none).
- A request without an ``id`` member is a notification: it runs, and is never answered, not
  even with an error. A request too broken to be a request (-32600) is answered, with its id
  when that id is valid, else null: it is no notification, since it is no request.
- A batch is an array; each element is checked and answered on its own, answers in request
  order, and the calls of one batch run concurrently, at most ``concurrency`` at a time.
- A ``Problem`` the call raised becomes an error object whose ``data`` is the problem document
  (``ErrorCode.of`` says which code). A 401 is not answered at all: missing or invalid
  credentials fail the whole HTTP request, so that ``Problem`` propagates to the HTTP layer and
  every other call of the batch is cancelled.
- Any other exception is answered -32603 with a generic message and logged; cancellation (the
  HTTP client went away) propagates and cancels every call still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Protocol, TypeAlias

from .problems import INTERNAL, UNIMPLEMENTED, Problem, invalid_argument, not_found

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_BATCH",
    "CallTarget",
    "ErrorCode",
    "Params",
    "RequestId",
    "Response",
    "handle_jsonrpc",
    "parse_error_response",
]

DEFAULT_MAX_BATCH: Final = 100  # requests in one batch; a larger batch is refused whole
DEFAULT_CONCURRENCY: Final = 16  # calls of one batch in flight at once

RequestId: TypeAlias = str | int | float | None
Params: TypeAlias = list[Any] | dict[str, Any] | None
Response: TypeAlias = dict[str, Any]

_log = logging.getLogger("zerogate.jsonrpc")

# The detail of an unexpected failure: the exception itself stays in the log, where the
# trace id finds it, since its text may say things about the gateway clients must not see.
_INTERNAL_DETAIL: Final = "the gateway failed to handle this call; its log has the details"


class ErrorCode(IntEnum):
    """The ``error.code`` values: the specification's, then DESIGN.md's server errors."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    REMOTE_ERROR = -32000  # the backend raised
    TIMEOUT = -32001
    UNAVAILABLE = -32002
    PERMISSION_DENIED = -32003

    @classmethod
    def of(cls, problem: Problem) -> ErrorCode:
        """The code that answers ``problem``."""
        # A backend exception first: the service's `errors:` table may have given it any
        # status (403, 404...), and it is still the backend's failure, not the gateway's.
        if "remote" in problem.extra:
            return cls.REMOTE_ERROR
        if problem.status == 404:
            return cls.METHOD_NOT_FOUND if problem.code == UNIMPLEMENTED else cls.INTERNAL_ERROR
        return _CODE_OF_STATUS.get(problem.status, cls.INTERNAL_ERROR)


_CODE_OF_STATUS: Final = {
    400: ErrorCode.INVALID_PARAMS,
    403: ErrorCode.PERMISSION_DENIED,
    502: ErrorCode.UNAVAILABLE,
    503: ErrorCode.UNAVAILABLE,
    504: ErrorCode.TIMEOUT,
}


class CallTarget(Protocol):
    """Calls ``service.method`` with the request's params (``None`` when it had none).

    Returns the result already converted to JSON values, or raises ``Problem``.
    """

    async def __call__(self, service: str, method: str, params: Params) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Request:
    """A well-formed request object (its method may still name nothing)."""

    method: str
    params: Params
    id: RequestId
    notification: bool


def parse_error_response(detail: str, *, trace_id: str | None = None) -> Response:
    """The answer to a body that is not JSON (-32700; the id is unknown, so null)."""
    return _error(None, ErrorCode.PARSE_ERROR, invalid_argument(detail), trace_id)


async def handle_jsonrpc(
    payload: Any,
    call: CallTarget,
    *,
    trace_id: str | None,
    max_batch: int = DEFAULT_MAX_BATCH,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Response | list[Response] | None:
    """Answer the parsed body ``payload``: a response object, a list of them for a batch, or
    ``None`` when there is nothing to answer. Raises the ``Problem`` of a 401 from ``call``."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if not isinstance(payload, list):
        request = _parse(payload, trace_id)
        if not isinstance(request, _Request):
            return request
        return await _execute(request, call, trace_id)

    # The batch as a whole: an empty or too large one gets one error object, not an array.
    if not payload:
        return _invalid(None, "a batch must hold at least one request", trace_id)
    if len(payload) > max_batch:
        detail = f"a batch holds at most {max_batch} requests, this one has {len(payload)}"
        return _invalid(None, detail, trace_id)

    answers: list[Response | None] = [None] * len(payload)
    runnable: list[tuple[int, _Request]] = []
    for index, item in enumerate(payload):
        parsed = _parse(item, trace_id)
        if isinstance(parsed, _Request):
            runnable.append((index, parsed))
        else:
            answers[index] = parsed
    await _execute_all(runnable, answers, call, trace_id, concurrency)
    return [answer for answer in answers if answer is not None] or None


def _parse(item: object, trace_id: str | None) -> _Request | Response:
    """The request ``item`` describes, or the -32600 answer when it describes none."""
    if not isinstance(item, dict):
        return _invalid(None, "a request must be a JSON object", trace_id)
    request_id = item.get("id")
    # bool is an int to Python, but true/false is no JSON-RPC id.
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int | float)
    ):
        return _invalid(None, "id must be a string, a number or null", trace_id)
    if item.get("jsonrpc") != "2.0":
        return _invalid(request_id, 'jsonrpc must be "2.0"', trace_id)
    method = item.get("method")
    if not isinstance(method, str):
        return _invalid(request_id, "method must be a string", trace_id)
    # The specification lets params be omitted, but not be null or a scalar.
    params = item.get("params")
    if "params" in item and not isinstance(params, list | dict):
        return _invalid(request_id, "params must be an array or an object", trace_id)
    return _Request(method, params, request_id, notification="id" not in item)


def _split_method(name: str) -> tuple[str, str]:
    if name.startswith("rpc."):
        raise not_found(f"method names that begin with 'rpc.' are reserved: {name!r}")
    service, _, method = name.partition(".")
    if not service or not method:
        raise not_found(f'method must be "service.method", not {name!r}')
    return service, method


async def _execute(request: _Request, call: CallTarget, trace_id: str | None) -> Response | None:
    """Run one request; its answer, or ``None`` for a notification."""
    try:
        service, method = _split_method(request.method)
        result = await call(service, method, request.params)
    except Problem as problem:
        if problem.status == 401:
            raise
        answer = _error(request.id, ErrorCode.of(problem), problem, trace_id)
    except Exception:
        _log.exception("JSON-RPC call %r failed (trace_id %s)", request.method, trace_id)
        internal = Problem(500, _INTERNAL_DETAIL, code=INTERNAL)
        answer = _error(request.id, ErrorCode.INTERNAL_ERROR, internal, trace_id)
    else:
        answer = {"jsonrpc": "2.0", "result": result, "id": request.id}
    return None if request.notification else answer


async def _execute_all(
    requests: Sequence[tuple[int, _Request]],
    answers: list[Response | None],
    call: CallTarget,
    trace_id: str | None,
    concurrency: int,
) -> None:
    """Run ``requests`` concurrently, writing each answer at its index in ``answers``.

    A fixed set of workers share one iterator of the requests, so at most ``concurrency``
    calls are in flight and no task waits idle for its turn. The TaskGroup cancels and awaits
    every worker when we are cancelled, so none outlives the HTTP request.

    A worker that meets a 401 cancels its siblings and returns; we raise that ``Problem`` once
    the group is done. Letting it escape the worker would instead wrap it in an
    ``ExceptionGroup``, and Python 3.11's TaskGroup then leaves the calling task's cancellation
    count raised when a child fails after the ``async with`` body has ended.
    """
    pending = iter(requests)
    workers: list[asyncio.Task[None]] = []
    refused: list[Problem] = []

    async def work() -> None:
        for index, request in pending:
            try:
                answers[index] = await _execute(request, call, trace_id)
            except Problem as problem:  # a 401: the only Problem _execute lets through
                refused.append(problem)
                current = asyncio.current_task()
                for worker in workers:
                    if worker is not current:
                        worker.cancel()
                return

    if not requests:
        return
    async with asyncio.TaskGroup() as group:
        workers.extend(group.create_task(work()) for _ in range(min(concurrency, len(requests))))
    if refused:
        raise refused[0]


def _invalid(request_id: RequestId, detail: str, trace_id: str | None) -> Response:
    return _error(request_id, ErrorCode.INVALID_REQUEST, invalid_argument(detail), trace_id)


def _error(
    request_id: RequestId, code: ErrorCode, problem: Problem, trace_id: str | None
) -> Response:
    # int(code): the answer holds plain JSON values only, whatever encoder the caller uses.
    error = {"code": int(code), "message": problem.detail, "data": problem.document(trace_id)}
    return {"jsonrpc": "2.0", "error": error, "id": request_id}
