"""Where the collector keeps trace records: in its memory (bounded) or in Redis (with a TTL).

Both stores answer the same questions (``TraceStore``): every record of a trace, the recent
traces, and per service method counters and latency buckets, in total and per minute window
(for the rate over the last 60 s, and for statistics over the last N minutes). Windows
follow the collector's clock when records arrive, which a sender's clock cannot skew.

``MemoryTraceStore`` keeps at most ``max_traces`` traces; past that, the least recently
updated trace goes (``evicted`` counts them), as does a trace not updated for ``ttl`` seconds.

``RedisTraceStore`` writes each batch in one pipelined round trip:

- ``zerogate:trace:{tid}``: a LIST of the trace's records (``trace_records.pack_compact``,
  at most 300 bytes each), EXPIRE ``ttl`` from its last record;
- ``zerogate:traces``: a sorted set of trace ids by start time (``ZADD LT``: a trace's score
  only moves earlier), trimmed to the newest ``max_traces`` and to the last ``ttl`` seconds;
- ``zerogate:traces:failed``: the same, of the traces with a failed span only, so that a
  query for failures finds the last ``max_traces`` of them however many traces went well
  since (written only by batches with a failure);
- ``zerogate:stats``: a HASH of counters (EXPIRE ``ttl`` from the last write), and
  ``zerogate:stats:{minute}`` one per minute window (kept ``WINDOWS`` minutes). Fields are
  ``side<TAB>service<TAB>method<TAB>counter``, the counter ``n`` (calls), ``e`` (failures) or
  ``b0``..``b16`` (latency buckets); names are printable, so a tab never occurs in them.

A trace stops growing at ``max_spans`` records (the rest are counted in ``dropped_spans``), so
a runaway trace cannot fill the store. The statistics count at most ``max_stat_keys``
(side, service, method) triples, so senders inventing names cannot either; records past it
are stored but not counted (``untallied``).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgpack

from .config import DEFAULT_MAX_TRACES, DEFAULT_TRACE_TTL, MemoryStore, RedisStore, TracingConfig
from .trace_records import (
    BUCKETS,
    FAILURES,
    Record,
    Side,
    StatsKey,
    Tally,
    TraceFilter,
    pack_compact,
    recent_rate,
    stats_report,
    summarize,
    unpack_compact,
)

if TYPE_CHECKING:  # redis is imported when a RedisTraceStore is made
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_MAX_SPANS",
    "DEFAULT_MAX_STAT_KEYS",
    "DEFAULT_REDIS_PREFIX",
    "MAX_RECENT",
    "WINDOWS",
    "MemoryTraceStore",
    "RedisTraceStore",
    "StoreUnavailable",
    "TraceStore",
    "normalize_trace_id",
    "store_from_config",
]

Clock = Callable[[], float]  # Unix seconds; time.time unless a test fakes it

DEFAULT_MAX_SPANS: Final = 1000  # records one trace keeps at most
DEFAULT_MAX_STAT_KEYS: Final = 10_000  # (side, service, method) triples counted at most
DEFAULT_REDIS_PREFIX: Final = "zerogate:"
DEFAULT_REDIS_TIMEOUT: Final = 2.0  # seconds to connect, or to wait for an answer
WINDOW: Final = 60  # seconds per statistics window
WINDOWS: Final = 60  # windows kept: statistics over at most the last hour
MAX_RECENT: Final = 1000  # traces one recent() call lists at most
# The newest traces a filtered recent() looks through (a bound on the work of one query);
# Redis reads them in chunks of at most SCAN_CHUNK traces, and stops once it has found
# enough, or has read MAX_SCANNED_RECORDS records (big traces: each record costs a decode).
MAX_SCANNED: Final = 1000
SCAN_CHUNK: Final = 100
MAX_SCANNED_RECORDS: Final = 20_000
EVERY_TRACE: Final = TraceFilter()
_HEX: Final = frozenset("0123456789abcdef")

log = logging.getLogger("zerogate.collector")


class StoreUnavailable(Exception):
    """The store could not take a batch (Redis unreachable, or answering errors)."""


class TraceStore(Protocol):
    """What the collector needs from a store. ``add`` returns how many records it kept."""

    kind: str  # "memory" or "redis"
    ttl: int
    max_traces: int

    async def add(self, records: Sequence[Record]) -> int: ...

    async def trace(self, trace_id: str) -> list[dict[str, Any]]: ...

    async def recent(self, limit: int, where: TraceFilter = EVERY_TRACE) -> list[dict[str, Any]]:
        """The newest ``limit`` traces that ``where`` matches, of the newest MAX_SCANNED (of
        the newest MAX_SCANNED with a failed span, when ``where.failed``)."""
        ...

    async def stats(self, minutes: int | None = None) -> dict[str, dict[str, dict[str, Any]]]: ...

    def counters(self) -> dict[str, int]:
        """The store's own counters (evicted, dropped_spans, untallied), for ``info()``."""
        ...

    async def aclose(self) -> None: ...


def normalize_trace_id(trace_id: object) -> str:
    """A trace id as stored (32 lowercase hex); ValueError when it is not one."""
    if isinstance(trace_id, str):
        text = trace_id.lower()
        if len(text) == 32 and set(text) <= _HEX:
            return text
    raise ValueError(f"a trace id is 32 hex characters, got {trace_id!r}")


def _check_limit(limit: object) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_RECENT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_RECENT}, got {limit!r}")
    return limit


def _check_minutes(minutes: object) -> int | None:
    if minutes is not None and (type(minutes) is not int or not 1 <= minutes <= WINDOWS):
        raise ValueError(f"minutes must be None or an integer from 1 to {WINDOWS}")
    return minutes


def _check_bounds(ttl: int, max_traces: int, max_spans: int) -> None:
    for name, value in (("ttl", ttl), ("max_traces", max_traces), ("max_spans", max_spans)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")


def _sorted_records(records: Iterable[Record]) -> list[dict[str, Any]]:
    return [record.to_dict() for record in sorted(records, key=lambda record: record.t0)]


# -- memory ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Trace:
    records: list[Record]
    start: float
    updated: float  # the store's clock


@dataclass(slots=True)
class _Window:
    number: int  # time // WINDOW
    tallies: dict[StatsKey, Tally] = field(default_factory=dict)


class MemoryTraceStore:
    """Traces and statistics in this process: lost when it stops. See the module docstring."""

    kind = "memory"

    def __init__(
        self,
        *,
        ttl: int = DEFAULT_TRACE_TTL,
        max_traces: int = DEFAULT_MAX_TRACES,
        max_spans: int = DEFAULT_MAX_SPANS,
        max_stat_keys: int = DEFAULT_MAX_STAT_KEYS,
        clock: Clock = time.time,
    ) -> None:
        _check_bounds(ttl, max_traces, max_spans)
        self.ttl = ttl
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.max_stat_keys = max_stat_keys
        self.evicted = 0  # traces dropped for room (not for age)
        self.dropped_spans = 0
        self.untallied = 0
        self._clock = clock
        self._traces: OrderedDict[str, _Trace] = OrderedDict()  # least recently updated first
        self._failed: set[str] = set()  # the ids of traces with a failed span
        self._totals: dict[StatsKey, Tally] = {}
        self._windows: list[_Window] = []  # oldest first, at most WINDOWS

    def __len__(self) -> int:
        return len(self._traces)

    async def add(self, records: Sequence[Record]) -> int:
        now = self._clock()
        self._expire(now)
        window = self._window(now)
        traces, kept = self._traces, 0
        for record in records:
            trace = traces.get(record.tid)
            if trace is None:
                if len(traces) >= self.max_traces:
                    self._failed.discard(traces.popitem(last=False)[0])
                    self.evicted += 1
                trace = traces[record.tid] = _Trace([], record.t0, now)
            else:
                traces.move_to_end(record.tid)
                trace.updated = now
            if len(trace.records) >= self.max_spans:
                self.dropped_spans += 1
                continue
            trace.records.append(record)
            trace.start = min(trace.start, record.t0)
            if record.out in FAILURES:
                self._failed.add(record.tid)
            kept += 1
            self._tally(record, window)
        return kept

    def _tally(self, record: Record, window: _Window) -> None:
        key = (record.side, record.svc, record.m)
        total = self._totals.get(key)
        if total is None:
            if len(self._totals) >= self.max_stat_keys:
                self.untallied += 1
                return
            total = self._totals[key] = Tally()
        total.add(record)
        tally = window.tallies.get(key)
        if tally is None:
            tally = window.tallies[key] = Tally()
        tally.add(record)

    def _window(self, now: float) -> _Window:
        number = int(now // WINDOW)
        windows = self._windows
        if not windows or windows[-1].number != number:
            windows.append(_Window(number))
            del windows[:-WINDOWS]
        return windows[-1]

    def _expire(self, now: float) -> None:
        traces, oldest = self._traces, now - self.ttl
        while traces:
            first = next(iter(traces.values()))
            if first.updated > oldest:
                break
            self._failed.discard(traces.popitem(last=False)[0])

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        self._expire(self._clock())
        trace = self._traces.get(normalize_trace_id(trace_id))
        return [] if trace is None else _sorted_records(trace.records)

    async def recent(
        self, limit: int = 50, where: TraceFilter = EVERY_TRACE
    ) -> list[dict[str, Any]]:
        limit = _check_limit(limit)
        self._expire(self._clock())
        traces = self._traces
        candidates = (
            ((tid, traces[tid]) for tid in self._failed) if where.failed else traces.items()
        )
        newest = heapq.nlargest(
            MAX_SCANNED if where else limit, candidates, key=lambda item: item[1].start
        )
        matching = (tid_trace for tid_trace in newest if where.matches(tid_trace[1].records))
        return [summarize(tid, trace.records) for tid, trace in islice(matching, limit)]

    async def stats(self, minutes: int | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        minutes = _check_minutes(minutes)
        now = self._clock()
        number = int(now // WINDOW)
        counts: dict[int, dict[StatsKey, Tally]] = {
            window.number: window.tallies for window in self._windows
        }
        current, previous = counts.get(number, {}), counts.get(number - 1, {})
        if minutes is None:
            tallies = self._totals
        else:
            tallies = {}
            for window in self._windows:
                if window.number > number - minutes:
                    for key, tally in window.tallies.items():
                        tallies.setdefault(key, Tally()).merge(tally)
        return _report(tallies, current, previous, now)

    def counters(self) -> dict[str, int]:
        return {
            "traces": len(self._traces),
            "evicted": self.evicted,
            "dropped_spans": self.dropped_spans,
            "untallied": self.untallied,
        }

    async def aclose(self) -> None:
        self._traces.clear()
        self._failed.clear()

    def __repr__(self) -> str:
        return (
            f"<MemoryTraceStore traces={len(self._traces)}/{self.max_traces} ttl={self.ttl}"
            f" evicted={self.evicted}>"
        )


# -- redis -----------------------------------------------------------------------------------


class RedisTraceStore:
    """Traces and statistics in Redis, shared by every reader of the same server and
    ``prefix``. See the module docstring for the keys."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl: int = DEFAULT_TRACE_TTL,
        max_traces: int = DEFAULT_MAX_TRACES,
        max_spans: int = DEFAULT_MAX_SPANS,
        max_stat_keys: int = DEFAULT_MAX_STAT_KEYS,
        prefix: str = DEFAULT_REDIS_PREFIX,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        clock: Clock = time.time,
        max_connections: int = 32,
    ) -> None:
        # Imported here: redis.asyncio takes 0.15 s to import, which a memory store never needs.
        from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415

        _check_bounds(ttl, max_traces, max_spans)
        self.ttl = ttl
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.max_stat_keys = max_stat_keys
        self.prefix = prefix
        self.dropped_spans = 0
        self.untallied = 0
        self._clock = clock
        self._url = url
        # A blocking pool: a burst of queries waits for a free connection instead of failing
        # (redis-py's default pool raises past max_connections).
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._errors = (RedisError, OSError)
        self._store = self._redis.register_script(_STORE)
        # The (side, service, method) triples this collector counts: bounded here, since
        # asking Redis how many there are would cost a round trip per batch.
        self._stat_keys: set[StatsKey] = set()
        self._closed = False

    def trace_key(self, trace_id: str) -> str:
        return f"{self.prefix}trace:{trace_id}"

    @property
    def recent_key(self) -> str:
        return f"{self.prefix}traces"

    @property
    def failed_key(self) -> str:
        return f"{self.prefix}traces:failed"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}stats"

    def window_key(self, number: int) -> str:
        return f"{self.prefix}stats:{number}"

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless Redis answers."""
        try:
            await self._redis.ping()
        except self._errors as exc:
            raise StoreUnavailable(f"Redis at {self._url}: {exc}") from exc

    async def add(self, records: Sequence[Record]) -> int:
        if not records:
            return 0
        now = self._clock()
        by_trace: dict[str, list[bytes]] = {}
        starts: dict[str, float] = {}
        failed: set[str] = set()
        tallies: dict[StatsKey, Tally] = {}
        stat_keys = self._stat_keys
        for record in records:
            tid = record.tid
            packed = by_trace.get(tid)
            if packed is None:
                packed = by_trace[tid] = []
                starts[tid] = record.t0
            elif record.t0 < starts[tid]:
                starts[tid] = record.t0
            packed.append(pack_compact(record))
            if record.out in FAILURES:
                failed.add(tid)
            key = (record.side, record.svc, record.m)
            tally = tallies.get(key)
            if tally is None:
                if key not in stat_keys:
                    if len(stat_keys) >= self.max_stat_keys:
                        self.untallied += 1
                        continue
                    stat_keys.add(key)
                tally = tallies[key] = Tally()
            tally.add(record)
        # One script call stores the whole batch (records, recent list, statistics): the
        # records and counters travel packed in two arguments, and the reply lists only the
        # traces that grew too long, so redis-py encodes and parses next to nothing.
        tids = list(by_trace)
        # One flat array, each trace's id, start and record count then its records: the
        # script's cmsgpack makes no table per trace (floats reach ZADD whole).
        traces: list[Any] = []
        for tid in tids:
            packed = by_trace[tid]
            traces += (tid, starts[tid], len(packed), *packed)
        counts = [item for pair in _fields(tallies).items() for item in pair]
        failures = [item for tid in failed for item in (starts[tid], tid)]
        window = self.window_key(int(now // WINDOW))
        trace_prefix = self.trace_key("")  # the keys concatenated: one is made per trace
        keys = [self.recent_key, self.stats_key, window, self.failed_key]
        keys += [trace_prefix + tid for tid in tids]
        args = [
            self.ttl,
            self.max_spans,
            self.max_traces,
            repr(now - self.ttl),
            WINDOW * (WINDOWS + 1),
            _pack(traces),
            _pack(counts),
            _pack(failures),
        ]
        try:
            over = await self._store(keys=keys, args=args)
            return len(records) - await self._trim(tids, over)
        except self._errors as exc:
            raise StoreUnavailable(f"Redis at {self._url}: {exc}") from exc

    async def _trim(self, tids: list[str], over: list[int]) -> int:
        """Cut the traces that grew past ``max_spans`` (``over``: their 1-based positions in
        ``tids`` and new lengths, in turn) back to their first records; return how many records
        that dropped. Rare, so it costs nothing when nothing grew."""
        if not over:
            return 0
        grown = [(tids[over[i] - 1], over[i + 1]) for i in range(0, len(over), 2)]
        pipe = self._redis.pipeline(transaction=False)
        for tid, _ in grown:
            pipe.ltrim(self.trace_key(tid), 0, self.max_spans - 1)
        await _execute(pipe)
        dropped = sum(length - self.max_spans for _, length in grown)
        self.dropped_spans += dropped
        return dropped

    async def _read(self, tids: Sequence[str]) -> list[list[Record]]:
        pipe = self._redis.pipeline(transaction=False)
        for tid in tids:
            pipe.lrange(self.trace_key(tid), 0, -1)
        replies = await _execute(pipe)
        traces = []
        for tid, items in zip(tids, replies, strict=True):
            records = [unpack_compact(tid, item) for item in items]
            traces.append([record for record in records if record is not None])
        return traces

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        tid = normalize_trace_id(trace_id)
        (records,) = await self._read([tid])
        return _sorted_records(records)

    async def recent(
        self, limit: int = 50, where: TraceFilter = EVERY_TRACE
    ) -> list[dict[str, Any]]:
        limit = _check_limit(limit)
        # Failures have their own list: the newest of them, however many traces went well since.
        listing = self.failed_key if where.failed else self.recent_key
        members = await self._redis.zrevrange(listing, 0, (MAX_SCANNED if where else limit) - 1)
        tids = [_text(member) for member in members]
        summaries: list[dict[str, Any]] = []
        gone: list[str] = []
        # Unfiltered: the newest ``limit`` at once. Filtered: in chunks of traces that cannot
        # hold more than MAX_SCANNED_RECORDS records (max_spans each, and each record costs
        # the collector a decode), until enough match or that many records were read.
        chunk = max(1, min(SCAN_CHUNK, MAX_SCANNED_RECORDS // self.max_spans)) if where else limit
        read = 0
        for start in range(0, len(tids), chunk):
            if len(summaries) >= limit or read >= MAX_SCANNED_RECORDS:
                break
            part = tids[start : start + chunk]
            traces = await self._read(part)
            read += sum(map(len, traces))
            for tid, records in zip(part, traces, strict=True):
                if not records:
                    gone.append(tid)  # expired: its list went before its entry was trimmed
                elif where.matches(records):
                    summaries.append(summarize(tid, records))
        if gone:
            await self._redis.zrem(listing, *gone)
        return summaries[:limit]

    async def stats(self, minutes: int | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        minutes = _check_minutes(minutes)
        now = self._clock()
        number = int(now // WINDOW)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self.window_key(number))
        pipe.hgetall(self.window_key(number - 1))
        if minutes is None:
            pipe.hgetall(self.stats_key)
        else:
            for back in range(minutes):
                pipe.hgetall(self.window_key(number - back))
        current, previous, *chosen = await _execute(pipe)
        tallies: dict[StatsKey, Tally] = {}
        for fields in chosen:
            _merge_fields(fields, tallies)
        return _report(tallies, _merge_fields(current, {}), _merge_fields(previous, {}), now)

    def counters(self) -> dict[str, int]:
        return {"dropped_spans": self.dropped_spans, "untallied": self.untallied}

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()

    def __repr__(self) -> str:
        return f"<RedisTraceStore prefix={self.prefix!r} ttl={self.ttl} max={self.max_traces}>"


_SIDES: Final = {side.value: side for side in Side}
# For the script's cmsgpack, which predates msgpack's bin and str8 types: bytes go as raw
# strings, as Lua wants them anyway.
_pack: Final = msgpack.Packer(use_bin_type=False).pack

# One batch. KEYS: the recent list, the stats hash, this window's stats hash, the failed list,
# then each trace's list. ARGV: ttl, max_spans, max_traces, the oldest start kept, the
# window's ttl, then msgpack of [trace id, start, count, record, ..., trace id, start, count,
# ...] (in the order of the trace keys), of [field, increment, field, increment, ...] and of
# [start, trace id, ...] for the traces with a failed record (usually empty). Returns, for
# each trace past max_spans, its position and new length. Commands take slices of 1000
# values: Lua's unpack() has a stack limit of ~8000.
_STORE: Final = """
local ttl, limit, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local over, scores = {}, {}
-- A list of traces by start (the recent one, the failed one): add [start, trace id, ...],
-- keep the newest max_traces started within the ttl.
local function index(key, starts)
  for first = 1, #starts, 1000 do
    redis.call('ZADD', key, 'LT', unpack(starts, first, math.min(first + 999, #starts)))
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[4])
  redis.call('EXPIRE', key, ttl)
end
local items = cmsgpack.unpack(ARGV[6])
local at, i, size = 1, 0, #items
while at < size do
  i = i + 1
  local key, last, length = KEYS[i + 4], at + 2 + items[at + 2], 0
  for first = at + 3, last, 1000 do
    length = redis.call('RPUSH', key, unpack(items, first, math.min(first + 999, last)))
  end
  redis.call('EXPIRE', key, ttl)
  if length > limit then
    over[#over + 1] = i
    over[#over + 1] = length
  end
  scores[#scores + 1] = items[at + 1]
  scores[#scores + 1] = items[at]
  at = last + 1
end
index(KEYS[1], scores)
local counts = cmsgpack.unpack(ARGV[7])
if #counts > 0 then
  for j = 1, #counts, 2 do
    redis.call('HINCRBY', KEYS[2], counts[j], counts[j + 1])
    redis.call('HINCRBY', KEYS[3], counts[j], counts[j + 1])
  end
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
local failed = cmsgpack.unpack(ARGV[8])
if #failed > 0 then
  index(KEYS[4], failed)
end
return over
"""


def _report(
    tallies: dict[StatsKey, Tally],
    current: dict[StatsKey, Tally],
    previous: dict[StatsKey, Tally],
    now: float,
) -> dict[str, Any]:
    """``stats_report`` of ``tallies``, each key's rate from this window's and the last's."""
    rates = {
        key: recent_rate(
            current[key].count if key in current else 0,
            previous[key].count if key in previous else 0,
            now,
            WINDOW,
        )
        for key in tallies
    }
    return stats_report(tallies, rates)


def _fields(tallies: dict[StatsKey, Tally]) -> dict[str, int]:
    """A batch's tallies as stats hash increments (``side\tsvc\tm\tcounter`` -> count)."""
    counts: dict[str, int] = {}
    for (side, svc, method), tally in tallies.items():
        prefix = f"{side.value}\t{svc}\t{method}\t"
        counts[prefix + "n"] = tally.count
        if tally.errors:
            counts[prefix + "e"] = tally.errors
        for index, hits in enumerate(tally.buckets):
            if hits:
                counts[f"{prefix}b{index}"] = hits
    return counts


async def _execute(pipe: Any) -> list[Any]:
    # A pipeline holding a script checks it is loaded before its try/finally: reset here too,
    # or a failure there leaves its connection taken.
    try:
        replies: list[Any] = await pipe.execute()
        return replies
    finally:
        await pipe.reset()


def _text(member: object) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)


def _merge_fields(fields: dict[bytes, bytes], into: dict[StatsKey, Tally]) -> dict[StatsKey, Tally]:
    """Add a stats hash's fields (``side\\tsvc\\tm\\tcounter`` -> count) to ``into``."""
    for name, value in fields.items():
        parts = name.decode("utf-8", "replace").split("\t")
        if len(parts) != 4 or parts[0] not in _SIDES:
            continue
        side, svc, method, counter = parts
        key = (_SIDES[side], svc, method)
        tally = into.get(key)
        if tally is None:
            tally = into[key] = Tally()
        hits = int(value)
        if counter == "n":
            tally.count += hits
        elif counter == "e":
            tally.errors += hits
        elif counter.startswith("b") and counter[1:].isdigit() and int(counter[1:]) <= len(BUCKETS):
            tally.buckets[int(counter[1:])] += hits
    return into


def store_from_config(tracing: TracingConfig) -> MemoryTraceStore | RedisTraceStore:
    """The store the config's ``tracing.store`` names."""
    store = tracing.store
    if isinstance(store, RedisStore):
        return RedisTraceStore(store.url, ttl=tracing.ttl, max_traces=tracing.max_traces)
    assert isinstance(store, MemoryStore)
    return MemoryTraceStore(ttl=tracing.ttl, max_traces=tracing.max_traces)
