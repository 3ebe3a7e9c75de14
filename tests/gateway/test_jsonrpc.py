"""The JSON-RPC 2.0 endpoint logic (gateway/jsonrpc.py), with a fake call target.

The module does no I/O of its own, so a fake ``CallTarget`` that records its calls (and can
block, fail or finish in a chosen order) covers every rule. pytest-asyncio is not a
dependency: ``run_async`` runs each ``async def`` test with ``asyncio.run``, bounded in time,
and fails it if a task is left behind or an error reached the loop's exception handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from asyncrun import async_runner

from gateway.jsonrpc import (
    DEFAULT_CONCURRENCY,
    ErrorCode,
    Params,
    Response,
    handle_jsonrpc,
    parse_error_response,
)
from gateway.problems import (
    Problem,
    invalid_argument,
    not_found,
    problem_from_rpc_error,
    unavailable,
)
from rpccore import LostRemote, MethodNotFound, RemoteError, TimeoutExpired

TRACE = "0af7651916cd43dd8448eb211c80319c"
TEST_TIMEOUT = 10.0


run_async = async_runner(TEST_TIMEOUT, no_tasks_left=True)


class Backend:
    """A fake call target: ``calc.add`` adds, ``calc.echo`` returns its params, a method named
    in ``raises`` raises that, ``calc.block`` waits until ``release`` is set."""

    def __init__(self, raises: dict[str, BaseException] | None = None) -> None:
        self.raises = raises or {}
        self.calls: list[tuple[str, str, Params]] = []
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    async def __call__(self, service: str, method: str, params: Params) -> Any:
        self.calls.append((service, method, params))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # Every call yields at least once, so the calls of a batch really overlap.
            await asyncio.sleep(0)
            if f"{service}.{method}" in self.raises:
                raise self.raises[f"{service}.{method}"]
            if method == "block":
                await self.release.wait()
            if method == "add":
                return sum(params.values()) if isinstance(params, dict) else sum(params or [])
            return params
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


def request(method: Any, params: Any = None, id: Any = 1) -> dict[str, Any]:
    req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        req["params"] = params
    return req


def notification(method: str, params: Any = None) -> dict[str, Any]:
    req = request(method, params)
    del req["id"]
    return req


def result(value: Any, id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": value, "id": id}


def error(
    code: int, problem: Problem, id: Any = None, trace_id: str | None = TRACE
) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "error": {"code": code, "message": problem.detail, "data": problem.document(trace_id)},
        "id": id,
    }


def invalid(detail: str, id: Any = None) -> dict[str, Any]:
    return error(-32600, invalid_argument(detail), id)


def one(answer: Response | list[Response] | None) -> Response:
    """The answer to a single request, typed as such."""
    assert isinstance(answer, dict)
    return answer


def backend_error(name: str, errors: dict[str, int] | None = None) -> Problem:
    return problem_from_rpc_error(RemoteError(name, "text"), "calc", "add", errors)


# --- single requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "passed", "value"),
    [
        ([1, 2], [1, 2], 3),
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}, 3),
        ([], [], 0),
        (None, None, 0),  # params omitted: the call gets None
    ],
)
@run_async
async def test_a_call_answers_its_result(params: Any, passed: Params, value: int) -> None:
    backend = Backend()
    answer = await handle_jsonrpc(request("calc.add", params), backend, trace_id=TRACE)
    assert answer == {"jsonrpc": "2.0", "result": value, "id": 1}
    assert backend.calls == [("calc", "add", passed)]


@pytest.mark.parametrize("id", ["abc", "", 7, -1, 2.5, 0, None])
@run_async
async def test_the_id_comes_back_as_it_was_sent(id: Any) -> None:
    answer = one(await handle_jsonrpc(request("calc.echo", [1], id=id), Backend(), trace_id=TRACE))
    assert answer == result([1], id)
    assert type(answer["id"]) is type(id)


@run_async
async def test_a_null_result_is_still_a_result() -> None:
    answer = await handle_jsonrpc(request("calc.echo", id=3), Backend(), trace_id=None)
    assert answer == {"jsonrpc": "2.0", "result": None, "id": 3}


@run_async
async def test_the_method_splits_on_the_first_dot() -> None:
    backend = Backend()
    await handle_jsonrpc(request("calc.a.b", [1]), backend, trace_id=TRACE)
    assert backend.calls == [("calc", "a.b", [1])]


@run_async
async def test_members_beyond_the_specification_are_ignored() -> None:
    req = {**request("calc.add", [1, 2]), "extra": True}
    assert await handle_jsonrpc(req, Backend(), trace_id=TRACE) == result(3)


@run_async
async def test_a_notification_runs_and_is_not_answered() -> None:
    backend = Backend()
    assert await handle_jsonrpc(notification("calc.add", [1]), backend, trace_id=TRACE) is None
    assert backend.calls == [("calc", "add", [1])]


@pytest.mark.parametrize(
    "raised", [Problem(504, "late", code="deadline_exceeded"), RuntimeError("boom")]
)
@run_async
async def test_a_failed_notification_is_not_answered(raised: Exception) -> None:
    backend = Backend({"calc.add": raised})
    assert await handle_jsonrpc(notification("calc.add"), backend, trace_id=TRACE) is None
    assert len(backend.calls) == 1


# --- invalid requests -----------------------------------------------------------------------

OBJECT = "a request must be a JSON object"
BAD_ID = "id must be a string, a number or null"
BAD_VERSION = 'jsonrpc must be "2.0"'
BAD_METHOD = "method must be a string"
BAD_PARAMS = "params must be an array or an object"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (5, invalid(OBJECT)),
        ("calc.add", invalid(OBJECT)),
        (True, invalid(OBJECT)),
        (None, invalid(OBJECT)),
        ({**request("calc.add"), "id": {}}, invalid(BAD_ID)),
        ({**request("calc.add"), "id": [1]}, invalid(BAD_ID)),
        ({**request("calc.add"), "id": True}, invalid(BAD_ID)),
        ({**request("calc.add"), "id": False}, invalid(BAD_ID)),
        ({**request("calc.add", id=4), "jsonrpc": "1.0"}, invalid(BAD_VERSION, 4)),
        ({**request("calc.add", id=4), "jsonrpc": 2.0}, invalid(BAD_VERSION, 4)),
        ({"method": "calc.add", "id": "x"}, invalid(BAD_VERSION, "x")),
        ({"jsonrpc": "2.0", "id": 4}, invalid(BAD_METHOD, 4)),
        (request(1, id=4), invalid(BAD_METHOD, 4)),
        (request(None, id=4), invalid(BAD_METHOD, 4)),
        ({**request("calc.add", id=4), "params": "bar"}, invalid(BAD_PARAMS, 4)),
        ({**request("calc.add", id=4), "params": 3}, invalid(BAD_PARAMS, 4)),
        ({**request("calc.add", id=4), "params": None}, invalid(BAD_PARAMS, 4)),
        # The specification's own example: no id member, yet answered (it is no request, so
        # no notification either), with a null id.
        ({"jsonrpc": "2.0", "method": 1, "params": "bar"}, invalid(BAD_METHOD)),
        ({"jsonrpc": "2.0", "method": "calc.add", "params": 1}, invalid(BAD_PARAMS)),
    ],
)
@run_async
async def test_an_invalid_request_is_answered_32600(payload: Any, expected: Any) -> None:
    backend = Backend()
    assert await handle_jsonrpc(payload, backend, trace_id=TRACE) == expected
    assert backend.calls == []


@run_async
async def test_an_invalid_request_answer_in_full() -> None:
    answer = await handle_jsonrpc({"jsonrpc": "2.0", "method": 1}, Backend(), trace_id=TRACE)
    assert answer == {
        "jsonrpc": "2.0",
        "error": {
            "code": -32600,
            "message": "method must be a string",
            "data": {
                "type": "urn:zerogate:problem:invalid_argument",
                "title": "Bad Request",
                "status": 400,
                "detail": "method must be a string",
                "code": "invalid_argument",
                "trace_id": TRACE,
            },
        },
        "id": None,
    }


def test_parse_error_response() -> None:
    detail = "Expecting value: line 1 column 1 (char 0)"
    assert parse_error_response(detail, trace_id=TRACE) == {
        "jsonrpc": "2.0",
        "error": {
            "code": -32700,
            "message": detail,
            "data": {
                "type": "urn:zerogate:problem:invalid_argument",
                "title": "Bad Request",
                "status": 400,
                "detail": detail,
                "code": "invalid_argument",
                "trace_id": TRACE,
            },
        },
        "id": None,
    }
    assert "trace_id" not in parse_error_response(detail)["error"]["data"]


@pytest.mark.parametrize(
    ("method", "detail"),
    [
        ("add", "method must be \"service.method\", not 'add'"),
        ("", "method must be \"service.method\", not ''"),
        (".add", "method must be \"service.method\", not '.add'"),
        ("calc.", "method must be \"service.method\", not 'calc.'"),
        ("rpc.discover", "method names that begin with 'rpc.' are reserved: 'rpc.discover'"),
    ],
)
@run_async
async def test_a_method_that_names_nothing_is_32601(method: str, detail: str) -> None:
    backend = Backend()
    answer = one(await handle_jsonrpc(request(method, id=9), backend, trace_id=TRACE))
    assert answer == error(-32601, not_found(detail), 9)
    assert answer["error"]["data"]["code"] == "unimplemented"
    # A notification to nothing: a valid request, so still not answered.
    assert await handle_jsonrpc(notification(method), backend, trace_id=TRACE) is None
    assert backend.calls == []


# --- errors the call raised -----------------------------------------------------------------

RPC = {"service": "calc", "method": "add"}
MAPPED = {"KeyError": 404, "PermissionError": 403, "ValueError": 400}


@pytest.mark.parametrize(
    ("problem", "code"),
    [
        (not_found("calc has no method add", "calc", "add"), -32601),
        (problem_from_rpc_error(MethodNotFound("NameError", "no add"), "calc", "add"), -32601),
        (
            invalid_argument("add takes 2 arguments", [{"loc": [2], "msg": "m", "type": "t"}]),
            -32602,
        ),
        (backend_error("ZeroDivisionError"), -32000),
        # A backend exception stays -32000 whatever status the service's `errors:` gave it.
        (backend_error("KeyError", MAPPED), -32000),
        (backend_error("PermissionError", MAPPED), -32000),
        (backend_error("ValueError", MAPPED), -32000),
        (problem_from_rpc_error(TimeoutExpired("t"), "calc", "add"), -32001),
        (problem_from_rpc_error(LostRemote("l"), "calc", "add"), -32002),
        (unavailable("no calc backend is reachable", 5, rpc=RPC), -32002),
        (Problem(403, "the token lacks calc:add", code="permission_denied", rpc=RPC), -32003),
        (Problem(429, "slow down", code="resource_exhausted"), -32603),
        (Problem(404, "no such user", code="not_found"), -32603),
        (Problem(500, "odd", code="internal"), -32603),
        (Problem(418, "teapot"), -32603),
    ],
)
@run_async
async def test_a_problem_maps_to_its_error_code(problem: Problem, code: int) -> None:
    backend = Backend({"calc.add": problem})
    answer = await handle_jsonrpc(request("calc.add", [1], id="a"), backend, trace_id=TRACE)
    assert answer == error(code, problem, "a")
    assert ErrorCode.of(problem) == code


@run_async
async def test_error_data_has_no_trace_id_without_one() -> None:
    problem = Problem(504, "late", code="deadline_exceeded")
    backend = Backend({"calc.add": problem})
    answer = one(await handle_jsonrpc(request("calc.add"), backend, trace_id=None))
    assert answer == error(-32001, problem, 1, trace_id=None)
    assert "trace_id" not in answer["error"]["data"]


@run_async
async def test_the_error_code_is_a_plain_int() -> None:
    backend = Backend({"calc.add": Problem(504, "late")})
    answer = one(await handle_jsonrpc(request("calc.add"), backend, trace_id=TRACE))
    assert type(answer["error"]["code"]) is int


@run_async
async def test_an_unexpected_exception_is_32603_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Backend({"calc.add": RuntimeError("secret internals")})
    with caplog.at_level(logging.ERROR, logger="zerogate.jsonrpc"):
        answer = one(await handle_jsonrpc(request("calc.add", id=2), backend, trace_id=TRACE))
    assert answer["error"]["code"] == -32603
    assert answer["error"]["data"]["status"] == 500
    assert answer["error"]["data"]["code"] == "internal"
    assert answer["error"]["data"]["trace_id"] == TRACE
    assert answer["id"] == 2
    assert "secret" not in repr(answer)
    [record] = caplog.records
    assert record.name == "zerogate.jsonrpc"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert TRACE in record.getMessage()


@pytest.mark.parametrize("payload", [request("calc.add"), notification("calc.add")])
@run_async
async def test_a_401_fails_the_whole_request(payload: Any) -> None:
    refusal = Problem(401, "the token expired", code="unauthenticated")
    with pytest.raises(Problem) as caught:
        await handle_jsonrpc(payload, Backend({"calc.add": refusal}), trace_id=TRACE)
    assert caught.value is refusal


def test_a_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(handle_jsonrpc(request("calc.add"), Backend(), trace_id=None, concurrency=0))


# --- batches --------------------------------------------------------------------------------


@run_async
async def test_an_empty_batch_is_one_invalid_request() -> None:
    answer = await handle_jsonrpc([], Backend(), trace_id=TRACE)
    assert answer == invalid("a batch must hold at least one request")


@run_async
async def test_a_batch_over_the_limit_is_refused_whole() -> None:
    backend = Backend()
    batch = [request("calc.add", [i], id=i) for i in range(4)]
    answer = await handle_jsonrpc(batch, backend, trace_id=TRACE, max_batch=3)
    assert answer == invalid("a batch holds at most 3 requests, this one has 4")
    assert backend.calls == []
    # At the limit exactly, it runs.
    answer = await handle_jsonrpc(batch[:3], backend, trace_id=TRACE, max_batch=3)
    assert answer == [result(0, 0), result(1, 1), result(2, 2)]


@run_async
async def test_the_default_batch_limit_is_100() -> None:
    backend = Backend()
    batch = [notification("calc.add")] * 101
    answer = await handle_jsonrpc(batch, backend, trace_id=TRACE)
    assert answer == invalid("a batch holds at most 100 requests, this one has 101")
    assert await handle_jsonrpc(batch[:100], backend, trace_id=TRACE) is None
    assert len(backend.calls) == 100


@run_async
async def test_a_batch_of_non_objects_answers_each() -> None:
    answer = await handle_jsonrpc([1, 2, 3], Backend(), trace_id=TRACE)
    assert answer == [invalid(OBJECT)] * 3


@run_async
async def test_a_batch_of_notifications_only_is_not_answered() -> None:
    backend = Backend({"calc.bad": Problem(504, "late")})
    batch = [notification("calc.add", [1]), notification("calc.bad"), notification("nothing")]
    assert await handle_jsonrpc(batch, backend, trace_id=TRACE) is None
    assert sorted(backend.calls, key=repr) == [("calc", "add", [1]), ("calc", "bad", None)]


@run_async
async def test_a_mixed_batch() -> None:
    """The specification's batch example, in service.method names."""
    missing = not_found("calc has no method missing", "calc", "missing")
    backend = Backend({"calc.missing": missing})
    batch = [
        request("calc.add", [1, 2, 4], id="1"),
        notification("calc.echo", [7]),
        request("calc.add", {"a": 42, "b": -23}, id="2"),
        {"foo": "boo"},
        request("calc.missing", {"name": "myself"}, id="5"),
        request("calc.echo", ["hello", 5], id="9"),
        request("calc.add", "x", id="10"),
        notification("nowhere"),
        request("nowhere", id="11"),
    ]
    answer = await handle_jsonrpc(batch, backend, trace_id=TRACE)
    assert answer == [
        result(7, "1"),
        result(19, "2"),
        invalid(BAD_VERSION),
        error(-32601, missing, "5"),
        result(["hello", 5], "9"),
        invalid(BAD_PARAMS, "10"),
        error(-32601, not_found("method must be \"service.method\", not 'nowhere'"), "11"),
    ]
    assert len(backend.calls) == 5


@run_async
async def test_duplicate_ids_are_each_answered() -> None:
    batch = [request("calc.add", [1]), request("calc.add", [2])]
    assert await handle_jsonrpc(batch, Backend(), trace_id=TRACE) == [result(1), result(2)]


@run_async
async def test_a_batch_with_a_single_request_is_still_a_list() -> None:
    answer = await handle_jsonrpc([request("calc.add", [5])], Backend(), trace_id=TRACE)
    assert answer == [result(5)]


@run_async
async def test_an_unexpected_exception_fails_only_its_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Backend({"calc.bad": ZeroDivisionError("x")})
    batch = [request("calc.add", [1], id=1), request("calc.bad", id=2), request("calc.add", id=3)]
    with caplog.at_level(logging.ERROR, logger="zerogate.jsonrpc"):
        answer = await handle_jsonrpc(batch, backend, trace_id=TRACE)
    assert isinstance(answer, list)
    assert [a["id"] for a in answer] == [1, 2, 3]
    assert answer[0] == result(1, 1)
    assert answer[1]["error"]["code"] == -32603
    assert answer[2] == result(0, 3)
    assert len(caplog.records) == 1


@run_async
async def test_answers_keep_request_order_when_calls_finish_in_reverse() -> None:
    count = 8
    finished: list[int] = []
    turn = [asyncio.Event() for _ in range(count)]

    async def call(service: str, method: str, params: Params) -> Any:
        assert isinstance(params, list)
        [n] = params
        await turn[n].wait()
        finished.append(n)
        if n > 0:
            turn[n - 1].set()  # the next one down may finish now
        return n * 10

    turn[-1].set()
    batch = [request("calc.f", [n], id=n) for n in range(count)]
    answer = await handle_jsonrpc(batch, call, trace_id=TRACE)
    assert finished == list(reversed(range(count)))
    assert answer == [result(n * 10, n) for n in range(count)]


@pytest.mark.parametrize("concurrency", [1, 3, DEFAULT_CONCURRENCY])
@run_async
async def test_calls_of_a_batch_run_at_most_concurrency_at_once(concurrency: int) -> None:
    backend = Backend()
    batch = [request("calc.add", [n], id=n) for n in range(40)]
    kwargs = {} if concurrency == DEFAULT_CONCURRENCY else {"concurrency": concurrency}
    answer = await handle_jsonrpc(batch, backend, trace_id=TRACE, **kwargs)
    assert answer == [result(n, n) for n in range(40)]
    assert backend.max_in_flight == concurrency


@run_async
async def test_a_batch_smaller_than_the_bound_runs_all_at_once() -> None:
    backend = Backend()
    batch = [request("calc.block", id=n) for n in range(5)]
    running = asyncio.create_task(handle_jsonrpc(batch, backend, trace_id=TRACE))
    while backend.in_flight < 5:
        await asyncio.sleep(0)
    backend.release.set()
    assert await running == [result(None, n) for n in range(5)]


async def _started(backend: Backend, count: int) -> None:
    while len(backend.calls) < count:
        await asyncio.sleep(0)
    # A few more turns of the loop: nothing beyond `count` may start.
    for _ in range(5):
        await asyncio.sleep(0)


@run_async
async def test_cancelling_a_batch_cancels_every_call() -> None:
    backend = Backend()
    batch = [request("calc.block", id=n) for n in range(20)] + [notification("calc.block")]
    running = asyncio.create_task(handle_jsonrpc(batch, backend, trace_id=TRACE))
    await _started(backend, DEFAULT_CONCURRENCY)
    assert len(backend.calls) == DEFAULT_CONCURRENCY
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert backend.cancelled == DEFAULT_CONCURRENCY
    assert backend.in_flight == 0
    assert len(backend.calls) == DEFAULT_CONCURRENCY  # the rest never started
    # run_async checks that no task is left behind


@run_async
async def test_cancelling_a_single_request_cancels_its_call() -> None:
    backend = Backend()
    running = asyncio.create_task(handle_jsonrpc(request("calc.block"), backend, trace_id=None))
    await _started(backend, 1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert backend.cancelled == 1


@run_async
async def test_a_401_in_a_batch_cancels_the_rest_and_fails_the_request() -> None:
    refusal = Problem(401, "the token was revoked", code="unauthenticated")
    backend = Backend({"calc.refused": refusal})
    batch = [request("calc.block", id=n) for n in range(5)]
    batch.insert(2, notification("calc.refused"))
    batch += [request("calc.block", id=n) for n in range(5, 30)]
    with pytest.raises(Problem) as caught:
        await handle_jsonrpc(batch, backend, trace_id=TRACE)
    assert caught.value is refusal
    assert backend.in_flight == 0
    assert backend.cancelled == len(backend.calls) - 1  # all but the refused one
    assert len(backend.calls) == DEFAULT_CONCURRENCY  # the later ones never started
    # The caller's task carries no leftover cancellation request (a TaskGroup whose child
    # raised would leave one on Python 3.11), so its next await runs normally.
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await asyncio.sleep(0)
