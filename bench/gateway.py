"""Benchmark the zerogate HTTP gateway against a naive gateway and bare Starlette, with wrk.

Run it from the repository root (``make bench-gateway``)::

    .venv/bin/python bench/gateway.py                 # 5 rounds of 5 s measurements, ~5 min
    .venv/bin/python bench/gateway.py --quick         # 1 round of 2 s, a 256 MiB stream
    .venv/bin/python bench/gateway.py --rounds 3 --duration 3 --json /tmp/gateway.json
    .venv/bin/python bench/gateway.py --quick --without-ours   # the competitors alone

It is a benchmark, not a test: absolute numbers drift with the machine and whatever else
runs on it; the ratios, measured within one round, are what to compare. Before each round
the parent samples /proc/stat for 0.5 s and warns when other processes keep the CPUs
busy (over 10%): then expect the absolute numbers, Starlette's above all, to wander.

What runs (every process its own, all on 127.0.0.1, fresh in every round):

* the backend: an ``rpccore.green`` ``Server`` with ``add(a, b)`` and a stream ``big(n)``
  of ``n`` str items of 64 KiB (ASCII letters: valid UTF-8 that JSON copies unescaped);
* ``ours``: ``zerogate serve -c CONFIG`` (service ``calc`` -> the backend);
* ``auth``: ours a second time with ``auth.mode: token``: a secret in a file, a SQLite token
  store holding one token of scope ``*:*``, and a rate limit so high it never refuses
  (``per_token: 1000000/s, burst: 1000000``, in memory). Its wrk script sends
  ``Authorization: Bearer <token>``; it is checked to refuse a request without one;
* ``traced``: ours a third time with tracing on (``tracing.collector``), in front of a
  backend of its own with tracing on (``$ZEROGATE_COLLECTOR``): each request gives three
  records, shipped to a real ``zerogate collector`` that stores them in a real Redis, both
  started by ``_collector`` at idle CPU priority (a collector has a host of its own in
  production; here it gets the time the measured processes leave). The records stored
  per request are printed (3 when it kept up); needs ``redis-server``;
* ``naive``: Flask on gevent's ``WSGIServer`` (monkey-patched), ``POST /rpc/<service>/
  <method>`` -> one shared zerorpc 0.6.3 ``Client`` -> ``jsonify``; its listening socket has
  ``TCP_NODELAY``, which Linux copies to every accepted socket (the child checks this at
  start and refuses to run without it); no access log;
* ``starlette``: one Starlette route answering ``JSONResponse({"result": 3})`` under uvicorn
  (uvloop, httptools, no access log): the HTTP stack alone, the ceiling;
* ``direct``: an ``rpccore.aio`` client on uvloop calling the backend directly.

The five gateways are pinned to the first CPU, everything else (backend, wrk, curl, the
direct client) to the second, with ``os.sched_setaffinity`` in our children and
``taskset`` for the commands. Ports are chosen by binding port 0.

Measurements, per round:

* wrk ``-t1 -c64`` and ``-t1 -c1`` (each after a ``--warmup`` run that is thrown away) of
  ``POST /rpc/calc/add`` with the body ``[1, 2]``, ``--duration`` seconds each, the
  gateways in a rotating order. A Lua ``done()`` hook prints wrk's own counters as one
  JSON line: requests/s, p50/p99 latency, and every error. Any non-2xx response (wrk's
  "Non-2xx or 3xx responses") or socket error makes that measurement an error: it is
  printed and counts as n/a. Every gateway's answer is checked once before it is measured;
* at 64 connections, ``auth`` and ``traced`` are measured in turns with ours instead
  (``TURNS``): after a warm-up of both, eight wrk runs of a quarter of ``--duration`` (1 s
  at least), ours, the other, the other, ours, the other, ours, ours, the other (the reverse
  in odd rounds), the collector left to store every record before each of ours' turns (and
  set to work by a second of requests, not counted, before the traced gateway's turn that
  follows); the auth/ours and tracing/ours ratios are over those turns of ours. On a shared
  host req/s drift by 20% over seconds: against ours' own measurement, a minute away,
  auth's ratio ranged from 71% to 120% over the rounds of one run;
* the gateway's CPU time per request (all its threads) during the 64-connection run;
* ``direct``: the p50 of ``add(1, 2)`` called one at a time for ``--duration`` seconds,
  each call timed with ``perf_counter_ns``. "Added latency" is the gateway's wrk ``-c1``
  p50 minus this: what the HTTP hop costs over calling the backend yourself;
* a ``--mem-mib`` (1024) NDJSON stream, ``POST /rpc/calc/big`` ``[16384]`` through ours
  (a fresh process, first thing in the round), read whole by ``curl -N -o /dev/null``;
  the parent samples the gateway's VmRSS every 50 ms and reads its VmHWM (reset to VmRSS
  just before): growth = peak - before, and MiB/s. The stream must complete with a 200,
  ``application/x-ndjson`` and at least 16,384 x 64 KiB bytes, within 120 s.

Reading the output: a line per round as it is measured, then the medians over the rounds
(ratios: the median of the per-round ratios), then the targets with PASS/FAIL. Targets:
at 64 connections ours >= 3x naive's req/s and >= 35% of Starlette's; key auth plus rate
limiting (``auth``) keeps >= 90% of ours' req/s (Kong reports losing about 24% to the same
pair of plugins); tracing on (``traced``) keeps >= 85% of ours' req/s; at 1 connection
ours adds <= 250 us of p50 latency over a direct call;
the stream's RSS growth <= 100 MiB (the worst round). As in ``bench/rpc.py``, a missed
target prints FAIL but the exit status stays 0; it is 1 when a process cannot start, or
when ours cannot start (the others are still measured, and its targets are n/a; likewise
when ours with auth or with tracing cannot), 130 on Ctrl-C. ``--without-ours`` measures
the naive gateway and Starlette alone, on purpose (exit status 0).

Processes: every child is stopped by PID (SIGTERM, then SIGKILL) at the end of its round,
on errors and on Ctrl-C, and dies with the parent if it is killed (PR_SET_PDEATHSIG;
``setpriv --pdeathsig`` for the commands: ``zerogate serve``, wrk and curl, which also
run with a timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from _collector import CollectorStack, start_collector
from _common import (
    ROOT,
    Child,
    ChildError,
    RssSampler,
    choose_cpus,
    cpu_seconds,
    die_with_parent,
    emit,
    fmt,
    fmt_ratio,
    free_port,
    median,
    proc_status,
    reset_peak,
    stop_all,
)

HOST: Final = "127.0.0.1"
BIND: Final = f"tcp://{HOST}:*"
MIB: Final = 1024 * 1024
BLOB_SIZE: Final = 64 * 1024
SERVICE: Final = "calc"
CALL_PATH: Final = f"/rpc/{SERVICE}/add"
CALL_BODY: Final = "[1, 2]"
STREAM_PATH: Final = f"/rpc/{SERVICE}/big"
STALL: Final = 5.0  # seconds: every RPC's timeout, so a stalled backend fails fast
STREAM_TIMEOUT: Final = 120.0
READY_TIMEOUT: Final = 30.0
BUSY_WARNING: Final = 0.10  # others' share of a CPU before a round that gets a warning
WARM_CALLS: Final = 200

GATEWAYS: Final = ("ours", "auth", "traced", "naive", "starlette")
EXPECTED: Final[dict[str, object]] = {
    "ours": 3,
    "auth": 3,
    "traced": 3,
    "naive": 3,
    "starlette": {"result": 3},
}
CONNECTIONS: Final = (64, 1)

TARGET_VS_NAIVE: Final = 3.0
TARGET_VS_STARLETTE: Final = 0.35
TARGET_ADDED_US: Final = 250.0
TARGET_AUTH: Final = 0.90  # auth on / auth off, req/s at 64 connections
TARGET_TRACED: Final = 0.85  # tracing on / off, req/s at 64 connections
# At 64 connections, auth and traced take turns with ours (A: ours, B: the other; the
# reverse in odd rounds), each turn a wrk run of a quarter of --duration (1 s at least): the
# host's drift over those seconds weighs on both alike (see measure_in_turns).
TURNS: Final = "ABBABAAB"
IN_TURNS: Final = ("auth", "traced")
MEM_LIMIT_MIB: Final = 100.0

# The request of every wrk connection, and wrk's own counters as one JSON line at the end
# (exact microseconds, where the text report rounds them).
WRK_SCRIPT: Final = """\
wrk.method = "POST"
wrk.body = "[1, 2]"
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"bytes\\": %d, " ..
    "\\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, " ..
    "\\"timeout\\": %d, \\"p50_us\\": %d, \\"p90_us\\": %d, \\"p99_us\\": %d, " ..
    "\\"max_us\\": %d, \\"mean_us\\": %.1f}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""
WRK_MARK: Final = "BENCH-JSON "

CONFIG: Final = """\
gateway:
  host: {host}
  port: {port}
services:
  {service}:
    endpoints: [{endpoint}]
    timeout: {timeout}
"""
# Added for ``auth``: paths are relative to the config file, next to it in the temp folder.
AUTH_CONFIG: Final = """\
auth:
  mode: token
  store: sqlite:///tokens.db
  secret: file:secret
rate_limit: {per_token: 1000000/s, burst: 1000000, store: memory}
"""
# Added for ``traced``: records go to the benchmark's collector (``_collector``).
TRACING_CONFIG: Final = """\
tracing: {{collector: '{collector}', query: '{query}'}}
"""


# =====================================================================================
# Children: the backend, the naive gateway, bare Starlette, the direct client
# =====================================================================================


def ready(**extra: Any) -> dict[str, Any]:
    return {"ready": True, "pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0)), **extra}


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(1024)
    return sock


def run_backend() -> None:
    import itertools
    import random
    import string

    from rpccore.green import Server, stream

    blob = "".join(random.choices(string.ascii_letters + string.digits, k=BLOB_SIZE))

    class Calc:
        def add(self, a: int, b: int) -> int:
            return a + b

        @stream
        def big(self, n: int) -> Iterable[str]:
            return itertools.repeat(blob, n)

    server = Server(Calc(), name=SERVICE)
    [endpoint] = server.bind(BIND)
    emit(ready(endpoint=endpoint))
    server.run()


def nodelay_inherited() -> bool:
    """Whether a socket accepted from a TCP_NODELAY listener has TCP_NODELAY (Linux: yes)."""
    with listening_socket() as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                return bool(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def run_naive(endpoint: str) -> None:
    from gevent import monkey

    monkey.patch_all()

    import zerorpc
    from flask import Flask, Response, jsonify, request
    from gevent.pywsgi import WSGIServer

    client = zerorpc.Client(endpoint, timeout=STALL)
    app = Flask("naive")

    @app.post("/rpc/<service>/<method>")
    def call(service: str, method: str) -> Response:
        args = request.get_json()
        return jsonify(client(method, *args))

    if not nodelay_inherited():
        raise RuntimeError("accepted sockets do not inherit TCP_NODELAY from the listener")
    listener = listening_socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = WSGIServer(listener, app, log=None)
    emit(ready(port=listener.getsockname()[1]))
    server.serve_forever()


def run_starlette() -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def add(request: Request) -> JSONResponse:
        return JSONResponse({"result": 3})

    app = Starlette(routes=[Route(CALL_PATH, add, methods=["POST"])])
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    sock = listening_socket()
    emit(ready(port=sock.getsockname()[1]))
    uvicorn.Server(config).run(sockets=[sock])


def run_direct(endpoint: str, duration: float) -> None:
    """Time ``add(1, 2)`` one call at a time; report the p50 and p99 in microseconds."""
    import asyncio

    import uvloop

    from rpccore.aio import Client

    async def main() -> dict[str, Any]:
        client = Client(endpoint, timeout=STALL)
        try:
            for _ in range(WARM_CALLS):
                if await client.call("add", 1, 2) != 3:
                    raise RuntimeError("add(1, 2) != 3")
            clock = time.perf_counter_ns
            samples: list[int] = []
            end = clock() + int(duration * 1e9)
            while True:
                start = clock()
                await client.call("add", 1, 2)
                stop = clock()
                samples.append(stop - start)
                if stop >= end:
                    break
        finally:
            client.close()
        samples.sort()
        return {
            "ok": True,
            "n": len(samples),
            "p50_us": statistics.median(samples) / 1000,
            "p99_us": samples[(len(samples) - 1) * 99 // 100] / 1000,
        }

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(main())
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    emit(result)


def child_main(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    die_with_parent(int(os.environ["BENCH_PARENT"]))
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    if args.role == "backend":
        run_backend()
    elif args.role == "naive":
        run_naive(args.endpoint)
    elif args.role == "starlette":
        run_starlette()
    else:
        run_direct(args.endpoint, args.duration)


# =====================================================================================
# The parent
# =====================================================================================


class MeasureError(Exception):
    """One measurement failed (non-2xx, socket errors, a short stream): n/a for the round."""


@dataclass
class Setup:
    rounds: int
    duration: int
    warmup: int
    mem_items: int
    gateway_cpu: int | None
    load_cpu: int | None
    tmp: Path
    env: dict[str, str]
    zerogate: Path | None  # None: ours is not measured (why: ``without_ours``)
    without_ours: str = ""
    token: str | None = None  # of ``auth``; None: it is not measured (why: ``without_auth``)
    without_auth: str = ""
    tracing: bool = False  # whether ``traced`` is measured (why not: ``without_tracing``)
    without_tracing: str = ""
    collector: CollectorStack | None = None  # of ``traced``, fresh in every round
    wrk_scripts: dict[str, Path] = field(init=False)

    def __post_init__(self) -> None:
        self.write_scripts()

    def write_scripts(self) -> None:
        """wrk's script of each gateway (again once ``token`` is known)."""
        self.wrk_scripts = {}
        for name in GATEWAYS:
            headers = self.headers(name)
            script = self.tmp / f"call-{name}.lua"
            lines = [f'wrk.headers["{key}"] = "{value}"\n' for key, value in headers.items()]
            script.write_text(WRK_SCRIPT + "".join(lines))
            self.wrk_scripts[name] = script

    def headers(self, name: str) -> dict[str, str]:
        """The request headers of ``name`` beyond the content type: ``auth`` sends a token."""
        return {"Authorization": f"Bearer {self.token}"} if name == "auth" and self.token else {}

    def gateways(self) -> tuple[str, ...]:
        return tuple(
            name
            for name in GATEWAYS
            if not (name == "ours" and self.zerogate is None)
            and not (name == "auth" and (self.zerogate is None or self.token is None))
            and not (name == "traced" and (self.zerogate is None or not self.tracing))
        )

    def drop_ours(self, why: str) -> None:
        print(f"  ! ours cannot run: {why}\n  ! measuring naive and Starlette only", flush=True)
        self.zerogate, self.without_ours = None, why

    def drop_traced(self, why: str) -> None:
        print(f"  ! ours with tracing cannot run: {why}\n  ! measuring the others", flush=True)
        self.tracing, self.without_tracing = False, why

    def drop_auth(self, why: str) -> None:
        print(f"  ! ours with auth cannot run: {why}\n  ! measuring the others", flush=True)
        self.token, self.without_auth = None, why


@dataclass
class Gateway:
    name: str
    child: Child
    port: int
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request

    @property
    def pid(self) -> int:
        return self.child.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


def pinned(cpu: int | None) -> list[str]:
    """The prefix of a command run on ``cpu`` that dies with us (SIGTERM) if we are killed."""
    guard = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
    return guard if cpu is None else [*guard, "taskset", "--cpu-list", str(cpu)]


def spawn(
    setup: Setup, role: str, cpu: int | None, *extra: str, env: dict[str, str] | None = None
) -> Child:
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", role, *extra]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    return Child(role, argv, setup.tmp, {**setup.env, **(env or {})})


def find_zerogate() -> tuple[Path | None, str]:
    """The ``zerogate`` command if its ``serve`` subcommand exists, and why not otherwise."""
    path = Path(sys.executable).parent / "zerogate"
    if not path.exists():
        return None, f"{path} does not exist"
    try:
        proc = subprocess.run(
            [str(path), "serve", "--help"], check=False, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return None, "`zerogate serve --help` did not finish within 30 s"
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["?"])[-1]
    return path, ""


def start_ours(setup: Setup, endpoint: str, name: str = "ours") -> Gateway:
    """``zerogate serve``; as ``auth``, with token auth on (see ``prepare_auth``); as
    ``traced``, with tracing on (records to ``setup.collector``)."""
    assert setup.zerogate is not None
    port = free_port()
    config = setup.tmp / f"zerogate-{port}.yaml"
    text = CONFIG.format(host=HOST, port=port, service=SERVICE, endpoint=endpoint, timeout=STALL)
    if name == "auth":
        text += AUTH_CONFIG
    elif name == "traced":
        assert setup.collector is not None
        stack = setup.collector
        text += TRACING_CONFIG.format(collector=stack.endpoint, query=stack.query)
    config.write_text(text)
    argv = [*pinned(setup.gateway_cpu), str(setup.zerogate), "serve", "-c", str(config)]
    argv += ["--host", HOST, "--port", str(port)]
    child = Child(name, argv, setup.tmp, setup.env, json_lines=False)
    return Gateway(name, child, port, setup.headers(name))


def prepare_auth(setup: Setup) -> str:
    """What ``auth`` needs in the temp folder: a secret (mode 0600) and a SQLite token store
    with one token of scope ``*:*``, made by ``zerogate token create`` and returned. Made
    once, used by every round. (Not with the store API here: in this process ``gateway``
    is this file, which hides the package of that name.)"""
    import secrets

    assert setup.zerogate is not None
    fd = os.open(setup.tmp / "secret", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48) + "\n")
    config = setup.tmp / "zerogate-auth.yaml"
    # Only auth matters to `zerogate token`; the rest is a placeholder that is never served.
    placeholder = f"tcp://{HOST}:1"
    text = CONFIG.format(host=HOST, port=1, service=SERVICE, endpoint=placeholder, timeout=STALL)
    config.write_text(text + AUTH_CONFIG)
    argv = [str(setup.zerogate), "token", "create", "-c", str(config)]
    argv += ["--name", "bench", "--scope", "*:*"]
    proc = subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=READY_TIMEOUT, env=setup.env
    )
    if proc.returncode != 0:
        raise ChildError(f"zerogate token create: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def allowed_cpus(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "?"


def post(
    port: int,
    path: str,
    body: str,
    timeout: float = STALL,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    """One POST with a JSON body: (status, content type, body)."""
    import http.client  # not at the top: it imports ssl, which gevent wants to patch first

    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        conn.request("POST", path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def wait_answering(gateway: Gateway) -> None:
    """Wait until the gateway answers ``add(1, 2)`` right (ours connects in the background).

    Connection errors, 404 and 5xx are retried for ``READY_TIMEOUT`` seconds; anything
    else is final.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if gateway.child.proc.poll() is not None:
            raise ChildError(
                f"{gateway.name} exited with {gateway.child.proc.returncode}: "
                f"{gateway.child.log_tail()}"
            )
        try:
            status, _, body = post(gateway.port, CALL_PATH, CALL_BODY, headers=gateway.headers)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            with contextlib.suppress(ValueError):
                if status == 200 and json.loads(body) == EXPECTED[gateway.name]:
                    return
            last = f"{status} {body[:200]!r}"
            if status != 404 and status < 500:  # 404 and 5xx may pass once the backend is in
                break
        time.sleep(0.1)
    raise ChildError(f"{gateway.name} did not answer {CALL_PATH} right: {last}")


def check_refuses(gateway: Gateway) -> None:
    """``auth`` must refuse a request without its token: else it measures nothing new."""
    status, _, body = post(gateway.port, CALL_PATH, CALL_BODY)
    if status != 401:
        raise ChildError(f"{gateway.name} answered {status} without a token: {body[:200]!r}")


def cpu_busy(seconds: float = 0.5) -> dict[int, float]:
    """How busy each CPU was (0 to 1) over ``seconds``, from /proc/stat: others' load."""

    def ticks() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                values = [int(v) for v in fields[:8]]  # user .. steal
                out[int(name[3:])] = (sum(values), values[3] + values[4])  # idle + iowait
        return out

    before = ticks()
    time.sleep(seconds)
    after = ticks()
    return {
        cpu: 1 - (after[cpu][1] - idle) / max(after[cpu][0] - total, 1)
        for cpu, (total, idle) in before.items()
    }


def warn_if_busy(setup: Setup) -> dict[int, float]:
    """Sample the CPUs we pin to before a round; say so when something else is using them."""
    busy = cpu_busy()
    ours = [c for c in (setup.gateway_cpu, setup.load_cpu) if c is not None] or sorted(busy)
    if any(busy.get(c, 0.0) > BUSY_WARNING for c in ours):
        load = ", ".join(f"CPU {c} {busy[c]:.0%}" for c in ours if c in busy)
        print(
            f"  ! other processes are using the CPUs ({load} busy before the round): "
            "expect drift; trust the per-round ratios over the absolute numbers",
            flush=True,
        )
    return busy


def check_pinning(name: str, pid: int, cpu: int | None) -> None:
    if cpu is not None and allowed_cpus(pid) != str(cpu):
        raise ChildError(f"{name} runs on CPUs {allowed_cpus(pid)}, not {cpu}")


# -- wrk ------------------------------------------------------------------------------


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk's counters from the ``done()`` line; MeasureError on any error it counted."""
    lines = [line for line in output.splitlines() if line.startswith(WRK_MARK)]
    if not lines:
        raise MeasureError(f"no {WRK_MARK.strip()} line in wrk's output: {output[-500:]!r}")
    stats: dict[str, Any] = json.loads(lines[-1][len(WRK_MARK) :])
    socket_errors = {k: stats[k] for k in ("connect", "read", "write", "timeout") if stats[k]}
    problems = []
    if stats["status"] or "Non-2xx or 3xx responses" in output:
        problems.append(f"{stats['status']} non-2xx/3xx responses")
    if socket_errors or "Socket errors" in output:
        problems.append(f"socket errors {socket_errors}")
    if not stats["requests"] or not stats["duration_us"]:
        problems.append("no request completed")
    if problems:
        report = " | ".join(
            " ".join(line.split()) for line in output.splitlines() if line and line not in lines
        )
        raise MeasureError("wrk: " + "; ".join(problems) + f" (wrk said: {report})")
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def run_wrk(setup: Setup, gateway: Gateway, connections: int, seconds: int) -> dict[str, Any]:
    argv = [*pinned(setup.load_cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    argv += ["--latency", "-s", str(setup.wrk_scripts[gateway.name]), gateway.url(CALL_PATH)]
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=seconds + 30
        )
    except subprocess.TimeoutExpired:
        raise MeasureError(f"wrk did not finish within {seconds + 30} s") from None
    if proc.returncode != 0:
        raise MeasureError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return parse_wrk(proc.stdout)


def measure_http(setup: Setup, gateway: Gateway, connections: int) -> dict[str, Any]:
    """A thrown-away warm-up run, then the measured one, with the gateway's CPU time."""
    try:
        run_wrk(setup, gateway, connections, setup.warmup)
    except MeasureError as exc:
        raise MeasureError(f"warm-up: {exc}") from None
    before = cpu_seconds(gateway.pid)
    stats = run_wrk(setup, gateway, connections, setup.duration)
    stats["cpu_us"] = (cpu_seconds(gateway.pid) - before) * 1e6 / stats["requests"]
    return stats


def measure_in_turns(
    setup: Setup, ours: Gateway, other: Gateway, number: int
) -> tuple[dict[str, Any], float]:
    """(the 64-connection stats of ``other``, ours' req/s), measured in TURNS (see the module
    doc) after a warm-up of both. Stats of its turns: requests and duration summed, CPU per
    request, p50 and p99 the median of the turns', and for traced the records stored per
    request."""
    collector = setup.collector if other.name == "traced" else None
    for gateway in (ours, other):
        try:
            run_wrk(setup, gateway, 64, setup.warmup)
        except MeasureError as exc:
            raise MeasureError(f"warm-up of {gateway.name}: {exc}") from None
    if collector is not None:
        collector.settle()
    stored = stored_records(setup) if collector is not None else None
    seconds = max(1, 2 * setup.duration // len(TURNS))
    first, second = (ours, other) if number % 2 == 0 else (other, ours)
    turns: dict[str, list[dict[str, Any]]] = {ours.name: [], other.name: []}
    cpu, previous, led_in = 0.0, None, 0  # led_in: requests of lead-ins (records stored)
    for letter in TURNS:
        gateway = first if letter == "A" else second
        if collector is not None and gateway is ours:
            collector.settle()
        elif collector is not None and previous is not gateway:
            # Nor may a traced turn begin with an idle store, as it never is while tracing
            # is on: a second of requests first, not counted, sets it to work.
            led_in += run_wrk(setup, gateway, 64, 1)["requests"]
        before = cpu_seconds(gateway.pid)
        turns[gateway.name].append(run_wrk(setup, gateway, 64, seconds))
        if gateway is other:
            cpu += cpu_seconds(gateway.pid) - before
        previous = gateway
    mine = turns[other.name]
    requests = sum(turn["requests"] for turn in mine)
    stats: dict[str, Any] = {
        "requests": requests,
        "duration_us": sum(turn["duration_us"] for turn in mine),
        "rps": overall_rps(mine),
        "p50_us": statistics.median(turn["p50_us"] for turn in mine),
        "p99_us": statistics.median(turn["p99_us"] for turn in mine),
        "cpu_us": cpu * 1e6 / requests,
        "turns": turns,
    }
    if collector is not None and stored is not None:
        collector.settle()
        after = stored_records(setup)
        if after is not None:
            stats["stored_per_request"] = (after - stored) / (requests + led_in)
    return stats, overall_rps(turns[ours.name])


def overall_rps(runs: Sequence[dict[str, Any]]) -> float:
    """Requests per second over several wrk runs together."""
    return sum(run["requests"] for run in runs) / (sum(run["duration_us"] for run in runs) / 1e6)


# -- the NDJSON stream ------------------------------------------------------------------


def check_stream(gateway: Gateway) -> None:
    """A 2-item stream, read and checked line by line (it also warms the stream path)."""
    status, ctype, body = post(gateway.port, STREAM_PATH, "[2]")
    if status != 200 or not ctype.startswith("application/x-ndjson"):
        raise MeasureError(f"stream: {status} {ctype}: {body[:200]!r}")
    lines = body.splitlines()
    items = [json.loads(line) for line in lines]
    if len(items) != 2 or any(len(item.get("result", "")) != BLOB_SIZE for item in items):
        raise MeasureError(f"stream: expected 2 lines of 64 KiB results, got {body[:200]!r}")


def measure_stream(setup: Setup, gateway: Gateway) -> dict[str, Any]:
    check_stream(gateway)
    time.sleep(0.2)  # settle before the baseline
    pid = gateway.pid
    base = proc_status(pid)["VmRSS"]
    exact = reset_peak(pid)
    argv = [*pinned(setup.load_cpu), "curl", "-sS", "-N", "-o", "/dev/null", "-X", "POST"]
    argv += ["-H", "Content-Type: application/json", "--data-binary", f"[{setup.mem_items}]"]
    argv += ["-w", "%{http_code} %{size_download} %{time_total} %{content_type}"]
    argv += ["--max-time", f"{STREAM_TIMEOUT:g}", gateway.url(STREAM_PATH)]
    sampler = RssSampler([pid])
    sampler.start()
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=STREAM_TIMEOUT + 10
        )
    except subprocess.TimeoutExpired:
        raise MeasureError(f"curl did not finish within {STREAM_TIMEOUT + 10:g} s") from None
    finally:
        peak = sampler.finish()[pid]
    if exact:
        peak = max(peak, proc_status(pid)["VmHWM"])
    if proc.returncode != 0:
        raise MeasureError(f"curl exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    status, size, seconds, *ctype = proc.stdout.split()
    if status != "200" or not "".join(ctype).startswith("application/x-ndjson"):
        raise MeasureError(f"stream: HTTP {status}, content type {' '.join(ctype)!r}")
    if int(size) < setup.mem_items * BLOB_SIZE:
        raise MeasureError(f"stream: {int(size):,} bytes, short of {setup.mem_items:,} items")
    return {
        "growth_mib": peak - base,
        "base_mib": base,
        "peak_mib": peak,
        "bytes": int(size),
        "seconds": float(seconds),
        "rate": int(size) / MIB / float(seconds),
        "samples": sampler.samples,
        "hwm": exact,
    }


# -- rounds ---------------------------------------------------------------------------

Values = dict[str, dict[str, float | None]]  # metric -> gateway (or "direct") -> value


def rotate(items: Sequence[str], by: int) -> list[str]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def failed(what: str, exc: Exception) -> None:
    print(f"  ! {what}: {exc}", flush=True)


def start_gateways(setup: Setup, endpoint: str) -> dict[str, Gateway]:
    naive = spawn(setup, "naive", setup.gateway_cpu, "--endpoint", endpoint)
    bare = spawn(setup, "starlette", setup.gateway_cpu)
    gateways = {}
    if setup.zerogate is not None:
        ours = start_ours(setup, endpoint)
        try:
            wait_answering(ours)
            check_pinning("ours", ours.pid, setup.gateway_cpu)
        except ChildError as exc:  # the run goes on without it, and exits with 1
            ours.child.stop()
            setup.drop_ours(str(exc))
        else:
            gateways["ours"] = ours
    if "auth" in setup.gateways():
        auth = start_ours(setup, endpoint, "auth")
        try:
            wait_answering(auth)
            check_refuses(auth)
            check_pinning("auth", auth.pid, setup.gateway_cpu)
        except ChildError as exc:  # as for ours: the others are measured, the exit is 1
            auth.child.stop()
            setup.drop_auth(str(exc))
        else:
            gateways["auth"] = auth
    if "traced" in setup.gateways():
        try:
            setup.collector = start_collector(setup.tmp, setup.env)
            gateways["traced"] = start_traced(setup)
        except ChildError as exc:  # as for auth
            setup.drop_traced(str(exc))
    for child in (naive, bare):
        message = child.recv(timeout=READY_TIMEOUT)
        check_pinning(child.name, child.pid, setup.gateway_cpu)
        gateways[child.name] = Gateway(child.name, child, message["port"])
        wait_answering(gateways[child.name])
    return gateways


def start_traced(setup: Setup) -> Gateway:
    """Ours with tracing on, in front of a backend of its own with tracing on: every request
    gives three records (the gateway's HTTP request and call, the backend's call)."""
    assert setup.collector is not None
    tracing_env = {"ZEROGATE_COLLECTOR": setup.collector.endpoint}
    backend = spawn(setup, "backend", setup.load_cpu, env=tracing_env)
    endpoint = backend.recv(timeout=READY_TIMEOUT)["endpoint"]
    check_pinning("traced backend", backend.pid, setup.load_cpu)
    traced = start_ours(setup, endpoint, "traced")
    try:
        wait_answering(traced)
        check_pinning("traced", traced.pid, setup.gateway_cpu)
    except ChildError:
        traced.child.stop()
        backend.stop()
        raise
    return traced


def stored_records(setup: Setup) -> int | None:
    """The collector's count of stored records; None when it cannot be read."""
    if setup.collector is None:
        return None
    try:
        stored: int = setup.collector.info()["stored"]
    except (ChildError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        failed("reading the collector's counters", MeasureError(str(exc)))
        return None
    return stored


def run_round(setup: Setup, number: int) -> tuple[Values, dict[str, Any]]:
    values: Values = {}
    raw: dict[str, Any] = {"busy_before": warn_if_busy(setup)}
    try:
        backend = spawn(setup, "backend", setup.load_cpu)
        endpoint = backend.recv(timeout=READY_TIMEOUT)["endpoint"]
        check_pinning("backend", backend.pid, setup.load_cpu)
        gateways = start_gateways(setup, endpoint)

        if "ours" in gateways:  # first, while ours is fresh
            try:
                raw["stream"] = measure_stream(setup, gateways["ours"])
            except MeasureError as exc:
                failed("stream through ours", exc)
                raw["stream"] = None
            stream = raw["stream"] or {}
            values["mem_growth"] = {"ours": stream.get("growth_mib")}
            values["mem_rate"] = {"ours": stream.get("rate")}

        for connections in CONNECTIONS:
            for key in ("rps", "p50", "p99", "cpu"):
                values[f"{key}@{connections}"] = {}
            values[f"ours_in_turns@{connections}"] = {}
            for name in rotate(setup.gateways(), number):
                in_turns = connections == 64 and name in IN_TURNS and "ours" in gateways
                try:
                    if in_turns:
                        stats, ours_rps = measure_in_turns(
                            setup, gateways["ours"], gateways[name], number
                        )
                        values[f"ours_in_turns@{connections}"][name] = ours_rps
                    else:
                        stats = measure_http(setup, gateways[name], connections)
                        if name == "traced" and setup.collector is not None:
                            setup.collector.settle()  # its records slow no one after it
                except MeasureError as exc:
                    failed(f"{name} with {connections} connection(s)", exc)
                    stats = {}
                raw[f"wrk{connections}-{name}"] = stats or None
                values[f"rps@{connections}"][name] = stats.get("rps")
                values[f"p50@{connections}"][name] = stats.get("p50_us")
                values[f"p99@{connections}"][name] = stats.get("p99_us")
                values[f"cpu@{connections}"][name] = stats.get("cpu_us")
                if name == "traced" and connections == 64:
                    values[f"stored@{connections}"] = {name: stats.get("stored_per_request")}

        seconds = str(setup.duration)
        direct = spawn(
            setup, "direct", setup.load_cpu, "--endpoint", endpoint, "--duration", seconds
        )
        try:
            answer = direct.recv(timeout=setup.duration + 60)
            if not answer["ok"]:
                raise MeasureError(answer["error"])
        except (MeasureError, ChildError) as exc:
            failed("direct rpccore calls", exc)
            answer = {}
        raw["direct"] = answer or None
        values["direct_p50"] = {"direct": answer.get("p50_us")}
        values["direct_p99"] = {"direct": answer.get("p99_us")}
        values["added@1"] = {
            name: subtract(values["p50@1"].get(name), answer.get("p50_us"))
            for name in setup.gateways()
            if name != "starlette"  # it makes no call
        }
    finally:
        stop_all()  # every process of the round, by PID (the collector's too)
        setup.collector = None
    return values, raw


def subtract(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def divide(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# -- reporting ------------------------------------------------------------------------

ROWS: Final = (
    ("rps@64", "64 conn: req/s", 0),
    ("p50@64", "64 conn: p50 latency us", 0),
    ("p99@64", "64 conn: p99 latency us", 0),
    ("cpu@64", "64 conn: gateway CPU us/req", 0),
    ("rps@1", "1 conn: req/s", 0),
    ("p50@1", "1 conn: p50 latency us", 0),
    ("p99@1", "1 conn: p99 latency us", 0),
    ("added@1", "1 conn: p50 added over direct us", 0),
    ("mem_growth", "{size} NDJSON: RSS growth MiB", 1),
    ("mem_rate", "{size} NDJSON: MiB/s", 0),
)


def ratios(
    rounds: list[Values], metric: str, theirs: str, mine: str = "ours"
) -> list[float | None]:
    return [divide(v.get(metric, {}).get(mine), v.get(metric, {}).get(theirs)) for v in rounds]


def versus_ours(values: Values, connections: int, name: str) -> float | None:
    """A round's req/s of ``name`` over ours': over ours' turns when they took turns
    (``measure_in_turns``), else over ours' own measurement."""
    ours = values.get(f"ours_in_turns@{connections}", {}).get(name)
    if ours is None:
        ours = values[f"rps@{connections}"].get("ours")
    return divide(values[f"rps@{connections}"].get(name), ours)


def print_round(values: Values) -> None:
    for connections in CONNECTIONS:
        rps, p50 = values[f"rps@{connections}"], values[f"p50@{connections}"]
        cells = [f"{k}={fmt(v)} (p50 {fmt(p50.get(k))} us)" for k, v in rps.items()]
        line = f"  {connections:>2} conn req/s  " + "  ".join(cells)
        if "ours" in rps:
            line += (
                f"  ours/naive {fmt_ratio(divide(rps['ours'], rps.get('naive')))}"
                f"  ours/starlette {fmt_ratio(divide(rps['ours'], rps.get('starlette')))}"
            )
        for name in IN_TURNS:
            if name in rps:
                line += f"  {name}/ours {fmt_percent(versus_ours(values, connections, name))}"
        stored = values.get(f"stored@{connections}", {}).get("traced")
        if stored is not None:
            line += f" ({fmt(stored, 2)} records stored/request)"
        print(line, flush=True)
    added = values["added@1"]
    print(
        f"  direct rpccore p50 {fmt(values['direct_p50']['direct'])} us; added at 1 conn: "
        + "  ".join(f"{k} {fmt(v)} us" for k, v in added.items()),
        flush=True,
    )
    if "mem_growth" in values:
        print(
            f"  stream through ours: RSS +{fmt(values['mem_growth']['ours'], 1)} MiB, "
            f"{fmt(values['mem_rate']['ours'])} MiB/s",
            flush=True,
        )


def worst(rounds: list[Values], metric: str, key: str) -> float | None:
    """The largest value over the rounds; None if any round has none (a failed one)."""
    found = [v.get(metric, {}).get(key) for v in rounds]
    if not found or any(x is None for x in found):
        return None
    return max(x for x in found if x is not None)


def summarize(rounds: list[Values]) -> dict[str, Any]:
    medians = {}
    for metric in dict.fromkeys(m for v in rounds for m in v):
        keys = dict.fromkeys(k for v in rounds for k in v.get(metric, {}))
        medians[metric] = {k: median(v.get(metric, {}).get(k) for v in rounds) for k in keys}
    return {
        "median": medians,
        "vs_naive@64": median(ratios(rounds, "rps@64", "naive")),
        "vs_starlette@64": median(ratios(rounds, "rps@64", "starlette")),
        "vs_naive@1": median(ratios(rounds, "rps@1", "naive")),
        "vs_starlette@1": median(ratios(rounds, "rps@1", "starlette")),
        **{
            f"{name}_vs_ours@{connections}": median(
                versus_ours(v, connections, name) for v in rounds
            )
            for name in IN_TURNS
            for connections in CONNECTIONS
        },
        "mem_worst": worst(rounds, "mem_growth", "ours"),
    }


def fmt_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def check(value: float | None, ok: bool) -> str:
    return "FAIL (n/a)" if value is None else ("PASS" if ok else "FAIL")


def print_tables(summary: dict[str, Any], rounds: int, mem_mib: int) -> None:
    size = f"{mem_mib // 1024} GiB" if mem_mib % 1024 == 0 else f"{mem_mib} MiB"
    med = summary["median"]
    header = (
        f"{'metric (median of ' + str(rounds) + ')':<36}{'ours':>10}{'ours+auth':>11}"
        f"{'ours+trace':>12}{'naive':>10}{'starlette':>11}{'ours/naive':>12}{'ours/starl.':>13}"
        f"{'auth/ours':>11}{'trace/ours':>12}"
    )
    print()
    print(header)
    print("-" * len(header))
    for metric, title, digits in ROWS:
        if metric not in med:
            continue
        row = med[metric]
        line = (
            f"{title.format(size=size):<36}{fmt(row.get('ours'), digits):>10}"
            f"{fmt(row.get('auth'), digits):>11}{fmt(row.get('traced'), digits):>12}"
            f"{fmt(row.get('naive'), digits):>10}{fmt(row.get('starlette'), digits):>11}"
        )
        if metric.startswith("rps"):
            at = metric[3:]  # "@64"
            line += f"{fmt_ratio(summary['vs_naive' + at]):>12}"
            line += f"{fmt_ratio(summary['vs_starlette' + at]):>13}"
            line += f"{fmt_percent(summary['auth_vs_ours' + at]):>11}"
            line += f"{fmt_percent(summary['traced_vs_ours' + at]):>12}"
        print(line)
    direct = med["direct_p50"]["direct"], med["direct_p99"]["direct"]
    print(
        f"\ndirect rpccore.aio calls (uvloop), one at a time: p50 {fmt(direct[0])} us, "
        f"p99 {fmt(direct[1])} us"
    )
    if med["rps@64"].get("ours") is None and med["rps@1"].get("ours") is None:
        print("\ntargets: not checked, ours was not measured")
        return

    vs_naive, vs_bare = summary["vs_naive@64"], summary["vs_starlette@64"]
    auth = summary["auth_vs_ours@64"]
    traced = summary["traced_vs_ours@64"]
    added = med.get("added@1", {}).get("ours")
    mem = summary["mem_worst"]
    rows = [
        (
            "64 conn req/s: ours / naive",
            fmt_ratio(vs_naive),
            f">= {TARGET_VS_NAIVE:g}x",
            check(vs_naive, vs_naive is not None and vs_naive >= TARGET_VS_NAIVE),
        ),
        (
            "64 conn req/s: ours / Starlette alone",
            "n/a" if vs_bare is None else f"{vs_bare:.0%}",
            f">= {TARGET_VS_STARLETTE:.0%}",
            check(vs_bare, vs_bare is not None and vs_bare >= TARGET_VS_STARLETTE),
        ),
        (
            "64 conn req/s: auth on / auth off",
            fmt_percent(auth),
            f">= {TARGET_AUTH:.0%}",
            check(auth, auth is not None and auth >= TARGET_AUTH),
        ),
        (
            "64 conn req/s: tracing on / off",
            fmt_percent(traced),
            f">= {TARGET_TRACED:.0%}",
            check(traced, traced is not None and traced >= TARGET_TRACED),
        ),
        (
            "1 conn p50 added over a direct call",
            f"{fmt(added)} us",
            f"<= {TARGET_ADDED_US:g} us",
            check(added, added is not None and added <= TARGET_ADDED_US),
        ),
        (
            f"{size} NDJSON: RSS growth (worst)",
            f"{fmt(mem, 1)} MiB",
            f"<= {MEM_LIMIT_MIB:g} MiB",
            check(mem, mem is not None and mem <= MEM_LIMIT_MIB),
        ),
    ]
    header = f"{'target':<40}{'measured':>12}  {'goal':<13}result"
    print()
    print(header)
    print("-" * len(header))
    for title, measured, goal, result in rows:
        print(f"{title:<40}{measured:>12}  {goal:<13}{result}")
    print(
        "\nratios are medians of the per-round ratios; added latency = ours' wrk -c1 p50 minus\n"
        "a direct rpccore.aio call's p50 (same round); RSS growth = peak - before the stream;\n"
        "auth on / auth off: key auth plus rate limiting (Kong reports keeping about 76%);\n"
        "tracing on / off: ours and its backend shipping every record to zerogate collector,\n"
        "which stores them in Redis (both at idle priority: see _collector)."
    )
    stored = med.get("stored@64", {}).get("traced")
    if stored is not None:
        print(f"records stored per traced request at 64 connections: {stored:.2f} (3 = all)")


# -- main -----------------------------------------------------------------------------


def parent_main(args: argparse.Namespace) -> int:
    rounds = 1 if args.quick else args.rounds
    duration = args.duration or (2 if args.quick else 5)
    mem_mib = args.mem_mib or (256 if args.quick else 1024)
    if rounds < 1 or duration < 1 or args.warmup < 1 or mem_mib < 1:
        print("--rounds, --duration, --warmup and --mem-mib must be >= 1", file=sys.stderr)
        return 2
    for command in ("wrk", "curl"):
        if shutil.which(command) is None:
            print(f"{command} is not installed (Debian: apt-get install {command})")
            return 2
    zerogate, why = (None, "--without-ours") if args.without_ours else find_zerogate()
    gateway_cpu, load_cpu = choose_cpus()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    setup = Setup(
        rounds=rounds,
        duration=duration,
        warmup=args.warmup,
        mem_items=mem_mib * MIB // BLOB_SIZE,
        gateway_cpu=gateway_cpu,
        load_cpu=load_cpu,
        tmp=tmp,
        env={**os.environ, "BENCH_PARENT": str(os.getpid())},
        zerogate=zerogate,
        without_ours=why,
    )
    print(
        f"gateway bench: {rounds} round(s); wrk -c64 and -c1, {duration} s each after a "
        f"{args.warmup} s warm-up; stream: {mem_mib} MiB in {setup.mem_items:,} x 64 KiB; "
        f"gateways on CPU {gateway_cpu}, backend, wrk and clients on CPU {load_cpu}",
        flush=True,
    )
    if zerogate is None and not args.without_ours:
        setup.drop_ours(why)
    if zerogate is not None:
        try:
            setup.token = prepare_auth(setup)
        except (ChildError, OSError, subprocess.TimeoutExpired) as exc:  # exit status 1
            setup.drop_auth(str(exc))
        setup.write_scripts()  # now with the token
        try:  # a first start, to know at once whether it can (each round starts its own)
            start_collector(tmp, setup.env).stop()
            setup.tracing = True
        except (ChildError, OSError, subprocess.TimeoutExpired) as exc:  # exit status 1
            setup.drop_traced(str(exc))

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    all_values: list[Values] = []
    all_raw: list[dict[str, Any]] = []
    try:
        for number in range(rounds):
            print(f"round {number + 1}/{rounds}", flush=True)
            values, raw = run_round(setup, number)
            all_values.append(values)
            all_raw.append(raw)
            print_round(values)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the children", file=sys.stderr)
        return 130
    except ChildError as exc:
        print(f"\na process failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(all_values)
    print_tables(summary, rounds, mem_mib)
    print(f"\n{time.monotonic() - started:.0f}s in all")
    if args.json:
        document = {
            "argv": sys.argv,
            "setup": {
                "rounds": rounds,
                "duration": duration,
                "warmup": args.warmup,
                "mem_items": setup.mem_items,
                "gateway_cpu": gateway_cpu,
                "load_cpu": load_cpu,
                "ours": zerogate is not None,
                "without_ours": setup.without_ours,
                "auth": setup.token is not None,
                "without_auth": setup.without_auth,
                "traced": setup.tracing,
                "without_tracing": setup.without_tracing,
            },
            "rounds": [{"values": v, "raw": r} for v, r in zip(all_values, all_raw, strict=True)],
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"raw results: {args.json}")
    if setup.without_ours and not args.without_ours:
        print(f"ours did not run: {setup.without_ours}", file=sys.stderr)
        return 1
    if setup.without_auth:
        print(f"ours with auth did not run: {setup.without_auth}", file=sys.stderr)
        return 1
    if setup.without_tracing:
        print(f"ours with tracing did not run: {setup.without_tracing}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the zerogate gateway with wrk (see the module docstring)."
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--duration", type=int, help="seconds per wrk measurement (5; quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up (default 1)")
    parser.add_argument("--mem-mib", type=int, help="size of the NDJSON stream (1024; 256)")
    parser.add_argument("--quick", action="store_true", help="1 short round: a smoke test")
    parser.add_argument("--json", metavar="FILE", help="save the raw results as JSON")
    parser.add_argument(
        "--without-ours", action="store_true", help="measure only naive and Starlette"
    )
    parser.add_argument(
        "--role", choices=("backend", "naive", "starlette", "direct"), help=argparse.SUPPRESS
    )
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        child_main(args)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
