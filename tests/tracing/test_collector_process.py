"""``zerogate collector`` as a child process (``python -m gateway.collector``), with a config
file and a real redis-server: records in, queries out; rogue senders; SIGKILL under load never
blocks a sender; SIGTERM stops it cleanly; a bad config or a busy port exits 2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tracing_support import (
    REPO,
    Children,
    Sender,
    free_endpoints,
    pack,
    run_async,
    span_id,
    trace_id,
    wire_record,
)

from rpccore.aio import Client


def config_file(tmp_path: Path, records: str, query: str, store: str = "memory") -> Path:
    path = tmp_path / "zerogate.yaml"
    path.write_text(
        f"tracing:\n  collector: {records}\n  query: {query}\n  store: {store}\n  ttl: 600\n"
    )
    return path


async def query(endpoint: str, method: str, *args: Any) -> Any:
    async with Client(endpoint, timeout=5) as client:
        return await client.call(method, *args)


async def wait_for(endpoint: str, key: str, value: int, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = await query(endpoint, "info")
        if info[key] >= value or time.monotonic() > deadline:
            return info
        await asyncio.sleep(0.05)


def records(tid: int, count: int) -> bytes:
    now = time.time()
    return pack(
        wire_record(tid=trace_id(tid), sid=span_id(n + 1), t0=now, t1=None, t2=now + 0.001)
        for n in range(count)
    )


@run_async(timeout=60)
async def test_records_in_queries_out_with_redis_and_rogues_shrugged_off(
    children: Children, tmp_path: Path, redis_url: str
) -> None:
    pull, rpc = free_endpoints()
    redis_url = redis_url.removesuffix("/0") + "/1"  # a database of its own
    proc = children.collector("-c", str(config_file(tmp_path, pull, rpc, redis_url)))
    with Sender(pull) as rogue:
        for frame in (b"\x00" * 100, b"\xc1", pack([{"v": 1}, 3])):
            rogue.send(frame)
        rogue.sock.send_multipart([b"a", b"b", b"c"])
        assert (await wait_for(rpc, "dropped_malformed", 5))["dropped_malformed"] == 5
    with Sender(pull) as rogue:
        rogue.send(b"\x91" * 2_000_000)  # over 1 MiB: refused unread, the sender cut off
        await asyncio.sleep(0.2)
    with Sender(pull) as sender:
        sender.send(records(1, 3))
        sender.send(records(2, 1))
        info = await wait_for(rpc, "stored", 4)
    assert proc.poll() is None
    assert info["store"] == "redis"
    assert info["ttl"] == 600
    assert info["stored"] == 4
    assert info["dropped_malformed"] == 5  # the oversized message never reached it
    trace = await query(rpc, "trace", trace_id(1))
    assert [record["sid"] for record in trace] == [span_id(1), span_id(2), span_id(3)]
    recent = await query(rpc, "recent", 5)
    assert {line["trace_id"] for line in recent} >= {trace_id(1), trace_id(2)}
    assert "records on " + pull in children.log_of("collector")


@run_async(timeout=60)
async def test_killing_the_collector_under_load_never_blocks_a_sender(
    children: Children, tmp_path: Path
) -> None:
    pull, rpc = free_endpoints()
    config = str(config_file(tmp_path, pull, rpc))
    proc = children.collector("-c", config)
    frame = records(1, 20)
    slowest, killed_at = 0.0, None
    with Sender(pull, hwm=100) as sender:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            before = time.monotonic()
            sender.send(frame)  # NOBLOCK: queued, or dropped and counted
            slowest = max(slowest, time.monotonic() - before)
            if killed_at is None and before - started > 0.5:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = sender.sent
            if sender.sent % 100 == 0:
                await asyncio.sleep(0)  # the loop stays alive, as in a real process
        assert proc.wait(timeout=10) == -signal.SIGKILL
        elapsed = time.monotonic() - started
        # A blocked send would wait for the dead collector forever; a busy machine can still
        # deschedule this process for a moment, hence the generous bound.
        assert slowest < 0.5, f"a send took {slowest * 1000:.1f} ms"
        assert elapsed < 3.0
        assert sender.dropped > 0  # the queue filled up once the collector was gone
        # a new collector on the same endpoint gets what the sender queued and sends next
        children.collector("-c", config, name="collector-2")
        deadline = time.monotonic() + 10
        info: dict[str, Any] = {"stored": 0}
        while info["stored"] == 0 and time.monotonic() < deadline:
            sender.send(frame)
            info = await query(rpc, "info")
        assert info["stored"] > 0


def run_command(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ZEROGATE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway.collector", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )


def test_a_bad_config_exits_2_naming_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "zerogate.yaml"
    path.write_text("tracing:\n  ttl: 0\n")
    result = run_command("-c", str(path))
    assert result.returncode == 2
    assert "line 2: tracing.ttl: expected an integer >= 1, got 0" in result.stderr
    result = run_command("-c", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "no such config file" in result.stderr


def test_a_busy_endpoint_exits_2(children: Children) -> None:
    pull, rpc = free_endpoints()
    children.collector("--bind", pull, "--query", rpc)
    result = run_command("--bind", pull, "--query", free_endpoints()[1])
    assert result.returncode == 2
    assert "cannot bind" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_it_cleanly(children: Children, sig: int) -> None:
    pull, rpc = free_endpoints()
    proc = children.collector("--bind", pull, "--query", rpc)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=10) == 0
    assert "store memory" in children.log_of("collector")
