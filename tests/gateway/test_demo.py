"""``zerogate demo`` as a real process: it prints a banner, every curl line of the banner
answers what it promises, the calls it made are traced (``/traces``, ``/stats``, through the
demo's collector), and SIGINT or SIGTERM stops the gateway, every backend and the collector
(exit 0).
A backend that dies stops the demo with a message; a taken port is exit 2. With ``--auth``
the banner shows a token, every curl line needs it, and its folder goes when the demo stops.

Every process here is started by the test (the demo starts the backends), on loopback, and
stopped by its PID at the end; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

STARTUP = 60.0  # seconds for the demo's banner: four processes start on a two-core machine
STOP = 15.0
RECORDS = 10.0  # seconds for trace records to reach the collector (senders pass every 20 ms)
CURL = "/usr/bin/curl"
BANNER_END = "Ctrl-C stops."
BASE = re.compile(r"the gateway is on (http://127\.0\.0\.1:\d+)")
TOKEN_LINE = re.compile(r"^  TOKEN=(zgw_[0-9A-Za-z]+)$", re.MULTILINE)
AUTH_FOLDER = re.compile(r"are in (/\S+), removed when the demo stops")
TOKEN_OPTION = '-H "Authorization: Bearer $TOKEN" '


def children(pid: int) -> list[int]:
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:  # it has exited
        return []


def alive(pid: int) -> bool:
    """Running: a zombie (exited, never reaped by a container's PID 1) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


class Demo:
    """``zerogate demo --port PORT`` with its output in files."""

    def __init__(self, where: Path, port: int = 0, *options: str) -> None:
        self.out_path, self.err_path = where / "demo.out", where / "demo.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port), *options],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.pid = self.process.pid
        self.backends: list[int] = []  # PIDs, once the banner is out

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_banner(self) -> str:
        deadline = time.monotonic() + STARTUP
        while BANNER_END not in self.stdout:
            if self.process.poll() is not None:
                pytest.fail(f"the demo exited ({self.process.returncode}):\n{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no banner within {STARTUP} s:\n{self.stderr}")
            time.sleep(0.05)
        self.backends = children(self.pid)
        return self.stdout

    def child(self, name: str) -> int:
        return next(pid for pid in self.backends if name in command_line(pid))

    def close(self) -> None:
        """Kill by PID whatever the test left running (it failed)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(STOP)
        for pid in self.backends:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path)
    yield running
    running.close()


@pytest.fixture
def auth_demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path, 0, "--auth")
    yield running
    running.close()


def wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + STOP
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def curl_lines(banner: str) -> list[str]:
    return [line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")]


def run_curl(line: str) -> str:
    args = shlex.split(line, comments=True)
    assert args[0] == "curl"
    done = subprocess.run(
        [CURL, "--max-time", "20", *args[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"{line}: {done.stderr}"
    return done.stdout


# What each curl line of the banner must answer, by the path it calls.

APPLE = {"sku": "apple", "name": "Apple", "category": "fruit", "price": 0.5, "stock": 120}


def check_add(body: str) -> None:
    assert json.loads(body) == 3


def check_greet(body: str) -> None:
    assert json.loads(body) == "Hello, PyCon!"


def check_fruit(body: str) -> None:
    assert [item["sku"] for item in json.loads(body)] == ["apple", "banana"]


def check_apple(body: str) -> None:
    assert json.loads(body) == APPLE


def check_count(body: str) -> None:
    assert [json.loads(line) for line in body.splitlines()] == [{"result": i} for i in range(5)]


def check_watch(body: str) -> None:
    events = [event for event in body.split("\n\n") if event.strip()]
    data = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert data == [APPLE] * 3
    assert events[-1].splitlines()[0] == "event: end"


def check_unicorn(body: str) -> None:
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (404, "not_found")
    assert problem["remote"]["name"] == "KeyError"
    assert problem["rpc"] == {"service": "inventory", "method": "get_item"}


CHECKS: dict[str, Callable[[str], None]] = {
    "/rpc/calc/add": check_add,
    "/rpc/calc/greet": check_greet,
    "/rpc/inventory/list_items?category=fruit": check_fruit,
    "/items/apple": check_apple,
    "/rpc/calc/count": check_count,
    "/rpc/inventory/watch": check_watch,
    "/items/unicorn": check_unicorn,
}


def path_of(line: str, base: str) -> str:
    url = next(arg for arg in shlex.split(line, comments=True) if arg.startswith(base))
    return url.removeprefix(base)


def check_traced(base: str) -> None:
    """The banner's first call (calc.add through the gateway) is a trace of two spans: the
    gateway's HTTP request, and the call it made, recorded by both sides, the server's from
    the calc process; and calc.add is counted in the statistics."""
    json_only = {"format": "json"}

    def add_trace() -> dict[str, Any] | None:
        listed = httpx.get(f"{base}/traces", params=json_only, timeout=10).json()["traces"]
        root = {"svc": "http", "m": "POST /rpc/calc/add"}
        return next((trace for trace in listed if trace["root"] == root), None)

    deadline = time.monotonic() + RECORDS
    while (found := add_trace()) is None or found["spans"] < 2:
        assert time.monotonic() < deadline, f"no trace of calc.add: {found}"
        time.sleep(0.1)
    trace_id = found["trace_id"]
    tree = httpx.get(f"{base}/traces/{trace_id}", params=json_only, timeout=10).json()
    (request,) = tree["roots"]
    assert (request["kind"], request["method"], request["outcome"]) == (
        "http",
        "POST /rpc/calc/add",
        "ok",
    )
    (call,) = request["children"]
    assert (call["service"], call["method"], call["outcome"]) == ("calc", "add", "ok")
    assert call["sides"]["server"]["process"]["proc"] == "calc"
    assert call["sides"]["client"]["process"]["proc"] == "zerogate-gateway"
    stats = httpx.get(f"{base}/stats", params=json_only, timeout=10).json()
    assert stats["calc"]["add"]["count"] >= 1
    page = httpx.get(f"{base}/traces/{trace_id}", headers={"accept": "text/html"}, timeout=10)
    assert "<svg" in page.text


def test_every_curl_line_of_the_banner_answers_then_sigint_stops_everything(demo: Demo) -> None:
    banner = demo.wait_banner()
    match = BASE.search(banner)
    assert match is not None
    base = match[1]
    lines = curl_lines(banner)
    assert sorted(path_of(line, base) for line in lines) == sorted(CHECKS)
    for line in lines:
        body = run_curl(line)
        try:
            CHECKS[path_of(line, base)](body)
        except (AssertionError, ValueError, KeyError) as exc:
            pytest.fail(f"{line}\nanswered {body!r}: {exc!r}")
    pages = (
        "/docs",
        "/redoc",
        "/openapi.json",
        "/rpc",
        "/metrics",
        "/healthz",
        "/traces",
        "/stats",
    )
    for page in pages:
        assert f"{base}{page} " in banner
        assert httpx.get(f"{base}{page}", timeout=10).status_code == 200
    catalog = httpx.get(f"{base}/rpc", timeout=10).json()
    assert sorted(catalog["services"]) == ["calc", "inventory"]
    assert "/rpc/calc/add" in demo.stdout.split(BANNER_END, 1)[1]  # the access lines follow
    check_traced(base)

    assert len(demo.backends) == 3  # the two services and the collector
    before = len(demo.stderr)
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(STOP) == 0
    assert wait_gone(demo.backends) == []
    assert demo.stderr[before:] == "zerogate demo: stopped\n"  # and no traceback


def test_auth_demo_shows_a_token_that_every_curl_line_needs(auth_demo: Demo) -> None:
    banner = auth_demo.wait_banner()
    base_match, token_match = BASE.search(banner), TOKEN_LINE.search(banner)
    folder_match = AUTH_FOLDER.search(banner)
    assert base_match is not None
    assert token_match is not None
    assert folder_match is not None
    base, token, folder = base_match[1], token_match[1], Path(folder_match[1])
    assert banner.count(token) == 1  # shown once; the curl lines say $TOKEN
    assert (folder / "secret").stat().st_mode & 0o777 == 0o600
    lines = curl_lines(banner)
    assert sorted(path_of(line, base) for line in lines) == sorted(CHECKS)
    for line in lines:
        assert TOKEN_OPTION in line
        body = run_curl(line.replace("$TOKEN", token))
        try:
            CHECKS[path_of(line, base)](body)
        except (AssertionError, ValueError, KeyError) as exc:
            pytest.fail(f"{line}\nanswered {body!r}: {exc!r}")
        refused = json.loads(run_curl(line.replace(TOKEN_OPTION, "")))
        assert (refused["status"], refused["code"]) == (401, "unauthenticated"), line
    bearer = {"Authorization": f"Bearer {token}"}
    for page in ("/docs", "/redoc", "/openapi.json", "/healthz"):
        assert httpx.get(f"{base}{page}", timeout=10).status_code == 200, page
    for page in ("/rpc", "/metrics", "/traces", "/stats"):
        assert httpx.get(f"{base}{page}", timeout=10).status_code == 401, page
        assert httpx.get(f"{base}{page}", headers=bearer, timeout=10).status_code == 200, page

    auth_demo.process.send_signal(signal.SIGINT)
    assert auth_demo.process.wait(STOP) == 0
    assert wait_gone(auth_demo.backends) == []
    assert not folder.exists()  # the secret and the token store went with the demo


def test_sigterm_stops_the_gateway_and_every_backend(demo: Demo) -> None:
    demo.wait_banner()
    assert len(demo.backends) == 3
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(STOP) == 0
    assert wait_gone(demo.backends) == []


@pytest.mark.parametrize(
    ("name", "called"), [("calc", "the calc backend"), ("collector", "the trace collector")]
)
def test_a_child_that_dies_stops_the_demo_with_a_message(
    demo: Demo, name: str, called: str
) -> None:
    demo.wait_banner()
    child = demo.child(name)
    os.kill(child, signal.SIGKILL)
    assert demo.process.wait(STOP) == 1
    assert f"zerogate demo: {called} (pid {child}) stopped: killed by SIGKILL" in demo.stderr
    assert wait_gone(demo.backends) == []


def test_a_taken_port_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=STARTUP,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr == (
        f"zerogate demo: cannot listen on 127.0.0.1:{port}: address already in use "
        "(try another --port)\n"
    )
    assert done.stdout == ""
