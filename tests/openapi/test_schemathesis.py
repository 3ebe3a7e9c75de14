"""Schemathesis against a live gateway in front of the demo services: every operation of the
document the gateway serves, called with generated requests, answers as the document says.

The demo's two backends (``gateway.demo_backends``: ``calc`` on gevent, ``inventory`` on
asyncio) run in child processes; the gateway runs under a real uvicorn on a loopback port,
from the demo's own config (``gateway.demo.DEMO_CONFIG``). Schemathesis loads the document
from the live ``/openapi.json`` and runs each operation on a bounded number of generated
requests, derandomized so a run repeats exactly. Every response is checked:

- no 5xx the gateway caused: a 5xx must be a problem document whose ``remote`` shows the
  backend raised, the 502 of a result JSON cannot hold, or the 504 of a call given a short
  ``X-Timeout-Ms``; the same for the problem of each failed call of a JSON-RPC answer;
- it conforms to the document: a documented status and content type, documented headers,
  and a body the schema admits. Schemathesis checks JSON, msgpack (a deserializer below) and
  server-sent events; NDJSON, which it does not read, is checked here line by line.

Each operation is also called a second time in the other format it offers: msgpack for a
plain result, server-sent events for a stream.

Generated values that would make a call run long are bounded before they are sent
(``BOUNDS``): the demo's slow methods sleep for an argument's seconds, and its streams yield
an argument's count of items, each after an argument's delay.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import time
from collections.abc import Iterator
from typing import Any, Final

import httpx
import msgpack
import pytest
import schemathesis
from docs_support import Gateway
from hypothesis import HealthCheck, Phase, example, given, reject, settings
from jsonschema import Draft202012Validator
from openapi_support import Children
from schemathesis import BaseSchema, Case, CheckContext, GenerationMode, HookContext
from schemathesis.core import NOT_SET
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response

from gateway.config import parse_config
from gateway.demo import DEMO_CONFIG
from gateway.demo_backends import Calc, Inventory
from gateway.registry import exposed_description
from openapi import build_document, package_version
from rpccore._describe import from_inspect
from rpccore._service import Service

MAX_EXAMPLES: Final = 25  # per operation and generation mode
REQUEST_TIMEOUT: Final = 15.0  # seconds; the services' own timeout is 10
SHORT_DEADLINE_MS: Final = 1000  # a call given less may time out (504) with a fast backend
JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
SSE: Final = "text/event-stream"
MSGPACK: Final = "application/msgpack"
ARGUMENT_LOCATIONS: Final = frozenset(
    {ParameterLocation.BODY, ParameterLocation.QUERY, ParameterLocation.PATH}
)

# (service.method) -> {argument: the largest value sent}. The demo's slow methods block for
# ``seconds`` (1 by default); its streams yield ``n`` or ``updates`` items, each after
# ``delay`` or ``interval`` seconds. Unbounded, one generated call could hold a backend
# thread for hours; a default over its bound is sent explicitly, as the bound.
BOUNDS: Final[dict[str, dict[str, float]]] = {
    "calc.slow": {"seconds": 0.05},
    "calc.count": {"n": 25, "delay": 0.01},
    "inventory.audit": {"seconds": 0.05},
    "inventory.watch": {"updates": 5, "interval": 0.01},
}
_CLASSES: Final = {"calc": Calc, "inventory": Inventory}

# Calls schemathesis would rarely make by chance (a SKU the shop has, a stream with items),
# run before the generated ones, and the boundaries it found: an integer beyond msgpack's
# 64 bits cannot be sent, which is the caller's mistake (a 400), not the backend's.
# operation id -> keyword arguments of ``APIOperation.Case``.
EXAMPLES: Final[dict[str, list[dict[str, Any]]]] = {
    "calc.add": [
        {"body": [2, 3]},
        {"body": {"a": 2**64, "b": 1}},
        {"body": [-(2**63) - 1, 0]},
    ],
    "calc.count": [{"body": {"n": 3}}, {"body": [2, -1]}],
    "calc.divide": [{"body": [1, 0]}],
    "calc.greet": [{"body": {"name": "PyCon"}}],
    "inventory.get_item": [{"body": {"sku": "apple"}}],
    "inventory.get_item.get": [{"query": {"sku": "apple"}}],
    "inventory.get_item.get_items_sku": [{"path_parameters": {"sku": "banana"}}],
    "inventory.list_items.get": [{"query": {"category": "fruit"}}],
    "inventory.reserve": [{"body": {"sku": "carrot", "quantity": 2}}, {"body": ["hammer", 99]}],
    "inventory.reserve.post_items_sku_reserve": [
        {"path_parameters": {"sku": "carrot"}, "body": {"quantity": 1}}
    ],
    "inventory.watch": [{"body": {"sku": "apple", "updates": 2, "interval": 0.01}}],
    "jsonrpc": [
        {"body": {"jsonrpc": "2.0", "method": "calc.add", "params": [1, 2], "id": 1}},
        {"body": {"jsonrpc": "2.0", "method": "calc.add", "params": [2**64, 1], "id": 2}},
        {
            "body": [
                {"jsonrpc": "2.0", "method": "calc.count", "params": {"n": 2}, "id": "a"},
                {"jsonrpc": "2.0", "method": "inventory.get_item", "params": ["nope"], "id": 2},
                {"jsonrpc": "2.0", "method": "calc.add", "params": [1, 2]},
            ]
        },
    ],
}


def _parameters(name: str) -> list[inspect.Parameter]:
    service, _, method = name.partition(".")
    params = list(inspect.signature(getattr(_CLASSES[service], method)).parameters.values())
    return params[1:]  # without self


def bounded(name: str, args: Any) -> Any:
    """``args`` (a POST body or a JSON-RPC ``params``, None when there are none) of
    ``service.method`` ``name``, with each value over its bound replaced by the bound, and
    each default over its bound given explicitly as the bound."""
    limits = BOUNDS.get(name)
    if limits is None:
        return args
    params = _parameters(name)

    def cap(arg: str, value: Any) -> Any:
        limit = limits.get(arg)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return min(value, type(value)(limit)) if limit is not None and number else value

    def too_long(param: inspect.Parameter) -> bool:
        default = param.default
        return param.name in limits and default is not param.empty and default > limits[param.name]

    if args is None:
        args = {}
    if isinstance(args, dict):
        out = {k: cap(k, v) if isinstance(k, str) else v for k, v in args.items()}
        out |= {p.name: limits[p.name] for p in params if p.name not in args and too_long(p)}
        return out
    if not isinstance(args, list):
        return args
    out = [cap(params[i].name, v) if i < len(params) else v for i, v in enumerate(args)]
    omitted = params[len(out) :]
    long = [i for i, p in enumerate(omitted) if too_long(p)]
    if long and all(p.default is not p.empty for p in omitted[: long[-1] + 1]):
        out += [cap(p.name, p.default) for p in omitted[: long[-1] + 1]]
    return out


def _rpc_name(path: str) -> str | None:
    parts = path.split("/")
    return f"{parts[2]}.{parts[3]}" if len(parts) == 4 and parts[1] == "rpc" else None


def _bounded_jsonrpc(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("method"), str):
        return call
    if "params" not in call and call["method"] not in BOUNDS:
        return call
    return {**call, "params": bounded(call["method"], call.get("params"))}


def map_case(context: HookContext, case: Case) -> Case:
    """Bound what a call of a slow method or a stream gets (see ``BOUNDS``)."""
    body = None if case.body is NOT_SET else case.body
    if case.operation.path == "/jsonrpc":
        calls = [_bounded_jsonrpc(call) for call in body] if isinstance(body, list) else None
        case.body = calls if calls is not None else _bounded_jsonrpc(body)
        return case
    name = _rpc_name(case.operation.path)
    if name in BOUNDS and (mapped := bounded(name, body)) is not body:
        case.body = mapped
        case.media_type = case.media_type or JSON
    return case


# -- msgpack, both ways ---------------------------------------------------------------------


@schemathesis.serializer(MSGPACK)
def _to_msgpack(ctx: Any, value: Any) -> bytes:
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        reject()  # a value msgpack cannot carry (an integer beyond 64 bits): not sendable
    return data


@schemathesis.deserializer(MSGPACK)
def _from_msgpack(ctx: Any, response: Response) -> Any:
    return _as_json(msgpack.unpackb(response.content, raw=False, strict_map_key=False))


def _as_json(value: Any) -> Any:
    """What the schema of a msgpack answer describes, in the JSON values a validator reads:
    bin as a string, keys as strings, and a float JSON has no number for (infinity, NaN) as
    a finite one, which is what it is to a ``number`` schema."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0 if math.isnan(value) else math.copysign(sys.float_info.max, value)
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _as_json(v) for k, v in value.items()}
    return value


# -- checks ---------------------------------------------------------------------------------


def _problem(response: Response) -> dict[str, Any] | None:
    try:
        document = json.loads(response.content)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _timeout_ms(case: Case) -> int | None:
    value = (case.headers or {}).get("X-Timeout-Ms")
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() else None


def gateway_fault(problem: dict[str, Any], request_headers: Any, case: Case) -> str | None:
    """What the gateway did wrong answering with ``problem``, if it was its fault: a 5xx is
    allowed only when the backend caused it, as a problem whose ``remote`` names what the
    backend raised, a result JSON cannot hold (a float overflowing to infinity: a 502 when
    JSON was asked for; ``call_and_check`` then asks for msgpack, which must carry it), or
    the deadline the client set with ``X-Timeout-Ms`` passing."""
    status, code = problem.get("status"), problem.get("code")
    if not isinstance(status, int) or status < 500:
        return None
    if status == 500 and isinstance(problem.get("remote"), dict):
        return None  # the backend raised
    accept = request_headers.get("Accept") or ""
    if status == 502 and code == "internal" and MSGPACK not in accept:
        return None  # the backend's result has no JSON form
    timeout = _timeout_ms(case)
    if status == 504 and timeout is not None and timeout < SHORT_DEADLINE_MS:
        return None  # the client's own short deadline
    return f"{status} without the backend causing it: {code}: {problem.get('detail')}"


def no_gateway_5xx(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No 5xx the gateway caused (``gateway_fault``), and every 5xx a problem document."""
    if response.status_code < 500:
        return True
    problem = _problem(response)
    assert problem is not None, f"a {response.status_code} that is not a problem document"
    assert problem.get("status") == response.status_code, "the problem's status differs"
    fault = gateway_fault(problem, response.request.headers, case)
    if fault is not None:
        raise AssertionError(f"the gateway answered {fault}")
    return True


def no_gateway_jsonrpc_failure(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """The same for each failed call of a JSON-RPC answer: its problem (``error.data``)."""
    if case.operation.path != "/jsonrpc" or response.status_code != 200:
        return None
    answer = json.loads(response.content)
    for index, one in enumerate(answer if isinstance(answer, list) else [answer]):
        data = one.get("error", {}).get("data")
        fault = gateway_fault(data, response.request.headers, case) if data else None
        if fault is not None:
            raise AssertionError(f"JSON-RPC response {index}: the gateway answered {fault}")
    return True


def _content_schema(case: Case, response: Response, media_type: str) -> dict[str, Any]:
    """A validator root for ``media_type``'s schema in the operation's documented response:
    the whole document, so its ``$ref`` pointers resolve."""
    responses = case.operation.definition.raw["responses"]
    status = str(response.status_code)
    assert status in responses, f"status {status} not documented"
    pointer = "/".join(
        part.replace("~", "~0").replace("/", "~1")
        for part in ("#", "paths", case.operation.path, case.operation.method.lower())
    )
    media = media_type.replace("~", "~0").replace("/", "~1")
    document: dict[str, Any] = case.operation.schema.raw_schema
    return {**document, "$ref": f"{pointer}/responses/{status}/content/{media}/schema"}


def arguments_off_schema(case: Case) -> bool:
    """Whether the call's arguments (body, query or path) were generated to violate the
    document. The gateway checks names and counts, not types: it passes such values on, and
    what the backend makes of them need not be what its annotations promise."""
    meta = case.meta
    if meta is None:
        return False
    return any(
        info.mode is GenerationMode.NEGATIVE
        for location, info in meta.components.items()
        if location in ARGUMENT_LOCATIONS
    )


def result_schema_conformance(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Schemathesis's body check, but for the result of arguments off the schema."""
    if response.status_code < 300 and arguments_off_schema(case):
        return None
    return schemathesis.checks.response_schema_conformance(ctx, response, case)


def ndjson_conformance(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """An NDJSON stream: every line is JSON the documented (per-line) schema admits, and
    only the last may be an error line."""
    media = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if media != NDJSON:
        return None
    validator = Draft202012Validator(_content_schema(case, response, NDJSON))
    lines = response.content.decode("utf-8").split("\n")
    assert lines[-1] == "", "the stream does not end with a newline"
    for index, line in enumerate(lines[:-1]):
        value = json.loads(line)
        assert isinstance(value, dict), f"line {index} is not an object: {line[:200]}"
        if "error" in value:
            assert index == len(lines) - 2, "an error line that is not the last"
        elif arguments_off_schema(case):
            assert set(value) == {"result"}, f"line {index}: {line[:200]}"
            continue
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, f"line {index}: {line[:200]}: {errors}"
    return True


CHECKS: Final = [
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    result_schema_conformance,
]
EXTRA_CHECKS: Final = [no_gateway_5xx, no_gateway_jsonrpc_failure, ndjson_conformance]


# -- the live demo --------------------------------------------------------------------------


def demo_config(calc: str, inventory: str) -> str:
    # The port is the config's only; Gateway listens on a free one of its own.
    return DEMO_CONFIG.substitute(host="127.0.0.1", port=8080, calc=calc, inventory=inventory)


def offline_document() -> dict[str, Any]:
    """The demo's document, built from its services without running them: the live one must
    be the same, and its operation ids name the tests."""
    config = parse_config(demo_config("tcp://127.0.0.1:1", "tcp://127.0.0.1:2"))
    services = {
        name: exposed_description(
            config.services[name], from_inspect(Service(cls(), name=name)._inspect())
        )
        for name, cls in _CLASSES.items()
    }
    return build_document(services, config, version=package_version())


OFFLINE: Final = offline_document()
OPERATION_IDS: Final = sorted(
    op["operationId"] for item in OFFLINE["paths"].values() for op in item.values()
)


def wait_described(url: str, services: set[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        catalog = httpx.get(f"{url}/rpc", timeout=5).json()["services"]
        if all(catalog.get(name, {}).get("methods") for name in services):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"services not described after {timeout} s: {catalog}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def demo() -> Iterator[Gateway]:
    children = Children()
    try:
        calc, inventory = children.demo_backend("calc"), children.demo_backend("inventory")
        with Gateway(demo_config(calc, inventory)) as gateway:
            wait_described(gateway.url, set(_CLASSES))
            yield gateway
    finally:
        children.stop_all()


@pytest.fixture(scope="module")
def demo_schema(demo: Gateway) -> BaseSchema:
    loaded = schemathesis.openapi.from_url(f"{demo.url}/openapi.json", timeout=10)
    loaded.hook(map_case)
    return loaded


def _other_format(case: Case) -> str:
    ok = case.operation.definition.raw["responses"]["200"].get("content", {})
    return SSE if SSE in ok else MSGPACK


def call_and_check(case: Case) -> None:
    """Call as generated, then again asking for the other format the operation offers."""
    for headers in (None, {"Accept": _other_format(case)}):
        case.call_and_validate(
            headers=headers, checks=CHECKS, additional_checks=EXTRA_CHECKS, timeout=REQUEST_TIMEOUT
        )


@pytest.mark.slow
def test_the_live_document_is_the_demo_services_document(
    demo: Gateway, demo_schema: BaseSchema
) -> None:
    assert httpx.get(f"{demo.url}/openapi.json", timeout=5).json() == OFFLINE
    live = [result.ok() for result in demo_schema.get_all_operations()]
    assert sorted(op.definition.raw["operationId"] for op in live) == OPERATION_IDS


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("operation_id", OPERATION_IDS)
def test_the_gateway_answers_as_its_document_says(
    demo_schema: BaseSchema, operation_id: str, mode: GenerationMode
) -> None:
    operation = demo_schema.find_operation_by_id(operation_id)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each step is a real call
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        call_and_check(case)

    if mode is GenerationMode.POSITIVE:
        for kwargs in reversed(EXAMPLES.get(operation_id, [])):  # run in the order listed
            media = {"media_type": JSON} if "body" in kwargs else {}
            run = example(case=operation.Case(**media, **kwargs))(run)
    run()


def test_every_example_names_an_operation() -> None:
    assert set(EXAMPLES) <= set(OPERATION_IDS)


@pytest.mark.parametrize(
    ("name", "args", "sent"),
    [
        ("calc.slow", [1e9], [0.05]),
        ("calc.slow", [], [0.05]),  # its default, one second, is over the bound
        ("calc.slow", None, {"seconds": 0.05}),
        ("calc.slow", {"seconds": -1}, {"seconds": -1}),
        ("calc.count", {"n": 10**30, "delay": 7}, {"n": 25, "delay": 0}),
        ("calc.count", [], []),  # n has no default: the gateway refuses it
        ("inventory.watch", ["apple", 3, 99.0, "extra"], ["apple", 3, 0.01, "extra"]),
        ("inventory.watch", ["apple"], ["apple", 3, 0.01]),
        ("inventory.watch", {"sku": "apple"}, {"sku": "apple", "interval": 0.01}),
        ("inventory.watch", [], []),
        ("calc.add", [10**30, 1], [10**30, 1]),
        ("calc.slow", "not arguments", "not arguments"),
    ],
)
def test_bounds_cap_what_a_call_sends(name: str, args: Any, sent: Any) -> None:
    assert bounded(name, args) == sent
