"""Benchmark calls/s through ``zerogate hub`` against direct calls, in one run, with ratios.

Run it from the repository root::

    .venv/bin/python bench/hub.py                  # 5 rounds (about a minute)
    .venv/bin/python bench/hub.py --quick          # 1 short round: a smoke test
    .venv/bin/python bench/hub.py --quick --profile /tmp/prof   # cProfile the hub child

It is a benchmark, not a test: compare the ratios, which are measured within one round.

Set-ups (every process its own; all on 127.0.0.1):

* ``direct``: one rpccore green client -> one rpccore green server (bound);
* ``hub``: the same client process -> ``gateway.hub.Hub`` -> 2 rpccore green workers
  (each connects to the hub's ``out``).

Metrics: ``seq``, calls/s of ``add(1, 2)`` one at a time; ``inflight``, calls/s with 64
calls in flight (``async_=True`` AsyncResults, issued and joined in waves of 64). Each
measurement stops after ``--duration`` seconds (1.5) or 200,000 calls. The table shows
the medians over the rounds; the ratio is the median of the per-round ratios hub/direct.
Target: hub >= 70% of direct with 2 workers, with 64 calls in flight (throughput: what
workers add). The sequential ratio is informative: one call at a time is pure latency,
and the hub doubles the hops of every call (client -> hub -> worker and back), so it
cannot get far above 50% of direct. Next to every measurement the CPU time per call of
each process (all threads: ZeroMQ's I/O thread included) is printed: with two CPUs for
four or five processes, the hub's CPU per call is what limits the ratio.

Processes: the hub is pinned to the first CPU, the client to the second
(``os.sched_setaffinity``); the direct server and the workers are not pinned: they share
the machine's CPUs with the others (the direct server mostly gets the hub's CPU, which is
idle then). Every round starts fresh processes; the client holds both a direct and a hub
``Client`` and runs the set-ups in alternating order. Every child is stopped by PID
(SIGTERM, then SIGKILL) at the end of its round, on errors and on Ctrl-C, and dies with
the parent (PR_SET_PDEATHSIG).

``--profile DIR`` runs the hub child under cProfile (``BENCH_PROFILE=DIR`` in its
environment), writes ``DIR/hub-<pid>.prof`` when it is stopped, and prints its top
functions.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
BIND: Final = "tcp://127.0.0.1:*"
WIDTH: Final = 64
MAX_CALLS: Final = 200_000
METRICS: Final = ("seq", "inflight")
TITLES: Final = {"seq": "sequential calls/s", "inflight": f"{WIDTH} in flight calls/s"}
TARGET: Final = 0.70  # hub/direct, for the metrics in TARGETED
TARGETED: Final = ("inflight",)
WORKERS: Final = 2
HEARTBEAT: Final = 5.0


# -- children -----------------------------------------------------------------------------


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def run_server(name: str, endpoint: str | None) -> None:
    from rpccore.green import Server

    class Bench:
        def add(self, a: int, b: int) -> int:
            return a + b

        def whoami(self) -> str:
            return name

    server = Server(Bench(), name=name, heartbeat=HEARTBEAT)
    if endpoint is None:
        [bound] = server.bind(BIND)
        emit({"ready": True, "endpoint": bound})
    else:
        server.connect(endpoint)
        emit({"ready": True})
    server.run()


def run_hub() -> None:
    import gevent

    from gateway.hub import Hub

    hub = Hub([BIND], [BIND], heartbeat=HEARTBEAT)
    profile: Any = None
    directory = os.environ.get("BENCH_PROFILE")
    if directory:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()

    def stop() -> None:
        if profile is not None:
            profile.disable()
            profile.dump_stats(str(Path(directory or ".") / f"hub-{os.getpid()}.prof"))
        os._exit(0)

    gevent.signal_handler(signal.SIGTERM, stop)
    emit({"ready": True, "in": hub.in_endpoints[0], "out": hub.out_endpoints[0]})
    hub.run()


def run_client(direct: str, via_hub: str) -> None:
    import gevent
    import gevent.os

    from rpccore import RemoteError
    from rpccore.green import Client

    clients = {"direct": Client(direct, timeout=5), "hub": Client(via_hub, timeout=5)}
    # Wait (bounded) until the hub knows every worker: each answers whoami in turn.
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while len(seen) < WORKERS and time.monotonic() < deadline:
        try:
            seen.add(clients["hub"].call("whoami"))
        except RemoteError:
            gevent.sleep(0.05)
    for client in clients.values():  # warm up
        for _ in range(200):
            client.call("add", 1, 2)
    emit({"ready": True, "workers": sorted(seen)})
    buffer = b""
    while True:
        chunk = gevent.os.tp_read(0, 4096)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            cmd = json.loads(line)
            emit(measure(clients[cmd["target"]], cmd["metric"], cmd["duration"]))
    for client in clients.values():
        client.close()


def measure(client: Any, metric: str, duration: float) -> dict[str, Any]:
    try:
        n, start = 0, time.perf_counter()
        end = start + duration
        if metric == "seq":
            while n < MAX_CALLS and time.perf_counter() < end:
                client.call("add", 1, 2)
                n += 1
        else:
            while n < MAX_CALLS and time.perf_counter() < end:
                calls = [client.call("add", 1, 2, async_=True) for _ in range(WIDTH)]
                for call in calls:
                    call.get()
                n += WIDTH
        elapsed = time.perf_counter() - start
        return {"ok": True, "rate": n / elapsed, "seconds": elapsed}
    except Exception as exc:  # reported as n/a by the parent
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def child_main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(int(os.environ["BENCH_PARENT"]))
    role, cpu = argv[0], int(argv[1])
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    if role == "server":
        run_server("direct", None)
    elif role == "worker":
        run_server(argv[2], argv[3])
    elif role == "hub":
        run_hub()
    else:
        run_client(argv[2], argv[3])


# -- the parent ---------------------------------------------------------------------------


class ChildError(Exception):
    pass


CHILDREN: list[Child] = []


class Child:
    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=ROOT,
        )
        CHILDREN.append(self)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ChildError(f"{self.name} did not answer within {timeout:.0f}s") from None
        if line is None:
            self.proc.wait(timeout=5)
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise ChildError(f"{self.name} exited with {self.proc.returncode}: {tail}")
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        return self.recv(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._log.close()
        CHILDREN.remove(self)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (ZeroMQ's I/O thread included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_all() -> None:
    for child in list(CHILDREN):
        child.stop()


def run_round(
    index: int, duration: float, cpus: tuple[int, int], env: dict[str, str], logs: Path
) -> dict[tuple[str, str], float | None]:
    hub_cpu, client_cpu = cpus
    results: dict[tuple[str, str], float | None] = {}
    try:
        hub_env = dict(env)
        if "BENCH_PROFILE_DIR" in env:
            hub_env["BENCH_PROFILE"] = env["BENCH_PROFILE_DIR"]
        hub = Child("hub", ["hub", str(hub_cpu)], hub_env, logs)
        server = Child("server", ["server", "-1"], env, logs)
        hub_ready, server_ready = hub.recv(20), server.recv(20)
        for i in range(WORKERS):
            worker = Child(
                f"worker{i + 1}", ["worker", "-1", f"w{i + 1}", hub_ready["out"]], env, logs
            )
            worker.recv(20)
        client = Child(
            "client",
            ["client", str(client_cpu), server_ready["endpoint"], hub_ready["in"]],
            env,
            logs,
        )
        ready = client.recv(40)
        if len(ready["workers"]) < WORKERS:
            raise ChildError(f"the hub found only workers {ready['workers']}")
        for metric in METRICS:
            order = ("direct", "hub") if index % 2 == 0 else ("hub", "direct")
            for target in order:
                roles = {c.name.rstrip("0123456789"): c for c in CHILDREN}
                before = {c.name: cpu_seconds(c.proc.pid) for c in CHILDREN}
                answer = client.request(
                    {"target": target, "metric": metric, "duration": duration}, duration * 10 + 10
                )
                used: dict[str, float] = {}
                for c in CHILDREN:
                    role = c.name.rstrip("0123456789")
                    used[role] = used.get(role, 0.0) + cpu_seconds(c.proc.pid) - before[c.name]
                if answer["ok"]:
                    results[(target, metric)] = answer["rate"]
                    calls = answer["rate"] * answer["seconds"]
                    cpu = ", ".join(f"{r} {used[r] / calls * 1e6:.0f}" for r in sorted(roles))
                    print(f"  {target} {metric}: CPU us/call {cpu}", flush=True)
                else:
                    print(f"  ! {target} {metric}: {answer['error']}", flush=True)
                    results[(target, metric)] = None
    finally:
        stop_all()
    return results


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(rounds: list[dict[tuple[str, str], float | None]]) -> bool:
    print()
    header = f"{'metric':<24}{'direct':>12}{'hub (2 workers)':>17}{'hub/direct':>12}  target"
    print(header)
    print("-" * len(header))
    passed = True
    for metric in METRICS:
        direct = [r[("direct", metric)] for r in rounds]
        hub = [r[("hub", metric)] for r in rounds]
        ratios = [h / d for h, d in zip(hub, direct, strict=True) if h and d]
        ratio = median(ratios)
        ok = ratio is not None and ratio >= TARGET
        if metric in TARGETED:
            passed = passed and ok
            verdict = f">= {TARGET:.0%} {'ok' if ok else 'MISSED'}"
        else:
            verdict = "(info)"
        rs = "n/a" if ratio is None else f"{ratio:.0%}"
        per_round = ", ".join(f"{r:.0%}" for r in ratios)
        print(
            f"{TITLES[metric]:<24}{fmt(median([d for d in direct if d])):>12}"
            f"{fmt(median([h for h in hub if h])):>17}{rs:>12}  {verdict:<13}"
            f"(rounds: {per_round})"
        )
    return passed


def print_profile(directory: Path) -> None:
    import pstats

    for path in sorted(directory.glob("hub-*.prof")):
        print(f"\n== {path}")
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s measurements")
    parser.add_argument("--profile", type=Path, help="cProfile the hub into this directory")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 0.5
    cpus = sorted(os.sched_getaffinity(0))
    pinned = (cpus[0], cpus[1]) if len(cpus) >= 2 else (-1, -1)
    env = dict(os.environ, BENCH_PARENT=str(os.getpid()), PYTHONUNBUFFERED="1")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        env["BENCH_PROFILE_DIR"] = str(args.profile)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-hub-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    print(
        f"hub bench: {args.rounds} round(s) of {args.duration} s per measurement; "
        f"hub on CPU {pinned[0]}, client on CPU {pinned[1]}; logs in {logs}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rounds = []
    try:
        for index in range(args.rounds):
            results = run_round(index, args.duration, pinned, env, logs)
            line = ", ".join(f"{t} {m} {fmt(v)}" for (t, m), v in sorted(results.items()))
            print(f"round {index + 1}: {line}", flush=True)
            rounds.append(results)
    except (ChildError, KeyboardInterrupt) as exc:
        print(f"bench stopped: {exc!r}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    passed = report(rounds)
    if args.json is not None:
        raw = [{f"{t} {m}": v for (t, m), v in r.items()} for r in rounds]
        args.json.write_text(json.dumps(raw, indent=1))
    if args.profile is not None:
        print_profile(args.profile)
    return 0 if passed else 3


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        sys.exit(main())
