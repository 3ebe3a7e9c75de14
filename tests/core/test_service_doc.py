"""The ``doc`` extension key of ``_zerorpc_inspect``: the exposed service's docstring."""

from __future__ import annotations

import types

from rpccore import _describe
from rpccore._service import Service


class Documented:
    """Adds things.

    The second paragraph stays."""

    def add(self, a: int, b: int) -> int:
        return a + b


class Undocumented:
    def add(self, a: int, b: int) -> int:
        return a + b


def test_an_instance_is_documented_by_its_class() -> None:
    answer = Service(Documented())._inspect()
    assert answer["doc"] == "Adds things.\n\nThe second paragraph stays."
    assert list(answer) == ["name", "doc", "methods"]


def test_no_docstring_means_no_key_so_063_sees_its_own_format() -> None:
    assert "doc" not in Service(Undocumented())._inspect()
    assert "doc" not in Service({"add": lambda a, b: a + b})._inspect()


def test_a_module_is_documented_by_itself_not_by_the_module_type() -> None:
    module = types.ModuleType("tools", "Tools for tests.")
    module.add = lambda a, b: a + b  # type: ignore[attr-defined]
    assert Service(module)._inspect()["doc"] == "Tools for tests."


def test_describe_carries_the_doc_and_ignores_a_non_string() -> None:
    answer = Service(Documented())._inspect()
    assert _describe.from_inspect(answer)["doc"] == answer["doc"]
    assert _describe.from_inspect({"name": "x", "doc": 5, "methods": {}})["doc"] is None
