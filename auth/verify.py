"""Checking a presented token: ``TokenVerifier.verify(token) -> TokenInfo`` or ``TokenRejected``.

Theory of operation, in the order ``verify`` does it:

1. **Offline format check** (``auth.tokens.check``): prefix, length, characters, checksum. A
   typo or garbage is refused here (``malformed``, ``bad_checksum``) without a hash or a store
   lookup, so junk costs a few microseconds.
2. **Keyed hash** of the whole token, HMAC-SHA256 with the server secret. Everything after
   this step sees only the hash, which says nothing about how close a wrong token was to a
   right one: a near miss and a far miss cost the same.
3. **Cache, then store**, both looked up by that hash. Answers are cached for ``cache_ttl``
   seconds (default 5), the found ones and the unknown ones in two separate bounded caches so
   that a flood of made-up tokens cannot push the real ones out. A revocation is therefore
   seen by every gateway process within ``cache_ttl``; expiry and the end of a rotation's grace
   period are checked against the clock on every call, cached or not.
4. **Decision**: the hash is compared with the record's current and previous hash using
   ``hmac.compare_digest``; then revoked, expired, grace over.

``last_used_at`` is written at most once per ``touch_interval`` (default 60 s) per token and
process, in a background task, so a request never waits for a store write. A store that fails
raises ``auth.store.StoreError`` from ``verify``: that is the gateway's problem (503), not the
client's (401).
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from . import tokens
from .secret import TokenHasher
from .store import TokenRecord, TokenStore

DEFAULT_CACHE_TTL: Final = 5.0  # seconds; also how long a revocation may go unnoticed
DEFAULT_CACHE_SIZE: Final = 10_000  # entries in each of the two caches
DEFAULT_TOUCH_INTERVAL: Final = 60.0  # seconds between last_used_at writes for one token

logger = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why a token was refused."""

    MALFORMED = "malformed"  # not shaped like a token at all
    BAD_CHECKSUM = "bad_checksum"  # shaped like one, but mistyped or damaged
    UNKNOWN = "unknown"  # well formed, never issued here (or replaced and its grace is over)
    REVOKED = "revoked"
    EXPIRED = "expired"


_MESSAGES: Final = {
    Reason.UNKNOWN: "the token is not known here",
    Reason.REVOKED: "the token has been revoked",
    Reason.EXPIRED: "the token has expired",
}


class TokenRejected(Exception):
    """The presented token is not valid; ``reason`` says why, ``str()`` says it to a human.
    Neither ever contains the token."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason

    def __repr__(self) -> str:
        return f"TokenRejected({self.reason.value!r}, {str(self)!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """A valid token, as the gateway needs it for one request."""

    id: str  # "tok_...", safe to log
    name: str
    scopes: tuple[str, ...]  # "service:method" globs
    expires_at: float | None  # Unix seconds
    rate: float | None  # calls per second; None: the config's rate_limit.per_token
    burst: int | None  # None: the config's rate_limit.burst
    grace_until: float | None = None  # set when the secret presented was replaced by a rotation
    # Answers of ``allows`` so far: a token calls the same few methods over and over.
    _verdicts: dict[tuple[str, str], bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def allows(self, service: str, method: str) -> bool:
        """Whether one of the scopes matches ``service:method`` (globs, case-sensitive)."""
        target = (service, method)
        verdict = self._verdicts.get(target)
        if verdict is None:
            verdict = _scope_matcher(self.scopes)(f"{service}:{method}") is not None
            if len(self._verdicts) >= _VERDICTS:
                self._verdicts.clear()
            self._verdicts[target] = verdict
        return verdict


_VERDICTS: Final = 1024  # answers a TokenInfo keeps


@functools.lru_cache(maxsize=1024)
def _scope_matcher(scopes: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One compiled pattern for a token's scopes (what fnmatchcase would match, each one),
    built once per set of scopes: this runs on every request."""
    if not scopes:
        return re.compile(r"(?!)").match  # no scope: nothing matches
    return re.compile("|".join(f"(?:{fnmatch.translate(scope)})" for scope in scopes)).match


@dataclass(slots=True)
class _Entry:
    record: TokenRecord | None  # None: no token has this hash
    fresh_until: float  # monotonic time after which the store is asked again
    info: TokenInfo | None = None  # built once per entry, for the hot path
    grace_info: TokenInfo | None = None


@dataclass(slots=True)
class _Pass:
    """A presented token that was accepted, and until when that answer stands."""

    info: TokenInfo
    fresh_until: float  # monotonic: the cache entry's freshness
    valid_until: float  # Unix: expiry, grace end or the next last-used write, the soonest


class TokenVerifier:
    """Verifies tokens against a store, with a short-lived cache in front of it.

    ``clock`` gives Unix time (expiry, grace, last use) and ``monotonic`` the cache's time;
    both are there to be replaced in tests. One verifier per process and event loop; call
    ``aclose()`` at shutdown to finish pending last-used writes (the store is not closed).
    """

    def __init__(
        self,
        store: TokenStore,
        hasher: TokenHasher,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        touch_interval: float = DEFAULT_TOUCH_INTERVAL,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.store = store
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.touch_interval = touch_interval
        self._hasher = hasher
        self._clock = clock
        self._monotonic = monotonic
        # Insertion order is expiry order (every entry lives cache_ttl), so the first entry is
        # the one to drop when full.
        self._found: dict[str, _Entry] = {}
        self._unknown: dict[str, _Entry] = {}
        self._touched: dict[str, float] = {}  # token id -> last time a use was written
        self._hashes: dict[str, str] = {}  # presented token -> its HMAC (well-formed ones only)
        self._passes: dict[str, _Pass] = {}  # presented token -> a recent success
        self._touches: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"<TokenVerifier {self.store!r} cached={len(self._found)} "
            f"unknown={len(self._unknown)} ttl={self.cache_ttl}s>"
        )

    def verify_cached(self, presented: str) -> TokenInfo | None:
        """``verify`` without awaiting, when the answer is cached and fresh (the usual case:
        a client sends the same token many times a second); None when the store must be
        asked. Raises ``TokenRejected`` like ``verify``."""
        passed = self._passes.get(presented)
        if (
            passed is not None
            and self._monotonic() < passed.fresh_until
            and self._clock() < passed.valid_until
        ):
            return passed.info
        token_hash = self._hashes.get(presented)
        if token_hash is None:
            return None
        entry = self._found.get(token_hash) or self._unknown.get(token_hash)
        if entry is None or self._monotonic() >= entry.fresh_until:
            return None
        return self._accept(presented, entry, token_hash)

    async def verify(self, presented: str) -> TokenInfo:
        """The token's ``TokenInfo``; ``TokenRejected`` if it is not valid now, ``StoreError``
        if the store cannot answer."""
        token_hash = self._hashes.get(presented)
        if token_hash is None:
            problem = tokens.check(presented)
            if problem is not None:
                bad_checksum = problem is tokens.FormatProblem.BAD_CHECKSUM
                reason = Reason.BAD_CHECKSUM if bad_checksum else Reason.MALFORMED
                raise TokenRejected(reason, problem.message)
            token_hash = self._hasher.hash(presented)
            self._remember_hash(presented, token_hash)
        return self._accept(presented, await self._lookup(token_hash), token_hash)

    def _accept(self, presented: str, entry: _Entry, token_hash: str) -> TokenInfo:
        """Decide on ``entry`` now (raises TokenRejected), and remember a success as a pass:
        until the entry's freshness, the token's expiry or grace end, or its next last-used
        write, whichever comes first, the same presented string is let through at once."""
        now = self._clock()
        info = self._decide(entry, token_hash, now)
        self._maybe_touch(info.id, now)
        record = entry.record
        assert record is not None  # _decide refuses unknown tokens
        valid_until = self._touched.get(info.id, now) + self.touch_interval
        for end in (record.expires_at, info.grace_until):
            if end is not None and end < valid_until:
                valid_until = end
        passes = self._passes
        passes.pop(presented, None)  # re-inserted: insertion order is age order
        if len(passes) >= self.cache_size:
            del passes[next(iter(passes))]
        passes[presented] = _Pass(info, entry.fresh_until, valid_until)
        return info

    def _remember_hash(self, presented: str, token_hash: str) -> None:
        # A well-formed token's hash, so that its next requests skip the checksum and the
        # HMAC (about a quarter of auth's cost per request). Only tokens found in the store
        # stay long: unknown ones are dropped first when the map is full.
        hashes = self._hashes
        if len(hashes) >= self.cache_size:
            del hashes[next(iter(hashes))]
        hashes[presented] = token_hash

    def forget(self) -> None:
        """Drop every cached answer: the next calls ask the store."""
        self._found.clear()
        self._unknown.clear()
        self._hashes.clear()
        self._passes.clear()

    async def aclose(self) -> None:
        """Wait for last-used writes still running."""
        while self._touches:
            pending = list(self._touches)
            await asyncio.gather(*pending, return_exceptions=True)
            self._touches.difference_update(pending)

    async def _lookup(self, token_hash: str) -> _Entry:
        now = self._monotonic()
        entry = self._found.get(token_hash) or self._unknown.get(token_hash)
        if entry is not None and now < entry.fresh_until:
            return entry
        record = await self.store.find(token_hash)
        entry = _Entry(record, self._monotonic() + self.cache_ttl)
        # Re-inserted rather than updated, to keep insertion order equal to expiry order.
        self._found.pop(token_hash, None)
        self._unknown.pop(token_hash, None)
        cache = self._unknown if record is None else self._found
        if len(cache) >= self.cache_size:
            del cache[next(iter(cache))]
        cache[token_hash] = entry
        return entry

    def _decide(self, entry: _Entry, token_hash: str, now: float) -> TokenInfo:
        record = entry.record
        if record is None:
            raise TokenRejected(Reason.UNKNOWN, _MESSAGES[Reason.UNKNOWN])
        # The store found the record by one of its two hashes; which one, decides.
        current = hmac.compare_digest(record.token_hash, token_hash)
        previous = record.previous_hash is not None and hmac.compare_digest(
            record.previous_hash, token_hash
        )
        if record.revoked_at is not None:
            raise TokenRejected(Reason.REVOKED, _MESSAGES[Reason.REVOKED])
        in_grace = (
            previous
            and record.previous_valid_until is not None
            and now < record.previous_valid_until
        )
        if not (current or in_grace):
            raise TokenRejected(Reason.UNKNOWN, _MESSAGES[Reason.UNKNOWN])
        if record.expires_at is not None and now >= record.expires_at:
            raise TokenRejected(Reason.EXPIRED, _MESSAGES[Reason.EXPIRED])
        if current:
            if entry.info is None:
                entry.info = _info(record, None)
            return entry.info
        if entry.grace_info is None:
            entry.grace_info = _info(record, record.previous_valid_until)
        return entry.grace_info

    def _maybe_touch(self, token_id: str, now: float) -> None:
        last = self._touched.get(token_id)
        if last is not None and now - last < self.touch_interval:
            return
        if len(self._touched) >= self.cache_size:
            self._touched.clear()  # at worst one extra write per token
        self._touched[token_id] = now
        task = asyncio.get_running_loop().create_task(self._touch(token_id, now))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _touch(self, token_id: str, now: float) -> None:
        try:
            await self.store.touch(token_id, now)
        except Exception as exc:
            # Only a statistic is lost; the request it came from is not failed for it.
            logger.warning("could not record the use of token %s: %s", token_id, exc)


def _info(record: TokenRecord, grace_until: float | None) -> TokenInfo:
    return TokenInfo(
        id=record.id,
        name=record.name,
        scopes=record.scopes,
        expires_at=record.expires_at,
        rate=record.rate,
        burst=record.burst,
        grace_until=grace_until,
    )
