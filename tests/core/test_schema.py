"""Tests for rpccore._schema: Python annotations to JSON Schema (draft 2020-12)."""

# The old typing spellings (List, Dict, Tuple, Optional, Union) are part of what is under
# test, so the pyupgrade rules that would rewrite them are off for this file.
# ruff: noqa: UP006, UP007, UP035, UP045

from __future__ import annotations

import collections
import enum
import functools
import json
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Dict,
    Final,
    ForwardRef,
    List,
    Literal,
    LiteralString,
    NamedTuple,
    Never,
    NewType,
    NoReturn,
    NotRequired,
    Optional,
    Required,
    Tuple,
    TypedDict,
    TypeVar,
    Union,
)

import pytest

from rpccore import _schema
from rpccore._schema import JsonSchema, schema_for, signature_schemas

if TYPE_CHECKING:
    # Only type checkers see this import, so at run time the annotations naming it cannot
    # be resolved: exactly the case signature_schemas() must survive.
    from decimal import Decimal as OnlyForTypeCheckers

# --- types under test ----------------------------------------------------------------------
# Module level, and under `from __future__ import annotations`, so every field annotation
# below is a string that _schema has to resolve through the module's globals.


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = enum.auto()
    WRITE = enum.auto()


class Movie(TypedDict):
    title: str
    year: NotRequired[int]
    tags: list[str]


class Options(TypedDict, total=False):
    verbose: bool
    name: Required[str]


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Config:
    name: str
    retries: int = 3
    color: Color = Color.GREEN
    shape: tuple[int, int] = (1, 2)
    blob: bytes = b"\x00\x01"
    ratio: float = math.nan  # no JSON form: no "default"
    sentinel: object = field(default_factory=object)  # a factory is not a plain default
    hidden: int = field(default=0, init=False)


class Pair(NamedTuple):
    key: str
    value: int = 0


@dataclass
class Node:
    value: int
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None


@dataclass
class Employee:
    name: str
    manager: Manager | None = None


@dataclass
class Manager:
    name: str
    reports: list[Employee]


class Tree(TypedDict):
    label: str
    children: list[Tree]


class Opaque:
    """A class _schema knows nothing about."""


UserId = NewType("UserId", int)
Bounded = TypeVar("Bounded", bound=str)
Constrained = TypeVar("Constrained", int, str)
Free = TypeVar("Free")

BYTES: JsonSchema = {"type": "string", "contentEncoding": "base64"}
INT: JsonSchema = {"type": "integer"}
STR: JsonSchema = {"type": "string"}

MOVIE: JsonSchema = {
    "type": "object",
    "title": "Movie",
    "properties": {"title": STR, "year": INT, "tags": {"type": "array", "items": STR}},
    "required": ["title", "tags"],
    "additionalProperties": False,
}

CASES: list[Any] = [
    # scalars; bool must not come out as integer
    pytest.param(int, INT, id="int"),
    pytest.param(float, {"type": "number"}, id="float"),
    pytest.param(str, STR, id="str"),
    pytest.param(bool, {"type": "boolean"}, id="bool"),
    pytest.param(bytes, BYTES, id="bytes"),
    pytest.param(bytearray, BYTES, id="bytearray"),
    pytest.param(None, {"type": "null"}, id="None"),
    pytest.param(type(None), {"type": "null"}, id="NoneType"),
    pytest.param(LiteralString, STR, id="LiteralString"),
    pytest.param(Never, {"not": {}}, id="Never"),
    pytest.param(NoReturn, {"not": {}}, id="NoReturn"),
    # "any value" is None at the top level...
    pytest.param(Any, None, id="Any"),
    pytest.param(object, None, id="object"),
    pytest.param(Opaque, None, id="unknown-class"),
    pytest.param(Callable[[int], str], None, id="Callable"),
    pytest.param(type[int], None, id="type"),
    pytest.param("int", None, id="unresolved-string"),
    pytest.param(ForwardRef("Missing"), None, id="unresolved-ForwardRef"),
    pytest.param(Free, None, id="TypeVar-free"),
    pytest.param(Optional[Any], None, id="Optional-Any"),
    # ...and an omitted keyword inside a schema
    pytest.param(list[Any], {"type": "array"}, id="list-Any"),
    pytest.param(list[Opaque], {"type": "array"}, id="list-unknown"),
    pytest.param(dict[str, Any], {"type": "object"}, id="dict-Any"),
    pytest.param(dict[str, object], {"type": "object"}, id="dict-object"),
    # arrays
    pytest.param(list, {"type": "array"}, id="list"),
    pytest.param(List, {"type": "array"}, id="typing.List"),
    pytest.param(list[int], {"type": "array", "items": INT}, id="list-int"),
    pytest.param(List[str], {"type": "array", "items": STR}, id="typing.List-str"),
    pytest.param(Sequence[str], {"type": "array", "items": STR}, id="Sequence"),
    pytest.param(set[int], {"type": "array", "items": INT}, id="set"),
    pytest.param(frozenset[bytes], {"type": "array", "items": BYTES}, id="frozenset"),
    pytest.param(collections.deque[int], {"type": "array", "items": INT}, id="deque"),
    pytest.param(Iterable[int], {"type": "array", "items": INT}, id="Iterable"),
    # a stream's return annotation: its items
    pytest.param(Iterator[int], {"type": "array", "items": INT}, id="Iterator"),
    pytest.param(Generator[str, None, None], {"type": "array", "items": STR}, id="Generator"),
    pytest.param(Generator[int, str, bool], {"type": "array", "items": INT}, id="Generator-send"),
    pytest.param(AsyncIterable[int], {"type": "array", "items": INT}, id="AsyncIterable"),
    pytest.param(AsyncIterator[bytes], {"type": "array", "items": BYTES}, id="AsyncIterator"),
    pytest.param(AsyncGenerator[int, None], {"type": "array", "items": INT}, id="AsyncGenerator"),
    pytest.param(Iterator, {"type": "array"}, id="Iterator-bare"),
    pytest.param(Iterator[Any], {"type": "array"}, id="Iterator-Any"),
    pytest.param(
        list[list[int]], {"type": "array", "items": {"type": "array", "items": INT}}, id="nested"
    ),
    # tuples
    pytest.param(tuple, {"type": "array"}, id="tuple"),
    pytest.param(Tuple, {"type": "array"}, id="typing.Tuple"),
    pytest.param(
        tuple[int, str],
        {"type": "array", "prefixItems": [INT, STR], "minItems": 2, "maxItems": 2},
        id="tuple-fixed",
    ),
    pytest.param(tuple[int, ...], {"type": "array", "items": INT}, id="tuple-variadic"),
    pytest.param(tuple[()], {"type": "array", "maxItems": 0}, id="tuple-empty"),
    pytest.param(
        Pair,
        {
            "type": "array",
            "title": "Pair",
            "prefixItems": [STR, INT],
            "minItems": 1,
            "maxItems": 2,
        },
        id="NamedTuple",
    ),
    # objects
    pytest.param(dict, {"type": "object"}, id="dict"),
    pytest.param(
        dict[str, int], {"type": "object", "additionalProperties": INT}, id="dict-str-int"
    ),
    pytest.param(
        Mapping[str, float],
        {"type": "object", "additionalProperties": {"type": "number"}},
        id="Mapping",
    ),
    pytest.param(
        Dict[str, list[int]],
        {"type": "object", "additionalProperties": {"type": "array", "items": INT}},
        id="typing.Dict",
    ),
    # unions
    pytest.param(Optional[int], {"type": ["integer", "null"]}, id="Optional"),
    pytest.param(int | None, {"type": ["integer", "null"]}, id="pipe-None"),
    pytest.param(Union[int, Optional[str]], {"type": ["integer", "string", "null"]}, id="flat"),
    pytest.param(
        Optional[list[int]],
        {"anyOf": [{"type": "array", "items": INT}, {"type": "null"}]},
        id="Optional-list",
    ),
    pytest.param(int | bytes, {"anyOf": [INT, BYTES]}, id="int-or-bytes"),
    pytest.param(UserId | int, INT, id="union-dedup"),
    pytest.param(
        Union[Literal[1], Literal[True]], {"anyOf": [{"const": 1}, {"const": True}]}, id="1-True"
    ),
    # literals and enums
    pytest.param(Literal["a", 1], {"enum": ["a", 1]}, id="Literal"),
    pytest.param(Literal["only"], {"const": "only"}, id="Literal-one"),
    pytest.param(Literal[1, True], {"enum": [1, True]}, id="Literal-1-True"),
    pytest.param(Literal[Color.RED], {"const": "red"}, id="Literal-enum"),
    pytest.param(Literal[b"\x00"], {"const": "AA=="}, id="Literal-bytes"),
    pytest.param(Color, {"title": "Color", "enum": ["red", "green"]}, id="Enum"),
    pytest.param(Level, {"title": "Level", "enum": [1, 2]}, id="IntEnum"),
    pytest.param(Perm, {"title": "Perm", "type": "integer"}, id="Flag"),
    # TypedDict, dataclasses
    pytest.param(Movie, MOVIE, id="TypedDict"),
    pytest.param(
        Options,
        {
            "type": "object",
            "title": "Options",
            "properties": {"verbose": {"type": "boolean"}, "name": STR},
            "required": ["name"],
            "additionalProperties": False,
        },
        id="TypedDict-total-False",
    ),
    pytest.param(
        Point,
        {
            "type": "object",
            "title": "Point",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
        },
        id="dataclass",
    ),
    pytest.param(
        Config,
        {
            "type": "object",
            "title": "Config",
            "properties": {
                "name": STR,
                "retries": {"type": "integer", "default": 3},
                "color": {"title": "Color", "enum": ["red", "green"], "default": "green"},
                "shape": {
                    "type": "array",
                    "prefixItems": [INT, INT],
                    "minItems": 2,
                    "maxItems": 2,
                    "default": [1, 2],
                },
                "blob": {**BYTES, "default": "AAE="},
                "ratio": {"type": "number"},
                "sentinel": {},
                "hidden": {"type": "integer", "default": 0},
            },
            "required": ["name"],
        },
        id="dataclass-defaults",
    ),
    pytest.param(
        list[Point],
        {
            "type": "array",
            "items": {
                "type": "object",
                "title": "Point",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            },
        },
        id="list-of-dataclass",
    ),
    # wrappers
    pytest.param(Annotated[int, "doc"], INT, id="Annotated"),
    pytest.param(Annotated[Any, "doc"], None, id="Annotated-Any"),
    pytest.param(Final[int], INT, id="Final"),
    pytest.param(Required[int], INT, id="Required"),
    pytest.param(UserId, INT, id="NewType"),
    pytest.param(Bounded, STR, id="TypeVar-bound"),
    pytest.param(Constrained, {"type": ["integer", "string"]}, id="TypeVar-constraints"),
]


@pytest.mark.parametrize(("annotation", "expected"), CASES)
def test_schema_for(annotation: object, expected: JsonSchema | None) -> None:
    assert schema_for(annotation) == expected


def test_no_annotation_is_none() -> None:
    import inspect

    assert schema_for(inspect.Parameter.empty) is None
    assert schema_for(inspect.Signature.empty) is None


def test_results_are_independent_copies() -> None:
    first = schema_for(int)
    assert first is not None
    first["title"] = "mutated"
    assert schema_for(int) == INT


# --- recursion -----------------------------------------------------------------------------


def test_recursive_dataclass_expands_once() -> None:
    assert schema_for(Node) == {
        "type": "object",
        "title": "Node",
        "properties": {
            "value": INT,
            # The inner references to Node are "any value", so list[Node] loses its items
            # and Node | None admits anything; only the default survives.
            "children": {"type": "array"},
            "parent": {"default": None},
        },
        "required": ["value"],
    }


def test_mutually_recursive_dataclasses() -> None:
    manager = {
        "type": "object",
        "title": "Manager",
        "properties": {"name": STR, "reports": {"type": "array"}},
        "required": ["name", "reports"],
    }
    assert schema_for(Employee) == {
        "type": "object",
        "title": "Employee",
        "properties": {
            "name": STR,
            "manager": {"anyOf": [manager, {"type": "null"}], "default": None},
        },
        "required": ["name"],
    }


def test_recursive_typeddict() -> None:
    assert schema_for(Tree) == {
        "type": "object",
        "title": "Tree",
        "properties": {"label": STR, "children": {"type": "array"}},
        "required": ["label", "children"],
        "additionalProperties": False,
    }


def test_same_type_twice_is_not_recursion() -> None:
    schema = schema_for(tuple[Point, Point])
    assert schema is not None
    first, second = schema["prefixItems"]
    assert first == second
    assert first["title"] == "Point"


class TypeAliasType:
    """Stands in for Python 3.12's ``type X = ...`` alias, whose value is evaluated lazily.

    _schema recognises aliases by this class name, so the test runs on Python 3.11 too.
    """

    def __init__(self, value: Callable[[], object]) -> None:
        self._value = value

    @property
    def __value__(self) -> object:
        return self._value()


def test_recursive_type_alias() -> None:
    json_tree = TypeAliasType(lambda: int | list[json_tree])  # type: ignore[misc]
    # The inner json_tree is "any value", so the list loses its items.
    assert schema_for(json_tree) == {"type": ["integer", "array"]}


def test_type_alias_with_undefined_value() -> None:
    def undefined() -> object:
        raise NameError("Undefined")

    assert schema_for(TypeAliasType(undefined)) is None
    assert schema_for(list[TypeAliasType(undefined)]) == {"type": "array"}  # type: ignore[misc]


def test_typing_extensions_type_alias() -> None:
    typing_extensions = pytest.importorskip("typing_extensions")
    alias = typing_extensions.TypeAliasType("alias", list[int] | None)
    assert schema_for(alias) == {"anyOf": [{"type": "array", "items": INT}, {"type": "null"}]}


# --- signature_schemas ---------------------------------------------------------------------


def greet(  # type: ignore[no-untyped-def]
    name: str, times: int = 1, *, loud: bool = False, extra=None
) -> list[str]:
    return [name] * times


class Greeter:
    def hello(self, who: str, mark: Literal["!", "?"] = "!") -> str:
        return who + mark

    @classmethod
    def make(cls, count: int) -> Greeter:
        return cls()

    @staticmethod
    def shout(text: str) -> None:
        return None

    def __call__(self, times: int) -> Sequence[str]:
        return ["hi"] * times


def broken(a: int, b: OnlyForTypeCheckers, c: list[OnlyForTypeCheckers]) -> OnlyForTypeCheckers:
    raise NotImplementedError


def test_signature_of_string_annotated_function() -> None:
    assert signature_schemas(greet) == (
        {"name": STR, "times": INT, "loud": {"type": "boolean"}},
        {"type": "array", "items": STR},
    )


def test_signature_of_bound_method_drops_self() -> None:
    assert signature_schemas(Greeter().hello) == (
        {"who": STR, "mark": {"enum": ["!", "?"]}},
        STR,
    )


def test_signature_of_classmethod_and_staticmethod() -> None:
    params, result = signature_schemas(Greeter.make)
    assert params == {"count": INT}
    assert result is None  # Greeter is a class the schema knows nothing about
    assert signature_schemas(Greeter.shout) == ({"text": STR}, {"type": "null"})


def test_signature_of_callable_instance_and_class() -> None:
    assert signature_schemas(Greeter()) == ({"times": INT}, {"type": "array", "items": STR})
    # A dataclass's generated __init__ carries the string annotations of its fields.
    assert signature_schemas(Point) == (
        {"x": {"type": "number"}, "y": {"type": "number"}},
        {"type": "null"},  # __init__ returns None
    )


def countdown(start: int) -> Iterator[int]:
    yield from range(start, 0, -1)


async def ticks(every: float) -> AsyncGenerator[Point, None]:
    yield Point(0.0, every)


def test_signature_of_stream_methods_describes_their_items() -> None:
    # The return annotation of a generator is the stream: its schema is an array, and a
    # stream's item schema is its "items".
    assert signature_schemas(countdown) == ({"start": INT}, {"type": "array", "items": INT})
    params, result = signature_schemas(ticks)
    assert params == {"every": {"type": "number"}}
    assert result is not None
    assert result["type"] == "array"
    assert result["items"]["title"] == "Point"


def test_signature_of_wrapped_function() -> None:
    @functools.wraps(greet)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return greet(*args, **kwargs)

    assert signature_schemas(wrapper) == signature_schemas(greet)


def test_signature_with_unresolvable_annotation_keeps_the_rest() -> None:
    # get_type_hints() fails on the whole function; each annotation is then resolved on its
    # own, and only the ones naming the TYPE_CHECKING-only import are skipped.
    assert signature_schemas(broken) == ({"a": INT}, None)


def test_signature_of_function_without_annotations() -> None:
    def plain(a, b=1):  # type: ignore[no-untyped-def]
        return a

    assert signature_schemas(plain) == ({}, None)


@pytest.mark.parametrize("builtin", [len, math.sqrt, max, dict.get, print])
def test_signature_of_builtins(builtin: Callable[..., Any]) -> None:
    assert signature_schemas(builtin) == ({}, None)


def test_signature_schemas_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(annotation: object, seen: frozenset[object]) -> JsonSchema:
        raise RuntimeError("unexpected annotation")

    monkeypatch.setattr(_schema, "_schema", explode)
    assert signature_schemas(greet) == ({}, None)


def test_dataclass_with_unresolvable_field_keeps_the_rest() -> None:
    @dataclass
    class Partial:
        count: int
        price: OnlyForTypeCheckers

    assert schema_for(Partial) == {
        "type": "object",
        "title": "Partial",
        "properties": {"count": INT, "price": {}},
        "required": ["count", "price"],
    }


# --- the schemas themselves ----------------------------------------------------------------

JSON_TYPES = {"null", "boolean", "integer", "number", "string", "array", "object"}
SUBSCHEMA_KEYS = {"items", "additionalProperties", "not"}
SUBSCHEMA_LIST_KEYS = {"prefixItems", "anyOf"}
PLAIN_KEYS = {"type", "minItems", "maxItems", "required", "enum", "const", "title"}
PLAIN_KEYS |= {"default", "contentEncoding", "properties"}


def produced_schemas() -> list[JsonSchema]:
    schemas = [case.values[1] for case in CASES if case.values[1] is not None]
    for annotation in (Node, Employee, Tree):
        schema = schema_for(annotation)
        assert schema is not None
        schemas.append(schema)
    schemas.extend(signature_schemas(greet)[0].values())
    return schemas


def check_structure(schema: object) -> None:
    """A small, dependency-free stand-in for a meta-schema check."""
    assert isinstance(schema, dict)
    assert set(schema) <= SUBSCHEMA_KEYS | SUBSCHEMA_LIST_KEYS | PLAIN_KEYS, schema
    types = schema.get("type", [])
    assert set([types] if isinstance(types, str) else types) <= JSON_TYPES
    for key in SUBSCHEMA_KEYS & set(schema):
        if schema[key] is not False:  # additionalProperties: false is a boolean schema
            check_structure(schema[key])
    for key in SUBSCHEMA_LIST_KEYS & set(schema):
        assert schema[key], f"{key} must not be empty"
        for item in schema[key]:
            check_structure(item)
    for item in schema.get("properties", {}).values():
        check_structure(item)


@pytest.mark.parametrize("schema", produced_schemas())
def test_schema_is_plain_json(schema: JsonSchema) -> None:
    assert json.loads(json.dumps(schema, allow_nan=False)) == schema
    check_structure(schema)


@pytest.mark.parametrize("schema", produced_schemas())
def test_schema_is_valid_json_schema(schema: JsonSchema) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    ("annotation", "valid", "invalid"),
    [
        (Movie, {"title": "Up", "tags": []}, {"title": "Up", "tags": [], "rating": 5}),
        (Optional[int], None, 1.5),
        (tuple[int, str], [1, "a"], [1, "a", 2]),
        (Config, {"name": "x", "retries": 2}, {"retries": 2}),
        (Literal[1, True], True, 2),
    ],
)
def test_schema_accepts_and_rejects(annotation: object, valid: object, invalid: object) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = schema_for(annotation)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(valid)
    assert not validator.is_valid(invalid)
