"""Robustness end to end (real uvicorn, real backends in child processes): bad bodies, bad
paths and bad HTTP on raw sockets, backends that are down, die mid-call or mid-stream and
come back, slow backends, results JSON cannot hold, and a crowd of mixed requests. Every
answer has the status and code of DESIGN.md's table, and the gateway serves a good request
afterwards, holding no channel, call or task for what went before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import select
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import msgpack
import pytest
from e2e_support import (
    Children,
    Gateway,
    free_port,
    leftovers,
    service_config,
    start_backend,
    wait_until,
)

HEARTBEAT: Final = 0.5  # on the services and on the backends: lost after ~1 s of silence
MAX_BODY: Final = 256 * 1024
PROBLEM: Final = "application/problem+json"


@dataclass
class Env:
    gateway: Gateway
    children: Children
    baseline: frozenset[str]  # the idle gateway's task names
    files: Path
    victim_port: int  # the "victim" service's backend: killed and restarted by tests
    victim: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return self.gateway.url

    def log(self, name: str) -> str:
        return str(self.files / f"{name}-{time.monotonic_ns()}")


def victim_state(env: Env) -> dict[str, Any]:
    """The pool's view of the victim's one endpoint (up, in_flight, last_error)."""
    pool = env.gateway.gateway_state.registry.services["victim"].pool
    [endpoint] = pool.snapshot()["endpoints"]
    return dict(endpoint)


def victim_serving(env: Env, http: httpx.Client, within: float = 10.0) -> float:
    """Start the victim backend if it is not running; the seconds until a call through the
    gateway succeeds."""
    if env.victim.poll() is not None:
        _, env.victim = start_backend(
            env.children, "green", port=env.victim_port, heartbeat=HEARTBEAT
        )

    def answers() -> str | None:
        got = http.post("/rpc/victim/add", json=[1, 1])
        return None if got.status_code == 200 else f"{got.status_code} {got.text[:300]}"

    return wait_until(answers, within, "the restarted backend is not served")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    children = Children(tmp_path_factory.mktemp("robust-backends"))
    try:
        shop, _ = start_backend(children, "green", heartbeat=HEARTBEAT)
        victim, victim_process = start_backend(children, "green", heartbeat=HEARTBEAT)
        down_port = free_port()
        config = "\n".join(
            [
                f"gateway: {{max_body_bytes: {MAX_BODY}}}",
                "services:",
                service_config(
                    "shop",
                    [shop],
                    heartbeat=HEARTBEAT,
                    timeout=10,
                    errors="{ValueError: 400}",
                ),
                # The same backend, with a service timeout of 1 s.
                service_config("tight", [shop], heartbeat=HEARTBEAT, timeout=1),
                service_config("victim", [victim], heartbeat=HEARTBEAT, timeout=10),
                # Nothing ever listens there.
                service_config(
                    "down", [f"tcp://127.0.0.1:{down_port}"], heartbeat=HEARTBEAT, timeout=1
                ),
            ]
        )
        files = tmp_path_factory.mktemp("robust-logs")
        with Gateway(config) as gateway:
            victim_port = int(victim.rsplit(":", 1)[1])
            baseline = frozenset(gateway.tasks())
            yield Env(gateway, children, baseline, files, victim_port, victim_process)
    finally:
        children.stop_all()


@pytest.fixture
def http(env: Env) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=env.url, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def still_serving(env: Env, http: httpx.Client) -> Iterator[None]:
    """After every test the gateway answers a good request and holds nothing behind."""
    yield
    answer = http.post("/rpc/shop/add", json=[2, 3])
    assert (answer.status_code, answer.json()) == (200, 5), answer.text
    wait_until(
        lambda: leftovers(env.gateway, env.baseline, unreachable=["down"]),
        5.0,
        "the gateway still holds state",
    )


def check_problem(
    response: httpx.Response, status: int, code: str | None, *, detail: str = ""
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem.get("code") == code, problem
    assert detail in problem["detail"], problem
    assert problem["trace_id"] == response.headers["x-trace-id"]
    return problem


# -- raw HTTP ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket) -> Answer:
    """One HTTP/1.1 response (Content-Length framed) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            more = b""
        except TimeoutError:
            raise AssertionError(f"no answer within {sock.gettimeout()} s: {data!r}") from None
        if not more:
            assert not data, f"the connection closed inside an answer: {data!r}"
            return Answer(None, {}, b"")
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        more = sock.recv(65536)
        assert more, "the connection closed inside a body"
        body += more
    return Answer(int(status_line.split(" ")[1]), headers, body[:length])


def exchange(port: int, request: bytes) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # It may refuse before reading everything: the answer is what counts.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_answer(sock)


def post_raw(port: int, path: str, body: bytes = b"[1, 2]") -> Answer:
    return exchange(
        port,
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )


# -- bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"[1,\n 2,,]", "Expecting value at line 2, column 4"),
        (b'{"a": 1,\n\n  "b" 2}', "Expecting ':' delimiter at line 3, column 7"),
        (b"[1, 2", "line 1, column 6"),
    ],
)
def test_malformed_json_is_400_with_line_and_column(
    http: httpx.Client, body: bytes, where: str
) -> None:
    answer = http.post("/rpc/shop/add", content=body, headers={"Content-Type": "application/json"})
    problem = check_problem(answer, 400, "invalid_argument", detail=where)
    assert problem["errors"][0]["loc"] == ["body"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/json; charset=latin-1"]
)
def test_unsupported_content_type_is_415(http: httpx.Client, content_type: str) -> None:
    answer = http.post("/rpc/shop/add", content=b"[1, 2]", headers={"Content-Type": content_type})
    check_problem(answer, 415, None)


def test_a_body_of_exactly_the_limit_is_read(http: httpx.Client) -> None:
    body = b"[1, 2]".ljust(MAX_BODY, b" ")
    answer = http.post("/rpc/shop/add", content=body, headers={"Content-Type": "application/json"})
    assert (answer.status_code, answer.json()) == (200, 3)
    over = http.post(
        "/rpc/shop/add", content=body + b" ", headers={"Content-Type": "application/json"}
    )
    check_problem(over, 413, None, detail=str(MAX_BODY))


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /rpc/shop/echo HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
        )
        started = time.monotonic()
        answer = read_answer(sock)  # no byte of the 100 MiB body was sent
        took = time.monotonic() - started
    assert answer.status == 413, answer
    assert answer.headers["content-type"] == PROBLEM
    assert answer.json()["status"] == 413
    assert took < 2, f"the 413 took {took:.2f} s"


def test_chunked_body_over_the_limit_is_413_while_it_is_sent(env: Env) -> None:
    """No Content-Length: the gateway counts while reading and answers once past the limit,
    while the client is still sending (it would send 4 times the limit)."""
    piece = b" " * 16384
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    slack = 4 * len(piece)  # what may be in flight when the gateway passes the limit
    with socket.create_connection(("127.0.0.1", env.gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /rpc/shop/echo HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent, answered = 0, False
        while not answered and sent <= MAX_BODY + slack:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused: the answer may wait in the receive buffer
            sent += len(piece)
            wait = 0.5 if sent > MAX_BODY else 0.0  # past the limit: the answer is due
            answered = bool(select.select([sock], [], [], wait)[0])
        assert answered, f"no answer after {sent} bytes of a chunked body (limit {MAX_BODY})"
        answer = read_answer(sock)
    assert answer.status == 413, answer
    assert answer.json()["status"] == 413
    assert sent > MAX_BODY, f"413 after only {sent} bytes"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"a":' * 40_000 + b"1" + b"}" * 40_000, "application/json"),
        (b"[" + b"[" * 100 + b"]" * 100 + b"]", "application/json"),
        (b"\x91" * 100_000 + b"\xc0", "application/msgpack"),
    ],
    ids=["arrays", "objects", "just-over", "msgpack"],
)
def test_deeply_nested_body_is_400(http: httpx.Client, body: bytes, content_type: str) -> None:
    answer = http.post("/rpc/shop/echo", content=body, headers={"Content-Type": content_type})
    problem = check_problem(answer, 400, "invalid_argument", detail="nested")
    assert problem["errors"][0]["type"] == "too_deeply_nested"


def test_nesting_within_the_limit_is_echoed(http: httpx.Client) -> None:
    value: Any = 1
    for _ in range(60):  # echo's argument list is one more level
        value = [value]
    answer = http.post("/rpc/shop/echo", json=[value])
    assert (answer.status_code, answer.json()) == (200, value)


@pytest.mark.parametrize("body", [b'["\xff\xfe"]', b"[\xc3\x28]", b'{"a": "\xed\xa0\x80"}'])
def test_body_that_is_not_utf8_is_400(http: httpx.Client, body: bytes) -> None:
    answer = http.post("/rpc/shop/echo", content=body, headers={"Content-Type": "application/json"})
    check_problem(answer, 400, "invalid_argument", detail="not UTF-8")


# -- headers, paths and request lines ---------------------------------------------------


def test_headers_of_ordinary_size_are_served(env: Env) -> None:
    answer = exchange(
        env.gateway.port,
        b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(50))
        + b"X-Big: "
        + b"a" * 4000
        + b"\r\n\r\n",
    )
    assert answer.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * (1 << 20) + b"\r\n",
        b"".join(b"X-H-%d: v\r\n" % i for i in range(100_000)),
    ],
    ids=["one-of-1MiB", "100k-headers"],
)
def test_huge_headers_are_refused(env: Env, headers: bytes) -> None:
    """A server bounds what it buffers before the app sees a request (nginx: 4 x 8 KiB,
    Node: 16 KiB, uvicorn's h11: 16 KiB); unbounded, one connection can take any memory."""
    answer = exchange(
        env.gateway.port,
        b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n" + headers + b"\r\n",
    )
    assert answer.status in (400, 431, None), f"a huge header block was served: {answer.status}"


@pytest.mark.parametrize(
    "path",
    [
        "/rpc/shop%2Fadd",
        "/rpc/shop%2Fadd/x",
        "/rpc/shop%2fadd",
        "/rpc/shop/%2e%2e",
        "/rpc/shop/..",
        "/rpc/../healthz",
        "/rpc/%2e%2e/shop/add",
        "/rpc/shop/../shop/add",
        "//rpc/shop/add",
        "/rpc//shop/add",
        "/rpc/shop/add/",
        "/rpc/shop/add%00",
        "/rpc/shop/_hidden",
        "/rpc/shop/%5Fhidden",
        "/rpc/shop/nope",
        "/rpc/nope/add",
    ],
)
def test_odd_paths_are_404_problems_never_redirects(env: Env, path: str) -> None:
    answer = post_raw(env.gateway.port, path)
    assert answer.status == 404, f"{path}: {answer.status} {answer.body[:300]!r}"
    assert answer.headers["content-type"] == PROBLEM
    assert "location" not in answer.headers
    problem = answer.json()
    assert (problem["status"], problem["code"]) == (404, "unimplemented")


def test_unknown_service_and_method_are_404(http: httpx.Client) -> None:
    check_problem(http.post("/rpc/nope/add", json=[1, 2]), 404, "unimplemented")
    problem = check_problem(http.post("/rpc/shop/nope", json=[]), 404, "unimplemented")
    assert problem["rpc"] == {"service": "shop", "method": "nope"}
    check_problem(http.get("/rpc/nope"), 404, "unimplemented")


def test_wrong_verb_is_405_with_allow(http: httpx.Client) -> None:
    answer = http.get("/rpc/shop/add", params={"a": 1, "b": 2})
    check_problem(answer, 405, None)
    assert answer.headers["allow"] == "POST"
    answer = http.put("/rpc/shop/add", json=[1, 2])
    check_problem(answer, 405, None)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /rpc HTTP/9.9\r\nHost: gateway\r\n\r\n",
        b"GET rpc HTTP/1.1\r\nHost: gateway\r\n\r\n",
        b"GET /rpc HTTP/1.1\r\nHost gateway\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
        b"POST /rpc/shop/add HTTP/1.1\r\nHost: gateway\r\nContent-Length: abc\r\n\r\n",
        b"POST /rpc/shop/add HTTP/1.1\r\nHost: gateway\r\nContent-Length: -5\r\n\r\n",
        b"POST /rpc/shop/add HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n[1,2]\r\n0\r\n\r\n",
        b"GET /rpc/shop\x00 HTTP/1.1\r\nHost: gateway\r\n\r\n",
    ],
    ids=[
        "garbage",
        "no-target",
        "version-9.9",
        "relative-target",
        "header-without-colon",
        "tls-hello",
        "content-length-abc",
        "content-length-negative",
        "bad-chunk-size",
        "nul-in-target",
    ],
)
def test_malformed_http_is_refused(env: Env, request_bytes: bytes) -> None:
    answer = exchange(env.gateway.port, request_bytes)
    assert answer.status in (400, None), f"{answer.status} {answer.body[:300]!r}"


# -- backends down, dying, slow or odd --------------------------------------------------


def test_backend_down_at_start_is_503_with_retry_after(http: httpx.Client) -> None:
    for _ in range(2):  # before and after the probes marked it down
        answer = http.post("/rpc/down/add", json=[1, 2])
        check_problem(answer, 503, "unavailable")
        assert int(answer.headers["retry-after"]) >= 1
    ready = http.get("/readyz")
    check_problem(ready, 503, "unavailable")


def test_backend_killed_mid_call_is_502(env: Env, http: httpx.Client) -> None:
    victim_serving(env, http)
    log = env.log("slow")
    result: list[httpx.Response] = []

    def call() -> None:
        result.append(httpx.post(f"{env.url}/rpc/victim/slow_logged", json=[log, 5], timeout=30))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    wait_until(lambda: None if os.path.exists(log) else "no", 5, "slow(5) did not start")
    env.children.kill(env.victim)
    killed = time.monotonic()
    caller.join(timeout=15)
    took = time.monotonic() - killed
    assert not caller.is_alive(), "the call did not end"
    [answer] = result
    problem = check_problem(answer, 502, "unavailable")
    assert problem["rpc"] == {"service": "victim", "method": "slow_logged"}
    assert took < 6 * HEARTBEAT, f"the lost backend was noticed after {took:.2f} s"
    # The pool took the endpoint down: the next call is refused at once.
    assert victim_state(env)["up"] is False
    refused = http.post("/rpc/victim/add", json=[1, 2])
    check_problem(refused, 503, "unavailable")
    assert refused.headers["retry-after"] == "1"


def test_backend_killed_mid_stream_ends_with_an_error_line(env: Env, http: httpx.Client) -> None:
    victim_serving(env, http)
    with http.stream("POST", "/rpc/victim/ticks", json=[1000, 0.05]) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert [json.loads(next(lines)) for _ in range(3)] == [{"result": i} for i in range(3)]
        env.children.kill(env.victim)
        killed = time.monotonic()
        rest = [json.loads(line) for line in lines]
        took = time.monotonic() - killed
    *items, last = rest
    assert all(list(item) == ["result"] for item in items)
    assert list(last) == ["error"], last
    assert (last["error"]["status"], last["error"]["code"]) == (502, "unavailable")
    assert last["error"]["rpc"] == {"service": "victim", "method": "ticks"}
    assert took < 6 * HEARTBEAT, f"the lost backend was noticed after {took:.2f} s"


def test_backend_restarted_on_the_same_port_is_probed_back_up(env: Env, http: httpx.Client) -> None:
    victim_serving(env, http)
    first_pid = http.post("/rpc/victim/pid").json()
    env.children.kill(env.victim)
    wait_until(
        lambda: None if victim_state(env)["up"] is False else "up",
        8 * HEARTBEAT,
        "the probes did not notice the dead backend",
    )
    check_problem(http.post("/rpc/victim/add", json=[1, 2]), 503, "unavailable")
    took = victim_serving(env, http, within=10.0)
    assert took < 10 * HEARTBEAT, f"the restarted backend was used after {took:.2f} s"
    assert victim_state(env)["up"] is True
    assert http.post("/rpc/victim/pid").json() not in (first_pid, None)


def test_slow_backend_is_504(http: httpx.Client) -> None:
    started = time.monotonic()
    answer = http.post("/rpc/shop/slow", json=[2], headers={"X-Timeout-Ms": "300"})
    took = time.monotonic() - started
    problem = check_problem(answer, 504, "deadline_exceeded")
    assert problem["rpc"] == {"service": "shop", "method": "slow"}
    assert 0.3 <= took < 1.5, f"X-Timeout-Ms 300 answered after {took:.2f} s"


def test_timeout_header_never_raises_the_service_timeout(http: httpx.Client) -> None:
    started = time.monotonic()
    answer = http.post("/rpc/tight/slow", json=[3], headers={"X-Timeout-Ms": "5000"})
    took = time.monotonic() - started
    check_problem(answer, 504, "deadline_exceeded")
    assert 1.0 <= took < 2.5, f"a 1 s service timeout answered after {took:.2f} s"
    bad = http.post("/rpc/shop/add", json=[1, 2], headers={"X-Timeout-Ms": "soon"})
    check_problem(bad, 400, "invalid_argument")


def test_result_json_cannot_hold_is_502_and_msgpack_carries_it(http: httpx.Client) -> None:
    problem = check_problem(http.post("/rpc/shop/nan"), 502, "internal", detail="NaN")
    assert "application/msgpack" in problem["detail"]
    packed = http.post("/rpc/shop/nan", headers={"Accept": "application/msgpack"})
    assert packed.status_code == 200
    assert packed.headers["content-type"] == "application/msgpack"
    assert math.isnan(msgpack.unpackb(packed.content))


# -- a crowd of mixed requests ----------------------------------------------------------

CROWD: Final = 2000
CONCURRENCY: Final = 32


async def crowd_request(client: httpx.AsyncClient, index: int) -> str:
    """One request of the crowd; what happened, as a word to count."""
    kind = index % 20
    if kind < 14:  # 70 %: plain calls
        answer = await client.post("/rpc/shop/add", json=[index, 1])
        assert (answer.status_code, answer.json()) == (200, index + 1), answer.text
        return "call"
    if kind == 14:  # a timeout
        # slow(0.5) against a 20 ms deadline: with 0.1 s, a loaded machine once ran the
        # gateway's loop late enough that the answer came before the deadline was seen.
        answer = await client.post("/rpc/shop/slow", json=[0.5], headers={"X-Timeout-Ms": "20"})
        assert answer.status_code == 504, answer.text
        assert answer.json()["code"] == "deadline_exceeded"
        return "timeout"
    if kind == 15:  # the client gives up mid-call and closes the connection
        # slow(0.5) against a 30 ms read timeout: a wide margin, since on a loaded machine the
        # timeout may fire late (the client and the gateway share this process's loop).
        try:
            await client.post("/rpc/shop/slow", json=[0.5], timeout=httpx.Timeout(30, read=0.03))
        except httpx.ReadTimeout:
            return "disconnect"
        raise AssertionError("slow(0.5) answered within 30 ms")
    if kind == 16:  # a stream abandoned after its first item
        async with client.stream("POST", "/rpc/shop/count", json=[1000]) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                assert line == '{"result":0}'
                break
        return "abandoned"
    if kind == 17:  # a stream read to its end
        answer = await client.post("/rpc/shop/count", json=[20])
        assert answer.text.splitlines() == [f'{{"result":{i}}}' for i in range(20)]
        return "stream"
    if kind == 18:  # a backend exception
        answer = await client.post("/rpc/shop/fail", json=["no"])
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_argument")
        return "error"
    answer = await client.post("/rpc/shop/nope", json=[])  # unknown method
    assert answer.status_code == 404
    return "unknown"


def test_a_crowd_of_mixed_requests_leaves_nothing_behind(env: Env, http: httpx.Client) -> None:
    async def crowd() -> Counter[str]:
        limit = asyncio.Semaphore(CONCURRENCY)
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=env.url, timeout=30, limits=limits) as client:

            async def one(index: int) -> str:
                async with limit:
                    return await crowd_request(client, index)

            return Counter(await asyncio.gather(*(one(i) for i in range(CROWD))))

    started = time.monotonic()
    outcomes = asyncio.run(asyncio.wait_for(crowd(), 60))
    took = time.monotonic() - started
    share = CROWD // 20
    assert outcomes == {
        "call": 14 * share,
        "timeout": share,
        "disconnect": share,
        "abandoned": share,
        "stream": share,
        "error": share,
        "unknown": share,
    }
    assert took < 60

    def still_held() -> str | None:
        """What the gateway still holds, by its state and by its metrics, read together:
        read once each, one after the other, the metrics once showed a call in flight just
        after the state had been idle (a full-suite run on a loaded machine)."""
        held = leftovers(env.gateway, env.baseline, unreachable=["down"])
        in_flight = [
            line
            for line in http.get("/metrics").text.splitlines()
            if line.startswith("zerogate_calls_in_flight{") and 'service="shop"' in line
        ]
        assert in_flight, "no zerogate_calls_in_flight sample for shop"
        busy = [line for line in in_flight if not line.endswith(" 0.0")]
        return None if held is None and not busy else f"{held}, metrics {busy}"

    wait_until(still_held, 5.0, "after the crowd the gateway holds")
