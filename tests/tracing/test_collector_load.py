"""The collector keeps up: 100,000 records pushed to a collector child process with a Redis
store are all stored, in bounded time. Prints the ingest rate (``pytest -s``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from tracing_support import Children, Sender, free_endpoints, pack, run_async, wire_record

from rpccore.aio import Client

RECORDS = 100_000
PER_MESSAGE = 100  # what an emitter flushing every few milliseconds sends under load


def messages(now: float) -> list[bytes]:
    frames = []
    for first in range(0, RECORDS, PER_MESSAGE):
        batch = []
        for n in range(first, first + PER_MESSAGE):
            call = n // 2  # a client and a server record per call, one trace per 5 calls
            side = "client" if n % 2 else "server"
            batch.append(
                wire_record(
                    tid=f"{call // 5 + 1:032x}",
                    sid=f"{call + 1:016x}",
                    side=side,
                    m=f"method{call % 20}",
                    t0=now,
                    t1=None,
                    t2=now + (call % 1000) / 1e5,
                )
            )
        frames.append(pack(batch))
    return frames


@pytest.mark.slow
@run_async(timeout=180)
async def test_100k_records_are_ingested_into_redis(
    children: Children, tmp_path: Path, redis_url: str
) -> None:
    pull, rpc = free_endpoints()
    redis_url = redis_url.removesuffix("/0") + "/2"  # a database of its own
    config = tmp_path / "zerogate.yaml"
    config.write_text(f"tracing: {{collector: '{pull}', query: '{rpc}', store: '{redis_url}'}}\n")
    children.collector("-c", str(config))
    frames = messages(time.time())
    info: dict[str, Any] = {}
    async with Client(rpc, timeout=10) as client:
        with Sender(pull, hwm=0) as sender:  # this test wants every record: block if need be
            started = time.monotonic()
            for frame in frames:
                sender.send(frame, block=True)
            sent = time.monotonic() - started
            while time.monotonic() - started < 120:
                info = await client.call("info")
                if info["stored"] + info["dropped_store"] >= RECORDS:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
        stats = await client.call("stats")
    rate = info["stored"] / elapsed
    print(
        f"\ncollector with Redis: {info['stored']:,} records stored in {elapsed:.2f} s "
        f"({rate:,.0f} records/s; sending took {sent:.2f} s)"
    )
    assert info["stored"] == RECORDS
    assert info["dropped_malformed"] == info["dropped_store"] == 0
    assert sum(entry["count"] for entry in stats["calc"].values()) == RECORDS // 2
    assert rate > 5000
