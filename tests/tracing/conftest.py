"""Fixtures of the tracing tests: one real redis-server for the session (tests/auth's
redis_support, imported from there), a fresh key prefix per test, and child processes
stopped by PID."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))

from redis_support import RedisServer
from tracing_support import Children


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    procs = Children(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()
