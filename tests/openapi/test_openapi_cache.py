"""openapi.DocumentCache: rendered once, rebuilt on a registry change or a new key, with a
strong ETag derived from the bytes; and the JSON and YAML renderings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml
from openapi_support import TYPED_CONFIG, typed_description, typed_document

from gateway import registry as registry_module
from gateway.config import ServiceConfig, parse_config
from gateway.pool import ServicePool
from gateway.registry import Description, Registry
from openapi import DocumentCache, Rendered, render_json, render_yaml


class Builds:
    """A build function that counts its calls and returns what it is told."""

    def __init__(self) -> None:
        self.calls = 0
        self.document: dict[str, Any] = {"openapi": "3.1.0", "n": 1}

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return dict(self.document)


def test_built_once_until_invalidated() -> None:
    build = Builds()
    cache = DocumentCache(build)
    first = cache.get()
    assert cache.get() is first
    assert build.calls == cache.builds == 1
    assert json.loads(first.body) == {"openapi": "3.1.0", "n": 1}
    cache.invalidate()
    assert cache.get() == first  # built again, the same bytes and ETag
    assert build.calls == 2


def test_a_new_key_rebuilds() -> None:
    build = Builds()
    cache = DocumentCache(build)
    cache.get("a")
    cache.get("a")
    assert build.calls == 1
    cache.get("b")
    assert build.calls == 2
    cache.get("b")
    assert build.calls == 2


def test_the_etag_follows_the_content() -> None:
    build = Builds()
    cache = DocumentCache(build)
    before = cache.get()
    build.document["n"] = 2
    cache.invalidate()
    after = cache.get()
    assert after.etag != before.etag
    assert after.etag.startswith('"')
    assert after.etag.endswith('"')
    assert len(after.etag) == 34
    assert "stale" not in repr(cache)
    cache.invalidate()
    assert "stale" in repr(cache)


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abd"', False),
        ("abc", False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert Rendered(b"{}", '"abc"').matches(header) is matches


def test_rebuilt_when_the_registry_reports_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(TYPED_CONFIG)
    described = typed_description(config)

    async def scenario() -> tuple[bytes, bytes, int]:
        registry = Registry(config)
        cache = DocumentCache.for_registry(registry, config, version="1")
        before = cache.get().body  # not described yet

        async def describe(self: ServicePool, timeout: float) -> dict[str, Any]:
            return {"methods": {}}  # what it says does not matter: exposed_description decides

        def exposed(service: ServiceConfig, answer: Any) -> Description:
            return described

        monkeypatch.setattr(ServicePool, "describe", describe)
        monkeypatch.setattr(registry_module, "exposed_description", exposed)
        await registry.open()  # describes every service: a change, so listeners run
        try:
            return before, cache.get().body, cache.builds
        finally:
            await registry.close()

    before, after, builds = asyncio.run(scenario())
    assert b"/rpc/shop/place" not in before
    assert b"Unavailable" in before
    assert b"/rpc/shop/place" in after
    assert builds == 2


def test_render_json_compact_and_indented() -> None:
    document = {"b": [1, "é"], "a": None}
    assert render_json(document) == '{"b":[1,"é"],"a":null}'.encode()
    assert render_json(document, indent=2).decode().endswith("}\n")
    assert json.loads(render_json(document, indent=2)) == document


def test_render_yaml_is_the_same_document_without_anchors() -> None:
    shared = {"type": "string"}
    text = render_yaml({"openapi": "3.1.0", "x": shared, "y": shared, "200": "ok"})
    assert "&id" not in text
    assert "*id" not in text
    assert text.startswith("openapi: 3.1.0\n")
    assert yaml.safe_load(text) == {"openapi": "3.1.0", "x": shared, "y": shared, "200": "ok"}
    document = typed_document()
    assert yaml.safe_load(render_yaml(document)) == json.loads(render_json(document))


def test_state_is_part_of_the_key() -> None:
    build = Builds()
    state = [1]
    cache = DocumentCache(build, state=lambda: state[0])
    cache.get()
    cache.get()
    assert build.calls == 1
    state[0] = 2
    cache.get()
    assert build.calls == 2


def test_a_description_fetched_on_demand_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call for a service not described yet describes it on demand (ServiceEntry.method):
    that change reaches the cache too, not only the periodic refresh."""
    config = parse_config(TYPED_CONFIG)
    described = typed_description(config)

    async def describe(self: ServicePool, timeout: float) -> dict[str, Any]:
        return {"methods": {}}

    def exposed(service: ServiceConfig, answer: Any) -> Description:
        return described

    monkeypatch.setattr(ServicePool, "describe", describe)
    monkeypatch.setattr(registry_module, "exposed_description", exposed)

    async def scenario() -> tuple[bytes, bytes]:
        registry = Registry(config)
        cache = DocumentCache.for_registry(registry, config, version="1")
        before = cache.get().body
        await registry.services["shop"].method("place")  # never opened: described on demand
        return before, cache.get().body

    before, after = asyncio.run(scenario())
    assert b"/rpc/shop/place" not in before
    assert b"/rpc/shop/place" in after
