"""Support for the trace-view tests: hand-made records, a fake ``TraceSource``, and a small
Starlette app of the views (behind ``observe.Observed``, as in the gateway), to serve with
``served.ServedApp`` (tests/helpers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

from starlette.applications import Starlette
from starlette.types import ASGIApp

from gateway.access_log import NoAccessLog
from gateway.metrics import Metrics
from gateway.observe import Observed
from gateway.trace_records import TraceFilter
from gateway.trace_store import EVERY_TRACE
from gateway.trace_views import DEFAULT_LIMIT, SourceUnavailable, TraceSource, trace_routes

TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
T0: Final = 1_700_000_000.0


def record(
    sid: str,
    side: str,
    target: str,
    t0: float,
    t2: float | None,
    *,
    par: str | None = None,
    out: str = "ok",
    exc: str | None = None,
    n: int | None = None,
    proc: str = "proc",
    tid: str = TRACE_ID,
) -> dict[str, Any]:
    """One record as the collector returns it: ``target`` is "service.method", times are
    milliseconds after ``T0``."""
    svc, _, m = target.partition(".")
    return {
        "tid": tid,
        "sid": sid,
        "par": par,
        "side": side,
        "svc": svc,
        "m": m,
        "t0": T0 + t0 / 1000,
        "t1": None if t2 is None else T0 + (t0 + (t2 - t0) / 2) / 1000,
        "t2": None if t2 is None else T0 + t2 / 1000,
        "out": out,
        "exc": exc,
        "n": n,
        "proc": proc,
        "host": "box",
        "pid": 4242,
    }


def call(
    sid: str,
    par: str | None,
    target: str,
    t0: float,
    t2: float,
    *,
    caller: str,
    **server: Any,
) -> list[dict[str, Any]]:
    """The client record (by ``caller``) and the server record (by ``svc``) of one call;
    the server's own times sit inside the client's."""
    out, exc, n = server.get("out", "ok"), server.get("exc"), server.get("n")
    svc = target.partition(".")[0]
    return [
        record(sid, "client", target, t0, t2, par=par, out=out, exc=exc, n=n, proc=caller),
        record(sid, "server", target, t0 + 0.1, t2 - 0.1, par=par, out=out, exc=exc, n=n, proc=svc),
    ]


HTTP: Final = "a000000000000001"
A_RUN: Final = "a000000000000002"
B_WORK: Final = "a000000000000003"
C_NUMBERS: Final = "a000000000000004"
C_FAIL: Final = "a000000000000005"


def three_level_trace() -> list[dict[str, Any]]:
    """The gateway's HTTP span -> a.run -> b.work -> c.numbers (a stream of 5) and c.fail
    (raises ValueError, which b.work catches): five spans, one of them failed."""
    return [
        record(HTTP, "http", "gateway.POST /rpc/a/run", 0, 50, proc="zerogate"),
        *call(A_RUN, HTTP, "a.run", 1, 49, caller="zerogate"),
        *call(B_WORK, A_RUN, "b.work", 3, 45, caller="a"),
        *call(C_NUMBERS, B_WORK, "c.numbers", 5, 30, caller="b", out="stream", n=5),
        *call(C_FAIL, B_WORK, "c.fail", 32, 40, caller="b", out="error", exc="ValueError"),
    ]


class FakeSource:
    """A ``TraceSource`` of fixed answers; ``down`` makes every query fail as a collector
    that does not answer would."""

    def __init__(self) -> None:
        self.traces: dict[str, list[dict[str, Any]]] = {}
        self.recent_traces: list[dict[str, Any]] = []
        self.current_stats: dict[str, Any] = {}
        self.down = False
        self.queries: list[tuple[str, Any]] = []

    def _check(self, what: str, arg: Any) -> None:
        self.queries.append((what, arg))
        if self.down:
            raise SourceUnavailable("the trace collector does not answer", 7)

    async def trace(self, trace_id: str) -> list[dict[str, Any]]:
        self._check("trace", trace_id)
        return self.traces.get(trace_id, [])

    async def recent(
        self, limit: int = DEFAULT_LIMIT, where: TraceFilter = EVERY_TRACE
    ) -> list[dict[str, Any]]:
        """The fixed answer (unfiltered: the real filtering is the stores' own, tested there);
        ``queries`` shows the filter asked for, when there is one."""
        self._check("recent", (limit, where) if where else limit)
        return self.recent_traces[:limit]

    async def stats(self, minutes: int | None = None) -> dict[str, Any]:
        self._check("stats", minutes)
        return self.current_stats


def views_app(
    source: TraceSource,
    *,
    closing: Any = None,
    refresh: int = 5,
    gate: Callable[[ASGIApp], ASGIApp] | None = None,
) -> Observed:
    """The views as the gateway serves them: behind ``Observed`` (trace headers, the request
    info problem documents need) and ``gate`` (the auth door: ``Door.gate``), if given;
    ``closing.aclose()`` runs when the app shuts down."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if closing is not None:
                await closing.aclose()

    app: ASGIApp = Starlette(routes=trace_routes(source, refresh=refresh), lifespan=lifespan)
    if gate is not None:
        app = gate(app)
    return Observed(app, Metrics(), NoAccessLog())
