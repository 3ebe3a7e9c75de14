"""Where token records live: a ``TokenStore`` protocol, SQLite and Redis stores, and the two
operations that make a secret (``issue_token``, ``rotate_token``).

A record holds everything about a token except the token itself: its keyed hash
(``auth.secret``), the display prefix, name, scopes, times, an optional rate override and,
after a rotation, the previous hash with the deadline until which it still works. Revoked and
expired records stay, so that ``zerogate token list`` shows them and a gateway can say why a
token is refused. Every store method is a coroutine; a store that cannot be reached or read
raises ``StoreError``.

* ``SqliteTokenStore`` (the single-machine default): one file, created on first use, in WAL
  mode so readers never wait for a writer, with a busy timeout so that several uvicorn workers
  and the CLI can write at once. sqlite3 blocks, so each store runs its queries on one thread
  of its own, never on the event loop's.
* ``RedisTokenStore`` (several gateway replicas): a hash per token, a key per hash pointing to
  the token's id (the previous hash's key expires at the end of the grace period) and a set of
  ids; every change is one Lua script, so atomic. Scripts name keys they build themselves:
  fine for one Redis server, not for Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions

from gateway.config import RedisStore, SqliteStore

from . import tokens
from .secret import TokenHasher

DEFAULT_BUSY_TIMEOUT: Final = 5.0  # seconds a SQLite writer waits for another one
DEFAULT_REDIS_TIMEOUT: Final = 5.0  # seconds for a Redis connect or reply
DEFAULT_NAMESPACE: Final = "zerogate:tokens:"
ISSUE_ATTEMPTS: Final = 5  # token id collisions retried (about 48 random bits each)

T = TypeVar("T")


class StoreError(RuntimeError):
    """The token store cannot be opened, reached or read; the message says which store."""


class DuplicateToken(StoreError):
    """A record with the same id or hash exists already (a random collision: retry)."""


class TokenStatus(StrEnum):
    ACTIVE = "active"
    ROTATING = "rotating"  # active, and the secret it replaced still works for a while
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """What a store keeps about one token. Times are Unix seconds."""

    id: str  # "tok_" + 8 base62, not secret
    name: str
    prefix: str  # the token's first characters, shown to tell tokens apart
    token_hash: str = field(repr=False)  # hex HMAC-SHA256 of the token
    scopes: tuple[str, ...]  # "service:method" globs
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None  # updated at most once a minute or so, never per request
    revoked_at: float | None = None
    rate: float | None = None  # calls per second; None: rate_limit.per_token
    burst: int | None = None  # None: rate_limit.burst
    previous_hash: str | None = field(default=None, repr=False)  # the secret before a rotation
    previous_valid_until: float | None = None  # when that one stops working

    def status(self, now: float) -> TokenStatus:
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return TokenStatus.EXPIRED
        if self.previous_valid_until is not None and now < self.previous_valid_until:
            return TokenStatus.ROTATING
        return TokenStatus.ACTIVE


class TokenStore(Protocol):
    """What the verifier and the CLI need from a store of ``TokenRecord``s."""

    async def add(self, record: TokenRecord) -> None:
        """Keep a new record; ``DuplicateToken`` if its id or hash is taken."""

    async def get(self, token_id: str) -> TokenRecord | None:
        """The record with this id, if any."""

    async def find(self, token_hash: str) -> TokenRecord | None:
        """The record whose current or previous hash is ``token_hash``, if any (the caller
        checks which one matched and whether the previous one is still in its grace)."""

    async def records(self) -> list[TokenRecord]:
        """Every record, oldest first."""

    async def revoke(self, token_id: str, at: float) -> TokenRecord | None:
        """Mark the token revoked (revoking twice keeps the first time); None if unknown."""

    async def replace_secret(
        self, token_id: str, *, token_hash: str, prefix: str, previous_valid_until: float | None
    ) -> TokenRecord | None:
        """Make ``token_hash`` the token's hash; the old one stays valid until
        ``previous_valid_until`` (None: not at all). None if the id is unknown."""

    async def touch(self, token_id: str, at: float) -> None:
        """Record a use at ``at`` unless a later one is recorded already."""

    async def aclose(self) -> None:
        """Release connections and threads; closing twice is harmless."""


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just made: ``token`` is shown once and then exists nowhere."""

    token: str = field(repr=False)
    record: TokenRecord


async def issue_token(
    store: TokenStore,
    hasher: TokenHasher,
    *,
    name: str,
    scopes: Sequence[str],
    now: float,
    expires_at: float | None = None,
    rate: float | None = None,
    burst: int | None = None,
) -> NewToken:
    """Make a token, keep its record in ``store`` and return both."""
    for _ in range(ISSUE_ATTEMPTS):
        token = tokens.generate()
        record = TokenRecord(
            id=tokens.new_token_id(),
            name=name,
            prefix=tokens.display_prefix(token),
            token_hash=hasher.hash(token),
            scopes=tuple(scopes),
            created_at=now,
            expires_at=expires_at,
            rate=rate,
            burst=burst,
        )
        try:
            await store.add(record)
        except DuplicateToken:
            continue
        return NewToken(token, record)
    raise StoreError(f"could not find a free token id in {ISSUE_ATTEMPTS} tries")


async def rotate_token(
    store: TokenStore, hasher: TokenHasher, token_id: str, *, valid_until: float | None
) -> NewToken | None:
    """Give the token a new secret; the old one works until ``valid_until`` (None: no more).
    None if the id is unknown. The caller refuses revoked or expired tokens beforehand."""
    token = tokens.generate()
    record = await store.replace_secret(
        token_id,
        token_hash=hasher.hash(token),
        prefix=tokens.display_prefix(token),
        previous_valid_until=valid_until,
    )
    return None if record is None else NewToken(token, record)


def open_token_store(where: SqliteStore | RedisStore) -> TokenStore:
    """The store ``auth.store`` names. Nothing is opened until the first call."""
    if isinstance(where, SqliteStore):
        return SqliteTokenStore(where.path)
    return RedisTokenStore(where.url)


def _use_wal(db: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL, waiting up to ``busy_timeout`` for other connections: SQLite
    answers "database is locked" at once to a journal-mode change (its busy handler does not
    wait for it), which several workers opening a new file together run into."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


# -- SQLite -------------------------------------------------------------------------------------

_COLUMNS: Final = tuple(item.name for item in fields(TokenRecord))
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM tokens"
_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_used_at REAL,
    revoked_at REAL,
    rate REAL,
    burst INTEGER,
    previous_hash TEXT UNIQUE,
    previous_valid_until REAL
)
"""


class SqliteTokenStore:
    """Token records in a SQLite file, shared safely by processes on one machine."""

    def __init__(self, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        # One thread owns the connection: sqlite3 objects stay in the thread that made them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zerogate-tokens")
        self._connection: sqlite3.Connection | None = None  # used by that thread only
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._connection else "unopened"
        return f"<SqliteTokenStore {str(self.path)!r} {state}>"

    async def add(self, record: TokenRecord) -> None:
        def insert(db: sqlite3.Connection) -> None:
            marks = ", ".join("?" for _ in _COLUMNS)
            try:
                db.execute(f"INSERT INTO tokens VALUES ({marks})", _row(record))
            except sqlite3.IntegrityError:
                raise DuplicateToken(f"token {record.id} or its hash exists already") from None

        await self._run(insert)

    async def get(self, token_id: str) -> TokenRecord | None:
        return await self._run(lambda db: _one(db, f"{_SELECT} WHERE id = ?", (token_id,)))

    async def find(self, token_hash: str) -> TokenRecord | None:
        query = f"{_SELECT} WHERE token_hash = ?1 OR previous_hash = ?1"  # both indexed
        return await self._run(lambda db: _one(db, query, (token_hash,)))

    async def records(self) -> list[TokenRecord]:
        def select(db: sqlite3.Connection) -> list[TokenRecord]:
            rows = db.execute(f"{_SELECT} ORDER BY created_at, id").fetchall()
            return [_record(row) for row in rows]

        return await self._run(select)

    async def revoke(self, token_id: str, at: float) -> TokenRecord | None:
        def update(db: sqlite3.Connection) -> TokenRecord | None:
            with _transaction(db):
                sql = "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"
                db.execute(sql, (at, token_id))
                return _one(db, f"{_SELECT} WHERE id = ?", (token_id,))

        return await self._run(update)

    async def replace_secret(
        self, token_id: str, *, token_hash: str, prefix: str, previous_valid_until: float | None
    ) -> TokenRecord | None:
        def update(db: sqlite3.Connection) -> TokenRecord | None:
            with _transaction(db):
                try:
                    db.execute(
                        "UPDATE tokens SET"
                        " previous_hash = CASE WHEN ?1 IS NULL THEN NULL ELSE token_hash END,"
                        " previous_valid_until = ?1, token_hash = ?2, prefix = ?3 WHERE id = ?4",
                        (previous_valid_until, token_hash, prefix, token_id),
                    )
                except sqlite3.IntegrityError:
                    raise DuplicateToken("the new hash exists already") from None
                return _one(db, f"{_SELECT} WHERE id = ?", (token_id,))

        return await self._run(update)

    async def touch(self, token_id: str, at: float) -> None:
        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2"
                " AND (last_used_at IS NULL OR last_used_at < ?1)",
                (at, token_id),
            )

        await self._run(update)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError(f"token store {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, work)

    def _in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._connection is None:
                self._connection = self._open()
            return work(self._connection)
        except sqlite3.Error as exc:
            raise StoreError(f"token store {self.path}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        try:
            # Made by us, so only its owner can read it (sqlite would use the umask).
            # O_EXCL: never open (and so close) a file SQLite may hold already: closing any
            # descriptor of a file drops this process's POSIX locks on it, SQLite's included.
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise StoreError(f"cannot create the token store {self.path}: {reason}") from None
        # Autocommit (isolation_level=None): one statement is one transaction, and
        # _transaction opens the few larger ones explicitly.
        db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            # WAL: readers never wait for the writer, so workers checking tokens are not held
            # up by the CLI or a last-used update. The setting is kept in the file.
            _use_wal(db, self._busy_timeout)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != _SCHEMA_VERSION:
                with _transaction(db):  # several workers may open a new file at once
                    version = db.execute("PRAGMA user_version").fetchone()[0]
                    if version == 0:
                        db.execute(_SCHEMA)
                        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                    elif version != _SCHEMA_VERSION:
                        raise StoreError(
                            f"token store {self.path} has schema version {version}; this "
                            f"zerogate knows version {_SCHEMA_VERSION}"
                        )
        except BaseException:
            db.close()
            raise
        return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception: the write lock is taken at the
    start, so two writers queue on the busy timeout instead of failing half-way."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _row(record: TokenRecord) -> tuple[Any, ...]:
    values = {name: getattr(record, name) for name in _COLUMNS}
    values["scopes"] = json.dumps(list(record.scopes))
    return tuple(values[name] for name in _COLUMNS)


def _record(row: Sequence[Any]) -> TokenRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["scopes"] = tuple(json.loads(values["scopes"]))
    return TokenRecord(**values)


def _one(db: sqlite3.Connection, query: str, params: tuple[Any, ...]) -> TokenRecord | None:
    row = db.execute(query, params).fetchone()
    return None if row is None else _record(row)


# -- Redis --------------------------------------------------------------------------------------

# Each script gets the record's key as KEYS[1] and answers HGETALL of it (empty: no record).
_REVOKE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""
# KEYS: the record, the new hash's key. ARGV: hash key prefix, id, new hash, new prefix,
# previous_valid_until ('' for none) in seconds, and in milliseconds for PEXPIREAT.
_REPLACE_SECRET: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('duplicate hash') end
local old = redis.call('HGET', KEYS[1], 'token_hash')
local older = redis.call('HGET', KEYS[1], 'previous_hash')
if older then redis.call('DEL', ARGV[1] .. older) end
if ARGV[5] == '' then
    redis.call('DEL', ARGV[1] .. old)
    redis.call('HDEL', KEYS[1], 'previous_hash', 'previous_valid_until')
else
    redis.call('PEXPIREAT', ARGV[1] .. old, ARGV[6])
    redis.call('HSET', KEYS[1], 'previous_hash', old, 'previous_valid_until', ARGV[5])
end
redis.call('HSET', KEYS[1], 'token_hash', ARGV[3], 'prefix', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""
# KEYS: the record, its hash's key, the set of ids. ARGV: the id, then field, value, ...
_ADD: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""
_TOUCH: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = redis.call('HGET', KEYS[1], 'last_used_at')
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
return 1
"""


class RedisTokenStore:
    """Token records in Redis, shared by gateway replicas. Keys start with ``namespace``."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self._redis = redis.asyncio.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._add = self._redis.register_script(_ADD)
        self._revoke = self._redis.register_script(_REVOKE)
        self._replace = self._redis.register_script(_REPLACE_SECRET)
        self._touch = self._redis.register_script(_TOUCH)
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RedisTokenStore {_safe_url(self.url)!r} namespace={self.namespace!r} {state}>"

    async def add(self, record: TokenRecord) -> None:
        keys = [self._id_key(record.id), self._hash_key(record.token_hash), self._ids_key()]
        args: list[str] = [record.id]
        for name, value in _to_hash(record).items():
            args += [name, value]
        if not await self._call(self._add(keys=keys, args=args)):
            raise DuplicateToken(f"token {record.id} or its hash exists already")

    async def get(self, token_id: str) -> TokenRecord | None:
        return _from_hash(token_id, await self._call(self._redis.hgetall(self._id_key(token_id))))

    async def find(self, token_hash: str) -> TokenRecord | None:
        token_id = await self._call(self._redis.get(self._hash_key(token_hash)))
        return None if token_id is None else await self.get(token_id)

    async def records(self) -> list[TokenRecord]:
        ids = sorted(await self._call(self._redis.smembers(self._ids_key())))
        async with self._redis.pipeline(transaction=False) as pipe:
            for token_id in ids:
                pipe.hgetall(self._id_key(token_id))
            answers = await self._call(pipe.execute())
        found = [
            _from_hash(token_id, answer) for token_id, answer in zip(ids, answers, strict=True)
        ]
        return sorted(
            (record for record in found if record is not None),
            key=lambda record: (record.created_at, record.id),
        )

    async def revoke(self, token_id: str, at: float) -> TokenRecord | None:
        answer = await self._call(self._revoke(keys=[self._id_key(token_id)], args=[repr(at)]))
        return _from_hash(token_id, _pairs(answer))

    async def replace_secret(
        self, token_id: str, *, token_hash: str, prefix: str, previous_valid_until: float | None
    ) -> TokenRecord | None:
        until = "" if previous_valid_until is None else repr(previous_valid_until)
        until_ms = "" if previous_valid_until is None else str(int(previous_valid_until * 1000))
        keys = [self._id_key(token_id), self._hash_key(token_hash)]
        args = [self._hash_key(""), token_id, token_hash, prefix, until, until_ms]
        try:
            answer = await self._call(self._replace(keys=keys, args=args))
        except StoreError as exc:
            if "duplicate hash" in str(exc):
                raise DuplicateToken("the new hash exists already") from None
            raise
        return _from_hash(token_id, _pairs(answer))

    async def touch(self, token_id: str, at: float) -> None:
        await self._call(self._touch(keys=[self._id_key(token_id)], args=[repr(at)]))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"token store {_safe_url(self.url)}: {exc}") from exc

    def _id_key(self, token_id: str) -> str:
        return f"{self.namespace}id:{token_id}"

    def _hash_key(self, token_hash: str) -> str:
        return f"{self.namespace}hash:{token_hash}"

    def _ids_key(self) -> str:
        return f"{self.namespace}ids"


_FLOATS: Final = (
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
    "rate",
    "previous_valid_until",
)


def _to_hash(record: TokenRecord) -> dict[str, str]:
    """A record as Redis hash fields; None fields are left out (Redis has no null)."""
    out: dict[str, str] = {}
    for name in _COLUMNS:
        value = getattr(record, name)
        if name == "id" or value is None:
            continue
        if name == "scopes":
            out[name] = json.dumps(list(value))
        elif isinstance(value, float):
            out[name] = repr(value)  # repr round-trips a float exactly
        else:
            out[name] = str(value)
    return out


def _from_hash(token_id: str, fields_: Mapping[str, str]) -> TokenRecord | None:
    if not fields_:
        return None
    values: dict[str, Any] = {name: fields_.get(name) for name in _COLUMNS if name != "id"}
    for name in _FLOATS:
        if values[name] is not None:
            values[name] = float(values[name])
    if values["burst"] is not None:
        values["burst"] = int(values["burst"])
    values["scopes"] = tuple(json.loads(values["scopes"]))
    return TokenRecord(id=token_id, **values)


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))
