"""The /docs page in a real headless Chromium, with the network cut off but for the gateway.

A real gateway (uvicorn on a loopback port) serves two services from real backends: ``calc``
(``backends.Shop`` on the asyncio driver) and ``shop`` (the same on gevent), and the document
the builder makes of them (``openapi.cache.DocumentCache``). Debian's Chromium, driven by
Playwright through its own executable (Playwright downloads nothing), opens /docs. Every
request that is not to the gateway is refused and recorded, and the host resolver knows no
name at all, so a page that reached for a CDN would fail visibly. The test sees every service
and operation of the document, runs ``calc.add`` through "Try it out" and reads the result in
the response panel; the second test does it behind a path prefix with a token. Each keeps a
screenshot in ``test-artifacts/`` (ignored by git).

Under CI=true a missing Chromium or Playwright fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from chromium import headless_chromium
from docs_support import Children, Gateway, service_config, start_backend
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import AuthMode
from openapi.cache import DocumentCache
from openapi.pages import docs_routes

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page, Route

REPO: Final = Path(__file__).resolve().parent.parent.parent
ARTIFACTS: Final = REPO / "test-artifacts"
TOKEN: Final = "zgw_test_token"
PREFIX: Final = "/api"
CDN_HINTS: Final = ("unpkg", "jsdelivr", "cdnjs", "googleapis", "swagger.io", "cloudflare")


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    procs = Children(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with headless_chromium(tmp_path / "profile", height=900) as context:
        yield context


class Front:
    """What stands before the gateway's app in these tests.

    - A proxy: with a ``prefix``, only ``prefix/...`` is served; the prefix is stripped and
      named in ``X-Forwarded-Prefix``, as nginx or Traefik would.
    - A token check on ``/rpc/...``, Bearer or X-API-Key (a stand-in until the app has auth).
    - The docs pages, sent to their own app (until ``Gateway.own_routes()`` serves them).
    Every request is recorded in ``seen``: (method, path as the browser sent it, credentials).
    """

    def __init__(self, app: ASGIApp, docs: ASGIApp, *, prefix: str, token: str | None) -> None:
        self.app = app
        self.docs = docs
        self.prefix = prefix
        self.token = token
        self.seen: list[tuple[str, str, str | None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path: str = scope["path"]
        credentials = headers.get(b"authorization") or headers.get(b"x-api-key")
        self.seen.append((scope["method"], path, credentials.decode() if credentials else None))
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                await PlainTextResponse("outside the prefix", 404)(scope, receive, send)
                return
            path = path[len(self.prefix) :]
            forwarded = (b"x-forwarded-prefix", self.prefix.encode())
            scope = {
                **scope,
                "path": path,
                "raw_path": path.encode(),
                "headers": [*scope["headers"], forwarded],
            }
        if self.token and path.startswith("/rpc/") and not self._authorized(headers):
            answer = JSONResponse({"title": "Unauthorized", "status": 401}, 401)
            await answer(scope, receive, send)
            return
        docs = path in ("/openapi.json", "/docs", "/redoc") or path.startswith("/docs/")
        await (self.docs if docs else self.app)(scope, receive, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self.token is not None
        return headers.get(b"authorization") == f"Bearer {self.token}".encode() or (
            headers.get(b"x-api-key") == self.token.encode()
        )


class DocsGateway(Gateway):
    """``Gateway`` (a real uvicorn) with ``Front`` before the app; ``base`` is the URL the
    browser uses (the prefix included)."""

    def __init__(self, config_text: str, *, prefix: str = "", token: str | None = None) -> None:
        super().__init__(config_text)
        auth = token is not None
        config = self.config
        if auth:  # the document as a token-auth config has it (Front checks the token)
            config = dataclasses.replace(
                config, auth=dataclasses.replace(config.auth, mode=AuthMode.TOKEN)
            )
        cache = DocumentCache.for_registry(self.app.state.gateway.registry, config)

        def document() -> tuple[bytes, str]:
            rendered = cache.get()
            return rendered.body, rendered.etag

        docs = Starlette(routes=docs_routes(document, auth_on=auth))
        self.front = Front(self.app, docs, prefix=prefix, token=token)
        self.server.config.app = self.front  # uvicorn loads the app when it starts
        self.base = self.url + prefix

    def __enter__(self) -> DocsGateway:
        super().__enter__()
        return self

    def wait_described(self, services: set[str], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base, timeout=5) as http:
            while True:
                catalog = http.get("/rpc").json()["services"]
                if all(catalog.get(name, {}).get("methods") for name in services):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"services not described after {timeout} s: {catalog}")
                time.sleep(0.05)

    def document(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.base}/openapi.json", timeout=5)
        assert answer.status_code == 200
        document: dict[str, Any] = answer.json()
        return document


class Network:
    """Refuses (and records) every request of the browser that is not to ``origin``; keeps
    the page's script errors and console errors."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.origin = origin
        self.refused: list[str] = []
        self.errors: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort("blockedbyclient")

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"script: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )

    def check(self, *expected: str) -> None:
        """Nothing refused, and no error but the ``expected`` ones."""
        assert not any(hint in url for url in self.refused for hint in CDN_HINTS), self.refused
        assert self.refused == []
        assert [e for e in self.errors if not any(text in e for text in expected)] == []


def two_services(children: Children) -> str:
    calc, _ = start_backend(children, "aio")
    shop, _ = start_backend(children, "green")
    safe = '["get_*", "list_*"]'
    return "\n".join(
        ["services:", service_config("calc", [calc], safe=safe), service_config("shop", [shop])]
    )


def operations_of(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def open_docs(page: Page, base: str, document: dict[str, Any]) -> list[str]:
    """Open /docs, wait until every operation of ``document`` is listed, check they all are,
    and every tag: the tags shown."""
    page.goto(f"{base}/docs")
    expected = operations_of(document)
    page.wait_for_function(
        "n => document.querySelectorAll('.opblock').length >= n", arg=len(expected)
    )
    shown = page.evaluate(
        """() => Array.from(document.querySelectorAll('.opblock')).map(block => [
            block.querySelector('.opblock-summary-method').textContent.trim(),
            block.querySelector('.opblock-summary-path').dataset.path])"""
    )
    assert {(method, path) for method, path in shown} == expected
    assert len(shown) == len(expected)
    tags: list[str] = page.evaluate(
        "() => Array.from(document.querySelectorAll('h3.opblock-tag')).map(h => h.dataset.tag)"
    )
    # Swagger UI shows the tags that have operations, in the document's order.
    used = {
        tag for item in document["paths"].values() for op in item.values() for tag in op["tags"]
    }
    assert tags == [tag["name"] for tag in document["tags"] if tag["name"] in used]
    return tags


def calc_add(page: Page) -> Locator:
    path = page.locator('.opblock-summary-path[data-path="/rpc/calc/add"]')
    return page.locator(".opblock.opblock-post").filter(has=path)


def expand(operation: Locator) -> None:
    # Deep linking reopens, after a reload, the operation that was open: a click would close it.
    if "is-open" not in (operation.get_attribute("class") or "").split():
        operation.locator(".opblock-summary-control").click()


def execute(page: Page, operation: Locator, body: str) -> tuple[str, str, str]:
    """Fill the request body and press Execute: (status, response body, request URL)."""
    from playwright.sync_api import expect

    if operation.locator("button.try-out__btn.cancel").count() == 0:
        operation.locator("button.try-out__btn").click()
    operation.locator("textarea.body-param__text").fill(body)
    answered = operation.locator(".live-responses-table tbody .response-col_status")
    if answered.count():  # an earlier answer: clear it, to wait for this one
        operation.locator("button.btn-clear").click()
        expect(answered).to_have_count(0)
    operation.locator("button.execute").click()
    expect(answered).to_have_count(1)
    status = answered.inner_text().strip().split()[0]
    result = operation.locator(".live-responses-table tbody .response-col_description pre")
    request_url = operation.locator(".request-url pre").inner_text().strip()
    return status, result.first.inner_text().strip(), request_url


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


@pytest.mark.slow
def test_docs_page_lists_everything_and_tries_a_call(
    children: Children, browser: BrowserContext
) -> None:
    with DocsGateway(two_services(children)) as gateway:
        gateway.wait_described({"calc", "shop"})
        document = gateway.document()
        network = Network(browser, gateway.url)
        page = browser.new_page()
        network.watch(page)

        assert {"calc", "shop"} <= set(open_docs(page, gateway.base, document))
        operation = calc_add(page)
        expand(operation)
        status, result, url = execute(page, operation, json.dumps({"a": 2, "b": 3}))
        assert (status, result) == ("200", "5")
        assert url == f"{gateway.url}/rpc/calc/add"
        assert ("POST", "/rpc/calc/add", None) in gateway.front.seen
        screenshot(page, "docs-page.png")

        # The reference page lists the same operations, and needs no script.
        page.goto(f"{gateway.base}/redoc")
        ids = page.locator(".op-id code").all_inner_texts()
        expected_ids = {
            op["operationId"] for item in document["paths"].values() for op in item.values()
        }
        assert set(ids) == expected_ids
        network.check()


@pytest.mark.slow
def test_docs_page_behind_a_prefix_with_a_token(
    children: Children, browser: BrowserContext
) -> None:
    with DocsGateway(two_services(children), prefix=PREFIX, token=TOKEN) as gateway:
        gateway.wait_described({"calc", "shop"})
        document = gateway.document()
        assert document["servers"] == [{"url": PREFIX}]
        network = Network(browser, gateway.url)
        page = browser.new_page()
        network.watch(page)

        open_docs(page, gateway.base, document)
        operation = calc_add(page)
        expand(operation)
        status, _, url = execute(page, operation, "[2, 3]")
        assert status == "401"  # not authorized yet
        assert url == f"{gateway.url}{PREFIX}/rpc/calc/add"

        # Authorize offers the document's schemes; give the token as a bearer.
        page.locator(".auth-wrapper button.authorize").click()
        page.locator("#auth-bearer-value").fill(TOKEN)
        bearer = page.locator(".auth-container").filter(has=page.locator("#auth-bearer-value"))
        schemes = page.locator(".auth-container h4 code").all_inner_texts()
        assert schemes == list(document["components"]["securitySchemes"])
        bearer.locator("button.authorize").click()
        page.locator(".modal-ux button.btn-done").first.click()
        status, result, url = execute(page, operation, "[2, 3]")
        assert (status, result) == ("200", "5")
        assert ("POST", f"{PREFIX}/rpc/calc/add", f"Bearer {TOKEN}") in gateway.front.seen
        screenshot(page, "docs-page-prefix-token.png")

        # The authorization outlives a reload (persistAuthorization).
        page.reload()
        page.wait_for_selector(".auth-wrapper button.authorize.locked")
        operation = calc_add(page)
        expand(operation)
        status, result, _ = execute(page, operation, '{"a": 40, "b": 2}')
        assert (status, result) == ("200", "42")
        network.check("status of 401 (Unauthorized)")  # Chromium logs the first answer
