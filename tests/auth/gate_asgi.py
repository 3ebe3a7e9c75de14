"""A gate in front of an app that records who got through, called as plain ASGI (no server):
for the door's decisions one request at a time, on an in-memory token store. The end-to-end
rules are in test_gate_e2e and test_attacks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from auth_support import MemoryTokenStore, hasher

from auth.gate import AuthGate
from auth.ratelimit import MemoryRateLimiter
from auth.store import issue_token
from auth.verify import TokenVerifier
from gateway.config import parse_config
from gateway.observe import SCOPE_KEY, RequestInfo, request_info
from rpccore import TraceContext

CONFIG_YAML = (
    "services:\n  calc:\n    endpoints: [tcp://127.0.0.1:1]\n"
    "auth:\n  mode: token\n  secret: env:UNUSED\n"
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]  # the gate's own and RequestInfo.response_headers
    body: bytes

    def values(self, name: bytes) -> list[str]:
        return [value.decode("latin-1") for key, value in self.headers if key == name]

    def problem(self) -> dict[str, Any]:
        problem: dict[str, Any] = json.loads(self.body)
        return problem


class GateSetup:
    """A gate in front of an app that records who got through, and with what metadata."""

    def __init__(self, *, docs: str = "public", failure_burst: int = 1) -> None:
        """``docs``: the config's ``auth.docs``; ``failure_burst``: failed authentications
        allowed per client address."""
        config = parse_config(f"{CONFIG_YAML}  docs: {docs}\n")
        self.store = MemoryTokenStore()
        self.verifier = TokenVerifier(self.store, hasher())
        self.failures = MemoryRateLimiter(rate=1.0, burst=failure_burst)
        self.passed: list[dict[str, str] | None] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            self.passed.append(request_info(scope).metadata)  # what every RPC call carries
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        limiter = MemoryRateLimiter(rate=1000.0, burst=1000)
        self.gate = AuthGate(app, config.auth, self.verifier, limiter, self.failures)

    async def token(
        self, name: str = "ci", scopes: tuple[str, ...] = ("calc:*",)
    ) -> tuple[str, str]:
        issued = await issue_token(
            self.store, hasher(), name=name, scopes=list(scopes), now=1.0, expires_at=None
        )
        return issued.token, issued.record.id

    async def answer(
        self,
        *headers: tuple[bytes, bytes],
        method: str = "POST",
        path: str = "/rpc/calc/add",
        client: str = "10.0.0.1",
    ) -> Answer:
        info = RequestInfo(TraceContext.new_root(), 0.0, 0.0)
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"gw"), *headers],
            "client": (client, 40000),
            SCOPE_KEY: info,
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.gate(scope, receive, send)
        # What Observed adds on the way out: the headers the gate left in the request's info.
        headers_sent = [*sent[0]["headers"], *info.response_headers]
        body = b"".join(message.get("body", b"") for message in sent[1:])
        return Answer(sent[0]["status"], headers_sent, body)

    async def status(self, *headers: tuple[bytes, bytes], client: str = "10.0.0.1") -> int:
        return (await self.answer(*headers, client=client)).status


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())
