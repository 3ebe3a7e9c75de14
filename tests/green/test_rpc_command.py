"""``zerogate rpc``, run as a user runs it: real processes on 127.0.0.1.

Servers are ``zerogate rpc --server`` processes (``urllib.parse`` and the ``Toolbox`` of
rpc_cli_service.py, served from this directory) and a real zerorpc 0.6.3 server; every
client is a ``python -m gateway.cli rpc ...`` process, bounded by a timeout. Every child
still running at teardown is SIGKILLed by PID. The pure formatting helpers
(gateway.rpc_format) are unit-tested at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

import gevent
import gevent.subprocess
import pytest
from loopback import free_port

from gateway import rpc_format

HERE = Path(__file__).resolve().parent
ZEROGATE_RPC = [sys.executable, "-m", "gateway.cli", "rpc"]
# The Toolbox server beats every second, so its clients must too (--heartbeat 1).
HB = ["--heartbeat", "1"]
STARTUP_TIMEOUT = 15.0
CALL_TIMEOUT = 20.0

pytestmark = pytest.mark.usefixtures("green_test_timeout")


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float


def rpc(*argv: str, timeout: float = CALL_TIMEOUT, cwd: Path | None = None) -> Run:
    """Run ``zerogate rpc ARGV`` to completion (killed if it outlives ``timeout``)."""
    start = monotonic()
    done = gevent.subprocess.run(
        [*ZEROGATE_RPC, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    return Run(done.returncode, done.stdout, done.stderr, monotonic() - start)


class Children:
    """Long-running child processes; stderr goes to a file, killed by PID at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Any] = []

    def spawn(self, argv: list[str], *, cwd: Path | None = None, stdout: Any = None) -> Any:
        log = self.log_dir / f"child-{len(self.procs)}.stderr"
        with log.open("wb") as stderr:
            proc = gevent.subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
            )
        proc.log = log
        self.procs.append(proc)
        return proc

    @staticmethod
    def stderr(proc: Any) -> str:
        return str(proc.log.read_text(errors="replace"))

    def wait_for(self, proc: Any, pattern: str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        deadline = monotonic() + timeout
        while (found := re.search(pattern, self.stderr(proc))) is None:
            if proc.poll() is not None or monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} from pid {proc.pid}: {self.stderr(proc)}")
            gevent.sleep(0.02)
        return found

    def serve(self, *argv: str, cwd: Path | None = None) -> tuple[Any, str]:
        """Start ``zerogate rpc --server ARGV --bind tcp://127.0.0.1:*``; (proc, endpoint)."""
        proc = self.spawn(
            [*ZEROGATE_RPC, "--server", *argv, "--bind", "tcp://127.0.0.1:*"], cwd=cwd
        )
        endpoint = self.wait_for(proc, r'bound to "(tcp://[^"]+)"').group(1)
        self.wait_for(proc, r"serving ")
        return proc, endpoint

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Children]:
    children = Children(tmp_path_factory.mktemp("rpc-cli"))
    try:
        yield children
    finally:
        children.kill_all()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    procs = Children(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


@pytest.fixture(scope="module")
def urllib_server(servers: Children) -> tuple[Any, str]:
    return servers.serve("urllib.parse")


@pytest.fixture(scope="module")
def toolbox(servers: Children) -> str:
    """The Toolbox served from this directory (the current directory is importable)."""
    _, endpoint = servers.serve(
        "--threaded", "--name", "toolbox", *HB, "rpc_cli_service:Toolbox", cwd=HERE
    )
    return endpoint


LEGACY_SERVER = """
import sys, zmq, zerorpc
sys.path.insert(0, {here!r})
from rpc_cli_service import Legacy
server = zerorpc.Server(Legacy())
server.bind("tcp://127.0.0.1:*")
endpoint = server._events._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
print(f'bound to "{{endpoint}}"', file=sys.stderr, flush=True)
server.run()
"""


@pytest.fixture(scope="module")
def legacy(servers: Children) -> str:
    """A real zerorpc 0.6.3 server (its _zerorpc_inspect fails on Python >= 3.11)."""
    proc = servers.spawn([sys.executable, "-c", LEGACY_SERVER.format(here=str(HERE))])
    return servers.wait_for(proc, r'bound to "(tcp://[^"]+)"').group(1)


def listed(out: str) -> dict[str, str]:
    """A listing's lines after ``[service]``, as {name: the rest}, checking alignment."""
    lines = out.splitlines()[1:]
    columns = {len(line) - len(line.split(" ", 1)[1].lstrip()) for line in lines}
    assert len(columns) == 1, out  # every summary starts in the same column
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1].strip() for line in lines}


# -- serving and calling a module ------------------------------------------------------


def test_serve_a_module_list_and_call(urllib_server: tuple[Any, str], servers: Children) -> None:
    proc, endpoint = urllib_server
    progress = servers.stderr(proc)
    assert progress.startswith('binding to "tcp://127.0.0.1:*"\nbound to "tcp://127.0.0.1:')
    assert 'serving "urllib.parse"' in progress

    run = rpc(endpoint)
    assert run.code == 0, run.err
    assert run.out.startswith("[urllib.parse]\n")
    methods = listed(run.out)
    assert methods["quote"] == "quote('abc def') -> 'abc%20def'"
    assert {"quote_plus", "urlsplit", "urlencode"} <= set(methods)
    assert run.err == f'connecting to "{endpoint}"\n'

    run = rpc(endpoint, "quote", "hello pycon")
    assert (run.code, run.out) == (0, "'hello%20pycon'\n"), run.err


@pytest.mark.parametrize(
    "argv", [["quote_plus", "-?"], ["-?", "quote_plus"], ["--inspect", "quote_plus"]]
)
def test_inspect_one_method_of_a_module(urllib_server: tuple[Any, str], argv: list[str]) -> None:
    run = rpc(urllib_server[1], *argv)
    assert run.code == 0, run.err
    assert run.out.startswith(
        "[urllib.parse]\nquote_plus(string, safe='', encoding=None, errors=None)\n\n"
        "Like quote(), but also replace ' ' with '+', as required for quoting\nHTML form"
    )


# -- the Toolbox: arguments, output formats, streams, errors --------------------------


def test_listing_uses_docs_else_signatures(toolbox: str) -> None:
    run = rpc(toolbox, *HB)
    assert run.code == 0, run.err
    assert run.out.startswith("[toolbox]\n")
    methods = listed(run.out)
    assert methods["add"] == "Add two integers."
    assert methods["echo"] == "echo(value)"  # no docstring: its signature
    assert methods["count"] == "Stream the integers 0 .. n-1."
    assert list(methods) == sorted(methods)


@pytest.mark.parametrize(
    ("params", "received"),
    [
        (["1"], ["int", "1"]),
        (["-1.5"], ["float", "-1.5"]),
        (['{"a": [1, null, true]}'], ["dict", "{'a': [1, None, True]}"]),
        (['"42"'], ["str", "'42'"]),
        (["hello pycon"], ["str", "'hello pycon'"]),
        (["NaN"], ["str", "'NaN'"]),  # Python's json would say nan; it is not JSON
        (["--raw", "1"], ["str", "'1'"]),
        (["--raw", "null"], ["str", "'null'"]),
        (["--", "-x"], ["str", "'-x'"]),
    ],
)
def test_parameters_are_json_when_valid_json(
    toolbox: str, params: list[str], received: list[str]
) -> None:
    run = rpc(toolbox, *HB, "kinds", *params)
    assert run.code == 0, run.err
    assert run.out == f"{received!r}\n"


def test_options_may_come_anywhere_and_connect_takes_the_address(toolbox: str) -> None:
    assert rpc(toolbox, "greet", *HB, "World", "Hi").out == "'Hi, World!'\n"
    run = rpc("--connect", toolbox, *HB, "greet", "World", "Hi", "?")
    assert (run.code, run.out) == (0, "'Hi, World!?'\n"), run.err
    assert rpc("-j", toolbox, *HB, "add", "-1", "2").out == "1\n"


def test_json_output(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "--json", "blob")
    assert run.code == 0, run.err
    assert run.out.count("\n") == 1
    assert json.loads(run.out) == {
        "text": "café",
        "binary": {"$base64": "/wAB"},
        "1": "one",
        "wide": {"k": "x" * 100, "n": list(range(30))},
    }
    run = rpc(toolbox, *HB, "--raw", "-pj", "greet", "World")
    assert run.out == '"Hello, World!"\n'


def test_default_output_is_pprint(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "blob")
    assert run.code == 0, run.err
    assert run.out.startswith(
        "{'text': b'caf\\xc3\\xa9',\n 'binary': b'\\xff\\x00\\x01',\n 1: 'one',"
    )


def test_streams_print_one_item_per_line(toolbox: str) -> None:
    assert rpc(toolbox, *HB, "count", "5").out == "0\n1\n2\n3\n4\n"
    run = rpc(toolbox, *HB, "records", "3")  # wider than pprint's 80 columns
    assert run.out.splitlines() == [f"{{'index': {i}, 'payload': '{'y' * 90}'}}" for i in range(3)]
    run = rpc(toolbox, *HB, "--json", "records", "2")
    assert [json.loads(line) for line in run.out.splitlines()] == [
        {"index": 0, "payload": "y" * 90},
        {"index": 1, "payload": "y" * 90},
    ]


def test_remote_error_prints_the_remote_traceback_and_exits_1(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "fail", "something went wrong")
    assert (run.code, run.out) == (1, "")
    assert "Traceback (most recent call last):" in run.err
    assert 'rpc_cli_service.py", line' in run.err
    assert run.err.rstrip().endswith("ValueError: something went wrong")

    run = rpc(toolbox, *HB, "no_such_method")
    assert run.code == 1
    assert "no_such_method" in run.err


def test_threaded_server_keeps_heartbeating_through_a_blocking_call(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "slow", "2.5")  # > 2 heartbeat periods of blocking time.sleep
    assert (run.code, run.out) == (0, "2.5\n"), run.err


def test_timeout_exits_2_with_one_line(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "--timeout", "0.5", "slow", "5")
    assert (run.code, run.out) == (2, "")
    assert run.seconds < 4
    assert run.err.splitlines() == [
        f'connecting to "{toolbox}"',
        f'zerogate rpc: timed out: no answer from "{toolbox}" within 0.5 s',
    ]


def test_a_dead_endpoint_never_hangs() -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"
    lost = gevent.spawn(rpc, dead, "--heartbeat", "1", "add", "1", "2")
    timed_out = gevent.spawn(rpc, dead, "--timeout", "1")  # listing, default heartbeat
    lost_run, timeout_run = lost.get(), timed_out.get()

    assert (lost_run.code, lost_run.out) == (2, "")
    assert lost_run.seconds < 6
    assert lost_run.err.splitlines()[-1] == (
        f'zerogate rpc: lost the remote: no heartbeat from "{dead}" for 2 s '
        "(is the server running?)"
    )
    assert (timeout_run.code, timeout_run.out) == (2, "")
    assert timeout_run.seconds < 5
    assert "timed out" in timeout_run.err
    assert "Traceback" not in lost_run.err + timeout_run.err


def test_ctrl_c_stops_a_stream_cleanly(toolbox: str, children: Children) -> None:
    proc = children.spawn([*ZEROGATE_RPC, toolbox, *HB, "ticks", "0.02"], stdout=subprocess.PIPE)
    with gevent.Timeout(10, AssertionError("no stream item")):
        first = proc.stdout.readline()  # items print as they arrive: the stream never ends
    assert first == b"0\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert children.stderr(proc) == f'connecting to "{toolbox}"\n'  # no traceback
    assert rpc(toolbox, *HB, "add", "1", "2").out == "3\n"  # the server is fine


# -- inspecting ----------------------------------------------------------------------


def test_inspect_one_method(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "add", "-?")
    assert (run.code, run.out) == (
        0,
        "[toolbox]\nadd(a, b)\n\nAdd two integers.\n\n"
        "Both must be integers; the sum is returned.\n",
    ), run.err
    assert (
        rpc(toolbox, *HB, "-?", "greet").out.splitlines()[1]
        == "greet(name, greeting='Hello', *rest)"
    )

    run = rpc(toolbox, *HB, "-?", "nope")
    assert (run.code, run.out) == (1, '[toolbox]\nNo documentation for "nope".\n')


def test_inspect_every_method(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "--inspect")
    assert run.code == 0, run.err
    assert run.out.startswith("[toolbox]\n\nadd(a, b)\n    Add two integers.\n\n    Both must be")
    assert "\necho(value)\n    <undocumented>\n" in run.out
    assert "\npos_only(a, /, b=2)\n    Positional-only first argument.\n" in run.out
    assert "\ngreet(name, greeting='Hello', *rest)\n    Build a greeting for ``name``.\n" in run.out


def test_inspect_json_is_the_raw_inspect_answer(toolbox: str) -> None:
    run = rpc(toolbox, *HB, "--inspect", "--json")
    assert run.code == 0, run.err
    answer = json.loads(run.out)
    assert answer["name"] == "toolbox"
    add = answer["methods"]["add"]
    assert add["args"][0] == {"name": "self", "kind": "self"}
    assert [arg["name"] for arg in add["args"]] == ["self", "a", "b"]
    assert add["stream"] is False
    assert answer["methods"]["count"]["stream"] is True
    assert answer["methods"]["greet"]["varargs"] == "rest"

    answer = json.loads(rpc(toolbox, *HB, "-?", "-j", "count").out)
    assert list(answer["methods"]) == ["count"]


# -- usage and start-up errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give the ADDRESS to connect to"),
        (["--server", "--bind", "tcp://127.0.0.1:*"], "--server needs the module"),
        (["tcp://127.0.0.1:1", "--heartbeat", "0"], "not a positive number of seconds"),
        (["tcp://127.0.0.1:1", "--timeout", "soon"], "not a positive number of seconds"),
        (["tcp://127.0.0.1:1", "--raw", "--json", "add"], "not allowed with"),
        (["tcp://127.0.0.1:1", "add", "--bogus"], "unrecognized arguments: --bogus"),
        (["tcp://127.0.0.1:1", "--json", "add", "1", "two"], "argument 2 is not valid JSON"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str) -> None:
    run = rpc(*argv)
    assert run.code == 2
    assert run.err.startswith("usage: zerogate rpc")
    assert message in run.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["not-an-endpoint", "add"], 'cannot connect to "not-an-endpoint"'),
        (["--server", "--bind", "tcp://127.0.0.1:*", "no_such_module"], "No module named"),
        (["--server", "--bind", "tcp://127.0.0.1:*", "urllib.parse:nope"], "AttributeError"),
        (["--server", "--bind", "tcp://127.0.0.1:*", "urllib.nope"], "AttributeError"),
        (["--server", "--bind", "nowhere", "urllib.parse"], 'cannot bind to "nowhere"'),
    ],
)
def test_connection_and_load_errors_exit_2_with_one_line(argv: list[str], message: str) -> None:
    run = rpc(*argv)
    assert run.code == 2
    last = run.err.splitlines()[-1]
    assert last.startswith("zerogate rpc: ")
    assert message in last
    assert "Traceback" not in run.err


def test_zerogate_help_does_not_import_gevent() -> None:
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from gateway.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            main(["--help"])
        assert "rpc" in out.getvalue()
        print("gevent" in sys.modules)
        """
    )
    done = gevent.subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=CALL_TIMEOUT
    )
    assert done.stdout == "False\n", done.stderr
    run = rpc("--help")
    assert run.code == 0
    assert run.out.startswith("usage: zerogate rpc")


# -- server modes and stopping ------------------------------------------------------


def test_server_connects_to_a_binding_client_dotted_form(children: Children) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    client = gevent.spawn(rpc, "--bind", endpoint, "add", "2", "3")
    server = children.spawn(
        [*ZEROGATE_RPC, "--server", "--connect", endpoint, "rpc_cli_service.Toolbox"], cwd=HERE
    )
    run = client.get()
    assert (run.code, run.out) == (0, "5\n"), run.err
    assert run.err.startswith(f'binding to "{endpoint}"\n')
    assert children.stderr(server).startswith(f'connecting to "{endpoint}"\nserving ')


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_server_stops_cleanly_on_signals(children: Children, signum: int) -> None:
    proc, endpoint = children.serve("urllib.parse")
    assert rpc(endpoint, "quote", "a b").out == "'a%20b'\n"
    proc.send_signal(signum)
    assert proc.wait(timeout=10) == 0
    assert "Traceback" not in children.stderr(proc)


# -- against a zerorpc 0.6.3 server ----------------------------------------------------


def test_zerorpc_063_server_list_and_call(legacy: str) -> None:
    run = rpc(legacy)
    assert (run.code, run.out) == (0, "[Legacy]\nhello   Say hello.\nnumbers <undocumented>\n")
    assert rpc(legacy, "hello", "world").out == "'Hello, world!'\n"
    assert rpc(legacy, "--json", "numbers", "3").out == "[0, 1, 2]\n"
    run = rpc(legacy, "hello")
    assert run.code == 1
    assert "TypeError" in run.err


def test_zerorpc_063_server_inspect_falls_back(legacy: str) -> None:
    run = rpc(legacy, "hello", "-?")
    assert (run.code, run.out) == (0, "[Legacy]\nhello(...)\n\nSay hello.\n\nTo ``name``.\n")
    run = rpc(legacy, "-?")
    assert run.out == (
        "[Legacy]\n\nhello(...)\n    Say hello.\n\n    To ``name``.\n\nnumbers(...)\n"
        "    <undocumented>\n"
    )
    answer = json.loads(rpc(legacy, "-?", "--json").out)
    assert answer["introspection"] == "fallback"
    assert answer["methods"]["numbers"] == {"args": None, "doc": None, "stream": None}


# -- the pure formatting helpers ------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"args": None}, "f(...)"),
        ({}, "f(...)"),
        ({"args": []}, "f()"),
        # zerorpc 0.6.3: no kinds, self first, defaults bare (None included)
        (
            {"args": [{"name": "self"}, {"name": "a"}, {"name": "b", "default": None}]},
            "f(a, b=None)",
        ),
        ({"args": [{"name": "a"}, {"name": "b"}]}, "f(a, b)"),  # zerorpc-node: no self
        (
            {
                "args": [
                    {"name": "self", "kind": "self"},
                    {"name": "x", "kind": "positional"},
                    {"name": "greeting", "default": "Hi", "kind": "named"},
                ],
                "varargs": "more",
            },
            "f(x, /, greeting='Hi', *more)",
        ),
        ({"args": [{"name": "data", "default": b"\x00", "kind": "named"}]}, "f(data=b'\\x00')"),
    ],
)
def test_signature(entry: dict[str, Any], expected: str) -> None:
    assert rpc_format.signature("f", entry) == expected


def test_parse_params_modes() -> None:
    texts = ["1", "x", "[1, 2]", "NaN", "Infinity", '"s"']
    assert rpc_format.parse_params(texts, mode="auto") == [1, "x", [1, 2], "NaN", "Infinity", "s"]
    assert rpc_format.parse_params(texts, mode="raw") == texts
    with pytest.raises(ValueError, match="argument 2 is not valid JSON: 'x'"):
        rpc_format.parse_params(texts, mode="json")


def test_to_jsonable() -> None:
    value = {b"k": b"\xff", 1: (1, 2), None: {True: "t"}, (1, "a"): {1.5}}
    assert rpc_format.to_jsonable(value) == {
        "k": {"$base64": "/w=="},
        "1": [1, 2],
        "null": {"true": "t"},
        '[1, "a"]': [1.5],
    }


def test_listing_without_methods_and_without_name() -> None:
    assert rpc_format.listing({"name": None, "methods": {}}) == "[N/A]\n"
