"""Service names on the gevent driver: a green Client created by name through a naming
file, and ``zerogate rpc --names FILE calc add 1 2`` (a child process, bounded in time and
SIGKILLed by PID at teardown by ``green_child_processes``) against a green server served
by this test process, all on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
import pytest
import zmq.green

from rpccore._naming import ENV_VAR, NamingError
from rpccore.green import Client, Server

if TYPE_CHECKING:
    from conftest import GreenChildProcesses

pytestmark = pytest.mark.usefixtures("green_test_timeout")

LOOPBACK = "tcp://127.0.0.1:*"
HB = 0.5
CLI_TIMEOUT = 20.0
ZEROGATE_RPC = [sys.executable, "-m", "gateway.cli", "rpc"]


class Calc:
    def __init__(self, ident: str = "calc") -> None:
        self.ident = ident

    def add(self, a: int, b: int) -> int:
        return a + b

    def who(self) -> str:
        return self.ident


@pytest.fixture(autouse=True)
def tidy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No $ZEROGATE_NAMES from outside, and every socket a test opens is closed."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    context = zmq.green.Context.instance()
    before = set(context._sockets)
    yield
    left = [sock for sock in context._sockets if sock not in before and not sock.closed]
    assert not left, f"{len(left)} socket(s) left open by the test"


@pytest.fixture
def servers() -> Iterator[list[str]]:
    """Two started green servers (``who()`` is "a" and "b"); their endpoints."""
    started = [Server(Calc(ident), heartbeat=HB) for ident in ("a", "b")]
    try:
        endpoints = [server.bind(LOOPBACK)[0] for server in started]
        for server in started:
            server.start()
        yield endpoints
    finally:
        for server in started:
            server.stop()


def naming_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "names.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_client_by_name(tmp_path: Path, servers: list[str]) -> None:
    names = naming_file(tmp_path, f"other: tcp://127.0.0.1:1\ncalc: [{servers[0]}]\n")
    client = Client("calc", names=names, heartbeat=HB, timeout=10)
    try:
        assert client.add(1, 2) == 3
        assert client.who() == "a"
    finally:
        client.close()


def test_client_by_name_through_env_var(
    tmp_path: Path, servers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(naming_file(tmp_path, f"calc: {servers[1]}\n")))
    client = Client("calc", heartbeat=HB, timeout=10)
    try:
        assert client.who() == "b"
    finally:
        client.close()


def test_name_with_several_endpoints_connects_to_all(tmp_path: Path, servers: list[str]) -> None:
    names = naming_file(tmp_path, f"calc: [{servers[0]}, {servers[1]}]\n")
    client = Client("calc", names=names, heartbeat=HB, timeout=10)
    try:
        assert {client.who() for _ in range(4)} == {"a", "b"}  # DEALER deals round-robin
    finally:
        client.close()


def test_naming_errors_open_no_socket(tmp_path: Path) -> None:
    names = naming_file(tmp_path, "calc: tcp://127.0.0.1:1\n")
    with pytest.raises(NamingError, match="no service named 'nope'"):
        Client("nope", names=names)
    with pytest.raises(NamingError, match="no naming file"):
        Client("calc")
    with pytest.raises(NamingError, match="no such naming file"):
        Client("calc", names=tmp_path / "missing.yml")


# -- zerogate rpc --names -----------------------------------------------------------------


def run_cli(children: GreenChildProcesses, *argv: str) -> tuple[int, str, str]:
    """Run ``zerogate rpc ARGV`` in a child process; (exit code, stdout, stderr)."""
    proc = children.spawn([*ZEROGATE_RPC, *argv], name="zerogate-rpc")
    with gevent.Timeout(CLI_TIMEOUT, AssertionError(f"pid {proc.pid} ran too long")):
        out: Any = proc.stdout.read()
        code = proc.wait()
    return code, out.decode(), children.stderr(proc)


def test_cli_calls_by_name(
    tmp_path: Path, servers: list[str], green_child_processes: GreenChildProcesses
) -> None:
    names = naming_file(tmp_path, f"calc: [{servers[0]}]\n")
    code, out, err = run_cli(green_child_processes, "--names", str(names), "calc", "add", "1", "2")
    assert (code, out) == (0, "3\n"), err
    assert f'connecting to "{servers[0]}"' in err


def test_cli_names_from_env_var_and_connect_option(
    tmp_path: Path,
    servers: list[str],
    green_child_processes: GreenChildProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_VAR, str(naming_file(tmp_path, f"calc: {servers[1]}\n")))
    code, out, err = run_cli(green_child_processes, "--connect", "calc", "who")
    assert (code, out) == (0, "'b'\n"), err


@pytest.mark.parametrize(
    ("names", "argv", "message"),
    [
        ("calc: tcp://127.0.0.1:1\n", ["nope", "add"], "no service named 'nope' (names: calc)"),
        (
            "other: tcp://127.0.0.1:1\ncalc: [tcp://127.0.0.1:1, oops]\n",
            ["calc", "add"],
            "names.yml line 2: 'calc': 'oops' is not a ZeroMQ endpoint",
        ),
        ("calc: [tcp://127.0.0.1:1\n", ["calc", "add"], "names.yml line 2: malformed YAML"),
        (
            "calc: tcp://127.0.0.1:1\n",
            ["--server", "--bind", "nope", "urllib.parse"],
            'cannot bind to "nope": ',
        ),
    ],
)
def test_cli_naming_errors_exit_2_with_one_line(
    tmp_path: Path,
    green_child_processes: GreenChildProcesses,
    names: str,
    argv: list[str],
    message: str,
) -> None:
    path = naming_file(tmp_path, names)
    code, out, err = run_cli(green_child_processes, "--names", str(path), *argv)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("zerogate rpc: ")
    assert message in lines[0]


def test_cli_name_without_naming_file(green_child_processes: GreenChildProcesses) -> None:
    code, _, err = run_cli(green_child_processes, "calc", "add", "1", "2")
    assert code == 2
    assert err.splitlines() == [
        "zerogate rpc: cannot connect to \"calc\": 'calc' is not an endpoint (tcp://host:port, "
        "ipc://path or inproc://name) and there is no naming file to look it up in (none "
        "given, and $ZEROGATE_NAMES is not set)"
    ]
