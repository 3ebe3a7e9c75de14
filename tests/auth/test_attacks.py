"""An attack corpus against the door, end to end: every request below is sent byte for byte
(``send_raw``) to a real uvicorn running the gateway with ``auth.mode: token``, on each
token store, and none of them may get through.

"Getting through" is judged where it matters, at the backend: it records every request it
receives (``gate_support.LedgerBackend``), and each attack lists exactly what may reach it
(nearly always nothing). The answer must also be the right refusal: 401 with the bare
challenge when no credential was sent, 401 ``invalid_token`` for a bad one, 400
``invalid_request`` for two different ones, 403 ``insufficient_scope`` for a target the
token's scopes do not cover, else the router's 404 or 405; each a problem document.

The token ``reader`` may call ``shop.add``, ``shop.get_item`` and ``shop.list_items``; the
corpus aims at ``shop.delete_all``, ``shop.get_secret`` (a safe method, so GET works for it)
and the whole ``admin`` service, through ``/rpc``, REST routes, JSON-RPC, encodings, case,
slashes, verbs, override headers and sizes. Each attack comes from a loopback address of its
own, so the per-address limit on failed authentications stays out of the way (it has its
own test in ``test_gate_e2e.py``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from gate_support import (
    AuthSetup,
    Gateway,
    Issued,
    LedgerBackend,
    RawAnswer,
    TokenSpec,
    assert_problem,
    assert_refused,
    http_request,
    next_address,
    send_raw,
)

ORIGIN = "https://app.example"
READER_SCOPES = ("shop:add", "shop:get_item", "shop:list_items")
HUGE = 1024 * 1024  # far past the 64 KiB bound on a request head, and past any single read


@dataclass(frozen=True)
class Keys:
    reader: Issued
    full: Issued
    revoked: Issued
    expired: Issued

    @property
    def r(self) -> str:
        return self.reader.token


Build = Callable[[Keys], bytes]
Check = Callable[[RawAnswer, Keys], None]


@dataclass(frozen=True)
class Attack:
    name: str
    build: Build
    check: Check
    reaches: Sequence[str] = field(default=())  # what the backend may receive: service.method


# -- fixtures (children, backend and setup: conftest.py) -----------------------------------------


@pytest.fixture(scope="module")
def keys(setup: AuthSetup) -> Keys:
    reader, full, revoked, expired = setup.issue_many(
        [
            TokenSpec("reader", READER_SCOPES),
            TokenSpec("full", ["shop:*", "admin:*"]),
            TokenSpec("revoked", ["shop:*", "admin:*"]),
            TokenSpec("expired", ["shop:*", "admin:*"], expires_in=-1),
        ]
    )
    revoke = setup.token_command("revoke", revoked.id)
    assert revoke.returncode == 0, revoke.stderr
    return Keys(reader, full, revoked, expired)


@pytest.fixture(scope="module")
def gateway(setup: AuthSetup) -> Iterator[Gateway]:
    with Gateway(setup.config(cors=[ORIGIN])) as running:
        yield running


# -- building requests --------------------------------------------------------------------------

Headers = Sequence[tuple[str | bytes, str | bytes]]


def req(
    method: str,
    target: str,
    token: Callable[[Keys], str] | None = None,
    *,
    headers: Callable[[Keys], Headers] | None = None,
    body: Any = None,
) -> Build:
    """A request; ``token`` goes in ``Authorization: Bearer``; ``body`` is sent as JSON
    (bytes as they are)."""

    def build(keys: Keys) -> bytes:
        extra: list[tuple[str | bytes, str | bytes]] = []
        if token is not None:
            extra.append(("Authorization", f"Bearer {token(keys)}"))
        if headers is not None:
            extra += headers(keys)
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            extra.append(("Content-Type", "application/json"))
        elif method in ("POST", "PUT", "PATCH"):
            data = b""
        return http_request(method, target, extra, data)

    return build


def reader(keys: Keys) -> str:
    return keys.r


def full(keys: Keys) -> str:
    return keys.full.token


def basic_header(token: str) -> str:
    """HTTP Basic credentials with ``token`` as the password, as a browser sends them."""
    return "Basic " + base64.b64encode(f"ops:{token}".encode()).decode()


def with_headers(*pairs: tuple[str | bytes, str | bytes | Callable[[Keys], str | bytes]]) -> Any:
    def headers(keys: Keys) -> Headers:
        return [(name, value(keys) if callable(value) else value) for name, value in pairs]

    return headers


def flip(token: str, position: int) -> str:
    """``token`` with the character at ``position`` changed (its checksum is not fixed)."""
    char = token[position]
    return token[:position] + ("B" if char == "A" else "A") + token[position + 1 :]


def swap(token: str) -> str:
    """Two neighbouring, different characters of the random part swapped."""
    for i in range(4, 39):
        if token[i] != token[i + 1]:
            return token[:i] + token[i + 1] + token[i] + token[i + 2 :]
    raise AssertionError("a token of one repeated character")


# -- what the answers must be -------------------------------------------------------------------


def no_credentials(answer: RawAnswer, keys: Keys) -> None:
    problem = assert_refused(answer, 401)
    assert "needs a token" in problem["detail"]


def query_token(answer: RawAnswer, keys: Keys) -> None:
    problem = assert_refused(answer, 401)
    assert "query string are not accepted" in problem["detail"]


def invalid(why: str = "") -> Check:
    def check(answer: RawAnswer, keys: Keys) -> None:
        problem = assert_refused(answer, 401, "invalid_token")
        assert why in problem["detail"], problem
        assert keys.r not in answer.body.decode("latin-1")

    return check


def conflict(answer: RawAnswer, keys: Keys) -> None:
    assert_refused(answer, 400, "invalid_request")


def scope(service: str, method: str) -> Check:
    def check(answer: RawAnswer, keys: Keys) -> None:
        problem = assert_refused(answer, 403, "insufficient_scope")
        assert problem["rpc"] == {"service": service, "method": method}

    return check


def status(code: int) -> Check:
    """The router's (or an endpoint's) own refusal, as a problem document."""

    def check(answer: RawAnswer, keys: Keys) -> None:
        assert_problem(answer, code)

    return check


def head(code: int, challenge: str | None = None) -> Check:
    """A HEAD answer: the status and headers of the GET's, no body."""

    def check(answer: RawAnswer, keys: Keys) -> None:
        assert answer.status == code, answer
        assert answer.body == b""
        assert (answer.header("content-type") or "").startswith("application/problem+json")
        if challenge is not None:
            assert answer.header("www-authenticate") == challenge

    return check


def parser_refusal(code: int) -> Check:
    """Refused by the HTTP layer before the app: only the status is ours to check."""

    def check(answer: RawAnswer, keys: Keys) -> None:
        assert answer.status == code, answer

    return check


def head_too_large(answer: RawAnswer, keys: Keys) -> None:
    """431, or the connection closed on a client still sending (a reset can destroy the
    answer in flight): either way, nothing was served."""
    if answer.reset and answer.status == 0:
        return
    assert_problem(answer, 431)


def preflight(answer: RawAnswer, keys: Keys) -> None:
    """A CORS preflight is answered by the CORS layer, outside the door: browsers never
    send credentials with one, and it calls nothing."""
    assert answer.status == 200, answer
    assert answer.header("access-control-allow-origin") == ORIGIN
    assert answer.header("access-control-allow-methods")


def foreign_preflight(answer: RawAnswer, keys: Keys) -> None:
    assert answer.status == 400, answer
    assert answer.header("access-control-allow-origin") is None


def cross_origin_no_token(answer: RawAnswer, keys: Keys) -> None:
    no_credentials(answer, keys)
    assert answer.header("access-control-allow-origin") == ORIGIN


def ok(answer: RawAnswer, keys: Keys) -> None:
    assert answer.status == 200, answer


def jsonrpc(method: str, params: Any = None, request_id: Any = None) -> dict[str, Any]:
    call: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        call["params"] = params
    if request_id is not None:
        call["id"] = request_id
    return call


def rpc_answers(expected: dict[Any, int | None]) -> Check:
    """A 200 JSON-RPC batch answer: for each id, the error code (None: a result)."""

    def check(answer: RawAnswer, keys: Keys) -> None:
        assert answer.status == 200, answer
        body = answer.json()
        items = body if isinstance(body, list) else [body]
        got = {item["id"]: item.get("error", {}).get("code") for item in items}
        assert got == expected, body
        for item in items:
            if item.get("error", {}).get("code") == -32003:
                assert item["error"]["data"]["status"] == 403

    return check


def no_content(answer: RawAnswer, keys: Keys) -> None:
    assert answer.status == 204, answer


# -- the corpus ---------------------------------------------------------------------------------

ADD = [1, 2]

ATTACKS = [
    # No credentials, or credentials where none are read.
    Attack("no-token-post", req("POST", "/rpc/shop/delete_all"), no_credentials),
    Attack("no-token-safe-get", req("GET", "/rpc/shop/get_secret"), no_credentials),
    Attack("no-token-catalog", req("GET", "/rpc"), no_credentials),
    Attack("no-token-service-catalog", req("GET", "/rpc/admin"), no_credentials),
    Attack(
        "no-token-jsonrpc",
        req("POST", "/jsonrpc", body=[jsonrpc("shop.delete_all", [], 1)]),
        no_credentials,
    ),
    Attack("no-token-rest-route", req("POST", "/purge"), no_credentials),
    Attack("no-token-metrics", req("GET", "/metrics"), no_credentials),
    Attack("no-token-unknown-path", req("GET", "/admin"), no_credentials),
    Attack(
        "token-in-query-access_token",
        lambda k: req("GET", f"/rpc/shop/get_secret?access_token={k.r}")(k),
        query_token,
    ),
    Attack(
        "token-in-query-api_key",
        lambda k: req("GET", f"/rpc/shop/get_item?name=a&api_key={k.r}")(k),
        query_token,
    ),
    Attack(
        "token-in-cookie",
        req(
            "GET",
            "/rpc/shop/get_item?name=a",
            headers=with_headers(("Cookie", lambda k: f"token={k.r}")),
        ),
        no_credentials,
    ),
    Attack(
        "proxy-authorization",
        req(
            "POST",
            "/rpc/shop/add",
            headers=with_headers(("Proxy-Authorization", lambda k: f"Bearer {k.r}")),
            body=ADD,
        ),
        no_credentials,
    ),
    # Malformed Authorization and X-API-Key headers.
    Attack("bearer-without-token", req("POST", "/rpc/shop/add", lambda k: "", body=ADD), invalid()),
    Attack(
        "basic-scheme",
        req(
            "POST",
            "/rpc/shop/add",
            headers=with_headers(("Authorization", "Basic dXNlcjpwYXNz")),
            body=ADD,
        ),
        invalid(),
    ),
    # A browser that was given Basic credentials for the trace pages sends them with every
    # request to the gateway, cross-site ones too: they open the pages and nothing else.
    Attack(
        "basic-full-token-post",
        req(
            "POST",
            "/rpc/shop/delete_all",
            headers=with_headers(("Authorization", lambda k: basic_header(k.full.token))),
        ),
        invalid("read by the trace and docs pages only"),
    ),
    Attack(
        "basic-full-token-safe-get",
        req(
            "GET",
            "/rpc/shop/get_secret",
            headers=with_headers(("Authorization", lambda k: basic_header(k.full.token))),
        ),
        invalid("read by the trace and docs pages only"),
    ),
    Attack(
        "basic-full-token-jsonrpc",
        req(
            "POST",
            "/jsonrpc",
            headers=with_headers(("Authorization", lambda k: basic_header(k.full.token))),
            body=jsonrpc("shop.delete_all", [], 1),
        ),
        invalid("read by the trace and docs pages only"),
    ),
    Attack(
        "token-scheme",
        req(
            "POST",
            "/rpc/shop/add",
            headers=with_headers(("Authorization", lambda k: f"Token {k.r}")),
            body=ADD,
        ),
        invalid("the Authorization scheme must be Bearer"),
    ),
    Attack(
        "no-scheme",
        req(
            "POST",
            "/rpc/shop/add",
            headers=with_headers(("Authorization", lambda k: k.r)),
            body=ADD,
        ),
        invalid(),
    ),
    Attack(
        "no-space-after-bearer",
        req(
            "POST",
            "/rpc/shop/add",
            headers=with_headers(("Authorization", lambda k: f"Bearer{k.r}")),
            body=ADD,
        ),
        invalid(),
    ),
    Attack(
        "two-tokens-in-one-header",
        req("POST", "/rpc/shop/add", lambda k: f"{k.r} {k.full.token}", body=ADD),
        invalid("46 characters"),
    ),
    Attack(
        "comma-separated-credentials",
        req("POST", "/rpc/shop/add", lambda k: f"{k.r}, Bearer {k.full.token}", body=ADD),
        invalid("46 characters"),
    ),
    Attack("quoted-token", req("POST", "/rpc/shop/add", lambda k: f'"{k.r}"', body=ADD), invalid()),
    Attack(
        "truncated-token", req("POST", "/rpc/shop/add", lambda k: k.r[:-1], body=ADD), invalid()
    ),
    Attack("prefix-only", req("POST", "/rpc/shop/add", lambda k: "zgw_", body=ADD), invalid()),
    Attack(
        "non-ascii-in-token",
        lambda k: http_request(
            "POST",
            "/rpc/shop/add",
            [("Authorization", b"Bearer " + k.r[:-1].encode() + b"\xe9")],
            b"[1, 2]",
        ),
        invalid("only letters and digits"),
    ),
    Attack(
        "api-key-empty",
        req("POST", "/rpc/shop/add", headers=with_headers(("X-API-Key", "")), body=ADD),
        invalid(),
    ),
    Attack(
        "api-key-with-a-scheme",
        req(
            "POST",
            "/rpc/shop/add",
            headers=with_headers(("X-API-Key", lambda k: f"Bearer {k.r}")),
            body=ADD,
        ),
        invalid(),
    ),
    Attack(
        "null-byte-in-header",
        lambda k: http_request(
            "POST", "/rpc/shop/add", [("Authorization", f"Bearer {k.r}\0")], b"[1,2]"
        ),
        parser_refusal(400),
    ),
    # Two different credentials: refused whole, whichever is valid.
    Attack(
        "two-authorization-headers",
        req(
            "POST",
            "/rpc/shop/delete_all",
            reader,
            headers=with_headers(("Authorization", lambda k: f"Bearer {k.full.token}")),
        ),
        conflict,
    ),
    Attack(
        "authorization-and-api-key-differ",
        req("POST", "/rpc/shop/delete_all", reader, headers=with_headers(("X-API-Key", full))),
        conflict,
    ),
    Attack(
        "bad-authorization-good-api-key",
        req(
            "POST",
            "/rpc/shop/delete_all",
            lambda k: flip(k.r, 20),
            headers=with_headers(("X-API-Key", full)),
        ),
        conflict,
    ),
    Attack(
        "basic-authorization-good-api-key",
        req(
            "POST",
            "/rpc/shop/delete_all",
            headers=with_headers(("Authorization", "Basic dXNlcjpwYXNz"), ("X-API-Key", full)),
        ),
        conflict,
    ),
    Attack(
        "many-copies-then-another-token",
        req(
            "POST",
            "/rpc/shop/delete_all",
            reader,
            headers=lambda k: (
                [("Authorization", f"Bearer {k.r}")] * 30 + [("X-API-Key", k.full.token)]
            ),
        ),
        conflict,
    ),
    # Tokens with a bad checksum, revoked, expired.
    Attack(
        "changed-character",
        req("POST", "/rpc/shop/add", lambda k: flip(k.r, 20), body=ADD),
        invalid("checksum"),
    ),
    Attack(
        "changed-checksum",
        req("POST", "/rpc/shop/add", lambda k: flip(k.r, 45), body=ADD),
        invalid("checksum"),
    ),
    Attack(
        "swapped-neighbours",
        req("POST", "/rpc/shop/add", lambda k: swap(k.r), body=ADD),
        invalid("checksum"),
    ),
    Attack(
        "case-flipped-token",
        req("POST", "/rpc/shop/add", lambda k: k.r[:4] + k.r[4:].swapcase(), body=ADD),
        invalid("checksum"),
    ),
    Attack(
        "revoked",
        req("POST", "/rpc/shop/delete_all", lambda k: k.revoked.token),
        invalid("revoked"),
    ),
    Attack(
        "revoked-as-api-key",
        req(
            "POST",
            "/rpc/shop/add",
            headers=with_headers(("X-API-Key", lambda k: k.revoked.token)),
            body=ADD,
        ),
        invalid("revoked"),
    ),
    Attack(
        "expired",
        req("POST", "/rpc/shop/delete_all", lambda k: k.expired.token),
        invalid("expired"),
    ),
    # A valid token, another token's scope.
    Attack(
        "forbidden-method", req("POST", "/rpc/shop/delete_all", reader), scope("shop", "delete_all")
    ),
    Attack(
        "forbidden-safe-get",
        req("GET", "/rpc/shop/get_secret", reader),
        scope("shop", "get_secret"),
    ),
    Attack(
        "forbidden-service", req("POST", "/rpc/admin/add", reader, body=ADD), scope("admin", "add")
    ),
    Attack(
        "forbidden-service-get",
        req("GET", "/rpc/admin/get_item?name=a", reader),
        scope("admin", "get_item"),
    ),
    Attack(
        "unknown-service", req("POST", "/rpc/ghost/add", reader, body=ADD), scope("ghost", "add")
    ),
    Attack(
        "forbidden-service-catalog",
        req("GET", "/rpc/admin/list_items", reader),
        scope("admin", "list_items"),
    ),
    # Encoded and doubled slashes; encoded characters.
    Attack(
        "encoded-slash-in-service",
        req("POST", "/rpc/shop%2Fdelete_all/x", reader),
        scope("shop/delete_all", "x"),
    ),
    Attack(
        "encoded-underscore",
        req("POST", "/rpc/shop/delete%5Fall", reader),
        scope("shop", "delete_all"),
    ),
    Attack(
        "encoded-service-letter",
        req("POST", "/rpc/%73hop/delete_all", reader),
        scope("shop", "delete_all"),
    ),
    Attack(
        "encoded-method-letter",
        req("POST", "/rpc/shop/%64elete_all", reader),
        scope("shop", "delete_all"),
    ),
    Attack(
        "encoded-trailing-slash",
        req("POST", "/rpc/shop/delete_all%2F", reader),
        scope("shop", "delete_all/"),
    ),
    Attack(
        "encoded-dot-segments",
        req("POST", "/rpc/shop/add%2F..%2Fdelete_all", reader),
        scope("shop", "add/../delete_all"),
    ),
    Attack(
        "encoded-null",
        req("POST", "/rpc/shop/delete_all%00", reader),
        scope("shop", "delete_all\0"),
    ),
    Attack(
        "double-slash-before-service", req("POST", "/rpc//shop/delete_all", reader), status(404)
    ),
    Attack("double-slash-at-start", req("POST", "//rpc/shop/delete_all", reader), status(404)),
    Attack("double-slash-before-method", req("POST", "/rpc/shop//delete_all", reader), status(404)),
    Attack("encoded-rpc-prefix", req("GET", "/%72pc/shop/get_secret", reader), status(404)),
    Attack("all-slashes-encoded", req("GET", "/rpc%2Fshop%2Fget_secret", reader), status(404)),
    Attack("encoded-slash-service-only", req("GET", "/rpc/shop%2Fget_secret", reader), status(404)),
    # Dot segments, and public paths used as a springboard.
    Attack(
        "dot-dot-between-services",
        req("POST", "/rpc/admin/../shop/add", reader, body=ADD),
        status(404),
    ),
    Attack("dot-dot-into-admin", req("POST", "/rpc/shop/../admin/delete_all", reader), status(404)),
    Attack("healthz-dot-dot", req("GET", "/healthz/../rpc/shop/get_secret"), no_credentials),
    Attack(
        "healthz-encoded-dot-dot",
        req("GET", "/healthz%2F..%2Frpc%2Fshop%2Fget_secret"),
        no_credentials,
    ),
    Attack("healthz-dot-dot-metrics", req("GET", "/healthz/%2e%2e/metrics"), no_credentials),
    Attack("dot-segment-metrics", req("GET", "/./metrics"), no_credentials),
    Attack("docs-dot-dot-metrics", req("GET", "/docs/../metrics"), no_credentials),
    Attack("docs-encoded-dot-dot", req("GET", "/docs%2F..%2Fmetrics"), no_credentials),
    Attack("openapi-dot-dot-metrics", req("GET", "/openapi.json/../metrics"), no_credentials),
    # Below /docs/assets/ is public (the page's files): nothing there reaches anything else.
    Attack("assets-dot-dot", req("GET", "/docs/assets/../../rpc/shop/get_secret"), status(404)),
    Attack(
        "assets-encoded-dot-dot",
        req("GET", "/docs/assets/..%2F..%2Frpc%2Fshop%2Fget_secret"),
        status(404),
    ),
    Attack(
        "assets-dot-dot-metrics", req("GET", "/docs/assets/%2e%2e%2f%2e%2e%2fmetrics"), status(404)
    ),
    Attack("assets-dot-dot-name", req("GET", "/docs/assets/%2e%2e"), status(404)),
    Attack(
        "absolute-form-target",
        req("POST", "http://127.0.0.1/rpc/shop/delete_all", reader),
        scope("shop", "delete_all"),
    ),
    Attack(
        "absolute-form-springboard",
        req("GET", "http://elsewhere/healthz/../metrics"),
        no_credentials,
    ),
    # Case changes.
    Attack("upper-case-rpc", req("POST", "/RPC/shop/delete_all", reader), status(404)),
    Attack(
        "upper-case-service",
        req("POST", "/rpc/SHOP/delete_all", reader),
        scope("SHOP", "delete_all"),
    ),
    Attack(
        "upper-case-method",
        req("POST", "/rpc/shop/DELETE_ALL", reader),
        scope("shop", "DELETE_ALL"),
    ),
    Attack(
        "case-of-an-allowed-method",
        req("GET", "/rpc/shop/Get_Item?name=a", reader),
        scope("shop", "Get_Item"),
    ),
    Attack("case-with-a-wide-scope", req("POST", "/rpc/shop/Add", full, body=ADD), status(404)),
    Attack("upper-case-public-path", req("GET", "/HEALTHZ"), no_credentials),
    Attack("upper-case-docs", req("GET", "/Docs"), no_credentials),
    Attack(
        "upper-case-jsonrpc",
        req("POST", "/JSONRPC", reader, body=jsonrpc("shop.delete_all", [], 1)),
        status(404),
    ),
    Attack("upper-case-route", req("GET", "/Secret", reader), status(404)),
    Attack(
        "lower-case-scheme-still-scoped",
        req(
            "POST",
            "/rpc/shop/delete_all",
            headers=with_headers(("authorization", lambda k: f"bearer {k.r}")),
        ),
        scope("shop", "delete_all"),
    ),
    Attack(
        "upper-case-scheme-still-scoped",
        req(
            "POST",
            "/rpc/shop/delete_all",
            headers=with_headers(("AUTHORIZATION", lambda k: f"BEARER {k.r}")),
        ),
        scope("shop", "delete_all"),
    ),
    # Trailing slashes.
    Attack("trailing-slash-method", req("POST", "/rpc/shop/delete_all/", reader), status(404)),
    Attack("trailing-slash-safe-get", req("GET", "/rpc/shop/get_secret/", reader), status(404)),
    Attack("trailing-slash-route", req("GET", "/secret/", reader), status(404)),
    Attack("trailing-slash-post-route", req("POST", "/purge/", reader), status(404)),
    Attack(
        "trailing-slash-jsonrpc",
        req("POST", "/jsonrpc/", reader, body=jsonrpc("shop.delete_all", [], 1)),
        status(404),
    ),
    Attack("trailing-slash-public-path", req("GET", "/healthz/"), no_credentials),
    Attack("trailing-slash-metrics", req("GET", "/metrics/"), no_credentials),
    Attack("trailing-slash-catalog", req("GET", "/rpc/"), no_credentials),
    # HEAD, OPTIONS and other verbs.
    Attack(
        "head-forbidden-safe",
        req("HEAD", "/rpc/shop/get_secret", reader),
        head(403, 'Bearer realm="zerogate", error="insufficient_scope"'),
    ),
    Attack("head-forbidden-route", req("HEAD", "/secret", reader), head(403)),
    Attack("head-forbidden-method", req("HEAD", "/rpc/shop/delete_all", reader), head(403)),
    Attack(
        "head-no-token", req("HEAD", "/rpc/shop/get_secret"), head(401, 'Bearer realm="zerogate"')
    ),
    Attack("head-not-safe", req("HEAD", "/rpc/shop/add?a=1&b=2", reader), head(405)),
    Attack(
        "options-forbidden",
        req("OPTIONS", "/rpc/shop/delete_all", reader),
        scope("shop", "delete_all"),
    ),
    Attack("options-not-allowed", req("OPTIONS", "/rpc/shop/add", reader), status(405)),
    Attack("options-no-token", req("OPTIONS", "/rpc/shop/delete_all"), no_credentials),
    Attack(
        "cors-preflight",
        req(
            "OPTIONS",
            "/rpc/shop/delete_all",
            headers=with_headers(("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")),
        ),
        preflight,
    ),
    Attack(
        "cors-preflight-foreign-origin",
        req(
            "OPTIONS",
            "/rpc/shop/delete_all",
            headers=with_headers(
                ("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")
            ),
        ),
        foreign_preflight,
    ),
    Attack(
        "cross-origin-no-token",
        req("POST", "/rpc/shop/delete_all", headers=with_headers(("Origin", ORIGIN))),
        cross_origin_no_token,
    ),
    Attack(
        "put-forbidden", req("PUT", "/rpc/shop/delete_all", reader), scope("shop", "delete_all")
    ),
    Attack(
        "delete-forbidden",
        req("DELETE", "/rpc/shop/delete_all", reader),
        scope("shop", "delete_all"),
    ),
    Attack("patch-forbidden", req("PATCH", "/rpc/admin/add", reader), scope("admin", "add")),
    Attack("delete-allowed-method", req("DELETE", "/rpc/shop/add", reader), status(405)),
    Attack("trace-allowed-method", req("TRACE", "/rpc/shop/add", reader), status(405)),
    # Method-override headers and parameters are not read.
    Attack(
        "x-http-method-override",
        req(
            "GET",
            "/rpc/shop/add?a=1&b=2",
            reader,
            headers=with_headers(("X-HTTP-Method-Override", "POST")),
        ),
        status(405),
    ),
    Attack(
        "x-http-method",
        req(
            "GET", "/rpc/shop/add?a=1&b=2", reader, headers=with_headers(("X-HTTP-Method", "POST"))
        ),
        status(405),
    ),
    Attack(
        "x-method-override",
        req(
            "GET",
            "/rpc/shop/add?a=1&b=2",
            reader,
            headers=with_headers(("X-Method-Override", "POST")),
        ),
        status(405),
    ),
    Attack(
        "method-query-parameter",
        req("GET", "/rpc/shop/add?a=1&b=2&_method=POST", reader),
        status(405),
    ),
    Attack(
        "override-onto-forbidden",
        req(
            "GET",
            "/rpc/shop/delete_all",
            reader,
            headers=with_headers(("X-HTTP-Method-Override", "POST")),
        ),
        scope("shop", "delete_all"),
    ),
    Attack(
        "override-onto-post-route",
        req("GET", "/purge", reader, headers=with_headers(("X-HTTP-Method-Override", "POST"))),
        status(405),
    ),
    Attack(
        "override-onto-get-route",
        req("POST", "/secret", reader, headers=with_headers(("X-HTTP-Method-Override", "GET"))),
        status(405),
    ),
    Attack(
        "original-url-header-on-a-public-path",
        req(
            "GET",
            "/healthz",
            headers=with_headers(
                ("X-Original-URL", "/rpc/shop/get_secret"),
                ("X-Rewrite-URL", "/rpc/shop/get_secret"),
            ),
        ),
        ok,
    ),
    Attack(
        "original-url-header-to-a-public-path",
        req(
            "GET",
            "/metrics",
            headers=with_headers(
                ("X-Original-URL", "/healthz"), ("X-Forwarded-Prefix", "/healthz")
            ),
        ),
        no_credentials,
    ),
    # JSON-RPC: each call checked on its own; notifications too.
    Attack(
        "batch-mixing-allowed-and-forbidden",
        req(
            "POST",
            "/jsonrpc",
            reader,
            body=[
                jsonrpc("shop.add", ADD, 1),
                jsonrpc("shop.delete_all", [], 2),
                jsonrpc("admin.list_items", [], 3),
                jsonrpc("shop.get_item", ["fig"], 4),
                jsonrpc("shop.get_secret", [], 5),
                jsonrpc("shop.delete_all", []),
                jsonrpc("admin.delete_all", []),
            ],
        ),
        rpc_answers({1: None, 2: -32003, 3: -32003, 4: None, 5: -32003}),
        reaches=("shop.add", "shop.get_item"),
    ),
    Attack(
        "batch-of-method-name-tricks",
        req(
            "POST",
            "/jsonrpc",
            reader,
            body=[
                jsonrpc("shop..delete_all", [], 1),
                jsonrpc("SHOP.delete_all", [], 2),
                jsonrpc(" shop.delete_all", [], 3),
                jsonrpc("shop.delete_all ", [], 4),
                jsonrpc("shop.delete_all\u0000", [], 5),
                jsonrpc("admin.shop.add", ADD, 6),
                jsonrpc("shop/delete_all", [], 7),
                jsonrpc("rpc.shop.delete_all", [], 8),
                jsonrpc("shop.add.delete_all", [], 9),
            ],
        ),
        rpc_answers(
            {
                1: -32003,
                2: -32003,
                3: -32003,
                4: -32003,
                5: -32003,
                6: -32003,
                7: -32601,
                8: -32601,
                9: -32003,
            }
        ),
    ),
    Attack(
        "batch-of-forbidden-calls",
        req(
            "POST", "/jsonrpc", reader, body=[jsonrpc("shop.delete_all", [], n) for n in range(100)]
        ),
        rpc_answers(dict.fromkeys(range(100), -32003)),
    ),
    Attack(
        "nested-batch",
        req(
            "POST",
            "/jsonrpc",
            reader,
            body=[[jsonrpc("shop.delete_all", [], 1)], jsonrpc("shop.add", ADD, 2)],
        ),
        lambda answer, keys: _nested(answer),
        reaches=("shop.add",),
    ),
    Attack(
        "duplicate-method-key",
        req(
            "POST",
            "/jsonrpc",
            reader,
            body=b'{"jsonrpc": "2.0", "method": "shop.add", "params": [1, 2], '
            b'"method": "shop.delete_all", "id": 1}',
        ),
        rpc_answers({1: -32003}),
    ),
    Attack(
        "forbidden-notification-alone",
        req("POST", "/jsonrpc", reader, body=jsonrpc("shop.delete_all", [])),
        no_content,
    ),
    Attack(
        "batch-with-a-bad-token",
        req("POST", "/jsonrpc", lambda k: flip(k.r, 20), body=[jsonrpc("shop.add", ADD, 1)]),
        invalid("checksum"),
    ),
    Attack("jsonrpc-by-get", req("GET", "/jsonrpc", reader), status(405)),
    # REST routes onto forbidden methods.
    Attack("route-onto-forbidden-safe", req("GET", "/secret", reader), scope("shop", "get_secret")),
    Attack(
        "route-onto-forbidden-method", req("POST", "/purge", reader), scope("shop", "delete_all")
    ),
    Attack(
        "route-onto-forbidden-service",
        req("GET", "/admin/items", reader),
        scope("admin", "list_items"),
    ),
    Attack("route-wrong-verb", req("GET", "/purge", reader), status(405)),
    # Huge headers.
    Attack(
        "huge-authorization",
        lambda k: http_request(
            "POST", "/rpc/shop/delete_all", [("Authorization", "Bearer " + "A" * HUGE)], b""
        ),
        head_too_large,
    ),
    Attack(
        "huge-padding-with-a-token",
        req(
            "POST", "/rpc/shop/delete_all", reader, headers=with_headers(("X-Padding", "a" * HUGE))
        ),
        head_too_large,
    ),
    Attack(
        "many-headers",
        req(
            "GET",
            "/rpc/shop/get_secret",
            reader,
            headers=lambda k: [(f"X-H{n}", "v" * 100) for n in range(10_000)],
        ),
        head_too_large,
    ),
    Attack(
        "huge-target",
        req("GET", "/rpc/shop/get_secret?x=" + "a" * HUGE, reader),
        head_too_large,
    ),
    Attack(
        "long-authorization-below-the-bound",
        req("POST", "/rpc/shop/add", lambda k: "zgw_" + "A" * 40_000, body=ADD),
        invalid("46 characters"),
    ),
]


def _nested(answer: RawAnswer) -> None:
    assert answer.status == 200, answer
    codes = {item["id"]: item.get("error", {}).get("code") for item in answer.json()}
    assert codes == {None: -32600, 2: None}


# -- the tests ----------------------------------------------------------------------------------


def test_the_corpus_names_are_unique() -> None:
    names = [attack.name for attack in ATTACKS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_the_attack_does_not_get_through(
    attack: Attack, gateway: Gateway, keys: Keys, backend: LedgerBackend
) -> None:
    before = len(backend.calls())
    answer = send_raw(gateway, attack.build(keys))
    attack.check(answer, keys)
    assert sorted(backend.methods(before)) == sorted(attack.reaches)


def test_credentials_do_not_carry_over_on_a_kept_alive_connection(
    gateway: Gateway, keys: Keys, backend: LedgerBackend
) -> None:
    """Two pipelined requests on one connection: the first with a token, the second
    without one; the second is refused (nothing of the first sticks to the connection)."""
    first = http_request(
        "POST",
        "/rpc/shop/add",
        [("Authorization", f"Bearer {keys.r}"), ("Content-Type", "application/json")],
        b"[1, 2]",
    )
    first = first.replace(b"Connection: close\r\n", b"")
    second = http_request(
        "POST", "/rpc/shop/add", [("Content-Type", "application/json")], b"[1, 2]"
    )
    before = len(backend.calls())
    answer = send_raw(gateway, first + second, address=next_address())
    # send_raw reads both answers as one: the first is 200, the second the refusal.
    text = answer.body.decode()
    assert answer.status == 200
    assert "HTTP/1.1 401 Unauthorized" in text
    assert 'www-authenticate: Bearer realm="zerogate"' in text
    assert backend.methods(before) == ["shop.add"]


def test_a_refused_request_cannot_forge_log_lines(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal's warning names the path; a path with an encoded line break must not
    start a line of its own in the gateway's log (operators read it, shippers parse it)."""
    forged = "2026-01-01 00:00:00,000 WARNING zerogate.auth: token tok_ADMIN0001 is fine"
    target = "/x%0D%0A" + forged.replace(" ", "%20")
    with caplog.at_level("WARNING", logger="zerogate.auth"):
        answer = send_raw(gateway, http_request("GET", target))
    assert_refused(answer, 401)
    lines = [record.getMessage() for record in caplog.records if record.name == "zerogate.auth"]
    assert lines, "no refusal was logged"
    for line in lines:
        assert "\n" not in line, line
        assert "\r" not in line, line
