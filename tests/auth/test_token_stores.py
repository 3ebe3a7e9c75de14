"""The TokenStore contract, on a real SQLite file and a real redis-server alike."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from auth_support import hasher, opened, run_async

from auth.store import (
    DuplicateToken,
    RedisTokenStore,
    SqliteTokenStore,
    StoreError,
    TokenRecord,
    TokenStatus,
    TokenStore,
    issue_token,
    open_token_store,
    rotate_token,
)
from gateway.config import RedisStore, SqliteStore

# Real time: Redis expires a rotated-out hash's key at the end of the grace, by its clock.
NOW = float(int(time.time())) + 0.25
GRACE = 3600.0  # long enough for any test run

StoreFactory = Callable[[], TokenStore]


def record(**changes: object) -> TokenRecord:
    values: dict[str, object] = {
        "id": "tok_AAAAAAAA",
        "name": "ci",
        "prefix": "zgw_abcdefgh",
        "token_hash": "a" * 64,
        "scopes": ("calc:*", "users:get_*"),
        "created_at": NOW,
    }
    values.update(changes)
    return TokenRecord(**values)  # type: ignore[arg-type]


@run_async
async def test_a_record_comes_back_as_it_went_in(store_factory: StoreFactory) -> None:
    async with opened(store_factory) as store:
        full = record(expires_at=NOW + 3600.5, rate=2.5, burst=7, last_used_at=NOW + 1)
        bare = record(id="tok_BBBBBBBB", token_hash="b" * 64, scopes=(), created_at=NOW + 1)
        await store.add(full)
        await store.add(bare)
        assert await store.get(full.id) == full
        assert await store.get(bare.id) == bare
        assert await store.find(full.token_hash) == full
        assert await store.get("tok_nothere") is None
        assert await store.find("c" * 64) is None
        assert await store.records() == [full, bare]


@run_async
async def test_records_last_across_opens(store_factory: StoreFactory) -> None:
    async with opened(store_factory) as store:
        await store.add(record())
        await store.aclose()  # closing twice (here and at the end) is harmless
    async with opened(store_factory) as again:
        assert await again.get("tok_AAAAAAAA") == record()


@run_async
async def test_a_taken_id_or_hash_is_refused(store_factory: StoreFactory) -> None:
    async with opened(store_factory) as store:
        await store.add(record())
        with pytest.raises(DuplicateToken):
            await store.add(record(token_hash="f" * 64))
        with pytest.raises(DuplicateToken):
            await store.add(record(id="tok_CCCCCCCC"))
        assert await store.records() == [record()]


@run_async
async def test_revoking_keeps_the_first_time(store_factory: StoreFactory) -> None:
    async with opened(store_factory) as store:
        await store.add(record())
        revoked = await store.revoke("tok_AAAAAAAA", NOW + GRACE)
        assert revoked == record(revoked_at=NOW + GRACE)
        assert revoked.status(NOW + 11) is TokenStatus.REVOKED
        assert await store.revoke("tok_AAAAAAAA", NOW + 20) == revoked
        assert await store.find("a" * 64) == revoked  # still found: the verifier says "revoked"
        assert await store.revoke("tok_nothere", NOW) is None


@run_async
async def test_replacing_the_secret_keeps_the_old_one_for_the_grace(
    store_factory: StoreFactory,
) -> None:
    async with opened(store_factory) as store:
        await store.add(record())
        rotated = await store.replace_secret(
            "tok_AAAAAAAA",
            token_hash="d" * 64,
            prefix="zgw_newnewne",
            previous_valid_until=NOW + GRACE,
        )
        assert rotated == record(
            token_hash="d" * 64,
            prefix="zgw_newnewne",
            previous_hash="a" * 64,
            previous_valid_until=NOW + GRACE,
        )
        assert rotated.status(NOW) is TokenStatus.ROTATING
        assert rotated.status(NOW + GRACE) is TokenStatus.ACTIVE
        assert await store.find("d" * 64) == rotated
        assert await store.find("a" * 64) == rotated
        # A second rotation forgets the first secret and keeps only the one it replaces.
        again = await store.replace_secret(
            "tok_AAAAAAAA",
            token_hash="e" * 64,
            prefix="zgw_eeeeeeee",
            previous_valid_until=NOW + 2 * GRACE,
        )
        assert again is not None
        assert (again.previous_hash, again.previous_valid_until) == ("d" * 64, NOW + 2 * GRACE)
        assert await store.find("a" * 64) is None
        assert await store.find("d" * 64) == again


@run_async
async def test_replacing_without_grace_forgets_the_old_secret(store_factory: StoreFactory) -> None:
    async with opened(store_factory) as store:
        await store.add(record())
        rotated = await store.replace_secret(
            "tok_AAAAAAAA", token_hash="d" * 64, prefix="zgw_dddddddd", previous_valid_until=None
        )
        assert rotated is not None
        assert (rotated.previous_hash, rotated.previous_valid_until) == (None, None)
        assert await store.find("a" * 64) is None
        assert await store.find("d" * 64) == rotated
        missing = await store.replace_secret(
            "tok_nothere", token_hash="9" * 64, prefix="zgw_99999999", previous_valid_until=None
        )
        assert missing is None
        assert await store.find("9" * 64) is None


@run_async
async def test_touch_only_moves_forward(store_factory: StoreFactory) -> None:
    async with opened(store_factory) as store:
        await store.add(record())
        await store.touch("tok_AAAAAAAA", NOW + 5)
        await store.touch("tok_AAAAAAAA", NOW + 3)  # a slower worker's older news
        found = await store.get("tok_AAAAAAAA")
        assert found is not None
        assert found.last_used_at == NOW + 5
        await store.touch("tok_nothere", NOW)  # no record appears
        assert await store.get("tok_nothere") is None


@run_async
async def test_issue_and_rotate(store_factory: StoreFactory) -> None:
    keyed = hasher()
    async with opened(store_factory) as store:
        new = await issue_token(
            store, keyed, name="ci", scopes=["calc:*"], now=NOW, expires_at=NOW + GRACE, rate=1.0
        )
        assert new.token not in repr(new)
        assert new.record.token_hash == keyed.hash(new.token)
        assert new.record.prefix == new.token[:12]
        assert new.record.scopes == ("calc:*",)
        assert (new.record.expires_at, new.record.rate, new.record.burst) == (
            NOW + GRACE,
            1.0,
            None,
        )
        assert await store.find(keyed.hash(new.token)) == new.record
        rotated = await rotate_token(store, keyed, new.record.id, valid_until=NOW + GRACE)
        assert rotated is not None
        assert rotated.token != new.token
        assert await store.find(keyed.hash(rotated.token)) == rotated.record
        assert await store.find(keyed.hash(new.token)) == rotated.record
        assert await rotate_token(store, keyed, "tok_nothere", valid_until=None) is None


@run_async
async def test_redis_forgets_the_previous_hash_when_the_grace_ends(
    redis_url: str, redis_namespace: str
) -> None:
    async with opened(lambda: RedisTokenStore(redis_url, namespace=redis_namespace)) as store:
        await store.add(record())
        # A grace period that ended a moment ago: the old hash's key expires at once.
        await store.replace_secret(
            "tok_AAAAAAAA",
            token_hash="d" * 64,
            prefix="zgw_dddddddd",
            previous_valid_until=time.time() - 1,
        )
        assert await store.find("a" * 64) is None
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = sorted(client.scan_iter(f"{redis_namespace}*"))
    client.close()
    assert keys == [
        f"{redis_namespace}hash:{'d' * 64}",
        f"{redis_namespace}id:tok_AAAAAAAA",
        f"{redis_namespace}ids",
    ]


@run_async
async def test_an_unreachable_redis_is_a_store_error_without_the_password() -> None:
    port = _closed_port()
    url = f"redis://user:hunter2@127.0.0.1:{port}/0"
    async with opened(lambda: RedisTokenStore(url, timeout=2)) as store:
        with pytest.raises(StoreError, match=f"127.0.0.1:{port}") as caught:
            await store.find("a" * 64)
        assert "hunter2" not in str(caught.value)
        assert "hunter2" not in repr(store)


@run_async
async def test_the_sqlite_file_is_made_on_first_use_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    store = SqliteTokenStore(path)
    assert not path.exists()
    assert await store.records() == []
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    await store.aclose()


@run_async
async def test_a_sqlite_file_in_a_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteTokenStore(tmp_path / "no-such-folder" / "tokens.db")
    with pytest.raises(StoreError, match=r"cannot create the token store .*no such file"):
        await store.records()
    await store.aclose()


@run_async
async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SqliteTokenStore(tmp_path / "tokens.db")
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.records()


def test_open_token_store_follows_the_config(tmp_path: Path) -> None:
    sqlite = open_token_store(SqliteStore(tmp_path / "t.db"))
    assert isinstance(sqlite, SqliteTokenStore)
    assert sqlite.path == tmp_path / "t.db"
    assert "unopened" in repr(sqlite)
    remote = open_token_store(RedisStore("redis://127.0.0.1:1/0"))
    assert isinstance(remote, RedisTokenStore)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
