"""What the benchmarks share: child processes, /proc readings, formatting.

Imported as ``_common`` by the scripts next to it (``bench/`` is ``sys.path[0]`` when one of
them runs, in the parent and in its children alike). Not a package and not a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent

# Free loopback ports: the tests' helper, not a copy of it.
sys.path.append(str(ROOT / "tests" / "helpers"))
from loopback import free_port, free_ports  # noqa: E402, F401  (for the scripts here)

# -- in a child -----------------------------------------------------------------------


def emit(message: dict[str, Any]) -> None:
    """Send one JSON line to the parent."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGTERM us when the parent dies, so nothing is left behind."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


# -- in the parent --------------------------------------------------------------------


class ChildError(Exception):
    pass


CHILDREN: list[Child] = []


class Child:
    """One child process, spoken to with JSON lines on its stdin and stdout.

    With ``json_lines=False`` it is a plain command: its stdout goes to the log with its
    stderr, and only ``stop`` applies. ``quit_on_eof``: ``stop`` first closes the child's
    stdin and gives it 2 s to quit by itself (a profiled child writes its profile then).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        logs: Path,
        env: dict[str, str],
        *,
        json_lines: bool = True,
        quit_on_eof: bool = False,
    ) -> None:
        self.name = name
        self.quit_on_eof = quit_on_eof
        self.log_path = logs / f"{name}-{len(CHILDREN)}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if json_lines else subprocess.DEVNULL,
            stdout=subprocess.PIPE if json_lines else self._log,
            stderr=self._log,
            env=env,
            cwd=ROOT,
        )
        CHILDREN.append(self)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        if json_lines:
            threading.Thread(target=self._read, daemon=True).start()

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.pid} returncode={self.proc.returncode}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

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
            raise ChildError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise ChildError(f"{self.name} is gone: {self.log_tail()}") from None
        answer = self.recv(timeout)
        if not answer.get("ok"):
            raise ChildError(f"{self.name}: {answer.get('error')}")
        return answer

    def log_tail(self, lines: int = 8) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        """Terminate by PID (SIGTERM, then SIGKILL) and reap."""
        if self.quit_on_eof and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
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
        if self in CHILDREN:
            CHILDREN.remove(self)


def stop_all() -> None:
    for child in list(CHILDREN):
        child.stop()


def choose_cpus() -> tuple[int | None, int | None]:
    """The first two CPUs we may run on, or (None, None): then nothing is pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("warning: fewer than 2 CPUs: not pinning", file=sys.stderr)
        return None, None
    return cpus[0], cpus[1]


# -- /proc ----------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    with Path(f"/proc/{pid}/status").open() as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of all the threads of a process (zmq's I/O threads included), in seconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its VmRSS; False when the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset VmHWM to VmRSS
    except OSError:
        return False
    return True


class RssSampler(threading.Thread):
    """Samples the VmRSS of some processes every ``period`` seconds; keeps the maximum."""

    def __init__(self, pids: Sequence[int], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = list(pids), period
        self.peak = dict.fromkeys(self.pids, 0.0)
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for pid in self.pids:
                with contextlib.suppress(OSError):
                    self.peak[pid] = max(self.peak[pid], proc_status(pid)["VmRSS"])
            self.samples += 1
            self._stop_event.wait(self.period)

    def finish(self) -> dict[int, float]:
        self._stop_event.set()
        self.join()
        return self.peak


# -- numbers --------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
