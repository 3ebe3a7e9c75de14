"""The JSON Schemas backends publish, made fit to embed in one OpenAPI 3.1 document.

Our servers publish a JSON Schema (draft 2020-12, OpenAPI 3.1's own dialect) per argument
(``schema``) and per result (``returns``). Embedding one as it is would be wrong in three ways,
each fixed here:

- It came over msgpack from a program we do not control: it may hold values JSON cannot
  write (bytes, NaN), booleans as schemas, draft-07 array ``items``, or no dict at all.
  ``clean`` turns it into a JSON-only schema object, dropping what cannot be kept (a
  dropped keyword only ever constrains less).
- Its ``$ref`` pointers (``#/$defs/X``, ``#``) are relative to its own root, which is not
  the document's root once embedded. A schema with such references is moved whole to
  ``components/schemas`` and its pointers are prefixed with its new place, so every
  pointer, into ``$defs`` or anywhere else, still lands where it did. References we cannot
  resolve (other documents, anchors) are dropped: "any value" is honest, a dangling
  reference is an invalid document.
- The gateway does not carry ``bytes`` the way the published schema says
  (``{"type": "string", "contentEncoding": "base64"}``): a JSON result holds text or
  ``{"$base64": ...}``, a JSON request hands the method a str, msgpack carries bin. A
  ``Context`` says which of those a schema is for, and bytes are rewritten to match.

One more change says the same in other words: an array without ``items`` (``list[Any]``, a
bare ``tuple``) gets ``"items": {}``, since SDK generators refuse an array without them.

Titled schemas (TypedDicts, dataclasses, enums, named tuples) become named entries of
``components/schemas``, shared by every place that uses the same schema, so the docs page
shows them as models. ``Components`` hands out the names: unique, and stable for the same
descriptions (callers visit services and methods in sorted order).
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Final, TypeAlias

JsonSchema: TypeAlias = dict[str, Any]

SCHEMAS_REF: Final = "#/components/schemas/"


class Context(Enum):
    """Where a schema describes a value: the shape of bytes depends on it."""

    REQUEST = "request"  # a JSON or msgpack body, a query or path parameter
    RESULT_JSON = "result_json"  # a result sent as JSON
    RESULT_MSGPACK = "result_msgpack"  # a result sent as msgpack


# How bytes look in each context (the published form is base64 text, which none of them is).
BYTES_COMPONENT: Final = "Bytes"
BYTES_JSON: Final[JsonSchema] = {
    "description": "Bytes, as the gateway writes them in JSON: a string when they are valid "
    'UTF-8, else an object {"$base64": "..."}. Ask for application/msgpack to get them raw.',
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {"$base64": {"type": "string", "contentEncoding": "base64"}},
            "required": ["$base64"],
            "additionalProperties": False,
        },
    ],
}
_BYTES_REQUEST: Final[JsonSchema] = {
    "type": "string",
    "description": "Bytes. In a JSON body a string reaches the method as text (a str), "
    "without any decoding; send the body as application/msgpack to pass binary data.",
}
_BYTES_MSGPACK: Final[JsonSchema] = {
    "type": "string",
    "contentMediaType": "application/octet-stream",
    "description": "Bytes (msgpack bin).",
}

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_ONE_SCHEMA: Final = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_SCHEMA_LIST: Final = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAP: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
# They would make a schema a resource of its own, the base of the references inside it;
# pointers are rebased from the published root (see embed), so there is only one base.
_RESOURCE_KEYS: Final = frozenset({"$schema", "$id"})
# Annotations that stay beside a reference when the rest of a schema becomes a component.
_ANNOTATIONS: Final = ("default", "description", "examples", "deprecated", "readOnly", "writeOnly")
# Titled schemas of these shapes are named models (what _schema titles: TypedDict,
# dataclass, NamedTuple, Enum).
_MODEL_KEYS: Final = ("properties", "enum", "prefixItems")
_BYTES_OWN: Final = frozenset({"description", "default"})
_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


class _Missing:
    """Type of the sentinel for "this value has no JSON form"."""


MISSING: Final = _Missing()


# -- JSON values ------------------------------------------------------------------------


def json_data(value: Any, *, base64: bool = True) -> Any:
    """``value`` as JSON data, the way the gateway writes results (bytes as text or
    ``{"$base64": ...}``, map keys as strings), or ``MISSING`` when part of it has no
    JSON form (NaN, msgpack extension types). ``base64=False``: bytes that are not UTF-8
    have none either (where a JSON request would read ``{"$base64": ...}`` as an object)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else MISSING
    if isinstance(value, (bytes, bytearray)):
        data = _bytes_data(bytes(value))
        return data if base64 or isinstance(data, str) else MISSING
    if isinstance(value, (list, tuple)):
        items = [json_data(item, base64=base64) for item in value]
        return MISSING if any(item is MISSING for item in items) else items
    if isinstance(value, Mapping):
        entries = {_json_key(key): json_data(item, base64=base64) for key, item in value.items()}
        return MISSING if any(item is MISSING for item in entries.values()) else entries
    return MISSING


def _bytes_data(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"$base64": binascii.b2a_base64(data, newline=False).decode("ascii")}


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        data = _bytes_data(bytes(key))
        return data if isinstance(data, str) else data["$base64"]
    data = json_data(key)
    return repr(key) if data is MISSING else json.dumps(data)


# -- walking schemas --------------------------------------------------------------------


def as_schema(value: Any) -> JsonSchema:
    """A schema object for a published value: ``true`` is any value, ``false`` none, and
    anything that is not a schema at all is treated as saying nothing."""
    if value is True:
        return {}
    if value is False:
        return {"not": {}}
    if not isinstance(value, dict):
        return {}
    # msgpack maps may have keys of any type; a schema's keywords are strings.
    return {key: item for key, item in value.items() if isinstance(key, str)}


def walk(schema: Any, visit: Callable[[JsonSchema], JsonSchema]) -> JsonSchema:
    """A new schema: each subschema rebuilt bottom-up, then passed to ``visit``."""
    node = _draft2020(as_schema(schema))
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _ONE_SCHEMA:
            out[key] = _walk_child(value, visit)
        elif key in _SCHEMA_LIST and isinstance(value, list) and value:
            out[key] = [_walk_child(item, visit) for item in value]
        elif key in _SCHEMA_MAP and isinstance(value, Mapping):
            out[key] = {str(name): _walk_child(item, visit) for name, item in value.items()}
        elif key not in _ONE_SCHEMA | _SCHEMA_LIST | _SCHEMA_MAP:
            out[key] = value
        # else: a schema keyword whose value is no schema; dropping it constrains less
    return visit(out)


def _walk_child(value: Any, visit: Callable[[JsonSchema], JsonSchema]) -> JsonSchema | bool:
    # A boolean is a schema too (``additionalProperties: false``), and reads best as it is.
    return value if isinstance(value, bool) else walk(value, visit)


def _draft2020(node: JsonSchema) -> JsonSchema:
    """Draft-07's tuple form (``items`` as a list, ``additionalItems`` for the rest) in
    2020-12's words: ``prefixItems``, and ``items`` for the rest."""
    if not isinstance(node.get("items"), list) or "prefixItems" in node:
        return node
    out = {k: v for k, v in node.items() if k not in ("items", "additionalItems")}
    out["prefixItems"] = node["items"] or [{}]
    if "additionalItems" in node:
        out["items"] = node["additionalItems"]
    return out


def clean(published: Any) -> JsonSchema:
    """A published schema as JSON data in the 2020-12 dialect (see the module docstring)."""
    return walk(published, _clean_node)


def _clean_node(node: JsonSchema) -> JsonSchema:
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _RESOURCE_KEYS:
            continue
        if key in _ONE_SCHEMA | _SCHEMA_LIST | _SCHEMA_MAP:
            out[key] = value  # already cleaned by walk
            continue
        data = json_data(value)
        if data is not MISSING:
            out[key] = data
    out.pop("additionalItems", None)  # without a list of items, it means nothing
    return out


def local_refs(schema: JsonSchema) -> bool:
    """Whether ``schema`` holds a reference into itself (``#`` or ``#/...``)."""
    found = False

    def visit(node: JsonSchema) -> JsonSchema:
        nonlocal found
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            found = True
        return node

    walk(schema, visit)
    return found


_JSON_TYPES: Final[dict[str, Callable[[Any], bool]]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def admits(schema: Any, value: Any) -> bool:
    """Whether ``value`` may be valid under ``schema``: False only when it surely is not by
    ``type``, ``enum``, ``const`` or every member of ``anyOf``/``oneOf`` (a published
    default that is the ``repr`` of a value msgpack could not carry, say)."""
    node = as_schema(schema)
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else None
    if kinds is not None and not any(_JSON_TYPES.get(k, _anything)(value) for k in kinds):
        return False
    if isinstance(node.get("enum"), list) and value not in node["enum"]:
        return False
    if "const" in node and node["const"] != value:
        return False
    members = node.get("anyOf", node.get("oneOf"))
    if isinstance(members, list) and members:
        return any(admits(member, value) for member in members)
    return True


def _anything(value: Any) -> bool:
    return True


# -- components -------------------------------------------------------------------------


class Components:
    """``components/schemas``: named schemas, each name unique, the same schema under the
    same hint sharing one name."""

    def __init__(self) -> None:
        self.schemas: dict[str, JsonSchema] = {}
        self._names: dict[str, str] = {}  # (hint, canonical JSON) -> name

    def __repr__(self) -> str:
        return f"<Components {list(self.schemas)}>"

    def add(
        self,
        hint: str,
        schema: JsonSchema,
        finish: Callable[[str], JsonSchema] | None = None,
    ) -> str:
        """The name of ``schema``: the one it already has, else a new one from ``hint``.
        ``finish(name)``, when given, makes what is stored under a new name (a schema
        whose references must name its own place)."""
        key = _canonical(hint, schema)
        name = self._names.get(key)
        if name is None:
            name = self._fresh(hint)
            self._names[key] = name
            self.schemas[name] = {}  # taken, even while finish() runs
            self.schemas[name] = schema if finish is None else finish(name)
        return name

    def _fresh(self, hint: str) -> str:
        base = _NAME_UNSAFE.sub("_", hint).strip("_") or "Schema"
        name, number = base, 1
        while name in self.schemas:
            number += 1
            name = f"{base}_{number}"
        return name

    def ref(self, hint: str, schema: JsonSchema) -> JsonSchema:
        return {"$ref": SCHEMAS_REF + self.add(hint, schema)}


def _canonical(hint: str, schema: JsonSchema) -> str:
    return hint + "\0" + json.dumps(schema, sort_keys=True, separators=(",", ":"))


# -- embedding --------------------------------------------------------------------------


def embed(published: Any, context: Context, components: Components, hint: str) -> JsonSchema:
    """``published`` (an argument's ``schema``, a method's ``returns``) as it belongs in the
    document at ``context``; ``{}`` (any value) when it says nothing."""
    schema = clean(published)
    if local_refs(schema):
        return _embed_self_referring(schema, context, components, hint)
    return walk(schema, lambda node: _model(_for_context(node, context, components), components))


def _embed_self_referring(
    schema: JsonSchema, context: Context, components: Components, hint: str
) -> JsonSchema:
    # Moved whole: its inner structure must stay put for its own pointers, so titled
    # parts are not split off into models of their own.
    def in_context(node: JsonSchema) -> JsonSchema:
        return _for_context(node, context, components)

    def finish(name: str) -> JsonSchema:
        # Rebased first: the Bytes reference in_context adds is already the document's.
        return walk(walk(schema, lambda node: _rebase(node, SCHEMAS_REF + name)), in_context)

    title = schema.get("title")
    hint = title if isinstance(title, str) and title else hint
    return {"$ref": SCHEMAS_REF + components.add(hint, walk(schema, in_context), finish)}


def _rebase(node: JsonSchema, prefix: str) -> JsonSchema:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    out = dict(node)
    if ref == "#" or ref.startswith("#/"):
        out["$ref"] = prefix + ref[1:]
    else:
        del out["$ref"]  # another document or an anchor: not resolvable from here
    return out


def _for_context(node: JsonSchema, context: Context, components: Components) -> JsonSchema:
    ref = node.get("$ref")
    if isinstance(ref, str) and not (ref == "#" or ref.startswith("#/")):
        node = {k: v for k, v in node.items() if k != "$ref"}
    kind = node.get("type")
    if (kind == "array" or (isinstance(kind, list) and "array" in kind)) and not (
        "items" in node or "prefixItems" in node
    ):
        # Any items, said: SDK generators (openapi-python-client) refuse an array without.
        node = {**node, "items": {}}
    if not _is_bytes(node):
        return node
    # Its description is ours now; a default is published base64, in none of these shapes.
    extra = {k: v for k, v in node.items() if k in _ANNOTATIONS and k not in _BYTES_OWN}
    if context is Context.RESULT_JSON:
        return {**components.ref(BYTES_COMPONENT, BYTES_JSON), **extra}
    if context is Context.RESULT_MSGPACK:
        return {**_BYTES_MSGPACK, **extra}
    return {**_BYTES_REQUEST, **extra}


def _is_bytes(node: JsonSchema) -> bool:
    return node.get("type") == "string" and node.get("contentEncoding") == "base64"


def _model(node: JsonSchema, components: Components) -> JsonSchema:
    """A titled object, enum or named tuple becomes a named component."""
    title = node.get("title")
    if not isinstance(title, str) or not any(key in node for key in _MODEL_KEYS):
        return node
    annotations: JsonSchema = {k: node[k] for k in _ANNOTATIONS if k in node}
    body = {k: v for k, v in node.items() if k not in annotations}
    return {**components.ref(title, body), **annotations}


__all__ = [
    "BYTES_COMPONENT",
    "BYTES_JSON",
    "MISSING",
    "SCHEMAS_REF",
    "Components",
    "Context",
    "JsonSchema",
    "admits",
    "as_schema",
    "clean",
    "embed",
    "json_data",
    "local_refs",
    "walk",
]
