"""A real redis-server for tests: on a free loopback port, in a temporary directory, no
persistence, stopped by PID (and restartable on the same port, to test outages).

    server = RedisServer(tmp_path)  # skips the test when redis-server is not installed,
    server.start()                  # and fails it instead under CI=true
    ... server.url ...
    server.stop()                   # idempotent; start() again reuses the port
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

from loopback import free_port
from required import required

START_TIMEOUT: Final = 10.0


def redis_server_binary() -> str:
    """The redis-server executable; skips the test when there is none (fails it under CI)."""
    binary = shutil.which("redis-server")
    if binary is None:
        required("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    return binary


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process at a time, on one port for the server's whole life."""

    def __init__(self, directory: Path) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None, "already running"
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.directory), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _pong(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (SIGKILL: an outage, not a shutdown) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.proc else "stopped"
        return f"<RedisServer {self.url} {state}>"
