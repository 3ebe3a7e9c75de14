"""A wrong token costs the same to refuse whether it is one character away from a real token
or nothing like it, so that timing cannot guide a guesser (median over many tries).

Both kinds are well formed (their checksums are right), so each goes the whole way: format
check, keyed hash, cache, store. Cold: no cache, every try asks a real SQLite store. Warm: the
answer comes from the cache. Tries of the two kinds alternate in a shuffled order, so a
machine busy with something else slows both alike. The bound is loose on purpose (a loaded
two-core machine): a leak worth worrying about, such as a comparison that stops at the first
differing character, would show in the cold path's store lookup or the final comparison,
and these medians agree to a few percent in practice.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from pathlib import Path

from auth_support import hasher, opened, run_async

from auth import tokens
from auth.store import SqliteTokenStore, issue_token
from auth.verify import TokenRejected, TokenVerifier

TRIES = 1500  # of each kind, cold and warm
MAX_RELATIVE_GAP = 0.25  # the two medians differ by less than this fraction ...
MIN_ABSOLUTE_GAP_NS = 5_000  # ... or by less than this, for the warm path's few microseconds
MAX_COLD_MEDIAN_NS = 5_000_000  # bounded time: a store lookup is far below 5 ms
MAX_WARM_MEDIAN_NS = 500_000


def near_miss(token: str, position: int, shift: int = 1) -> str:
    """``token`` with the character at ``position`` moved ``shift`` places along the alphabet
    (1 to 61: never itself) and its checksum fixed to match."""
    body = list(token[len(tokens.PREFIX) : len(tokens.PREFIX) + tokens.RANDOM_LENGTH])
    body[position] = tokens.ALPHABET[(tokens.ALPHABET.index(body[position]) + shift) % 62]
    random_part = "".join(body)
    return tokens.PREFIX + random_part + tokens.checksum(random_part)


async def median_times(verifier: TokenVerifier, near: list[str], far: list[str]) -> tuple[int, int]:
    tries = [(True, token) for token in near] + [(False, token) for token in far]
    random.Random(7).shuffle(tries)
    times: dict[bool, list[int]] = {True: [], False: []}
    for is_near, token in tries:
        start = time.perf_counter_ns()
        with contextlib.suppress(TokenRejected):
            await verifier.verify(token)
        times[is_near].append(time.perf_counter_ns() - start)
    return int(statistics.median(times[True])), int(statistics.median(times[False]))


def assert_alike(near_ns: int, far_ns: int, what: str) -> None:
    gap = abs(near_ns - far_ns)
    assert gap < max(MAX_RELATIVE_GAP * min(near_ns, far_ns), MIN_ABSOLUTE_GAP_NS), (
        f"{what}: near miss {near_ns / 1000:.1f} µs, far miss {far_ns / 1000:.1f} µs"
    )


@run_async
async def test_near_and_far_misses_take_the_same_time(tmp_path: Path) -> None:
    async with opened(lambda: SqliteTokenStore(tmp_path / "tokens.db")) as store:
        keyed = hasher()
        for number in range(200):  # a store of realistic size, not a single row
            await issue_token(store, keyed, name=f"t{number}", scopes=["calc:*"], now=time.time())
        real = await issue_token(store, keyed, name="real", scopes=["calc:*"], now=time.time())
        # Near misses differ from the real token in one character, anywhere in its random
        # part; far misses are fresh random tokens. All distinct: the store looks each one up
        # afresh (a few keys asked over and over would stay in the CPU's caches, and answer
        # faster for that alone).
        length = tokens.RANDOM_LENGTH
        near = [near_miss(real.token, n % length, 1 + n // length) for n in range(TRIES)]
        far = [tokens.generate() for _ in range(TRIES)]
        assert len(set(near)) == len(set(far)) == TRIES

        cold = TokenVerifier(store, keyed, cache_ttl=0.0)
        await median_times(cold, near[:100], far[:100])  # warm up threads and page cache
        cold_near, cold_far = await median_times(cold, near, far)

        # Warm: three of each kind (at the start, the middle and the end), each asked over
        # and over from the cache.
        warm = TokenVerifier(store, keyed)
        few_near = [near_miss(real.token, at) for at in (0, length // 2, length - 1)]
        few_far = far[:3]
        await median_times(warm, few_near, few_far)  # now all cached
        repeats = TRIES // 3
        warm_near, warm_far = await median_times(warm, few_near * repeats, few_far * repeats)

    print(
        f"\nverify() of a wrong token, median of {TRIES} each: cold (SQLite) near "
        f"{cold_near / 1000:.1f} µs, far {cold_far / 1000:.1f} µs; warm (cache) near "
        f"{warm_near / 1000:.1f} µs, far {warm_far / 1000:.1f} µs"
    )
    assert_alike(cold_near, cold_far, "cold")
    assert_alike(warm_near, warm_far, "warm")
    assert max(cold_near, cold_far) < MAX_COLD_MEDIAN_NS
    assert max(warm_near, warm_far) < MAX_WARM_MEDIAN_NS
