"""Several processes (as uvicorn workers and the CLI are) share one SQLite token store: they
create it together on first use, then write and read at the same time. WAL mode and the busy
timeout must make every operation succeed; nothing may be lost."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from auth_support import opened, run_async

from auth.store import SqliteTokenStore

WORKERS = 4
PER_WORKER = 40
WORKER_SCRIPT = Path(__file__).with_name("sqlite_worker.py")
TIMEOUT = 120.0
ROOT = Path(__file__).resolve().parents[2]


def test_several_processes_share_a_new_store(tmp_path: Path) -> None:
    db, go = tmp_path / "tokens.db", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), str(db), str(n), str(PER_WORKER), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for n in range(WORKERS)
    ]
    go.touch()
    printed: list[str] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err
            printed += out.split("\n")[:-1]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(printed) == WORKERS * PER_WORKER
    expected = dict(line.split() for line in printed)
    _check_store(db, expected)
    with closing(sqlite3.connect(db)) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@run_async
async def _check_store(db: Path, expected: dict[str, str]) -> None:
    async with opened(lambda: SqliteTokenStore(db)) as store:
        records = await store.records()
        assert {record.id: record.token_hash for record in records} == expected
        assert all(record.last_used_at is not None for record in records)
        revoked = [record for record in records if record.revoked_at is not None]
        assert len(revoked) == WORKERS * len(range(0, PER_WORKER, 3))
