"""End-to-end support: real backends in child processes and a real uvicorn on loopback.

``start_backend(children, kind)`` runs ``tests/gateway/backends.py`` in a child process on a
free loopback port (``kind``: "green" and "aio" are ours on each driver, "zerorpc" is the
real zerorpc 0.6.3) and returns its endpoint once it answers. ``Gateway(config_text)``
runs ``gateway.app.create_app`` under a real ``uvicorn.Server`` in a thread, on a free port,
with its own event loop; ``gateway.url`` is its base URL. Both are stopped by the fixtures.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final, TypeVar

from loopback import free_port, wait_for_port
from served import ServedApp

from gateway.app import create_app
from gateway.config import parse_config
from gateway.http_protocol import uvicorn_http

HERE: Final = Path(__file__).resolve().parent
BACKENDS: Final = HERE / "backends.py"
REPO: Final = HERE.parent.parent
START_TIMEOUT: Final = 20.0

T = TypeVar("T")


class Children:
    """Child processes started by a test, each stopped by PID at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log_of(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def start_backend(
    children: Children, kind: str, *, port: int | None = None, heartbeat: float = 5.0
) -> tuple[str, subprocess.Popen[bytes]]:
    """A test backend (``backends.Shop``) of ``kind`` on a free port: (endpoint, process)."""
    port = port or free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = children.start(
        str(BACKENDS), kind, endpoint, str(heartbeat), name=f"backend-{kind}-{port}"
    )
    wait_for_port(port)
    return endpoint, proc


class Gateway(ServedApp):
    """``create_app`` under a real uvicorn in a background thread, on a free port."""

    def __init__(self, config_text: str, **uvicorn_options: Any) -> None:
        self.config = parse_config(config_text)
        options = {"access_log": False, **uvicorn_http(), **uvicorn_options}  # as zerogate serve
        super().__init__(create_app(self.config), **options)

    def __enter__(self) -> Gateway:
        super().__enter__()
        return self

    @property
    def gateway_state(self) -> Any:
        """The app's ``Gateway`` object (registry, pools, metrics)."""
        return self.app.state.gateway

    def in_loop(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """``fn()`` run on uvicorn's event loop (so it sees a consistent state)."""
        loop = self.server.servers[0].get_loop()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    def tasks(self) -> dict[str, str]:
        """The tasks alive on uvicorn's loop: name -> what it runs."""

        def alive() -> dict[str, str]:
            me = asyncio.current_task()
            return {t.get_name(): repr(t.get_coro()) for t in asyncio.all_tasks() if t is not me}

        return self.in_loop(alive)

    def channels(self) -> dict[str, tuple[int, int]]:
        """For each "service endpoint": (open channels of its client, calls in flight)."""

        def read() -> dict[str, tuple[int, int]]:
            found = {}
            for name, entry in self.gateway_state.registry.services.items():
                in_flight = {
                    e["endpoint"]: e["in_flight"] for e in entry.pool.snapshot()["endpoints"]
                }
                for endpoint, backend in entry.pool._backends.items():
                    found[f"{name} {endpoint}"] = (
                        backend.client.open_channels,
                        in_flight[endpoint],
                    )
            return found

        return self.in_loop(read)


def service_config(name: str, endpoints: list[str], **keys: Any) -> str:
    """A ``services:`` entry as YAML text (keys written as flow-style YAML values)."""
    lines = [f"  {name}:", f"    endpoints: [{', '.join(endpoints)}]"]
    lines += [f"    {key}: {value}" for key, value in keys.items()]
    return "\n".join(lines)


def wait_until(check: Callable[[], str | None], timeout: float, what: str) -> float:
    """Poll ``check`` (None when satisfied, else what is still wrong) until it is satisfied;
    the seconds it took, or AssertionError after ``timeout`` naming ``what`` and the last
    complaint."""
    start = time.monotonic()
    while True:
        complaint = check()
        if complaint is None:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: still {complaint} after {timeout} s")
        time.sleep(0.02)


def leftovers(
    gateway: Gateway, baseline_tasks: Collection[str], *, unreachable: Collection[str] = ()
) -> str | None:
    """What the gateway still holds beyond its idle state (None when nothing): open
    channels, calls in flight, and tasks not in ``baseline_tasks`` (names of the idle
    gateway's tasks: uvicorn's, the pools' probes, the registry's refreshers).

    The endpoints of the ``unreachable`` services have no backend: a probe's ping keeps a
    channel open there most of the time (it waits two heartbeats for an answer), so only
    their calls in flight count."""
    busy = {
        where: (channels, in_flight)
        for where, (channels, in_flight) in gateway.channels().items()
        if in_flight or (channels and where.split(" ")[0] not in unreachable)
    }
    extra = {n: coro for n, coro in gateway.tasks().items() if n not in baseline_tasks}
    if not busy and not extra:
        return None
    return f"(open channels, in flight) {busy}, extra tasks {extra}"
