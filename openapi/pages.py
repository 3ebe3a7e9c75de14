"""The docs pages: ``/openapi.json``, Swagger UI at ``/docs``, and a reference at ``/redoc``.

    /openapi.json         the document, with an ETag (If-None-Match -> 304), revalidated always
    /docs                 Swagger UI 5 (it renders OpenAPI 3.1), "Try it out" against us
    /docs/assets/{file}   Swagger UI's files from the installed Python package, and ours
    /redoc                the whole reference as plain HTML, rendered here, no script at all

Nothing is fetched from a CDN: the machine may have no internet, and a docs page that loads
third-party script is a page anyone who controls that CDN can rewrite. Swagger UI's files come
from the ``flask-swagger-ui`` distribution (the best-kept package that ships Swagger UI 5's
``dist`` folder; ``swagger-ui-bundle`` still ships 4.x). We only read its files and never
import it, since its module imports Flask.

Behind a path prefix (uvicorn ``--root-path``, or a proxy that strips a prefix and says so in
``X-Forwarded-Prefix``) the pages work unchanged: every URL in them is relative to the page
(``/api/docs`` loads ``/api/docs/assets/...`` and ``/api/openapi.json``), so no request text is
ever written into HTML or script. The prefix matters in one place: the document's ``servers``,
which Swagger UI resolves to send "Try it out" requests (with none, it calls the page's origin
and misses the prefix). The builder leaves ``servers`` out, or writes ``[{"url": "/"}]``;
behind a prefix, ``/openapi.json`` sets ``servers`` to the prefix (put in front of each
absolute-path server URL), so the calls go to ``/api/rpc/...``. A prefix is used only when it
is a plain path (letters, digits, ``-._~`` segments); anything else is ignored. The header is
client input: it changes only that client's own answer, and ``Vary`` names it for caches.

Each asset's URL carries a hash of its content (``?v=``): with the right hash an asset is
cached for a year (a new package version is a new URL); without it, the browser revalidates.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from ._reference import render_reference

__all__ = ["DocumentSource", "clean_prefix", "docs_routes", "request_prefix"]

DocumentSource = Callable[[], tuple[bytes, str]]
"""Returns the OpenAPI document as JSON bytes and its strong ETag (``"..."``)."""

# The distribution that ships Swagger UI 5's dist folder, and where the folder is in it.
SWAGGER_UI_PACKAGE: Final = "flask_swagger_ui"
SWAGGER_UI_DIST: Final = "dist"
_OUR_ASSETS: Final = Path(__file__).resolve().parent / "docs-assets"

_BUNDLE: Final = "swagger-ui-bundle.js"
_JS: Final = "text/javascript; charset=utf-8"
_CSS: Final = "text/css; charset=utf-8"
_PNG: Final = "image/png"
# file name -> (content type, where it comes from: Swagger UI's package or ours)
ASSETS: Final[dict[str, tuple[str, str]]] = {
    _BUNDLE: (_JS, "swagger-ui"),
    "swagger-ui.css": (_CSS, "swagger-ui"),
    "favicon-32x32.png": (_PNG, "swagger-ui"),
    "favicon-16x16.png": (_PNG, "swagger-ui"),
    "docs.js": (_JS, "ours"),
    "reference.css": (_CSS, "ours"),
}

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
# Swagger UI sets inline styles and uses data: images; everything else is our own origin, so
# the page cannot load a CDN or send the document anywhere even if a future bundle tried.
DOCS_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
REFERENCE_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS: Final = {"Cache-Control": REVALIDATE, "X-Content-Type-Options": "nosniff"}

MAX_PREFIX: Final = 200
_SEGMENT: Final = re.compile(r"[A-Za-z0-9._~-]+")
_PREFIX_CACHE_SIZE: Final = 16
_MIN_GZIP: Final = 1024  # smaller files gain nothing worth a Content-Encoding


def clean_prefix(value: str) -> str | None:
    """``value`` as a path prefix: ``"/a/b"``, ``""`` for the root; None if it is not a plain
    absolute path (``//host`` would make a server URL point at another host)."""
    if len(value) > MAX_PREFIX or not value.startswith("/"):
        return None
    trimmed = value.rstrip("/")
    if not trimmed:
        return ""
    segments = trimmed[1:].split("/")
    if all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        return trimmed
    return None


def request_prefix(scope: Scope) -> str:
    """The path in front of the app, as the browser sees it: a valid ``X-Forwarded-Prefix``
    (the proxy stripped it), else the ASGI ``root_path`` (uvicorn ``--root-path``), else ""."""
    forwarded = [v for k, v in scope.get("headers", ()) if k == b"x-forwarded-prefix"]
    if len(forwarded) == 1:
        prefix = clean_prefix(forwarded[0].decode("latin-1"))
        if prefix is not None:
            return prefix
    return clean_prefix(scope.get("root_path", "") or "/") or ""


def docs_routes(document: DocumentSource, *, auth_on: bool) -> list[BaseRoute]:
    """The routes of the docs pages; ``document()`` is called per request (it should cache).

    With ``auth_on``, Swagger UI keeps what was entered under "Authorize" across reloads (in
    the browser's local storage); the schemes it offers are the document's."""
    pages = DocsPages(document, auth_on=auth_on)
    return [
        Route("/openapi.json", pages.openapi_json, methods=["GET"]),
        Route("/docs", pages.swagger_ui, methods=["GET"]),
        Route("/docs/assets/{file}", pages.asset, methods=["GET"]),
        Route("/redoc", pages.reference, methods=["GET"]),
    ]


@dataclass(slots=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # a hash of the content: the ?v= of its URL, and its ETag
    gzipped: bytes | None = field(default=None, repr=False)  # made on first demand

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


@cache
def load_assets() -> dict[str, Asset]:
    """Every file of ``ASSETS``, read once per process (about 2 MB)."""
    spec = importlib.util.find_spec(SWAGGER_UI_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec else []
    if not locations:
        raise RuntimeError(
            f"Swagger UI's files are missing: install the {SWAGGER_UI_PACKAGE!r} package"
        )
    folders = {"swagger-ui": Path(locations[0]) / SWAGGER_UI_DIST, "ours": _OUR_ASSETS}
    assets = {}
    for name, (content_type, origin) in ASSETS.items():
        body = (folders[origin] / name).read_bytes()
        assets[name] = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])
    return assets


def swagger_ui_version() -> str:
    """The Swagger UI version the bundle was built as (``"5.34.0"``), or "" if not found."""
    found = re.search(rb'PACKAGE_VERSION:"([0-9][0-9A-Za-z.+-]*)"', load_assets()[_BUNDLE].body)
    return found.group(1).decode() if found else ""


class DocsPages:
    """The endpoints; it keeps the rendered reference and the prefixed documents."""

    def __init__(self, document: DocumentSource, *, auth_on: bool) -> None:
        self.document = document
        self.auth_on = auth_on
        self.assets = load_assets()  # at start: a missing package fails here, not on a click
        self._swagger_page = _swagger_page(self.assets, persist_authorization=auth_on)
        self._prefixed: dict[str, tuple[str, bytes, str]] = {}  # prefix -> (source etag, ...)
        self._reference: tuple[str, bytes] | None = None  # (source etag, page)

    def __repr__(self) -> str:
        return f"<DocsPages auth_on={self.auth_on} prefixes={len(self._prefixed)}>"

    async def openapi_json(self, request: Request) -> Response:
        body, etag = self.document()
        prefix = request_prefix(request.scope)
        if prefix:
            body, etag = self._with_prefix(prefix, body, etag)
        headers = {
            "ETag": etag,
            "Cache-Control": REVALIDATE,
            # The body depends on the prefix header: a shared cache must not mix them up.
            "Vary": "X-Forwarded-Prefix",
        }
        if _none_match(request.headers.get("if-none-match"), etag):
            return Response(None, 304, headers)
        return Response(body, 200, headers, "application/json")

    def _with_prefix(self, prefix: str, body: bytes, etag: str) -> tuple[bytes, str]:
        cached = self._prefixed.get(prefix)
        if cached is not None and cached[0] == etag:
            return cached[1], cached[2]
        document = json.loads(body)
        document["servers"] = prefixed_servers(document.get("servers"), prefix)
        new_body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        tag = hashlib.sha256(f"{etag} {prefix}".encode()).hexdigest()[:32]
        new_etag = f'"{tag}"'
        if len(self._prefixed) >= _PREFIX_CACHE_SIZE:  # bounded: the header is client input
            self._prefixed.clear()
        self._prefixed[prefix] = (etag, new_body, new_etag)
        return new_body, new_etag

    async def swagger_ui(self, request: Request) -> Response:
        headers = {**_PAGE_HEADERS, "Content-Security-Policy": DOCS_CSP}
        return HTMLResponse(self._swagger_page, 200, headers)

    async def reference(self, request: Request) -> Response:
        source, source_etag = self.document()
        etag = f'"{_etag_value(source_etag)}-ref"'
        headers = {**_PAGE_HEADERS, "Content-Security-Policy": REFERENCE_CSP, "ETag": etag}
        if _none_match(request.headers.get("if-none-match"), etag):
            return Response(None, 304, headers)
        if self._reference is None or self._reference[0] != source_etag:
            css = f"docs/assets/reference.css?v={self.assets['reference.css'].version}"
            page = render_reference(json.loads(source), stylesheet=css).encode()
            self._reference = (source_etag, page)
        return Response(self._reference[1], 200, headers, "text/html; charset=utf-8")

    async def asset(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["file"])
        if found is None:  # only the files named in ASSETS: no path reaches the disk
            raise HTTPException(404)
        fresh = request.query_params.get("v") == found.version
        headers = {
            "ETag": found.etag,
            "Cache-Control": IMMUTABLE if fresh else REVALIDATE,
            "X-Content-Type-Options": "nosniff",
        }
        compressible = len(found.body) >= _MIN_GZIP and not found.content_type.startswith("image")
        if compressible:
            headers["Vary"] = "Accept-Encoding"
        if _none_match(request.headers.get("if-none-match"), found.etag):
            return Response(None, 304, headers)
        body = found.body
        if compressible and _accepts_gzip(request.headers.get("accept-encoding", "")):
            if found.gzipped is None:  # once per process, off the event loop (~50 ms)
                found.gzipped = await run_in_threadpool(gzip.compress, found.body, 6, mtime=0)
            body = found.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, 200, headers, found.content_type)


def prefixed_servers(servers: Any, prefix: str) -> list[Any]:
    """The document's ``servers`` seen from behind ``prefix``: absolute-path URLs get the
    prefix in front (no servers means ``/``); full URLs and relative ones stay as they are."""
    if not isinstance(servers, list) or not servers:
        servers = [{"url": "/"}]
    out: list[Any] = []
    for server in servers:
        url = server.get("url") if isinstance(server, dict) else None
        if isinstance(url, str) and url.startswith("/") and not url.startswith("//"):
            out.append({**server, "url": prefix + url.rstrip("/")})
        else:
            out.append(server)
    return out


def _swagger_page(assets: dict[str, Asset], *, persist_authorization: bool) -> bytes:
    """The /docs page: no inline script (docs.js reads its settings from data attributes),
    and only relative URLs, so the same bytes work under any prefix."""

    def url(name: str) -> str:
        return f"docs/assets/{name}?v={assets[name].version}"

    persist = "true" if persist_authorization else "false"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API docs</title>
<link rel="stylesheet" href="{url("swagger-ui.css")}">
<link rel="icon" type="image/png" sizes="32x32" href="{url("favicon-32x32.png")}">
<link rel="icon" type="image/png" sizes="16x16" href="{url("favicon-16x16.png")}">
<script src="{url(_BUNDLE)}" defer></script>
<script src="{url("docs.js")}" defer></script>
</head>
<body>
<noscript><p>This page needs JavaScript. <a href="redoc">The reference</a> does not.</p>
</noscript>
<div id="swagger-ui" data-spec="openapi.json" data-persist-authorization="{persist}"></div>
</body>
</html>
""".encode()


def _etag_value(etag: str) -> str:
    return etag.removeprefix("W/").strip('"')


def _none_match(header: str | None, etag: str) -> bool:
    """If-None-Match compares weakly (RFC 9110 13.1.2): ``W/"x"`` matches ``"x"``."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = _etag_value(etag)
    return any(_etag_value(tag.strip()) == wanted for tag in header.split(","))


def _accepts_gzip(header: str) -> bool:
    return any(_gzip_coding(part.split(";")) for part in header.split(","))


def _gzip_coding(parts: Iterable[str]) -> bool:
    name, *params = (p.strip().lower() for p in parts)
    if name not in ("gzip", "*"):
        return False
    return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
