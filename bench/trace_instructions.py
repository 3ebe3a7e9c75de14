"""What tracing costs a traced process, in instructions per call: a reading noise cannot move.

Run it from the repository root (it needs valgrind)::

    .venv/bin/python bench/trace_instructions.py
    .venv/bin/python bench/trace_instructions.py --calls 3000 --metric inflight
    .venv/bin/python bench/trace_instructions.py --sides client-green --keep /tmp/ti

``--keep`` leaves the dumps in a new folder, one per side and state; ``callgrind.out.1-01`` is
the main thread's, so ``callgrind_annotate --inclusive=no`` on ``client-green-off/`` and
``client-green-on/`` shows which functions tracing makes busier.

``bench/rpc.py --tracing`` measures calls/s with tracing on over off; on a shared two-core
host one measurement moves by up to 20%, more than the effect, and the collector and Redis
take their CPU from the same two cores. This counts instead the instructions one process
runs per call (``valgrind --tool=callgrind``, all its threads: the trace sender and ZeroMQ's
I/O threads included), which are the same from run to run whatever the host is doing.

For each measured side (our gevent server, our gevent client, our asyncio client) it runs
the pair of ``bench/rpc.py`` (its children, unpinned) twice: tracing off, and tracing on in
both processes with their records shipped to a real ``zerogate collector`` (memory store:
what the traced process does does not depend on where the collector keeps them). The side
being measured runs under callgrind: after ``--warmup`` calls its counters are zeroed
(``callgrind_control -z``), then it makes or answers ``--calls`` calls and its counters are
dumped (``-d``). It prints the instructions per call in both states and their ratio; for
the traced runs, the records the collector received per call (2: client and server).

Under callgrind a process runs about fifty times slower, so the trace sender, which wakes
every 20 ms, would find a fiftieth of the records per pass it finds at full speed, and its
fixed cost per pass would read fifty times too high per call: in the measured process it
passes every second instead (``BENCH_TRACE_INTERVAL``, read by ``bench/rpc.py``'s
children), so a pass carries about as many records as at full speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from _common import Child, ChildError, free_ports, stop_all

RPC_BENCH = Path(__file__).resolve().parent / "rpc.py"
SIDES = ("server-green", "client-green", "client-aio")  # the process measured, and its kind
START_TIMEOUT = 180.0  # seconds for a process under callgrind to start and warm up
HOST = "127.0.0.1"
# Seconds between the measured process's sender passes: fifty times the usual 20 ms, as the
# process runs about fifty times slower under callgrind (see the module doc).
SENDER_INTERVAL = 1.0


@dataclass
class Reading:
    per_call: float  # instructions per call: the main thread and ZeroMQ's
    sender: float  # instructions per call of the trace sender thread (0 when off)
    records: float | None  # records the collector received per call (traced runs)


class Collector:
    """A real ``zerogate collector`` with its memory store, on free loopback ports."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        zerogate = Path(sys.executable).parent / "zerogate"
        bind, query = free_ports(2)
        self.endpoint = f"tcp://{HOST}:{bind}"
        self.query = f"tcp://{HOST}:{query}"
        self._zerogate = str(zerogate)
        argv = [self._zerogate, "collector", "--bind", self.endpoint, "--query", self.query]
        # An empty config file: a zerogate.yaml here must not choose the store.
        config = logs / "collector.yaml"
        config.write_text("services: {}\n")
        self.child = Child("collector", [*argv, "-c", str(config)], logs, env, json_lines=False)

    def received(self) -> int:
        argv = [self._zerogate, "rpc", "--timeout", "30", "-pj", self.query, "info"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise ChildError(f"collector info: {proc.stderr.strip()[-300:]}")
        received: int = json.loads(proc.stdout)["received"]
        return received


def callgrind_total(path: Path) -> int:
    """The instruction total of a callgrind dump."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ChildError(f"{path} holds no total")


def split_threads(dumps: list[Path]) -> tuple[int, int]:
    """(instructions of the main thread and ZeroMQ's threads, of the trace sender) in the
    per-thread dumps of one ``callgrind_control -d``: the sender is the one thread besides
    the main one (``-01``) that runs Python code."""
    calls = sender = 0
    for path in dumps:
        total = callgrind_total(path)
        if not path.name.endswith("-01") and "_PyEval_EvalFrameDefault" in path.read_text():
            sender += total
        else:
            calls += total
    return calls, sender


def control(option: str, pid: int) -> None:
    """Ask the callgrind running as ``pid`` to zero (``-z``) or dump (``-d``) its counters."""
    proc = subprocess.run(
        ["callgrind_control", option, str(pid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 or "OK" not in proc.stdout:
        raise ChildError(f"callgrind_control {option} {pid}: {proc.stdout} {proc.stderr}")


def measure(
    side: str,
    traced: bool,
    *,
    metric: str,
    calls: int,
    warmup: int,
    collector: Collector,
    logs: Path,
) -> Reading:
    """One fresh pair, the ``side`` process under callgrind; its instructions per call."""
    role, impl = side.split("-")
    env = {**os.environ, "BENCH_PARENT": str(os.getpid())}
    env.pop("ZEROGATE_COLLECTOR", None)
    if traced:
        env["ZEROGATE_COLLECTOR"] = collector.endpoint
    dumps = logs / f"{side}-{'on' if traced else 'off'}"
    dumps.mkdir()

    def spawn(child_role: str, child_impl: str, endpoint: str | None = None) -> Child:
        argv = [sys.executable, str(RPC_BENCH), "--role", child_role, "--impl", child_impl]
        argv += ["--endpoint", endpoint] if endpoint is not None else []
        child_env = env
        if child_role == role:
            if traced:
                child_env = {**env, "BENCH_TRACE_INTERVAL": str(SENDER_INTERVAL)}
            out = dumps / "callgrind.out"
            argv = [
                *("valgrind", "-q", "--tool=callgrind", "--separate-threads=yes"),
                f"--callgrind-out-file={out}",
                *argv,
            ]
        name = f"{child_role}-{child_impl}"
        return Child(name, argv, logs, child_env, quit_on_eof=child_role == "client")

    server = spawn("server", "green")
    try:
        endpoint = server.recv(timeout=START_TIMEOUT)["endpoint"]
        client = spawn("client", impl if role == "client" else "green", endpoint)
        try:
            client.recv(timeout=START_TIMEOUT)
            measured = server if role == "server" else client
            cmd: dict[str, Any] = {"op": metric, "size": 1, "duration": 1e6}
            client.request({**cmd, "limit": warmup}, timeout=START_TIMEOUT)
            before = collector.received()
            control("-z", measured.pid)
            result = client.request({**cmd, "limit": calls}, timeout=START_TIMEOUT * 4)
            control("-d", measured.pid)
            done = int(result["n"])
            # The collector counts what arrived; the last pass of the senders may still be
            # on its way (they send every 20 ms; under callgrind, later).
            records = None
            if traced:
                records = (_settled(collector, before + 2 * done) - before) / done
            files = list(dumps.glob("callgrind.out.1-*"))  # the dump of -d, one per thread
            if not files:
                raise ChildError(f"no callgrind dump in {dumps}")
            on_path, sender = split_threads(files)
            return Reading(on_path / done, sender / done, records)
        finally:
            client.stop()
    finally:
        server.stop()


def _settled(collector: Collector, expected: int) -> int:
    """The collector's ``received`` once it reaches ``expected``, or after 5 s."""
    deadline = time.monotonic() + 5.0
    received = collector.received()
    while received < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        received = collector.received()
    return received


def _line(off: Reading, on: Reading) -> str:
    calls = on.per_call / off.per_call
    total = (on.per_call + on.sender) / (off.per_call + off.sender)
    records = f"{on.records:.2f}" if on.records is not None else "n/a"
    return (
        f"calls: off {off.per_call:9,.0f} on {on.per_call:9,.0f} ({calls - 1:+.1%})"
        f"  sender {on.sender:7,.0f}  all: {total - 1:+.1%}  records/call {records}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls measured (2000)")
    parser.add_argument("--warmup", type=int, default=300, help="calls before, unmeasured")
    parser.add_argument("--metric", choices=("seq", "inflight"), default="seq")
    parser.add_argument(
        "--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the callgrind dumps and logs in DIR (new) for callgrind_annotate",
    )
    args = parser.parse_args(argv)
    sides = args.sides.split(",")
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown sides: {', '.join(sorted(unknown))}")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt install valgrind)", file=sys.stderr)
            return 1
    print(
        f"instructions per call ({args.metric}, {args.calls} calls after {args.warmup}) of the"
        " process named, tracing off and on (records to a real collector). calls: its main"
        " thread and ZeroMQ's; sender: its trace sender thread (passing every"
        f" {SENDER_INTERVAL:g} s: see the module doc); all: every thread",
        flush=True,
    )
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: already exists (the dumps go in a new folder)")
    where = (
        TemporaryDirectory(prefix="trace-instructions-")
        if args.keep is None
        else nullcontext(str(args.keep))
    )
    with where as folder:
        logs = Path(folder)
        logs.mkdir(parents=True, exist_ok=True)
        try:
            collector = Collector(logs, dict(os.environ))
            collector.received()  # waits for it to answer
            for side in sides:
                off, on = (
                    measure(
                        side,
                        traced,
                        metric=args.metric,
                        calls=args.calls,
                        warmup=args.warmup,
                        collector=collector,
                        logs=logs,
                    )
                    for traced in (False, True)
                )
                print(f"{side:13s} {_line(off, on)}", flush=True)
        except ChildError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
