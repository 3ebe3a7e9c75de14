"""The docs pages without a browser: what each route answers, its headers, and prefixes."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from typing import Any

import httpx
import pytest
from docs_support import STANDIN, source_of
from starlette.applications import Starlette

from openapi.pages import (
    ASSETS,
    IMMUTABLE,
    clean_prefix,
    docs_routes,
    load_assets,
    prefixed_servers,
    request_prefix,
    swagger_ui_version,
)


class Source:
    """A document source that counts its calls and can be changed."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.calls = 0
        self.set(document)

    def set(self, document: dict[str, Any]) -> None:
        self.body, self.etag = source_of(document)

    def __call__(self) -> tuple[bytes, str]:
        self.calls += 1
        return self.body, self.etag


class Client:
    """Requests to the app in memory (httpx's ASGI transport), one event loop each."""

    def __init__(self, source: Source, *, auth_on: bool = False, root_path: str = "") -> None:
        self.app = Starlette(routes=docs_routes(source, auth_on=auth_on))
        self.transport = httpx.ASGITransport(self.app, root_path=root_path)

    def request(self, method: str, path: str, headers: dict[str, str] | None) -> httpx.Response:
        async def send() -> httpx.Response:
            base = "http://testserver"
            async with httpx.AsyncClient(transport=self.transport, base_url=base) as client:
                return await client.request(method, path, headers=headers)

        return asyncio.run(asyncio.wait_for(send(), 10))

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", path, headers)

    def head(self, path: str) -> httpx.Response:
        return self.request("HEAD", path, None)

    @property
    def pages(self) -> Any:
        """The endpoints' object (``DocsPages``)."""
        return self.app.routes[0].endpoint.__self__  # type: ignore[attr-defined]


def client_for(
    document: dict[str, Any] = STANDIN, *, auth_on: bool = False, root_path: str = ""
) -> Client:
    return Client(Source(document), auth_on=auth_on, root_path=root_path)


@pytest.fixture
def client() -> Client:
    return client_for()


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


# -- /openapi.json ------------------------------------------------------------------------


def test_openapi_json_is_the_document_with_its_etag(client: Client) -> None:
    body, etag = source_of(STANDIN)
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.content == body
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["etag"] == etag
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["vary"] == "X-Forwarded-Prefix"


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ("{etag}", 304),
        ("W/{etag}", 304),  # If-None-Match compares weakly
        ('"other", {etag}', 304),
        ("*", 304),
        ('"other"', 200),
        ("", 200),
    ],
)
def test_openapi_json_revalidation(client: Client, if_none_match: str, status: int) -> None:
    _, etag = source_of(STANDIN)
    answer = client.get("/openapi.json", headers={"If-None-Match": if_none_match.format(etag=etag)})
    assert answer.status_code == status
    assert answer.headers["etag"] == etag
    if status == 304:
        assert answer.content == b""


def test_openapi_json_follows_the_source() -> None:
    source = Source(STANDIN)
    client = Client(source)
    first = client.get("/openapi.json")
    source.set({**STANDIN, "info": {"title": "new", "version": "2"}})
    second = client.get("/openapi.json", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.json()["info"]["title"] == "new"
    assert source.calls == 2


# -- prefixes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/api", "/api"),
        ("/api/", "/api"),
        ("/a/b-c/d_e.f~g", "/a/b-c/d_e.f~g"),
        ("/", ""),
        ("", None),
        ("api", None),  # not an absolute path
        ("//evil.example", None),  # a server URL "//host" is another host
        ("/a//b", None),
        ("/a/../b", None),
        ("/a/./b", None),
        ("/..", None),
        ("/a b", None),
        ("/a%2Fb", None),
        ('/"><script>alert(1)</script>', None),
        ("/a,/b", None),  # a list from several proxies: ambiguous
        ("https://evil.example/api", None),
        ("/é", None),
        ("/" + "a" * 300, None),
    ],
)
def test_clean_prefix(value: str, expected: str | None) -> None:
    assert clean_prefix(value) == expected


@pytest.mark.parametrize(
    ("headers", "root_path", "expected"),
    [
        ([], "", ""),
        ([], "/root", "/root"),
        ([(b"x-forwarded-prefix", b"/api")], "", "/api"),
        ([(b"x-forwarded-prefix", b"/api")], "/root", "/api"),  # the proxy's view wins
        ([(b"x-forwarded-prefix", b"//evil")], "/root", "/root"),  # invalid: ignored
        ([(b"x-forwarded-prefix", b"/a"), (b"x-forwarded-prefix", b"/b")], "", ""),
        ([], "/bad path", ""),
    ],
)
def test_request_prefix(headers: list[tuple[bytes, bytes]], root_path: str, expected: str) -> None:
    assert request_prefix({"type": "http", "headers": headers, "root_path": root_path}) == expected


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        (None, [{"url": "/api"}]),
        ([], [{"url": "/api"}]),
        ([{"url": "/"}], [{"url": "/api"}]),
        ([{"url": "/v1", "description": "d"}], [{"url": "/api/v1", "description": "d"}]),
        ([{"url": "https://api.example"}], [{"url": "https://api.example"}]),
        ([{"url": "//cdn.example"}], [{"url": "//cdn.example"}]),
        ([{"url": "."}], [{"url": "."}]),
    ],
)
def test_prefixed_servers(servers: Any, expected: list[Any]) -> None:
    assert prefixed_servers(servers, "/api") == expected


def test_openapi_json_behind_a_forwarded_prefix(client: Client) -> None:
    plain = client.get("/openapi.json")
    answer = client.get("/openapi.json", headers={"X-Forwarded-Prefix": "/api/"})
    assert answer.json()["servers"] == [{"url": "/api"}]
    assert answer.json()["paths"] == STANDIN["paths"]
    assert answer.headers["etag"] != plain.headers["etag"]  # another representation
    again = client.get(
        "/openapi.json",
        headers={"X-Forwarded-Prefix": "/api", "If-None-Match": answer.headers["etag"]},
    )
    assert again.status_code == 304
    stale = client.get("/openapi.json", headers={"If-None-Match": answer.headers["etag"]})
    assert stale.status_code == 200
    assert stale.json()["servers"] == [{"url": "/"}]


def test_openapi_json_under_a_root_path() -> None:
    answer = client_for(root_path="/root").get("/root/openapi.json")
    assert answer.status_code == 200
    assert answer.json()["servers"] == [{"url": "/root"}]


def test_an_invalid_forwarded_prefix_is_ignored(client: Client) -> None:
    evil = '/"></script><script>alert(1)</script>'
    answer = client.get("/openapi.json", headers={"X-Forwarded-Prefix": evil})
    assert answer.json()["servers"] == [{"url": "/"}]
    page = client.get("/docs", headers={"X-Forwarded-Prefix": evil}).text
    assert "alert" not in page


def test_prefixed_documents_are_bounded(client: Client) -> None:
    for n in range(100):
        client.get("/openapi.json", headers={"X-Forwarded-Prefix": f"/p{n}"})
    assert len(client.pages._prefixed) <= 16


# -- /docs --------------------------------------------------------------------------------


def test_docs_page(client: Client) -> None:
    answer = client.get("/docs")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "connect-src 'self';" in csp
    page = answer.text
    assert 'data-spec="openapi.json"' in page
    assert 'data-persist-authorization="false"' in page
    # Only relative URLs: the page works under any prefix, and nothing comes from a CDN.
    urls = asset_urls(page)
    assert urls
    assert all(not url.startswith(("/", "http:", "https:")) and "//" not in url for url in urls)
    # No inline script: every <script> has a src.
    assert re.findall(r"<script\b[^>]*>", page) == [
        f'<script src="{url}" defer>' for url in urls if url.endswith(".js") or ".js?" in url
    ]


def test_docs_page_with_auth_keeps_the_authorization() -> None:
    page = client_for(auth_on=True).get("/docs").text
    assert 'data-persist-authorization="true"' in page


def test_docs_page_is_the_same_under_any_prefix(client: Client) -> None:
    plain = client.get("/docs").content
    assert client.get("/docs", headers={"X-Forwarded-Prefix": "/api"}).content == plain
    assert client_for(root_path="/root").get("/root/docs").content == plain


def test_docs_page_assets_resolve_under_a_prefix() -> None:
    """Every URL of the page, resolved like a browser at /root/docs, is served."""
    client = client_for(root_path="/root")
    for url in asset_urls(client.get("/root/docs").text):
        assert client.get(f"/root/{url}").status_code == 200, url


# -- /docs/assets -------------------------------------------------------------------------


def test_swagger_ui_is_version_5() -> None:
    assert swagger_ui_version().startswith("5.")


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("docs.js", "text/javascript; charset=utf-8"),
        ("reference.css", "text/css; charset=utf-8"),
        ("favicon-32x32.png", "image/png"),
    ],
)
def test_assets(client: Client, name: str, content_type: str) -> None:
    asset = load_assets()[name]
    answer = client.get(f"/docs/assets/{name}?v={asset.version}", headers={"Accept-Encoding": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == content_type
    assert answer.headers["cache-control"] == IMMUTABLE
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["etag"] == asset.etag
    assert "content-encoding" not in answer.headers
    assert answer.content == asset.body


def test_every_asset_the_page_names_is_known(client: Client) -> None:
    urls = [u for u in asset_urls(client.get("/docs").text) if u.startswith("docs/assets/")]
    names = {url.removeprefix("docs/assets/").split("?")[0] for url in urls}
    assert names <= set(ASSETS)
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "docs.js"} <= names


def test_an_asset_without_its_version_is_revalidated(client: Client) -> None:
    asset = load_assets()["swagger-ui.css"]
    for url in ("/docs/assets/swagger-ui.css", "/docs/assets/swagger-ui.css?v=old"):
        answer = client.get(url)
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-cache"
    revalidated = client.get("/docs/assets/swagger-ui.css", headers={"If-None-Match": asset.etag})
    assert revalidated.status_code == 304
    assert revalidated.content == b""


def test_assets_are_gzipped_when_accepted(client: Client) -> None:
    asset = load_assets()["swagger-ui-bundle.js"]
    answer = client.get("/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"})
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["vary"] == "Accept-Encoding"
    assert int(answer.headers["content-length"]) < len(asset.body) // 2
    assert answer.content == asset.body  # httpx decoded it
    refused = client.get(
        "/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip;q=0, br"}
    )
    assert "content-encoding" not in refused.headers
    png = client.get("/docs/assets/favicon-32x32.png", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in png.headers
    assert gzip.decompress(gzip.compress(asset.body)) == asset.body


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/nope.js",
        "/docs/assets/index.css",  # in the package, but not served
        "/docs/assets/oauth2-redirect.html",
        "/docs/assets/..%2F..%2Fpages.py",
        "/docs/assets/..%2Fassets%2Fdocs.js",
        "/docs/assets/%2e%2e",
        "/docs/assets/../pages.py",
        "/docs/assets/swagger-ui.css/x",
        "/docs/assets/",
    ],
)
def test_unknown_assets_are_not_found(client: Client, path: str) -> None:
    assert client.get(path).status_code == 404


def test_head_requests(client: Client) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/docs.js"):
        answer = client.head(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"] == client.get(path).headers["content-type"]


# -- /redoc -------------------------------------------------------------------------------


def test_reference_page(client: Client) -> None:
    answer = client.get("/redoc")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in answer.headers["content-security-policy"]  # none at all
    page = answer.text
    assert "<script" not in page
    assert '<section class="service" id="tag-calc"><h2>calc</h2>' in page
    assert "A calculator." in page
    assert '<span class="method post">POST</span> <code>/rpc/calc/add</code>' in page
    assert "operation id <code>calc.add</code>" in page
    assert "Add two integers." in page
    assert "Returns a + b." in page
    # The body's schema: a link to the named schema, or a positional array.
    assert '<a href="#schema-calc.add.args">calc.add.args</a> | [integer, integer]' in page
    assert "<td><code>b</code></td><td>integer</td><td></td><td><code>1</code></td>" in page
    # A parameter, and a response from components.
    assert "<td><code>name</code></td><td>query</td><td>string | null</td><td>required</td>" in page
    assert "A problem document." in page
    assert '<section class="schemas" id="schemas">' in page
    # Every in-page link has its target.
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert {href[1:] for href in re.findall(r'href="(#[^"]*)"', page)} <= ids
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert stylesheet
    assert client.get(stylesheet.group(1).replace("&amp;", "&")).status_code == 200


def test_reference_page_with_security_schemes() -> None:
    document = {
        **STANDIN,
        "components": {
            **STANDIN["components"],
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
    page = client_for(document).get("/redoc").text
    assert "<h2>Authentication</h2>" in page
    assert "<td><code>bearerAuth</code></td><td>http bearer</td>" in page
    assert "credentials: bearerAuth" in page


def test_reference_page_escapes_everything() -> None:
    evil = '<script>alert("x")</script>'
    document = {
        "openapi": "3.1.0",
        "info": {"title": evil, "version": evil, "description": evil},
        "tags": [{"name": evil, "description": evil}],
        "paths": {
            f"/rpc/{evil}": {
                "post": {
                    "tags": [evil],
                    "operationId": evil,
                    "summary": evil,
                    "description": evil,
                    "parameters": [{"name": evil, "in": evil, "description": evil}],
                    "requestBody": {
                        "content": {
                            evil: {
                                "schema": {
                                    "type": "object",
                                    "properties": {evil: {"enum": [evil], "default": evil}},
                                }
                            }
                        }
                    },
                    "responses": {evil: {"description": evil}},
                }
            }
        },
        "components": {"schemas": {evil: {"format": evil, "type": evil}}},
    }
    page = client_for(document).get("/redoc").text
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    ids = re.findall(r'id="([^"]+)"', page)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", i) for i in ids)


def test_reference_page_of_odd_documents() -> None:
    """Missing or mistyped parts of a document give a smaller page, never an error."""
    for document in (
        {"openapi": "3.1.0"},
        {"openapi": "3.1.0", "paths": {"/x": {"get": {}}}, "tags": "no"},
        {"openapi": "3.1.0", "paths": {"/x": {"parameters": [{"name": "p"}], "post": {}}}},
        {"openapi": "3.1.0", "paths": {"/x": {"get": {"responses": {"200": {"$ref": "#/x"}}}}}},
        {"openapi": "3.1.0", "paths": {"/x": {"get": {"requestBody": {"$ref": "#/a/b"}}}}},
    ):
        answer = client_for(document).get("/redoc")
        assert answer.status_code == 200, json.dumps(document)
        assert "<html" in answer.text


def test_reference_page_revalidation() -> None:
    source = Source(STANDIN)
    client = Client(source)
    first = client.get("/redoc")
    again = client.get("/redoc", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    source.set({**STANDIN, "info": {"title": "Renamed", "version": "2"}})
    changed = client.get("/redoc", headers={"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200
    assert "Renamed" in changed.text
