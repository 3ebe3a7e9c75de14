"""Trace records: one per call and side, through ``logging`` to a collector.

Theory of operation. Tracing is off until ``enable()`` (or ``$ZEROGATE_COLLECTOR``, read
at the first Server or Client of the process). While it is off the pumps pay one boolean
check per call begin and end, nothing else: no header, no clock, no record.

While it is on, every call has a span on each side. The client opens one when it sends
the request (a root call gets a new trace id; a call made inside a handler is a child of
the handler's span) and closes it when the call ends: reply, STREAM_DONE, error, lost
remote, timeout, or abandoned by the caller. The server opens one per request (a request
without trace context, from zerorpc 0.6.3 say, starts a new trace here) and closes it once
it has answered. A closed span becomes a RECORD, a flat dict with short keys, logged at
INFO on the ``rpccore.trace`` logger in ``extra={"zerogate_trace": record}``:

    v     1                        tid   trace id (32 hex)
    sid   the call's span id: the one the client sent, which the server received
    par   the parent span id (the calling handler's span), or None
    side  "client" | "server"      svc   service (server: its name; client: the remote's
    m     method                         name if known, else the endpoint)
    t0    Unix time the request was sent / received
    t1    first reply (item) sent / received, or None   t2  the end
    out   "ok" | "error" | "stream" | "lost" | "timeout" | "abandoned"
    exc   exception name for "error", else None          n   stream item count or None
    proc  ZEROGATE_PROCESS_NAME or argv[0]'s basename    host, pid

Packed with msgpack a record is at most MAX_RECORD_BYTES: long names are shortened to fit.

On the wire to the collector (``CollectorHandler``) a record travels as a ROW, the values
of ``ROW_FIELDS`` in order, and a batch says who sent its rows once: a msgpack array
``[BATCH_VERSION, proc, host, pid, [row, ...]]``. Rows, not maps: while the collector is the
only handler, records are never made into dicts at all, and a batch packs three times
faster and a third smaller. Nor does the call make the row then: a SPAN is a list that
begins with its row (see "spans" below), the call queues it when it closes, and the
handler's sender thread packs the rows of a batch (``_route``), so a traced call pays one
append for its record (``bench/rpc.py`` measures what is left).

The logger is the seam: ``CollectorHandler`` PUSHes batches to ``zerogate collector``,
``OpenTelemetryHandler`` turns records into OpenTelemetry spans, and a user can add any
handler of their own to ``rpccore.trace``. Error hooks (``on_error``) see every ERR a
server sends or a client receives; an initialised Sentry SDK gets every server-side ERR.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import logging
import operator
import os
import socket
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from time import time
from typing import Any, Final, ParamSpec, TypeVar

import msgpack
import zmq

from ._errors import LostRemote, RemoteError, RPCError, TimeoutExpired
from ._trace import (
    ZERO_TRACE_ID,
    TraceContext,
    _new_context,
    are_trace_ids,
    call_metadata,
    current_trace,
    new_root_ids,
    new_span_id,
    outgoing_trace_header,
)

LOGGER_NAME: Final = "rpccore.trace"
ENV_COLLECTOR: Final = "ZEROGATE_COLLECTOR"
ENV_PROCESS_NAME: Final = "ZEROGATE_PROCESS_NAME"
RECORD_VERSION: Final = 1
BATCH_VERSION: Final = 2  # the collector's wire format: rows under one sender header
ROW_FIELDS: Final = ("tid", "sid", "par", "side", "svc", "m", "t0", "t1", "t2", "out", "exc", "n")
MAX_RECORD_BYTES: Final = 300
EXTRA_KEY: Final = "zerogate_trace"  # the LogRecord attribute holding the record

# Outcomes (the record's ``out``).
OK: Final = "ok"
ERROR: Final = "error"
STREAM: Final = "stream"
LOST: Final = "lost"
TIMEOUT: Final = "timeout"
ABANDONED: Final = "abandoned"

# CollectorHandler defaults.
# Seconds between sends of what has gathered: short, so that few records wait (a longer
# queue costs the calling threads more in cache misses than the extra wake-ups do).
FLUSH_INTERVAL: Final = 0.02
# Records per message: a pass of the sender (20 ms of a busy process's calls) in one or two
# messages, each under 300 KiB (MAX_RECORD_BYTES each); every send lets go of the GIL.
BATCH_SIZE: Final = 1024
SEND_HWM: Final = 16  # batches ZeroMQ may queue for a slow or absent collector
MAX_BUFFERED: Final = 16 * BATCH_SIZE  # records waiting for the sender thread
# Seconds the sender waits at most while no records come: also how long a burst after a
# quiet spell may gather before it wakes (a quarter of a second of calls stays well under
# MAX_BUFFERED: spans are queued with no check, see CollectorHandler.take).
IDLE_INTERVAL: Final = 0.25
CLOSE_TIMEOUT: Final = 0.5  # seconds a closing handler gives its last batches

_IDENT_LIMIT: Final = 24  # bytes of the process and host names kept
_MAX_COUNT: Final = 2**32 - 1

logger = logging.getLogger(LOGGER_NAME)  # records only
_log = logging.getLogger("rpccore")  # our own troubles

# Read by the pumps at every call: a plain module global, so "off" costs one lookup.
ON = False

ErrorHook = Callable[[dict[str, Any], Any], None]
Row = tuple[Any, ...]  # a record's ROW_FIELDS values
_P = ParamSpec("_P")
_R = TypeVar("_R")


# -- who we are ---------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (never mid-character)."""
    if len(text) <= limit and text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace")[:limit].decode("utf-8", "ignore")


class _Identity:
    __slots__ = ("batch_header", "host", "pid", "proc", "room")

    def __init__(self, process_name: str | None) -> None:
        name = process_name or os.environ.get(ENV_PROCESS_NAME) or ""
        if not name:
            name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        self.proc = _clip(name, _IDENT_LIMIT)
        self.host = _clip(socket.gethostname(), _IDENT_LIMIT)
        self.pid = os.getpid()
        # The bytes left for svc + m + exc: a worst-case record with those empty, and one
        # more header byte for each that reaches 32 bytes (msgpack's str8).
        worst = _pack(
            {
                "v": RECORD_VERSION,
                "tid": "0" * 32,
                "sid": "0" * 16,
                "par": "0" * 16,
                "side": "client",
                "svc": "",
                "m": "",
                "t0": 0.5,
                "t1": 0.5,
                "t2": 0.5,
                "out": ABANDONED,
                "exc": "",
                "n": _MAX_COUNT,
                "proc": self.proc,
                "host": self.host,
                "pid": _MAX_COUNT,
            }
        )
        self.room = MAX_RECORD_BYTES - len(worst) - 3
        # A batch's first bytes: a five-item array, then who sent it (see the module doc).
        self.batch_header = b"".join(
            [
                _packer.pack_array_header(5),
                *map(_pack, (BATCH_VERSION, self.proc, self.host, self.pid)),
            ]
        )


_packer = msgpack.Packer(use_bin_type=True)
_pack = _packer.pack
# For the sender's batches of spans: rows hold exact str, float, int and None, and the strict
# packer looks no further than a value's exact type (a third less time than the default,
# which asks whether each value is a subclass of every type it tries). A row it refuses (a
# service named by a str subclass, say) is packed again by the default one.
_pack_strict = msgpack.Packer(use_bin_type=True, strict_types=True).pack
_ident = _Identity(None)


def _fitted(row: Row) -> Row:
    """``row`` with its three free-form names (svc, m, exc) shortened so that the record
    keeps to MAX_RECORD_BYTES, and its stream count capped (``row_of`` calls it only when
    they may not fit)."""
    svc, method, exc, n = row[4], row[5], row[10], row[11]
    room = _ident.room
    texts = [svc, method, exc or ""]
    sizes = [len(t.encode("utf-8", "backslashreplace")) for t in texts]
    # Fair shares, shortest first: what a short name leaves goes to the longer ones.
    limits = [0, 0, 0]
    left, fields = room, 3
    for i in sorted(range(3), key=sizes.__getitem__):
        limits[i] = min(sizes[i], left // fields)
        left -= limits[i]
        fields -= 1
    svc, method, text = (_clip(t, lim) for t, lim in zip(texts, limits, strict=True))
    exc = text if exc is not None else None
    n = None if n is None else min(n, _MAX_COUNT)
    return (*row[:4], svc, method, *row[6:10], exc, n)


def _as_record(row: Row) -> dict[str, Any]:
    """The RECORD (a dict, see the module doc) of a row made in this process."""
    ident = _ident
    return {
        "v": RECORD_VERSION,
        **dict(zip(ROW_FIELDS, row, strict=True)),
        "proc": ident.proc,
        "host": ident.host,
        "pid": ident.pid,
    }


# -- emitting -------------------------------------------------------------------------

_error_hooks: list[ErrorHook] = []


# What every record's LogRecord shares. ``logger.info`` would spend most of its time
# finding the caller's file and line (a stack walk) and filling in fields no trace
# handler reads; a record is a copy of this template with its own time and data, handed
# to ``logger.handle`` (filters and handlers, as any record).
_TEMPLATE: Final = logging.LogRecord(
    LOGGER_NAME, logging.INFO, __file__, 0, "rpc %s span", ("?",), None, "_ship"
).__dict__


def _log_record(record: dict[str, Any], remote_parent: bool) -> logging.LogRecord:
    log_record = logging.LogRecord.__new__(logging.LogRecord)
    fields = log_record.__dict__
    fields.update(_TEMPLATE)
    created = record["t2"]
    fields["created"] = created
    fields["msecs"] = (created * 1000) % 1000
    fields["args"] = (record["side"],)
    fields["thread"] = threading.get_ident()
    fields["process"] = _ident.pid
    fields[EXTRA_KEY] = record
    fields["zerogate_remote_parent"] = remote_parent
    return log_record


def _through_logging(span: Span) -> None:
    """Hand a closed span's record to ``logging`` (its handlers and filters)."""
    if logger.isEnabledFor(logging.INFO):
        logger.handle(_log_record(_as_record(row_of(span)), remote_of(span)))


# Where a closed span goes, set by _route: every traced call calls it once on each side,
# so while our collector alone listens it is that handler's take() itself (one call that
# appends the span to a queue), else _through_logging.
_ship: Callable[[Span], None] = _through_logging


def _route() -> CollectorHandler | None:
    """Decide where records go: while our collector is the only handler of the
    ``rpccore.trace`` logger (no filters, INFO enabled), closed spans go straight into
    its queue, and its sender thread packs their rows, off the calls' path; else each
    goes through ``logging`` as it closes. Run when tracing is switched, and by the
    sender at every pass: a handler or filter added later gets every record from that
    pass on (the ones queued meanwhile included, then from the sender thread)."""
    global _ship
    collector, handlers = _collector, logger.handlers
    if (
        ON
        and collector is not None
        and len(handlers) == 1
        and handlers[0] is collector
        and not logger.filters
        and not collector.filters
        and logger.isEnabledFor(logging.INFO)
    ):
        _ship = collector.take
        return collector
    _ship = _through_logging
    return None


def _to_hooks(span: Span, error: Any) -> None:
    """Give the error hooks a closed span's record and its error."""
    if not _error_hooks:
        return
    record = _as_record(row_of(span))
    for hook in tuple(_error_hooks):
        try:
            hook(record, error)
        except Exception:
            _log.exception("a tracing error hook failed")


def on_error(callback: ErrorHook) -> Callable[[], None]:
    """Call ``callback(record, error)`` for every ERR a server sends (``error``: the
    exception the method raised, or a ``MethodNotFound`` for an unknown method) or a
    client receives (the ``RemoteError``), while tracing is on. Returns a function that
    removes the hook. A hook that raises is logged and never reaches the call."""
    _error_hooks.append(callback)

    def remove() -> None:
        if callback in _error_hooks:
            _error_hooks.remove(callback)

    return remove


# -- spans ----------------------------------------------------------------------------
#
# A SPAN is a plain list: its ROW, the values of ROW_FIELDS, filled in as the call goes.
# Two more items follow when they are not what its side implies: REMOTE, whether its parent
# came over the wire (implied: yes on a server, which continues its caller's trace; no on a
# client or for the gateway's HTTP request), and ERR, the error an ERR carried, for the
# error hooks (implied: none). A list rather than an object: one is made on each side of
# every traced call, and a list is made in a third of the time of a slotted object and
# written with the interpreter's fast path for lists; and the sender packs nearly every
# span as it is, the row it is.

Span = list[Any]
TID, SID, PAR, SIDE, SVC, M, T0, T1, T2, OUT, EXC, N, REMOTE, ERR = range(14)
ROW_WIDTH: Final = len(ROW_FIELDS)  # a span's first items are its row
_ANSWERED: Final = frozenset({OK, ERROR, STREAM})  # outcomes whose end is an answer


def remote_of(span: Span) -> bool:
    """Whether a span's parent came over the wire."""
    remote: bool = span[REMOTE] if len(span) > ROW_WIDTH else span[SIDE] == "server"
    return remote


def error_of(span: Span) -> Any:
    """The error an ERR carried, for the error hooks, or None."""
    return span[ERR] if len(span) > ROW_WIDTH else None


def row_of(span: Span) -> Row:
    """A closed span's ROW, its names shortened if they may not keep to MAX_RECORD_BYTES."""
    row = tuple(span[:ROW_WIDTH])
    return row if _fits(row) else _fitted(row)


def _fits(row: Span | Row) -> bool:
    """Whether a row's names keep to MAX_RECORD_BYTES as they are (short ASCII names: nearly
    always), and its count to its bound."""
    return _names_fit(row[SVC], row[M], row[EXC], row[N])


def _names_fit(svc: str, method: str, exc: str | None, n: int | None) -> bool:
    """``_fits`` of a row with these names and count. ``len`` and ``isascii`` look at no
    character."""
    return (
        len(svc) + len(method) + (len(exc) if exc else 0) <= _ident.room
        and svc.isascii()
        and method.isascii()
        and (exc is None or exc.isascii())
        and (n is None or n <= _MAX_COUNT)
    )


_NAMES_AND_COUNT: Final = operator.itemgetter(SVC, M, EXC, N)


def rows_of(spans: list[Span]) -> list[Any]:
    """The rows of closed spans, to pack: nearly always the spans themselves, found so with
    no Python per span (a span is its row unless it carries more, see ``remote_of`` and
    ``error_of``, or its names must be shortened); else a list with the rows of those."""
    if set(map(len, spans)) == {ROW_WIDTH} and all(
        itertools.starmap(_names_fit, set(map(_NAMES_AND_COUNT, spans)))
    ):
        return spans
    return [
        span if len(span) == ROW_WIDTH and _fits(span) else list(row_of(span)) for span in spans
    ]


def item(span: Span) -> None:
    """One stream item went by (the first one's time is the first answer's)."""
    if span[N] is None:
        span[T1] = time()
        span[N] = 1
    else:
        span[N] += 1


def end(span: Span, out: str, error: Any = None) -> None:
    """The call ended, now, with outcome ``out``. ``error``: what an ERR carried (the
    exception a method raised, the RemoteError a client received), named in the record
    and handed to the error hooks. On a server the answer is queued then: its client may
    have it before the span is emitted."""
    span[T2] = t2 = time()
    span[OUT] = out
    if out is OK:  # nearly always (the pumps pass the constant): a reply, its first answer
        if span[T1] is None:
            span[T1] = t2
        return
    if error is not None:
        if len(span) == ROW_WIDTH:
            span += (remote_of(span), error)
        else:
            span[ERR] = error
        span[EXC] = _error_name(error)
    if span[T1] is None and out in _ANSWERED:
        span[T1] = t2
    if out == STREAM and span[N] is None:
        span[N] = 0


def _error_name(error: Any) -> str:
    """What a record says an ERR was: the remote exception's name, else the type's."""
    name = getattr(error, "name", None) if isinstance(error, RemoteError) else None
    return name if isinstance(name, str) else type(error).__name__


def end_failed(span: Span, error: RPCError) -> None:
    """End a client span as a failed call ends (CallFailed)."""
    if isinstance(error, TimeoutExpired):
        end(span, TIMEOUT)
    elif isinstance(error, LostRemote):
        end(span, LOST)
    elif isinstance(error, RemoteError):
        end(span, ERROR, error)
    else:
        end(span, ERROR)
        span[EXC] = type(error).__name__


def ship(span: Span) -> None:
    """Send an ended client span's record (and its error to the error hooks)."""
    _ship(span)
    if len(span) > ROW_WIDTH:  # it carries more than its row: maybe an error
        error = error_of(span)
        if error is not None:
            _to_hooks(span, error)


def finish(span: Span, out: str) -> None:
    """End a client span now with ``out``, and ship it."""
    end(span, out)
    ship(span)


def emit(span: Span) -> None:
    """Send a server span's record once its answer has left (a span never ended was
    abandoned), and its error to the error hooks and Sentry."""
    if not span[T2]:
        span[T2] = time()
    _ship(span)
    if len(span) > ROW_WIDTH:  # it carries more than its row: maybe an error
        error = error_of(span)
        if error is not None:
            _to_hooks(span, error)
            if span[OUT] == ERROR:
                _to_sentry(span, error)


# A call is recorded while tracing is on, unless the caller asked for ``untraced()`` or it
# is one of the protocol's built-ins (pings, introspection), which would bury the calls
# that matter (a gateway pings every endpoint every heartbeat). client_begin and
# server_start check it in line: they run for every call.
BUILTIN_PREFIX: Final = "_zerorpc_"


_untraced: ContextVar[bool] = ContextVar("rpccore_untraced", default=False)


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Calls made inside are not recorded and start no trace (looking at traces must not
    make new ones)."""
    token = _untraced.set(True)
    try:
        yield
    finally:
        _untraced.reset(token)


def client_begin(method: str, svc: str) -> tuple[dict[str, Any] | None, Span | None]:
    """The header of a call made now while tracing is on, and its span: a child of the
    current span, or the root of a new trace, plus the context's call metadata. When the
    call is not recorded (see BUILTIN_PREFIX), the header ``outgoing_trace_header`` gives,
    and no span."""
    if method.startswith(BUILTIN_PREFIX) or _untraced.get():
        return outgoing_trace_header(), None
    parent = current_trace.get()
    if parent is None:
        tid, sid = new_root_ids()
        par = None
        header = {"trace_id": tid, "span_id": sid}
    else:
        tid, sid, par = parent.trace_id, new_span_id(), parent.span_id
        header = {"trace_id": tid, "span_id": sid, "parent_span_id": par}
    metadata = call_metadata.get()
    if metadata:
        header = {**metadata, **header}
    span = [tid, sid, par, "client", svc, method, time(), None, 0.0, ABANDONED, None, None]
    return header, span


def server_start(
    header: Mapping[Any, Any], svc: str, method: str
) -> tuple[TraceContext | None, Span | None]:
    """(the context a request's handler runs in, the request's span or None) while tracing
    is on: ``TraceContext.from_header`` and ``server_begin`` in one. A traced caller's ids
    (nearly every request's) are checked here, once; any other header goes the long way.
    The first lines are ``from_header``'s fast path written out: calling it, and then
    ``server_begin``, cost each traced request 85 ns more (timeit)."""
    tid = header.get("trace_id")
    sid = header.get("span_id")
    par = header.get("parent_span_id")
    if not are_trace_ids(tid, sid, par) or tid == ZERO_TRACE_ID:
        ctx = TraceContext.from_header(header)
        span = server_begin(ctx, svc, method)
        if ctx is None and span is not None:  # the request starts a new trace: the span's
            ctx = span_context(span)
        return ctx, span
    ctx = _new_context(TraceContext, (tid, sid, par))
    if method.startswith(BUILTIN_PREFIX) or _untraced.get():
        return ctx, None
    span = [tid, sid, par, "server", svc, method, time(), None, 0.0, ABANDONED, None, None]
    return ctx, span


def server_begin(ctx: TraceContext | None, svc: str, method: str) -> Span | None:
    """The span of a request whose header carried ``ctx`` (None: the request starts a new
    trace, whose context ``span_context`` gives), or None when the request is not recorded
    (see BUILTIN_PREFIX)."""
    if method.startswith(BUILTIN_PREFIX) or _untraced.get():
        return None
    tid, sid, par = TraceContext.new_root() if ctx is None else ctx
    span = [tid, sid, par, "server", svc, method, time(), None, 0.0, ABANDONED, None, None]
    if ctx is None:  # a new trace: its parent did not come over the wire
        span += (False, None)
    return span


def span_context(span: Span) -> TraceContext:
    """The trace context of a server span: its handler's calls are its children."""
    return _new_context(TraceContext, (span[TID], span[SID], span[PAR]))


HTTP_SIDE: Final = "http"  # the side of a gateway's record of an HTTP request
_HTTP_ERROR: Final = "HTTP "  # such a record's ``exc``: "HTTP 404"


def http_request(
    ctx: TraceContext, what: str, t0: float, status: int, svc: str = HTTP_SIDE
) -> None:
    """A gateway's record of one HTTP request (side ``http``): ``ctx`` is the request's span,
    parent of the RPC calls it made; ``what`` is e.g. ``POST /rpc/calc/add``. Statuses from
    400 up are errors named ``HTTP <status>`` (``http_status`` reads them back)."""
    if not ON:
        return
    out, exc = (OK, None) if status < 400 else (ERROR, f"{_HTTP_ERROR}{status}")
    tid, sid, par = ctx
    _ship([tid, sid, par, HTTP_SIDE, svc, what, t0, None, time(), out, exc, None])


def http_status(exc: str | None) -> int | None:
    """The status an HTTP record's ``exc`` names (``http_request``), or None."""
    if exc is None or not exc.startswith(_HTTP_ERROR):
        return None
    digits = exc[len(_HTTP_ERROR) :]
    return int(digits) if len(digits) == 3 and digits.isdigit() else None


# -- Sentry ---------------------------------------------------------------------------


def _to_sentry(span: Span, error: Any) -> None:
    """Forward a server-side ERR to Sentry, when the application initialised its SDK (we
    never import it: if it is not imported, it cannot be initialised)."""
    sdk: Any = sys.modules.get("sentry_sdk")
    if sdk is None:
        return
    try:
        get_client = getattr(sdk, "get_client", None)
        if get_client is not None:
            if not get_client().is_active():
                return
        elif getattr(sdk.Hub.current, "client", None) is None:  # sentry-sdk 1.x
            return
        scope_of = getattr(sdk, "new_scope", None) or sdk.push_scope
        with scope_of() as scope:
            scope.set_tag("trace_id", span[TID])
            scope.set_tag("rpc.service", span[SVC])
            scope.set_tag("rpc.method", span[M])
            scope.set_tag("rpc.system", "zerorpc")
            if isinstance(error, BaseException):
                sdk.capture_exception(error)
            else:
                sdk.capture_message(str(error), level="error")
    except Exception:
        _log.exception("forwarding an error to Sentry failed")


# -- switching on and off ---------------------------------------------------------------

_lock = threading.Lock()
_collector: CollectorHandler | None = None
_otel: logging.Handler | None = None
_checked_env = False


def enable(
    collector: str | None = None, *, process_name: str | None = None
) -> CollectorHandler | None:
    """Turn tracing on in this process.

    ``collector``: the endpoint of ``zerogate collector`` to PUSH records to (default:
    ``$ZEROGATE_COLLECTOR``); without one, records only reach the handlers the
    application puts on the ``rpccore.trace`` logger. ``process_name`` names this process
    in records (default: ``$ZEROGATE_PROCESS_NAME``, else argv[0]'s basename). If the
    application configured an OpenTelemetry SDK tracer provider before this call, records
    also become OpenTelemetry spans. Returns the CollectorHandler (``dropped`` counts the
    records a dead or slow collector cost), or None. Calling it again is harmless.
    """
    global ON, _ident, _collector, _otel, _checked_env
    with _lock:
        _checked_env = True
        _ident = _Identity(process_name)
        endpoint = collector or os.environ.get(ENV_COLLECTOR) or None
        if endpoint is not None and (_collector is None or _collector.endpoint != endpoint):
            handler = CollectorHandler(endpoint)  # a bad endpoint raises here
            if _collector is not None:
                logger.removeHandler(_collector)
                _collector.close()
            _collector = handler
            logger.addHandler(handler)
        if _otel is None:
            _otel = _configured_opentelemetry()
            if _otel is not None:
                logger.addHandler(_otel)
        # Records are data, not messages: they go to this logger's handlers only, never
        # to the root logger's console.
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        ON = True
        _route()
        return _collector


def disable() -> None:
    """Turn tracing off; the collector and OpenTelemetry handlers we added are removed
    (the collector's is flushed and closed)."""
    global ON, _collector, _otel
    with _lock:
        ON = False
        _route()  # before the handlers go: spans that close now go nowhere
        for handler in (_collector, _otel):
            if handler is not None:
                logger.removeHandler(handler)
                handler.close()
        _collector = _otel = None


def is_enabled() -> bool:
    return ON


def collector_handler() -> CollectorHandler | None:
    """The handler ``enable`` installed, if any (its ``dropped`` and ``sent`` counts)."""
    return _collector


def enable_from_environment() -> None:
    """At the first Server or Client of the process: ``$ZEROGATE_COLLECTOR`` turns
    tracing on. Later calls cost one boolean check."""
    global _checked_env
    if _checked_env:
        return
    _checked_env = True
    if os.environ.get(ENV_COLLECTOR):
        try:
            enable()
        except (zmq.ZMQError, ValueError) as exc:
            _log.warning("$%s: cannot ship trace records: %s", ENV_COLLECTOR, exc)


def _after_fork() -> None:
    global _ident
    _ident = _Identity(None if _ident is None else _ident.proc)


os.register_at_fork(after_in_child=_after_fork)


# -- carrying the trace into threads and greenlets ------------------------------------


def traced(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn``, to run with the contextvars of the caller of ``traced`` (the current
    trace, call metadata): give it to ``threading.Thread(target=...)``, an executor or a
    callback so calls it makes are children of the handler's span. Each call runs in its
    own copy, so the wrapper may run in several threads at once."""
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return context.copy().run(fn, *args, **kwargs)

    return run


# -- shipping to the collector ----------------------------------------------------------


class CollectorHandler(logging.Handler):
    """PUSHes trace records to ``zerogate collector``, never slowing a call.

    ``emit`` only appends the record's packed row to a queue, and while this handler alone
    listens, closed spans are queued as they are (``take``: see ``_route``). A sender
    thread, started with the handler, packs the spans' rows and sends what is
    queued every ``interval`` seconds (sooner once a quarter of ``max_buffered`` rows
    wait; while none come, it waits longer each time, up to ``IDLE_INTERVAL``), in batches
    of ``batch_size`` rows (see the module doc), on its own PUSH socket, with NOBLOCK: when
    the collector is dead or slow, ZeroMQ queues ``high_water_mark`` batches, then batches
    are dropped and counted in ``dropped``, as are records past ``max_buffered``. The
    socket lives on a context of its own and is used by the sender thread only; with
    gevent's monkey patching the thread is a greenlet, and NOBLOCK sends never block the
    hub either. The thread starts with the handler, not at the first record: starting a
    thread waits for it, which gevent's hub (where a green client's replies arrive) must
    never do. ``close`` (run by ``logging.shutdown`` at exit) gives the last records
    ``close_timeout`` seconds to leave.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        batch_size: int = BATCH_SIZE,
        interval: float = FLUSH_INTERVAL,
        high_water_mark: int = SEND_HWM,
        max_buffered: int = MAX_BUFFERED,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        super().__init__(logging.INFO)
        self.endpoint = endpoint
        self.sent = 0  # records handed to ZeroMQ
        self._batch = batch_size
        self._interval = interval
        self._max = max_buffered
        self._close_timeout = close_timeout
        self._rows: deque[bytes] = deque()  # packed rows (put)
        self._spans: deque[Span] = deque()  # closed spans (take)
        # take(span) queues a closed span as it is (it is ``_ship`` while this handler
        # alone listens): the deque's own append, so a traced call runs no Python for it.
        # The sender packs its row in a batch, off the call's path, and keeps the queue to
        # ``max_buffered`` at each pass.
        self.take: Callable[[Span], None] = self._spans.append
        # Woken by put() only when its queue fills up: waking it for every batch made the
        # calling thread hand the GIL over that often (take() never wakes it: see above).
        self._wake_at = max(batch_size, max_buffered // 4)
        self._full = 0  # dropped: the queue was full
        self._refused = 0  # dropped: ZeroMQ would not take them
        self._wake = threading.Event()
        self._pause = interval  # the sender's next wait: longer while nothing comes
        self._closing = False
        self._thread: threading.Thread | None = None
        self._context: Any = zmq.Context()
        self._sock: Any = self._context.socket(zmq.PUSH)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.SNDHWM, high_water_mark)
            self._sock.connect(endpoint)
        except BaseException:
            self._sock.close(linger=0)
            self._context.term()
            raise
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_in_child(ref))
        self._start()

    def __repr__(self) -> str:
        return (
            f"<CollectorHandler {self.endpoint} queued={self.queued} sent={self.sent} "
            f"dropped={self.dropped}>"
        )

    @property
    def queued(self) -> int:
        """Records waiting for the sender thread."""
        return len(self._rows) + len(self._spans)

    @property
    def dropped(self) -> int:
        return self._full + self._refused

    def emit(self, record: logging.LogRecord) -> None:
        data = record.__dict__.get(EXTRA_KEY)
        if isinstance(data, dict):
            self.put(tuple(data.get(field) for field in ROW_FIELDS))

    def put(self, row: Row) -> None:
        """Queue one record's row (``emit`` without the LogRecord and the dict)."""
        if self._closing:
            return
        records = self._rows
        if len(records) >= self._max:
            self._full += 1
            return
        # Packed now and queued as bytes: the row's tuple and strings are freed at once
        # instead of living until the sender's next pass (and the garbage collector need not
        # look at them); the sender only joins the bytes under the batch's header.
        try:
            records.append(_pack(row))
        except (TypeError, ValueError, OverflowError):  # e.g. a name with a lone surrogate
            self._refused += 1
            return
        if len(records) == self._wake_at:
            self._wake.set()

    def flush(self) -> None:
        """Ask the sender to send now (it does not wait for it)."""
        self._wake.set()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._wake.set()
                thread.join(self._close_timeout + 1.0)
            else:
                self._finish()
        super().close()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rpccore-trace-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wake, rows, spans = self._wake, self._rows, self._spans
        while not self._closing:
            wake.wait(self._pause)
            wake.clear()
            if rows or spans:
                self._pause = self._interval
                self._send_queued()
            else:
                # Nothing came: wait twice as long next time, up to IDLE_INTERVAL, so a
                # traced process that makes no calls hardly ever wakes. put() never has
                # to wake the sender for that (waking a thread costs the caller).
                self._pause = min(2 * self._pause, max(IDLE_INTERVAL, self._interval))
        self._finish()

    def _finish(self) -> None:
        if self._sock.closed:
            return
        self._send_queued()
        self._sock.close(linger=int(self._close_timeout * 1000))
        self._context.term()

    def _send_queued(self) -> None:
        # Look again at who listens: spans queued while we were alone go through logging
        # if that changed (our emit() queues them again, as packed rows).
        alone = _route() is self
        rows, spans, batch = self._rows, self._spans, self._batch
        excess = len(spans) - self._max
        if excess > 0:  # spans came faster than this thread could take them: drop the newest
            for _ in range(excess):
                spans.pop()
            self._full += excess
        while rows or spans:
            parts = [rows.popleft() for _ in range(min(len(rows), batch))]
            taken = [spans.popleft() for _ in range(min(len(spans), batch - len(parts)))]
            if taken and not alone:
                for span in taken:
                    _through_logging(span)
                taken = []
            if taken and not parts:  # nearly always: spans alone, packed as one batch
                self._send_spans(taken)
                continue
            count = len(parts)
            if taken:
                part, rows_in_part = self._packed_spans(taken)
                parts.append(part)
                count += rows_in_part
            if count:
                self._send(parts, count)

    def _send_spans(self, spans: list[Span]) -> None:
        """Send a batch of closed spans' rows, packed in one call (see the module doc)."""
        ident = _ident
        try:
            rows = rows_of(spans)
            batch = _pack_strict([BATCH_VERSION, ident.proc, ident.host, ident.pid, rows])
        except (TypeError, ValueError, OverflowError):  # a value the strict packer refuses
            part, count = self._packed_spans(spans)
            self._send([part], count)
            return
        self._push(batch, len(rows))

    def _send(self, parts: list[bytes], count: int) -> None:
        # The batch's msgpack, [BATCH_VERSION, proc, host, pid, [row, ...]], put together
        # from its packed parts.
        header = _ident.batch_header + _packer.pack_array_header(count)
        self._push(b"".join([header, *parts]), count)

    def _push(self, batch: bytes, count: int) -> None:
        """Hand a packed batch of ``count`` rows to ZeroMQ, or count them dropped."""
        try:
            self._sock.send(batch, zmq.NOBLOCK)
        except zmq.Again:
            self._refused += count
            return
        except zmq.ZMQError as exc:
            self._refused += count
            _log.debug("dropping %d trace records: %s", count, exc)
            return
        self.sent += count

    def _packed_spans(self, spans: list[Span]) -> tuple[bytes, int]:
        """(the rows of closed spans packed in one call, as one array whose header is cut
        off; how many); a span whose row cannot be packed is dropped and counted."""
        try:
            rows = rows_of(spans)
            packed = _pack(rows)
        except (TypeError, ValueError, OverflowError):  # a row that cannot be made or packed
            parts = self._packed_one_by_one(spans)
            return b"".join(parts), len(parts)
        return packed[len(_packer.pack_array_header(len(rows))) :], len(rows)

    def _packed_one_by_one(self, spans: list[Span]) -> list[bytes]:
        """Each span's row packed alone; one that cannot be is dropped and counted."""
        packed = []
        for span in spans:
            try:
                packed.append(_pack(row_of(span)))
            except (TypeError, ValueError, OverflowError):
                self._refused += 1
        return packed


def _forget_in_child(ref: weakref.ReferenceType[CollectorHandler]) -> None:
    """A forked child inherits the handler but not its thread: start afresh."""
    handler = ref()
    if handler is not None:
        handler._thread = None
        handler._rows.clear()
        handler._spans.clear()
        handler._wake = threading.Event()
        handler._pause = handler._interval
        if not handler._closing:
            handler._start()


# -- OpenTelemetry ----------------------------------------------------------------------

# A client span's OpenTelemetry id: our sid is shared by both sides of a call (it is the
# server span's id), so the client side gets a fixed, reversible transform of it.
_CLIENT_ID_MASK: Final = 0x9E3779B97F4A7C15


def otel_client_span_id(sid: str) -> int:
    value = int(sid, 16) ^ _CLIENT_ID_MASK
    return value or _CLIENT_ID_MASK


def _configured_opentelemetry() -> logging.Handler | None:
    """An OpenTelemetryHandler if the application set an SDK tracer provider (checked
    without importing OpenTelemetry: an application that configured it imported it)."""
    api: Any = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    provider = api.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):  # the API's proxy or no-op provider
        return None
    # Imported here: OpenTelemetry is optional, and only loaded once the application uses it.
    from ._tracing_otel import OpenTelemetryHandler  # noqa: PLC0415

    return OpenTelemetryHandler(provider)


def use_opentelemetry(provider: Any = None) -> logging.Handler:
    """Also turn records into OpenTelemetry spans through ``provider`` (default: the
    global one), whether or not it was configured before ``enable``. Needs
    ``opentelemetry-sdk``. Returns the handler (on the ``rpccore.trace`` logger)."""
    global _otel
    from ._tracing_otel import OpenTelemetryHandler  # noqa: PLC0415

    with _lock:
        if _otel is not None:
            logger.removeHandler(_otel)
            _otel.close()
        _otel = OpenTelemetryHandler(provider)
        logger.addHandler(_otel)
        _route()
        return _otel
