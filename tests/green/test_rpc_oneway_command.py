"""``zerogate rpc --push/--pub`` and ``--server --pull/--sub``, run as a user runs them.

Every command is a ``python -m gateway.cli rpc ...`` process on 127.0.0.1, bounded by a
timeout; the other side is a green Puller/Subscriber/Pusher/Publisher in this process, or
the real zerorpc 0.6.3 Puller (tests/interop/peers/zrpc_oneway.py) in a child. Long-running
children are SIGKILLed by PID at teardown (conftest.py's ``green_child_processes``).
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
import gevent.subprocess
import pytest
from loopback import free_port

from gateway import rpc_command
from rpccore.green import Publisher, Puller, Pusher, Subscriber

if TYPE_CHECKING:
    from conftest import GreenChildProcesses

pytestmark = pytest.mark.usefixtures("green_test_timeout")

ZEROGATE_RPC = [sys.executable, "-m", "gateway.cli", "rpc"]
ONEWAY_PEER = Path(__file__).resolve().parents[1] / "interop" / "peers" / "zrpc_oneway.py"
LOOPBACK = "tcp://127.0.0.1:*"
RUN_TIMEOUT = 15.0  # bound on one command
WITHIN = 8.0  # bound on waiting for a delivery or a child's line
PUB_TRIES = 5  # --pub is best effort (the slow joiner): a few runs until one arrives


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float


def rpc(*argv: str, timeout: float = RUN_TIMEOUT) -> Run:
    """Run ``zerogate rpc ARGV`` to completion (killed if it outlives ``timeout``)."""
    start = monotonic()
    done = gevent.subprocess.run(
        [*ZEROGATE_RPC, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Run(done.returncode, done.stdout, done.stderr, monotonic() - start)


def eventually(predicate: Callable[[], bool], what: str, within: float = WITHIN) -> None:
    deadline = monotonic() + within
    while not predicate():
        if monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        gevent.sleep(0.01)


class Recorder:
    """Event handlers that remember what they got."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def tick(self, *args: Any) -> None:
        self.events.append(("tick", args))

    def add(self, *args: Any) -> None:
        self.events.append(("add", args))


# -- sending: --push and --pub -----------------------------------------------------------


def test_push_to_a_green_puller_parses_arguments_like_calls() -> None:
    recorder = Recorder()
    puller = Puller(recorder)
    try:
        (endpoint,) = puller.bind(LOOPBACK)
        puller.start()
        runs = [
            gevent.spawn(rpc, "--push", endpoint, "tick", "1", '"a"', '{"k": [1, null]}', "x y"),
            gevent.spawn(rpc, "--json", "--push", "--connect", endpoint, "add", "2", '"b"'),
            gevent.spawn(rpc, endpoint, "--raw", "add", "3", "null", "--push"),
        ]
        gevent.joinall(runs, raise_error=True)
        for run in (job.get() for job in runs):
            assert (run.code, run.out) == (0, ""), run.err
            assert run.err == f'connecting to "{endpoint}"\n'
        eventually(lambda: puller.handled == 3, "3 pushed events")
    finally:
        puller.stop()
    assert sorted(recorder.events, key=repr) == sorted(
        [
            ("tick", (1, "a", {"k": [1, None]}, "x y")),
            ("add", (2, "b")),
            ("add", ("3", "null")),
        ],
        key=repr,
    )
    assert puller.problems.get("unknown method") is None


def test_pub_to_a_green_subscriber_within_a_few_tries() -> None:
    recorder = Recorder()
    sub = Subscriber(recorder)
    try:
        (endpoint,) = sub.bind(LOOPBACK)
        sub.start()
        for _ in range(PUB_TRIES):
            run = rpc("--pub", endpoint, "tick", "7", '"seven"')
            assert (run.code, run.out) == (0, ""), run.err
            if sub.handled:
                break
            gevent.sleep(0.1)  # a late arrival still counts
        eventually(lambda: sub.handled > 0, f"a published event in {PUB_TRIES} runs", 1.0)
    finally:
        sub.stop()
    assert recorder.events[0] == ("tick", (7, "seven"))
    assert all(event == ("tick", (7, "seven")) for event in recorder.events)


def test_push_without_a_puller_exits_2_within_the_timeout() -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"
    connecting = gevent.spawn(rpc, "--push", "--timeout", "1", dead, "tick", "1")
    binding = gevent.spawn(rpc, "--push", "--timeout", "0.5", "--bind", LOOPBACK, "tick")
    for run, bound in ((connecting.get(), 1.0), (binding.get(), 0.5)):
        assert (run.code, run.out) == (2, ""), run.err
        assert bound <= run.seconds < bound + 4
        last = run.err.splitlines()[-1]
        assert last.startswith("zerogate rpc: timed out: no puller took the event from ")
        assert last.endswith(f" within {bound:g} s")
        assert "Traceback" not in run.err
    assert connecting.get().err.splitlines() == [
        f'connecting to "{dead}"',
        f'zerogate rpc: timed out: no puller took the event from "{dead}" within 1 s',
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--push", "tcp://127.0.0.1:1"], "--push needs the event's method name"),
        (["--pub", "tcp://127.0.0.1:1", "tick", "-?"], "one-way events cannot be inspected"),
        (["--pull", "--bind", LOOPBACK, "mod"], "--pull serves an object to events: use it with"),
        (["--server", "--push", "tcp://127.0.0.1:1", "m"], "use --server --pull"),
        (["--push", "--pub", "tcp://127.0.0.1:1", "tick"], "not allowed with"),
        (["--pub", "--settle", "-1", "tcp://127.0.0.1:1", "t"], "not a number of seconds >= 0"),
        (["--push", "--json", "tcp://127.0.0.1:1", "t", "x"], "argument 1 is not valid JSON"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rpc_command.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_says_pub_is_best_effort() -> None:
    text = " ".join(rpc_command.build_parser().format_help().split())
    assert "PUB delivery is best effort" in text
    assert f"(default {rpc_command.SETTLE_SECONDS:g})" in text


# -- receiving: --server --pull and --server --sub ---------------------------------------

SINK = """
import json, os

class Sink:
    def record(self, *args):
        with open(os.path.join(os.path.dirname(__file__), "got.jsonl"), "a") as f:
            f.write(json.dumps(args) + "\\n")
"""


def serve_sink(
    children: GreenChildProcesses, tmp_path: Path, flag: str
) -> tuple[Any, str, Path, Path]:
    """``zerogate rpc --server FLAG --bind`` a Sink that writes each event's args to a
    file; returns (process, endpoint, that file, the server's stderr file)."""
    (tmp_path / "owsink.py").write_text(textwrap.dedent(SINK))
    argv = [*ZEROGATE_RPC, "--server", flag, "--bind", LOOPBACK, "owsink:Sink"]
    log = tmp_path / "server.stderr"
    with log.open("wb") as stderr:  # a file, not a pipe: nothing to leak if a test fails
        proc = gevent.subprocess.Popen(
            argv, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    children.procs.append(proc)  # SIGKILLed by PID at teardown if still running
    eventually(
        lambda: "\nserving " in log.read_text() or proc.poll() is not None, "the server to start"
    )
    lines = log.read_text().splitlines()
    role = {"--pull": "pulling events", "--sub": "subscribed to events"}[flag]
    assert lines[-1] == f'serving "owsink:Sink" ({role})', lines
    endpoint = next(line for line in lines if line.startswith("bound to "))[10:-1]
    return proc, endpoint, tmp_path / "got.jsonl", log


def received(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stop(proc: Any, signum: int, log: Path) -> str:
    """Stop a server with ``signum``; it must exit 0. Returns its last stderr line."""
    proc.send_signal(signum)
    assert proc.wait(timeout=WITHIN) == 0
    text = log.read_text()
    assert "Traceback" not in text
    return text.splitlines()[-1]


def test_server_pull_runs_pushed_events(
    green_child_processes: GreenChildProcesses, tmp_path: Path
) -> None:
    proc, endpoint, got, log = serve_sink(green_child_processes, tmp_path, "--pull")
    with Pusher() as pusher:
        pusher.connect(endpoint)
        pusher.record(1, "a")
        pusher.record(2, {"b": None})
        pusher.nope()  # no such method: counted, the server keeps going
        pusher.record(3)
        eventually(lambda: len(received(got)) == 3, "3 events written by the sink")
        eventually(lambda: pusher.queued == 0, "the pusher's queue drained")
    assert received(got) == [[1, "a"], [2, {"b": None}], [3]]
    assert stop(proc, signal.SIGTERM, log) == "stopped: 3 events handled (1 unknown method)"


def test_server_sub_runs_published_events_and_ctrl_c_exits_0(
    green_child_processes: GreenChildProcesses, tmp_path: Path
) -> None:
    proc, endpoint, got, log = serve_sink(green_child_processes, tmp_path, "--sub")
    with Publisher() as pub:
        pub.connect(endpoint)
        deadline = monotonic() + WITHIN
        while not received(got):  # the slow joiner: publish until one arrives
            assert monotonic() < deadline, "no published event reached the subscriber"
            pub.record("hello")
            gevent.sleep(0.05)
    last_line = stop(proc, signal.SIGINT, log)  # Ctrl-C
    assert received(got)[0] == ["hello"]
    assert last_line == f"stopped: {len(received(got))} events handled"


# -- against zerorpc 0.6.3 ---------------------------------------------------------------


def test_push_to_a_zerorpc_puller(green_child_processes: GreenChildProcesses) -> None:
    children = green_child_processes
    proc = children.spawn(
        [sys.executable, "-u", str(ONEWAY_PEER), "puller", "--bind", "--count", "1"],
        name="zrpc_puller",
    )
    endpoint = children.read_line(proc, WITHIN)
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    run = rpc("--push", endpoint, "add", "1", '"x"', '{"k": [true, 2.5]}')
    assert (run.code, run.out) == (0, ""), run.err
    event = json.loads(children.read_line(proc, WITHIN))
    assert event["method"] == "add"
    assert ast.literal_eval(event["args"]) == [1, "x", {"k": [True, 2.5]}]
