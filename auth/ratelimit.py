"""Rate limits: a token bucket per key, in this process's memory or in Redis.

Theory of operation
-------------------
Each key (an API token's id, or ``addr:<ip>`` for failed authentications, see ``token_key``
and ``address_key``) owns a bucket of at most ``burst`` tokens that refills continuously at
``rate`` tokens per second. A call takes one token; with none left it is refused. A key never
seen before has a full bucket, so a fresh token gets ``burst`` calls at once, then ``rate``
calls per second. A full bucket is the same as no state at all, which is what keeps memory
bounded: the memory limiter forgets full buckets, and in Redis a bucket's key expires the
moment it would be full again.

The arithmetic lives in one place, ``Bucket.take`` (the Redis script repeats it in Lua): time is
an argument, so it is tested with a fake clock. ``Decision`` is its answer, and carries the
response headers (the IETF draft "RateLimit header fields for HTTP", separate-header form):

- ``RateLimit-Limit``: ``burst``, the most calls that can be made at once.
- ``RateLimit-Remaining``: whole tokens left after this call.
- ``RateLimit-Reset``: seconds until the bucket is full again, i.e. until ``Limit`` calls can
  be made at once (0 only when it is already full). We chose "full again" over "next token"
  because then ``Remaining``/``Reset`` describe the same window; the time to the next token is
  what ``Retry-After`` says on a refusal.
- ``Retry-After`` (refusals only): seconds until the call would be allowed, at least 1.

All are whole seconds, rounded up, so a client that waits that long is never refused again.

Two limiters share one interface (``RateLimiter``): ``MemoryRateLimiter`` for one process, and
``RedisRateLimiter`` for replicas that must share their buckets (one atomic Lua script per call,
with the Redis server's clock). ``limiter_from_config`` picks one from the config's
``rate_limit`` section.

    limiter = limiter_from_config(config.rate_limit)
    decision = await limiter.hit(token_key(token.id), rate=token.rate, burst=token.burst)
    headers += decision.headers()  # and 429 + Retry-After when not decision.allowed
    await limiter.aclose()  # the app's lifespan; idempotent
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlsplit

from gateway.config import MemoryStore, RateLimitConfig, RedisStore

if TYPE_CHECKING:  # redis is imported when a RedisRateLimiter is made, not by every gateway
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_MAX_KEYS",
    "DEFAULT_REDIS_CONNECTIONS",
    "DEFAULT_REDIS_PREFIX",
    "DEFAULT_REDIS_TIMEOUT",
    "DEFAULT_RETRY_INTERVAL",
    "Bucket",
    "Clock",
    "Decision",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "address_key",
    "decide",
    "limiter_from_config",
    "token_key",
]

Clock = Callable[[], float]  # seconds, monotonic; time.monotonic unless a test fakes it

DEFAULT_MAX_KEYS: Final = 100_000  # buckets a MemoryRateLimiter keeps at most
DEFAULT_REDIS_PREFIX: Final = "zerogate:ratelimit:"
DEFAULT_REDIS_TIMEOUT: Final = 0.5  # seconds to connect, or to wait for an answer
DEFAULT_REDIS_CONNECTIONS: Final = 64  # the gateway's usual concurrency
DEFAULT_RETRY_INTERVAL: Final = 1.0  # seconds between attempts while Redis is unreachable
WARNING_INTERVAL: Final = 60.0  # at most one outage warning per this many seconds

# Refills are float arithmetic: 0.1 s at 10/s may come out as 0.9999999999999999 tokens. A
# billionth of a token decides such ties for the caller, and keeps 2.0000000001 s from being
# announced as 3 s.
_EPSILON: Final = 1e-9

log = logging.getLogger("zerogate.ratelimit")


# -- the arithmetic --------------------------------------------------------------------------


@dataclass(slots=True)
class Decision:
    """The answer to one call: allowed or not, and what to tell the client.

    A value: treat it as immutable. (It is not frozen because a frozen dataclass costs five
    times as much to make, and one is made per request.) ``degraded`` is True when the shared
    store could not be asked and the answer comes from ``RedisRateLimiter``'s outage policy.
    """

    allowed: bool
    limit: int  # RateLimit-Limit: the bucket size
    remaining: int  # RateLimit-Remaining: whole tokens left
    reset_seconds: int  # RateLimit-Reset: until the bucket is full again
    retry_after_seconds: int  # Retry-After when refused (>= 1); 0 when allowed
    degraded: bool = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The response headers, as ASGI wants them (lowercase names, byte values)."""
        headers = [
            (b"ratelimit-limit", _ascii(self.limit)),
            (b"ratelimit-remaining", _ascii(self.remaining)),
            (b"ratelimit-reset", _ascii(self.reset_seconds)),
        ]
        if not self.allowed:
            headers.append((b"retry-after", _ascii(self.retry_after_seconds)))
        return headers


_SMALL_INTS: Final = tuple(str(n).encode() for n in range(1024))


def _ascii(number: int) -> bytes:
    # Nearly every header value is a small number: look it up rather than format it.
    return _SMALL_INTS[number] if 0 <= number < 1024 else str(number).encode()


def _seconds(duration: float) -> int:
    """Whole seconds, rounded up (float noise aside), for a header."""
    return math.ceil(duration - _EPSILON) if duration > _EPSILON else 0


def decide(allowed: bool, tokens: float, rate: float, burst: int, cost: float) -> Decision:
    """The ``Decision`` for a bucket left with ``tokens`` after a call that was or was not
    ``allowed``: the header arithmetic, shared by both limiters."""
    reset = _seconds((burst - tokens) / rate)
    if allowed:
        return Decision(True, burst, int(tokens + _EPSILON), reset, 0)
    retry_after = _seconds((cost - tokens) / rate)
    return Decision(False, burst, int(tokens + _EPSILON), reset, retry_after or 1)


class Bucket:
    """One key's token bucket: ``tokens`` as of ``updated_at`` (seconds on the caller's clock).

    No I/O and no clock: ``take`` is told the time. ``full_at`` is derived, for the memory
    limiter's sweep: when the bucket will be full again if nobody takes from it.
    """

    __slots__ = ("full_at", "tokens", "updated_at")

    def __init__(self, tokens: float, updated_at: float) -> None:
        self.tokens = tokens
        self.updated_at = updated_at
        self.full_at = updated_at

    def take(self, now: float, rate: float, burst: int, cost: float = 1) -> Decision:
        """Refill up to ``now`` at ``rate`` tokens per second (never above ``burst``), then take
        ``cost`` tokens if there are that many. ``rate`` and ``burst`` may change between calls
        (per-token overrides): the bucket is clamped to the new ``burst``.

        A clock that went back (``now < updated_at``) refills nothing and restarts from ``now``:
        waiting for it to catch up would refuse a key for as long as the jump.
        """
        if cost > burst:
            raise ValueError(f"a call costing {cost} can never fit a bucket of {burst}")
        tokens = self.tokens
        elapsed = now - self.updated_at
        if elapsed > 0:
            tokens += elapsed * rate
        if tokens > burst:  # noqa: PLR1730 (min() is a call, and this runs per request)
            tokens = burst
        self.updated_at = now
        allowed = tokens + _EPSILON >= cost
        if allowed:
            tokens = tokens - cost if tokens > cost else 0.0
        self.tokens = tokens
        to_full = (burst - tokens) / rate
        self.full_at = now + to_full
        # decide() inlined: this runs on every request
        remaining = int(tokens + _EPSILON)
        reset = math.ceil(to_full - _EPSILON) if to_full > _EPSILON else 0
        if allowed:
            return Decision(True, burst, remaining, reset, 0)
        retry_after = _seconds((cost - tokens) / rate)
        return Decision(False, burst, remaining, reset, retry_after or 1)

    def __repr__(self) -> str:
        return f"Bucket(tokens={self.tokens!r}, updated_at={self.updated_at!r})"


# -- keys ------------------------------------------------------------------------------------


def token_key(token_id: str) -> str:
    """The bucket of an API token."""
    return "tok:" + token_id


def address_key(address: str) -> str:
    """The bucket of a client address, for failed authentications: ``addr:<ip>``.

    IPv6 clients are limited per /64, since anyone with one address usually has the whole
    /64 to rotate through; an IPv4-mapped IPv6 address counts as the IPv4 one.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP (a Unix socket's path, a test client): use it as it is
        return "addr:" + address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"addr:{ip}"


# -- limiters --------------------------------------------------------------------------------


class RateLimiter(Protocol):
    """What the gateway needs from a limiter; ``rate`` and ``burst`` are the defaults."""

    rate: float
    burst: int

    async def hit(
        self, key: str, *, rate: float | None = None, burst: int | None = None, cost: float = 1
    ) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket; ``rate``/``burst`` override the
        defaults for this key (a token's own limits)."""
        ...

    async def aclose(self) -> None:
        """Release what the limiter holds; closing twice is harmless."""
        ...


def _check_limits(rate: float, burst: int) -> None:
    if not rate > 0 or math.isinf(rate):  # `not >` also refuses NaN
        raise ValueError(f"the rate must be a positive number of calls per second, not {rate}")
    if burst < 1:
        raise ValueError(f"the burst must be at least 1, not {burst}")


class MemoryRateLimiter:
    """Buckets in this process: for one process (``--workers 1``), or as a per-replica
    fallback. Not thread-safe: use it from one event loop, where ``hit`` never yields, so each
    take is atomic without a lock.

    Memory is bounded by ``max_keys``. Buckets are kept in least-recently-used order; each
    new key first drops up to two least-recently-used buckets that are full again (a full
    bucket is the same as none), and past ``max_keys`` the least recently used bucket is
    dropped even if not full, which gives that key a full bucket back (``evicted`` counts
    those: if it grows, ``max_keys`` is too small for the traffic).
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        _check_limits(rate, burst)
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.evicted = 0
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def hit(
        self, key: str, *, rate: float | None = None, burst: int | None = None, cost: float = 1
    ) -> Decision:
        return self.hit_now(key, rate=rate, burst=burst, cost=cost)

    def hit_now(
        self, key: str, *, rate: float | None = None, burst: int | None = None, cost: float = 1
    ) -> Decision:
        """``hit`` without a coroutine: memory buckets never wait."""
        if rate is None:
            rate = self.rate
        if burst is None:
            burst = self.burst
        if rate is not self.rate or burst is not self.burst:
            _check_limits(rate, burst)  # only overrides: the defaults were checked once
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = buckets[key] = Bucket(burst, now)
        else:
            buckets.move_to_end(key)
        return bucket.take(now, rate, burst, cost)

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may take one call (0: now), without taking or creating
        anything: a key with no bucket has a full one."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0
        tokens = bucket.tokens + (self._clock() - bucket.updated_at) * self.rate
        if tokens + _EPSILON >= 1:
            return 0
        return _seconds((1 - tokens) / self.rate) or 1

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        # Two per new key, so that idle buckets go faster than new ones come.
        for _ in range(2):
            if not buckets:
                return
            oldest = next(iter(buckets.values()))
            if oldest.full_at > now:
                break
            buckets.popitem(last=False)
        if len(buckets) >= self.max_keys:
            buckets.popitem(last=False)
            self.evicted += 1

    async def aclose(self) -> None:
        self._buckets.clear()

    def __repr__(self) -> str:
        return (
            f"<MemoryRateLimiter rate={self.rate:g}/s burst={self.burst}"
            f" keys={len(self._buckets)}/{self.max_keys} evicted={self.evicted}>"
        )


# The Redis side of Bucket.take, atomic because Redis runs a script to the end before anything
# else. The time is the Redis server's (TIME), so replicas with skewed clocks share one clock.
# State: a hash {t: tokens, u: updated_at} (seconds, as %.17g so that floats survive the round
# trip exactly), expiring when the bucket would be full: full means no state. The TTL is sent
# as digits (a Lua number could reach Redis as 1e+15) and capped, since PEXPIRE refuses a
# deadline past 2^63 ms. Numbers return as strings because Redis truncates Lua numbers to
# integers. TIME before a write needs effect replication, the default since Redis 5.
_SCRIPT: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
elseif now > updated then
  tokens = tokens + (now - updated) * rate
end
if tokens > burst then
  tokens = burst
end
local allowed = 0
if tokens + 1e-9 >= cost then
  allowed = 1
  tokens = math.max(tokens - cost, 0)
end
local to_full = (burst - tokens) / rate
if to_full > 0 then
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'u', string.format('%.17g', now))
  local ttl = math.min(math.ceil(to_full * 1000), 1e15)
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
else
  redis.call('DEL', KEYS[1])
end
return {allowed, string.format('%.17g', tokens)}
"""
_SCRIPT_SHA: Final = hashlib.sha1(_SCRIPT.encode()).hexdigest()


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica that names the same server and ``prefix``.

    One round trip per call: ``EVALSHA`` of a script that refills, takes and writes
    atomically (``EVAL`` when the server does not have it yet, which also caches it). Each
    bucket is one key, so the script also runs on a Redis Cluster.

    When Redis cannot be reached (refused, ``timeout`` seconds without an answer, an error
    reply), the gateway keeps running, by ``fail_open``:

    - ``fail_open=True`` (the default): calls are limited by this process's own in-memory
      buckets (same rate and burst), so service goes on and a key gets at most its limit per
      replica. Decisions are marked ``degraded``.
    - ``fail_open=False``: every call is refused with ``Retry-After`` of ``retry_interval``
      rounded up (``degraded`` too), for deployments where a limit must never be exceeded.

    Either way Redis is not asked again for ``retry_interval`` seconds; then one call probes
    it while the others keep the outage policy, and the first answer ends the outage. A warning
    is logged at most every ``WARNING_INTERVAL`` seconds while it lasts, and one line when it
    ends. Calls are never retried: a retried script might take twice.
    """

    def __init__(
        self,
        url: str,
        *,
        rate: float,
        burst: int,
        fail_open: bool = True,
        prefix: str = DEFAULT_REDIS_PREFIX,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        max_connections: int = DEFAULT_REDIS_CONNECTIONS,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        # Imported here: redis.asyncio takes 0.15 s to import, which a memory store never needs.
        from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.exceptions import NoScriptError, RedisError  # noqa: PLC0415

        _check_limits(rate, burst)
        self.rate = rate
        self.burst = burst
        self.fail_open = fail_open
        self.prefix = prefix
        self.retry_interval = retry_interval
        self._clock = clock
        self._where = _display_url(url)
        # A blocking pool: past max_connections a call waits for a free connection instead
        # of failing; no retries (see above), and short timeouts so that an unreachable
        # server costs a request at most `timeout` once per retry_interval.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._no_script = NoScriptError
        self._errors = (RedisError, OSError)
        self._fallback = MemoryRateLimiter(rate=rate, burst=burst, max_keys=max_keys, clock=clock)
        self._down_until = 0.0  # 0.0: up; else the time of the next attempt
        self._next_warning = 0.0
        self._failures = 0  # since the last warning
        self._warned = False  # an outage was announced, and its end not yet
        self._closed = False

    @property
    def up(self) -> bool:
        """False from a failed call until one succeeds again."""
        return not self._down_until

    async def hit(
        self, key: str, *, rate: float | None = None, burst: int | None = None, cost: float = 1
    ) -> Decision:
        if rate is None:
            rate = self.rate
        if burst is None:
            burst = self.burst
        if rate is not self.rate or burst is not self.burst:
            _check_limits(rate, burst)
        if cost > burst:
            raise ValueError(f"a call costing {cost} can never fit a bucket of {burst}")
        if self._down_until:
            now = self._clock()
            if now < self._down_until:
                return await self._outage(key, rate, burst, cost)
            self._down_until = now + self.retry_interval  # this call probes; others wait
        name = self.prefix + key
        try:
            try:
                reply = await self._redis.evalsha(_SCRIPT_SHA, 1, name, rate, burst, cost)
            except self._no_script:  # a new or restarted server, or SCRIPT FLUSH
                reply = await self._redis.eval(_SCRIPT, 1, name, rate, burst, cost)
        except self._errors as exc:
            self._failed(exc)
            return await self._outage(key, rate, burst, cost)
        if self._down_until:
            self._recovered()
        allowed, tokens = reply
        return decide(allowed == 1, float(tokens), rate, burst, cost)

    async def _outage(self, key: str, rate: float, burst: int, cost: float) -> Decision:
        if self.fail_open:
            decision = await self._fallback.hit(key, rate=rate, burst=burst, cost=cost)
            decision.degraded = True
            return decision
        wait = _seconds(self.retry_interval) or 1
        return Decision(False, burst, 0, wait, wait, degraded=True)

    def _failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._down_until = now + self.retry_interval
        self._failures += 1
        if now >= self._next_warning:
            policy = "local limits" if self.fail_open else "refusing every call"
            log.warning(
                "rate limits: Redis at %s is unreachable (%s: %s), %s; %d failure(s) since "
                "the last warning",
                self._where,
                type(exc).__name__,
                exc,
                policy,
                self._failures,
            )
            self._next_warning = now + WARNING_INTERVAL
            self._failures = 0
            self._warned = True

    def _recovered(self) -> None:
        self._down_until = 0.0
        if self._warned:
            log.warning("rate limits: Redis at %s answers again", self._where)
            self._warned = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()
            await self._fallback.aclose()

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        policy = "open" if self.fail_open else "closed"
        return (
            f"<RedisRateLimiter {self._where} rate={self.rate:g}/s burst={self.burst}"
            f" {state} fail-{policy}>"
        )


def _display_url(url: str) -> str:
    """The URL without its credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def limiter_from_config(
    config: RateLimitConfig, *, fail_open: bool = True, clock: Clock = time.monotonic
) -> RateLimiter:
    """The limiter the ``rate_limit`` section asks for. A Redis limiter connects lazily, on
    the first call, so this may run before the event loop; use it from one loop only."""
    store = config.store
    if isinstance(store, MemoryStore):
        return MemoryRateLimiter(rate=config.per_token, burst=config.burst, clock=clock)
    assert isinstance(store, RedisStore)
    return RedisRateLimiter(
        store.url, rate=config.per_token, burst=config.burst, fail_open=fail_open, clock=clock
    )
