"""Helpers of the tracing tests: records on the wire, a bounded asyncio runner, a plain PUSH
sender, and the collector as a child process (``python -m gateway.collector``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgpack
import zmq
from asyncrun import async_runner
from loopback import free_ports

from gateway.trace_records import TraceFilter, parse_record
from gateway.trace_store import MAX_SCANNED, TraceStore

REPO: Final = Path(__file__).resolve().parent.parent.parent
START_TIMEOUT: Final = 20.0
TEST_TIMEOUT: Final = 30.0

TID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
SID: Final = "00f067aa0ba902b7"


def wire_record(**overrides: Any) -> dict[str, Any]:
    """A valid version-1 record as a sender ships it; ``overrides`` replace keys (a value of
    ``...`` removes the key)."""
    record: dict[str, Any] = {
        "v": 1,
        "tid": TID,
        "sid": SID,
        "par": None,
        "side": "server",
        "svc": "calc",
        "m": "add",
        "t0": 1_700_000_000.25,
        "t1": 1_700_000_000.251,
        "t2": 1_700_000_000.252,
        "out": "ok",
        "exc": None,
        "n": None,
        "proc": "calc-server",
        "host": "app-1",
        "pid": 4242,
    }
    for key, value in overrides.items():
        if value is ...:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def trace_id(number: int) -> str:
    return f"{number:032x}"


def span_id(number: int) -> str:
    return f"{number:016x}"


def pack(records: Iterable[dict[str, Any]]) -> bytes:
    return msgpack.packb(list(records), use_bin_type=True)  # type: ignore[no-any-return]


run_async = async_runner(TEST_TIMEOUT)


def free_endpoints() -> tuple[str, str]:
    """Two free loopback endpoints: (records, queries)."""
    records, queries = free_ports(2)
    return f"tcp://127.0.0.1:{records}", f"tcp://127.0.0.1:{queries}"


class Sender:
    """A plain PUSH socket, as a traced process has one: never blocks unless asked to."""

    def __init__(self, endpoint: str, *, hwm: int = 1000) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.connect(endpoint)
        self.sent = 0
        self.dropped = 0

    def send(self, frame: bytes, *, block: bool = False) -> bool:
        try:
            self.sock.send(frame, 0 if block else zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.sock.close()
        self.context.term()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Children:
    """Child processes started by a test, each stopped by PID at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("ZEROGATE_CONFIG", None)
        proc = subprocess.Popen(
            [sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
        log.close()
        self.procs.append(proc)
        return proc

    def collector(self, *args: str, name: str = "collector") -> subprocess.Popen[bytes]:
        """``python -m gateway.collector ARGS``, once it printed its ready line."""
        proc = self.start("-m", "gateway.collector", *args, name=name)
        deadline = time.monotonic() + START_TIMEOUT
        while "records on" not in self.log_of(name):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the collector did not start:\n{self.log_of(name)}")
            time.sleep(0.02)
        return proc

    def log_of(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def failed_trace_ids(store: TraceStore, limit: int = 10) -> list[str]:
    """The ids of the newest ``limit`` traces with a failed span, newest first."""
    return [line["trace_id"] for line in await store.recent(limit, TraceFilter(failed=True))]


async def check_filtered_recent(store: TraceStore, now: float) -> None:
    """What both stores answer to ``recent`` with a filter: the newest traces with a span of
    the service and method (that failed), found across the Redis store's read chunks, and
    none beyond the newest MAX_SCANNED traces, unless it failed: a failure is found however
    many traces went well since."""
    total = MAX_SCANNED + 50
    records = []
    for n in range(total):
        t0 = now - 2 * total + n  # trace n + 1 starts a second after trace n
        common = {"tid": trace_id(n + 1), "t0": t0, "t1": None, "t2": t0 + 0.01}  # never 0
        records.append(wire_record(sid=span_id(1), svc="calc", m="add", **common))
        if n % 50 == 0 and n > 0:
            records.append(wire_record(sid=span_id(2), svc="shop", m="buy", out="error", **common))
        if n == 0:  # beyond the newest MAX_SCANNED: found only as a failure
            records.append(wire_record(sid=span_id(3), svc="old", m="thing", **common))
            records.append(wire_record(sid=span_id(5), svc="old", m="gone", out="lost", **common))
        if n == total - 10:
            http = {"side": "http", "svc": "http", "m": "GET /x"}
            records.append(wire_record(sid=span_id(4), **http, **common))
    parsed = [parse_record(record) for record in records]
    assert await store.add([record for record in parsed if record is not None]) == len(records)

    async def listed(limit: int, where: TraceFilter) -> list[int]:
        return [int(line["trace_id"], 16) - 1 for line in await store.recent(limit, where)]

    newest_buys = [total - 50 - 50 * k for k in range(5)]  # 1000, 950, ...
    assert await listed(5, TraceFilter("shop", "buy")) == newest_buys
    assert await listed(2, TraceFilter("shop", "buy", failed=True)) == newest_buys[:2]
    assert await listed(5, TraceFilter(failed=True)) == newest_buys
    assert await listed(5, TraceFilter("calc", "add", failed=True)) == []
    assert await listed(3, TraceFilter(method="add")) == [total - 1, total - 2, total - 3]
    assert await listed(3, TraceFilter("calc", "buy")) == []  # both on the same span
    assert await listed(3, TraceFilter("http", "GET /x")) == [total - 10]
    assert await listed(3, TraceFilter("old")) == []
    assert await listed(3, TraceFilter("old", "thing")) == []
    assert await listed(3, TraceFilter("old", failed=True)) == [0]
    assert await listed(3, TraceFilter("old", "thing", failed=True)) == []  # it did not fail
    every_failure = [total - 50 - 50 * k for k in range(total // 50 - 1)] + [0]
    assert await listed(50, TraceFilter(failed=True)) == every_failure
    (line,) = await store.recent(1, TraceFilter("shop"))
    assert (line["spans"], line["errors"]) == (2, 1)
