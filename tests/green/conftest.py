"""Fixtures shared by the gevent-driver tests (this directory runs in its own pytest
process, so gevent never meets the asyncio tests).

``green_child_processes`` starts child processes with ``gevent.subprocess`` (their pipes
are cooperative, so waiting on a child never blocks the hub that serves our sockets) and
SIGKILLs every one still running, by PID, at teardown. ``green_test_timeout`` bounds a
test: it raises ``gevent.Timeout`` in the test's greenlet when it runs too long.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess
import pytest

GREEN_TEST_TIMEOUT = 60.0


@dataclass
class GreenChildProcesses:
    """The child processes of one test. stdout is a cooperative pipe; stderr goes to a
    file in the test's tmp dir (``stderr(proc)`` returns its tail for messages)."""

    log_dir: Path
    procs: list[Any] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def spawn(self, argv: list[str], *, name: str, stdin: int = subprocess.DEVNULL) -> Any:
        """Start ``argv``; returns the ``gevent.subprocess.Popen``."""
        log = self.log_dir / f"{name}-{len(self.procs)}.stderr"
        with log.open("wb") as stderr:
            proc = gevent.subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def stderr(self, proc: Any, limit: int = 3000) -> str:
        try:
            return self.logs[proc.pid].read_text(errors="replace")[-limit:]
        except OSError:
            return "<no stderr>"

    def read_line(self, proc: Any, timeout: float) -> str:
        """One line of the child's stdout, waiting cooperatively ``timeout`` s at most."""
        with gevent.Timeout(timeout, TimeoutError(f"no line from pid {proc.pid}")):
            line = proc.stdout.readline()
        if not line:
            raise EOFError(f"pid {proc.pid} closed stdout; stderr:\n{self.stderr(proc)}")
        return line.decode().strip()

    def kill(self, proc: Any) -> None:
        """SIGKILL by PID (if still running), reap it and close its pipes."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@pytest.fixture
def green_child_processes(tmp_path: Path) -> Iterator[GreenChildProcesses]:
    children = GreenChildProcesses(tmp_path)
    try:
        yield children
    finally:
        children.kill_all()


@pytest.fixture
def green_test_timeout() -> Iterator[None]:
    """Fail a test that runs longer than GREEN_TEST_TIMEOUT (use it with usefixtures)."""
    with gevent.Timeout(GREEN_TEST_TIMEOUT):
        yield
