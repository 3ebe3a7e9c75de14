"""Helpers of the token tests: running coroutines, a fake clock and an in-memory store that
counts its calls (the real redis-server comes from redis_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from asyncrun import async_runner

from auth.secret import TokenHasher
from auth.store import DuplicateToken, TokenRecord, TokenStore

TEST_TIMEOUT = 30.0
SECRET = b"s" * 32 + b"-a test secret, never used elsewhere"


run_async = async_runner(TEST_TIMEOUT)


def hasher() -> TokenHasher:
    return TokenHasher(SECRET)


class FakeClock:
    """A clock that moves only when told; serves as both Unix time and monotonic time."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryTokenStore:
    """A TokenStore in a dict, counting calls, for the verifier's pure logic."""

    def __init__(self) -> None:
        self.by_id: dict[str, TokenRecord] = {}
        self.finds = 0
        self.touches: list[tuple[str, float]] = []
        self.fail_touch = False

    async def add(self, record: TokenRecord) -> None:
        hashes = {r.token_hash for r in self.by_id.values()}
        if record.id in self.by_id or record.token_hash in hashes:
            raise DuplicateToken(record.id)
        self.by_id[record.id] = record

    async def get(self, token_id: str) -> TokenRecord | None:
        return self.by_id.get(token_id)

    async def find(self, token_hash: str) -> TokenRecord | None:
        self.finds += 1
        for record in self.by_id.values():
            if token_hash in (record.token_hash, record.previous_hash):
                return record
        return None

    async def records(self) -> list[TokenRecord]:
        return sorted(self.by_id.values(), key=lambda r: r.created_at)

    async def revoke(self, token_id: str, at: float) -> TokenRecord | None:
        record = self.by_id.get(token_id)
        if record is None:
            return None
        if record.revoked_at is None:
            record = self.by_id[token_id] = replace(record, revoked_at=at)
        return record

    async def replace_secret(
        self, token_id: str, *, token_hash: str, prefix: str, previous_valid_until: float | None
    ) -> TokenRecord | None:
        record = self.by_id.get(token_id)
        if record is None:
            return None
        previous = None if previous_valid_until is None else record.token_hash
        record = self.by_id[token_id] = replace(
            record,
            token_hash=token_hash,
            prefix=prefix,
            previous_hash=previous,
            previous_valid_until=previous_valid_until,
        )
        return record

    async def touch(self, token_id: str, at: float) -> None:
        if self.fail_touch:
            raise OSError("the store is gone")
        self.touches.append((token_id, at))

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def opened(factory: Callable[[], TokenStore]) -> AsyncIterator[TokenStore]:
    """A new store from ``factory``, closed at the end whatever happens (an unclosed Redis
    connection would be reported, as an error, in whichever test runs next)."""
    store = factory()
    try:
        yield store
    finally:
        await store.aclose()
