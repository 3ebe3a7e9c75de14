"""Mapping HTTP arguments onto positional calls (gateway.args): tables of (entry, input,
expected arguments) and of (entry, input, exact problem document), plus properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.args import (
    MAX_ERRORS,
    Signature,
    args_for_route,
    args_from_body,
    args_from_named,
    gather_named,
    query_value,
    signature,
)
from gateway.problems import Problem

# def add(self, a, b=2) on one of our servers.
CALC: dict[str, Any] = {
    "args": [
        {"name": "self", "kind": "self"},
        {"name": "a", "kind": "named", "schema": {"type": "integer"}},
        {"name": "b", "default": 2, "kind": "named"},
    ],
    "doc": "Add.",
    "stream": False,
}
# def spread(self, a, b=2, c=3, *rest)
VARIADIC: dict[str, Any] = {
    "args": [
        {"name": "self", "kind": "self"},
        {"name": "a", "kind": "named"},
        {"name": "b", "default": 2, "kind": "named"},
        {"name": "c", "default": 3, "kind": "named"},
    ],
    "varargs": "rest",
    "doc": None,
    "stream": False,
}
# A zerorpc 0.6.3 backend, described by _zerorpc_list + _zerorpc_help.
LEGACY: dict[str, Any] = {"args": None, "doc": "Add.", "stream": None}
# Another server's _zerorpc_inspect: no kinds, the bound instance is a first "self".
NO_KINDS: dict[str, Any] = {
    "args": [{"name": "self"}, {"name": "x"}, {"name": "y", "default": None}],
    "doc": None,
}
# A plain function whose arguments happen to be named self (kinds say so, or not first).
SELF_IS_AN_ARG: dict[str, Any] = {"args": [{"name": "self", "kind": "named"}], "doc": None}
SELF_NOT_FIRST: dict[str, Any] = {"args": [{"name": "x"}, {"name": "self"}], "doc": None}
# def f(x, /, y)
POSITIONAL_ONLY: dict[str, Any] = {
    "args": [{"name": "x", "kind": "positional"}, {"name": "y", "kind": "named"}],
    "doc": None,
}
MALFORMED: dict[str, Any] = {"args": [{"nom": "x"}], "doc": None}
# def mix(self, base, tint=Color.GREEN, strength=0.5, *rest): tint's default is an enum
# member msgpack cannot carry, so only its repr is published, marked default_repr.
PAINT: dict[str, Any] = {
    "args": [
        {"name": "self", "kind": "self"},
        {"name": "base", "kind": "named"},
        {"name": "tint", "default": "<Color.GREEN: 'green'>", "default_repr": True},
        {"name": "strength", "default": 0.5, "kind": "named"},
    ],
    "varargs": "rest",
    "doc": None,
}

RPC = {"service": "calc", "method": "add"}


def call(entry: dict[str, Any], body: Any) -> list[Any]:
    return args_from_body(entry, body, service="calc", method="add")


def refusal(entry: dict[str, Any], body: Any) -> dict[str, Any]:
    with pytest.raises(Problem) as caught:
        call(entry, body)
    return caught.value.document()


def bad_request(detail: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "urn:zerogate:problem:invalid_argument",
        "title": "Bad Request",
        "status": 400,
        "detail": detail,
        "code": "invalid_argument",
        "rpc": RPC,
        "errors": errors,
    }


def error(loc: list[Any], msg: str, type_: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": type_}


# -- signatures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (CALC, Signature(["a", "b"], {"b": 2}, None)),
        (VARIADIC, Signature(["a", "b", "c"], {"b": 2, "c": 3}, "rest")),
        (NO_KINDS, Signature(["x", "y"], {"y": None}, None)),
        (SELF_IS_AN_ARG, Signature(["self"], {}, None)),
        (SELF_NOT_FIRST, Signature(["x", "self"], {}, None)),
        (POSITIONAL_ONLY, Signature(["x", "y"], {}, None)),
        (
            PAINT,
            Signature(
                ["base", "tint", "strength"],
                {"tint": "<Color.GREEN: 'green'>", "strength": 0.5},
                "rest",
                frozenset({"tint"}),
            ),
        ),
        (
            {"args": [{"name": "x", "default": "x", "default_repr": "yes"}]},
            Signature(["x"], {"x": "x"}, None),
        ),
        (LEGACY, None),
        (MALFORMED, None),
        ({"args": "x"}, None),
        ({}, None),
    ],
)
def test_signature(entry: dict[str, Any], expected: Signature | None) -> None:
    assert signature(entry) == expected


# -- bodies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "body", "expected"),
    [
        (CALC, [1, 2], [1, 2]),
        (CALC, [1], [1]),  # b left to the backend's own default
        (CALC, {"a": 1}, [1]),
        (CALC, {"b": 5, "a": 1}, [1, 5]),  # the introspected order, not the body's
        (VARIADIC, {"a": 1, "c": 5}, [1, 2, 5]),  # the gap at b is filled with its default
        (VARIADIC, {"a": 1, "rest": [7, 8]}, [1, 2, 3, 7, 8]),
        (VARIADIC, {"a": 1, "b": 0, "rest": []}, [1, 0]),
        (VARIADIC, [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]),
        (LEGACY, [1, "x", {"y": None}], [1, "x", {"y": None}]),  # unchecked
        (LEGACY, [], []),
        (LEGACY, {}, []),
        (LEGACY, None, []),
        (NO_KINDS, {"x": 1}, [1]),
        (NO_KINDS, {"y": 2, "x": 1}, [1, 2]),
        (SELF_IS_AN_ARG, {"self": 1}, [1]),
        (SELF_NOT_FIRST, {"self": 2, "x": 1}, [1, 2]),
        (POSITIONAL_ONLY, {"y": 2, "x": 1}, [1, 2]),  # we only send positions
        (MALFORMED, [1], [1]),
        # A default that cannot be sent is left to the backend, never filled in.
        (PAINT, {"base": 1}, [1]),
        (PAINT, {"base": 1, "tint": "red"}, [1, "red"]),
        (PAINT, {"strength": 0.7, "tint": "red", "base": 1}, [1, "red", 0.7]),
        (PAINT, [1], [1]),
        (PAINT, [1, "red", 0.7, 8], [1, "red", 0.7, 8]),
    ],
)
def test_body_mapped(entry: dict[str, Any], body: Any, expected: list[Any]) -> None:
    assert call(entry, body) == expected


@pytest.mark.parametrize(
    ("entry", "body", "detail", "errors"),
    [
        (
            CALC,
            [],
            "calc.add: missing required argument 'a'",
            [error(["body", 0], "missing required argument 'a'", "missing_argument")],
        ),
        (
            CALC,
            None,  # an empty body is checked like an empty array
            "calc.add: missing required argument 'a'",
            [error(["body", 0], "missing required argument 'a'", "missing_argument")],
        ),
        (
            CALC,
            [1, 2, 3, 4],
            "calc.add: takes 2 arguments (a, b), got 4",
            [
                error(["body", 2], "unexpected extra argument", "unexpected_argument"),
                error(["body", 3], "unexpected extra argument", "unexpected_argument"),
            ],
        ),
        (
            NO_KINDS,
            [],
            "calc.add: missing required argument 'x'",
            [error(["body", 0], "missing required argument 'x'", "missing_argument")],
        ),
        (
            {"args": [{"name": "p"}, {"name": "q"}], "doc": None},
            [],
            "calc.add: missing required arguments 'p', 'q'",
            [
                error(["body", 0], "missing required argument 'p'", "missing_argument"),
                error(["body", 1], "missing required argument 'q'", "missing_argument"),
            ],
        ),
        (
            {"args": [], "doc": None},
            [1],
            "calc.add: takes 0 arguments (no arguments), got 1",
            [error(["body", 0], "unexpected extra argument", "unexpected_argument")],
        ),
        (
            CALC,
            {},
            "calc.add: missing required argument 'a'",
            [error(["body", "a"], "missing required argument", "missing_argument")],
        ),
        (
            CALC,
            {"b": 1, "c": 2, "self": 0},
            "calc.add: missing required argument 'a'; unexpected arguments 'c', 'self' "
            "(arguments: a, b)",
            [
                error(["body", "a"], "missing required argument", "missing_argument"),
                error(["body", "c"], "unexpected argument", "unexpected_argument"),
                error(["body", "self"], "unexpected argument", "unexpected_argument"),
            ],
        ),
        (
            VARIADIC,
            {"a": 1, "rest": 5, "d": 0},
            "calc.add: 'rest' must be an array (it is *rest); unexpected argument 'd' "
            "(arguments: a, b, c, *rest)",
            [
                error(["body", "rest"], "must be an array of the extra arguments", "invalid_type"),
                error(["body", "d"], "unexpected argument", "unexpected_argument"),
            ],
        ),
        (
            CALC,
            {1: "x", b"k": "y", "a": 1},  # msgpack bodies may have keys of any type
            "calc.add: unexpected arguments 1, b'k' (arguments: a, b)",
            [
                error(["body", 1], "unexpected argument", "unexpected_argument"),
                error(["body", "b'k'"], "unexpected argument", "unexpected_argument"),
            ],
        ),
        (
            LEGACY,
            {"a": 1},
            "calc.add: this backend (e.g. zerorpc 0.6.3) does not publish argument names, so "
            "named arguments cannot be placed; send a JSON array of positional arguments",
            [error(["body", "a"], "argument names are unknown", "argument_names_unknown")],
        ),
        (
            CALC,
            "1, 2",
            "calc.add: the body must be a JSON array (positional arguments) or object "
            "(named arguments), not a string",
            [error(["body"], "must be an array or an object, not a string", "invalid_type")],
        ),
        (
            LEGACY,
            3.5,
            "calc.add: the body must be a JSON array (positional arguments) or object "
            "(named arguments), not a number",
            [error(["body"], "must be an array or an object, not a number", "invalid_type")],
        ),
        (
            CALC,
            True,
            "calc.add: the body must be a JSON array (positional arguments) or object "
            "(named arguments), not a boolean",
            [error(["body"], "must be an array or an object, not a boolean", "invalid_type")],
        ),
        (
            CALC,
            b"\x01",
            "calc.add: the body must be a JSON array (positional arguments) or object "
            "(named arguments), not binary data",
            [error(["body"], "must be an array or an object, not binary data", "invalid_type")],
        ),
    ],
)
def test_body_refused(
    entry: dict[str, Any], body: Any, detail: str, errors: list[dict[str, Any]]
) -> None:
    assert refusal(entry, body) == bad_request(detail, errors)


UNSENDABLE_MSG = "give it explicitly: its default cannot be sent (a later argument is given)"


@pytest.mark.parametrize(
    "body",
    [
        {"base": 1, "strength": 0.7},  # tint's gap before a given argument
        {"base": 1, "rest": [9]},  # the extra arguments come after every named position
    ],
)
def test_a_gap_a_default_cannot_fill_is_refused(body: dict[str, Any]) -> None:
    assert refusal(PAINT, body) == bad_request(
        "calc.add: give 'tint' explicitly: its default cannot be sent, and a later argument "
        "is given",
        [error(["body", "tint"], UNSENDABLE_MSG, "default_not_sendable")],
    )


def test_unsendable_defaults_are_reported_with_the_other_problems() -> None:
    entry = {
        "args": [
            {"name": "a", "default": "<object>", "default_repr": True},
            {"name": "b", "default": "<object>", "default_repr": True},
            {"name": "c"},
        ]
    }
    doc = refusal(entry, {"c": 1, "d": 2})
    assert doc["detail"] == (
        "calc.add: unexpected argument 'd' (arguments: a, b, c); give 'a', 'b' explicitly: "
        "their default cannot be sent, and a later argument is given"
    )
    assert [e["type"] for e in doc["errors"]] == [
        "unexpected_argument",
        "default_not_sendable",
        "default_not_sendable",
    ]


def test_a_route_parameter_after_an_unsendable_default_needs_it_given() -> None:
    with pytest.raises(Problem) as caught:
        args_for_route(
            PAINT,
            path={"strength": "0.9"},
            query=[("base", "1")],
            body=None,
            service="calc",
            method="add",
            missing_in="query",
        )
    assert caught.value.document()["errors"] == [
        error(["query", "tint"], UNSENDABLE_MSG, "default_not_sendable")
    ]
    given_all = args_for_route(
        PAINT,
        path={"strength": "0.9"},
        query=[("base", "1"), ("tint", "red")],
        body=None,
        service="calc",
        method="add",
    )
    assert given_all == [1, "red", 0.9]


def test_many_unexpected_names_keep_the_answer_small() -> None:
    body = {f"x{i}": i for i in range(200)} | {"a": 1}
    doc = refusal(CALC, body)
    assert doc["detail"] == (
        "calc.add: unexpected arguments 'x0', 'x1', 'x2', 'x3', 'x4' and 195 more (arguments: a, b)"
    )
    assert len(doc["errors"]) == MAX_ERRORS
    assert doc["errors"][-1] == error(
        ["body", f"x{MAX_ERRORS - 1}"], "unexpected argument", "unexpected_argument"
    )


# -- named arguments from several places ---------------------------------------------


def test_named_with_locations() -> None:
    named: dict[str, tuple[Any, Any]] = {"b": ("query", 4), "a": ("path", 3)}
    assert args_from_named(CALC, named, service="calc", method="add") == [3, 4]
    with pytest.raises(Problem) as caught:
        args_from_named(CALC, {"z": ("query", 1)}, service="calc", method="add", missing_in="query")
    assert caught.value.document()["errors"] == [
        error(["query", "a"], "missing required argument", "missing_argument"),
        error(["query", "z"], "unexpected argument", "unexpected_argument"),
    ]


def test_gather_named() -> None:
    named = gather_named(
        path={"a": "42", "id": 7},
        query=[("b", "hello"), ("c", "[1,2]")],
        body={"d": None},
        service="calc",
        method="add",
    )
    assert named == {
        "a": ("path", 42),  # path strings are read like query values
        "id": ("path", 7),  # a value a path convertor already typed is kept
        "b": ("query", "hello"),
        "c": ("query", [1, 2]),
        "d": ("body", None),
    }


def route(
    entry: dict[str, Any],
    *,
    path: dict[str, Any] | None = None,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    missing_in: Any = "body",
) -> list[Any]:
    return args_for_route(
        entry,
        path=path or {},
        query=query or [],
        body=body,
        service="calc",
        method="add",
        missing_in=missing_in,
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"query": [("a", "1"), ("b", "x")]}, [1, "x"]),
        ({"query": [("b", '"7"'), ("a", "007")]}, ["007", "7"]),
        ({"path": {"a": "42"}, "body": {"b": [1]}}, [42, [1]]),
        ({"path": {"a": "1"}}, [1]),
        ({"body": [1, 2]}, [1, 2]),  # no parameters: the body alone, an array is fine
        ({"body": {"a": 1}}, [1]),
    ],
)
def test_route_mapped(kwargs: dict[str, Any], expected: list[Any]) -> None:
    assert route(CALC, **kwargs) == expected


def test_route_without_arguments() -> None:
    assert route({"args": [{"name": "x", "default": 1}], "doc": None}) == []
    assert route(LEGACY) == []
    with pytest.raises(Problem) as caught:
        route(CALC, missing_in="query")  # GET /rpc/calc/add without a query
    assert caught.value.document() == bad_request(
        "calc.add: missing required argument 'a'",
        [error(["query", "a"], "missing required argument", "missing_argument")],
    )


def test_route_varargs_from_the_query() -> None:
    assert route(VARIADIC, query=[("a", "0"), ("rest", "[9]")]) == [0, 2, 3, 9]


def test_route_reports_every_problem_at_once() -> None:
    with pytest.raises(Problem) as caught:
        route(
            CALC,
            path={"b": "1"},
            query=[("b", "2"), ("c", "x"), ("c", "y"), ("c", "z")],
            body={"b": 3},
            missing_in="query",
        )
    assert caught.value.document() == bad_request(
        "calc.add: query parameter 'c' repeated; send one value, a JSON array for a list "
        "(?ids=[1,2]); argument 'b' given in two places; missing required argument 'a'; "
        "unexpected argument 'c' (arguments: a, b)",
        [
            error(["query", "b"], "also given in the path", "conflicting_argument"),
            error(["body", "b"], "also given in the path", "conflicting_argument"),
            error(
                ["query", "c"],
                "given 3 times; send one value (a JSON array for a list)",
                "repeated_argument",
            ),
            error(["query", "a"], "missing required argument", "missing_argument"),
            error(["query", "c"], "unexpected argument", "unexpected_argument"),
        ],
    )


def test_route_body_must_be_an_object_beside_parameters() -> None:
    with pytest.raises(Problem) as caught:
        route(CALC, path={"a": "1"}, body=[2])
    assert caught.value.document() == bad_request(
        "calc.add: with path or query parameters the body must be a JSON object, not an array",
        [error(["body"], "must be an object of named arguments", "invalid_type")],
    )


def test_route_to_a_backend_without_names() -> None:
    with pytest.raises(Problem) as caught:
        route(LEGACY, query=[("a", "1")])
    assert caught.value.document()["errors"] == [
        error(["query", "a"], "argument names are unknown", "argument_names_unknown")
    ]
    assert route(LEGACY, body=[1, 2]) == [1, 2]


def test_gather_named_raises_conflicts() -> None:
    with pytest.raises(Problem) as caught:
        gather_named(
            path={"user_id": "1"}, query=[], body={"user_id": 2}, service="users", method="get"
        )
    assert caught.value.document()["detail"] == (
        "users.get: argument 'user_id' given in two places"
    )
    assert caught.value.document()["rpc"] == {"service": "users", "method": "get"}


# -- query values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-1.5", -1.5),
        (" 42", 42),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"007"', "007"),
        ("007", "007"),  # not JSON (a leading zero): the string
        ("hello", "hello"),
        ("nul", "nul"),
        ("", ""),
        ("[1,2]", [1, 2]),
        ('{"a":1}', {"a": 1}),
        ("[1,", "[1,"),
        ("NaN", "NaN"),  # Python's parser takes these; JSON does not
        ("-Infinity", "-Infinity"),
        ("Infinity", "Infinity"),
        ("1" * 5000, "1" * 5000),  # beyond int()'s digit limit
        ("[" * 65 + "]" * 65, "[" * 65 + "]" * 65),
        ("[" * 5000 + "]" * 5000, "[" * 5000 + "]" * 5000),
    ],
)
def test_query_value(text: str, expected: Any) -> None:
    assert query_value(text) == expected


def test_query_value_nesting_limit() -> None:
    value = query_value("[" * 64 + "]" * 64)
    for _ in range(63):
        assert isinstance(value, list)
        value = value[0]
    assert value == []


# -- properties ----------------------------------------------------------------------

names_st = st.lists(
    st.text(alphabet="abcdefghij", min_size=1, max_size=4), min_size=1, max_size=6, unique=True
)


@given(names=names_st, data=st.data())
def test_named_arguments_follow_the_introspected_order(names: list[str], data: Any) -> None:
    entry = {"args": [{"name": "self", "kind": "self"}] + [{"name": n} for n in names]}
    values = {name: data.draw(st.integers()) for name in names}
    shuffled = data.draw(st.permutations(names))
    body = {name: values[name] for name in shuffled}
    assert args_from_body(entry, body, service="s", method="m") == [values[n] for n in names]


@given(names=names_st, data=st.data())
def test_arity_is_checked_exactly(names: list[str], data: Any) -> None:
    required = data.draw(st.integers(0, len(names)))
    entry = {
        "args": [
            {"name": n} if i < required else {"name": n, "default": 0} for i, n in enumerate(names)
        ]
    }
    count = data.draw(st.integers(0, len(names) + 2))
    if required <= count <= len(names):
        assert args_from_body(entry, list(range(count)), service="s", method="m") == list(
            range(count)
        )
    else:
        with pytest.raises(Problem) as caught:
            args_from_body(entry, list(range(count)), service="s", method="m")
        problems = len(caught.value.extra["errors"])
        assert problems == (required - count if count < required else count - len(names))


@given(names=names_st, data=st.data())
def test_the_fast_path_of_objects_agrees_with_the_general_one(names: list[str], data: Any) -> None:
    required = data.draw(st.integers(0, len(names)))
    # Some defaults are only a repr: the fast path must leave their gaps to the general one.
    reprs = data.draw(st.sets(st.sampled_from(names)))
    entry = {
        "args": [
            {"name": n}
            if i < required
            else {"name": n, "default": -i, "default_repr": True}
            if n in reprs
            else {"name": n, "default": -i}
            for i, n in enumerate(names)
        ],
        "varargs": data.draw(st.sampled_from([None, "rest"])),
    }
    keys = st.sampled_from([*names, "rest", "zz"])
    body = data.draw(st.dictionaries(keys, st.integers() | st.lists(st.integers(), max_size=2)))
    named: dict[str, tuple[Any, Any]] = {name: ("body", value) for name, value in body.items()}

    def outcome(run: Any) -> Any:
        try:
            return run()
        except Problem as problem:
            return problem.document()

    fast = outcome(lambda: args_from_body(entry, body, service="s", method="m"))
    general = outcome(lambda: args_from_named(entry, named, service="s", method="m"))
    assert fast == general


@given(names=names_st, data=st.data())
def test_the_repr_of_a_default_is_never_sent(names: list[str], data: Any) -> None:
    reprs = data.draw(st.sets(st.sampled_from(names)))
    entry = {
        "args": [
            {"name": n, "default": f"<repr {n}>", "default_repr": True}
            if n in reprs
            else {"name": n, "default": i}
            for i, n in enumerate(names)
        ]
    }
    body = data.draw(st.dictionaries(st.sampled_from(names), st.integers()))
    try:
        args = args_from_body(entry, body, service="s", method="m")
    except Problem as problem:
        refused = {e["loc"][1] for e in problem.extra["errors"]}
        assert refused
        assert refused <= reprs - set(body)
        return
    assert not any(isinstance(arg, str) for arg in args)
