"""AuthGate's fast path (a token verified moments ago is let through from caches) decides
exactly as the whole way does: the cases it cannot decide fall through to it. Plain ASGI
calls on an in-memory store; the end-to-end rules are in test_gate_e2e and test_attacks."""

from __future__ import annotations

from typing import Any

from auth_support import MemoryTokenStore, hasher, run_async

from auth.gate import AuthGate
from auth.ratelimit import MemoryRateLimiter
from auth.store import issue_token
from auth.verify import TokenVerifier
from gateway.config import parse_config
from gateway.observe import SCOPE_KEY, RequestInfo, request_info
from rpccore import TraceContext

CONFIG = parse_config(
    "services:\n  calc:\n    endpoints: [tcp://127.0.0.1:1]\n"
    "auth:\n  mode: token\n  secret: env:UNUSED\n"
)


class Setup:
    """A gate in front of an app that records who got through, and with what metadata."""

    def __init__(self) -> None:
        self.store = MemoryTokenStore()
        self.verifier = TokenVerifier(self.store, hasher())
        self.failures = MemoryRateLimiter(rate=1.0, burst=1)
        self.passed: list[dict[str, str] | None] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            self.passed.append(request_info(scope).metadata)  # what every RPC call carries
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        limiter = MemoryRateLimiter(rate=1000.0, burst=1000)
        self.gate = AuthGate(app, CONFIG.auth, self.verifier, limiter, self.failures)

    async def token(self, name: str = "ci") -> tuple[str, str]:
        issued = await issue_token(
            self.store, hasher(), name=name, scopes=["calc:*"], now=1.0, expires_at=None
        )
        return issued.token, issued.record.id

    async def status(self, *headers: tuple[bytes, bytes], client: str = "10.0.0.1") -> int:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/rpc/calc/add",
            "raw_path": b"/rpc/calc/add",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"gw"), *headers],
            "client": (client, 40000),
            SCOPE_KEY: RequestInfo(TraceContext.new_root(), 0.0, 0.0),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.gate(scope, receive, send)
        status: int = sent[0]["status"]
        return status


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())


@run_async
async def test_a_known_token_passes_again_with_its_metadata() -> None:
    setup = Setup()
    token, token_id = await setup.token()
    for header in (bearer(token), bearer(token), (b"x-api-key", token.encode())):
        assert await setup.status(header) == 200
    assert setup.passed == [{"zerogate_token_id": token_id, "zerogate_token_name": "ci"}] * 3
    assert setup.store.finds == 1  # the later ones came from the caches


@run_async
async def test_two_credentials_conflict_even_when_both_were_let_through_before() -> None:
    setup = Setup()
    first, _ = await setup.token("first")
    second, _ = await setup.token("second")
    assert await setup.status(bearer(first)) == 200
    assert await setup.status(bearer(second)) == 200
    assert await setup.status(bearer(first), (b"x-api-key", second.encode())) == 400
    assert await setup.status(bearer(first), bearer(second)) == 400
    assert await setup.status(bearer(first), (b"x-api-key", first.encode())) == 200  # the same
    assert len(setup.passed) == 3


@run_async
async def test_other_spellings_of_a_known_token_take_the_whole_way_and_pass() -> None:
    setup = Setup()
    token, _ = await setup.token()
    assert await setup.status(bearer(token)) == 200
    for value in (f"bearer {token}", f"Bearer   {token} ", f"BEARER {token}"):
        assert await setup.status((b"authorization", value.encode())) == 200
    assert await setup.status((b"authorization", f"Basic {token}".encode())) == 401
    assert len(setup.passed) == 4


@run_async
async def test_an_address_out_of_failures_is_refused_even_with_a_known_token() -> None:
    setup = Setup()
    token, _ = await setup.token()
    assert await setup.status(bearer(token), client="10.0.0.9") == 200
    assert await setup.status(bearer("zgw_" + "x" * 42), client="10.0.0.9") == 401  # a failure
    assert await setup.status(bearer(token), client="10.0.0.9") == 429  # its one try is spent
    assert await setup.status(bearer(token), client="10.0.0.8") == 200  # another address
    assert len(setup.passed) == 2
