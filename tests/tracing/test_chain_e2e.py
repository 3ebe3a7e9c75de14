"""Issue 7: a traced three-level chain end to end, every piece real and on loopback.

    HTTP client -> gateway (uvicorn, in this process) -> a.relay (rpccore.aio, a process)
        -> b.total (rpccore.green, a process of its own: gevent never shares one with asyncio)
        -> c.numbers (rpccore.aio, a process; a stream whose items b sums)

Every backend ships its records to one ``zerogate collector`` child process (``$ZEROGATE_
COLLECTOR``, ``$ZEROGATE_PROCESS_NAME``), which keeps them in a real redis-server; the gateway
ships its own and reads them back through ``tracing.query``. One POST must come back as one
trace of the right shape, drawn whole by headless Chromium; and SIGKILLing the collector while
300 calls go through must cost records, never a call.

The backends are a small script written into the test's temporary directory. Everything
started here is stopped by PID; waits are bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from chromium import headless_chromium
from loopback import free_ports
from redis_support import RedisServer
from tracing_support import REPO, Children

import rpccore.tracing
from rpccore.aio import Client

sys.path.insert(0, str(REPO / "tests" / "gateway"))

from e2e_support import Gateway, wait_for_port

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

ARTIFACTS: Final = REPO / "test-artifacts"
WAIT: Final = 15.0  # seconds any one thing may take to show up
RECORDS_PER_CALL: Final = 7  # http, a (2 sides), b (2 sides), c (2 sides)
ITEMS: Final = 5  # c.numbers(5) streams 0..4; b sums them
LOAD_CALLS: Final = 300
LOAD_CONCURRENCY: Final = 8
QUERY_METHODS: Final = ("trace", "recent", "stats", "info")  # the collector's
KILLED_FOR: Final = 5.0  # seconds the load goes on with the collector dead
LOAD_LIMIT: Final = 30.0  # seconds the load may take at most

SERVICES: Final = '''
"""The chain's backends: python services.py a|b|c ENDPOINT [NEXT_ENDPOINT]."""
import sys

import rpccore.tracing


def counts():
    handler = rpccore.tracing.collector_handler()
    if handler is None:
        return None
    return {"sent": handler.sent, "dropped": handler.dropped}


def serve_c(endpoint):
    import asyncio

    from rpccore.aio import Server

    class C:
        async def numbers(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i

        def trace_counts(self):
            return counts()

    async def main():
        server = Server(C(), name="c")
        server.bind(endpoint)
        await server.run()

    asyncio.run(main())


def serve_b(endpoint, c_endpoint):
    from rpccore.green import Client, Server

    class B:
        def __init__(self):
            self.c = Client(c_endpoint, timeout=10)

        def total(self, n):
            return sum(self.c.stream("numbers", n))

        def trace_counts(self):
            return counts()

    server = Server(B(), name="b")
    server.bind(endpoint)
    server.run()


def serve_a(endpoint, b_endpoint):
    import asyncio

    from rpccore.aio import Client, Server

    class A:
        def __init__(self):
            self.b = None

        async def relay(self, n):
            if self.b is None:
                self.b = Client(b_endpoint, timeout=10)
            return await self.b.call("total", n)

        def trace_counts(self):
            return counts()

    async def main():
        server = Server(A(), name="a")
        server.bind(endpoint)
        await server.run()

    asyncio.run(main())


if __name__ == "__main__":
    kind, endpoint, *rest = sys.argv[1:]
    {"a": serve_a, "b": serve_b, "c": serve_c}[kind](endpoint, *rest)
'''


@dataclass
class Chain:
    """The running chain: the collector, the three services and the gateway."""

    children: Children
    collector_config: Path
    collector: subprocess.Popen[bytes]
    query: str
    endpoints: dict[str, str]
    gateway: Gateway
    http: httpx.Client
    services: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def restart_collector(self) -> None:
        if self.collector.poll() is None:
            os.kill(self.collector.pid, signal.SIGKILL)
            self.collector.wait(timeout=10)
        self.collector = self.children.collector(
            "-c", str(self.collector_config), name=f"collector-{time.monotonic_ns()}"
        )


def start_service(
    children: Children, script: Path, kind: str, endpoint: str, collector: str, *rest: str
) -> subprocess.Popen[bytes]:
    """One backend process, traced to ``collector``, once its port answers."""
    log = (children.log_dir / f"service-{kind}.log").open("wb")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ZEROGATE_CONFIG", None)
    env[rpccore.tracing.ENV_COLLECTOR] = collector
    env[rpccore.tracing.ENV_PROCESS_NAME] = f"svc-{kind}"
    proc = subprocess.Popen(
        [sys.executable, str(script), kind, endpoint, *rest],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    log.close()
    children.procs.append(proc)
    wait_for_port(int(endpoint.rsplit(":", 1)[1]), timeout=WAIT)
    return proc


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("chain")
    children = Children(tmp)
    # All five at once: ports asked for one by one can repeat, and a service that cannot
    # bind leaves its port to another one (the gateway then describes the wrong service).
    records_port, query_port, *service_ports = free_ports(5)
    records, query = f"tcp://127.0.0.1:{records_port}", f"tcp://127.0.0.1:{query_port}"
    store = redis_server.url.removesuffix("/0") + "/3"  # a database of its own
    config = tmp / "collector.yaml"
    config.write_text(
        f"tracing:\n  collector: {records}\n  query: {query}\n  store: {store}\n  ttl: 600\n"
    )
    script = tmp / "services.py"
    script.write_text(textwrap.dedent(SERVICES))
    endpoints = {
        kind: f"tcp://127.0.0.1:{port}" for kind, port in zip("abc", service_ports, strict=True)
    }
    rpccore.tracing.disable()  # the gateway's lifespan turns it on, towards our collector
    try:
        collector = children.collector("-c", str(config))
        services = {
            "c": start_service(children, script, "c", endpoints["c"], records),
            "b": start_service(children, script, "b", endpoints["b"], records, endpoints["c"]),
            "a": start_service(children, script, "a", endpoints["a"], records, endpoints["b"]),
        }
        gateway_config = (
            f"services:\n  a:\n    endpoints: [{endpoints['a']}]\n"
            f"tracing:\n  collector: {records}\n  query: {query}\n"
        )
        with (
            Gateway(gateway_config) as gateway,
            httpx.Client(base_url=gateway.url, timeout=10) as http,
        ):
            deadline = time.monotonic() + WAIT
            while not described(http):
                assert time.monotonic() < deadline, "the gateway never described service a"
                time.sleep(0.05)
            yield Chain(children, config, collector, query, endpoints, gateway, http, services)
    finally:
        rpccore.tracing.disable()
        children.stop_all()


def described(http: httpx.Client) -> bool:
    answer = http.get("/readyz")
    return answer.status_code == 200 and bool(answer.json()["services"]["a"]["described"])


def complete_trace(http: httpx.Client, trace_id: str) -> dict[str, Any]:
    """GET /traces/{trace_id} (JSON) until all four spans are in with every side, or fail
    with the last answer after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    last: Any = None
    while True:
        answer = http.get(f"/traces/{trace_id}", headers={"accept": "application/json"})
        if answer.status_code == 200:
            last = answer.json()
            sides = [sorted(span["sides"]) for span in walk(last)]
            if sides == [
                ["http"],
                ["client", "server"],
                ["client", "server"],
                ["client", "server"],
            ]:
                return last  # type: ignore[no-any-return]
        else:
            last = (answer.status_code, answer.text[:300])
        assert time.monotonic() < deadline, f"trace {trace_id} incomplete: {last}"
        time.sleep(0.1)


def walk(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Every span of a /traces/{id} answer, depth first."""
    found: list[dict[str, Any]] = []
    stack = list(reversed(trace["roots"]))
    while stack:
        span = stack.pop()
        found.append(span)
        stack.extend(reversed(span["children"]))
    return found


def one_call(chain: Chain) -> str:
    answer = chain.http.post("/rpc/a/relay", json=[ITEMS])
    assert (answer.status_code, answer.json()) == (200, sum(range(ITEMS))), answer.text
    return answer.headers["x-trace-id"]


@pytest.mark.slow
def test_a_three_level_chain_is_one_trace_with_the_right_tree(chain: Chain) -> None:
    trace_id = one_call(chain)
    trace = complete_trace(chain.http, trace_id)
    assert trace["trace_id"] == trace_id
    assert (trace["spans"], trace["errors"]) == (4, 0)
    assert len(trace["roots"]) == 1
    http = trace["roots"][0]
    assert (http["kind"], http["service"], http["method"]) == ("http", "http", "POST /rpc/a/relay")
    assert http["outcome"] == "ok"
    assert http["process"]["proc"] == "zerogate-gateway"
    assert [child["method"] for child in http["children"]] == ["relay"]
    a = http["children"][0]
    assert [child["method"] for child in a["children"]] == ["total"]
    b = a["children"][0]
    assert [child["method"] for child in b["children"]] == ["numbers"]
    c = b["children"][0]
    assert c["children"] == []

    pids = {span["process"]["pid"] for span in (http, a, b, c)}
    assert len(pids) == 4, "four processes: the gateway and three services"
    expected = [
        # span, service, method, outcome, items, calling process, serving process
        (a, "a", "relay", "ok", None, "zerogate-gateway", "svc-a"),
        (b, "b", "total", "ok", None, "svc-a", "svc-b"),
        (c, "c", "numbers", "stream", ITEMS, "svc-b", "svc-c"),
    ]
    parent = http
    names: list[tuple[str, str]] = []  # (shown, expected): checked last, see below
    for span, service, method, outcome, items, caller, server in expected:
        assert (span["kind"], span["method"]) == ("rpc", method)
        names.append((span["service"], service))
        assert (span["outcome"], span["error"], span["items"]) == (outcome, None, items)
        assert span["parent_span_id"] == parent["span_id"]
        assert span["process"]["proc"] == server
        sides = span["sides"]
        assert sides["client"]["process"]["proc"] == caller
        assert sides["server"]["process"]["proc"] == server
        assert sides["client"]["outcome"] == sides["server"]["outcome"] == outcome
        assert sides["client"]["items"] == sides["server"]["items"] == items
        parent = span
    assert http["parent_span_id"] is None
    assert len({span["span_id"] for span in (http, a, b, c)}) == 4

    # Durations nest: each call runs within its caller's span, each server side within
    # its client side (one host, one clock; a millisecond of slack for rounding).
    slack = 0.001
    outer = http
    for span in (a, b, c):
        assert span["duration"] is not None
        assert span["duration"] >= 0
        assert span["start"] >= outer["start"] - slack
        end = span["start"] + span["duration"]
        assert end <= outer["start"] + outer["duration"] + slack
        client, server = span["sides"]["client"], span["sides"]["server"]
        assert client["start"] - slack <= server["start"] <= server["end"] <= client["end"] + slack
        outer = span
    assert trace["duration"] == pytest.approx(http["duration"], abs=slack)

    time.sleep(0.3)  # records of what ran so far (queries too) reach the collector: 50 ms
    stats = chain.http.get("/stats", headers={"accept": "application/json"}).json()
    for service, method in (("a", "relay"), ("b", "total"), ("c", "numbers")):
        assert stats[service][method]["count"] >= 1, stats
        assert stats[service][method]["errors"] == 0, stats

    # Checked last, together, so that one does not hide the other:
    problems = []
    # - each span is named after the service that ran it (a plain rpccore client that never
    #   called describe() names its side of a call by the endpoint; the server's side knows
    #   the service's name, and the tree must not prefer the endpoint over it);
    if [shown for shown, _ in names] != [expected for _, expected in names]:
        problems.append(f"spans named {[shown for shown, _ in names]}, not a, b, c")
    # - reading traces makes no new ones: the gateway's queries to the collector (trace,
    #   recent, stats) are not traced calls.
    queries = sorted(
        f"{service}.{method}"
        for service, methods in stats.items()
        for method, entry in methods.items()
        if method in QUERY_METHODS and entry.get("side") == "client"
    )
    if queries:
        problems.append(f"the gateway traced its queries to the collector: {queries}")
    assert problems == []


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with headless_chromium(tmp_path / "profile") as context:
        yield context


@pytest.mark.slow
def test_the_trace_page_renders_every_span_in_chromium(
    chain: Chain, browser: BrowserContext
) -> None:
    trace_id = one_call(chain)
    spans = walk(complete_trace(chain.http, trace_id))
    origin = chain.gateway.url
    refused: list[str] = []
    errors: list[str] = []

    def route(route: Any) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("blockedbyclient")

    browser.route("**/*", route)
    page = browser.new_page()
    page.on("pageerror", lambda error: errors.append(f"script: {error}"))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    page.goto(f"{origin}/traces/{trace_id}")
    page.wait_for_selector("svg.timeline")
    rows = page.eval_on_selector_all(
        "svg.timeline g.span",
        """groups => groups.map(g => {
            const bar = g.querySelector('rect.bar').getBoundingClientRect();
            return {
                id: g.dataset.spanId,
                depth: Number(g.dataset.depth),
                label: g.querySelector('text.label').textContent,
                x: bar.x, y: bar.y, width: bar.width, height: bar.height,
            };
        })""",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chain-e2e-trace.png", full_page=True)
    assert [(r["id"], r["depth"]) for r in rows] == [
        (span["span_id"], d) for d, span in enumerate(spans)
    ]
    assert all(r["width"] > 0 and r["height"] > 0 for r in rows)
    assert len({r["y"] for r in rows}) == 4
    for child, parent in zip(rows[1:], rows, strict=False):
        assert child["y"] > parent["y"]
        assert child["x"] >= parent["x"] - 0.5
        assert child["x"] + child["width"] <= parent["x"] + parent["width"] + 0.5
    assert page.locator("tbody tr").count() == 4
    assert "4 spans" in page.locator(".summary").inner_text()
    assert refused == []
    assert errors == []
    # Labelled by the services that ran the calls (see the naming check of the first test).
    assert [r["label"] for r in rows] == [
        "http POST /rpc/a/relay",
        "a.relay",
        "b.total",
        "c.numbers",
    ]


async def query_collector(endpoint: str, trace_ids: list[str]) -> list[int]:
    """How many records the collector holds for each trace."""
    gate = asyncio.Semaphore(16)  # a few at a time: each query is a Redis round trip

    async def count(client: Client, trace_id: str) -> int:
        async with gate:
            return len(await client.call("trace", trace_id))

    async with Client(endpoint, timeout=5) as client:
        return list(await asyncio.gather(*(count(client, tid) for tid in trace_ids)))


async def trace_counts(endpoints: dict[str, str]) -> dict[str, dict[str, int]]:
    found = {}
    for kind, endpoint in endpoints.items():
        async with Client(endpoint, timeout=5) as client:
            found[kind] = await client.call("trace_counts")
    return found


@pytest.mark.slow
def test_killing_the_collector_mid_load_loses_records_but_no_calls(chain: Chain) -> None:
    """At least LOAD_CALLS calls, LOAD_CONCURRENCY at a time; the collector is SIGKILLed
    once a third of them are done, and the load goes on for KILLED_FOR seconds more, long
    enough for every sender's queue (SEND_HWM batches, one per FLUSH_INTERVAL) to fill up."""
    one_call(chain)  # warm
    lock = threading.Lock()
    results: list[tuple[int, float, str]] = []
    killed_at: list[float] = []
    started = time.monotonic()

    def more() -> bool:
        with lock:
            if len(results) >= LOAD_CALLS and killed_at:
                return time.monotonic() - killed_at[0] < KILLED_FOR
            return time.monotonic() - started < LOAD_LIMIT

    def worker() -> None:
        while more():
            before = time.monotonic()
            answer = chain.http.post("/rpc/a/relay", json=[ITEMS])
            elapsed = time.monotonic() - before
            ok = answer.status_code == 200 and answer.json() == sum(range(ITEMS))
            with lock:
                results.append(
                    ((200 if ok else answer.status_code), elapsed, answer.headers["x-trace-id"])
                )
                if not killed_at and len(results) >= LOAD_CALLS // 3:
                    os.kill(chain.collector.pid, signal.SIGKILL)
                    killed_at.append(time.monotonic())

    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        for future in [pool.submit(worker) for _ in range(LOAD_CONCURRENCY)]:
            future.result(timeout=LOAD_LIMIT + 15)
    total = time.monotonic() - started
    assert killed_at, "the load never reached the kill"
    assert chain.collector.wait(timeout=10) == -signal.SIGKILL

    calls = len(results)
    assert calls >= LOAD_CALLS
    statuses = [status for status, _, _ in results]
    assert statuses == [200] * calls, f"failed calls: {[s for s in statuses if s != 200]}"
    latencies = sorted(elapsed for _, elapsed, _ in results)
    p99 = latencies[int(calls * 0.99) - 1]
    assert p99 < 1.0, f"p99 {p99 * 1000:.0f} ms, slowest {latencies[-1] * 1000:.0f} ms"
    assert latencies[-1] < 5.0, f"slowest call {latencies[-1] * 1000:.0f} ms"
    assert total < LOAD_LIMIT + 10, f"{calls} calls took {total:.1f} s"

    # A new collector on the same endpoints (same Redis store): the senders reconnect and
    # deliver what they still queued; what went down with the old one, or found a full
    # queue, is lost.
    chain.restart_collector()
    time.sleep(1.0)  # the senders' queues drain every 50 ms; give them a moment
    stored = asyncio.run(query_collector(chain.query, [tid for _, _, tid in results]))
    counters = asyncio.run(trace_counts(chain.endpoints))
    gateway_handler = rpccore.tracing.collector_handler()
    assert gateway_handler is not None
    counters["gateway"] = {"sent": gateway_handler.sent, "dropped": gateway_handler.dropped}
    dropped = sum(count["dropped"] for count in counters.values())
    missing = RECORDS_PER_CALL * calls - sum(stored)
    print(
        f"\n{calls} calls in {total:.1f} s, p99 {p99 * 1000:.0f} ms, slowest "
        f"{latencies[-1] * 1000:.0f} ms; {missing} records missing; counters {counters}"
    )
    assert all(count <= RECORDS_PER_CALL for count in stored)
    assert dropped > 0 or missing > 0, "the collector's death cost no record"

    # Tracing recovers: a call now is traced whole again.
    complete_trace(chain.http, one_call(chain))
