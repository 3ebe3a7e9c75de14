"""Where tracing's cost lies: many short paired measurements of one pair in three states.

Run it from the repository root (it needs redis-server, like ``bench/rpc.py --tracing``)::

    .venv/bin/python bench/trace_paired.py                      # asyncio client, sequential
    .venv/bin/python bench/trace_paired.py --client green --metric inflight --pairs 12
    .venv/bin/python bench/trace_paired.py --client green --metric inflight \
        --states off,server,client,stored

``bench/rpc.py --tracing`` measures tracing on against off once a round, five rounds a run;
on a noisy host one measurement can move by 20%, more than the effect. This runs our gevent
server and the chosen client (pinned as in ``bench/rpc.py``) in each of three states, a
fresh pair for every measurement, the states in turn and their order reversed every time:

* ``off``: tracing off;
* ``nowhere``: tracing on, records shipped to an endpoint nobody listens on (ZeroMQ refuses
  them at once): the traced processes' own cost, with no collector or Redis working;
* ``stored``: tracing on, records stored by a real ``zerogate collector`` in a real Redis,
  both at idle priority, as in ``bench/rpc.py --tracing``;
* ``server`` and ``client`` (only with ``--states``): as ``stored``, with tracing on in that
  process alone (the other still reads or sends the trace header, as an untraced peer of a
  traced one does): which side's cost the pair's calls/s feels.

It prints each measurement, then per state the median calls/s, the median CPU per call of
the server and the client, and the median of its per-pass ratios to ``off``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from _collector import start_collector
from _common import Child, ChildError, choose_cpus, stop_all
from rpc import timed_request

RPC_BENCH = Path(__file__).resolve().parent / "rpc.py"
STATES = ("off", "nowhere", "stored")
ALL_STATES = (*STATES, "server", "client")
WARMUP = 0.3  # seconds of calls before each measurement, untimed
CPUS = choose_cpus()  # (server's, client's), as bench/rpc.py pins them


@dataclass
class Measurement:
    rate: float  # calls/s
    server_us: float  # server CPU per call
    client_us: float  # client CPU per call


def measure(
    client_impl: str,
    metric: str,
    seconds: float,
    collectors: dict[str, str | None],
    logs: Path,
) -> Measurement:
    """One fresh pair (our gevent server, ``client_impl``), one measurement of ``metric``;
    ``collectors``: where each role ships its records (None: tracing off there)."""
    server_cpu, client_cpu = CPUS

    def spawn(role: str, impl: str, cpu: int | None, endpoint: str | None = None) -> Child:
        env = {**os.environ, "BENCH_PARENT": str(os.getpid())}
        env.pop("ZEROGATE_COLLECTOR", None)
        collector = collectors[role]
        if collector is not None:
            env["ZEROGATE_COLLECTOR"] = collector
        argv = [sys.executable, str(RPC_BENCH), "--role", role, "--impl", impl]
        argv += ["--cpu", str(cpu)] if cpu is not None else []
        argv += ["--endpoint", endpoint] if endpoint is not None else []
        return Child(f"{role}-{impl}", argv, logs, env, quit_on_eof=role == "client")

    server = spawn("server", "green", server_cpu)
    try:
        endpoint = server.recv(timeout=30)["endpoint"]
        client = spawn("client", client_impl, client_cpu, endpoint)
        try:
            client.recv(timeout=60)
            cmd: dict[str, Any] = {"op": metric, "limit": 10_000_000, "size": 1}
            client.request({**cmd, "duration": WARMUP}, timeout=60)
            result = timed_request(server, client, {**cmd, "duration": seconds}, seconds + 60)
            calls = max(result["n"], 1)
            return Measurement(
                rate=result["n"] / result["elapsed"],
                server_us=result["server_cpu"] / calls * 1e6,
                client_us=result["client_cpu"] / calls * 1e6,
            )
        finally:
            client.stop()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--client", choices=("aio", "green"), default="aio")
    parser.add_argument("--metric", choices=("seq", "inflight"), default="seq")
    parser.add_argument("--pairs", type=int, default=20, help="passes over the states (20)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement (1.0)")
    parser.add_argument(
        "--states",
        default=",".join(STATES),
        help=f"comma-separated, of {', '.join(ALL_STATES)}; off is always measured",
    )
    args = parser.parse_args(argv)
    chosen = [state.strip() for state in args.states.split(",") if state.strip()]
    unknown = sorted(set(chosen) - set(ALL_STATES))
    if unknown:
        known = ", ".join(ALL_STATES)
        parser.error(f"--states: unknown {', '.join(unknown)} (choose from {known})")
    states = ("off", *dict.fromkeys(state for state in chosen if state != "off"))
    results: dict[str, list[Measurement]] = {state: [] for state in states}
    # "Nowhere": a port held bound for the whole run but never listening, so every connect
    # is refused and nothing else can take the port meanwhile.
    with TemporaryDirectory(prefix="trace-paired-") as tmp, socket.socket() as unheard:
        unheard.bind(("127.0.0.1", 0))
        logs = Path(tmp)
        try:
            stack = start_collector(logs, dict(os.environ))
        except ChildError as exc:
            print(f"the collector cannot start: {exc}", file=sys.stderr)
            return 1
        nowhere = f"tcp://127.0.0.1:{unheard.getsockname()[1]}"
        collectors: dict[str, dict[str, str | None]] = {
            "off": {"server": None, "client": None},
            "nowhere": {"server": nowhere, "client": nowhere},
            "stored": {"server": stack.endpoint, "client": stack.endpoint},
            "server": {"server": stack.endpoint, "client": None},
            "client": {"server": None, "client": stack.endpoint},
        }
        try:
            for number in range(args.pairs):
                order = states if number % 2 == 0 else states[::-1]
                for state in order:
                    m = measure(args.client, args.metric, args.seconds, collectors[state], logs)
                    results[state].append(m)
                    print(
                        f"{number:3d} {state:8s} {m.rate:9,.0f} calls/s  CPU per call: "
                        f"server {m.server_us:.0f} us, client {m.client_us:.0f} us",
                        flush=True,
                    )
        finally:
            stop_all()
    print(f"\n{args.client} client, {args.metric}, {args.pairs} passes of {args.seconds:g} s")
    for state in states:
        ms = results[state]
        ratios = [m.rate / off.rate for m, off in zip(ms, results["off"], strict=True)]
        print(
            f"{state:8s} {statistics.median(m.rate for m in ms):9,.0f} calls/s  "
            f"CPU per call: server {statistics.median(m.server_us for m in ms):.0f} us, "
            f"client {statistics.median(m.client_us for m in ms):.0f} us  "
            f"on / off: {statistics.median(ratios):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
