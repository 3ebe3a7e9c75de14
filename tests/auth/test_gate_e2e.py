"""The door end to end: a real uvicorn (the production HTTP protocol) in front of a real
rpccore.aio backend, with ``auth.mode: token`` on both token stores (a SQLite file, and a
real redis-server).

What a client sees (DESIGN.md "HTTP API", RFC 6750): no credentials is 401 with a bare
``Bearer realm="zerogate"`` challenge; a malformed, unknown, revoked or expired token 401
``error="invalid_token"``; a scope that does not cover the call 403 ``insufficient_scope``;
each one a problem document. Scopes are checked against the RPC target the request resolves
to, on every road to it: ``POST /rpc``, the GET of a safe method, REST routes and each call
of a JSON-RPC batch. Public paths are open and nothing else is; ``auth.docs`` opens or closes
the API description. Rate limits per token, with the RateLimit headers on every answer, a
per-token override from ``zerogate token create``, shared through Redis by two gateways.
Failed authentications are limited per client address. ``zerogate token revoke`` and
``rotate`` reach a running gateway within the cache's 5 s. What the backend receives names
the token (id and name), never carries it. And the gateway refuses to start without its
secret, and answers 503 when it cannot read its token store.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gate_support import (
    REPO,
    AuthSetup,
    Children,
    Gateway,
    Issued,
    LedgerBackend,
    TokenSpec,
    assert_problem,
    assert_refused,
    bearer,
    client,
    free_port,
    rate_headers,
)

from auth import tokens
from auth.secret import TokenHasher
from auth.store import SqliteTokenStore, issue_token
from auth.verify import DEFAULT_CACHE_TTL

READER_SCOPES = ("shop:add", "shop:get_item", "shop:list_items", "shop:header")
FORBIDDEN_FOR_READER = ("shop.delete_all", "shop.get_secret", "admin.")
REVOCATION_SLACK = 1.5  # seconds beyond the cache TTL: polling, a loaded machine
SERVE_TIMEOUT = 60.0
TIMING_TRIES = 300  # of each kind
TIMING_GAP = 0.25  # the two medians differ by less than this fraction


# -- fixtures (children, backend and setup: conftest.py) -----------------------------------------


@pytest.fixture(scope="module")
def sqlite_setup(backend: LedgerBackend, tmp_path_factory: pytest.TempPathFactory) -> AuthSetup:
    """For the tests that need one store, whichever."""
    return AuthSetup("sqlite", tmp_path_factory.mktemp("single"), backend)


@pytest.fixture(scope="module")
def gateway(setup: AuthSetup) -> Iterator[Gateway]:
    """The gateway of the core rules: docs public, the default public paths, and a small
    default rate limit (5 in a burst, 1 a minute) that most test tokens override."""
    with Gateway(setup.config()) as running:
        yield running


@pytest.fixture(scope="module")
def reader(setup: AuthSetup) -> Issued:
    return setup.issue("reader", *READER_SCOPES)


@pytest.fixture(scope="module")
def full(setup: AuthSetup) -> Issued:
    return setup.issue("full", "shop:*", "admin:*")


def post_json(http: httpx.Client, path: str, body: Any, token: str | None) -> httpx.Response:
    headers = bearer(token) if token else {}
    return http.post(path, json=body, headers=headers)


def jsonrpc(method: str, params: Any = None, request_id: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        call["params"] = params
    if request_id is not None:
        call["id"] = request_id
    return call


def forbidden_calls(backend: LedgerBackend, since: int) -> list[str]:
    return [
        name
        for name in backend.methods(since)
        if name.startswith(FORBIDDEN_FOR_READER) and not name.startswith("admin._zerorpc")
    ]


# -- RFC 6750 refusals --------------------------------------------------------------------------


REQUESTS_OF_EVERY_KIND = [
    ("GET", "/rpc", None),
    ("GET", "/rpc/shop", None),
    ("POST", "/rpc/shop/add", [1, 2]),
    ("GET", "/rpc/shop/get_item?name=pear", None),
    ("POST", "/jsonrpc", jsonrpc("shop.add", [1, 2], 1)),
    ("GET", "/items/pear", None),
    ("POST", "/purge", None),
    ("GET", "/metrics", None),
    ("GET", "/no/such/path", None),
]


def test_no_credentials_is_401_with_a_bare_challenge(
    gateway: Gateway, backend: LedgerBackend
) -> None:
    before = len(backend.calls())
    with client(gateway) as http:
        for method, path, body in REQUESTS_OF_EVERY_KIND:
            answer = http.request(method, path, json=body)
            problem = assert_refused(answer, 401)
            assert "needs a token" in problem["detail"], (path, problem)
            assert "ratelimit-limit" not in answer.headers, path
    assert backend.methods(before) == []


def test_invalid_tokens_are_401_invalid_token(
    gateway: Gateway, setup: AuthSetup, reader: Issued, backend: LedgerBackend
) -> None:
    revoked, expired = setup.issue_many(
        [TokenSpec("revoked", ["shop:*"]), TokenSpec("expired", ["shop:*"], expires_in=-1)]
    )
    assert setup.token_command("revoke", revoked.id).returncode == 0
    typo = reader.token[:10] + ("A" if reader.token[10] != "A" else "B") + reader.token[11:]
    unknown = tokens.generate()  # well formed, never issued
    before = len(backend.calls())
    cases = {
        "hello": "not a zerogate token",
        typo: "checksum",
        reader.token + "x": "46 characters",
        unknown: "not known",
        revoked.token: "revoked",
        expired.token: "expired",
    }
    with client(gateway) as http:
        for presented, why in cases.items():
            for headers in (bearer(presented), {"X-API-Key": presented}):
                answer = http.post("/rpc/shop/add", json=[1, 2], headers=headers)
                problem = assert_refused(answer, 401, "invalid_token")
                assert why in problem["detail"], (presented, problem)
                assert presented not in answer.text  # never echoed
    assert backend.methods(before) == []


def test_a_token_calls_what_its_scopes_allow_on_every_road(
    gateway: Gateway, reader: Issued
) -> None:
    with client(gateway) as http:
        assert post_json(http, "/rpc/shop/add", [1, 2], reader.token).json() == 3
        by_key = http.post(
            "/rpc/shop/add", json={"a": 2, "b": 3}, headers={"X-API-Key": reader.token}
        )
        assert by_key.json() == 5
        safe_get = http.get(
            "/rpc/shop/get_item", params={"name": "pear"}, headers=bearer(reader.token)
        )
        assert safe_get.json() == {"name": "pear", "price": 1.5}
        route = http.get("/items/plum", headers=bearer(reader.token))
        assert route.json() == {"name": "plum", "price": 1.5}
        call = post_json(http, "/jsonrpc", jsonrpc("shop.add", [4, 5], 7), reader.token)
        assert call.json() == {"jsonrpc": "2.0", "result": 9, "id": 7}
        for answer in (by_key, safe_get, route, call):
            assert answer.status_code == 200
            rate_headers(answer)


def test_scopes_are_checked_against_the_resolved_rpc_target(
    gateway: Gateway, backend: LedgerBackend, reader: Issued, full: Issued
) -> None:
    before = len(backend.calls())
    refusals = [  # (HTTP method, path, body, the target it resolves to)
        ("POST", "/rpc/shop/delete_all", None, ("shop", "delete_all")),
        ("GET", "/rpc/shop/get_secret", None, ("shop", "get_secret")),
        ("POST", "/rpc/admin/add", [1, 2], ("admin", "add")),
        ("GET", "/rpc/admin/list_items", None, ("admin", "list_items")),
        ("GET", "/secret", None, ("shop", "get_secret")),  # REST routes onto forbidden methods
        ("POST", "/purge", None, ("shop", "delete_all")),
        ("GET", "/admin/items", None, ("admin", "list_items")),
        # A method that does not exist: a token that may not call it learns nothing more.
        ("POST", "/rpc/shop/no_such_method", None, ("shop", "no_such_method")),
        ("POST", "/rpc/ghost/add", None, ("ghost", "add")),
    ]
    with client(gateway) as http:
        for method, path, body, (service, name) in refusals:
            answer = http.request(method, path, json=body, headers=bearer(reader.token))
            problem = assert_refused(answer, 403, "insufficient_scope")
            assert problem["rpc"] == {"service": service, "method": name}, path
            assert "'reader'" in problem["detail"]
            rate_headers(answer)
        single = post_json(http, "/jsonrpc", jsonrpc("shop.delete_all", [], 1), reader.token)
        assert single.status_code == 200
        error = single.json()["error"]
        assert error["code"] == -32003
        assert (error["data"]["status"], error["data"]["code"]) == (403, "permission_denied")
        assert forbidden_calls(backend, before) == []

        # The same roads with a token whose scopes cover them.
        assert post_json(http, "/rpc/shop/delete_all", None, full.token).json() == "deleted"
        assert http.get("/secret", headers=bearer(full.token)).json() == "the secret"
        assert http.get("/admin/items", headers=bearer(full.token)).status_code == 200
        missing = post_json(http, "/rpc/shop/no_such_method", None, full.token)
        assert_problem(missing, 404)


def test_each_call_of_a_jsonrpc_batch_is_checked_on_its_own(
    gateway: Gateway, backend: LedgerBackend, reader: Issued
) -> None:
    before = len(backend.calls())
    batch = [
        jsonrpc("shop.add", [1, 2], 1),
        jsonrpc("shop.delete_all", [], 2),
        jsonrpc("admin.list_items", [], 3),
        jsonrpc("shop.get_item", {"name": "fig"}, 4),
        jsonrpc("shop.get_secret", [], 5),
        jsonrpc("shop.delete_all", []),  # notifications: never answered, and never run
        jsonrpc("admin.add", [1, 1]),
        jsonrpc("shop.add", [2, 2]),
    ]
    with client(gateway) as http:
        answer = post_json(http, "/jsonrpc", batch, reader.token)
    assert answer.status_code == 200
    rate_headers(answer)
    by_id = {item["id"]: item for item in answer.json()}
    assert sorted(by_id) == [1, 2, 3, 4, 5]
    assert by_id[1]["result"] == 3
    assert by_id[4]["result"] == {"name": "fig", "price": 1.5}
    for denied, target in ((2, "shop.delete_all"), (3, "admin.list_items"), (5, "shop.get_secret")):
        error = by_id[denied]["error"]
        assert error["code"] == -32003, error
        assert error["data"]["status"] == 403
        assert "{}.{}".format(*error["data"]["rpc"].values()) == target
    assert sorted(backend.methods(before)) == ["shop.add", "shop.add", "shop.get_item"]


def test_the_catalog_shows_only_what_the_token_may_call(
    gateway: Gateway, reader: Issued, full: Issued
) -> None:
    with client(gateway) as http:
        catalog = http.get("/rpc", headers=bearer(reader.token)).json()
        assert sorted(catalog["services"]["shop"]["methods"]) == sorted(
            scope.split(":")[1] for scope in READER_SCOPES
        )
        assert catalog["services"]["admin"]["methods"] == {}
        one = http.get("/rpc/shop", headers=bearer(reader.token)).json()
        assert sorted(one["methods"]) == sorted(catalog["services"]["shop"]["methods"])
        everything = http.get("/rpc", headers=bearer(full.token)).json()
        assert "delete_all" in everything["services"]["shop"]["methods"]
        assert "get_secret" in everything["services"]["admin"]["methods"]


# -- public paths and the docs ------------------------------------------------------------------


def docs_asset(page: str) -> str:
    match = re.search(r"docs/assets/[^\"'?#]+", page)  # relative to the page
    assert match is not None, page[:500]
    return "/" + match[0]


def test_public_paths_are_open_and_nothing_else(gateway: Gateway, reader: Issued) -> None:
    with client(gateway) as http:
        for path in ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json"):
            assert http.get(path).status_code == 200, path
        asset = docs_asset(http.get("/docs").text)
        assert http.get(asset).status_code == 200
        assert http.get("/openapi.json").json()["openapi"].startswith("3.1")
        assert_refused(http.get("/metrics"), 401)
        assert http.get("/metrics", headers=bearer(reader.token)).status_code == 200


def test_the_trace_views_need_an_operators_token(
    sqlite_setup: AuthSetup, children: Children
) -> None:
    """They show every service's calls, other callers' too: a token that may call only some
    methods gets a 403, an operator's (``*:*``) reads them."""
    records, queries = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    argv = ("-m", "gateway.collector", "--bind", records, "--query", queries)
    collector = children.start(*argv, name="collector")
    deadline = time.monotonic() + 20
    while "records on" not in children.log_of("collector"):
        assert collector.poll() is None, children.log_of("collector")
        assert time.monotonic() < deadline, "the collector did not start"
        time.sleep(0.05)
    caller = sqlite_setup.issue("caller", "shop:*", "admin:*")  # every method, one by one
    operator = sqlite_setup.issue("operator", "*:*")
    config = sqlite_setup.config() + f"tracing: {{query: '{queries}'}}\n"
    views = ("/traces", "/traces?service=shop&failed=1", f"/traces/{'ab' * 16}", "/stats")
    with Gateway(config) as gateway, client(gateway) as http:
        for path in views:
            assert_refused(http.get(path), 401, page=True)
            problem = assert_refused(
                http.get(path, headers=bearer(caller.token)), 403, "insufficient_scope"
            )
            assert "needs the scope *:*" in problem["detail"], problem
        as_operator = bearer(operator.token) | {"Accept": "application/json"}
        assert http.get("/traces", headers=as_operator).json() == {"traces": []}
        # What a browser sends once asked: the token as a Basic password.
        json_only = {"Accept": "application/json"}
        basic_operator = http.get("/traces", auth=("me", operator.token), headers=json_only)
        assert basic_operator.json() == {"traces": []}
        assert_refused(http.get("/stats", auth=("me", caller.token)), 403, "insufficient_scope")
        assert http.get("/stats", headers=as_operator).json() == {}
        assert_problem(http.get(f"/traces/{'ab' * 16}", headers=as_operator), 404, "not_found")
        assert http.get("/rpc/shop", headers=bearer(caller.token)).status_code == 200


def test_docs_token_keeps_the_description_behind_a_token(sqlite_setup: AuthSetup) -> None:
    token = sqlite_setup.issue("docs-reader", "shop:add")
    config = sqlite_setup.config(docs="token", public=["/healthz"])
    with Gateway(config) as gateway, client(gateway) as http:
        page = http.get("/docs")
        assert page.status_code == 200  # a browser opens it without a header
        assert http.get(docs_asset(page.text)).status_code == 200
        assert http.get("/healthz").status_code == 200
        for path in ("/openapi.json", "/redoc", "/readyz"):  # /readyz: not in this public list
            assert_refused(http.get(path), 401, page=path != "/readyz")
            assert http.get(path, headers=bearer(token.token)).status_code == 200, path
        # A browser asked for a user name and password is given the token as the password.
        for path in ("/openapi.json", "/redoc"):
            assert http.get(path, auth=("me", token.token)).status_code == 200, path
        assert_refused(http.get("/readyz", auth=("me", token.token)), 401, "invalid_token")
        document = http.get("/openapi.json", headers=bearer(token.token)).json()
        assert "/rpc/shop/add" in document["paths"]


# -- what the backend receives ------------------------------------------------------------------


def test_the_backend_gets_the_token_id_and_name_never_the_credential(
    gateway: Gateway, reader: Issued
) -> None:
    with client(gateway) as http:
        answers = [
            http.post("/rpc/shop/header", headers=bearer(reader.token)),
            http.post("/rpc/shop/header", headers={"X-API-Key": reader.token}),
            post_json(http, "/jsonrpc", jsonrpc("shop.header", [], 1), reader.token),
        ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        seen = answer.json()
        seen = seen.get("result", seen)
        header = seen["header"]
        assert header["zerogate_token_id"] == reader.id
        assert header["zerogate_token_name"] == "reader"
        assert seen["trace_id"] == header["trace_id"] == answer.headers["x-trace-id"]
        assert_no_credential(header, reader.token)


def assert_no_credential(header: dict[str, Any], token: str | None = None) -> None:
    """No header key that looks like a credential's, and no value holding a token (or
    ``token``'s random part, in any form)."""
    for key, value in header.items():
        assert not re.search(r"auth|api.?key|bearer|secret|cookie", key, re.I), header
        text = json.dumps(value)
        assert tokens.PREFIX not in text, header
        if token is not None:
            assert token[len(tokens.PREFIX) : -tokens.CHECKSUM_LENGTH] not in text, header


# -- rate limits --------------------------------------------------------------------------------


def test_every_answer_to_a_token_carries_the_rate_limit_headers(
    gateway: Gateway, setup: AuthSetup
) -> None:
    token = setup.issue("counted", "shop:add", "shop:get_item", rate=1 / 60, burst=50)
    requests = [
        ("POST", "/rpc/shop/add", [1, 2], 200),
        ("POST", "/rpc/shop/delete_all", None, 403),
        ("GET", "/no/such/path", None, 404),
        ("GET", "/rpc/shop/add", None, 405),
        ("POST", "/rpc/shop/add", [1], 400),
        ("POST", "/jsonrpc", jsonrpc("shop.add", [1, 2], 1), 200),
        ("GET", "/rpc", None, 200),
        ("GET", "/metrics", None, 200),
    ]
    with client(gateway) as http:
        for number, (method, path, body, status) in enumerate(requests, 1):
            answer = http.request(method, path, json=body, headers=bearer(token.token))
            assert answer.status_code == status, (path, answer.text)
            limit, remaining, reset = rate_headers(answer)
            assert (limit, remaining) == (50, 50 - number), path
            assert reset > 0


def test_a_token_past_its_burst_gets_429_with_retry_after(
    gateway: Gateway, setup: AuthSetup, backend: LedgerBackend
) -> None:
    token = setup.issue("default-limits", "shop:add", rate=None, burst=None)  # 1/m, burst 5
    with client(gateway) as http:
        for left in (4, 3, 2, 1, 0):
            answer = post_json(http, "/rpc/shop/add", [1, 1], token.token)
            assert answer.status_code == 200
            assert rate_headers(answer)[:2] == (5, left)
        before = len(backend.calls())
        refused = post_json(http, "/rpc/shop/add", [1, 1], token.token)
        problem = assert_problem(refused, 429, "resource_exhausted")
        assert "'default-limits'" in problem["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert rate_headers(refused)[:2] == (5, 0)
        assert backend.methods(before) == []


def test_a_rate_override_from_zerogate_token_create(gateway: Gateway, setup: AuthSetup) -> None:
    created = setup.token_command(
        "create", "--name", "override", "--scope", "shop:add", "--rate", "1/m", "--burst", "8"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    with client(gateway) as http:
        statuses = [post_json(http, "/rpc/shop/add", [1, 1], token).status_code for _ in range(9)]
        assert statuses == [200] * 8 + [429]


def test_two_gateways_on_one_redis_share_each_bucket(
    setup: AuthSetup, redis_url: str, tmp_path: Path
) -> None:
    # A token store of its own: two more stores on the module's SQLite file in this process
    # would break the module gateway's (see the test of that at the end).
    setup = AuthSetup(setup.kind, tmp_path, setup.backend, setup.redis_url)
    token = setup.issue("shared", "shop:add", rate=None, burst=None)
    config = setup.config(rate_limit=f"{{per_token: 1/m, burst: 6, store: {redis_url}}}")
    with (
        Gateway(config) as one,
        Gateway(config) as two,
        client(one) as first,
        client(two) as second,
    ):
        answers = [
            post_json(http, "/rpc/shop/add", [1, 1], token.token)
            for _ in range(6)
            for http in (first, second)
        ]
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 6, statuses
    assert statuses[:6] == [200] * 6  # each gateway took 3 of the 6
    assert [rate_headers(answer)[1] for answer in answers[:6]] == [5, 4, 3, 2, 1, 0]
    for answer in answers[6:]:
        assert_problem(answer, 429, "resource_exhausted")


def test_failed_authentications_are_limited_per_address(gateway: Gateway) -> None:
    with client(gateway) as guesser:
        statuses = [
            guesser.get("/rpc", headers=bearer(tokens.generate())).status_code for _ in range(25)
        ]
        assert statuses[:20] == [401] * 20
        assert 429 in statuses[20:], statuses
        limited = guesser.get("/rpc", headers=bearer(tokens.generate()))
        problem = assert_problem(limited, 429, "resource_exhausted")
        assert "failed authentications" in problem["detail"]
        assert int(limited.headers["retry-after"]) >= 1
    with client(gateway) as someone_else:
        assert_refused(
            someone_else.get("/rpc", headers=bearer(tokens.generate())), 401, "invalid_token"
        )


def test_past_its_failure_limit_an_address_has_its_guesses_refused_unchecked(
    gateway: Gateway, setup: AuthSetup
) -> None:
    """The limit on failed authentications is there to slow guessing down. A guess made past
    it must be refused before it is checked: if it is still checked, a right guess still
    gets in and each wrong one still costs a store lookup, so the limit slows nothing."""
    right = setup.issue("guessed-right", "shop:add")
    with client(gateway) as guesser:
        for _ in range(25):
            guesser.get("/rpc", headers=bearer(tokens.generate()))
        assert_problem(guesser.get("/rpc", headers=bearer(tokens.generate())), 429)
        answer = post_json(guesser, "/rpc/shop/add", [1, 1], right.token)
        problem = assert_problem(answer, 429, "resource_exhausted")
        assert "failed authentications" in problem["detail"]


def test_a_rate_limit_store_that_is_down_limits_in_memory(sqlite_setup: AuthSetup) -> None:
    """``rate_limit.store`` on Redis that cannot be reached: calls go on, limited by the
    gateway's own buckets (fail open), with the same headers."""
    token = sqlite_setup.issue("limited-locally", "shop:add", rate=None, burst=None)
    closed = f"redis://127.0.0.1:{free_port()}/0"
    config = sqlite_setup.config(rate_limit=f"{{per_token: 1/m, burst: 3, store: {closed}}}")
    with Gateway(config) as gateway, client(gateway) as http:
        answers = [post_json(http, "/rpc/shop/add", [1, 1], token.token) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [rate_headers(answer)[:2] for answer in answers] == [(3, 2), (3, 1), (3, 0), (3, 0)]


# -- timing ------------------------------------------------------------------------------------


def near_miss(token: str, n: int) -> str:
    """The ``n``-th token one character away from ``token`` (its checksum fixed): each
    ``n`` below 36 * 61 gives another one, so none is answered from the gateway's cache."""
    position, shift = n % tokens.RANDOM_LENGTH, n // tokens.RANDOM_LENGTH % 61 + 1
    body = list(token[len(tokens.PREFIX) : len(tokens.PREFIX) + tokens.RANDOM_LENGTH])
    body[position] = tokens.ALPHABET[(tokens.ALPHABET.index(body[position]) + shift) % 62]
    random_part = "".join(body)
    return tokens.PREFIX + random_part + tokens.checksum(random_part)


def test_near_and_far_misses_take_the_same_time_end_to_end(sqlite_setup: AuthSetup) -> None:
    """The HTTP-level companion of test_verify_timing.py (which measures ``verify`` itself,
    to the microsecond): through uvicorn a wrong token one character away from a real one
    is refused in the same time as a random one. HTTP jitter hides anything finer than tens
    of microseconds, so this only catches a gross difference, such as a near miss taking
    another path through the gate."""
    real = sqlite_setup.issue("timed", "shop:add")
    near = [near_miss(real.token, n) for n in range(TIMING_TRIES)]
    assert len(set(near)) == TIMING_TRIES
    far = [tokens.generate() for _ in range(TIMING_TRIES)]
    tries = [(True, token) for token in near] + [(False, token) for token in far]
    random.Random(11).shuffle(tries)
    times: dict[bool, list[int]] = {True: [], False: []}
    with Gateway(sqlite_setup.config()) as gateway:
        # Per address, 20 failures in a burst: a new client (address) for every 20 tries.
        for start in range(0, len(tries), 20):
            with client(gateway) as http:
                http.get("/healthz")  # the connection is made before timing
                for is_near, token in tries[start : start + 20]:
                    began = time.perf_counter_ns()
                    answer = http.get("/rpc", headers=bearer(token))
                    times[is_near].append(time.perf_counter_ns() - began)
                    assert answer.status_code == 401
    near_ns, far_ns = (int(statistics.median(times[kind])) for kind in (True, False))
    print(
        f"\nHTTP 401 of a wrong token, median: near {near_ns / 1000:.0f} µs, "
        f"far {far_ns / 1000:.0f} µs"
    )
    assert abs(near_ns - far_ns) < TIMING_GAP * min(near_ns, far_ns), (near_ns, far_ns)


# -- revocation, rotation, expiry on a running gateway -----------------------------------------


def test_revocation_and_rotation_reach_a_running_gateway(
    gateway: Gateway, setup: AuthSetup
) -> None:
    graceful, abrupt, revoked, expiring = setup.issue_many(
        [
            TokenSpec("rotated-with-grace", ["shop:add"]),
            TokenSpec("rotated-at-once", ["shop:add"]),
            TokenSpec("revoked-later", ["shop:add"]),
            TokenSpec("expiring", ["shop:add"], expires_in=2),
        ]
    )
    with client(gateway) as http:

        def status(token: str) -> int:
            return post_json(http, "/rpc/shop/add", [1, 1], token).status_code

        # Each is used once: the gateway's cache now holds it, for DEFAULT_CACHE_TTL.
        for token in (graceful, abrupt, revoked, expiring):
            assert status(token.token) == 200
        revoke = setup.token_command("revoke", revoked.id)
        revoked_at = time.monotonic()
        assert revoke.returncode == 0, revoke.stderr
        rotate = setup.token_command("rotate", graceful.id, "--grace", "1h")
        assert rotate.returncode == 0, rotate.stderr
        rotate_now = setup.token_command("rotate", abrupt.id, "--grace", "0")
        assert rotate_now.returncode == 0, rotate_now.stderr
        new_graceful, new_abrupt = rotate.stdout.strip(), rotate_now.stdout.strip()
        # New secrets were never cached: they work at once.
        assert status(new_graceful) == 200
        assert status(new_abrupt) == 200

        deadline = revoked_at + DEFAULT_CACHE_TTL + REVOCATION_SLACK
        while status(revoked.token) == 200:
            assert time.monotonic() < deadline, "the revocation was not seen within the TTL"
            time.sleep(0.1)
        answer = post_json(http, "/rpc/shop/add", [1, 1], revoked.token)
        assert "revoked" in assert_refused(answer, 401, "invalid_token")["detail"]
        # Cached before the revoked one, so its replaced secret is refused by now too ...
        assert_refused(post_json(http, "/rpc/shop/add", [1, 1], abrupt.token), 401, "invalid_token")
        # ... while a secret in its grace period still works, now read from the store again.
        assert status(graceful.token) == 200
        assert status(new_graceful) == 200
        assert setup.status(graceful.id) == "rotating"
        # Expiry is checked on every call, cached or not.
        expired = post_json(http, "/rpc/shop/add", [1, 1], expiring.token)
        assert "expired" in assert_refused(expired, 401, "invalid_token")["detail"]


# -- starting without a secret, and a token store that is down ---------------------------------


@pytest.mark.parametrize(
    ("secret_line", "message"),
    [
        (None, "auth.secret: required when mode is token"),
        ("secret: 'env:ZEROGATE_TEST_NO_SUCH_VARIABLE'", "auth.secret"),
        ("secret: 'file:no-such-secret'", "auth.secret"),
    ],
)
def test_serve_with_auth_on_and_no_secret_exits_2(
    tmp_path: Path, secret_line: str | None, message: str
) -> None:
    lines = ["auth:", "  mode: token", f"  store: 'sqlite:///{tmp_path / 'tokens.db'}'"]
    if secret_line is not None:
        lines.append(f"  {secret_line}")
    config = tmp_path / "zerogate.yaml"
    config.write_text("\n".join(lines) + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROGATE")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "-c", str(config), "--port", "0"],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_token_store_that_is_down_is_503(sqlite_setup: AuthSetup) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with Gateway(sqlite_setup.config(store_url=closed)) as gateway, client(gateway) as http:
        down = http.post("/rpc/shop/add", json=[1, 1], headers=bearer(tokens.generate()))
        problem = assert_problem(down, 503, "unavailable")
        assert "tokens cannot be checked" in problem["detail"]
        assert int(down.headers["retry-after"]) >= 1
        # What needs no store still answers as usual.
        assert_refused(http.post("/rpc/shop/add", json=[1, 1]), 401)
        assert_refused(http.get("/rpc", headers=bearer("zgw_nonsense")), 401, "invalid_token")
        assert http.get("/healthz").status_code == 200


# -- SQLite: two stores in one process ---------------------------------------------------------


def test_a_second_sqlite_store_in_the_gateway_process_keeps_it_working(
    sqlite_setup: AuthSetup, tmp_path: Path
) -> None:
    """A program that runs the gateway in-process (a test, an embedding app, the demo) may
    open another ``SqliteTokenStore`` on the same file, e.g. to issue a token. That must not
    break the gateway's store when ``zerogate token`` then writes from another process."""
    setup = AuthSetup("sqlite", tmp_path, sqlite_setup.backend)
    first = setup.issue("first", "shop:add")
    with Gateway(setup.config()) as gateway, client(gateway) as http:
        assert post_json(http, "/rpc/shop/add", [1, 1], first.token).status_code == 200

        async def issue_here() -> str:
            store = SqliteTokenStore(tmp_path / "tokens.db")
            try:
                hasher = TokenHasher(setup.secret_path.read_bytes().strip())
                new = await issue_token(
                    store, hasher, name="in-process", scopes=["shop:add"], now=time.time()
                )
            finally:
                await store.aclose()
            return new.token

        second = asyncio.run(issue_here())
        created = setup.token_command("create", "--name", "cli", "--scope", "shop:add")
        assert created.returncode == 0, created.stderr
        third = asyncio.run(issue_here())
        for token in (second, created.stdout.strip(), third):
            answer = post_json(http, "/rpc/shop/add", [1, 1], token)
            assert answer.status_code == 200, answer.text


# -- last: over everything the backend received in this module ---------------------------------


def test_no_request_ever_carried_a_credential_to_the_backend(backend: LedgerBackend) -> None:
    calls = backend.calls()
    assert any("zerogate_token_id" in call["header"] for call in calls)
    for call in calls:
        assert_no_credential(call["header"])
