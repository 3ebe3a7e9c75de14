"""JSON Schema for Python type annotations, for the ``_zerorpc_inspect`` extension keys.

The gateway describes each method's parameters and result in JSON Schema draft 2020-12, the
dialect of OpenAPI 3.1. Values cross the wire as msgpack and reach HTTP clients as JSON, so
an annotation maps to the JSON shape its value takes there:

* ``bool`` -> ``{"type": "boolean"}``; tested before ``int``, which it subclasses.
* ``int``, ``float``, ``str`` -> ``integer``, ``number``, ``string`` (subclasses too).
* ``bytes``, ``bytearray``, ``memoryview`` -> ``{"type": "string", "contentEncoding": "base64"}``:
  JSON has no binary type, so binary values are shown base64-encoded.
* ``None``, ``type(None)`` -> ``{"type": "null"}``; ``Never``/``NoReturn`` -> ``{"not": {}}``.
* ``Any``, ``object``, unknown classes, unresolved forward references -> ``{}`` (any value).
  We describe less rather than fail: a schema that rejected a value the method accepts
  would be worse than one that says nothing.
* ``list[X]``, ``set[X]``, ``Sequence[X]``, ... -> ``{"type": "array", "items": X}``.
  msgpack sends every sequence and set as an array.
* ``Iterable[X]``, ``Iterator[X]``, ``Generator[X, ...]`` and their async forms
  (``AsyncIterable[X]``, ``AsyncIterator[X]``, ``AsyncGenerator[X, ...]``) -> an array of
  ``X`` too: the items of a stream (a streaming method's return annotation), or of an
  iterable sent whole. A stream's item schema is this schema's ``items``.
* ``tuple[X, Y]`` -> ``{"type": "array", "prefixItems": [X, Y], "minItems": 2, "maxItems": 2}``;
  ``tuple[X, ...]`` -> an array of ``X``; a ``NamedTuple`` is a titled fixed-length array.
* ``dict[K, X]``, ``Mapping[K, X]`` -> ``{"type": "object", "additionalProperties": X}``.
* ``X | Y``, ``Optional[X]``, ``Union[...]`` -> ``{"anyOf": [...]}``, flattened and
  de-duplicated, or ``{"type": [...]}`` when every member is a bare ``{"type": T}``.
* ``Literal[a, b]`` -> ``{"enum": [a, b]}``; one value -> ``{"const": a}``.
* ``Enum`` subclasses -> ``{"title": Name, "enum": [member values]}``.
* ``TypedDict`` -> a titled object with ``properties``, ``required`` (in definition order)
  and ``"additionalProperties": false``.
* dataclasses -> a titled object with ``properties`` and ``required`` (the fields without a
  default); a JSON-representable plain default becomes the property's ``default``.
* ``Annotated[X, ...]``, ``Required[X]``, ``NotRequired[X]``, ``Final[X]`` -> the schema of
  ``X``; ``NewType`` -> its supertype; ``TypeVar`` -> its bound or constraints.

An optional keyword (``items``, ``additionalProperties``, ``required``) is left out rather
than given an empty value, and :func:`schema_for` returns ``None`` instead of ``{}``: both
mean "no constraint", and leaving the key out is what OpenAPI tools understand best.

Recursive types (a dataclass that refers to itself) are expanded once; the inner reference
becomes ``{}``, which keeps the schema finite without inventing ``$defs``.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import enum
import inspect
import json
import math
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias, get_args, get_origin

__all__ = ["JsonSchema", "schema_for", "signature_schemas"]

JsonSchema: TypeAlias = dict[str, Any]

# Classes whose schemas are being expanded on the current path; see _structured().
_Seen: TypeAlias = frozenset[object]


class _NotJson:
    """Type of the sentinel for "this Python value has no JSON form"."""


_NOT_JSON: Final = _NotJson()

# Wrappers that qualify a type without changing the values it admits.
_QUALIFIERS: Final[tuple[object, ...]] = tuple(
    qualifier
    for qualifier in (
        typing.Annotated,
        typing.Final,
        typing.Required,
        typing.NotRequired,
        getattr(typing, "ReadOnly", None),  # Python 3.13+
    )
    if qualifier is not None
)

# Checked in order with issubclass(): bool must come before int, which it subclasses.
_SCALARS: Final[tuple[tuple[type | tuple[type, ...], JsonSchema], ...]] = (
    (bool, {"type": "boolean"}),
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (str, {"type": "string"}),
    ((bytes, bytearray, memoryview), {"type": "string", "contentEncoding": "base64"}),
)

# Abstract collections that are "some iterable of items" without being Sequence or Set, and
# the iterators and generators a streaming method is annotated with (their first argument is
# the item type: Generator[Yield, Send, Return], AsyncGenerator[Yield, Send]).
_ARRAY_ABCS: Final[tuple[type, ...]] = (
    collections.abc.Collection,
    collections.abc.Iterable,
    collections.abc.Iterator,
    collections.abc.Generator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
)


def schema_for(annotation: object) -> JsonSchema | None:
    """JSON Schema of one annotation.

    None when there is no annotation (``inspect.Parameter.empty``) or when the annotation
    admits any value (``Any``, ``object``, an unknown class, ...).
    """
    if annotation is inspect.Parameter.empty:  # the same object as inspect.Signature.empty
        return None
    return _schema(annotation, frozenset()) or None


def signature_schemas(
    func: Callable[..., Any],
) -> tuple[dict[str, JsonSchema], JsonSchema | None]:
    """(per-parameter-name schema for annotated params, return schema or None).

    String annotations (``from __future__ import annotations``) are resolved with
    ``typing.get_type_hints``; when that fails, each one is resolved on its own and those
    that still fail are skipped. Never raises: unannotated parameters, parameters whose
    annotation admits any value and callables without a signature (some builtins) are
    simply absent.
    """
    try:
        signature = inspect.signature(func)
    except Exception:  # max() and other builtins have none; odd callables raise anything
        return {}, None
    hints = _function_hints(func)
    globalns = _globals_of(func)

    def resolved_schema(name: str, annotation: object) -> JsonSchema | None:
        if annotation is inspect.Parameter.empty:
            return None
        if name in hints:
            return _safe_schema_for(hints[name])
        return _safe_schema_for(_resolve(annotation, globalns))

    params: dict[str, JsonSchema] = {}
    for name, parameter in signature.parameters.items():
        schema = resolved_schema(name, parameter.annotation)
        if schema is not None:
            params[name] = schema
    return params, resolved_schema("return", signature.return_annotation)


# --- annotation resolution ---------------------------------------------------------------


def _function_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """All resolved hints of a function or method, or {} when any of them fails to resolve."""
    # get_type_hints() on a class returns its attribute annotations, not its constructor's
    # parameters, so it is only trusted for routines; other callables resolve per annotation.
    if not inspect.isroutine(func):
        return {}
    try:
        return typing.get_type_hints(func, include_extras=False)
    except Exception:  # NameError for a TYPE_CHECKING-only import, SyntaxError, TypeError, ...
        return {}


def _globals_of(func: Callable[..., Any]) -> dict[str, Any]:
    """The namespace the string annotations of ``func`` were written in ({} if unknown)."""
    try:
        target: object = inspect.unwrap(func)
        target = getattr(target, "__func__", target)  # bound and class methods
        namespace = getattr(target, "__globals__", None)
        if isinstance(namespace, dict):
            return namespace
        # Classes and callable instances: the module that defined them.
        module = sys.modules.get(str(getattr(target, "__module__", None)))
    except Exception:  # a __wrapped__ cycle, or a proxy whose attributes raise
        return {}
    return vars(module) if module is not None else {}


def _resolve(
    annotation: object, globalns: dict[str, Any], localns: Mapping[str, Any] | None = None
) -> object:
    """Evaluate one string or ForwardRef annotation; return it unchanged when that fails."""
    text = annotation.__forward_arg__ if isinstance(annotation, typing.ForwardRef) else annotation
    if not isinstance(text, str):
        return annotation
    try:
        # The same evaluation typing.get_type_hints performs, for a single annotation, so one
        # unresolvable name does not cost every other annotation its schema.
        return eval(text, globalns, dict(localns or {}))
    except Exception:
        return annotation


def _class_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a class and its bases, resolving each on its own on failure.

    Extras are kept (_schema() unwraps them) because a TypedDict needs its Required and
    NotRequired markers; see _typeddict_required().
    """
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:
        hints: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            module = sys.modules.get(base.__module__)
            globalns = vars(module) if module is not None else {}
            for name, value in inspect.get_annotations(base).items():
                hints[name] = _resolve(value, globalns, vars(base))
        return hints


def _safe_schema_for(annotation: object) -> JsonSchema | None:
    try:
        return schema_for(annotation)
    except Exception:  # one exotic annotation must not stop the whole service being described
        return None


# --- dispatch ------------------------------------------------------------------------------


def _schema(annotation: object, seen: _Seen) -> JsonSchema:
    """Schema of ``annotation``; {} means any value."""
    annotation = _unwrap_qualifiers(annotation)
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if annotation is typing.Any or annotation is object:
        return {}
    if annotation is typing.Never or annotation is typing.NoReturn:
        return {"not": {}}  # no value at all: the function never returns
    if annotation is typing.LiteralString:
        return {"type": "string"}
    if isinstance(annotation, str | typing.ForwardRef):
        return {}  # a forward reference nobody could resolve
    if isinstance(annotation, typing.NewType):
        return _schema(annotation.__supertype__, seen)
    if isinstance(annotation, typing.TypeVar):
        return _typevar_schema(annotation, seen)
    if _is_type_alias(annotation):
        return _structured(annotation, seen, _type_alias_schema)
    origin = get_origin(annotation)
    if origin is not None:
        return _generic_schema(annotation, origin, get_args(annotation), seen)
    if isinstance(annotation, type):
        return _class_schema(annotation, (), seen)
    return {}


def _unwrap_qualifiers(annotation: object) -> object:
    while get_origin(annotation) in _QUALIFIERS:
        annotation = get_args(annotation)[0]
    return annotation


def _generic_schema(
    annotation: object, origin: object, args: tuple[Any, ...], seen: _Seen
) -> JsonSchema:
    """Schema of a subscripted (or bare ``typing.List``-style) generic."""
    if origin is typing.Union or origin is types.UnionType:
        return _union_schema(args, seen)
    if origin is typing.Literal:
        return _literal_schema(args)
    if _is_type_alias(origin):  # a subscripted generic alias: its parameters stay unbound
        return _schema(origin, seen)
    if not isinstance(origin, type):
        return {}  # ClassVar, Concatenate and other forms that describe no value
    # typing.Tuple (bare) has origin tuple and no args, exactly like tuple[()]; only the
    # latter is the empty tuple.
    if origin is tuple and annotation is not typing.Tuple:  # noqa: UP006 - a value, not a hint
        return _tuple_schema(args, seen)
    return _class_schema(origin, args, seen)


def _class_schema(cls: type, args: tuple[Any, ...], seen: _Seen) -> JsonSchema:
    """Schema of a class, bare (``args == ()``) or as the origin of a parameterised generic."""
    if issubclass(cls, enum.Enum):  # before the scalars: IntEnum and StrEnum subclass them
        return _enum_schema(cls)
    if _is_typeddict(cls):  # before Mapping: a TypedDict is a dict
        return _structured(cls, seen, _typeddict_schema)
    if _is_namedtuple(cls):  # before tuple
        return _structured(cls, seen, _namedtuple_schema)
    if dataclasses.is_dataclass(cls):
        return _structured(cls, seen, _dataclass_schema)
    for base, schema in _SCALARS:
        if issubclass(cls, base):
            return dict(schema)  # a copy: callers may extend what they are given
    if issubclass(cls, tuple):
        return {"type": "array"}  # bare tuple: any length, any items
    if issubclass(cls, collections.abc.Mapping):
        return _mapping_schema(args, seen)
    if issubclass(cls, collections.abc.Sequence | collections.abc.Set) or cls in _ARRAY_ABCS:
        return _array_schema(args, seen)
    return {}  # a class we know nothing about: describe nothing rather than fail


def _structured(key: object, seen: _Seen, build: Callable[[Any, _Seen], JsonSchema]) -> JsonSchema:
    """Expand a type that can refer to itself, at most once per path from the root."""
    if key in seen:
        return {}  # the recursive reference: any value, so the schema stays finite
    return build(key, seen | {key})


# --- containers ----------------------------------------------------------------------------


def _array_schema(args: tuple[Any, ...], seen: _Seen) -> JsonSchema:
    schema: JsonSchema = {"type": "array"}
    items = _schema(args[0], seen) if args else {}
    if items:
        schema["items"] = items
    return schema


def _tuple_schema(args: tuple[Any, ...], seen: _Seen) -> JsonSchema:
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        return _array_schema(args[:1], seen)
    if not args:  # tuple[()]; prefixItems must not be empty
        return {"type": "array", "maxItems": 0}
    return {
        "type": "array",
        "prefixItems": [_schema(arg, seen) for arg in args],
        "minItems": len(args),
        "maxItems": len(args),
    }


def _mapping_schema(args: tuple[Any, ...], seen: _Seen) -> JsonSchema:
    # The key type is not described: JSON object keys are strings whatever the annotation.
    schema: JsonSchema = {"type": "object"}
    values = _schema(args[1], seen) if len(args) == 2 else {}
    if values:
        schema["additionalProperties"] = values
    return schema


# --- unions and literals -------------------------------------------------------------------


def _union_schema(args: Iterable[Any], seen: _Seen) -> JsonSchema:
    members: list[JsonSchema] = []
    for arg in args:
        schema = _schema(arg, seen)
        if not schema:
            return {}  # one member admits any value, so the union does too
        members.extend(_union_members(schema))
    members = _unique(members)
    if len(members) == 1:
        return members[0]
    if all(member.keys() == {"type"} for member in members):
        return {"type": [member["type"] for member in members]}
    return {"anyOf": members}


def _union_members(schema: JsonSchema) -> list[JsonSchema]:
    """Split a schema that is itself a union, so nested unions flatten into one level."""
    if schema.keys() == {"anyOf"}:
        return list(schema["anyOf"])
    if schema.keys() == {"type"} and isinstance(schema["type"], list):
        return [{"type": name} for name in schema["type"]]
    return [schema]


def _literal_schema(args: tuple[Any, ...]) -> JsonSchema:
    values = [_json_value(arg) for arg in args]
    if any(value is _NOT_JSON for value in values):
        return {}  # an enum that left out a valid value would reject it
    values = _unique(values)
    if len(values) == 1:
        return {"const": values[0]}
    return {"enum": values}


def _unique(values: Iterable[Any]) -> list[Any]:
    """Drop repeats by JSON identity: Python's ``1 == True`` would wrongly merge them."""
    seen: set[str] = set()
    unique: list[Any] = []
    for value in values:
        key = json.dumps(value, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(value)
    return unique


def _json_value(value: object) -> object:
    """``value`` as JSON data (as our msgpack values read in JSON), or ``_NOT_JSON``."""
    if isinstance(value, enum.Enum):
        return _json_value(value.value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NOT_JSON  # JSON has no NaN or Infinity
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        items = [_json_value(item) for item in value]
        return _NOT_JSON if any(item is _NOT_JSON for item in items) else items
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        entries = {key: _json_value(item) for key, item in value.items()}
        return _NOT_JSON if any(item is _NOT_JSON for item in entries.values()) else entries
    return _NOT_JSON


# --- named types ---------------------------------------------------------------------------


def _enum_schema(cls: type[enum.Enum]) -> JsonSchema:
    schema: JsonSchema = {"title": cls.__name__}
    if issubclass(cls, enum.Flag):
        # Any combination of members is a valid flag value, so listing the members would
        # reject valid values; flags travel as their integer value.
        if all(isinstance(member.value, int) for member in cls):
            schema["type"] = "integer"
        return schema
    values = [_json_value(member.value) for member in cls]
    if all(value is not _NOT_JSON for value in values):
        schema["enum"] = _unique(values)
    return schema


def _is_typeddict(cls: type) -> bool:
    # Duck-typed so typing_extensions.TypedDict classes count too; typing.is_typeddict()
    # only knows typing's own.
    return (
        issubclass(cls, dict)
        and hasattr(cls, "__required_keys__")
        and hasattr(cls, "__optional_keys__")
    )


def _typeddict_schema(cls: type, seen: _Seen) -> JsonSchema:
    hints = _class_hints(cls)
    required_keys: frozenset[str] = frozenset(getattr(cls, "__required_keys__", ()))
    schema: JsonSchema = {
        "type": "object",
        "title": cls.__name__,
        "properties": {name: _schema(hint, seen) for name, hint in hints.items()},
    }
    required = [  # in definition order
        name for name, hint in hints.items() if _typeddict_required(hint, name in required_keys)
    ]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False  # a TypedDict lists every key it may have
    return schema


def _typeddict_required(hint: object, listed_required: bool) -> bool:
    """Whether a TypedDict key is required.

    An explicit Required[...] or NotRequired[...] decides. Python 3.11 misses those markers
    when annotations are strings (``from __future__ import annotations``) and files every
    such key under the class's totality, so __required_keys__ alone is only the fallback.
    """
    while True:
        origin = get_origin(hint)
        if origin is typing.Required:
            return True
        if origin is typing.NotRequired:
            return False
        if origin not in _QUALIFIERS:
            return listed_required
        hint = get_args(hint)[0]


def _is_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def _namedtuple_schema(cls: type, seen: _Seen) -> JsonSchema:
    # msgpack packs a named tuple as a plain array, so this is an array, not an object.
    hints = _class_hints(cls)
    fields: tuple[str, ...] = tuple(getattr(cls, "_fields", ()))
    optional = len(getattr(cls, "_field_defaults", {}))
    schema: JsonSchema = {"type": "array", "title": cls.__name__}
    if fields:
        schema["prefixItems"] = [_schema(hints.get(name, typing.Any), seen) for name in fields]
    schema["minItems"] = len(fields) - optional
    schema["maxItems"] = len(fields)
    return schema


def _dataclass_schema(cls: type, seen: _Seen) -> JsonSchema:
    hints = _class_hints(cls)
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        prop = _schema(hints.get(field.name, field.type), seen)
        if field.default is not dataclasses.MISSING:
            default = _json_value(field.default)
            if default is not _NOT_JSON:  # a default the client could not read is left out
                prop = {**prop, "default": default}
        properties[field.name] = prop
        if _is_required(field):
            required.append(field.name)
    schema: JsonSchema = {"type": "object", "title": cls.__name__, "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _is_required(field: dataclasses.Field[Any]) -> bool:
    return (
        field.init
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )


def _typevar_schema(var: typing.TypeVar, seen: _Seen) -> JsonSchema:
    if var.__bound__ is not None:
        return _schema(var.__bound__, seen)
    if var.__constraints__:
        return _union_schema(var.__constraints__, seen)
    return {}


def _is_type_alias(annotation: object) -> bool:
    # ``type X = ...`` (Python 3.12+) and typing_extensions.TypeAliasType, matched by name so
    # neither has to be importable here. Their value is evaluated lazily, on first access.
    return type(annotation).__name__ == "TypeAliasType"


def _type_alias_schema(alias: object, seen: _Seen) -> JsonSchema:
    try:
        value = getattr(alias, "__value__")  # noqa: B009 - not a known attribute to mypy
    except Exception:  # the lazily evaluated value names something undefined
        return {}
    return _schema(value, seen)
