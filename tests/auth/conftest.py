"""Fixtures of the token tests: one real redis-server for the session (redis_support), and
stores on it or on a SQLite file in the test's tmp dir. Each Redis store gets its own key
namespace, so tests never see each other's records. For the end-to-end modules, per module:
the child processes, the ledger backend, and an ``AuthSetup`` on each kind of store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gate_support import AuthSetup, Children, LedgerBackend
from redis_support import RedisServer

from auth.store import RedisTokenStore, SqliteTokenStore, TokenStore


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["sqlite", "redis"])
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, redis_namespace: str
) -> Callable[[], TokenStore]:
    """A function making a new (unopened) store of each kind, all on the same data."""
    if request.param == "sqlite":
        path = tmp_path / "tokens.db"
        return lambda: SqliteTokenStore(path)
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisTokenStore(url, namespace=redis_namespace)


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Children]:
    procs = Children(tmp_path_factory.mktemp("children"))
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def backend(children: Children, tmp_path_factory: pytest.TempPathFactory) -> LedgerBackend:
    return LedgerBackend(children, tmp_path_factory.mktemp("backend"))


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def setup(
    request: pytest.FixtureRequest,
    backend: LedgerBackend,
    tmp_path_factory: pytest.TempPathFactory,
) -> AuthSetup:
    """A secret and a token store of each kind."""
    kind: str = request.param
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    return AuthSetup(kind, tmp_path_factory.mktemp(kind), backend, redis_url)
