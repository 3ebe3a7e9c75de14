"""The rendered document, kept until it may have changed, with a strong ETag.

Building and rendering the document takes milliseconds, and ``/openapi.json`` is fetched
by every docs page load and every client generator: the cache renders once and serves the
same bytes until the registry reports that a description changed (``Registry.on_change``),
or until it is asked for another ``key`` (anything the document depends on beyond the
descriptions, such as a mount path). The ETag is a hash of the bytes, so a rebuild that
changes nothing keeps the ETag clients hold.

    cache = DocumentCache.for_registry(registry, config)   # subscribes to on_change
    rendered = cache.get()
    if rendered.matches(request.headers.get("if-none-match")):
        ...  # 304 with ETag: rendered.etag
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .document import build_document, package_version
from .render import render_json

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.registry import Registry


@dataclass(frozen=True, slots=True)
class Rendered:
    """The document as JSON bytes, and their strong ETag (quoted, as the header wants)."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Rendered:
        return cls(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def matches(self, if_none_match: str | None) -> bool:
        """Whether ``If-None-Match`` names this version (answer 304). The comparison is the
        weak one RFC 9110 prescribes for If-None-Match, so ``W/"..."`` matches too."""
        if not if_none_match:
            return False
        tags = (tag.strip() for tag in if_none_match.split(","))
        return any(tag == "*" or tag.removeprefix("W/") == self.etag for tag in tags)


class DocumentCache:
    """``build()`` rendered once per change: ``invalidate()`` or a new key rebuilds. The key
    is what ``get`` is given, together with what ``state()`` returns when there is one."""

    def __init__(
        self,
        build: Callable[[], Mapping[str, Any]],
        *,
        state: Callable[[], Hashable] | None = None,
    ) -> None:
        self._build = build
        self._state = state
        self._rendered: Rendered | None = None
        self._key: Hashable = None
        self.builds = 0  # how many times the document was built (for tests and ops)

    def __repr__(self) -> str:
        state = "stale" if self._rendered is None else self._rendered.etag
        return f"<DocumentCache {state} builds={self.builds}>"

    @classmethod
    def for_registry(
        cls, registry: Registry, config: Config, *, version: str | None = None
    ) -> DocumentCache:
        """A cache of ``registry``'s document, rebuilt whenever a description changes."""
        version = version or package_version()

        def build() -> Mapping[str, Any]:
            descriptions = {name: e.description for name, e in registry.services.items()}
            return build_document(descriptions, config, version=version)

        # Every description that changes, however it was fetched (start, refresh, on demand,
        # after a NameError), calls the registry's listeners.
        cache = cls(build)
        registry.on_change(cache.invalidate)
        return cache

    def invalidate(self) -> None:
        """Build again on the next ``get`` (a ``Registry.on_change`` listener)."""
        self._rendered = None

    def get(self, key: Hashable = None) -> Rendered:
        """The rendered document, built now if it is stale or ``key`` changed."""
        if self._state is not None:
            key = (key, self._state())
        if self._rendered is None or key != self._key:
            self._rendered = Rendered.of(render_json(self._build()))
            self._key = key
            self.builds += 1
        return self._rendered
