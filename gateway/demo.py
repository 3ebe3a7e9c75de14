"""``zerogate demo``: two demo services on loopback, the gateway in front of them, a trace
collector recording every call, and what to try, printed.

    zerogate demo [--port 8080] [--auth]

The services (``gateway.demo_backends``) run in child processes of their own, ``calc`` on the
gevent driver and ``inventory`` on the asyncio driver; each binds a free loopback port and
tells us which. A third child runs ``zerogate collector`` with a memory store; the services
(``$ZEROGATE_COLLECTOR``) and the gateway (``tracing:`` in its config) send it a record of
every call, and the gateway shows them at ``/traces`` and ``/stats``. The gateway runs here
under uvicorn on ``127.0.0.1:PORT``, from the embedded config ``DEMO_CONFIG``. Once it
answers, a banner lists the URLs to open and curl lines to paste (the same lines the tests
run).

With ``--auth`` the gateway asks for tokens (``auth.mode: token``). Everything auth needs
lives in a temporary folder for the demo's life, removed when it stops: a fresh server
secret (``file:``, mode 0600) and a SQLite token store holding one token of scope ``*:*``.
The banner shows that token once and every curl line sends it (``$TOKEN``).

Ctrl-C or SIGTERM stops the gateway (requests in flight get ``shutdown_grace``), then each
child by its PID. The children run in their own session, so a terminal's Ctrl-C reaches only
us and the order holds; a child that dies early stops the demo with a message (exit 1). A
port in use is one line and exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import IO, Final

import uvicorn

from rpccore.tracing import ENV_COLLECTOR, ENV_PROCESS_NAME

from .app import create_app
from .config import Config, parse_config
from .serve import StopSignals, bind_error, listen, uvicorn_config

DEMO_HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 30.0  # seconds a backend has to bind and say where
STOP_TIMEOUT: Final = 5.0  # seconds a backend has to exit after SIGTERM, before SIGKILL
WATCH_PERIOD: Final = 0.2  # seconds between checks on the children

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

# $calc and $inventory are the endpoints the backends report; the rest is what the banner
# promises: GET for inventory's get_*/list_*, KeyError as 404, three REST routes.
DEMO_CONFIG: Final = Template(
    """\
gateway:
  host: $host
  port: $port
  shutdown_grace: 2
services:
  calc:
    endpoints: [$calc]
    timeout: 10
  inventory:
    endpoints: [$inventory]
    timeout: 10
    safe: ["get_*", "list_*"]
    errors: {KeyError: 404, ValueError: 400}
routes:
  - {method: GET,  path: "/items",               call: inventory.list_items}
  - {method: GET,  path: "/items/{sku}",         call: inventory.get_item}
  - {method: POST, path: "/items/{sku}/reserve", call: inventory.reserve}
"""
)
# The demo's collector: where it takes records, where it answers queries.
TRACING_CONFIG: Final = Template('tracing: {collector: "$records", query: "$queries"}\n')
# With --auth: paths relative to the demo's temporary folder.
AUTH_CONFIG: Final = """\
auth:
  mode: token
  store: sqlite:///tokens.db
  secret: file:secret
"""
DEMO_SCOPE: Final = "*:*"
TOKEN_VARIABLE: Final = "TOKEN"


@dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str  # as ``gateway.demo_backends`` knows it
    driver: str
    methods: str
    title: str = ""  # what messages call it; else "the NAME backend"

    def __str__(self) -> str:
        return self.title or f"the {self.name} backend"


BACKENDS: Final = (
    BackendSpec(
        "calc",
        "rpccore.green (gevent)",
        "add, greet, midpoint, count (stream), divide (raises), slow",
    ),
    BackendSpec(
        "inventory",
        "rpccore.aio (asyncio)",
        "list_items, get_item (KeyError: 404), reserve, watch (stream), audit (slow)",
    ),
)
COLLECTOR: Final = BackendSpec("collector", "zerogate collector", "", "the trace collector")


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


class BackendProcess:
    """One backend child: started, asked for its endpoint, stopped by its PID. ``env``: what
    to add to its environment."""

    def __init__(self, spec: BackendSpec, env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.endpoint: str | None = None
        # Its own session: a terminal's Ctrl-C reaches the demo only, which stops the
        # gateway first. Its stdin is a lifeline: it exits when the demo is gone.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.demo_backends", spec.name, "--until-stdin-closes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )

    def __repr__(self) -> str:
        return f"<BackendProcess {self.spec.name} pid={self.process.pid} {self.endpoint}>"

    def wait_endpoint(self, timeout: float) -> str:
        """The endpoint the child printed once bound (the collector's line holds two);
        ``DemoError`` if it did not in time."""
        out = self.process.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline().decode(errors="replace").strip() if ready else ""
        out.close()  # it prints nothing else
        if not line.startswith("tcp://"):
            self.stop()
            raise DemoError(f"{self.spec} did not start: {self._state()}")
        self.endpoint = line
        return line

    def exit_message(self) -> str | None:
        """Why the child is gone, or None while it runs."""
        if self.process.poll() is None:
            return None
        return f"{self.spec} (pid {self.process.pid}) stopped: {self._state()}"

    def stop(self) -> None:
        """SIGTERM to its PID, then SIGKILL if it has not exited in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _close(self.process.stdin)
        _close(self.process.stdout)

    def _state(self) -> str:
        code = self.process.poll()
        if code is None:
            return "no endpoint announced"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None and not pipe.closed:
        pipe.close()


def demo_config(
    port: int, endpoints: dict[str, str], tracing: tuple[str, str], auth: DemoAuth | None = None
) -> Config:
    """``endpoints``: each service's; ``tracing``: the collector's (records, queries)."""
    text = DEMO_CONFIG.substitute(host=DEMO_HOST, port=port, **endpoints)
    records, queries = tracing
    text += TRACING_CONFIG.substitute(records=records, queries=queries)
    if auth is None:
        return parse_config(text, "<zerogate demo config>")
    return parse_config(text + AUTH_CONFIG, "<zerogate demo config>", auth.folder)


@dataclass(frozen=True, slots=True)
class DemoAuth:
    """What ``--auth`` made: the folder holding the secret and the store, and the token."""

    folder: Path
    token: str


def make_auth(folder: Path) -> DemoAuth:
    """A new secret and token store in ``folder``, with one token of scope ``*:*``."""
    # Imported here: a demo without --auth never needs the token stores (or redis).
    from auth.secret import load_hasher  # noqa: PLC0415
    from auth.store import SqliteTokenStore, StoreError, issue_token  # noqa: PLC0415

    from .config import FileSecret  # noqa: PLC0415

    secret = folder / "secret"
    fd = os.open(secret, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48) + "\n")
    hasher = load_hasher(FileSecret(secret))

    async def issue() -> str:
        # Closed before the gateway opens its own store on the file.
        store = SqliteTokenStore(folder / "tokens.db")
        try:
            new = await issue_token(
                store, hasher, name="zerogate demo", scopes=[DEMO_SCOPE], now=time.time()
            )
        finally:
            await store.aclose()
        return new.token

    try:
        return DemoAuth(folder, asyncio.run(issue()))
    except StoreError as exc:
        raise DemoError(f"cannot make the demo's token: {exc}") from None


def try_lines(base: str, *, auth: bool = False) -> list[str]:
    """The curl lines of the banner, each with what it shows as a shell comment; with
    ``auth``, each sends the token of the shell variable ``$TOKEN``."""
    json = "-H 'content-type: application/json'"
    token = f'-H "Authorization: Bearer ${TOKEN_VARIABLE}" ' if auth else ""
    return [
        f"curl -s {token}{json} -d '[1, 2]' {base}/rpc/calc/add   # a JSON array: positional args",
        f'curl -s {token}{json} -d \'{{"name": "PyCon"}}\' {base}/rpc/calc/greet'
        "   # an object: named args",
        f"curl -s {token}'{base}/rpc/inventory/list_items?category=fruit'   # GET: a safe method",
        f"curl -s {token}{base}/items/apple   # a REST route (routes: in the config)",
        f"curl -sN {token}{json} -d '[5, 0.2]' {base}/rpc/calc/count   # a stream, as NDJSON",
        f"curl -sN {token}-H 'accept: text/event-stream' {json} -d '{{\"sku\": \"apple\"}}' "
        f"{base}/rpc/inventory/watch   # a stream, as server-sent events",
        f"curl -s {token}{base}/items/unicorn   # an error: KeyError mapped to 404, problem+json",
    ]


def banner(
    base: str, backends: list[BackendProcess], records: str, auth: DemoAuth | None = None
) -> str:
    """What the demo prints once the gateway answers; ``records``: where the collector takes
    trace records."""
    width = max(len(backend.spec.name) for backend in backends)
    services = [
        f"  {b.spec.name:<{width}}  {b.spec.driver:<23} {b.endpoint}  {b.spec.methods}"
        for b in backends
    ]
    token = " (token)" if auth is not None else ""
    lines = [
        f"zerogate demo: the gateway is on {base}, in front of these services:",
        *services,
        "REST routes: GET /items, GET /items/{sku}, POST /items/{sku}/reserve",
        f"Tracing: every request and call is recorded by a trace collector on {records}"
        " (in memory)",
        "",
        f"  {base}/docs          API docs: try every method from the browser",
        f"  {base}/redoc         API reference",
        f"  {base}/openapi.json  the OpenAPI 3.1 document",
        f"  {base}/rpc           the catalog: services, methods, arguments, docs{token}",
        f"  {base}/metrics       Prometheus metrics{token}",
        f"  {base}/healthz       liveness",
        f"  {base}/traces        recent traces: open one for its calls on a timeline{token}",
        f"  {base}/stats         request rates and latency percentiles per method{token}",
        "",
    ]
    if auth is not None:
        lines += [
            f"Auth is on: every request but /healthz, /readyz and the docs pages needs a token."
            f" Here is one, of scope {DEMO_SCOPE} (in /docs: Authorize, then paste it; when"
            " /traces or /stats asks for a user name and password, it is the password):",
            "",
            f"  {TOKEN_VARIABLE}={auth.token}",
            "",
            "It is shown only here. The secret and the token store are in "
            f"{auth.folder}, removed when the demo stops.",
            "",
        ]
    return "\n".join(
        [
            *lines,
            "Try:",
            *(f"  {line}" for line in try_lines(base, auth=auth is not None)),
            "",
            "Access log lines (JSON) follow. Ctrl-C stops.",
        ]
    )


class Watcher:
    """In a thread while uvicorn runs: prints the banner once the gateway serves, and stops
    the gateway if a child (a backend, the collector) dies."""

    def __init__(self, server: uvicorn.Server, children: list[BackendProcess], text: str) -> None:
        self.server = server
        self.children = children
        self.text = text
        self.failure: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zerogate demo watcher")

    def __repr__(self) -> str:
        return f"<Watcher failure={self.failure!r}>"

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        shown = False
        while not self._done.wait(WATCH_PERIOD):
            for child in self.children:
                if (message := child.exit_message()) is not None:
                    self.failure = message
                    self.server.should_exit = True  # uvicorn checks it every 0.1 s
                    return
            if not shown and self.server.started:
                print(self.text, flush=True)
                shown = True


def run_demo(port: int, *, auth: bool = False) -> int:
    """Run the demo until SIGINT or SIGTERM; the exit status. With ``auth``, the gateway
    asks for tokens, and the banner shows one."""
    stop = StopSignals()
    stop.install()
    try:
        sock = listen(DEMO_HOST, port)
    except OSError as exc:
        print(
            f"zerogate demo: {bind_error(DEMO_HOST, port, exc)} (try another --port)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    children: list[BackendProcess] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(sock)
        try:
            demo_auth = None
            if auth:  # removed at the end, once the gateway has closed its store
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="zerogate-demo-"))
                demo_auth = make_auth(Path(folder))
            return _run(sock, children, stop, demo_auth)
        except DemoError as exc:
            print(f"zerogate demo: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            for child in reversed(children):  # the collector last: it started first
                child.stop()


def _run(
    sock: socket.socket,
    children: list[BackendProcess],
    stop: StopSignals,
    auth: DemoAuth | None,
) -> int:
    """Start the collector, then the services (which must know where it is), then the
    gateway; ``children``: every child started, for the caller to stop."""
    port = sock.getsockname()[1]
    children.append(BackendProcess(COLLECTOR))
    records, queries = children[0].wait_endpoint(START_TIMEOUT).split()
    backends = [
        BackendProcess(spec, {ENV_COLLECTOR: records, ENV_PROCESS_NAME: spec.name})
        for spec in BACKENDS
    ]
    children.extend(backends)
    endpoints = {b.spec.name: b.wait_endpoint(START_TIMEOUT) for b in backends}
    config = demo_config(port, endpoints, (records, queries), auth)
    if stop.requested.is_set():
        return EXIT_OK
    server = uvicorn.Server(
        uvicorn_config(
            create_app(config),
            host=DEMO_HOST,
            port=port,
            shutdown_grace=config.gateway.shutdown_grace,
            log_level="warning",  # the banner says what uvicorn's startup lines would
        )
    )
    text = banner(f"http://{DEMO_HOST}:{port}", backends, records, auth)
    with Watcher(server, children, text) as watcher:
        server.run(sockets=[sock])
    if watcher.failure is not None:
        print(f"zerogate demo: {watcher.failure}", file=sys.stderr)
        return EXIT_FAILED
    print("zerogate demo: stopped", file=sys.stderr)
    return EXIT_OK
