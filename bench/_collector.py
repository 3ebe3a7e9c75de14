"""The real trace collector behind the benchmarks' tracing rows: Redis and ``zerogate
collector`` storing into it, as the tracing issue measures them ("collector running, Redis
storing").

Both run at idle CPU priority (``chrt --idle``, SCHED_IDLE): the pairs being measured keep
this machine's two cores busy, and a collector would normally run on a host of its own.
Here it gets the time the measured processes leave. What it cannot take in that time the
senders drop without waiting (by design: a slow collector never slows a call), so the
collector's counters are read around every traced measurement and printed: records stored
per call, to show how much of the load it kept up with.

Imported as ``_collector`` by the scripts next to it, like ``_common``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Child, ChildError, cpu_seconds, free_ports

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for Redis and the collector to answer
# settle(): idle once the collector's and Redis's CPU time grew by less than SETTLE_IDLE
# seconds in SETTLE_POLL seconds; SETTLE_LIMIT seconds at most.
SETTLE_POLL = 0.05
SETTLE_IDLE = 0.001
SETTLE_LIMIT = 5.0


def _idle(argv: list[str]) -> list[str]:
    chrt = shutil.which("chrt")
    return [chrt, "--idle", "0", *argv] if chrt else argv


def _zerogate() -> str:
    path = Path(sys.executable).parent / "zerogate"
    if not path.exists():
        raise ChildError(f"{path} does not exist")
    return str(path)


@dataclass
class CollectorStack:
    endpoint: str  # where traced processes PUSH their records (``$ZEROGATE_COLLECTOR``)
    query: str  # the collector's query service
    redis: Child
    collector: Child

    def info(self) -> dict[str, Any]:
        """The collector's counters (``received``, ``stored``, ...)."""
        argv = [_zerogate(), "rpc", "--timeout", "10", "-pj", self.query, "info"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise ChildError(f"collector info: {proc.stderr.strip()[-300:]}")
        answer: dict[str, Any] = json.loads(proc.stdout)
        return answer

    def cpu_seconds(self) -> float:
        """CPU seconds the collector and Redis have used."""
        return cpu_seconds(self.collector.pid) + cpu_seconds(self.redis.pid)

    def settle(self) -> None:
        """Wait until the collector and Redis are idle: every record sent is stored, and
        storing them slows no measurement that follows (an untraced one, say)."""
        deadline = time.monotonic() + SETTLE_LIMIT
        used = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(SETTLE_POLL)
            used, before = self.cpu_seconds(), used
            if used - before < SETTLE_IDLE:
                return

    def stop(self) -> None:
        self.collector.stop()
        self.redis.stop()


def _wait_for_port(port: int, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise ChildError(f"{child.name} exited: {child.log_tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise ChildError(f"{child.name} did not listen on {port} within {START_TIMEOUT:.0f}s")


def start_collector(logs: Path, env: dict[str, str]) -> CollectorStack:
    """Start Redis (no persistence) and the collector, both idle-priority, on free loopback
    ports; ChildError when either cannot start (redis-server missing, say)."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise ChildError("redis-server is not installed (Debian: apt install redis-server)")
    redis_port, bind_port, query_port = free_ports(3)
    argv = [redis_server, "--port", str(redis_port), "--bind", HOST]
    argv += ["--save", "", "--appendonly", "no"]  # nothing on disk
    redis = Child("redis", _idle(argv), logs, env, json_lines=False)
    _wait_for_port(redis_port, redis)
    endpoint, query = f"tcp://{HOST}:{bind_port}", f"tcp://{HOST}:{query_port}"
    config = logs / "collector.yaml"
    config.write_text(
        "services: {}\n"
        f"tracing: {{collector: '{endpoint}', store: 'redis://{HOST}:{redis_port}/0', "
        "ttl: 3600}\n"
    )
    collector = Child(
        "collector",
        _idle([_zerogate(), "collector", "-c", str(config), "--bind", endpoint, "--query", query]),
        logs,
        env,
        json_lines=False,
    )
    stack = CollectorStack(endpoint, query, redis, collector)
    try:
        _wait_for_port(query_port, collector)
        stack.info()
    except BaseException:
        stack.stop()
        raise
    return stack
