"""``zerogate serve`` as a real process: config problems and a taken port exit 2 in one go,
the gateway answers in front of a real rpccore backend (one worker or two), access lines go
to stdout as JSON, and SIGTERM lets a call in flight finish within ``shutdown_grace``.

Every process here is started by the test, on loopback, and stopped by its PID at the end;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from loopback import free_port

STARTUP = 30.0  # seconds a process has to get going, on a loaded two-core machine
STOP = 15.0  # seconds a process has to exit once asked
SERVING = re.compile(r"zerogate serving on http://127\.0\.0\.1:(\d+)")
STARTED = re.compile(r"Started server process \[(\d+)\]")

# A backend on the asyncio driver; it prints its endpoint, then "slow N" when slow() starts,
# and stops when its stdin closes (so it never outlives the test).
BACKEND = textwrap.dedent(
    '''\
    import asyncio, sys
    from rpccore.aio import Server

    class Svc:
        async def add(self, a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        async def slow(self, seconds: float) -> float:
            """Wait, then answer."""
            print("slow", seconds, flush=True)
            await asyncio.sleep(seconds)
            return seconds

    async def main() -> None:
        server = Server(Svc(), name="svc")
        print(server.bind("tcp://127.0.0.1:*")[0], flush=True)
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), server.stop)
        await server.run()

    asyncio.run(main())
    '''
)


def children(pid: int) -> list[int]:
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:  # it has exited
        return []


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found.extend(descendants(child))
    return found


def alive(pid: int) -> bool:
    """Running: a zombie (exited, never reaped by a container's PID 1) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_if_alive(pid: int) -> None:
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: list[int], timeout: float = STOP) -> list[int]:
    """The PIDs still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Running:
    """A child process whose stdout and stderr go to files (no pipe can fill up and block)."""

    def __init__(self, args: list[str], where: Path, **kwargs: Any) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = where / "stdout", where / "stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=out, stderr=err, **kwargs
            )
        self.pid = self.process.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, find: Callable[[], Any], what: str, timeout: float = STARTUP) -> Any:
        """Poll ``find`` until it returns something true; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = find()
            if found:
                return found
            if self.process.poll() is not None:
                found = find()  # it may have written it just before exiting
                if found:
                    return found
                pytest.fail(f"exited ({self.process.returncode}) before {what}:\n{self.stderr}")
            time.sleep(0.05)
        pytest.fail(f"no {what} within {timeout} s:\n{self.stderr}")

    def signal(self, sig: int) -> int:
        """Send ``sig`` and wait (bounded) for the exit status."""
        self.process.send_signal(sig)
        return self.process.wait(STOP)

    def close(self) -> None:
        """Stop it and whatever it started, by PID, if they still run (the test failed)."""
        if self.process.poll() is None:
            left = descendants(self.pid)
            self.process.kill()
            for pid in left:
                kill_if_alive(pid)
        self.process.wait(STOP)
        stdin: IO[bytes] | None = self.process.stdin
        if stdin is not None:
            stdin.close()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start processes; each is stopped by its PID at the end of the test."""
    processes: list[Running] = []

    def start(*args: str, name: str = "proc", **kwargs: Any) -> Running:
        running = Running(list(args), tmp_path / f"{name}{len(processes)}", **kwargs)
        processes.append(running)
        return running

    yield start
    for running in reversed(processes):
        running.close()


def zerogate(started: Callable[..., Running], *args: str, **kwargs: Any) -> Running:
    return started(sys.executable, "-m", "gateway.cli", *args, name="zerogate", **kwargs)


def run_zerogate(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=STARTUP,
        cwd=cwd,
        env=env,
        check=False,
    )


@pytest.fixture
def backend(started: Callable[..., Running]) -> Running:
    running = started(sys.executable, "-c", BACKEND, name="backend")
    running.wait_for(lambda: running.stdout.startswith("tcp://"), "the backend's endpoint")
    return running


def endpoint_of(backend: Running) -> str:
    return backend.stdout.splitlines()[0]


def write_config(tmp_path: Path, backend: Running, grace: float = 5) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway:\n"
        f"  shutdown_grace: {grace}\n"
        "services:\n"
        "  svc:\n"
        f"    endpoints: [{endpoint_of(backend)}]\n",
        encoding="utf-8",
    )
    return path


def serving_port(server: Running) -> int:
    match = server.wait_for(lambda: SERVING.search(server.stderr), "the 'serving on' line")
    return int(match[1])


def wait_healthy(base: str, server: Running) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    server.wait_for(healthy, "a 200 from /healthz")


# -- refusing to start ---------------------------------------------------------------------


def test_a_bad_config_exits_2_with_every_problem_named_by_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("gateway:\n  prot: 80\n  shutdown_grace: -1\n", encoding="utf-8")
    done = run_zerogate("serve", "-c", str(path), "--port", "0")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{path} line 2: gateway.prot: unknown key (did you mean 'port'?)",
        f"{path} line 3: gateway.shutdown_grace: expected a number of seconds >= 0, got -1",
    ]
    assert done.stdout == ""


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    done = run_zerogate("serve", "-c", str(tmp_path / "nowhere.yaml"))
    assert (done.returncode, done.stderr) == (
        2,
        f"{tmp_path / 'nowhere.yaml'}: no such config file\n",
    )


@pytest.mark.parametrize("where", ["env", "cwd"])
def test_the_default_config_is_zerogate_config_then_zerogate_yaml(
    tmp_path: Path, where: str
) -> None:
    # A broken file shows which one was read, without starting anything.
    env = {k: v for k, v in os.environ.items() if k != "ZEROGATE_CONFIG"}
    if where == "env":
        path = tmp_path / "from-env.yaml"
        env["ZEROGATE_CONFIG"] = str(path)
    else:
        path = tmp_path / "zerogate.yaml"
    path.write_text("gateway: {port: http}\n", encoding="utf-8")
    done = run_zerogate("serve", cwd=tmp_path, env=env)
    assert done.returncode == 2
    name = str(path) if where == "env" else "zerogate.yaml"
    assert done.stderr == (
        f"{name} line 1: gateway.port: expected an integer from 0 to 65535, got 'http'\n"
    )


def test_a_taken_port_exits_2_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "zerogate.yaml"
    path.write_text("gateway: {}\n", encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_zerogate("serve", "-c", str(path), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr == (
        f"zerogate serve: cannot listen on 127.0.0.1:{port}: address already in use\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "argument --workers: expected an integer >= 1, got 0"),
        (["--port", "65536"], "argument --port: expected a port from 0 to 65535, got 65536"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    done = run_zerogate("serve", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_help_imports_neither_gevent_nor_the_server() -> None:
    code = (
        "import sys\n"
        "from gateway.cli import main\n"
        "try:\n"
        "    main(['serve', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('gevent', 'uvicorn', 'gateway.serve') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=STARTUP, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "command",
    [[], ["demo"], ["serve"], ["rpc"], ["token"], ["keys"], ["collector"], ["hub"], ["openapi"]],
)
def test_help_is_plain_text(command: list[str]) -> None:
    """What a user reads in a terminal: no markup of our docstrings (``code``) leaks into it."""
    done = run_zerogate(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: zerogate" in done.stdout
    assert "``" not in done.stdout, done.stdout


# -- serving -------------------------------------------------------------------------------


def test_serves_calls_and_writes_json_access_lines_to_stdout(
    tmp_path: Path, started: Callable[..., Running], backend: Running
) -> None:
    server = zerogate(started, "serve", "-c", str(write_config(tmp_path, backend)), "--port", "0")
    base = f"http://127.0.0.1:{serving_port(server)}"
    wait_healthy(base, server)
    answer = httpx.post(f"{base}/rpc/svc/add", json=[1, 2], timeout=10)
    assert (answer.status_code, answer.json()) == (200, 3)

    def access_lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in server.stdout.splitlines()]

    lines = server.wait_for(
        lambda: [line for line in access_lines() if line.get("path") == "/rpc/svc/add"],
        "the access line of the call",
    )
    assert lines[0]["status"] == 200
    assert "/rpc/svc/add" not in server.stderr  # access lines only on stdout
    assert server.signal(signal.SIGTERM) == 0


def test_host_and_port_options_override_the_config(
    tmp_path: Path, started: Callable[..., Running], backend: Running
) -> None:
    path = write_config(tmp_path, backend)  # gateway.host and port left at 127.0.0.1:8080
    port = free_port()
    server = zerogate(started, "serve", "-c", str(path), "--host", "127.0.0.1", "--port", str(port))
    assert serving_port(server) == port
    wait_healthy(f"http://127.0.0.1:{port}", server)
    assert server.signal(signal.SIGINT) == 0


def test_two_workers_answer_and_stop_on_sigterm(
    tmp_path: Path, started: Callable[..., Running], backend: Running
) -> None:
    server = zerogate(
        started,
        "serve",
        "-c",
        str(write_config(tmp_path, backend)),
        "--port",
        "0",
        "--workers",
        "2",
    )
    base = f"http://127.0.0.1:{serving_port(server)}"
    wait_healthy(base, server)
    # Each worker logs its PID once its app has started (uvicorn's "Started server process").
    workers = server.wait_for(
        lambda: (
            set(map(int, STARTED.findall(server.stderr)))
            if server.stderr.count("Application startup complete") == 2
            else None
        ),
        "two started workers",
    )
    assert len(workers) == 2
    started_processes = descendants(server.pid)  # the workers, and multiprocessing's helper
    assert workers <= set(started_processes)
    for _ in range(10):  # fresh connections, so both workers may take some
        answer = httpx.post(f"{base}/rpc/svc/add", json=[2, 3], timeout=10)
        assert (answer.status_code, answer.json()) == (200, 5)
    assert server.signal(signal.SIGTERM) == 0
    assert wait_gone(started_processes) == []


# -- stopping ------------------------------------------------------------------------------


class SlowCall(threading.Thread):
    """POST /rpc/svc/slow in a thread; ``answer`` or ``error`` once it ends."""

    def __init__(self, base: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.url, self.seconds = f"{base}/rpc/svc/slow", seconds
        self.answer: httpx.Response | None = None
        self.error: Exception | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            self.answer = httpx.post(self.url, json=[self.seconds], timeout=STARTUP)
        except httpx.HTTPError as exc:
            self.error = exc
        self.ended_at = time.monotonic()


def start_slow_call(base: str, backend: Running, seconds: float) -> SlowCall:
    call = SlowCall(base, seconds)
    call.start()
    backend.wait_for(lambda: f"slow {seconds}" in backend.stdout, "the slow call to start")
    return call


def test_sigterm_lets_a_call_in_flight_finish(
    tmp_path: Path, started: Callable[..., Running], backend: Running
) -> None:
    server = zerogate(
        started, "serve", "-c", str(write_config(tmp_path, backend, grace=10)), "--port", "0"
    )
    base = f"http://127.0.0.1:{serving_port(server)}"
    wait_healthy(base, server)
    call = start_slow_call(base, backend, 1.5)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(STOP) == 0
    exited_at = time.monotonic()
    call.join(STOP)
    assert call.error is None
    assert call.answer is not None
    assert (call.answer.status_code, call.answer.json()) == (200, 1.5)
    assert call.ended_at <= exited_at  # the answer came before the process ended
    with pytest.raises(httpx.ConnectError):  # and nothing listens any more
        httpx.get(f"{base}/healthz", timeout=2)


def test_without_grace_sigterm_cuts_the_call_and_exits_at_once(
    tmp_path: Path, started: Callable[..., Running], backend: Running
) -> None:
    server = zerogate(
        started, "serve", "-c", str(write_config(tmp_path, backend, grace=0)), "--port", "0"
    )
    base = f"http://127.0.0.1:{serving_port(server)}"
    wait_healthy(base, server)
    call = start_slow_call(base, backend, 10.0)
    signalled = time.monotonic()
    assert server.signal(signal.SIGTERM) == 0
    assert time.monotonic() - signalled < 5.0  # it did not wait for the 10 s call
    call.join(STOP)
    assert call.error is not None or (call.answer is not None and call.answer.status_code >= 500)
