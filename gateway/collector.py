"""``zerogate collector``: receive trace records, store them, answer queries about them.

    zerogate collector [-c FILE] [--bind ENDPOINT] [--query ENDPOINT]

Processes PUSH batches of records (``gateway.trace_records``) to a PULL socket bound at
``tracing.collector`` (``--bind``; default tcp://127.0.0.1:5570); the collector checks them
and writes them to the store the config names (``tracing.store``: memory, or Redis). It also
serves an rpccore service named ``zerogate-collector`` at ``tracing.query`` (``--query``;
default: the next port), whose methods are ``CollectorQueries``'s:

- ``trace(trace_id)``: every stored record of the trace, by start time;
- ``recent(limit=50, service=None, method=None, failed=False)``: the newest traces first, each
  {trace_id, start, duration, spans, errors, root: {svc, m}}; given a service, a method or
  failed, only the traces with a span of them (that failed), among the newest thousand
  (``trace_store.MAX_SCANNED``, and ``MAX_SCANNED_RECORDS``), or with failed, the newest
  thousand with a failed span;
- ``stats(minutes=None)``: {svc: {m: {count, errors, rate, p50, p90, p99, buckets, side}}},
  in total or over the last ``minutes`` (1..60); ``rate`` is calls/s over the last 60 s;
- ``info()``: the collector's counters (received, stored, dropped_malformed, ...), its
  store kind and ttl.

    zerogate rpc tcp://127.0.0.1:5571 recent 10

The senders never wait for the collector (their PUSH sockets send without blocking, and drop
when their queue is full), so a slow or dead collector loses records, never calls. The
collector in turn reads everything that arrives, one batch at a time: a message too big
(``max_message_size``) is refused unread by ZeroMQ, one that is not a msgpack list of records
is counted in ``dropped_malformed``, and so is every record in it that does not check. While
the store is unreachable, batches are dropped and counted (``dropped_store``). Between
stores, records gather for ``linger`` (0.1 s) unless more are waiting: ten writes a second
rather than one per sender message, and a call's client and server records in the same one.

The command prints one line when it is ready, and stops on SIGTERM or SIGINT. Exit status: 0;
2 when the config cannot be used or an endpoint cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

import zmq
import zmq.asyncio

from rpccore._sockets import plain_context
from rpccore.aio import Server

from . import heap
from .config import (
    ENV_VAR,
    Config,
    ConfigError,
    TracingConfig,
    default_config_path,
    default_query_endpoint,
    load_config,
)
from .trace_records import Record, TraceFilter, decode_message
from .trace_store import StoreUnavailable, TraceStore, normalize_trace_id, store_from_config

PROG: Final = "zerogate collector"
SERVICE_NAME: Final = "zerogate-collector"
DEFAULT_COLLECTOR: Final = "tcp://127.0.0.1:5570"
DEFAULT_MAX_MESSAGE_SIZE: Final = 1024 * 1024  # bytes: thousands of records per message
DEFAULT_BATCH: Final = 5000  # records written to the store at once, at most
DEFAULT_LINGER: Final = 0.1  # seconds records gather between stores (when not flooded)
# Allocations between two young-generation collections (Python's default: 700; see
# gateway.heap). The collector makes a dozen objects per record, which live until their batch
# is stored and are never in cycles: collected every 60 records they cost a sixth of its CPU.
GC_THRESHOLD: Final = 10_000
RECEIVE_HWM: Final = 1000  # messages ZeroMQ queues for us while a batch is being written
WARNING_INTERVAL: Final = 60.0  # seconds between two warnings about the same problem
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2

log = logging.getLogger("zerogate.collector")


class Collector:
    """The PULL socket, the store behind it and the query service in front of it.

    ``await collector.start()`` binds both endpoints (``endpoint`` and ``query_endpoint``
    then say where, ``tcp://host:0`` picking free ports); ``await collector.run()`` reads
    until ``stop()``; ``await collector.aclose()`` closes the sockets and the store.
    """

    def __init__(
        self,
        store: TraceStore,
        *,
        bind: str,
        query: str | None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        batch: int = DEFAULT_BATCH,
        linger: float = DEFAULT_LINGER,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.store = store
        self.bind = bind
        self.query = query
        self.max_message_size = max_message_size
        self.batch = batch
        self.linger = linger
        self.endpoint: str | None = None
        self.query_endpoint: str | None = None
        self.messages = 0
        self.received = 0
        self.stored = 0
        self.dropped_malformed = 0
        self.dropped_store = 0
        self.started_at = time.time()
        base = context if context is not None else zmq.asyncio.Context.instance()
        self._context = base
        self._pull: zmq.Socket[bytes] | None = None
        self._server: Server | None = None
        self._ready: asyncio.Event | None = None
        self._stopping = False
        self._next_warning: dict[str, float] = {}

    def __repr__(self) -> str:
        return (
            f"<Collector {self.endpoint or self.bind} received={self.received}"
            f" stored={self.stored} dropped_malformed={self.dropped_malformed}"
            f" dropped_store={self.dropped_store} {self.store!r}>"
        )

    async def start(self) -> None:
        """Bind the PULL socket and the query service; raises zmq.ZMQError if one cannot be
        bound (and then leaves nothing open)."""
        pull = plain_context(self._context).socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        pull.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
        try:
            pull.bind(self.bind)
            self.endpoint = _last_endpoint(pull)
            if self.query is not None:
                server = Server(CollectorQueries(self), name=SERVICE_NAME, context=self._context)
                try:
                    (self.query_endpoint,) = server.bind(self.query)
                except zmq.ZMQError:
                    server.close()
                    raise
                server.start()
                self._server = server
        except zmq.ZMQError:
            pull.close()
            raise
        self._pull = pull

    async def run(self) -> None:
        """Read and store batches until ``stop()``."""
        if self._pull is None:
            await self.start()
        pull = self._pull
        assert pull is not None
        self._ready = asyncio.Event()
        while not self._stopping:
            records, more = self._drain(pull)
            if records:
                await self._store(records)
            if more:
                continue
            if records and self.linger:
                # Let records gather: one store a linger rather than one per message
                # (senders send every 20 ms each) wakes this process and Redis less,
                # and puts a call's client and server records in the same write.
                await asyncio.sleep(self.linger)
                continue
            await self._readable(pull)

    async def _readable(self, pull: zmq.Socket[bytes]) -> None:
        """Wait until a message may be waiting (or ``stop()``). The descriptor is watched
        only here: it stays readable until the socket is read, so watched while records
        linger or a store is written, it woke the loop without end: at 40k records/s,
        23 us of CPU per record, five times what the records need."""
        ready = self._ready
        assert ready is not None
        ready.clear()
        loop = asyncio.get_running_loop()
        fd = cast(int, pull.getsockopt(zmq.FD))
        loop.add_reader(fd, ready.set)
        try:
            # ZeroMQ's descriptor signals edges: look again once watched, before waiting.
            if not self._stopping and not cast(int, pull.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                await ready.wait()
        finally:
            loop.remove_reader(fd)

    def _drain(self, pull: zmq.Socket[bytes]) -> tuple[list[Record], bool]:
        """The records of the messages queued now, up to ``batch`` of them; True as well
        when more may be waiting."""
        records: list[Record] = []
        while len(records) < self.batch:
            try:
                frame = pull.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return records, False
            self.messages += 1
            if frame.more:  # records come in one frame: skip the others
                while pull.recv(zmq.NOBLOCK, copy=False).more:
                    pass
                self.received += 1
                self._malformed(1)
                continue
            valid, refused = decode_message(frame.buffer)
            self.received += len(valid) + refused
            if refused:
                self._malformed(refused)
            records += valid
        return records, True

    def _malformed(self, count: int) -> None:
        self.dropped_malformed += count
        self._warn(
            "malformed",
            "dropped malformed trace records (%d so far): a sender does not speak the "
            "record format",
            self.dropped_malformed,
        )

    async def _store(self, records: list[Record]) -> None:
        try:
            self.stored += await self.store.add(records)
        except StoreUnavailable as exc:
            self.dropped_store += len(records)
            self._warn(
                "store",
                "the trace store is unavailable (%s): %d records dropped so far",
                exc,
                self.dropped_store,
            )

    def _warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now >= self._next_warning.get(kind, 0.0):
            self._next_warning[kind] = now + WARNING_INTERVAL
            log.warning(message, *args)

    def info(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "dropped_malformed": self.dropped_malformed,
            "dropped_store": self.dropped_store,
            "messages": self.messages,
            "store": self.store.kind,
            "ttl": self.store.ttl,
            "max_traces": self.store.max_traces,
            "endpoint": self.endpoint,
            "query": self.query_endpoint,
            "uptime": time.time() - self.started_at,
            **self.store.counters(),
        }

    def stop(self) -> None:
        self._stopping = True
        if self._ready is not None:
            self._ready.set()

    async def aclose(self) -> None:
        """Close the sockets and the store; closing twice is harmless."""
        self.stop()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._pull is not None:
            self._pull.close()
            self._pull = None
        await self.store.aclose()


class CollectorQueries:
    """The query service of a collector (rpccore service ``zerogate-collector``)."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored record of a trace (32 hex characters), ordered by start time."""
        return await self._collector.store.trace(normalize_trace_id(trace_id))

    async def recent(
        self,
        limit: int = 50,
        service: str | None = None,
        method: str | None = None,
        failed: bool = False,
    ) -> list[dict[str, Any]]:
        """The newest traces first: trace_id, start, duration, spans, errors, root {svc, m}.
        With ``service``, ``method`` or ``failed``: only the traces with a span of that
        service and method (that failed), among the newest thousand."""
        where = TraceFilter.checked(service, method, failed)
        return await self._collector.store.recent(limit, where)

    async def stats(self, minutes: int | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """Per service and method: count, errors, rate (calls/s, last 60 s), p50, p90, p99
        (seconds), latency buckets; in total, or over the last ``minutes`` (1 to 60)."""
        return await self._collector.store.stats(minutes)

    async def info(self) -> dict[str, Any]:
        """The collector's counters, its store and its endpoints."""
        return self._collector.info()


def _last_endpoint(sock: zmq.Socket[bytes]) -> str:
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)


# -- the command -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Receive trace records (PULL) and keep them in the store the config's "
        "tracing section names (memory or Redis); answer queries (trace, recent, stats, info) "
        f"as the rpccore service {SERVICE_NAME}.",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help=f"the config file (default: ${ENV_VAR}, else zerogate.yaml here if it exists)",
    )
    parser.add_argument(
        "--bind",
        metavar="ENDPOINT",
        help=f"where to receive records (default: tracing.collector, else {DEFAULT_COLLECTOR})",
    )
    parser.add_argument(
        "--query",
        metavar="ENDPOINT",
        help="where to answer queries (default: tracing.query, else the next port)",
    )
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="level of the stderr logs (default info)",
    )
    return parser


def read_config(path: Path | None) -> Config:
    """The config at ``path``; without one, ``$ZEROGATE_CONFIG``'s, else ``zerogate.yaml``
    when there is one here, else the defaults (a collector needs no config file)."""
    if path is not None:
        return load_config(path)
    default = default_config_path()
    if os.environ.get(ENV_VAR) or default.exists():
        return load_config(default)
    return Config()


def endpoints_for(tracing: TracingConfig, bind: str | None, query: str | None) -> tuple[str, str]:
    """(where to receive records, where to answer queries): the options, else the config's
    tracing section, else tcp://127.0.0.1:5570 and the next port. ``--bind`` alone moves
    both; with port 0 or ``*`` the query service also gets any free port."""
    if query is None and bind is None and tracing.collector is not None:
        query = tracing.query
    bind = bind or tracing.collector or DEFAULT_COLLECTOR
    if query is None:
        port = bind.rpartition(":")[2]
        if bind.startswith("tcp://") and port in ("0", "*"):
            query = bind
        else:
            query = default_query_endpoint(bind)
    if query is None:
        raise ConfigError(f"no next port after {bind} for the query endpoint: give --query")
    return bind, query


def print_ready(collector: Collector) -> None:
    """The command's one line once it is ready: where, and what it stores."""
    store = collector.store
    print(
        f"{PROG}: records on {collector.endpoint}, queries on {collector.query_endpoint}"
        f" ({SERVICE_NAME}), store {store.kind} (ttl {store.ttl} s,"
        f" max {store.max_traces} traces)",
        flush=True,
    )


async def serve(collector: Collector, ready: Callable[[Collector], None] = print_ready) -> None:
    """Run ``collector`` until SIGTERM or SIGINT, calling ``ready`` once it is bound."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, collector.stop)
    try:
        await collector.start()
        ping = getattr(collector.store, "ping", None)
        if ping is not None:
            try:
                await ping()
            except StoreUnavailable as exc:
                log.warning("the trace store is unavailable for now (%s): will keep trying", exc)
        ready(collector)
        await collector.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await collector.aclose()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tracing = read_config(args.config).tracing
        bind, query = endpoints_for(tracing, args.bind, args.query)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    collector = Collector(store_from_config(tracing), bind=bind, query=query)
    heap.settle(GC_THRESHOLD)  # what was made to start is kept for good
    try:
        # uvloop when it is there (uvicorn[standard] brings it): the collector spends most
        # of its time in the event loop, talking to Redis.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(collector))
    except zmq.ZMQError as exc:
        print(f"{PROG}: cannot bind {bind} or {query}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
