"""Benchmark zerorpc 0.6.3 and rpccore side by side, in one run, with ratios.

Run it from the repository root (``make bench`` runs the first line)::

    .venv/bin/python bench/rpc.py                  # 5 rounds, about 3 minutes
    .venv/bin/python bench/rpc.py --quick          # 1 short round: a smoke test (~15 s)
    .venv/bin/python bench/rpc.py --rounds 3 --only seq,inflight --json /tmp/rpc.json
    .venv/bin/python bench/rpc.py --quick --only seq --profile /tmp/prof   # cProfile
    PYTHONPATH=/tmp/other .venv/bin/python bench/rpc.py   # bench another rpccore tree

It is a benchmark, not a test: the numbers depend on the machine and on whatever else
runs on it. Compare the ratios, which are measured within one round.

Pairs (server + client, each in its own process):

* ``zerorpc``: zerorpc 0.6.3 server + zerorpc client (the competitor);
* ``green``: our gevent server + our gevent client;
* ``aio``: our gevent server + our asyncio client;
* ``aio-aio``: our asyncio server (coroutine methods) + our asyncio client (informative);
* ``raw``: a raw pyzmq ROUTER echo + REQ (sequential) or DEALER (64 in flight) client,
  the transport's ceiling (informative).

Metrics:

* ``seq``: calls/s of ``add(1, 2)``, one call at a time;
* ``inflight``: calls/s of ``add(1, 2)`` with 64 calls in flight on one client, issued and
  joined in waves of 64 (zerorpc: ``async=True`` AsyncResults; ours green:
  ``async_=True`` greenlets; asyncio: ``asyncio.gather``);
* ``stream``: items/s of streams of 50,000 small ints (``range(n)``, ``--stream-items``),
  each consumed fully, one after the other while time is left (a stream is only cut
  short after a hard limit of 10x the duration: abandoning a zerorpc stream midway
  stalls that client for 10 s, until the server's heartbeat gives up);
* ``echo``: calls/s of echoing 1 MiB of bytes (so also MiB/s each way);
* ``mem``: a 1 GiB stream of 16,384 items of 64 KiB (one random blob made once, sent
  again and again), consumed by the client, in a fresh server and client process; the
  parent samples both processes' VmRSS every 50 ms (and resets and reads their VmHWM)
  and reports each side's RSS growth over its baseline in MiB (and the MiB/s).

Every round starts fresh processes and runs every pair for every metric, the pairs in a
rotating order so drift hits all of them; each measurement stops after ``--duration``
seconds (1.5) or a fixed count, whichever comes first. The table shows the medians over
the rounds; each ratio is the median of the per-round ratios ours/zerorpc. Targets:
sequential >= 3x, 64 in flight >= 4x, stream >= 2x, 1 MiB echo >= 1x, RSS growth during
the 1 GiB stream <= 100 MiB on each side (checked on the worst round). A second table
gives the CPU time per call (item, MiB) of each side, all threads counted (zmq's I/O
thread included), next to the wall time: it tells where the time goes.

Every call has a 5 s timeout, so a stalled pair fails its measurement quickly (shown as
n/a, with the error); an informative pair that fails is dropped for the rest of the run.

Processes: servers are pinned to the first CPU, clients to the second
(``os.sched_setaffinity`` in each child). Children are this same file run with a hidden
``--role``; gevent is imported only by the zerorpc and gevent children and zerorpc only
by the zerorpc ones (each child reports its modules and the parent checks). A gevent or
asyncio client waits for its next command on its event loop, so heartbeats and reads go
on between measurements. Every server binds 127.0.0.1 on a free port; every child is
stopped by PID at the end of its round, on errors and on Ctrl-C, and dies with the
parent (PR_SET_PDEATHSIG) if the parent is killed.

``--tracing`` adds pairs with tracing on in both processes (``green+t``, ``aio+t``:
``$ZEROGATE_COLLECTOR`` set, so each process emits one trace record per call and ships
them) and the real collector storing them in a real Redis (``_collector``: both at idle
CPU priority, so that they take the time the pairs leave, as on a host of their own); it
prints the calls/s with tracing on over off for seq and inflight: the target is >= 0.85
(tracing costs at most 15%). A traced pair and its untraced twin are measured in turns, in
eight slices of a quarter of the duration each (``TURNS``: off, on, on, off, on, off, off,
on; the reverse in odd rounds). The collector is left to store every record before an
untraced turn, and set to work (``LEAD_IN``) before a traced turn that follows one or comes
first, as it always works while tracing is on. On a shared host calls/s drift by 20% over
seconds: compared with the twin's own turn in the rotation, seconds away, a round's ratio
had a standard deviation within a run of 0.10 to 0.20 on average, where in turns it has
0.04 to 0.07 (25 rounds, 2026-11-29). Each traced pair's calls/s in the tables are its
turns'. It also prints the records the collector stored per traced call (2, client and
server, when it kept up; the senders drop what it could not take, without waiting), and
the CPU time the collector and Redis spent per record stored: time the two cores could not
give the pair. Needs ``redis-server``. ``bench/trace_instructions.py`` measures what
tracing costs the traced processes alone, in instructions per call, which the host's noise
moves far less.

``--profile DIR`` runs every child under cProfile and writes ``DIR/<role>-<impl>-<pid>``
``.prof`` (servers dump when they are stopped, clients when they quit), then prints the
top functions of each; combine it with ``--quick --only METRIC``. cProfile charges
greenlet and event-loop waits to whatever function switched out: read the CPU table
first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from _collector import CollectorStack, start_collector
from _common import (
    ROOT,
    Child,
    ChildError,
    RssSampler,
    choose_cpus,
    cpu_seconds,
    die_with_parent,
    emit,
    fmt,
    fmt_ratio,
    median,
    proc_status,
    reset_peak,
    stop_all,
)

BIND: Final = "tcp://127.0.0.1:*"

MIB: Final = 1024 * 1024
BLOB_SIZE: Final = 64 * 1024
ECHO_SIZE: Final = MIB
WIDTH: Final = 64
RAW_PAYLOAD: Final = b"\x93\x82\xaamessage_id\xc4\x20" + b"0" * 32 + b"\xa1v\x03\xa3add\x92\x01\x02"

METRICS: Final = ("seq", "inflight", "stream", "echo", "mem")
TARGETS: Final = {"seq": 3.0, "inflight": 4.0, "stream": 2.0, "echo": 1.0}
MEM_LIMIT_MIB: Final = 100.0
TITLES: Final = {
    "seq": "sequential calls/s",
    "inflight": "64 in flight calls/s",
    "stream": "stream items/s",
    "echo": "1 MiB echo calls/s",
    "mem_server": "{size} stream: server RSS +MiB",
    "mem_client": "{size} stream: client RSS +MiB",
    "mem_rate": "{size} stream MiB/s (info)",
}


@dataclass(frozen=True)
class Pair:
    key: str
    server: str
    client: str
    metrics: tuple[str, ...]


PAIRS = (
    Pair("zerorpc", "zerorpc", "zerorpc", METRICS),
    Pair("green", "green", "green", METRICS),
    Pair("aio", "green", "aio", METRICS),
    Pair("aio-aio", "aio", "aio", METRICS),
    Pair("raw", "raw", "raw", ("seq", "inflight")),
)
TRACED_PAIRS: Final = (
    Pair("green+t", "green+t", "green+t", ("seq", "inflight")),
    Pair("aio+t", "green+t", "aio+t", ("seq", "inflight")),
)
TRACING_TARGET: Final = 0.85  # calls/s with tracing on over off
# The turns of a traced pair (B) and its untraced twin (A), or the reverse in odd rounds:
# drift that is linear, or quadratic, in time over them weighs on both alike.
TURNS: Final = "ABBABAAB"
SUMMED: Final = ("n", "elapsed", "server_cpu", "client_cpu")  # a traced measurement's sums
# Seconds of traced calls, not counted, before a traced turn that follows an untraced one:
# a sender's pass (0.02 s) and the collector's linger (0.1 s), and some more.
LEAD_IN: Final = 0.15
OURS: Final = ("green", "aio")  # the pairs the targets apply to
EXTRA: Final = ("aio-aio", "raw")  # informative: dropped for the rest of the run if they fail
# Every call's timeout (to its first reply): a stalled measurement fails in seconds, not 30.
STALL: Final = 5.0


# =====================================================================================
# Child processes: servers and clients
# =====================================================================================


def ready_message(**extra: Any) -> dict[str, Any]:
    loaded = {m.split(".")[0] for m in sys.modules}
    return {
        "ready": True,
        "pid": os.getpid(),
        "cpus": sorted(os.sched_getaffinity(0)),
        "gevent": "gevent" in loaded,
        "zerorpc": "zerorpc" in loaded,
        "rpccore": getattr(sys.modules.get("rpccore"), "__file__", None),
        **extra,
    }


def start_profile(tag: str) -> Callable[[], None] | None:
    directory = os.environ.get("BENCH_PROFILE")
    if not directory:
        return None
    import cProfile

    profile = cProfile.Profile()
    profile.enable()

    def dump() -> None:
        profile.disable()
        profile.dump_stats(str(Path(directory) / f"{tag}-{os.getpid()}.prof"))

    return dump


def dump_on_sigterm_green(dump: Callable[[], None] | None) -> None:
    if dump is None:
        return
    import gevent

    def stop() -> None:
        dump()
        os._exit(0)

    gevent.signal_handler(signal.SIGTERM, stop)


# -- servers ------------------------------------------------------------------------


def serve_zerorpc(blob: bytes) -> None:
    import itertools

    import zerorpc
    import zmq

    class Bench:
        def add(self, a: int, b: int) -> int:
            return a + b

        def echo(self, data: bytes) -> bytes:
            return data

        @zerorpc.stream  # type: ignore[untyped-decorator]
        def count(self, n: int) -> Iterable[int]:
            return range(n)

        @zerorpc.stream  # type: ignore[untyped-decorator]
        def big(self, n: int) -> Iterable[bytes]:
            return itertools.repeat(blob, n)

    server = zerorpc.Server(Bench())
    server.bind(BIND)
    endpoint = server._events._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
    emit(ready_message(endpoint=endpoint))
    dump_on_sigterm_green(start_profile("server-zerorpc"))
    server.run()


def serve_green(blob: bytes) -> None:
    import itertools

    from rpccore.green import Server, stream

    class Bench:
        def add(self, a: int, b: int) -> int:
            return a + b

        def echo(self, data: bytes) -> bytes:
            return data

        @stream
        def count(self, n: int) -> Iterable[int]:
            return range(n)

        @stream
        def big(self, n: int) -> Iterable[bytes]:
            return itertools.repeat(blob, n)

    server = Server(Bench())
    [endpoint] = server.bind(BIND)
    emit(ready_message(endpoint=endpoint))
    dump_on_sigterm_green(start_profile("server-green"))
    server.run()


def serve_aio(blob: bytes) -> None:
    import asyncio
    from collections.abc import AsyncIterator

    from rpccore.aio import Server, stream

    # Coroutine methods: plain methods would run in the thread pool, by design.
    class Bench:
        async def add(self, a: int, b: int) -> int:
            return a + b

        async def echo(self, data: bytes) -> bytes:
            return data

        @stream
        async def count(self, n: int) -> Iterable[int]:
            return range(n)  # in memory: iterated on the loop

        async def big(self, n: int) -> AsyncIterator[bytes]:
            for _ in range(n):
                yield blob

    async def main() -> None:
        server = Server(Bench())
        [endpoint] = server.bind(BIND)
        emit(ready_message(endpoint=endpoint))
        dump = start_profile("server-aio")
        if dump is not None:

            def stop() -> None:
                dump()
                os._exit(0)

            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
        await server.run()

    asyncio.run(main())


def serve_raw() -> None:
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(BIND)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    emit(ready_message(endpoint=endpoint.decode() if isinstance(endpoint, bytes) else endpoint))
    dump = start_profile("server-raw")
    if dump is not None:

        def stop(*_: object) -> None:
            dump()
            os._exit(0)

        signal.signal(signal.SIGTERM, stop)
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:  # an echo: [identity, (b"",) payload] back as it came
        send(recv())


# -- client adapters (blocking: zerorpc, gevent, raw pyzmq) -------------------------


class SyncClient(Protocol):
    def add(self) -> Any: ...
    def wave(self, width: int) -> None: ...
    def stream(self, method: str, n: int) -> Iterator[Any]: ...
    def echo(self, data: bytes) -> bytes: ...


class ZerorpcClient:
    def __init__(self, endpoint: str) -> None:
        import zerorpc

        self.client = zerorpc.Client(timeout=STALL, heartbeat=5)
        self.client.connect(endpoint)

    def add(self) -> Any:
        return self.client("add", 1, 2)

    def wave(self, width: int) -> None:
        results = [self.client("add", 1, 2, **{"async": True}) for _ in range(width)]
        for result in results:
            result.get()

    def stream(self, method: str, n: int) -> Iterator[Any]:
        iterator: Iterator[Any] = self.client(method, n)
        return iterator

    def echo(self, data: bytes) -> bytes:
        answer: bytes = self.client("echo", data)
        return answer


class GreenClient:
    def __init__(self, endpoint: str) -> None:
        from rpccore.green import Client

        self.client = Client(endpoint, timeout=STALL)

    def add(self) -> Any:
        return self.client.call("add", 1, 2)

    def wave(self, width: int) -> None:
        calls = [self.client.call("add", 1, 2, async_=True) for _ in range(width)]
        for call in calls:
            call.get()

    def stream(self, method: str, n: int) -> Iterator[Any]:
        return self.client.stream(method, n)

    def echo(self, data: bytes) -> bytes:
        answer: bytes = self.client.call("echo", data)
        return answer


class RawClient:
    def __init__(self, endpoint: str) -> None:
        import zmq

        context = zmq.Context()
        self.req = context.socket(zmq.REQ)
        self.dealer = context.socket(zmq.DEALER)
        for sock in (self.req, self.dealer):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)

    def add(self) -> Any:
        self.req.send(RAW_PAYLOAD)
        self.req.recv()
        return 3

    def wave(self, width: int) -> None:
        send, recv = self.dealer.send, self.dealer.recv
        for _ in range(width):
            send(RAW_PAYLOAD)
        for _ in range(width):
            recv()

    def stream(self, method: str, n: int) -> Iterator[Any]:
        raise NotImplementedError("raw pyzmq runs seq and inflight only")

    def echo(self, data: bytes) -> bytes:
        raise NotImplementedError("raw pyzmq runs seq and inflight only")


def close_quietly(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


def hard_limit(duration: float) -> float:
    """How long a whole stream may run past the measurement's duration."""
    return max(10 * duration, 20.0)


def measured(n: int, start: float, **extra: Any) -> dict[str, Any]:
    return {"ok": True, "n": n, "elapsed": time.perf_counter() - start, **extra}


def sync_op(client: SyncClient, cmd: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement; every loop stops at ``limit`` units or ``duration`` seconds."""
    op, duration, limit = cmd["op"], float(cmd["duration"]), int(cmd["limit"])
    clock = time.perf_counter
    start = clock()
    deadline = start + duration
    n = 0
    if op == "seq":
        while n < limit:
            client.add()
            n += 1
            if clock() >= deadline:
                break
        return measured(n, start)
    if op == "inflight":
        while n < limit:
            client.wave(WIDTH)
            n += WIDTH
            if clock() >= deadline:
                break
        return measured(n, start)
    if op == "stream":
        # Whole streams, as long as time is left: abandoning a zerorpc stream midway
        # stalls its client for 10 s (a heartbeat timeout). Only a stream that runs past
        # the hard limit is cut short.
        hard = start + hard_limit(duration)
        while n < limit and clock() < deadline:
            items = client.stream("count", int(cmd["size"]))
            try:
                for _ in items:
                    n += 1
                    if not n & 1023 and clock() >= hard:
                        break
            finally:
                close_quietly(items)
        return measured(n, start)
    if op == "echo":
        data = os.urandom(ECHO_SIZE)
        while n < limit:
            if len(client.echo(data)) != ECHO_SIZE:
                raise RuntimeError("echo answered a different size")
            n += 1
            if clock() >= deadline:
                break
        return measured(n, start)
    if op == "mem":
        total = 0
        items = client.stream("big", limit)
        try:
            for item in items:
                total += len(item)
                n += 1
                if not n & 255 and clock() >= deadline:
                    break
        finally:
            close_quietly(items)
        return measured(n, start, bytes=total, complete=n == limit)
    raise ValueError(f"unknown op {op!r}")


def warm_sync(client: SyncClient, impl: str) -> None:
    if client.add() != 3:
        raise RuntimeError("add(1, 2) != 3")
    client.wave(WIDTH)
    if impl != "raw":
        if list(client.stream("count", 10)) != list(range(10)):
            raise RuntimeError("count(10) is not range(10)")
        for item in client.stream("big", 2):
            if len(item) != BLOB_SIZE:
                raise RuntimeError("big() sent an item of the wrong size")


def next_command(line: str) -> dict[str, Any] | None:
    """The command on a stdin line, or None at quit or EOF."""
    if not line:
        return None
    cmd: dict[str, Any] = json.loads(line)
    return None if cmd["op"] == "quit" else cmd


def failure(exc: Exception) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def serve_commands(
    run: Callable[[dict[str, Any]], dict[str, Any]], wait: Callable[[], object] | None
) -> None:
    """Answer one JSON command per stdin line with one JSON line, until quit or EOF.

    ``wait`` waits cooperatively for stdin: a gevent process must keep its hub running
    between commands (heartbeats, the reader), not sit in a blocking read.
    """
    while True:
        if wait is not None:
            wait()
        cmd = next_command(sys.stdin.readline())
        if cmd is None:
            return
        try:
            result = run(cmd)
        except Exception as exc:
            result = failure(exc)
        emit(result)


def run_sync_client(impl: str, endpoint: str) -> None:
    client: SyncClient
    if impl == "zerorpc":
        client = ZerorpcClient(endpoint)
    elif impl == "green":
        client = GreenClient(endpoint)
    else:
        client = RawClient(endpoint)
    warm_sync(client, impl)
    emit(ready_message())
    dump = start_profile(f"client-{impl}")
    wait = None
    if impl != "raw":
        from gevent.socket import wait_read

        fd = sys.stdin.fileno()

        def wait() -> None:
            wait_read(fd)

    serve_commands(lambda cmd: sync_op(client, cmd), wait)
    if dump is not None:
        dump()


# -- the asyncio client -------------------------------------------------------------


def run_aio_client(endpoint: str) -> None:
    import asyncio
    from collections.abc import AsyncGenerator

    from rpccore.aio import Client

    def stream(client: Client, method: str, n: int) -> AsyncGenerator[Any, None]:
        items: AsyncGenerator[Any, None] = client.stream(method, n)  # type: ignore[assignment]
        return items

    async def wave(client: Client, width: int) -> None:
        await asyncio.gather(*(client.call("add", 1, 2) for _ in range(width)))

    async def measure(client: Client, cmd: dict[str, Any]) -> dict[str, Any]:
        op, duration, limit = cmd["op"], float(cmd["duration"]), int(cmd["limit"])
        clock = time.perf_counter
        start = clock()
        deadline = start + duration
        n = 0
        if op == "seq":
            while n < limit:
                await client.call("add", 1, 2)
                n += 1
                if clock() >= deadline:
                    break
            return measured(n, start)
        if op == "inflight":
            while n < limit:
                await wave(client, WIDTH)
                n += WIDTH
                if clock() >= deadline:
                    break
            return measured(n, start)
        if op == "stream":
            hard = start + hard_limit(duration)
            while n < limit and clock() < deadline:
                async with contextlib.aclosing(stream(client, "count", int(cmd["size"]))) as items:
                    async for _ in items:
                        n += 1
                        if not n & 1023 and clock() >= hard:
                            break
            return measured(n, start)
        if op == "echo":
            data = os.urandom(ECHO_SIZE)
            while n < limit:
                if len(await client.call("echo", data)) != ECHO_SIZE:
                    raise RuntimeError("echo answered a different size")
                n += 1
                if clock() >= deadline:
                    break
            return measured(n, start)
        if op == "mem":
            total = 0
            async with contextlib.aclosing(stream(client, "big", limit)) as items:
                async for item in items:
                    total += len(item)
                    n += 1
                    if not n & 255 and clock() >= deadline:
                        break
            return measured(n, start, bytes=total, complete=n == limit)
        raise ValueError(f"unknown op {op!r}")

    async def connect() -> Client:
        client = Client(endpoint, timeout=STALL)
        if await client.call("add", 1, 2) != 3:
            raise RuntimeError("add(1, 2) != 3")
        await wave(client, WIDTH)
        if [x async for x in client.stream("count", 10)] != list(range(10)):
            raise RuntimeError("count(10) is not range(10)")
        async for item in client.stream("big", 2):
            if len(item) != BLOB_SIZE:
                raise RuntimeError("big() sent an item of the wrong size")
        return client

    async def readline() -> str:
        """Wait for stdin on the loop (the loop keeps running between commands)."""
        loop, fd = asyncio.get_running_loop(), sys.stdin.fileno()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        return sys.stdin.readline()

    async def main() -> None:
        client = await connect()
        emit(ready_message())
        dump = start_profile("client-aio")
        while (cmd := next_command(await readline())) is not None:
            try:
                result = await measure(client, cmd)
            except Exception as exc:
                result = failure(exc)
            emit(result)
        if dump is not None:
            dump()
        client.close()

    asyncio.run(main())


def slow_sender(interval: str | None) -> None:
    """Make the trace sender pass every ``interval`` seconds instead of 20 ms
    (``bench/trace_instructions.py``: a process under callgrind runs about fifty times
    slower, and its passes should carry as many records as at full speed)."""
    if not interval:
        return
    from rpccore import _tracing

    _tracing.enable_from_environment()
    handler = _tracing.collector_handler()
    if handler is None:
        raise RuntimeError("BENCH_TRACE_INTERVAL without $ZEROGATE_COLLECTOR")
    handler._interval = handler._pause = float(interval)


def child_main(role: str, impl: str, cpu: int | None, endpoint: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    die_with_parent(int(os.environ["BENCH_PARENT"]))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # after PYTHONPATH: a snapshot of rpccore can be benched
    slow_sender(os.environ.get("BENCH_TRACE_INTERVAL"))
    if role == "server":
        blob = os.urandom(BLOB_SIZE)
        {
            "zerorpc": lambda: serve_zerorpc(blob),
            "green": lambda: serve_green(blob),
            "aio": lambda: serve_aio(blob),
            "raw": serve_raw,
        }[impl]()
    else:
        assert endpoint is not None
        if impl == "aio":
            run_aio_client(endpoint)
        else:
            run_sync_client(impl, endpoint)


# =====================================================================================
# The parent: spawns, measures, samples memory, prints
# =====================================================================================


@dataclass
class Setup:
    duration: float
    stream_size: int
    mem_items: int
    mem_timeout: float
    server_cpu: int | None
    client_cpu: int | None
    logs: Path
    env: dict[str, str]
    dropped: set[str] = field(default_factory=set)
    collector: CollectorStack | None = None  # --tracing

    def failed(self, pair: Pair, metric: str, exc: Exception) -> None:
        print(f"  ! {metric} {pair.key}: {exc}", flush=True)
        if pair.key in EXTRA and pair.key not in self.dropped:
            self.dropped.add(pair.key)
            print(
                f"  ! {pair.key} is informative only: dropped for the rest of the run", flush=True
            )


def spawn(setup: Setup, role: str, impl: str, endpoint: str | None = None) -> Child:
    """``impl`` may end in ``+t``: the child then runs with tracing on (``--tracing``)."""
    cpu = setup.server_cpu if role == "server" else setup.client_cpu
    base, traced = impl.removesuffix("+t"), impl.endswith("+t")
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--impl", base]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    if endpoint is not None:
        argv += ["--endpoint", endpoint]
    env = setup.env
    if traced:
        assert setup.collector is not None
        endpoint = setup.collector.endpoint
        env = {**env, "ZEROGATE_COLLECTOR": endpoint, "ZEROGATE_PROCESS_NAME": f"{role}"}
    return Child(f"{role}-{impl}", argv, setup.logs, env, quit_on_eof=role == "client")


RPCCORE: set[str] = set()  # where the children imported rpccore from


def check_ready(child: Child, impl: str, message: dict[str, Any]) -> None:
    impl = impl.removesuffix("+t")
    if message.get("rpccore"):
        RPCCORE.add(str(Path(message["rpccore"]).parent))
    wants_gevent = impl in ("zerorpc", "green")
    if message["gevent"] != wants_gevent or message["zerorpc"] != (impl == "zerorpc"):
        raise ChildError(
            f"{child.name} imported gevent={message['gevent']} zerorpc={message['zerorpc']}"
        )


def start_pairs(setup: Setup, pairs: Sequence[Pair]) -> dict[str, Child]:
    """Start the servers the pairs need, then one client per pair; wait until all are up."""
    servers = {
        impl: spawn(setup, "server", impl) for impl in dict.fromkeys(p.server for p in pairs)
    }
    endpoints = {}
    for impl, server in servers.items():
        message = server.recv(timeout=30)
        check_ready(server, impl, message)
        endpoints[impl] = message["endpoint"]
    clients = {p.key: spawn(setup, "client", p.client, endpoints[p.server]) for p in pairs}
    for pair in pairs:
        check_ready(clients[pair.key], pair.client, clients[pair.key].recv(timeout=60))
    return {**{f"server-{k}": v for k, v in servers.items()}, **clients}


def command(setup: Setup, metric: str) -> dict[str, Any]:
    limits = {"seq": 10_000_000, "inflight": 10_000_000, "stream": 10_000_000, "echo": 100_000}
    return {
        "op": metric,
        "duration": setup.duration,
        "limit": limits[metric],
        "size": setup.stream_size,
    }


def timed_request(
    server: Child, client: Child, cmd: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Run one measurement; add the CPU seconds each side spent on it."""
    before = cpu_seconds(server.pid), cpu_seconds(client.pid)
    result = client.request(cmd, timeout=timeout)
    result["server_cpu"] = cpu_seconds(server.pid) - before[0]
    result["client_cpu"] = cpu_seconds(client.pid) - before[1]
    return result


def untraced_twin(pair: Pair) -> Pair:
    """The pair a traced pair (``green+t``) is compared with (``green``)."""
    key = pair.key.removesuffix("+t")
    return next(p for p in PAIRS if p.key == key)


def measure_traced(
    setup: Setup, children: dict[str, Child], pair: Pair, metric: str, number: int
) -> dict[str, Any]:
    """One measurement of a traced pair and one of its untraced twin, taken in TURNS (see
    the module doc): the host's drift over those seconds weighs on both alike. The result
    is the traced turns' sums, with ``off_rate`` (the twin's calls/s over its turns), the
    records the collector stored per traced call, and its and Redis's CPU per record."""
    twin, collector = untraced_twin(pair), setup.collector
    assert collector is not None
    first, second = (twin, pair) if number % 2 == 0 else (pair, twin)
    turns = [first if turn == "A" else second for turn in TURNS]
    cmd = {**command(setup, metric), "duration": setup.duration * 2 / len(TURNS)}
    collector.settle()
    stored, store_cpu = collector.info()["stored"], collector.cpu_seconds()
    sums = {key: dict.fromkeys(SUMMED, 0.0) for key in (pair.key, twin.key)}
    previous, led_in = None, 0  # led_in: the calls of lead-ins (their records are stored)
    for turn in turns:
        server, client = children[f"server-{turn.server}"], children[turn.key]
        if turn is twin:
            # The records of the traced turn before it are stored first: the store's
            # work would otherwise slow this untraced turn, and flatter the ratio.
            collector.settle()
        elif previous is not turn:
            # Nor may a traced turn begin with an idle store, as it never is while tracing
            # is on: calls for LEAD_IN seconds first, not counted, set it to work.
            led_in += client.request({**cmd, "duration": LEAD_IN}, timeout=60)["n"]
        result = timed_request(server, client, cmd, timeout=setup.duration + 60)
        previous = turn
        for name in SUMMED:
            sums[turn.key][name] += result[name]
    collector.settle()
    records = collector.info()["stored"] - stored
    on, off = sums[pair.key], sums[twin.key]
    store_us = (collector.cpu_seconds() - store_cpu) * 1e6
    return {
        **on,
        "ok": True,
        "off_rate": off["n"] / off["elapsed"],
        "stored_per_call": records / max(on["n"] + led_in, 1),
        "store_us_per_record": store_us / max(records, 1),
    }


# -- memory ---------------------------------------------------------------------------


def measure_mem(setup: Setup, pair: Pair) -> dict[str, Any]:
    children = start_pairs(setup, [pair])
    try:
        server, client = children[f"server-{pair.server}"], children[pair.key]
        pids = (server.pid, client.pid)
        time.sleep(0.2)  # let both settle before the baseline
        base = {pid: proc_status(pid)["VmRSS"] for pid in pids}
        exact = all(reset_peak(pid) for pid in pids)
        sampler = RssSampler(pids)
        sampler.start()
        cmd = {"op": "mem", "duration": setup.mem_timeout, "limit": setup.mem_items}
        try:
            result = timed_request(server, client, cmd, setup.mem_timeout + 30)
        finally:
            peak = sampler.finish()
        if exact:
            for pid in pids:
                peak[pid] = max(peak[pid], proc_status(pid)["VmHWM"])
        return {
            **result,
            "server_mib": peak[server.pid] - base[server.pid],
            "client_mib": peak[client.pid] - base[client.pid],
            "server_base_mib": base[server.pid],
            "client_base_mib": base[client.pid],
            "rate": result["bytes"] / MIB / result["elapsed"],
            "samples": sampler.samples,
            "hwm": exact,
        }
    finally:
        for child in children.values():
            child.stop()


# -- rounds ---------------------------------------------------------------------------

Values = dict[str, dict[str, float | None]]  # metric -> pair -> value


def rotate(items: Sequence[Pair], by: int) -> list[Pair]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def run_round(setup: Setup, metrics: Sequence[str], number: int) -> tuple[Values, dict[str, Any]]:
    values: Values = {}
    raw: dict[str, Any] = {}
    throughput = [m for m in metrics if m != "mem"]
    if throughput:
        pairs = [
            p
            for p in PAIRS
            if p.key not in setup.dropped and any(m in p.metrics for m in throughput)
        ]
        children = start_pairs(setup, pairs)
        try:
            for metric in throughput:
                values[metric], raw[metric] = {}, {}
                for pair in rotate([p for p in pairs if metric in p.metrics], number):
                    if pair.key in setup.dropped:
                        continue
                    try:
                        if pair.key.endswith("+t"):
                            result = measure_traced(setup, children, pair, metric, number)
                        else:
                            result = timed_request(
                                children[f"server-{pair.server}"],
                                children[pair.key],
                                command(setup, metric),
                                timeout=setup.duration + 60,
                            )
                    except ChildError as exc:
                        setup.failed(pair, metric, exc)
                        values[metric][pair.key] = None
                        continue
                    raw[metric][pair.key] = result
                    values[metric][pair.key] = result["n"] / result["elapsed"]
        finally:
            for child in children.values():
                child.stop()
    if "mem" in metrics:
        for key in ("mem_server", "mem_client", "mem_rate"):
            values[key] = {}
        raw["mem"] = {}
        for pair in rotate([p for p in PAIRS if "mem" in p.metrics], number):
            if pair.key in setup.dropped:
                continue
            try:
                result = measure_mem(setup, pair)
            except ChildError as exc:
                setup.failed(pair, "mem", exc)
                for key in ("mem_server", "mem_client", "mem_rate"):
                    values[key][pair.key] = None
                continue
            raw["mem"][pair.key] = result
            values["mem_server"][pair.key] = result["server_mib"]
            values["mem_client"][pair.key] = result["client_mib"]
            values["mem_rate"][pair.key] = result["rate"]
            if not result["complete"]:
                print(
                    f"  ! mem {pair.key}: stopped after {result['n']} items "
                    f"({setup.mem_timeout:.0f}s limit)",
                    flush=True,
                )
    return values, raw


# -- reporting ------------------------------------------------------------------------


def ratio(values: dict[str, float | None], key: str) -> float | None:
    ours, theirs = values.get(key), values.get("zerorpc")
    if ours is None or not theirs:
        return None
    return ours / theirs


def print_round(number: int, total: int, values: Values, raw: dict[str, Any]) -> None:
    print(f"round {number + 1}/{total}", flush=True)
    for metric, per_pair in values.items():
        digits = 1 if metric.startswith("mem") else 0
        cells = []
        for pair in PAIRS:
            if pair.key not in per_pair:
                continue
            cell = f"{pair.key}={fmt(per_pair[pair.key], digits)}"
            if pair.key != "zerorpc" and not metric.startswith("mem"):
                cell += f" ({fmt_ratio(ratio(per_pair, pair.key))})"
            cells.append(cell)
        print(f"  {metric:<10} " + "  ".join(cells), flush=True)
        turns = [
            f"{key}: {fmt_ratio(per_pair[key] / result['off_rate'])}"
            for key, result in raw.get(metric, {}).items()
            if "off_rate" in result and per_pair.get(key) is not None
        ]
        if turns:
            print(f"  {'':<10} tracing on / off in turns: " + "  ".join(turns), flush=True)


def summarize(rounds: list[Values]) -> dict[str, dict[str, Any]]:
    metrics = list(dict.fromkeys(m for values in rounds for m in values))
    summary: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        per_round = [values.get(metric, {}) for values in rounds]
        keys = list(dict.fromkeys(k for values in per_round for k in values))
        row: dict[str, Any] = {
            "median": {k: median(v.get(k) for v in per_round) for k in keys},
            "max": {
                k: max((x for v in per_round if (x := v.get(k)) is not None), default=None)
                for k in keys
            },
        }
        if not metric.startswith("mem"):
            row["ratio"] = {
                k: median(ratio(v, k) for v in per_round) for k in keys if k != "zerorpc"
            }
            row["ratios"] = {k: [ratio(v, k) for v in per_round] for k in keys if k != "zerorpc"}
        summary[metric] = row
    return summary


def verdict(metric: str, row: dict[str, Any]) -> tuple[str, str]:
    """(target, result) for a table row."""
    if metric in TARGETS:
        target = TARGETS[metric]
        checks = [(k, row["ratio"].get(k)) for k in OURS]
        text = f">= {target:g}x"
        ok = {k: r is not None and r >= target for k, r in checks}
    elif metric in ("mem_server", "mem_client"):
        text = f"<= {MEM_LIMIT_MIB:g} MiB"
        worst = {k: row["max"].get(k) for k in OURS}
        ok = {k: v is not None and v <= MEM_LIMIT_MIB for k, v in worst.items()}
    else:
        return "", ""
    if all(ok.values()):
        return text, "PASS"
    return text, "FAIL (" + ", ".join(k for k, v in ok.items() if not v) + ")"


def print_table(summary: dict[str, dict[str, Any]], rounds: int, mem_mib: int) -> None:
    size = f"{mem_mib // 1024} GiB" if mem_mib % 1024 == 0 else f"{mem_mib} MiB"
    header = (
        f"{'metric (median of ' + str(rounds) + ')':<31}{'zerorpc':>10}{'ours green':>12}"
        f"{'ours aio-cli':>13}{'green/z':>9}{'aio/z':>8}  {'target':<12}{'result':<15}"
        f"{'aio/aio (x)':>19}{'raw zmq':>10}"
    )
    print()
    print(header)
    print("-" * len(header))
    for metric, row in summary.items():
        med, digits = row["median"], 1 if metric.startswith("mem") else 0
        ratios = row.get("ratio", {})
        target, result = verdict(metric, row)
        extra = fmt(med.get("aio-aio"), digits) if "aio-aio" in med else "-"
        if "aio-aio" in ratios:
            extra += f" ({fmt_ratio(ratios['aio-aio'])})"
        print(
            f"{TITLES[metric].format(size=size):<31}{fmt(med.get('zerorpc'), digits):>10}"
            f"{fmt(med.get('green'), digits):>12}{fmt(med.get('aio'), digits):>13}"
            f"{fmt_ratio(ratios.get('green')) if ratios else '-':>9}"
            f"{fmt_ratio(ratios.get('aio')) if ratios else '-':>8}  {target:<12}{result:<15}"
            f"{extra:>19}{fmt(med.get('raw'), digits) if 'raw' in med else '-':>10}"
        )
    print()
    print(
        "ours aio-cli = our gevent server + our asyncio client; ratios are medians of the\n"
        "per-round ratios; RSS rows are the growth over each process's baseline (median\n"
        "shown, the worst round is what the target checks); raw zmq = pyzmq REQ/DEALER to\n"
        "a ROUTER echo (the ceiling)."
    )


def print_tracing(
    summary: dict[str, dict[str, Any]], rounds: list[Values], raws: list[dict[str, Any]]
) -> None:
    """Calls/s with tracing on over off, per round: each traced measurement against its
    untraced twin's, taken in turns (``measure_traced``)."""
    print(
        f"\ntracing on / off (median of per-round ratios; on and off measured in turns),"
        f" target >= {TRACING_TARGET:g}"
    )
    for metric in ("seq", "inflight"):
        if metric not in summary:
            continue
        cells = []
        for key in ("green", "aio"):
            # Each round's traced calls/s over its twin's in the same slices (measure_traced).
            traced = [
                (v.get(metric, {}).get(f"{key}+t"), raw.get(metric, {}).get(f"{key}+t", {}))
                for v, raw in zip(rounds, raws, strict=True)
            ]
            ratios = [on / result["off_rate"] for on, result in traced if on is not None]
            off = median(result.get("off_rate") for _, result in traced)
            value = statistics.median(ratios) if ratios else None
            verdict_text = "PASS" if value is not None and value >= TRACING_TARGET else "FAIL"
            on = summary[metric]["median"].get(key + "+t")
            cells.append(
                f"{key}: {fmt(on, 0)} on / {fmt(off, 0)} off = {fmt_ratio(value)} {verdict_text}"
            )
        print(f"  {TITLES[metric]:<22} " + "   ".join(cells))
        kept, cpu = [], []
        for key in ("green+t", "aio+t"):
            results = [raw.get(metric, {}).get(key, {}) for raw in raws]
            stored = median(result.get("stored_per_call") for result in results)
            kept.append(f"{key}: {fmt(stored, 2)}")
            cpu.append(f"{key}: {fmt(median(r.get('store_us_per_record') for r in results), 1)}")
        print(f"  {'  records stored/call':<22} " + "   ".join(kept) + "   (2 = all of them)")
        print(
            f"  {'  store CPU us/record':<22} " + "   ".join(cpu) + "   (the collector and Redis,"
            " on the pair's two cores)"
        )


def num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def per_unit(metric: str, result: dict[str, Any], key: str) -> float:
    """Microseconds of ``result[key]`` per call, item or MiB."""
    count = result["bytes"] / MIB if metric == "mem" else result["n"]
    return 1e6 * float(result[key]) / max(float(count), 1.0)


def print_cpu_table(raws: list[dict[str, Any]]) -> None:
    """CPU microseconds per unit on each side, next to the wall time per unit."""
    units = {"seq": "call", "inflight": "call", "stream": "item", "echo": "call", "mem": "MiB"}
    print("\nCPU us per unit, median: server + client (all threads) / wall time per unit")
    print(f"{'metric':<16}" + "".join(f"{p.key:>24}" for p in PAIRS))
    for metric, unit in units.items():
        if not any(metric in raw for raw in raws):
            continue
        cells = []
        for pair in PAIRS:
            per_round = [raw.get(metric, {}).get(pair.key) for raw in raws]
            results = [r for r in per_round if r is not None]
            if not results:
                cells.append("-")
                continue

            server = statistics.median(per_unit(metric, r, "server_cpu") for r in results)
            client = statistics.median(per_unit(metric, r, "client_cpu") for r in results)
            wall = statistics.median(per_unit(metric, r, "elapsed") for r in results)
            cells.append(f"{num(server)} + {num(client)} / {num(wall)}")
        print(f"{metric + ' (' + unit + ')':<16}" + "".join(f"{c:>24}" for c in cells))


def print_profiles(directory: Path) -> None:
    import pstats

    for path in sorted(directory.glob("*.prof")):
        print(f"\n== {path} (top 15 by own time)")
        stats = pstats.Stats(str(path))
        stats.sort_stats("tottime").print_stats(15)


def parent_main(args: argparse.Namespace) -> int:
    metrics = list(METRICS)
    if args.only:
        wanted = {m.strip() for m in args.only.split(",") if m.strip()}
        unknown = sorted(wanted - set(METRICS))
        if unknown:
            print(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
            return 2
        metrics = [m for m in METRICS if m in wanted]
    rounds = 1 if args.quick else args.rounds
    duration = args.duration or (0.5 if args.quick else 1.5)
    mem_mib = args.mem_mib or (256 if args.quick else 1024)
    server_cpu, client_cpu = choose_cpus()
    logs = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    env = {**os.environ, "BENCH_PARENT": str(os.getpid())}
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        env["BENCH_PROFILE"] = str(Path(args.profile).resolve())
    setup = Setup(
        duration=duration,
        stream_size=args.stream_items or (20_000 if args.quick else 50_000),
        mem_items=mem_mib * MIB // BLOB_SIZE,
        mem_timeout=60.0,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        logs=logs,
        env=env,
    )
    print(
        f"rpc bench: {rounds} round(s) of {', '.join(metrics)}; {duration:g}s per measurement; "
        f"stream of {setup.stream_size:,} ints; memory: {mem_mib} MiB in "
        f"{setup.mem_items:,} x 64 KiB; servers on CPU {server_cpu}, clients on CPU "
        f"{client_cpu}",
        flush=True,
    )

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if args.tracing:
        global PAIRS
        PAIRS = (*PAIRS, *TRACED_PAIRS)
        try:
            setup.collector = start_collector(logs, env)
        except ChildError as exc:
            print(f"the collector cannot start: {exc}", file=sys.stderr)
            stop_all()
            return 1
        print(
            f"tracing: zerogate collector at {setup.collector.endpoint}, storing in Redis "
            "(both at idle priority)",
            flush=True,
        )

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    started = time.monotonic()
    all_values: list[Values] = []
    all_raw: list[dict[str, Any]] = []
    try:
        for number in range(rounds):
            values, raw = run_round(setup, metrics, number)
            all_values.append(values)
            all_raw.append(raw)
            print_round(number, rounds, values, raw)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the children", file=sys.stderr)
        return 130
    except ChildError as exc:
        print(f"\na child failed to start: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        shutil.rmtree(logs, ignore_errors=True)
    summary = summarize(all_values)
    print_table(summary, rounds, mem_mib)
    if args.tracing:
        print_tracing(summary, all_values, all_raw)
    if RPCCORE:
        print(f"rpccore: {', '.join(sorted(RPCCORE))}")
    print_cpu_table(all_raw)
    print(f"\n{time.monotonic() - started:.0f}s in all")
    if args.json:
        document = {
            "argv": sys.argv,
            "setup": {
                "rounds": rounds,
                "metrics": metrics,
                "duration": duration,
                "stream_size": setup.stream_size,
                "mem_items": setup.mem_items,
                "server_cpu": server_cpu,
                "client_cpu": client_cpu,
            },
            "rounds": [{"values": v, "raw": r} for v, r in zip(all_values, all_raw, strict=True)],
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"raw results: {args.json}")
    if args.profile:
        print_profiles(Path(args.profile))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark zerorpc 0.6.3 against rpccore (see the module docstring)."
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 short round: a smoke test")
    parser.add_argument("--only", metavar="METRIC[,METRIC]", help=f"of {', '.join(METRICS)}")
    parser.add_argument("--json", metavar="FILE", help="save the raw results as JSON")
    parser.add_argument("--duration", type=float, help="seconds per measurement (1.5; 0.5)")
    parser.add_argument("--stream-items", type=int, help="items per stream (50000; 20000)")
    parser.add_argument("--mem-mib", type=int, help="size of the memory stream (1024; 256)")
    parser.add_argument("--profile", metavar="DIR", help="cProfile every child into DIR")
    parser.add_argument(
        "--tracing", action="store_true", help="also measure with tracing on (seq, inflight)"
    )
    parser.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--impl", choices=("zerorpc", "green", "aio", "raw"), help=argparse.SUPPRESS
    )
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        child_main(args.role, args.impl, args.cpu, args.endpoint)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
