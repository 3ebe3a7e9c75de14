"""What the registry exposes of a description (gateway/registry.py, the pure parts)."""

from __future__ import annotations

from typing import Any

from gateway.config import MethodFilter, ServiceConfig
from gateway.registry import exposed_description, public_args
from rpccore import _describe
from rpccore._introspect import describe


class Shop:
    """Sells things."""

    def get_item(self, name: str) -> str:
        """One item."""
        return name

    def list_items(self) -> list[str]:
        return []

    def admin_reset(self) -> None:
        """Danger."""

    def count(self, n: int):  # type: ignore[no-untyped-def]
        yield from range(n)


def description(config: ServiceConfig, answer: dict[str, Any]) -> Any:
    return exposed_description(config, _describe.from_inspect(answer))


def our_answer() -> dict[str, Any]:
    shop = Shop()
    methods = {name: getattr(shop, name) for name in ("get_item", "list_items", "admin_reset")}
    methods["count"] = shop.count
    return describe("shop", methods, ["count"], Shop.__doc__)


def test_globs_and_underscores_decide_what_exists() -> None:
    answer = our_answer()
    answer["methods"]["_secret"] = {"args": [], "doc": None}
    config = ServiceConfig(
        name="shop",
        endpoints=("tcp://127.0.0.1:1",),
        methods=MethodFilter(include=("*",), exclude=("admin_*",)),
        safe=("get_*", "list_*"),
    )
    found = description(config, answer)
    assert sorted(found.methods) == ["count", "get_item", "list_items"]
    assert found.methods["get_item"].safe
    assert not found.methods["count"].safe
    assert found.methods["count"].streams is True
    assert found.doc == "Sells things."
    assert found.introspection == "inspect"


def test_an_include_list_hides_everything_else() -> None:
    config = ServiceConfig(
        name="shop",
        endpoints=("tcp://127.0.0.1:1",),
        methods=MethodFilter(include=("get_*",), exclude=()),
    )
    assert list(description(config, our_answer()).methods) == ["get_item"]


def test_public_args_never_show_self() -> None:
    entry = our_answer()["methods"]["get_item"]
    assert public_args(entry) == [{"name": "name", "schema": {"type": "string"}}]
    # A 0.6.3-style entry (no kind): a first 'self' is the instance.
    plain = {"args": [{"name": "self"}, {"name": "a"}, {"name": "b", "default": 2}]}
    assert public_args(plain) == [{"name": "a"}, {"name": "b", "default": 2}]
    assert public_args({"args": None}) is None


def test_a_fallback_description_keeps_docs_and_unknown_args() -> None:
    config = ServiceConfig(name="shop", endpoints=("tcp://127.0.0.1:1",))
    found = exposed_description(
        config, _describe.from_fallback("shop", {"add": "Add.", "_hidden": None})
    )
    assert list(found.methods) == ["add"]
    assert found.methods["add"].entry["args"] is None
    assert found.introspection == "fallback"


def test_garbage_answers_give_no_methods() -> None:
    config = ServiceConfig(name="shop", endpoints=("tcp://127.0.0.1:1",))
    found = exposed_description(config, {"methods": "nope", "doc": 5})
    assert found.methods == {}
    assert found.doc is None
