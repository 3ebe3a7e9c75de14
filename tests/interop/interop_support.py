"""What the interop tests share on both drivers: the peer scripts, the test service, the
values sent across and the answers zerorpc 0.6.3 gives (or expects) for that service.

Used by tests/interop (asyncio driver, imported as ``interop_support``), by
tests/green/test_interop_green.py (gevent driver, loaded from this file's path) and by the
peer scripts in ``peers/`` (the real zerorpc 0.6.3, each in its own process). It imports
neither gevent, asyncio nor zerorpc, so it is safe in every one of those processes.
"""

from __future__ import annotations

import ast
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

PYTHON: Final = sys.executable
PEERS_DIR: Final = Path(__file__).resolve().parent / "peers"
ZERORPC_SERVER_SCRIPT: Final = PEERS_DIR / "zrpc_server.py"
ZERORPC_CLIENT_SCRIPT: Final = PEERS_DIR / "zrpc_client.py"

# Heartbeat period of both sides in every interop test that depends on heartbeats.
HEARTBEAT: Final = 0.2
# Scheduling slack (a loaded 2-core machine) on top of "3 heartbeat periods".
LOST_REMOTE_SLACK: Final = 0.5
LOST_REMOTE_BOUND: Final = 3 * HEARTBEAT + LOST_REMOTE_SLACK
# Tests that are not about heartbeats use the default period, so 1,000 concurrent calls
# do not also mean 10,000 heartbeats a second.
QUIET_HEARTBEAT: Final = 5.0
# A call that outlives several heartbeat periods and must still succeed.
LONG_CALL_SECONDS: Final = 1.5
# A call that is still running when its peer is killed or its caller times out.
HELD_CALL_SECONDS: Final = 30.0
SHORT_TIMEOUT: Final = 0.3
STREAM_SIZE: Final = 10_000
CONCURRENT_CALLS: Final = 1000
# Per-call timeout of the concurrent calls: generous (they take well under a second) yet
# shorter than QUIET_HEARTBEAT, so a stalled peer is not rescued by the next heartbeat.
CONCURRENT_CALL_TIMEOUT: Final = 4.0
# Bounds on child processes: starting (first stdout line), running a client scenario.
CHILD_START_TIMEOUT: Final = 10.0
CHILD_RUN_TIMEOUT: Final = 30.0
# Bound on one whole test (a safety net; every test takes far less).
TEST_TIMEOUT: Final = 60.0

SERVICE_NAME: Final = "Interop"


class InteropMethods:
    """The test service, identical on every server: zerorpc's (peers/zrpc_server.py wraps
    the stream methods with ``zerorpc.stream``) and ours on both drivers. Each runtime
    subclasses it as ``Interop`` (hence the service name) and adds ``slow``, which needs
    the runtime's own sleep. Generator methods stream on our servers without decoration.
    """

    def echo(self, value):
        """Return the value unchanged."""
        return value

    def add(self, a, b):
        """Add two values.

        Returns a + b.
        """
        return a + b

    def greet(self, name, greeting="Hello", punct=None):
        """Build a greeting string."""
        return f"{greeting}, {name}{punct or '!'}"

    def undocumented(self, x):
        return x

    def get_tuple(self):
        """Return a nested tuple (it arrives as nested lists)."""
        return (1, (2, 3))

    def fail(self, message):
        """Raise ValueError(message)."""
        raise ValueError(message)

    def count(self, n):
        """Stream the integers 0 .. n-1."""
        yield from range(n)

    def empty_stream(self):
        """Stream nothing at all."""
        yield from ()

    def fail_midway(self, n):
        """Stream 0 .. n-1, then raise KeyError('boom')."""
        yield from range(n)
        raise KeyError("boom")


STREAM_METHODS: Final = ("count", "empty_stream", "fail_midway")
SLOW_DOC: Final = "Sleep cooperatively for ``seconds``, then return them."

# -- the values sent across ------------------------------------------------------------

# Every msgpack type (spec 4.3), sent as an argument and echoed back.
MSGPACK_VALUES: Final[dict[str, Any]] = {
    "nil": None,
    "true": True,
    "false": False,
    "zero": 0,
    "positive_fixint": 127,
    "negative_fixint": -32,
    "uint8": 255,
    "int16": -30_000,
    "uint32": 2**32 - 1,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "float": 3.141592653589793,
    "negative_float": -1.5e-300,
    "whole_float": 2.0,
    "empty_str": "",
    "ascii_str": "hello",
    "unicode_str": "héllo wörld ✓ 日本語 🚀",
    "long_str": "x" * 70_000,
    "bytes": bytes(range(256)),
    "empty_bytes": b"",
    "list": [1, "two", 3.0, None, True, b"\x00"],
    "empty_list": [],
    "nested_map": {"a": {"b": {"c": [1, {"d": None, "e": [b"f", 2**64 - 1]}]}}, "z": -(2**63)},
    "map_with_bin_key": {b"raw": 1, "text": 2},
    "empty_map": {},
    "tuple": (1, (2, 3), ("x", b"y")),
    "list_of_maps": [{"k": i, "v": str(i)} for i in range(50)],
}

# What the server method ``get_tuple`` answers, as it arrives (tuples become lists).
GET_TUPLE_ANSWER: Final = [1, [2, 3]]


def wire_form(value: Any) -> Any:
    """``value`` as any peer receives it: msgpack has arrays, not tuples."""
    if isinstance(value, (list, tuple)):
        return [wire_form(v) for v in value]
    if isinstance(value, dict):
        return {k: wire_form(v) for k, v in value.items()}
    return value


def typed(value: Any) -> Any:
    """A type-strict form for ``==``: plain equality has ``True == 1 == 1.0`` and
    ``(1,) != [1]`` hidden in containers; this tags every value with its exact type."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    return (type(value).__name__, value)


def mismatches(received: dict[str, Any], sent: dict[str, Any]) -> dict[str, str]:
    """The values of ``sent`` that did not come back exactly (as their wire form)."""
    wrong = {}
    for name, value in sent.items():
        if name not in received:
            wrong[name] = "missing"
        elif typed(received[name]) != typed(wire_form(value)):
            wrong[name] = f"got {received[name]!r:.120}"
    return wrong


def assert_remote_error_fields(error: Any, name: str, message: str) -> None:
    """A RemoteError as our client raises it (``name``, ``message``, ``traceback``), or
    as the zerorpc client process reported it (a dict, see peers/zrpc_client.py): all
    three fields present and str, the traceback a Python one naming the exception.
    (This module is not assertion-rewritten by pytest, hence the explicit messages.)"""
    if isinstance(error, dict):  # reported by zerorpc's client
        fields = (error.get("type"), error.get("name"), error.get("msg"))
        assert fields == ("RemoteError", name, message), f"{fields!r} in {error!r:.400}"
        types = (error["field_types"], error["traceback_type"])
        assert types == (["str", "str"], "str"), f"field types {types!r}"
        traceback = error["traceback"]
    else:
        fields = (error.name, error.message)
        assert fields == (name, message), f"{fields!r} in {error!r:.400}"
        types = (type(error.name), type(error.message), type(error.traceback))
        assert types == (str, str, str), f"field types {types!r}"
        traceback = error.traceback
    assert traceback.startswith("Traceback (most recent call last):"), traceback[:200]
    assert name in traceback, traceback[-400:]


# -- what zerorpc 0.6.3 answers for the test service (spec section 10) ----------------

METHOD_NAMES: Final = [
    "add",
    "count",
    "echo",
    "empty_stream",
    "fail",
    "fail_midway",
    "get_tuple",
    "greet",
    "slow",
    "undocumented",
]

METHOD_DOCS: Final[dict[str, str | None]] = {
    "add": "Add two values.\n\nReturns a + b.",
    "count": "Stream the integers 0 .. n-1.",
    "echo": "Return the value unchanged.",
    "empty_stream": "Stream nothing at all.",
    "fail": "Raise ValueError(message).",
    "fail_midway": "Stream 0 .. n-1, then raise KeyError('boom').",
    "get_tuple": "Return a nested tuple (it arrives as nested lists).",
    "greet": "Build a greeting string.",
    "slow": SLOW_DOC,
    "undocumented": None,
}

# ``_zerorpc_args``: getargspec's [args, varargs, keywords, defaults], ``self`` included.
METHOD_ARGS: Final[dict[str, list[Any]]] = {
    "add": [["self", "a", "b"], None, None, None],
    "count": [["self", "n"], None, None, None],
    "echo": [["self", "value"], None, None, None],
    "empty_stream": [["self"], None, None, None],
    "fail": [["self", "message"], None, None, None],
    "fail_midway": [["self", "n"], None, None, None],
    "get_tuple": [["self"], None, None, None],
    "greet": [["self", "name", "greeting", "punct"], None, None, ["Hello", None]],
    "slow": [["self", "seconds"], None, None, None],
    "undocumented": [["self", "x"], None, None, None],
}

# ``_zerorpc_inspect`` as 0.6.3 builds it (``_format_args_spec``), keys in its order.
INSPECT_ANSWER_063: Final[dict[str, Any]] = {
    "name": SERVICE_NAME,
    "methods": {
        "add": {
            "args": [{"name": "self"}, {"name": "a"}, {"name": "b"}],
            "doc": METHOD_DOCS["add"],
        },
        "count": {"args": [{"name": "self"}, {"name": "n"}], "doc": METHOD_DOCS["count"]},
        "echo": {"args": [{"name": "self"}, {"name": "value"}], "doc": METHOD_DOCS["echo"]},
        "empty_stream": {"args": [{"name": "self"}], "doc": METHOD_DOCS["empty_stream"]},
        "fail": {"args": [{"name": "self"}, {"name": "message"}], "doc": METHOD_DOCS["fail"]},
        "fail_midway": {
            "args": [{"name": "self"}, {"name": "n"}],
            "doc": METHOD_DOCS["fail_midway"],
        },
        "get_tuple": {"args": [{"name": "self"}], "doc": METHOD_DOCS["get_tuple"]},
        "greet": {
            "args": [
                {"name": "self"},
                {"name": "name"},
                {"name": "greeting", "default": "Hello"},
                {"name": "punct", "default": None},
            ],
            "doc": METHOD_DOCS["greet"],
        },
        "slow": {"args": [{"name": "self"}, {"name": "seconds"}], "doc": METHOD_DOCS["slow"]},
        "undocumented": {"args": [{"name": "self"}, {"name": "x"}], "doc": None},
    },
}

# What zerorpc 0.6.3 on Python 3.11 answers to ``_zerorpc_args``/``_zerorpc_inspect``.
NO_GETARGSPEC: Final = ("AttributeError", "module 'inspect' has no attribute 'getargspec'")

# Our ``describe()`` of a 0.6.3 server: the _zerorpc_list + _zerorpc_help fallback.
DESCRIBE_FALLBACK: Final[dict[str, Any]] = {
    "name": SERVICE_NAME,
    "doc": None,
    "methods": {
        name: {"args": None, "doc": METHOD_DOCS[name], "stream": None} for name in METHOD_NAMES
    },
    "introspection": "fallback",
}


def as_063_inspect(answer: dict[str, Any]) -> dict[str, Any]:
    """Our ``_zerorpc_inspect`` answer seen through 0.6.3's eyes: only the keys 0.6.3
    defines (our extension keys such as ``stream`` or ``kind`` are ignored by it)."""
    methods = {}
    for name, entry in answer["methods"].items():
        args = entry["args"]
        if args is not None:
            args = [{k: arg[k] for k in ("name", "default") if k in arg} for arg in args]
        methods[name] = {"args": args, "doc": entry["doc"]}
    return {"name": answer["name"], "methods": methods}  # no "doc": our extension key


# -- child processes ------------------------------------------------------------------


def zerorpc_server_argv(*, heartbeat: float) -> list[str]:
    """The real zerorpc server: prints its endpoint first, then ``started slow`` lines."""
    return [PYTHON, "-u", str(ZERORPC_SERVER_SCRIPT), "--heartbeat", str(heartbeat)]


def zerorpc_client_argv(
    endpoint: str, scenario: str, *args: object, heartbeat: float, timeout: float = 10.0
) -> list[str]:
    """The real zerorpc client running one scenario; prints one JSON line (see
    ``parse_client_output``)."""
    return [
        PYTHON,
        "-u",
        str(ZERORPC_CLIENT_SCRIPT),
        endpoint,
        scenario,
        *map(str, args),
        "--heartbeat",
        str(heartbeat),
        "--timeout",
        str(timeout),
    ]


def values_input() -> bytes:
    """The ``echo_values`` scenario reads the values to send as a Python literal."""
    return repr(MSGPACK_VALUES).encode()


def parse_client_output(stdout: bytes) -> Any:
    """The outcome of a zerorpc client scenario.

    The child prints ``{"scenario": ..., "outcome": "<python literal>"}`` as its last
    line; the literal keeps what JSON would blur (bytes, ints vs floats, lists).
    """
    lines = stdout.decode().strip().splitlines()
    assert lines, "the zerorpc client printed nothing"
    return ast.literal_eval(json.loads(lines[-1])["outcome"])


def stderr_tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no stderr>"
    return text[-limit:]


# -- child processes, the blocking way (the asyncio tests wrap these in to_thread; the
# gevent tests use gevent.subprocess instead, see tests/green/conftest.py) -------------


@dataclass
class ChildProcesses:
    """Child processes of one test. stdout is a raw pipe (read it with ``read_line``),
    stderr goes to a file in the test's tmp dir (see ``stderr``)."""

    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def spawn(
        self, argv: list[str], *, name: str, stdin: int = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}-{len(self.procs)}.stderr"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                argv, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, bufsize=0
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return stderr_tail(self.logs[proc.pid])

    def read_line(self, proc: subprocess.Popen[bytes], timeout: float) -> str:
        """One line of the child's stdout, waiting ``timeout`` seconds at most."""
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
            if not readable:
                raise TimeoutError(
                    f"no line from pid {proc.pid} within {timeout}s; stderr:\n" + self.stderr(proc)
                )
            byte = proc.stdout.read(1)
            if not byte:
                raise EOFError(f"pid {proc.pid} closed stdout; stderr:\n{self.stderr(proc)}")
            line += byte
        return line.decode().strip()

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL by PID (if still running), reap it and close its pipes."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@dataclass(frozen=True)
class ZerorpcServer:
    """A running zerorpc 0.6.3 server process."""

    endpoint: str
    proc: subprocess.Popen[bytes]
    children: ChildProcesses

    def wait_for_slow_call(self, timeout: float = CHILD_START_TIMEOUT) -> None:
        """Block until the server reports that a ``slow`` call has started."""
        line = self.children.read_line(self.proc, timeout)
        assert line == "started slow", line


def start_zerorpc_server(children: ChildProcesses, *, heartbeat: float) -> ZerorpcServer:
    proc = children.spawn(zerorpc_server_argv(heartbeat=heartbeat), name="zrpc_server")
    endpoint = children.read_line(proc, CHILD_START_TIMEOUT)
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    return ZerorpcServer(endpoint, proc, children)
