"""Tests for rpccore._introspect: the ``_zerorpc_inspect`` and ``_zerorpc_args`` answers, and
how a default msgpack cannot carry is published."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack
import pytest

from rpccore._introspect import describe, method_args, method_entry


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Paint:
    def mix(self, base: Color, tint: Color = Color.GREEN, strength: float = 0.5) -> str:
        return f"{base} {tint} {strength}"

    def plain(self, a: int, b: tuple[int, ...] = (1, 2), c: Any = None) -> None:
        return None

    def odd(self, marker: frozenset[int] = frozenset({1}), big: int = 2**70) -> None:
        return None

    def drip(self, n: int) -> Iterator[int]:
        yield from range(n)

    async def flow(self, n: int) -> AsyncIterator[Color]:
        yield Color.RED


def args_of(method: Any) -> list[dict[str, Any]]:
    entry = method_entry(method, streams=False)
    args: list[dict[str, Any]] = entry["args"]
    return args


def test_sendable_defaults_are_published_as_they_are() -> None:
    assert args_of(Paint().plain) == [
        {"name": "self", "kind": "self"},
        {"name": "a", "kind": "named", "schema": {"type": "integer"}},
        {
            "name": "b",
            "default": (1, 2),
            "kind": "named",
            "schema": {"type": "array", "items": {"type": "integer"}},
        },
        {"name": "c", "default": None, "kind": "named"},
    ]


def test_a_default_msgpack_cannot_carry_is_its_repr_marked_as_such() -> None:
    _, base, tint, strength = args_of(Paint().mix)
    assert "default" not in base
    assert "default_repr" not in base
    # default keeps 0.6.3's format (the argument has one; this is what to show) ...
    assert tint["default"] == "<Color.GREEN: 'green'>"
    # ... and the marker says it is only a description, never a value to send.
    assert tint["default_repr"] is True
    assert strength["default"] == 0.5
    assert "default_repr" not in strength


@pytest.mark.parametrize(
    ("name", "shown"), [("marker", "frozenset({1})"), ("big", "1180591620717411303424")]
)
def test_every_kind_of_unsendable_default_is_marked(name: str, shown: str) -> None:
    (arg,) = [a for a in args_of(Paint().odd) if a["name"] == name]
    assert (arg["default"], arg.get("default_repr")) == (shown, True)


def test_the_whole_answer_packs_and_keeps_the_063_keys() -> None:
    answer = describe("paint", {"mix": Paint().mix, "odd": Paint().odd}, [])
    unpacked = msgpack.unpackb(msgpack.packb(answer, use_bin_type=True), raw=False)
    for entry in unpacked["methods"].values():
        # What a zerorpc 0.6.3 client reads: names, and a default when there is one.
        for arg in entry["args"]:
            assert {"name"} <= set(arg) <= {"name", "default", "default_repr", "kind", "schema"}


def test_zerorpc_args_lists_the_repr_like_getargspec() -> None:
    assert method_args(Paint().mix) == [
        ["self", "base", "tint", "strength"],
        None,
        None,
        ["<Color.GREEN: 'green'>", 0.5],
    ]


def test_stream_methods_publish_their_item_type() -> None:
    drip = method_entry(Paint().drip, streams=True)
    assert (drip["stream"], drip["returns"]) == (
        True,
        {"type": "array", "items": {"type": "integer"}},
    )
    flow = method_entry(Paint().flow, streams=True)
    assert flow["returns"] == {
        "type": "array",
        "items": {"title": "Color", "enum": ["red", "green"]},
    }
