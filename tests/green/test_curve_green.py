"""CurveZMQ on the gevent driver, over loopback TCP: calls and streams with keys, clients that
cannot call (no keys, a wrong server key, a key not authorized) while good ones keep calling,
zerorpc 0.6.3 (no CURVE) refused by a CURVE server, and ``zerogate rpc``'s CURVE flags end to
end in child processes, with keys from ``zerogate keys --out``.

The asyncio twin (and the key, key-file and ZAP tables) is tests/aio/test_curve.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import monotonic
from types import ModuleType
from typing import TYPE_CHECKING, Any

import gevent
import gevent.subprocess
import pytest

from gateway.rpc_command import KEY_OPTIONS, KEY_WORD_LENGTH, attach_dashed_keys, build_parser
from rpccore import CurveClientKeys, CurveServerKeys, TimeoutExpired, curve_keypair, load_key
from rpccore._curve import zap_handlers
from rpccore.green import Client, Server, stream

if TYPE_CHECKING:
    from conftest import GreenChildProcesses

pytestmark = pytest.mark.usefixtures("green_test_timeout")


def dashed_keypair(which: int) -> tuple[str, str]:
    """A key pair whose public (``which=0``) or secret (1) key begins with "-", as 1 in 85 do."""
    for _ in range(10_000):
        pair = curve_keypair()
        if pair[which].startswith("-"):
            return pair
    raise AssertionError("no key beginning with '-' in 10,000 pairs")


SERVER_PUBLIC, SERVER_SECRET = curve_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = curve_keypair()
OTHER_PUBLIC, OTHER_SECRET = curve_keypair()
DASHED_SERVER_PUBLIC, DASHED_SERVER_SECRET = dashed_keypair(0)
DASHED_CLIENT_PUBLIC, DASHED_CLIENT_SECRET = dashed_keypair(0)
DASHED_SECRET = dashed_keypair(1)[1]
HB = 0.2
BAD_CALL_TIMEOUT = 0.5  # a client that cannot handshake times out this soon...
QUIET = 30.0  # ...because its heartbeat is far slower (LostRemote would come first)
SLACK = 1.0
ZEROGATE_RPC = [sys.executable, "-m", "gateway.cli", "rpc"]
ZEROGATE_KEYS = [sys.executable, "-m", "gateway.keys_command"]
RUN_TIMEOUT = 20.0


class Calc:
    def add(self, a: int, b: int) -> int:
        return a + b

    @stream
    def count(self, n: int) -> Any:
        return range(n)

    def slow(self, seconds: float) -> float:
        gevent.sleep(seconds)
        return seconds


@pytest.fixture(autouse=True)
def no_zap_handler_left() -> Iterator[None]:
    yield
    assert zap_handlers() == 0, "a ZAP handler outlived its servers"


@contextmanager
def curve_server(
    authorized: list[str] | None = None, **options: Any
) -> Iterator[tuple[Server, str]]:
    server = Server(
        Calc(),
        heartbeat=HB,
        curve=CurveServerKeys(secret_key=SERVER_SECRET, authorized_clients=authorized),
        **options,
    )
    try:
        endpoint = server.bind("tcp://127.0.0.1:*")[0]
        server.start()
        yield server, endpoint
    finally:
        server.stop()


@contextmanager
def client(endpoint: str, keys: CurveClientKeys | None, **options: Any) -> Iterator[Client]:
    options.setdefault("heartbeat", HB)
    options.setdefault("timeout", 10.0)
    peer = Client(endpoint, curve=keys, **options)
    try:
        yield peer
    finally:
        peer.close()


def keys(secret: str | None = CLIENT_SECRET, server: str = SERVER_PUBLIC) -> CurveClientKeys:
    return CurveClientKeys(server_key=server, secret_key=secret)


# -- the gevent driver ---------------------------------------------------------------------


@pytest.mark.parametrize("threaded", [False, True])
def test_calls_and_streams_with_an_allow_list(threaded: bool) -> None:
    with (
        curve_server([CLIENT_PUBLIC], threaded=threaded) as (_, endpoint),
        client(endpoint, keys()) as good,
    ):
        assert good.add(1, 2) == 3
        assert list(good.count(5)) == [0, 1, 2, 3, 4]
        future = good.call("add", 2, 2, async_=True)
        assert future.get(timeout=5) == 4
        assert good.curve_failure is None


@pytest.mark.parametrize(
    ("bad_keys", "explained", "server_kind"),
    [
        (None, None, "curve_mismatch"),
        (keys(server=OTHER_PUBLIC), "is server_key its public key?", "curve_wrong_key"),
        (keys(OTHER_SECRET), "refused this client's public key", "curve_refused"),
    ],
    ids=["no keys", "wrong server key", "not authorized"],
)
def test_a_client_without_the_right_keys_cannot_call(
    bad_keys: CurveClientKeys | None, explained: str | None, server_kind: str
) -> None:
    with curve_server([CLIENT_PUBLIC]) as (server, endpoint), client(endpoint, keys()) as good:
        assert good.add(1, 1) == 2
        with client(endpoint, bad_keys, timeout=BAD_CALL_TIMEOUT, heartbeat=QUIET) as bad:
            started = monotonic()
            with pytest.raises(TimeoutExpired) as caught:
                bad.add(1, 2)
            assert monotonic() - started < BAD_CALL_TIMEOUT + SLACK
            if explained is None:
                assert "CURVE" not in str(caught.value)
            else:
                assert explained in str(caught.value)
                assert explained in (bad.curve_failure or "")
        # The server is none the worse.
        assert good.add(2, 3) == 5
        assert list(good.count(3)) == [0, 1, 2]
        deadline = monotonic() + 2.0
        while not server.problems.get(server_kind):
            assert monotonic() < deadline, server.problems
            gevent.sleep(0.01)


def test_without_an_allow_list_any_client_with_the_server_key_calls() -> None:
    with curve_server() as (_, endpoint), client(endpoint, keys(OTHER_SECRET)) as other:
        assert other.add(1, 2) == 3
        with client(endpoint, CurveClientKeys(server_key=SERVER_PUBLIC)) as fresh:
            assert fresh.add(3, 4) == 7


# -- zerorpc 0.6.3 has no CURVE: a CURVE server refuses it --------------------------------


def _interop_support() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "interop" / "interop_support.py"
    module = sys.modules.get("interop_support")
    if module is None:
        spec = importlib.util.spec_from_file_location("interop_support", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def test_a_zerorpc_client_cannot_call_a_curve_server(
    green_child_processes: GreenChildProcesses,
) -> None:
    support = _interop_support()
    with curve_server() as (server, endpoint):
        proc = green_child_processes.spawn(
            support.zerorpc_client_argv(
                endpoint, "timeout", "0.01", "1.0", heartbeat=support.QUIET_HEARTBEAT
            ),
            name="zrpc_client-curve",
        )
        stdout, _ = proc.communicate(timeout=support.CHILD_RUN_TIMEOUT)
        assert proc.returncode == 0, green_child_processes.stderr(proc)
        outcome = support.parse_client_output(stdout)
        assert outcome["type"] == "TimeoutExpired", outcome
        # libzmq names the failure by how far the handshake got: a mechanism mismatch, or,
        # when the client gave up first on a loaded machine, a broken handshake.
        refused = server.problems.get("curve_mismatch", 0) + server.problems.get(
            "curve_handshake", 0
        )
        assert refused >= 1, server.problems


# -- zerogate rpc and zerogate keys, as users run them ------------------------------------


def run(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return gevent.subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def wait_for(children: GreenChildProcesses, proc: Any, pattern: str) -> re.Match[str]:
    deadline = monotonic() + 15.0
    while (found := re.search(pattern, children.stderr(proc, limit=100_000))) is None:
        if proc.poll() is not None or monotonic() > deadline:
            raise AssertionError(f"no {pattern!r}: {children.stderr(proc)}")
        gevent.sleep(0.02)
    return found


@pytest.fixture
def key_files(tmp_path: Path) -> dict[str, Path]:
    """`zerogate keys --out` for a server and a client: PREFIX.key and PREFIX.pub each."""
    files = {}
    for name in ("server", "client"):
        done = run([*ZEROGATE_KEYS, "--out", str(tmp_path / name)])
        assert done.returncode == 0, done.stderr
        files[f"{name}.key"] = tmp_path / f"{name}.key"
        files[f"{name}.pub"] = tmp_path / f"{name}.pub"
    return files


def serve_with_curve(
    children: GreenChildProcesses, files: dict[str, Path], *extra: str
) -> tuple[Any, str]:
    proc = children.spawn(
        [
            *ZEROGATE_RPC,
            "--server",
            "--curve-secret-key",
            f"file:{files['server.key']}",
            "--curve-authorized",
            f"file:{files['client.pub']}",
            *extra,
            "--bind",
            "tcp://127.0.0.1:*",
        ],
        name="rpc-server",
    )
    endpoint = wait_for(children, proc, r'bound to "(tcp://[^"]+)"').group(1)
    wait_for(children, proc, r"serving ")
    return proc, endpoint


def test_zerogate_rpc_curve_flags_end_to_end(
    green_child_processes: GreenChildProcesses, key_files: dict[str, Path]
) -> None:
    proc, endpoint = serve_with_curve(green_child_processes, key_files, "urllib.parse")
    assert (
        'serving "urllib.parse" with CurveZMQ, 1 client key authorized'
        in green_child_processes.stderr(proc)
    )
    client_secret = load_key(f"file:{key_files['client.key']}", kind="secret", what="test")
    env = {**os.environ, "ZG_TEST_CLIENT_KEY": client_secret}
    server_pub = f"file:{key_files['server.pub']}"

    # The authorized client, its secret from the environment.
    done = run(
        [
            *ZEROGATE_RPC,
            "--curve-server-key",
            server_pub,
            "--curve-secret-key",
            "env:ZG_TEST_CLIENT_KEY",
            endpoint,
            "quote",
            "hello pycon",
        ],
        env=env,
    )
    assert (done.returncode, done.stdout) == (0, "'hello%20pycon'\n"), done.stderr

    # The server's secret certificate also holds its public key: a client can read it.
    done = run(
        [
            *ZEROGATE_RPC,
            "--curve-server-key",
            f"file:{key_files['server.key']}",
            "--curve-secret-key",
            f"file:{key_files['client.key']}",
            endpoint,
            "quote_plus",
            "a b",
        ]
    )
    assert (done.returncode, done.stdout) == (0, "'a+b'\n"), done.stderr

    # A client with the server's key but its own new pair is not authorized.
    done = run(
        [*ZEROGATE_RPC, "--timeout", "1", "--curve-server-key", server_pub, endpoint, "quote", "x"]
    )
    assert done.returncode == 2
    assert "timed out" in done.stderr
    assert "the CURVE handshake failed: the server refused this client's public key" in (
        done.stderr
    )

    # A client without keys times out.
    done = run([*ZEROGATE_RPC, "--timeout", "1", endpoint, "quote", "x"])
    assert done.returncode == 2
    assert "timed out" in done.stderr

    # The server still serves its authorized client.
    done = run(
        [
            *ZEROGATE_RPC,
            "--curve-server-key",
            server_pub,
            "--curve-secret-key",
            f"file:{key_files['client.key']}",
            endpoint,
            "quote",
            "again",
        ]
    )
    assert (done.returncode, done.stdout) == (0, "'again'\n"), done.stderr
    assert client_secret not in green_child_processes.stderr(proc, limit=100_000)


def test_zerogate_rpc_push_to_a_curve_puller(
    green_child_processes: GreenChildProcesses, key_files: dict[str, Path]
) -> None:
    proc, endpoint = serve_with_curve(green_child_processes, key_files, "--pull", "urllib.parse")
    done = run(
        [
            *ZEROGATE_RPC,
            "--push",
            "--curve-server-key",
            f"file:{key_files['server.pub']}",
            "--curve-secret-key",
            f"file:{key_files['client.key']}",
            "--connect",
            endpoint,
            "quote",
            "x",
        ]
    )
    assert done.returncode == 0, done.stderr
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert "stopped: 1 events handled" in green_child_processes.stderr(proc)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--curve-server-key", SERVER_PUBLIC, "--curve-secret-key", CLIENT_SECRET],
            "--curve-secret-key takes file:PATH or env:NAME",
        ),
        (
            ["--curve-server-key", SERVER_PUBLIC, "--curve-secret-key", DASHED_SECRET],
            "--curve-secret-key takes file:PATH or env:NAME",
        ),
        (
            ["--server", "--curve-server-key", SERVER_PUBLIC, "urllib.parse"],
            "--curve-server-key is the server's public key, for clients",
        ),
        (
            ["--server", "--curve-authorized", CLIENT_PUBLIC, "urllib.parse"],
            "--curve-authorized needs --curve-secret-key",
        ),
        (["--curve-authorized", CLIENT_PUBLIC], "--curve-authorized is for --server"),
        (["--curve-secret-key", "env:X"], "--curve-secret-key needs --curve-server-key"),
        (
            ["--curve-server-key", "file:/nonexistent/server.pub"],
            "--curve-server-key: cannot read the key file /nonexistent/server.pub",
        ),
        (
            ["--curve-server-key", SERVER_PUBLIC[:-1]],
            "--curve-server-key: expected a Z85 key of 40 characters, got 39",
        ),
        (
            ["--curve-server-key", DASHED_SERVER_PUBLIC[:-1]],
            "--curve-server-key: expected a Z85 key of 40 characters, got 39",
        ),
        (
            ["--curve-server-key", SERVER_PUBLIC, "--curve-secret-key", "env:ZG_UNSET_KEY_X"],
            "--curve-secret-key: the environment variable ZG_UNSET_KEY_X is not set",
        ),
    ],
)
def test_zerogate_rpc_curve_usage_errors(argv: list[str], message: str) -> None:
    done = run([*ZEROGATE_RPC, *argv, "tcp://127.0.0.1:1", "quote", "x"])
    assert done.returncode == 2
    assert message in done.stderr
    for secret in (CLIENT_SECRET, DASHED_SECRET):
        assert secret not in done.stderr + done.stdout


def test_zerogate_rpc_takes_keys_that_begin_with_a_dash(
    green_child_processes: GreenChildProcesses, tmp_path: Path
) -> None:
    """One Z85 key in 85 begins with "-", which argparse alone would take for an option."""
    secrets = {"server.key": DASHED_SERVER_SECRET, "client.key": DASHED_CLIENT_SECRET}
    for name, secret in secrets.items():
        (tmp_path / name).write_text(secret + "\n")
    proc = green_child_processes.spawn(
        [
            *ZEROGATE_RPC,
            "--server",
            "--curve-secret-key",
            f"file:{tmp_path / 'server.key'}",
            "--curve-authorized",
            DASHED_CLIENT_PUBLIC,
            "--bind",
            "tcp://127.0.0.1:*",
            "urllib.parse",
        ],
        name="rpc-server",
    )
    endpoint = wait_for(green_child_processes, proc, r'bound to "(tcp://[^"]+)"').group(1)
    wait_for(green_child_processes, proc, r"1 client key authorized")
    done = run(
        [
            *ZEROGATE_RPC,
            "--curve-server-key",
            DASHED_SERVER_PUBLIC,
            "--curve-secret-key",
            f"file:{tmp_path / 'client.key'}",
            endpoint,
            "quote",
            "a b",
        ]
    )
    assert (done.returncode, done.stdout) == (0, "'a%20b'\n"), done.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--curve-server-key", "-" * 40, "x"], ["--curve-server-key=" + "-" * 40, "x"]),
        (["--curve-authorized", "-" * 40], ["--curve-authorized=" + "-" * 40]),
        (["--curve-serv", "-" * 40], ["--curve-serv=" + "-" * 40]),  # argparse's short form
        (["--curve-s", "-" * 40], ["--curve-s", "-" * 40]),  # ambiguous: argparse says so
        # Not a key: argparse keeps its own reading and its own errors.
        (["--curve-server-key", "--server"], ["--curve-server-key", "--server"]),
        (["--curve-server-key", "-" * 39], ["--curve-server-key=" + "-" * 39]),  # a typo
        (["--curve-server-key", "-" * 19], ["--curve-server-key", "-" * 19]),
        (["--curve-server-key"], ["--curve-server-key"]),
        (["--timeout", "-" * 40], ["--timeout", "-" * 40]),
        # After "--" every word is a parameter.
        (["a", "--", "--curve-server-key", "-" * 40], ["a", "--", "--curve-server-key", "-" * 40]),
    ],
)
def test_attach_dashed_keys(argv: list[str], expected: list[str]) -> None:
    assert attach_dashed_keys(argv) == expected


def test_no_option_is_as_long_as_a_joined_key() -> None:
    """What attach_dashed_keys relies on: a word that long after a key option is no option,
    KEY_OPTIONS are the parser's, and only they begin with "--cu" (their shortened forms)."""
    options = [name for action in build_parser()._actions for name in action.option_strings]
    assert "--curve-server-key" in options
    assert max(map(len, options)) < KEY_WORD_LENGTH
    assert {name for name in options if name.startswith("--cu")} == set(KEY_OPTIONS)


def test_zerogate_rpc_help_documents_the_curve_flags() -> None:
    done = run([*ZEROGATE_RPC, "--help"])
    assert done.returncode == 0
    for flag in ("--curve-server-key", "--curve-secret-key", "--curve-authorized"):
        assert flag in done.stdout
