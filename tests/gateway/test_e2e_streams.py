"""Streams end to end (real uvicorn, real backends in child processes): NDJSON and SSE through
each kind of backend, failures midway, backpressure from a slow HTTP reader back to the
backend's generator, and HTTP clients that go away mid-stream or mid-call.

The backend methods ``*_logged`` append one byte per produced item to a file, so the test
sees how far the backend's generator got, and write ``FILE.end`` when the generator ends
(returns, or is closed once the backend gives the abandoned channel up).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from e2e_support import (
    Children,
    Gateway,
    leftovers,
    service_config,
    start_backend,
    wait_until,
)

KINDS: Final = ("green", "aio", "zerorpc")
HEARTBEAT: Final = 0.5  # on both sides: a backend gives an abandoned channel up in ~1 s
CURL: Final = "/usr/bin/curl"
SSE_HEADERS: Final = {"Accept": "text/event-stream"}
CHUNK: Final = 65536  # characters per item of the backpressure streams
LINE: Final = len(b'{"result":""}\n') + CHUNK  # one NDJSON line of such an item
# What the backend may produce ahead of a reader that stopped: the gateway client's credit
# window (100 items) plus what ZeroMQ and the TCP buffers hold. Far below the streams.
AHEAD_LIMIT: Final = 400
RSS_LIMIT: Final = 64 << 20
RECEIVE_BUFFER: Final = 1 << 20  # bytes: the test client's TCP receive buffer (16 items)


@dataclass
class Env:
    gateway: Gateway
    baseline: frozenset[str]  # the idle gateway's task names
    files: Path  # where the *_logged methods write

    @property
    def url(self) -> str:
        return self.gateway.url

    def log(self, name: str) -> str:
        """A fresh file name for a *_logged method."""
        return str(self.files / f"{name}-{time.monotonic_ns()}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    children = Children(tmp_path_factory.mktemp("stream-backends"))
    try:
        services = []
        for kind in KINDS:
            endpoint, _ = start_backend(children, kind, heartbeat=HEARTBEAT)
            services.append(
                service_config(f"shop_{kind}", [endpoint], heartbeat=HEARTBEAT, timeout=10)
            )
        with Gateway("services:\n" + "\n".join(services)) as gateway:
            yield Env(gateway, frozenset(gateway.tasks()), tmp_path_factory.mktemp("stream-logs"))
    finally:
        children.stop_all()


@pytest.fixture
def http(env: Env) -> Iterator[httpx.Client]:
    # A fixed receive buffer: Linux grows it while a reader reads fast, up to tcp_rmem's
    # maximum (32 MiB on some machines, 500 items), which the backend could fill ahead of
    # the reader; AHEAD_LIMIT counts on buffers of the usual size.
    receive_buffer = [(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)]
    transport = httpx.HTTPTransport(socket_options=receive_buffer)
    with httpx.Client(base_url=env.url, timeout=30, transport=transport) as client:
        yield client


@pytest.fixture(autouse=True)
def nothing_left_behind(env: Env) -> Iterator[None]:
    """After every test: no channel, call or task stays in the gateway (bounded wait)."""
    yield
    wait_until(lambda: leftovers(env.gateway, env.baseline), 5.0, "the gateway still holds state")


def size_of(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def rss() -> int:
    """The test process's resident memory (uvicorn runs in it, in a thread)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def ndjson(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def raw_post(port: int, path: str, body: Any) -> socket.socket:
    """A POST on a fresh socket, its answer left unread."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


# -- NDJSON and SSE through every kind of backend -----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_ndjson_lines_are_flushed_as_items_arrive(http: httpx.Client, kind: str) -> None:
    started = time.monotonic()
    with http.stream("POST", f"/rpc/shop_{kind}/ticks", json=[5, 0.3]) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["cache-control"] == "no-cache"
        lines = response.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - started
        rest = list(lines)
    ended_at = time.monotonic() - started
    assert [json.loads(line) for line in [first, *rest]] == [{"result": i} for i in range(5)]
    # The backend takes 1.5 s in all; item 0 exists after 0.3 s and must not wait for the rest.
    assert ended_at >= 1.4, f"5 ticks of 0.3 s took only {ended_at:.2f} s"
    assert first_at < 1.0, (
        f"item 0 arrived after {first_at:.2f} s (the stream took {ended_at:.2f} s)"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_sse_events_then_end(http: httpx.Client, kind: str) -> None:
    response = http.post(f"/rpc/shop_{kind}/count", json=[3], headers=SSE_HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"
    assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\nevent: end\ndata: \n\n"


def test_sse_with_curl_as_users_type_it(env: Env) -> None:
    """``curl -N -d`` (a form body, read as JSON) with SSE, each event as it comes."""
    done = subprocess.run(
        [
            CURL,
            "-sSN",
            "--max-time",
            "20",
            "-H",
            "Accept: text/event-stream",
            "-d",
            "[3, 0.1]",
            f"{env.url}/rpc/shop_green/ticks",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == b"data: 0\n\ndata: 1\n\ndata: 2\n\nevent: end\ndata: \n\n"


def check_failure(problem: dict[str, Any], kind: str, trace_id: str) -> None:
    assert problem["status"] == 500
    assert problem["code"] == "unknown"
    assert problem["remote"] == {"name": "RuntimeError", "message": "failed after 2"}
    assert problem["rpc"] == {"service": f"shop_{kind}", "method": "fail_after"}
    assert problem["trace_id"] == trace_id
    assert "traceback" not in problem["remote"]  # expose_tracebacks is off


@pytest.mark.parametrize("kind", KINDS)
def test_ndjson_failure_midway_is_a_final_error_line(http: httpx.Client, kind: str) -> None:
    response = http.post(f"/rpc/shop_{kind}/fail_after", json=[2])
    assert response.status_code == 200  # the first byte left before the failure
    *items, last = ndjson(response.text)
    assert items == [{"result": 0}, {"result": 1}]
    assert list(last) == ["error"]
    check_failure(last["error"], kind, response.headers["x-trace-id"])


@pytest.mark.parametrize("kind", KINDS)
def test_sse_failure_midway_is_an_error_event(http: httpx.Client, kind: str) -> None:
    response = http.post(f"/rpc/shop_{kind}/fail_after", json=[2], headers=SSE_HEADERS)
    assert response.status_code == 200
    events = response.text.split("\n\n")
    assert events[:2] == ["data: 0", "data: 1"]
    assert events[3:] == [""], f"nothing may follow the error event: {events[3:]}"
    kind_line, data_line = events[2].split("\n")
    assert kind_line == "event: error"
    assert data_line.startswith("data: ")
    check_failure(json.loads(data_line[len("data: ") :]), kind, response.headers["x-trace-id"])


# -- backpressure: a slow reader slows the backend, memory stays flat ---------------------


@pytest.mark.parametrize(
    ("kind", "items"),
    [("green", 4000), ("aio", 1000), ("zerorpc", 1000)],  # 256 MiB, then 64 MiB each
)
def test_a_slow_reader_holds_the_backend_back(
    env: Env, http: httpx.Client, kind: str, items: int
) -> None:
    log = env.log(f"chunks-{kind}")
    before = rss()
    peak = 0

    def check_ahead(consumed: int, when: str) -> int:
        nonlocal peak
        produced = size_of(log)
        peak = max(peak, rss() - before)
        assert produced - consumed <= AHEAD_LIMIT, (
            f"{when}: the backend produced {produced} items while the client read {consumed}"
        )
        assert peak < RSS_LIMIT, f"{when}: the process grew by {peak >> 20} MiB"
        return produced

    with http.stream(
        "POST", f"/rpc/shop_{kind}/chunks_logged", json=[log, items, CHUNK]
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_raw(CHUNK)
        received = len(next(chunks))

        # The client stops reading: once the pipes are full, the backend stops producing.
        time.sleep(1.0)
        paused_at = check_ahead(received // LINE, "paused 1 s")
        time.sleep(1.5)
        assert check_ahead(received // LINE, "paused 2.5 s") == paused_at, (
            "the backend kept producing while nobody read"
        )

        # The client reads slowly (about 6 MiB/s): the backend follows, never far ahead.
        slow_until = time.monotonic() + 1.0
        while time.monotonic() < slow_until:
            received += len(next(chunks))
            time.sleep(0.01)
            check_ahead(received // LINE, "reading slowly")
        assert size_of(log) > paused_at, "reading again did not let the backend go on"

        # Then it reads the rest at full speed: everything arrives.
        fast_from = time.monotonic()
        for index, chunk in enumerate(chunks):
            received += len(chunk)
            if index % 256 == 0:
                check_ahead(received // LINE, "reading fast")
        fast = time.monotonic() - fast_from
    assert received == items * LINE
    assert size_of(log) == items
    assert fast < 40, f"the rest of the stream took {fast:.1f} s"
    wait_until(lambda: None if size_of(log + ".end") else "running", 5, "the generator ended")


# -- HTTP clients that go away ----------------------------------------------------------


def busy(gateway: Gateway, service: str) -> bool:
    """Whether ``service`` has an open channel and a call in flight."""
    return any(
        channels > 0 and in_flight > 0
        for where, (channels, in_flight) in gateway.channels().items()
        if where.split(" ")[0] == service
    )


def read_results(sock: socket.socket, count: int) -> None:
    data = b""
    while data.count(b'{"result"') < count:
        more = sock.recv(65536)
        assert more, f"the connection closed after {data!r}"
        data += more


@pytest.mark.parametrize("kind", KINDS)
def test_client_gone_mid_stream_ends_the_backend_generator(env: Env, kind: str) -> None:
    log = env.log(f"ticks-{kind}")
    sock = raw_post(env.gateway.port, f"/rpc/shop_{kind}/ticks_logged", [log, 1000, 0.05])
    read_results(sock, 3)
    assert busy(env.gateway, f"shop_{kind}"), "the stream shows no channel in flight"
    sock.close()

    # The gateway lets go at once: no channel, no call in flight, no task for it.
    wait_until(lambda: leftovers(env.gateway, env.baseline), 2.0, "after the disconnect")
    # The backend's generator is closed once it gives the channel up (a few heartbeats);
    # until then it may only use the credit it had (the client's window of 100 items).
    wait_until(
        lambda: None if size_of(log + ".end") else f"at item {size_of(log)}",
        8 * HEARTBEAT,
        "the backend generator still runs",
    )
    stopped_at = size_of(log)
    time.sleep(0.5)
    assert size_of(log) == stopped_at, "the generator advanced after it ended"
    assert stopped_at < 100, f"the backend produced {stopped_at} items for a gone client"


@pytest.mark.parametrize("kind", KINDS)
def test_client_gone_mid_call_frees_the_gateway_at_once(
    env: Env, http: httpx.Client, kind: str
) -> None:
    log = env.log(f"slow-{kind}")
    sock = raw_post(env.gateway.port, f"/rpc/shop_{kind}/slow_logged", [log, 3])
    wait_until(lambda: None if size_of(log) else "not started", 5, "the backend call started")
    assert busy(env.gateway, f"shop_{kind}"), "the call shows no channel in flight"
    sock.close()
    # Long before slow(3) returns, the gateway holds nothing for the call any more.
    took = wait_until(lambda: leftovers(env.gateway, env.baseline), 1.5, "after the disconnect")
    assert size_of(log + ".end") == 0, f"slow(3) already ended: the check came too late ({took})"
    answer = http.post(f"/rpc/shop_{kind}/add", json=[1, 2])
    assert (answer.status_code, answer.json()) == (200, 3)
