"""openapi._schemas: published JSON Schemas made fit to embed (cleaned, references rebased,
bytes per context, titled types as named components), and documents that embed them valid."""

from __future__ import annotations

import math
from typing import Any

import pytest
from openapi_support import VERSION, valid

from gateway.config import parse_config
from gateway.registry import exposed_description
from openapi import build_document
from openapi._schemas import (
    BYTES_JSON,
    MISSING,
    Components,
    Context,
    admits,
    clean,
    embed,
    json_data,
)
from rpccore._describe import from_inspect

CONFIG = "services:\n  svc:\n    endpoints: [tcp://127.0.0.1:1]\n"


def document_with(arg_schema: Any, returns: Any = None) -> dict[str, Any]:
    """A valid document of one method ``f(x)`` whose schemas are the given ones."""
    entry: dict[str, Any] = {"args": [{"name": "x", "schema": arg_schema}], "doc": "F."}
    if returns is not None:
        entry["returns"] = returns
    config = parse_config(CONFIG)
    answer = from_inspect({"name": "svc", "methods": {"f": entry}})
    description = exposed_description(config.services["svc"], answer)
    return dict(valid(build_document({"svc": description}, config, version=VERSION)))


def named_arg(document: dict[str, Any]) -> Any:
    body = document["paths"]["/rpc/svc/f"]["post"]["requestBody"]["content"]["application/json"]
    return body["schema"]["oneOf"][0]["properties"]["x"]


def result(document: dict[str, Any]) -> Any:
    ok = document["paths"]["/rpc/svc/f"]["post"]["responses"]["200"]
    return ok["content"]["application/json"]["schema"]


# -- JSON values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (10**30, 10**30),
        (1.5, 1.5),
        (math.nan, MISSING),
        (math.inf, MISSING),
        (b"text", "text"),
        (b"\xff", {"$base64": "/w=="}),
        ((1, [2, b"x"]), [1, [2, "x"]]),
        ({1: "a", b"k": 2, None: 3, (1, 2): 4}, {"1": "a", "k": 2, "null": 3, "[1, 2]": 4}),
        ([1, math.nan], MISSING),
        ({"a": object()}, MISSING),
    ],
)
def test_json_data(value: Any, expected: Any) -> None:
    assert json_data(value) == expected


def test_json_data_without_base64() -> None:
    assert json_data([b"ok", b"\xff"], base64=False) is MISSING
    assert json_data([b"ok"], base64=False) == ["ok"]


# -- cleaning -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        (True, {}),
        (False, {"not": {}}),
        ("integer", {}),
        (None, {}),
        ({"type": "integer", 1: "odd key"}, {"type": "integer"}),
        ({"enum": [1, math.nan]}, {}),  # an enum JSON cannot write: less constrained, not wrong
        ({"const": b"\xff"}, {"const": {"$base64": "/w=="}}),
        ({"$schema": "x", "$id": "y", "type": "null"}, {"type": "null"}),
        (
            {"properties": {"a": {"$id": "inner", "type": "null"}}},
            {"properties": {"a": {"type": "null"}}},
        ),
        (
            {"type": "object", "additionalProperties": False, "properties": {"a": True}},
            {"type": "object", "additionalProperties": False, "properties": {"a": True}},
        ),
        (
            {"type": "array", "items": [{"type": "integer"}], "additionalItems": False},
            {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
        ),
        ({"type": "array", "items": []}, {"type": "array", "prefixItems": [{}]}),
        ({"anyOf": "nonsense", "type": "string"}, {"type": "string"}),
        ({"additionalItems": {"type": "string"}}, {}),
    ],
)
def test_clean(published: Any, expected: Any) -> None:
    assert clean(published) == expected


# -- bytes per context ----------------------------------------------------------------------

BYTES = {"type": "string", "contentEncoding": "base64"}


def test_bytes_in_each_context() -> None:
    components = Components()
    as_json = embed(BYTES, Context.RESULT_JSON, components, "h")
    assert as_json == {"$ref": "#/components/schemas/Bytes"}
    assert components.schemas["Bytes"] == BYTES_JSON
    assert embed(BYTES, Context.RESULT_MSGPACK, components, "h")["contentMediaType"] == (
        "application/octet-stream"
    )
    request = embed(BYTES, Context.REQUEST, components, "h")
    assert request["type"] == "string"
    assert "contentEncoding" not in request  # a JSON client must not base64-encode
    # A published default is base64 text, which is none of these shapes: left out.
    nested = embed(
        {"type": "array", "items": {**BYTES, "default": "eA==", "deprecated": True}},
        Context.RESULT_JSON,
        components,
        "h",
    )
    assert nested == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Bytes", "deprecated": True},
    }
    assert list(components.schemas) == ["Bytes"]


@pytest.mark.parametrize("context", list(Context))
def test_an_array_of_any_items_says_so(context: Context) -> None:
    # The same in JSON Schema, but SDK generators refuse an array without items.
    published = {"type": "object", "additionalProperties": {"type": ["array", "null"]}}
    assert embed(published, context, Components(), "h") == {
        "type": "object",
        "additionalProperties": {"type": ["array", "null"], "items": {}},
    }
    fixed = {"type": "array", "prefixItems": [{"type": "integer"}], "maxItems": 1}
    assert embed(fixed, context, Components(), "h") == fixed


# -- named models ---------------------------------------------------------------------------

POINT = {
    "type": "object",
    "title": "Point",
    "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
    "required": ["x", "y"],
    "additionalProperties": False,
}


def test_titled_schemas_become_shared_components() -> None:
    components = Components()
    first = embed(POINT, Context.REQUEST, components, "a")
    second = embed({"type": "array", "items": POINT}, Context.RESULT_JSON, components, "b")
    assert first == {"$ref": "#/components/schemas/Point"}
    assert second == {"type": "array", "items": {"$ref": "#/components/schemas/Point"}}
    assert components.schemas == {"Point": POINT}


def test_a_different_schema_with_the_same_title_gets_another_name() -> None:
    components = Components()
    other = {**POINT, "required": ["x"]}
    assert embed(POINT, Context.REQUEST, components, "a")["$ref"].endswith("/Point")
    assert embed(other, Context.REQUEST, components, "a")["$ref"].endswith("/Point_2")


def test_annotations_stay_beside_the_reference() -> None:
    components = Components()
    schema = {**POINT, "default": {"x": 0, "y": 0}, "description": "Where."}
    assert embed(schema, Context.REQUEST, components, "a") == {
        "$ref": "#/components/schemas/Point",
        "default": {"x": 0, "y": 0},
        "description": "Where.",
    }
    assert components.schemas["Point"] == POINT


def test_a_user_type_named_like_ours_does_not_replace_it() -> None:
    document = document_with({**POINT, "title": "Problem"})
    assert named_arg(document) == {"$ref": "#/components/schemas/Problem_2"}
    assert "status" in document["components"]["schemas"]["Problem"]["properties"]


def test_odd_titles_make_valid_component_names() -> None:
    document = document_with({**POINT, "title": "List[Point] <v2>"})
    assert named_arg(document) == {"$ref": "#/components/schemas/List_Point_v2"}


# -- references -----------------------------------------------------------------------------

WITH_DEFS = {
    "type": "object",
    "properties": {
        "owner": {"$ref": "#/$defs/Person"},
        "friends": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
        "first": {"$ref": "#/properties/owner"},
    },
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "blob": BYTES},
        }
    },
}


def test_a_schema_with_local_references_moves_whole_to_components() -> None:
    document = document_with(WITH_DEFS, returns=WITH_DEFS)
    components = document["components"]["schemas"]
    arg, res = named_arg(document), result(document)
    assert arg == {"$ref": "#/components/schemas/svc.f.x"}
    assert res == {"$ref": "#/components/schemas/svc.f.result"}
    moved = components["svc.f.x"]
    assert moved["properties"]["owner"] == {"$ref": "#/components/schemas/svc.f.x/$defs/Person"}
    assert moved["properties"]["first"] == {"$ref": "#/components/schemas/svc.f.x/properties/owner"}
    # The bytes inside are still rewritten for their context.
    assert components["svc.f.result"]["$defs"]["Person"]["properties"]["blob"] == {
        "$ref": "#/components/schemas/Bytes"
    }
    assert components["svc.f.x"]["$defs"]["Person"]["properties"]["blob"]["type"] == "string"


def test_a_schema_referring_to_its_root() -> None:
    tree = {
        "type": "object",
        "title": "Tree",
        "properties": {"children": {"type": "array", "items": {"$ref": "#"}}},
    }
    document = document_with(tree)
    assert named_arg(document) == {"$ref": "#/components/schemas/Tree"}
    children = document["components"]["schemas"]["Tree"]["properties"]["children"]
    assert children["items"] == {"$ref": "#/components/schemas/Tree"}


def test_the_same_referring_schema_is_moved_once() -> None:
    components = Components()
    first = embed(WITH_DEFS, Context.REQUEST, components, "h")
    second = embed(WITH_DEFS, Context.REQUEST, components, "h")
    assert first == second
    assert list(components.schemas) == ["h"]


def test_references_that_cannot_resolve_here_are_dropped() -> None:
    document = document_with(
        {
            "type": "object",
            "properties": {
                "a": {"$ref": "https://example.invalid/schema.json", "description": "A."},
                "b": {"$ref": "#anchor"},
            },
        }
    )
    properties = named_arg(document)["properties"]
    assert properties == {"a": {"description": "A."}, "b": {}}


def test_draft07_definitions_resolve_too() -> None:
    document = document_with({"definitions": {"N": {"type": "integer"}}, "$ref": "#/definitions/N"})
    (name,) = [n for n in document["components"]["schemas"] if n.startswith("svc.")]
    assert document["components"]["schemas"][name]["$ref"] == (
        f"#/components/schemas/{name}/definitions/N"
    )


def test_a_stream_item_with_pointers_into_its_result_is_any_value() -> None:
    returns = {"type": "array", "items": {"$ref": "#/$defs/N"}, "$defs": {"N": {"type": "null"}}}
    config = parse_config(CONFIG)
    entry = {"args": [], "doc": None, "stream": True, "returns": returns}
    description = exposed_description(
        config.services["svc"], from_inspect({"name": "svc", "methods": {"f": entry}})
    )
    document = valid(build_document({"svc": description}, config, version=VERSION))
    content = document["paths"]["/rpc/svc/f"]["post"]["responses"]["200"]["content"]
    event = content["text/event-stream"]["schema"]["oneOf"][0]
    assert "publishes no type" in event["properties"]["data"]["contentSchema"]["description"]


# -- defaults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        ({}, "anything", True),
        ({"type": "integer"}, 1, True),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, 1, True),
        ({"type": ["string", "null"]}, None, True),
        ({"enum": ["a", "b"]}, "<Color.A: 'a'>", False),
        ({"const": 1}, 2, False),
        ({"anyOf": [{"type": "null"}, {"enum": ["a"]}]}, "a", True),
        ({"anyOf": [{"type": "null"}, {"enum": ["a"]}]}, "b", False),
        ({"type": "martian"}, 1, True),
    ],
)
def test_admits(schema: Any, value: Any, expected: bool) -> None:
    assert admits(schema, value) is expected


def test_a_default_its_schema_refuses_is_told_not_given() -> None:
    config = parse_config(CONFIG)
    entry = {
        "args": [
            {"name": "x", "default": "datetime.date(2020, 1, 1)", "schema": {"type": "integer"}}
        ],
        "doc": None,
    }
    description = exposed_description(
        config.services["svc"], from_inspect({"name": "svc", "methods": {"f": entry}})
    )
    document = valid(build_document({"svc": description}, config, version=VERSION))
    assert named_arg(document) == {
        "type": "integer",
        "description": "Optional (the method has a default: datetime.date(2020, 1, 1)).",
    }
