"""Prometheus metrics of one gateway app: what ``/metrics`` serves.

    metrics = Metrics(lambda: [pool.snapshot() for pool in pools.values()])
    metrics.observe("calc", "add", 200, 0.0012)  # once per HTTP request, when it is answered
    body, content_type = metrics.render(request.headers.get("accept"))

Each ``Metrics`` has its own ``CollectorRegistry`` (never the process-wide one), so several apps
in one process, as in the tests, do not clash. The metrics:

- ``zerogate_requests_total{service,method,status}``: HTTP requests answered.
- ``zerogate_request_duration_seconds{service,method}``: their latency, a histogram with
  buckets from 0.25 ms to 30 s (the default call timeout).
- ``zerogate_request_errors_total{service,method,status,code}``: the requests that failed: an
  error status (400 and up), or a ``code`` given with a success status (a stream that failed
  after its first byte). ``code`` is the problem document's code, empty when it had none.
- ``zerogate_calls_in_flight{service,endpoint}`` and ``zerogate_endpoint_up{service,endpoint}``
  (1 or 0): read from the pools' snapshots at scrape time, so they cannot drift from the pools.

Label values never come from the request: ``observe`` takes only names that resolved to an
exposed method. ``service=None`` (an unknown service, a bad path, ``/healthz``, ``/metrics``...)
is recorded as ``service="(unrouted)", method="(unrouted)"``; a known service with
``method=None`` (an unknown method of it, its catalog) as ``method="(unrouted)"``. As a last
guard, the number of label sets is capped (``max_series``): beyond it, new ones are counted
under ``service="(overflow)", method="(overflow)"``, so a caller that lets user input through
cannot grow memory or the scrape without bound. Config service names cannot contain
parentheses, so the placeholders never collide with a real service. A status outside 100-599
and a code that is not a gRPC/Connect code name are recorded as ``(other)``.

Multi-process (``zerogate serve --workers N``): when ``PROMETHEUS_MULTIPROC_DIR`` names a
directory, prometheus_client's multiprocess mode is used. Each worker writes its counters and
histograms to files in that directory and a scrape, whichever worker answers it, sums them all.
Limits:

- The variable must be set before ``prometheus_client`` is first imported (the library picks its
  storage at import): set it in the environment that starts the workers. ``Metrics`` refuses to
  start when the variable and the storage disagree, rather than serve numbers that are wrong.
- The directory must be emptied before the gateway starts: old files would be counted again.
  Files of dead workers are kept on purpose, so totals survive a worker restart.
- The pool gauges (calls in flight, endpoint up) are the answering worker's only: each worker has
  its own pools, and gauges of live objects cannot be summed from files.
- No ``_created`` samples, and one ``Metrics`` per process (two would share the same files).

In one process, counters and histograms also expose prometheus_client's ``*_created`` samples
(the time each series began); ``PROMETHEUS_DISABLE_CREATED_SERIES=true`` turns them off, for the
whole process since the library has no per-registry switch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

UNROUTED: Final = "(unrouted)"  # the request did not resolve to an exposed service or method
OVERFLOW: Final = "(overflow)"  # a label set beyond max_series
OTHER: Final = "(other)"  # a status or code outside the expected set
NO_CODE: Final = ""  # an error answer without a code (405, 413, 415)

DEFAULT_MAX_SERIES: Final = 2000

# 0.25 ms (a cached, local answer) to 30 s (the default call timeout, so timeouts land in the
# last finite bucket); roughly 1-2.5-5 steps, which is what latency dashboards interpolate on.
DURATION_BUCKETS: Final = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

# The gRPC/Connect code names: problem documents only ever carry these.
CODES: Final = frozenset(
    {
        "canceled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    }
)

SnapshotSource = Callable[[], Iterable[Mapping[str, Any]]]
"""Returns the pools' snapshots (``ServicePool.snapshot()``), called at every scrape."""

_Labels = tuple[str, str, str, str]  # service, method, status, code
# The bound methods one request calls: requests.inc, duration.observe, errors.inc (or None).
_Series = tuple[Callable[[], None], Callable[[float], None], Callable[[], None] | None]


def _no_pools() -> list[Mapping[str, Any]]:
    return []


class PoolCollector:
    """Turns pool snapshots into the in-flight and up gauges, at collect time."""

    def __init__(self, snapshots: SnapshotSource) -> None:
        self._snapshots = snapshots

    def __repr__(self) -> str:
        return f"<PoolCollector {self._snapshots!r}>"

    def describe(self) -> list[Metric]:
        # Lets the registry check names without calling the source, which may not be ready
        # before the app's lifespan opens the pools.
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        in_flight, up = self._families()
        for snapshot in self._snapshots():
            service = snapshot["service"]
            for endpoint in snapshot["endpoints"]:
                labels = [service, endpoint["endpoint"]]
                in_flight.add_metric(labels, endpoint["in_flight"])
                up.add_metric(labels, 1.0 if endpoint["up"] else 0.0)
        yield in_flight
        yield up

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["service", "endpoint"]
        return (
            GaugeMetricFamily(
                "zerogate_calls_in_flight",
                "Calls sent to the endpoint and not finished.",
                labels=labels,
            ),
            GaugeMetricFamily(
                "zerogate_endpoint_up",
                "1 if the pool considers the endpoint up, else 0.",
                labels=labels,
            ),
        )


def _multiprocess_dir() -> str | None:
    """The multiprocess directory, or None; raises when the library's storage disagrees."""
    path = os.environ.get(MULTIPROC_ENV)
    # prometheus_client chose between in-memory and file-backed values when first imported.
    file_backed = bool(getattr(values.ValueClass, "_multiprocess", False))
    if path is not None and not file_backed:
        raise RuntimeError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported; set it in the "
            "environment that starts the gateway"
        )
    if path is None and file_backed:
        raise RuntimeError(
            f"prometheus_client is in multiprocess mode but {MULTIPROC_ENV} is not set "
            "(the lowercase name is deprecated)"
        )
    return path


class Metrics:
    """The gateway's metrics: ``observe`` each request, ``render`` for ``/metrics``."""

    def __init__(
        self,
        snapshots: SnapshotSource = _no_pools,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.max_series = max_series
        self.multiprocess_dir = _multiprocess_dir()
        # What a scrape reads. In multiprocess mode the counters are not registered in it:
        # the files of every worker (this one's included) are read instead.
        self.registry = CollectorRegistry()
        own = None if self.multiprocess_dir is not None else self.registry
        if self.multiprocess_dir is not None:
            MultiProcessCollector(self.registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        self.registry.register(PoolCollector(snapshots))
        self._requests = Counter(
            "zerogate_requests_total",
            "HTTP requests answered, by service, method and status.",
            ["service", "method", "status"],
            registry=own,
        )
        self._duration = Histogram(
            "zerogate_request_duration_seconds",
            "Time to answer an HTTP request (a stream: until its last byte).",
            ["service", "method"],
            registry=own,
            buckets=DURATION_BUCKETS,
        )
        self._errors = Counter(
            "zerogate_request_errors_total",
            "HTTP requests that failed, by service, method, status and problem code.",
            ["service", "method", "status", "code"],
            registry=own,
        )
        # Two bounded maps. _cache is only an accelerator keyed by observe's raw arguments;
        # _series holds every label set made, and is what max_series bounds. A raw key that
        # misses the full cache still lands in the right series, one dict lookup slower.
        self._cache: dict[tuple[str | None, str | None, int, str | None], _Series] = {}
        self._series: dict[_Labels, _Series] = {}

    def __repr__(self) -> str:
        mode = f"multiprocess {self.multiprocess_dir}" if self.multiprocess_dir else "in-process"
        return f"<Metrics {mode} series={len(self._series)}/{self.max_series}>"

    def observe(
        self,
        service: str | None,
        method: str | None,
        status: int,
        seconds: float,
        code: str | None = None,
    ) -> None:
        """Count one answered request that took ``seconds``.

        Pass ``service`` and ``method`` only once they resolved to an exposed method (``None``
        otherwise: never a name taken from the request); ``code`` is the problem document's.
        """
        key = (service, method, status, code)
        series = self._cache.get(key)
        if series is None:
            series = self._miss(key)
        count, time, error = series
        count()
        time(seconds)
        if error is not None:
            error()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for a scrape and its content type: the Prometheus text format, or
        OpenMetrics when ``accept`` (the request's Accept header) asks for it."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    # -- the slow path: first sight of a key ------------------------------------------------

    def _miss(self, key: tuple[str | None, str | None, int, str | None]) -> _Series:
        labels = _labels(*key)
        series = self._series.get(labels)
        if series is None:
            if len(self._series) >= self.max_series:
                labels = (OVERFLOW, OVERFLOW, labels[2], labels[3])
                # Overflow sets are not capped, but status and code are already bounded.
                series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = self._make(labels)
        if len(self._cache) < self.max_series:
            self._cache[key] = series
        return series

    def _make(self, labels: _Labels) -> _Series:
        service, method, status, code = labels
        failed = code != NO_CODE or not status.isdigit() or int(status) >= 400
        return (
            self._requests.labels(service, method, status).inc,
            self._duration.labels(service, method).observe,
            self._errors.labels(service, method, status, code).inc if failed else None,
        )


def _labels(service: str | None, method: str | None, status: int, code: str | None) -> _Labels:
    """The label values of one request: only known names, placeholders for the rest."""
    if service is None:
        service = method = UNROUTED  # a method without a service may be anything the URL held
    elif method is None:
        method = UNROUTED
    status_label = str(status) if 100 <= status <= 599 else OTHER
    code_label = NO_CODE if code is None else (code if code in CODES else OTHER)
    return service, method, status_label, code_label
