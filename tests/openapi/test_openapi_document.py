"""openapi.build_document: what each operation says, checked against what the gateway does
(gateway.args, gateway.payloads, DESIGN.md's error table); every document built is valid."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_support import (
    FALLBACK_CONFIG,
    TYPED_CONFIG,
    VERSION,
    fallback_document,
    operations,
    typed_description,
    typed_document,
    valid,
)

from gateway.args import args_from_body
from gateway.config import parse_config
from gateway.payloads import ndjson_error, ndjson_line, sse_end, sse_error, sse_event
from gateway.problems import Problem
from gateway.registry import exposed_description
from openapi import OPENAPI_VERSION, build_document
from rpccore._describe import from_inspect

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
STR = {"type": "string"}
TOKEN_AUTH = "auth: {mode: token, secret: env:ZEROGATE_SECRET}\n"


@pytest.fixture(scope="module")
def typed() -> dict[str, Any]:
    return dict(valid(typed_document()))


@pytest.fixture(scope="module")
def legacy() -> dict[str, Any]:
    return dict(valid(fallback_document()))


def op(document: dict[str, Any], path: str, verb: str = "post") -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][verb]
    return found


def body_schema(operation: dict[str, Any]) -> Any:
    return operation["requestBody"]["content"]["application/json"]["schema"]


def forms(operation: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(object form, array form) of a request body."""
    named, positional = body_schema(operation)["oneOf"]
    assert named["type"] == "object"
    assert positional["type"] == "array"
    return named, positional


def describe_dict(config_text: str, methods: dict[str, Any], name: str = "svc") -> Any:
    config = parse_config(config_text)
    answer = {"name": name, "methods": methods}
    return config, exposed_description(config.services[name], from_inspect(answer))


SVC_CONFIG = "services:\n  svc:\n    endpoints: [tcp://127.0.0.1:1]\n"


# -- the whole document ---------------------------------------------------------------------


def test_document_header(typed: dict[str, Any]) -> None:
    assert typed["openapi"] == OPENAPI_VERSION == "3.1.0"
    assert typed["info"]["title"] == "zerogate"
    assert typed["info"]["version"] == VERSION
    assert "problem" in typed["info"]["description"]


def test_one_post_per_exposed_method_and_get_for_safe_ones(typed: dict[str, Any]) -> None:
    rpc = {(p, v) for p, v, _ in operations(typed) if p.startswith("/rpc/")}
    posts = {p.rsplit("/", 1)[1] for p, v in rpc if v == "post"}
    gets = {p.rsplit("/", 1)[1] for p, v in rpc if v == "get"}
    assert posts == {
        "checksum",
        "count",
        "get_order",
        "get_status",
        "nothing",
        "pair",
        "pick",
        "place",
        "tally",
        "untyped",
        "watch",
    }  # not secret (excluded by the config), not _private ones
    assert gets == {"get_order", "get_status", "pick"}  # safe: ["get_*", "pick"]


def test_operation_ids(typed: dict[str, Any]) -> None:
    ids = [o["operationId"] for _, _, o in operations(typed)]
    assert len(ids) == len(set(ids))
    assert op(typed, "/rpc/shop/place")["operationId"] == "shop.place"
    assert op(typed, "/rpc/shop/pick", "get")["operationId"] == "shop.pick.get"
    assert op(typed, "/jsonrpc")["operationId"] == "jsonrpc"
    assert op(typed, "/orders/{order_id}", "get")["operationId"] == (
        "shop.get_order.get_orders_order_id"
    )


def test_the_same_inputs_give_the_same_document() -> None:
    first, second = typed_document(), typed_document()
    assert json.dumps(first) == json.dumps(second)
    first["paths"].clear()  # the caller owns its copy
    assert typed_document()["paths"]


def test_services_and_methods_are_sorted(legacy: dict[str, Any]) -> None:
    assert [t["name"] for t in legacy["tags"]] == ["ledger", "legacy", "JSON-RPC 2.0"]
    rpc = [p for p in legacy["paths"] if p.startswith("/rpc/")]
    assert rpc == sorted(rpc)


def test_tags_carry_the_service_docstring(typed: dict[str, Any]) -> None:
    (shop,) = [t for t in typed["tags"] if t["name"] == "shop"]
    assert shop["description"].startswith("A typed shop for the OpenAPI tests.")
    assert all(o["tags"] == ["shop"] for p, _, o in operations(typed) if p != "/jsonrpc")


def test_a_service_not_described_has_a_tag_and_no_operations(legacy: dict[str, Any]) -> None:
    (ledger,) = [t for t in legacy["tags"] if t["name"] == "ledger"]
    assert ledger["description"].startswith("Unavailable")
    assert not [o for _, _, o in operations(legacy) if o["tags"] == ["ledger"]]
    assert "/ledger" not in legacy["paths"]  # its route too


def test_a_service_missing_from_the_mapping_counts_as_not_described() -> None:
    config = parse_config(FALLBACK_CONFIG)
    document = valid(build_document({}, config, version=VERSION))
    assert list(document["paths"]) == ["/jsonrpc"]
    assert [t["name"] for t in document["tags"]] == ["ledger", "legacy", "JSON-RPC 2.0"]


# -- summaries ------------------------------------------------------------------------------


def test_summary_is_the_first_docstring_line_and_description_the_rest(
    typed: dict[str, Any],
) -> None:
    get_order = op(typed, "/rpc/shop/get_order")
    assert get_order["summary"] == "Fetch one order."
    assert get_order["description"].startswith("Raises KeyError when there is no such order.")
    assert op(typed, "/rpc/shop/place")["summary"] == "Place an order."


def test_a_method_without_docstring_is_summarised_by_its_name() -> None:
    config, description = describe_dict(SVC_CONFIG, {"go": {"args": [], "doc": None}})
    document = valid(build_document({"svc": description}, config, version=VERSION))
    assert op(document, "/rpc/svc/go")["summary"] == "svc.go"


def test_legacy_docstrings_are_dedented(legacy: dict[str, Any]) -> None:
    add = op(legacy, "/rpc/legacy/add")
    assert add["summary"] == "Add two numbers."
    assert add["description"].startswith("Any numbers.\n\n")


# -- request bodies -------------------------------------------------------------------------


def test_body_object_and_array_forms(typed: dict[str, Any]) -> None:
    named, positional = forms(op(typed, "/rpc/shop/place"))
    assert list(named["properties"]) == ["items", "color", "address"]
    assert named["required"] == ["items"]
    assert named["additionalProperties"] is False  # unknown names are a 400
    assert named["properties"]["items"] == {"type": "array", "items": {"type": "string"}}
    # Color.GREEN has no msgpack form: the server publishes its repr, marked default_repr,
    # which no client could send as a Color, so it is told rather than given as the
    # default; and since the gateway cannot fill that gap, giving a later argument needs it.
    assert named["properties"]["color"] == {
        "$ref": "#/components/schemas/Color",
        "description": "The method's default, <Color.GREEN: 'green'>, is a value the gateway "
        "cannot send: leave this argument out only when no later one is given.",
    }
    assert named["dependentRequired"] == {"address": ["color"]}
    assert named["properties"]["address"]["default"] is None
    assert [item["title"] for item in positional["prefixItems"]] == ["items", "color", "address"]
    assert positional["minItems"] == 1
    assert positional["maxItems"] == 3
    assert op(typed, "/rpc/shop/place")["requestBody"]["required"] is True


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ([["a"]], True),
        ([["a"], "red", None], True),
        ([], False),
        ([["a"], "red", None, 4], False),
        ({"items": ["a"]}, True),
        ({"items": ["a"], "colour": "red"}, False),
        ({"color": "red"}, False),
        ({"items": ["a"], "address": None}, False),  # color's default cannot fill the gap
        ({"items": ["a"], "color": "red", "address": None}, True),
    ],
)
def test_body_forms_agree_with_the_argument_mapping(body: Any, accepted: bool) -> None:
    document = typed_document()
    # Beside the components, so "#/components/schemas/..." resolves as in the document.
    schema = {**body_schema(op(document, "/rpc/shop/place")), "components": document["components"]}
    entry = typed_description(parse_config(TYPED_CONFIG)).methods["place"].entry
    try:
        args_from_body(entry, body, service="shop", method="place")
        mapped = True
    except Problem:
        mapped = False
    assert Draft202012Validator(schema).is_valid(body) is accepted
    assert mapped is accepted


def test_a_body_is_optional_when_every_argument_has_a_default(typed: dict[str, Any]) -> None:
    nothing = op(typed, "/rpc/shop/nothing")
    assert nothing["requestBody"]["required"] is False
    named, positional = forms(nothing)
    assert named["properties"] == {}
    assert positional == {
        "type": "array",
        "title": "positional arguments",
        "items": {},  # says nothing, for SDK generators that refuse an array without items
        "maxItems": 0,
    }


def test_varargs(typed: dict[str, Any]) -> None:
    named, positional = forms(op(typed, "/rpc/shop/tally"))
    assert named["properties"]["extra"]["type"] == "array"  # *extra, by name
    assert named["required"] == ["counts"]
    assert "maxItems" not in positional  # any number of extra positional arguments
    assert positional["minItems"] == 1


def test_unannotated_arguments_are_any_value(typed: dict[str, Any]) -> None:
    named, _ = forms(op(typed, "/rpc/shop/untyped"))
    assert named["properties"]["a"] == {
        "description": "Any value: the backend publishes no type for it."
    }
    assert named["properties"]["b"]["default"] == 2


def test_bodies_may_be_json_or_msgpack(typed: dict[str, Any]) -> None:
    content = op(typed, "/rpc/shop/place")["requestBody"]["content"]
    assert set(content) == {"application/json", "application/msgpack"}


def test_untyped_backend_gets_an_unchecked_array(legacy: dict[str, Any]) -> None:
    add = op(legacy, "/rpc/legacy/add")
    schema = body_schema(add)
    assert schema["type"] == "array"
    assert "prefixItems" not in schema
    assert "maxItems" not in schema
    assert add["requestBody"]["required"] is False
    assert "zerorpc 0.6.3" in add["description"]


# -- GET of safe methods and parameters -----------------------------------------------------


def test_get_takes_the_arguments_as_query_parameters(typed: dict[str, Any]) -> None:
    params = op(typed, "/rpc/shop/pick", "get")["parameters"]
    mode, limit = params[0], params[1]
    assert (mode["name"], mode["in"], mode["required"]) == ("mode", "query", True)
    assert mode["schema"] == {"enum": ["fast", "slow"]}
    assert (limit["name"], limit["required"]) == ("limit", False)
    assert limit["schema"] == {"type": ["integer", "null"], "default": None}
    assert "parses as JSON" in mode["description"]
    assert "requestBody" not in op(typed, "/rpc/shop/pick", "get")


def test_structured_query_values_are_described_as_json() -> None:
    # ?counts={"a":1} works; a serialisation style would send counts[a]=1, which it is not.
    config, description = describe_dict(
        SVC_CONFIG + "    safe: ['*']\n",
        {
            "get": {
                "args": [{"name": "counts", "schema": {"type": "object"}}, {"name": "n"}],
                "doc": None,
            }
        },
    )
    document = valid(build_document({"svc": description}, config, version=VERSION))
    counts, n = op(document, "/rpc/svc/get", "get")["parameters"][:2]
    assert counts["content"] == {"application/json": {"schema": {"type": "object"}}}
    assert "schema" not in counts
    assert "content" in n  # no type: any JSON value


def test_every_call_takes_the_timeout_and_traceparent_headers(typed: dict[str, Any]) -> None:
    expected = [
        {"$ref": "#/components/parameters/X-Timeout-Ms"},
        {"$ref": "#/components/parameters/traceparent"},
    ]
    for path, verb, operation in operations(typed):
        if path.startswith("/rpc/") and verb == "post":
            assert operation["parameters"] == expected
        else:
            assert operation["parameters"][-2:] == expected
    assert typed["components"]["parameters"]["X-Timeout-Ms"]["in"] == "header"


def test_untyped_safe_method_get_has_no_query_parameters(legacy: dict[str, Any]) -> None:
    get = op(legacy, "/rpc/legacy/get_item", "get")
    assert [p.get("$ref") for p in get["parameters"]] == [
        "#/components/parameters/X-Timeout-Ms",
        "#/components/parameters/traceparent",
    ]
    assert "without arguments" in get["description"]


# -- responses ------------------------------------------------------------------------------


def test_result_schemas(typed: dict[str, Any]) -> None:
    ok = op(typed, "/rpc/shop/get_order")["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Order"}
    assert set(ok["content"]) == {"application/json", "application/msgpack"}
    assert set(ok["headers"]) == {"X-Trace-Id", "traceparent"}
    nothing = op(typed, "/rpc/shop/nothing")["responses"]["200"]["content"]
    assert nothing["application/json"]["schema"] == {"type": "null"}
    untyped = op(typed, "/rpc/shop/untyped")["responses"]["200"]["content"]
    assert "publishes no type" in untyped["application/json"]["schema"]["description"]


def test_bytes_are_described_as_the_gateway_sends_them(typed: dict[str, Any]) -> None:
    checksum = op(typed, "/rpc/shop/checksum")
    content = checksum["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Bytes"}
    text, base64 = typed["components"]["schemas"]["Bytes"]["oneOf"]
    assert text == {"type": "string"}
    assert base64["required"] == ["$base64"]
    assert content["application/msgpack"]["schema"]["contentMediaType"] == (
        "application/octet-stream"
    )
    named, _ = forms(checksum)
    assert named["properties"]["data"]["type"] == "string"
    assert "reaches the method as text" in named["properties"]["data"]["description"]
    # b"\xff" has no JSON form a request could send back: no default is shown.
    assert "default" not in named["properties"]["seed"]


def test_a_default_that_cannot_be_sent_is_needed_with_every_later_argument() -> None:
    # def mix(self, base, tint=Color.GREEN, shade=Shade.DARK, strength=0.5, *rest)
    unsendable = {"default_repr": True, "kind": "named"}
    methods: dict[str, Any] = {
        "mix": {
            "args": [
                {"name": "self", "kind": "self"},
                {"name": "base", "kind": "named"},
                # A str schema admits the repr's text: only the marker tells it is no value.
                {"name": "tint", "default": "<Color.GREEN: 'green'>", "schema": STR, **unsendable},
                {"name": "shade", "default": "<Shade.DARK: 2>", **unsendable},
                {"name": "strength", "default": 0.5, "kind": "named"},
            ],
            "varargs": "rest",
            "doc": None,
            "stream": False,
        }
    }
    config, description = describe_dict(SVC_CONFIG + "    safe: [mix]\n", methods)
    document = valid(build_document({"svc": description}, config, version=VERSION))
    post = document["paths"]["/rpc/svc/mix"]["post"]
    named, positional = forms(post)
    assert named["required"] == ["base"]
    assert named["dependentRequired"] == {
        "shade": ["tint"],
        "strength": ["tint", "shade"],
        "rest": ["tint", "shade"],
    }
    assert "default" not in named["properties"]["tint"]
    assert "<Color.GREEN: 'green'>" in named["properties"]["tint"]["description"]
    assert positional["minItems"] == 1  # an array never leaves a gap to fill
    for body, accepted in [
        ({"base": 1}, True),
        ({"base": 1, "tint": "red"}, True),
        ({"base": 1, "tint": "red", "strength": 1}, False),
        ({"base": 1, "tint": "red", "shade": 3, "rest": [1]}, True),
    ]:
        schema = {**named, "components": document["components"]}
        assert Draft202012Validator(schema).is_valid(body) is accepted
        try:
            args_from_body(methods["mix"], body, service="svc", method="mix")
            mapped = True
        except Problem:
            mapped = False
        assert mapped is accepted
    # A query cannot say "needed with": the parameter's description does.
    get = document["paths"]["/rpc/svc/mix"]["get"]
    (tint,) = [p for p in get["parameters"] if p.get("name") == "tint"]
    assert tint["required"] is False
    assert tint["schema"]["type"] == "string"
    assert "default" not in tint["schema"]
    assert "cannot send" in tint["schema"]["description"]


def test_a_path_parameter_after_an_unsendable_default_makes_it_required() -> None:
    config = TYPED_CONFIG + '  - {method: POST, path: "/shipments/{address}", call: shop.place}\n'
    document = dict(valid(typed_document(config)))
    operation = op(document, "/shipments/{address}")
    named = body_schema(operation)
    assert named["required"] == ["items", "color"]
    assert "dependentRequired" not in named
    assert operation["requestBody"]["required"] is True


def test_streams_answer_ndjson_and_sse_with_the_item_schema(typed: dict[str, Any]) -> None:
    ok = op(typed, "/rpc/shop/watch")["responses"]["200"]
    assert set(ok["content"]) == {"application/x-ndjson", "text/event-stream"}
    line = ok["content"]["application/x-ndjson"]["schema"]["oneOf"]
    assert line[0]["properties"]["result"] == {"$ref": "#/components/schemas/Order"}
    assert line[1] == {"$ref": "#/components/schemas/StreamError"}
    assert typed["components"]["schemas"]["StreamError"]["properties"]["error"] == PROBLEM_REF
    # One event, as a parser reads it: the item is the JSON in its data.
    item, end, error = ok["content"]["text/event-stream"]["schema"]["oneOf"]
    assert item["properties"]["data"] == {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"$ref": "#/components/schemas/Order"},
    }
    assert (end, error) == (
        {"$ref": "#/components/schemas/SseEnd"},
        {"$ref": "#/components/schemas/SseError"},
    )
    sse_error = typed["components"]["schemas"]["SseError"]
    assert sse_error["properties"]["data"]["contentSchema"] == PROBLEM_REF


def test_an_iterator_publishes_its_item_schema(typed: dict[str, Any]) -> None:
    content = op(typed, "/rpc/shop/count")["responses"]["200"]["content"]
    line = content["application/x-ndjson"]["schema"]["oneOf"][0]
    assert line["properties"]["result"] == {"type": "integer"}
    item = content["text/event-stream"]["schema"]["oneOf"][0]
    assert item["properties"]["data"]["contentSchema"] == {"type": "integer"}


def test_a_stream_whose_items_are_not_published_is_any_value() -> None:
    methods: dict[str, Any] = {"feed": {"args": [], "doc": None, "stream": True}}
    config, description = describe_dict(SVC_CONFIG, methods)
    document = valid(build_document({"svc": description}, config, version=VERSION))
    content = document["paths"]["/rpc/svc/feed"]["post"]["responses"]["200"]["content"]
    result = content["application/x-ndjson"]["schema"]["oneOf"][0]["properties"]["result"]
    assert "publishes no type" in result["description"]
    data = content["text/event-stream"]["schema"]["oneOf"][0]["properties"]["data"]
    assert "publishes no type" in data["contentSchema"]["description"]


def sse_events(stream: bytes) -> list[dict[str, str]]:
    """The events of an SSE stream as a parser reads them (the WHATWG rules we need)."""
    events = []
    for block in stream.decode().split("\n\n")[:-1]:
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        event = {"data": "\n".join(fields["data"]), "event": fields.get("event", ["message"])[0]}
        events.append(event)
    return events


def test_what_the_gateway_streams_matches_the_stream_schemas(typed: dict[str, Any]) -> None:
    content = "#/paths/~1rpc~1shop~1watch/post/responses/200/content"

    def valid_at(pointer: str, value: Any) -> bool:
        # The whole document is the root, so the schema's own $ref pointers resolve.
        return bool(Draft202012Validator({**typed, "$ref": pointer}).is_valid(value))

    order = {"id": 1, "items": ["a"], "color": "red", "note": None, "address": None}
    problem = Problem(500, "KeyError: 'x'", code="unknown").document("0" * 32)
    ndjson = ndjson_line(order) + ndjson_line(order) + ndjson_error(problem)
    for line in ndjson.decode().splitlines():
        assert valid_at(f"{content}/application~1x-ndjson/schema", json.loads(line))

    events = sse_events(sse_event(order) + sse_end() + sse_event(order) + sse_error(problem))
    assert [e["event"] for e in events] == ["message", "end", "message", "error"]
    for event in events:
        assert valid_at(f"{content}/text~1event-stream/schema", event)
    # contentSchema only annotates, for a validator: the data, read as JSON, is checked here.
    item = f"{content}/text~1event-stream/schema/oneOf/0/properties/data/contentSchema"
    assert valid_at(item, json.loads(events[0]["data"]))
    assert not valid_at(item, {"id": "not an order"})
    assert valid_at("#/components/schemas/Problem", json.loads(events[-1]["data"]))


def test_untyped_backend_may_answer_a_result_or_a_stream(legacy: dict[str, Any]) -> None:
    ok = op(legacy, "/rpc/legacy/count")["responses"]["200"]
    assert list(ok["content"]) == [
        "application/json",
        "application/msgpack",
        "application/x-ndjson",
        "text/event-stream",
    ]
    assert "does not say whether" in ok["description"]


def test_error_responses_are_problems(typed: dict[str, Any]) -> None:
    responses = typed["components"]["responses"]
    for response in responses.values():
        assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}
        assert {"X-Trace-Id", "traceparent"} <= set(response["headers"])
    assert responses["ServiceUnavailable"]["headers"]["Retry-After"] == {
        "$ref": "#/components/headers/Retry-After"
    }
    problem = typed["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "code",
        "trace_id",
        "rpc",
        "remote",
        "errors",
    }
    assert problem["properties"]["errors"]["items"]["required"] == ["loc", "msg", "type"]


def test_error_statuses_of_a_call(typed: dict[str, Any]) -> None:
    post = op(typed, "/rpc/shop/place")["responses"]
    get = op(typed, "/rpc/shop/pick", "get")["responses"]
    standard = {"400", "404", "500", "502", "503", "504"}
    mapped = {"403", "409"}  # PermissionError and LookupError in the config's errors
    assert set(post) == {"200", "413", "415"} | standard | mapped
    assert set(get) == {"200"} | standard | mapped  # no body: no 413, 415
    for status, response in post.items():
        if status != "200":
            assert response["$ref"].startswith("#/components/responses/")


def test_mapped_exceptions_are_named(typed: dict[str, Any]) -> None:
    responses = op(typed, "/rpc/shop/place")["responses"]
    assert "KeyError" in responses["404"]["description"]
    assert responses["404"]["$ref"] == "#/components/responses/NotFound"
    assert responses["409"]["$ref"] == "#/components/responses/MappedError"
    assert "LookupError" in responses["409"]["description"]
    assert "description" not in responses["502"]


# -- auth -----------------------------------------------------------------------------------


def test_without_auth_there_is_no_security(typed: dict[str, Any]) -> None:
    assert "security" not in typed
    assert "securitySchemes" not in typed["components"]
    assert not {"Unauthorized", "Forbidden", "TooManyRequests"} & set(
        typed["components"]["responses"]
    )
    assert not [o for _, _, o in operations(typed) if {"401", "429"} & set(o["responses"])]


def test_with_auth_every_call_needs_a_token(legacy: dict[str, Any]) -> None:
    assert legacy["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    schemes = legacy["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    assert (schemes["apiKeyAuth"]["in"], schemes["apiKeyAuth"]["name"]) == ("header", "X-API-Key")
    responses = op(legacy, "/rpc/legacy/count")["responses"]
    assert {"401", "403", "429"} <= set(responses)
    unauthorized = legacy["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert "RateLimit-Remaining" in legacy["components"]["responses"]["TooManyRequests"]["headers"]
    jsonrpc = op(legacy, "/jsonrpc")["responses"]
    assert {"401", "429"} <= set(jsonrpc)
    assert "403" not in jsonrpc  # a missing scope is a JSON-RPC error (-32003)


def test_a_public_route_needs_no_token(legacy: dict[str, Any]) -> None:
    public = op(legacy, "/legacy/add")
    assert public["security"] == []
    assert not {"401", "403", "429"} & set(public["responses"])
    assert "security" not in op(legacy, "/legacy/{name}", "get")


def test_typed_document_with_auth_is_valid() -> None:
    document = valid(typed_document(TYPED_CONFIG + TOKEN_AUTH))
    assert {"401", "403", "429"} <= set(op(document, "/rpc/shop/place")["responses"])
    # 403 is both the scope check and PermissionError, mapped by the config.
    forbidden = op(document, "/rpc/shop/place")["responses"]["403"]
    assert forbidden["$ref"] == "#/components/responses/Forbidden"
    assert "PermissionError" in forbidden["description"]


# -- REST routes ----------------------------------------------------------------------------


def test_get_route_declares_path_and_query_parameters(typed: dict[str, Any]) -> None:
    route = op(typed, "/orders/{order_id}", "get")
    order_id = route["parameters"][0]
    assert (order_id["name"], order_id["in"], order_id["required"]) == ("order_id", "path", True)
    assert order_id["schema"] == {"type": "integer"}
    assert "requestBody" not in route
    assert route["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Order"
    }


def test_post_route_without_placeholders_takes_both_body_forms(typed: dict[str, Any]) -> None:
    named, positional = forms(op(typed, "/orders"))
    assert named["required"] == ["items"]
    assert positional["maxItems"] == 3


def test_route_with_placeholders_takes_the_other_arguments_by_name(typed: dict[str, Any]) -> None:
    route = op(typed, "/tallies/{counts}", "put")
    counts = route["parameters"][0]
    assert counts["in"] == "path"
    assert counts["content"]["application/json"]["schema"]["type"] == "object"
    schema = body_schema(route)
    assert schema["type"] == "object"  # with path parameters, the body must be an object
    assert list(schema["properties"]) == ["extra"]
    assert route["requestBody"]["required"] is False


def test_route_summary_and_description(typed: dict[str, Any]) -> None:
    route = op(typed, "/status", "get")
    assert route["summary"] == "Whether the shop is open."
    assert "GET /status calls shop.get_status." in route["description"]


def test_untyped_route_with_placeholders_says_it_cannot_work(legacy: dict[str, Any]) -> None:
    route = op(legacy, "/legacy/{name}", "get")
    assert "every call is refused" in route["description"]
    assert route["parameters"][0]["name"] == "name"


ROUTES = """\
services:
  svc:
    endpoints: [tcp://127.0.0.1:1]
routes:
  - {method: GET,  path: "/items/{sku}",   call: svc.get}
  - {method: POST, path: "/items/{code}",  call: svc.put}
  - {method: GET,  path: "/healthz",       call: svc.get}
  - {method: POST, path: "/rpc/{a}/{b}",   call: svc.put}
  - {method: POST, path: "/rpc/svc/get",   call: svc.put}
  - {method: POST, path: "/jsonrpc",       call: svc.put}
  - {method: GET,  path: "/jsonrpc",       call: svc.get}
  - {method: GET,  path: "/hidden",        call: svc.hidden}
  - {method: DELETE, path: "/items/{sku}/{what}", call: svc.get}
"""
ROUTED = {
    "get": {"args": [{"name": "sku", "schema": {"type": "string"}}], "doc": "Get."},
    "put": {"args": [{"name": "code"}, {"name": "qty", "default": 1}], "doc": "Put."},
}


def routed_document() -> Any:
    config, description = describe_dict(ROUTES, ROUTED)
    return valid(build_document({"svc": description}, config, version=VERSION))


def test_routes_the_app_answers_first_are_left_out() -> None:
    paths = routed_document()["paths"]
    assert "/healthz" not in paths  # GET /healthz is the app's
    assert "/rpc/{a}/{b}" not in paths  # every /rpc/x/y goes to /rpc/{service}/{method}
    assert list(paths["/rpc/svc/get"]) == ["post"]  # the canonical operation only
    assert list(paths["/jsonrpc"]) == ["post", "get"]  # POST is JSON-RPC; GET is the route
    assert paths["/jsonrpc"]["post"]["operationId"] == "jsonrpc"
    assert "/hidden" not in paths  # not an exposed method: the gateway answers 404


def test_equal_templates_share_one_path() -> None:
    paths = routed_document()["paths"]
    assert "/items/{code}" not in paths
    post = paths["/items/{sku}"]["post"]
    (code,) = [p for p in post["parameters"] if p.get("in") == "path"]
    assert code["name"] == "sku"  # the document's spelling of the same URL
    assert code["description"].startswith("The argument code.")
    assert list(body_schema(post)["properties"]) == ["qty"]


def test_a_placeholder_that_is_no_argument_is_declared_and_explained() -> None:
    delete = routed_document()["paths"]["/items/{sku}/{what}"]["delete"]
    what = [p for p in delete["parameters"] if p.get("name") == "what"]
    assert "Not an argument of svc.get" in what[0]["description"]


# -- odd method names ------------------------------------------------------------------------


def test_odd_method_names_keep_ids_unique_and_paths_valid() -> None:
    config, description = describe_dict(
        SVC_CONFIG + "    safe: ['*']\n",
        {
            "a": {"args": [], "doc": None},
            "a.get": {"args": [], "doc": None},
            "x/y": {"args": [], "doc": None},
            "sp ace": {"args": [], "doc": None},
        },
    )
    document = valid(build_document({"svc": description}, config, version=VERSION))
    ids = {o["operationId"] for _, _, o in operations(document)}
    assert {"svc.a", "svc.a.get", "svc.a.get_2", "svc.a.get.get"} <= ids
    assert "/rpc/svc/sp%20ace" in document["paths"]
    # /rpc/svc/x/y would not reach the method; JSON-RPC does.
    assert not [p for p in document["paths"] if p.startswith("/rpc/svc/x")]
    assert "svc.x/y" in op(document, "/jsonrpc")["description"]


# -- JSON-RPC -------------------------------------------------------------------------------


def test_jsonrpc_operation(typed: dict[str, Any]) -> None:
    jsonrpc = op(typed, "/jsonrpc")
    single, batch = body_schema(jsonrpc)["oneOf"]
    assert single == {"$ref": "#/components/schemas/JsonRpcRequest"}
    assert batch["items"] == single
    assert set(jsonrpc["responses"]) == {"200", "204", "400", "413", "415"}
    assert "shop.place" in jsonrpc["description"]
    error = typed["components"]["schemas"]["JsonRpcResponse"]["properties"]["error"]
    assert error["properties"]["data"] == PROBLEM_REF
    assert -32002 in error["properties"]["code"]["enum"]
