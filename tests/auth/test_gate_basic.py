"""Basic credentials for the pages a person opens in a browser (the trace views and the docs'
data): read there, on GET and HEAD only, with a Basic challenge added to their 401s, and
never anywhere else, where a browser's remembered credentials would ride along on cross-site
requests. Plain ASGI calls on an in-memory store (``gate_asgi``); the browser itself is in
tests/tracing_views/test_trace_browser.py."""

from __future__ import annotations

import base64

import pytest
from auth_support import run_async
from gate_asgi import GateSetup, bearer

from auth.gate import BASIC_CHALLENGE, REALM, basic_token, is_browser_page

BASIC = BASIC_CHALLENGE[1].decode()
PAGES = ("/traces", "/traces/0af7651916cd43dd8448eb211c80319c", "/stats", "/redoc", "/openapi.json")


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def basic(user: str, password: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Basic {encoded(f'{user}:{password}')}".encode())


@pytest.mark.parametrize(
    ("credentials", "token"),
    [
        (encoded("ops:zgw_secret"), "zgw_secret"),  # the password
        (encoded("zgw_secret:"), "zgw_secret"),  # or the user name, with no password
        (encoded(":zgw_secret"), "zgw_secret"),
        (encoded("ops: zgw_secret "), "zgw_secret"),  # pasted with blanks around it
        (encoded("ops:zgw_a:b"), "zgw_a:b"),  # only the first colon separates
        (encoded("zgw_secret"), ""),  # no colon: not user:password
        (encoded("ops:"), "ops"),
        (encoded(":"), ""),
        ("not base64!", ""),
        (encoded("ops:zgw_secret")[:-2], ""),  # cut: bad padding
        (base64.b64encode(b"ops:\xff\xfe").decode(), ""),  # not UTF-8
        ("", ""),
    ],
)
def test_basic_token_reads_the_password_or_the_user_name(credentials: str, token: str) -> None:
    assert basic_token(credentials) == token


@pytest.mark.parametrize(
    ("method", "path", "page"),
    [
        *(("GET", path, True) for path in PAGES),
        ("HEAD", "/traces", True),
        ("POST", "/traces", False),
        ("DELETE", "/stats", False),
        ("GET", "/rpc/calc/add", False),  # a safe method's GET still calls it
        ("GET", "/rpc", False),
        ("GET", "/metrics", False),
        ("GET", "/tracesX", False),
        ("GET", "/stats/", False),
        ("GET", "/docs/../traces", False),  # as routed: no page at all
    ],
)
def test_browser_pages_are_the_views_and_docs_data_read_safely(
    method: str, path: str, page: bool
) -> None:
    scope = {"method": method, "path": path, "raw_path": path.encode(), "root_path": ""}
    assert is_browser_page(scope) is page


@run_async
async def test_a_page_takes_the_token_as_a_basic_password() -> None:
    setup = GateSetup(docs="token", failure_burst=100)
    token, token_id = await setup.token("ops", ("*:*",))
    for path in PAGES:
        for method in ("GET", "HEAD"):
            answer = await setup.answer(basic("ops", token), method=method, path=path)
            assert answer.status == 200, (method, path, answer)
            assert answer.values(b"ratelimit-limit")  # the same door as a bearer's
    answer = await setup.answer(basic(token, ""), method="GET", path="/stats")
    assert answer.status == 200
    assert setup.passed[-1] == {"zerogate_token_id": token_id, "zerogate_token_name": "ops"}


@run_async
async def test_a_page_asks_a_browser_for_credentials() -> None:
    setup = GateSetup(docs="token", failure_burst=100)
    token, _ = await setup.token("ops", ("*:*",))
    cases = [
        ((), None),  # nothing sent: the bare challenges
        ((basic("ops", "zgw_wrong"),), "invalid_token"),
        ((basic("ops", token[:-1] + ("A" if token[-1] != "A" else "B")),), "invalid_token"),
        ((bearer("zgw_wrong"),), "invalid_token"),
    ]
    for headers, error in cases:
        answer = await setup.answer(*headers, method="GET", path="/traces")
        assert answer.status == 401, answer
        bearer_challenge = REALM if error is None else f'{REALM}, error="{error}"'
        # Bearer first, as DESIGN has it; a browser skips it for the scheme it knows.
        assert answer.values(b"www-authenticate") == [bearer_challenge, BASIC]
        assert answer.problem()["code"] == "unauthenticated"
        assert token not in answer.body.decode()
    assert setup.passed == []


@run_async
async def test_basic_credentials_open_nothing_but_the_pages() -> None:
    setup = GateSetup(docs="token", failure_burst=100)
    token, _ = await setup.token("ops", ("*:*",))
    refused = [
        ("POST", "/rpc/calc/add"),
        ("GET", "/rpc/calc/add"),  # a cross-site <img> could make this GET
        ("GET", "/rpc"),
        ("GET", "/metrics"),
        ("POST", "/jsonrpc"),
        ("POST", "/traces"),
    ]
    for method, path in refused:
        answer = await setup.answer(basic("ops", token), method=method, path=path)
        assert answer.status == 401, (method, path, answer)
        # No Basic challenge: a browser must not be asked for credentials it would then
        # send with every request to the gateway.
        assert answer.values(b"www-authenticate") == [f'{REALM}, error="invalid_token"']
        detail = answer.problem()["detail"]
        assert "read by the trace and docs pages only" in detail, detail
        assert "Bearer <token>" in detail
    assert setup.passed == []
    # The same token as a bearer goes through there.
    assert (await setup.answer(bearer(token))).status == 200


@run_async
async def test_a_basic_token_and_a_different_api_key_conflict_on_a_page() -> None:
    setup = GateSetup(docs="token", failure_burst=100)
    ops, _ = await setup.token("ops", ("*:*",))
    other, _ = await setup.token("other")
    same = await setup.answer(
        basic("ops", ops), (b"x-api-key", ops.encode()), method="GET", path="/stats"
    )
    assert same.status == 200
    answer = await setup.answer(
        basic("ops", ops), (b"x-api-key", other.encode()), method="GET", path="/stats"
    )
    assert answer.status == 400
    assert answer.problem()["code"] == "unauthenticated"
    assert len(setup.passed) == 1
