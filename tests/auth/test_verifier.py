"""TokenVerifier: the order of its checks, its caches and their TTL, rotation's grace, and the
throttled last-used writes. The logic runs on a fake clock and an in-memory store; the last
tests run it on the real stores."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from auth_support import FakeClock, MemoryTokenStore, hasher, opened, run_async
from hypothesis import given
from hypothesis import strategies as st

from auth import tokens
from auth.store import StoreError, TokenStore, issue_token, rotate_token
from auth.verify import Reason, TokenInfo, TokenRejected, TokenVerifier

TTL = 5.0


def make_verifier(
    store: TokenStore,
    clock: FakeClock,
    *,
    cache_ttl: float = TTL,
    cache_size: int = 100,
    touch_interval: float = 60.0,
) -> TokenVerifier:
    return TokenVerifier(
        store,
        hasher(),
        cache_ttl=cache_ttl,
        cache_size=cache_size,
        touch_interval=touch_interval,
        clock=clock,
        monotonic=clock,
    )


async def new_token(
    store: TokenStore,
    clock: FakeClock,
    *,
    expires_in: float | None = None,
    rate: float | None = None,
    burst: int | None = None,
) -> tuple[str, str]:
    expires_at = None if expires_in is None else clock() + expires_in
    scopes = ["calc:*", "users:get_*"]
    new = await issue_token(
        store,
        hasher(),
        name="ci",
        scopes=scopes,
        now=clock(),
        expires_at=expires_at,
        rate=rate,
        burst=burst,
    )
    return new.token, new.record.id


async def rejected(verifier: TokenVerifier, token: str) -> Reason:
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    if token:
        assert token not in str(caught.value)
        assert token not in repr(caught.value)
    return caught.value.reason


@run_async
async def test_a_valid_token_gives_what_the_gateway_needs() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock, expires_in=60, rate=2.5, burst=4)
    verifier = make_verifier(store, clock)
    info = await verifier.verify(token)
    assert info == TokenInfo(
        id=token_id,
        name="ci",
        scopes=("calc:*", "users:get_*"),
        expires_at=clock() + 60,
        rate=2.5,
        burst=4,
    )
    assert info.allows("calc", "add")
    assert info.allows("users", "get_user")
    assert not info.allows("users", "delete_user")
    assert not info.allows("calculator", "add")
    await verifier.aclose()


@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        ("", Reason.MALFORMED),
        ("Bearer nothing", Reason.MALFORMED),
        ("zgw_tooshort", Reason.MALFORMED),
        ("zgw_" + "a" * 41 + "!", Reason.MALFORMED),
        ("zgw_" + "a" * 42, Reason.BAD_CHECKSUM),
    ],
)
@run_async
async def test_junk_is_refused_before_the_store(presented: str, reason: Reason) -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    verifier = make_verifier(store, clock)
    assert await rejected(verifier, presented) is reason
    assert store.finds == 0


@run_async
async def test_a_typo_in_a_real_token_is_a_bad_checksum() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, _ = await new_token(store, clock)
    typo = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert await rejected(make_verifier(store, clock), typo) is Reason.BAD_CHECKSUM
    assert store.finds == 0


@run_async
async def test_unknown_tokens_are_cached_for_the_ttl() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    verifier = make_verifier(store, clock, cache_ttl=TTL)
    stranger = tokens.generate()
    assert await rejected(verifier, stranger) is Reason.UNKNOWN
    assert await rejected(verifier, stranger) is Reason.UNKNOWN
    assert store.finds == 1
    clock.advance(TTL)
    assert await rejected(verifier, stranger) is Reason.UNKNOWN
    assert store.finds == 2


@run_async
async def test_a_token_made_after_a_miss_works_within_the_ttl() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    verifier = make_verifier(store, clock, cache_ttl=TTL)
    await rejected(verifier, tokens.generate())
    token, _ = await new_token(store, clock)  # a new token has a new hash: never cached
    assert (await verifier.verify(token)).name == "ci"


@run_async
async def test_valid_tokens_are_cached_and_revocation_shows_within_the_ttl() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock, cache_ttl=TTL)
    first = await verifier.verify(token)
    await store.revoke(token_id, clock())
    clock.advance(TTL - 0.1)
    assert await verifier.verify(token) is first  # the cached answer, not even a new object
    assert store.finds == 1
    clock.advance(0.1)
    assert await rejected(verifier, token) is Reason.REVOKED
    assert store.finds == 2
    assert await rejected(verifier, token) is Reason.REVOKED  # cached too
    assert store.finds == 2
    await verifier.aclose()


@run_async
async def test_forget_drops_the_cache() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock)
    await verifier.verify(token)
    await store.revoke(token_id, clock())
    verifier.forget()
    assert await rejected(verifier, token) is Reason.REVOKED
    await verifier.aclose()


@run_async
async def test_expiry_is_checked_on_every_call_even_cached() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, _ = await new_token(store, clock, expires_in=10)
    verifier = make_verifier(store, clock, cache_ttl=60)
    await verifier.verify(token)
    clock.advance(9.9)
    await verifier.verify(token)
    clock.advance(0.1)
    assert await rejected(verifier, token) is Reason.EXPIRED
    assert store.finds == 1
    await verifier.aclose()


@run_async
async def test_rotation_keeps_the_old_secret_for_the_grace_only() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    old, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock, cache_ttl=TTL)
    await verifier.verify(old)
    rotated = await rotate_token(store, hasher(), token_id, valid_until=clock() + 30)
    assert rotated is not None
    new = rotated.token
    assert (await verifier.verify(new)).grace_until is None
    clock.advance(TTL)  # the cached entry of the old secret is refreshed: it is the previous one
    info = await verifier.verify(old)
    assert (info.id, info.grace_until) == (token_id, clock() - TTL + 30)
    clock.advance(30 - TTL - 0.1)
    await verifier.verify(old)
    clock.advance(0.1)  # the grace ends now, cached or not
    assert await rejected(verifier, old) is Reason.UNKNOWN
    assert (await verifier.verify(new)).id == token_id
    await verifier.aclose()


@run_async
async def test_rotation_without_grace_drops_the_old_secret_within_the_ttl() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    old, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock, cache_ttl=TTL)
    await verifier.verify(old)
    await rotate_token(store, hasher(), token_id, valid_until=None)
    clock.advance(TTL)
    assert await rejected(verifier, old) is Reason.UNKNOWN
    await verifier.aclose()


@run_async
async def test_the_caches_are_bounded_and_a_flood_of_unknowns_keeps_the_valid_ones() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, _ = await new_token(store, clock)
    verifier = make_verifier(store, clock, cache_size=3)
    await verifier.verify(token)
    for _ in range(50):
        await rejected(verifier, tokens.generate())
    assert "cached=1 unknown=3" in repr(verifier)
    finds = store.finds
    await verifier.verify(token)
    assert store.finds == finds
    for _ in range(5):
        await verifier.verify((await new_token(store, clock))[0])
    assert "cached=3" in repr(verifier)
    await verifier.aclose()


@run_async
async def test_last_use_is_written_at_most_once_per_interval() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock, touch_interval=60)
    start = clock()
    for _ in range(100):
        await verifier.verify(token)
        clock.advance(0.5)  # 50 s in all
    await verifier.aclose()
    assert store.touches == [(token_id, start)]
    clock.advance(10)
    await verifier.verify(token)
    await verifier.aclose()
    assert store.touches == [(token_id, start), (token_id, clock())]


@run_async
async def test_a_failed_last_use_write_does_not_fail_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock)
    store.fail_touch = True
    verifier = make_verifier(store, clock)
    with caplog.at_level(logging.WARNING, logger="auth.verify"):
        assert (await verifier.verify(token)).id == token_id
        await verifier.aclose()
    assert f"could not record the use of token {token_id}" in caplog.text
    assert token not in caplog.text


class BrokenStore(MemoryTokenStore):
    async def find(self, token_hash: str) -> None:
        raise StoreError("token store redis://127.0.0.1:1/0: connection refused")


@run_async
async def test_a_store_failure_is_not_a_rejection() -> None:
    clock = FakeClock()
    verifier = make_verifier(BrokenStore(), clock)
    with pytest.raises(StoreError):
        await verifier.verify(tokens.generate())


def test_a_cache_must_hold_something() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        TokenVerifier(MemoryTokenStore(), hasher(), cache_size=0)


@run_async
async def test_on_the_real_stores(store_factory: Callable[[], TokenStore]) -> None:
    async with opened(store_factory) as store:
        clock = FakeClock(1e10)  # Unix time far ahead: nothing may depend on the real clock
        token, token_id = await new_token(store, clock, expires_in=3600)
        verifier = TokenVerifier(store, hasher(), cache_ttl=TTL, clock=clock, monotonic=clock)
        assert (await verifier.verify(token)).id == token_id
        assert await rejected(verifier, tokens.generate()) is Reason.UNKNOWN
        await verifier.aclose()
        record = await store.get(token_id)
        assert record is not None
        assert record.last_used_at == clock()
        await store.revoke(token_id, clock())
        clock.advance(TTL)
        assert await rejected(verifier, token) is Reason.REVOKED
        await verifier.aclose()


@given(
    scopes=st.lists(st.text(alphabet="ab*?:[]!", max_size=6), max_size=3),
    service=st.text(alphabet="ab:", max_size=3),
    method=st.text(alphabet="ab:", max_size=3),
)
def test_allows_matches_like_fnmatchcase(scopes: list[str], service: str, method: str) -> None:
    from fnmatch import fnmatchcase

    info = TokenInfo(
        id="tok_x", name="x", scopes=tuple(scopes), expires_at=None, rate=None, burst=None
    )
    expected = any(fnmatchcase(f"{service}:{method}", scope) for scope in scopes)
    assert info.allows(service, method) is expected
    assert info.allows(service, method) is expected  # the remembered answer


# -- the gate's path: verify_cached first, the store only when it cannot answer ------------


async def at_the_gate(verifier: TokenVerifier, token: str) -> TokenInfo:
    """What AuthGate does per request."""
    return verifier.verify_cached(token) or await verifier.verify(token)


@run_async
async def test_the_cached_path_sees_expiry_at_once() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, _ = await new_token(store, clock, expires_in=10)
    verifier = make_verifier(store, clock, cache_ttl=60)
    first = await at_the_gate(verifier, token)
    clock.advance(9.9)
    assert verifier.verify_cached(token) is first  # let through without deciding again
    clock.advance(0.1)
    with pytest.raises(TokenRejected) as caught:
        verifier.verify_cached(token)
    assert caught.value.reason is Reason.EXPIRED
    assert store.finds == 1
    await verifier.aclose()


@run_async
async def test_the_cached_path_sees_revocation_within_the_ttl() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock, cache_ttl=TTL)
    await at_the_gate(verifier, token)
    await store.revoke(token_id, clock())
    clock.advance(TTL - 0.1)
    assert verifier.verify_cached(token) is not None
    clock.advance(0.1)
    assert verifier.verify_cached(token) is None  # stale: the store must be asked
    with pytest.raises(TokenRejected) as caught:
        await at_the_gate(verifier, token)
    assert caught.value.reason is Reason.REVOKED
    await verifier.aclose()


@run_async
async def test_the_cached_path_ends_a_rotated_secret_with_its_grace() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    old, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock, cache_ttl=60)
    rotated = await rotate_token(store, hasher(), token_id, valid_until=clock() + 30)
    assert rotated is not None
    assert (await at_the_gate(verifier, old)).grace_until == clock() + 30
    clock.advance(29.9)
    assert verifier.verify_cached(old) is not None
    clock.advance(0.1)
    with pytest.raises(TokenRejected) as caught:
        verifier.verify_cached(old)
    assert caught.value.reason is Reason.UNKNOWN
    assert (await at_the_gate(verifier, rotated.token)).id == token_id
    await verifier.aclose()


@run_async
async def test_the_cached_path_still_writes_last_use_once_per_interval() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock, cache_ttl=3600, touch_interval=60)
    start = clock()
    for _ in range(260):
        await at_the_gate(verifier, token)
        clock.advance(0.5)  # 130 s in all
    await verifier.aclose()
    assert store.touches == [(token_id, start), (token_id, start + 60), (token_id, start + 120)]
    assert store.finds == 1


@run_async
async def test_forget_drops_what_the_cached_path_let_through() -> None:
    store, clock = MemoryTokenStore(), FakeClock()
    token, token_id = await new_token(store, clock)
    verifier = make_verifier(store, clock)
    await at_the_gate(verifier, token)
    await store.revoke(token_id, clock())
    verifier.forget()
    assert verifier.verify_cached(token) is None
    with pytest.raises(TokenRejected):
        await at_the_gate(verifier, token)
    await verifier.aclose()
