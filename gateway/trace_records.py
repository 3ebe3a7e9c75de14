"""Trace records: what processes push to the collector, checked, tallied and packed compactly.

Theory of operation
-------------------
Every process that makes or serves calls ships one record per call to the collector
(``gateway.collector``) over a ZeroMQ PUSH socket. Each ZeroMQ message is one frame holding a
batch. rpccore sends version-2 batches, ``[2, proc, host, pid, [row, ...]]``: each row the
values of ``ROW_FIELDS`` in order, who sent them said once (``rpccore._tracing``). A msgpack
list of maps (version 1) is read too. Either way each record comes down to this map:

=======  ==========================================================================
``v``    1, the record format (other versions are refused)
``tid``  the trace id, 32 lowercase hex
``sid``  the span id, 16 lowercase hex; a call's client record and its server record share it
``par``  the parent span id (16 hex), or None for a root
``side`` ``client``, ``server`` or ``http`` (the gateway's HTTP request)
``svc``  the service name; ``m`` the method
``t0``   start, Unix seconds (float); ``t1`` first reply or None; ``t2`` end
``out``  ``ok``, ``error``, ``stream``, ``lost``, ``timeout`` or ``abandoned``
``exc``  the exception (name and message) or None; ``n`` a count (stream items) or None
``proc`` the process name, ``host`` its host, ``pid`` its pid
=======  ==========================================================================

The collector trusts no sender: ``decode_message`` never raises, whatever the bytes, and
``parse_record`` turns a map into a ``Record`` or refuses it (None), so a rogue peer costs a
counter, never the collector. Long strings are clipped (by UTF-8 bytes, never inside a
character) rather than refused, so that a long exception message still leaves its call
counted; ``svc`` and ``m`` must be printable, since they name the counters.

A stored record is ``pack_compact``'s msgpack array: positional, without ``v`` and ``tid``
(the trace's key holds it), ids as raw bytes, ``side`` and ``out`` as small integers, ``t1``
and ``t2`` as whole microseconds after ``t0``. The clipping limits below bound it to
``MAX_PACKED_BYTES`` (300) whatever the sender sent; a typical record takes 60 to 80.

Latencies (``t2 - t0``) are counted in fixed buckets (``BUCKETS``, upper bounds in seconds,
then one for anything slower); ``Tally`` holds one service method's counters and
``quantile`` reads p50/p90/p99 back from them, interpolating inside a bucket as Prometheus's
``histogram_quantile`` does.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple

import msgpack

from rpccore.tracing import BATCH_VERSION, ROW_FIELDS, are_trace_ids

from .metrics import DURATION_BUCKETS

RECORD_VERSION: Final = 1

# Clipping limits, in UTF-8 bytes. With them a packed record never exceeds MAX_PACKED_BYTES:
# 72 bytes of fixed fields and string headers at most, plus these 224.
MAX_SERVICE_BYTES: Final = 48
MAX_METHOD_BYTES: Final = 64
MAX_EXCEPTION_BYTES: Final = 64
MAX_PROCESS_BYTES: Final = 24
MAX_HOST_BYTES: Final = 24
MAX_PACKED_BYTES: Final = 300
MAX_COUNT: Final = 2**63 - 1  # n
MAX_PID: Final = 2**32 - 1

# Latency buckets: upper bounds in seconds, the same as /metrics uses (0.25 ms .. 30 s), then
# one for anything slower.
BUCKETS: Final = DURATION_BUCKETS
QUANTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


class Side(StrEnum):
    CLIENT = "client"
    SERVER = "server"
    HTTP = "http"


class Outcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    STREAM = "stream"  # a stream that ended well
    LOST = "lost"
    TIMEOUT = "timeout"
    ABANDONED = "abandoned"  # the caller went away: not the service's failure


FAILURES: Final = frozenset({Outcome.ERROR, Outcome.LOST, Outcome.TIMEOUT})
# Whose records a service's statistics come from: its servers' when there are any (one
# record per call, timed where the work is done), else its clients', else the gateway's.
SIDE_PREFERENCE: Final = (Side.SERVER, Side.CLIENT, Side.HTTP)

_SIDES: Final = {side.value: side for side in Side}
_OUTCOMES: Final = {outcome.value: outcome for outcome in Outcome}
_SIDE_CODES: Final = {side: code for code, side in enumerate(Side)}
_OUTCOME_CODES: Final = {outcome: code for code, outcome in enumerate(Outcome)}
_SIDE_OF_CODE: Final = tuple(Side)
_OUTCOME_OF_CODE: Final = tuple(Outcome)


class Record(NamedTuple):
    """One call as one process saw it, checked (``parse_record``). A named tuple: the
    collector makes one per record it receives, and ``_checked`` makes it without a Python
    frame (``_new_record``), in a fifth of a slotted dataclass's time."""

    tid: str
    sid: str
    par: str | None
    side: Side
    svc: str
    m: str
    t0: float
    t1: float | None
    t2: float
    out: Outcome
    exc: str | None
    n: int | None
    proc: str
    host: str
    pid: int

    @property
    def duration(self) -> float:
        return self.t2 - self.t0

    @property
    def failed(self) -> bool:
        return self.out in FAILURES

    def to_dict(self) -> dict[str, Any]:
        """The record as queries return it: the wire keys, without ``v``."""
        return {
            "tid": self.tid,
            "sid": self.sid,
            "par": self.par,
            "side": self.side.value,
            "svc": self.svc,
            "m": self.m,
            "t0": self.t0,
            "t1": self.t1,
            "t2": self.t2,
            "out": self.out.value,
            "exc": self.exc,
            "n": self.n,
            "proc": self.proc,
            "host": self.host,
            "pid": self.pid,
        }


# Makes a Record from a tuple of its fields, without the named tuple's Python-level __new__.
_new_record: Final = tuple.__new__


# -- checking what arrives -------------------------------------------------------------------


def decode_message(frame: bytes | memoryview) -> tuple[list[Record], int]:
    """(the valid records of one message, how many were refused). A message that is not a
    msgpack list counts as one refused record. Never raises."""
    try:
        items = msgpack.unpackb(frame, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return [], 1
    if type(items) is not list:
        return [], 1
    if items and type(items[0]) is int:
        return _decode_rows(items)
    records = []
    for item in items:
        record = parse_record(item)
        if record is not None:
            records.append(record)
    return records, len(items) - len(records)


def _decode_rows(batch: list[Any]) -> tuple[list[Record], int]:
    """A version-2 batch: rows under one sender header. A bad header refuses the batch (as
    one record, or as its rows when there is a list of them); a bad row only itself."""
    rows = batch[4] if len(batch) == 5 and type(batch[4]) is list else None
    if batch[0] != BATCH_VERSION or rows is None:
        return [], len(rows) if rows else 1
    sender = _sender(batch[1], batch[2], batch[3])
    if sender is None:
        return [], len(rows)
    records = []
    width = len(ROW_FIELDS)
    for row in rows:
        if type(row) is list and len(row) == width:
            record = _checked(row, sender)
            if record is not None:
                records.append(record)
    return records, len(rows) - len(records)


def parse_record(item: object) -> Record | None:
    """``item`` (a decoded msgpack value) as a ``Record``, or None when it is not a valid
    version-1 record. Unknown keys are ignored; strings over their limit are clipped."""
    if type(item) is not dict:
        return None
    get = item.get
    if get("v") != RECORD_VERSION or type(get("v")) is not int:
        return None
    sender = _sender(get("proc"), get("host"), get("pid"))
    if sender is None:
        return None
    return _checked([get(name) for name in ROW_FIELDS], sender)


Sender = tuple[str, str, int]  # proc, host, pid: checked, clipped, interned


def _sender(proc: Any, host: Any, pid: Any) -> Sender | None:
    """Who sent records, checked once per batch; None if invalid."""
    if not (type(pid) is int and 0 <= pid <= MAX_PID):
        return None
    if type(proc) is not str or type(host) is not str:
        return None
    return sys.intern(clip(proc, MAX_PROCESS_BYTES)), sys.intern(clip(host, MAX_HOST_BYTES)), pid


def _checked(row: Sequence[Any], sender: Sender) -> Record | None:
    """A ``Record`` of a row's values (ROW_FIELDS, in order) and its sender, or None."""
    tid, sid, par, side, svc, m, t0, t1, t2, out, exc, count = row
    if not are_trace_ids(tid, sid, par):
        return None
    if type(side) is not str or type(out) is not str:
        return None
    side_member, out_member = _SIDES.get(side), _OUTCOMES.get(out)
    if side_member is None or out_member is None:
        return None
    service = _services.get(svc) if type(svc) is str else None  # (a list is unhashable)
    if service is None:
        service = _name(svc, MAX_SERVICE_BYTES, _services)
    method = _methods.get(m) if type(m) is str else None
    if method is None:
        method = _name(m, MAX_METHOD_BYTES, _methods)
    if service is None or method is None:
        return None
    if type(t0) is float and type(t2) is float and 0 < t0 <= t2 < math.inf:
        pass  # _is_time(t0) and _is_time(t2), in line for the floats every sender sends
    elif not (_is_time(t0) and _is_time(t2)) or t2 < t0:
        return None
    if t1 is not None and not (_is_time(t1) and t0 <= t1 <= t2):
        return None
    if exc is not None and type(exc) is not str:
        return None
    if count is not None and not (type(count) is int and 0 <= count <= MAX_COUNT):
        return None
    proc, host, pid = sender
    return _new_record(
        Record,
        (
            tid,
            sid,
            par,
            side_member,
            service,
            method,
            float(t0),
            None if t1 is None else float(t1),
            float(t2),
            out_member,
            None if exc is None else clip(exc, MAX_EXCEPTION_BYTES),
            count,
            proc,
            host,
            pid,
        ),
    )


def _is_time(value: object) -> bool:
    # bool is an int: refused by the exact type test. Seconds since 1970, so > 0.
    return (type(value) is float or type(value) is int) and 0 < value < math.inf


# The service and method names seen, each to its checked, clipped and interned self: a few
# names come again and again, and looking one up costs a third of checking it. At most
# NAMES_KEPT each, so that a sender inventing names cannot grow them (past that, names are
# checked every time).
NAMES_KEPT: Final = 4096
_services: dict[Any, str] = {}
_methods: dict[Any, str] = {}


def _name(value: object, limit: int, seen: dict[Any, str]) -> str | None:
    if type(value) is not str or not value or not value.isprintable():
        return None
    name = sys.intern(clip(value, limit))
    if len(seen) < NAMES_KEPT:
        seen[name if name == value else value] = name
    return name


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    if len(text) <= limit and text.isascii():
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


# -- stored form ---------------------------------------------------------------------------


_pack: Final = msgpack.Packer(use_bin_type=True).pack  # one Packer, not one per record


def pack_compact(record: Record) -> bytes:
    """The stored form of ``record`` (see the module's docstring); at most 300 bytes."""
    # Unpacked at once: faster than reading the fields one by one, for every stored record.
    _, sid, par, side, svc, method, t0, t1, t2, out, exc, count, proc, host, pid = record
    packed: bytes = _pack(
        [
            bytes.fromhex(sid),
            None if par is None else bytes.fromhex(par),
            _SIDE_CODES[side],
            svc,
            method,
            t0,
            None if t1 is None else round((t1 - t0) * 1e6),
            round((t2 - t0) * 1e6),
            _OUTCOME_CODES[out],
            exc,
            count,
            proc,
            host,
            pid,
        ]
    )
    return packed


def unpack_compact(tid: str, data: bytes) -> Record | None:
    """The record ``pack_compact`` stored under trace ``tid``, or None if ``data`` is not one
    (the key was written by something else)."""
    try:
        sid, par, side, svc, method, t0, d1, d2, out, exc, count, proc, host, pid = msgpack.unpackb(
            data, raw=False
        )
        return Record(
            tid,
            sid.hex(),
            None if par is None else par.hex(),
            _SIDE_OF_CODE[side],
            svc,
            method,
            t0,
            None if d1 is None else t0 + d1 / 1e6,
            t0 + d2 / 1e6,
            _OUTCOME_OF_CODE[out],
            exc,
            count,
            proc,
            host,
            pid,
        )
    except (ValueError, TypeError, IndexError, AttributeError, msgpack.UnpackException):
        return None


# -- what queries answer ---------------------------------------------------------------------

# Characters of a service or method name a filter may give: more than any stored name holds
# (MAX_SERVICE_BYTES, MAX_METHOD_BYTES), so a longer one is a mistake.
MAX_FILTER_NAME: Final = 200


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """Which traces ``recent`` lists: those with a span of ``service`` (any side's record) and
    ``method``, and with ``failed``, one that failed there; each part left out matches any.
    The empty filter (false) lists every trace."""

    service: str | None = None
    method: str | None = None
    failed: bool = False

    def __bool__(self) -> bool:
        return self.service is not None or self.method is not None or self.failed

    @classmethod
    def checked(cls, service: object, method: object, failed: object) -> TraceFilter:
        """A filter from a query's arguments; ValueError names the one that is wrong."""
        if not isinstance(failed, bool):
            raise ValueError(f"failed must be true or false, got {failed!r}")
        return cls(_filter_name(service, "service"), _filter_name(method, "method"), failed)

    def matches(self, records: Iterable[Record]) -> bool:
        service, method, failed = self.service, self.method, self.failed
        return any(
            (service is None or record.svc == service)
            and (method is None or record.m == method)
            and (not failed or record.failed)
            for record in records
        )


def _filter_name(value: object, name: str) -> str | None:
    if value is None or (isinstance(value, str) and len(value) <= MAX_FILTER_NAME):
        return value
    raise ValueError(f"{name} must be None or a name of at most {MAX_FILTER_NAME} characters")


def summarize(tid: str, records: Sequence[Record]) -> dict[str, Any]:
    """One line of ``recent``: {trace_id, start, duration, spans, errors, root: {svc, m}}.
    The root is the earliest record without a parent (the earliest record while the root's
    own has not arrived); ``spans`` counts distinct span ids, since a call's client and
    server records share one, and ``errors`` the spans that failed, as the call tree does
    (a failed call is one error, however many sides recorded it)."""
    start = min(record.t0 for record in records)
    end = max(record.t2 for record in records)
    roots = [record for record in records if record.par is None] or list(records)
    root = min(roots, key=lambda record: (record.t0, _ROOT_ORDER[record.side]))
    return {
        "trace_id": tid,
        "start": start,
        "duration": end - start,
        "spans": len({record.sid for record in records}),
        "errors": len({record.sid for record in records if record.failed}),
        "root": {"svc": root.svc, "m": root.m},
    }


_ROOT_ORDER: Final = {Side.HTTP: 0, Side.CLIENT: 1, Side.SERVER: 2}


def bucket_of(duration: float) -> int:
    """The index of the latency bucket ``duration`` (seconds) counts in."""
    return bisect.bisect_left(BUCKETS, duration)


@dataclass(slots=True)
class Tally:
    """The counters of one (side, service, method): calls, failures, latency buckets."""

    count: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def add(self, record: Record) -> None:
        # ``failed`` and ``bucket_of(duration)`` written out: the collector runs this for
        # every record it stores.
        self.count += 1
        if record.out in FAILURES:
            self.errors += 1
        self.buckets[bisect.bisect_left(BUCKETS, record.t2 - record.t0)] += 1

    def merge(self, other: Tally) -> None:
        self.count += other.count
        self.errors += other.errors
        for index, hits in enumerate(other.buckets):
            self.buckets[index] += hits


def quantile(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the latencies counted in ``buckets``, in seconds; None
    when nothing was counted. Inside a bucket latencies are taken as evenly spread; one in the
    last (unbounded) bucket reads as its lower bound, 30 s."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, hits in enumerate(buckets):
        if hits and seen + hits >= rank:
            if index == len(BUCKETS):
                return BUCKETS[-1]
            lower = BUCKETS[index - 1] if index else 0.0
            return lower + (BUCKETS[index] - lower) * (rank - seen) / hits
        seen += hits
    return BUCKETS[-1]  # float rounding of rank past the total


StatsKey = tuple[Side, str, str]  # (side, service, method)


def stats_report(
    tallies: Mapping[StatsKey, Tally], rates: Mapping[StatsKey, float]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``stats()``'s answer: {svc: {m: {count, errors, rate, p50, p90, p99, buckets}}}, each
    service from its preferred side (``SIDE_PREFERENCE``). ``buckets`` lists
    ``[upper bound in seconds, calls]`` pairs, the last bound None (unbounded)."""
    best: dict[str, Side] = {}
    for side, svc, _ in tallies:
        if svc not in best or SIDE_PREFERENCE.index(side) < SIDE_PREFERENCE.index(best[svc]):
            best[svc] = side
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for key, tally in sorted(tallies.items()):
        side, svc, method = key
        if best[svc] is not side:
            continue
        entry: dict[str, Any] = {
            "count": tally.count,
            "errors": tally.errors,
            "rate": rates.get(key, 0.0),
            "side": side.value,
        }
        for name, q in QUANTILES:
            entry[name] = quantile(tally.buckets, q)
        bounds: Iterable[float | None] = (*BUCKETS, None)
        pairs = zip(bounds, tally.buckets, strict=True)
        entry["buckets"] = [[bound, hits] for bound, hits in pairs]
        report.setdefault(svc, {})[method] = entry
    return report


def recent_rate(current: int, previous: int, now: float, window: float = 60.0) -> float:
    """Calls per second over the last ``window`` seconds, from the counts of the current
    window (started at a multiple of ``window``) and of the previous one, weighted by how much
    of it the last ``window`` seconds still cover."""
    elapsed = now % window
    return (current + previous * (window - elapsed) / window) / window
