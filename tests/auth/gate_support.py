"""Support for the door's end-to-end tests (``test_gate_e2e.py``, ``test_attacks.py``).

* A recording backend: ``LEDGER_BACKEND`` is a small rpccore.aio script, written into the
  test's tmp dir and run as a child process, serving two services (``shop`` and ``admin``)
  on two loopback ports. Every request it receives, ``_zerorpc_inspect`` included, is
  appended to a JSON-lines ledger with the service, the method and the whole event header,
  and ``header()`` answers the header of its own call: what a backend can see of the caller.
* ``AuthSetup``: a server secret in a file (mode 0600), a token store (a SQLite file, or the
  test session's redis-server), the config text of a gateway in front of the backend with
  ``auth.mode: token``, and tokens made with the store API (in a child process: see
  ``AuthSetup.issue_many``) or with ``zerogate token``.
* Clients that each come from a loopback address of their own (127.0.0.2 and on), so that
  the per-address limit on failed authentications (20 in a burst) never mixes tests up, and
  ``send_raw`` for requests whose bytes must reach the gateway exactly as written.
* Assertions on RFC 6750 refusals and problem documents.

The gateway itself is ``e2e_support.Gateway``: ``create_app`` under a real uvicorn with the
production HTTP protocol, on a free loopback port, in a thread.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from e2e_support import REPO, Children, Gateway, free_port, wait_for_port
from loopback import free_ports

__all__ = [
    "REPO",
    "AuthSetup",
    "Children",
    "Gateway",
    "Issued",
    "LedgerBackend",
    "RawAnswer",
    "TokenSpec",
    "assert_problem",
    "assert_refused",
    "bearer",
    "client",
    "free_port",
    "http_request",
    "next_address",
    "rate_headers",
    "send_raw",
]

REALM: Final = 'Bearer realm="zerogate"'
BASIC_CHALLENGE: Final = 'Basic realm="zerogate", charset="UTF-8"'
PROBLEM_JSON: Final = "application/problem+json"
CLI_TIMEOUT: Final = 60.0
HTTP_TIMEOUT: Final = 15.0
SECRET_BYTES: Final = b"an end-to-end test secret, long enough for HMAC-SHA256 keys\n"
# Tokens issued by AuthSetup.issue get these limits unless a test asks otherwise: the
# gateway's own default (rate_limit in the config) is kept small for the tests of it.
ROOMY_RATE: Final = 10_000.0
ROOMY_BURST: Final = 10_000

LEDGER_BACKEND: Final = '''\
"""A recording backend: python ledger_backend.py SHOP_ENDPOINT ADMIN_ENDPOINT LEDGER."""

import asyncio
import contextvars
import json
import sys

from rpccore import current_trace
from rpccore.aio import Server

HEADER = contextvars.ContextVar("header", default=None)
LEDGER = sys.argv[3]


def plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return repr(value)


class Recording(Server):
    """Records every request's event header before running it (the handler cannot see the
    header otherwise: rpccore binds only its trace context)."""

    async def _serve(self, request, func):
        header = {plain(key): plain(value) for key, value in request.header.items()}
        HEADER.set(header)
        line = {"service": self.service.name, "method": request.method, "header": header}
        with open(LEDGER, "a") as ledger:
            ledger.write(json.dumps(line) + "\\n")
        await super()._serve(request, func)


class Shop:
    """A shop with a few methods a token may or may not call."""

    async def add(self, a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    async def get_item(self, name: str) -> dict:
        """One item."""
        return {"name": name, "price": 1.5}

    async def list_items(self) -> list:
        """Every item."""
        return [{"name": "apple", "price": 1.5}]

    async def get_secret(self) -> str:
        """A safe method that most tokens may not call."""
        return "the secret"

    async def delete_all(self) -> str:
        """What no test token but the full one may call."""
        return "deleted"

    async def header(self) -> dict:
        """The event header of this call, and the trace context the server bound."""
        trace = current_trace.get()
        return {"header": HEADER.get(), "trace_id": None if trace is None else trace.trace_id}


async def main() -> None:
    shop = Recording(Shop(), name="shop")
    admin = Recording(Shop(), name="admin")
    shop.bind(sys.argv[1])
    admin.bind(sys.argv[2])
    await asyncio.gather(shop.run(), admin.run())


asyncio.run(main())
'''


@dataclass(frozen=True)
class TokenSpec:
    name: str
    scopes: Sequence[str]
    rate: float | None = ROOMY_RATE
    burst: int | None = ROOMY_BURST
    expires_in: float | None = None  # seconds from now; negative: expired already

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "rate": self.rate,
            "burst": self.burst,
            "expires_in": self.expires_in,
        }


@dataclass(frozen=True)
class Issued:
    """A token just made: the secret, and the id that names it."""

    token: str = field(repr=False)
    id: str
    name: str


class LedgerBackend:
    """``LEDGER_BACKEND`` in a child process: ``shop`` and ``admin`` endpoints, and the
    ledger of every request they received."""

    def __init__(self, children: Children, folder: Path) -> None:
        script = folder / "ledger_backend.py"
        script.write_text(LEDGER_BACKEND)
        self.ledger = folder / "ledger.jsonl"
        ports = free_ports(2)
        self.shop, self.admin = (f"tcp://127.0.0.1:{port}" for port in ports)
        self.process = children.start(
            str(script), self.shop, self.admin, str(self.ledger), name="ledger-backend"
        )
        for port in ports:
            wait_for_port(port)

    def calls(self) -> list[dict[str, Any]]:
        """Every request received so far, oldest first."""
        try:
            text = self.ledger.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def methods(self, since: int = 0) -> list[str]:
        """``service.method`` of the requests received after the first ``since``."""
        return [f"{c['service']}.{c['method']}" for c in self.calls()[since:]]


ISSUER: Final = '''\
"""Issue tokens with the store API: a JSON request on stdin, a JSON list on stdout."""

import asyncio
import json
import sys
import time
from pathlib import Path

from auth.secret import TokenHasher
from auth.store import RedisTokenStore, SqliteTokenStore, issue_token


async def main(request):
    hasher = TokenHasher(Path(request["secret"]).read_bytes().strip())
    if request["kind"] == "sqlite":
        store = SqliteTokenStore(Path(request["where"]))
    else:
        store = RedisTokenStore(request["where"])
    made = []
    try:
        for spec in request["tokens"]:
            now = time.time()
            expires_in = spec["expires_in"]
            new = await issue_token(
                store,
                hasher,
                name=spec["name"],
                scopes=spec["scopes"],
                # An expired token was made before it expired.
                now=now if expires_in is None or expires_in > 0 else now + expires_in - 60,
                expires_at=None if expires_in is None else now + expires_in,
                rate=spec["rate"],
                burst=spec["burst"],
            )
            made.append({"token": new.token, "id": new.record.id, "name": new.record.name})
    finally:
        await store.aclose()
    print(json.dumps(made))


asyncio.run(main(json.load(sys.stdin)))
'''


def _write_secret(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(SECRET_BYTES)


@dataclass
class AuthSetup:
    """A secret, a token store and a backend: what a gateway with auth on needs."""

    kind: str  # "sqlite" or "redis"
    folder: Path
    backend: LedgerBackend
    redis_url: str | None = None
    secret_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.secret_path = self.folder / "secret"
        _write_secret(self.secret_path)

    @property
    def store_url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder / 'tokens.db'}"  # an absolute path: ////
        assert self.redis_url is not None
        return self.redis_url

    def config(
        self,
        *,
        store_url: str | None = None,
        docs: str = "public",
        public: Sequence[str] | None = None,
        rate_limit: str = "{per_token: 1/m, burst: 5, store: memory}",
        cors: Sequence[str] = (),
    ) -> str:
        """The YAML of a gateway in front of the backend, with auth on."""
        lines = [
            "gateway:",
            "  shutdown_grace: 1",
            f"  cors: {{allow_origins: {json.dumps(list(cors))}}}",
            "services:",
        ]
        for name, endpoint in (("shop", self.backend.shop), ("admin", self.backend.admin)):
            lines += [
                f"  {name}:",
                f"    endpoints: [{endpoint}]",
                "    timeout: 10",
                '    safe: ["get_*", "list_*"]',
            ]
        lines += [
            "routes:",
            '  - {method: GET,  path: "/items/{name}", call: shop.get_item}',
            '  - {method: GET,  path: "/secret",       call: shop.get_secret}',
            '  - {method: POST, path: "/purge",        call: shop.delete_all}',
            '  - {method: GET,  path: "/admin/items",  call: admin.list_items}',
            "auth:",
            "  mode: token",
            f"  store: {json.dumps(store_url or self.store_url)}",
            f"  secret: {json.dumps(f'file:{self.secret_path}')}",
            f"  docs: {docs}",
        ]
        if public is not None:
            lines.append(f"  public: {json.dumps(list(public))}")
        lines.append(f"rate_limit: {rate_limit}")
        return "\n".join(lines) + "\n"

    def config_file(self, text: str | None = None, name: str = "zerogate.yaml") -> Path:
        path = self.folder / name
        path.write_text(text if text is not None else self.config())
        return path

    def issue(
        self,
        name: str,
        *scopes: str,
        rate: float | None = ROOMY_RATE,
        burst: int | None = ROOMY_BURST,
        expires_in: float | None = None,
    ) -> Issued:
        """A token made with the store API (``issue_token``), as ``zerogate token`` does."""
        spec = TokenSpec(name, scopes, rate=rate, burst=burst, expires_in=expires_in)
        return self.issue_many([spec])[0]

    def issue_many(self, specs: Sequence[TokenSpec]) -> list[Issued]:
        """Tokens made with the store API in a child process (one for all of them).

        Not in this process: a second ``SqliteTokenStore`` in the process of a running
        gateway releases the POSIX locks of the gateway's connection when it opens (it opens
        and closes the file itself to set its mode), and the next ``zerogate token`` process
        then deletes the WAL under the gateway's feet (see
        ``test_a_second_sqlite_store_in_the_gateway_process_keeps_it_working``)."""
        script = self.folder / "issue_tokens.py"
        script.write_text(ISSUER)
        request = {
            "kind": self.kind,
            "where": str(self.folder / "tokens.db") if self.kind == "sqlite" else self.redis_url,
            "secret": str(self.secret_path),
            "tokens": [spec.as_json() for spec in specs],
        }
        done = subprocess.run(
            [sys.executable, str(script)],
            input=json.dumps(request),
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return [Issued(**item) for item in json.loads(done.stdout)]

    def status(self, token_id: str) -> str:
        """The token's status as ``zerogate token list --json`` shows it."""
        listed = self.token_command("list", "--json")
        assert listed.returncode == 0, listed.stderr
        return next(str(t["status"]) for t in json.loads(listed.stdout) if t["id"] == token_id)

    def token_command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``zerogate token ARGS -c`` this setup's config file, in a child process."""
        config = self.config_file()
        env = {key: value for key, value in os.environ.items() if key != "ZEROGATE_CONFIG"}
        env["PYTHONPATH"] = str(REPO)
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "token", args[0], "-c", str(config), *args[1:]],
            env=env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )


# -- clients ----------------------------------------------------------------------------------

_ADDRESSES: Final = (f"127.0.{high}.{low}" for high in range(256) for low in range(2, 255))


def next_address() -> str:
    """A loopback address no other client of this process has used."""
    return next(_ADDRESSES)


def client(gateway: Gateway, *, address: str | None = None, **options: Any) -> httpx.Client:
    """An HTTP client of ``gateway`` from a loopback address of its own."""
    transport = httpx.HTTPTransport(local_address=address or next_address())
    return httpx.Client(base_url=gateway.url, transport=transport, timeout=HTTP_TIMEOUT, **options)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, list[str]]  # lowercase names
    body: bytes
    reset: bool = False  # the connection was reset before a whole answer came

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str | bytes,
    target: str | bytes,
    headers: Sequence[tuple[str | bytes, str | bytes]] = (),
    body: bytes | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request, exactly as given (plus Host and Connection: close,
    and Content-Length when there is a body)."""

    def b(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("latin-1")

    lines = [b(method) + b" " + b(target) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [b(name) + b": " + b(value) for name, value in headers]
    lines.append(b"Connection: close")
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def send_raw(gateway: Gateway, data: bytes, *, address: str | None = None) -> RawAnswer:
    """Send ``data`` on a new connection and read the answer until the gateway closes it."""
    source = (address or next_address(), 0)
    with socket.create_connection(
        ("127.0.0.1", gateway.port), timeout=HTTP_TIMEOUT, source_address=source
    ) as sock:
        reset = False
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            reset = True  # it answered (and closed) before reading everything
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            if not chunk:
                break
            chunks.append(chunk)
    return _parse(b"".join(chunks), reset)


def _parse(data: bytes, reset: bool) -> RawAnswer:
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return RawAnswer(0, {}, b"", reset=True)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get("transfer-encoding") == ["chunked"]:
        body = _unchunk(body)
    return RawAnswer(int(status_line.split(" ")[1]), headers, body, reset)


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


# -- assertions -------------------------------------------------------------------------------

Answer = httpx.Response | RawAnswer


def _header(answer: Answer, name: str) -> str | None:
    if isinstance(answer, RawAnswer):
        return answer.header(name)
    value: str | None = answer.headers.get(name)
    return value


def assert_problem(answer: Answer, status: int, code: str | None = None) -> dict[str, Any]:
    """``answer`` is a problem document (RFC 9457) of ``status`` (and ``code``); returns it."""
    body = answer.body if isinstance(answer, RawAnswer) else answer.content
    assert status_of(answer) == status, (status_of(answer), status, body[:500])
    content_type = _header(answer, "content-type") or ""
    assert content_type.startswith(PROBLEM_JSON), (content_type, body[:500])
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == status, problem
    for key in ("type", "title", "detail"):
        assert key in problem, problem
    if code is not None:
        assert problem.get("code") == code, problem
    assert problem.get("trace_id") == _header(answer, "x-trace-id"), problem
    return problem


def _challenges(answer: Answer) -> list[str]:
    if isinstance(answer, RawAnswer):
        return answer.headers.get("www-authenticate", [])
    return answer.headers.get_list("www-authenticate")


def assert_refused(
    answer: Answer, status: int, error: str | None = None, *, page: bool = False
) -> dict[str, Any]:
    """An RFC 6750 refusal: 401 (``error`` None: no credentials, else "invalid_token") or
    403 ("insufficient_scope"), with its ``WWW-Authenticate`` challenge, as a problem. A
    ``page``'s 401 (one a browser opens: auth.gate.is_browser_page) also asks for Basic."""
    code = {401: "unauthenticated", 403: "permission_denied", 400: "unauthenticated"}[status]
    problem = assert_problem(answer, status, code)
    expected = [REALM if error is None else f'{REALM}, error="{error}"']
    if page and status == 401:
        expected.append(BASIC_CHALLENGE)
    assert _challenges(answer) == expected, problem
    return problem


def status_of(answer: Answer) -> int:
    return answer.status_code if isinstance(answer, httpx.Response) else answer.status


def rate_headers(answer: Answer) -> tuple[int, int, int]:
    """(RateLimit-Limit, -Remaining, -Reset); AssertionError when one is missing."""
    values = []
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        value = _header(answer, name)
        assert value is not None, (name, status_of(answer))
        assert value.isdigit(), (name, value)
        values.append(int(value))
    return values[0], values[1], values[2]
