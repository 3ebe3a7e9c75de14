"""The gateway's Prometheus metrics (gateway/metrics.py).

Expositions are read back with prometheus_client's own parsers, so a test states the samples it
expects rather than the library's formatting; a few tests also pin exact lines, since scrapers
and dashboards depend on them. Multiprocess mode is chosen when prometheus_client is imported,
so it is tested in child processes sharing one directory, like ``serve --workers``.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import timeit
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ServiceConfig
from gateway.metrics import (
    DURATION_BUCKETS,
    MULTIPROC_ENV,
    NO_CODE,
    OTHER,
    OVERFLOW,
    UNROUTED,
    Metrics,
)
from gateway.pool import ServicePool

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a text exposition, keyed by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(metrics: Metrics) -> Samples:
    body, _ = metrics.render()
    return samples(body.decode())


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def label_sets(found: Samples, name: str) -> set[frozenset[tuple[str, str]]]:
    return {labels for sample_name, labels in found if sample_name == name}


def endpoint(address: str, *, up: bool = True, in_flight: int = 0) -> dict[str, Any]:
    return {"endpoint": address, "up": up, "in_flight": in_flight, "last_error": None}


# -- requests, latency, errors -------------------------------------------------------------


def test_exposition_lines_after_observations() -> None:
    metrics = Metrics()
    metrics.observe("calc", "add", 200, 0.0012)
    metrics.observe("calc", "add", 200, 0.003)
    metrics.observe("calc", "add", 504, 30.0, "deadline_exceeded")

    lines = metrics.render()[0].decode().splitlines()

    assert 'zerogate_requests_total{method="add",service="calc",status="200"} 2.0' in lines
    assert 'zerogate_requests_total{method="add",service="calc",status="504"} 1.0' in lines
    assert (
        'zerogate_request_errors_total{code="deadline_exceeded",method="add",service="calc",'
        'status="504"} 1.0'
    ) in lines
    bucket = 'zerogate_request_duration_seconds_bucket{le="%s",method="add",service="calc"} %s'
    assert bucket % ("0.001", "0.0") in lines
    assert bucket % ("0.0025", "1.0") in lines
    assert bucket % ("0.005", "2.0") in lines
    assert bucket % ("10.0", "2.0") in lines
    assert bucket % ("30.0", "3.0") in lines  # a call that hit the default timeout
    assert bucket % ("+Inf", "3.0") in lines
    assert 'zerogate_request_duration_seconds_count{method="add",service="calc"} 3.0' in lines
    assert "# TYPE zerogate_request_duration_seconds histogram" in lines


def test_samples_after_observations() -> None:
    metrics = Metrics()
    metrics.observe("calc", "add", 200, 0.0004)
    metrics.observe("calc", "div", 400, 0.002, "invalid_argument")
    metrics.observe("users", "get_user", 404, 0.001, "not_found")

    found = scrape(metrics)

    requests = "zerogate_requests_total"
    assert found[key(requests, service="calc", method="add", status="200")] == 1.0
    assert found[key(requests, service="calc", method="div", status="400")] == 1.0
    assert found[key(requests, service="users", method="get_user", status="404")] == 1.0
    assert len(label_sets(found, requests)) == 3
    errors = "zerogate_request_errors_total"
    assert label_sets(found, errors) == {
        key(errors, service="calc", method="div", status="400", code="invalid_argument")[1],
        key(errors, service="users", method="get_user", status="404", code="not_found")[1],
    }
    duration = "zerogate_request_duration_seconds"
    assert found[key(duration + "_sum", service="calc", method="add")] == pytest.approx(0.0004)
    assert found[key(duration + "_bucket", service="calc", method="add", le="0.0005")] == 1.0
    assert found[key(duration + "_bucket", service="calc", method="add", le="0.00025")] == 0.0


def test_buckets_span_a_quarter_millisecond_to_thirty_seconds() -> None:
    metrics = Metrics()
    metrics.observe("calc", "add", 200, 0.1)
    found = scrape(metrics)
    bounds = sorted(
        float(dict(labels)["le"])
        for name, labels in found
        if name == "zerogate_request_duration_seconds_bucket"
    )
    assert bounds == [*DURATION_BUCKETS, math.inf]
    assert bounds[0] == 0.00025
    assert bounds[-2] == 30.0


@pytest.mark.parametrize(
    ("status", "code", "error_code"),
    [
        (200, None, None),
        (204, None, None),
        (304, None, None),
        (405, None, NO_CODE),  # an error answer without a code: empty code label
        (413, None, NO_CODE),
        (500, "unknown", "unknown"),
        (503, "unavailable", "unavailable"),
        (200, "unavailable", "unavailable"),  # a stream that failed after its first byte
    ],
)
def test_what_counts_as_an_error(status: int, code: str | None, error_code: str | None) -> None:
    metrics = Metrics()
    metrics.observe("calc", "add", status, 0.001, code)
    found = scrape(metrics)
    errors = label_sets(found, "zerogate_request_errors_total")
    if error_code is None:
        assert errors == set()
    else:
        labels = {"service": "calc", "method": "add", "status": str(status), "code": error_code}
        assert errors == {frozenset(labels.items())}


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # two apps in one process: no duplicate names
    first.observe("calc", "add", 200, 0.001)

    assert key("zerogate_requests_total", service="calc", method="add", status="200") in scrape(
        first
    )
    assert label_sets(scrape(second), "zerogate_requests_total") == set()
    assert b"zerogate_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_openmetrics_when_asked() -> None:
    metrics = Metrics()
    metrics.observe("calc", "add", 200, 0.001)

    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")

    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    parsed = openmetrics_families(body.decode())  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parsed}
    assert families["zerogate_requests"].type == "counter"
    assert families["zerogate_request_duration_seconds"].type == "histogram"


@pytest.mark.parametrize("accept", [None, "", "*/*", "text/plain", "application/json"])
def test_prometheus_text_by_default(accept: str | None) -> None:
    body, content_type = Metrics().render(accept)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE zerogate_endpoint_up gauge" in body


# -- label values never come from the request -------------------------------------------------


def test_unresolved_requests_share_placeholder_labels() -> None:
    metrics = Metrics()
    for path_part in ["nope", "../../etc/passwd", "x" * 500, 'quote"brace}', ""]:
        metrics.observe(None, path_part, 404, 0.0001, "unimplemented")
        metrics.observe(None, None, 404, 0.0001, "unimplemented")
    metrics.observe(None, None, 200, 0.0001)  # /healthz, /metrics...
    metrics.observe("calc", None, 404, 0.0001, "unimplemented")  # a known service, bad method

    found = scrape(metrics)

    requests = "zerogate_requests_total"
    unrouted = {"service": UNROUTED, "method": UNROUTED}
    assert found[key(requests, **unrouted, status="404")] == 10.0
    assert found[key(requests, **unrouted, status="200")] == 1.0
    assert found[key(requests, service="calc", method=UNROUTED, status="404")] == 1.0
    assert len(label_sets(found, requests)) == 3
    values = {value for _, labels in found for name, value in labels if name != "le"}
    assert "nope" not in values
    assert not any("passwd" in value or "x" * 10 in value for value in values)


def test_odd_statuses_and_codes_become_other() -> None:
    metrics = Metrics()
    metrics.observe("calc", "add", 999, 0.001)
    metrics.observe("calc", "add", 500, 0.001, "<script>")
    found = scrape(metrics)
    assert found[key("zerogate_requests_total", service="calc", method="add", status=OTHER)] == 1
    errors = label_sets(found, "zerogate_request_errors_total")
    assert errors == {
        frozenset({"service": "calc", "method": "add", "status": "500", "code": OTHER}.items()),
        # An impossible status is counted as an error too: something answered wrongly.
        frozenset({"service": "calc", "method": "add", "status": OTHER, "code": NO_CODE}.items()),
    }


def test_label_sets_and_cache_are_bounded() -> None:
    metrics = Metrics(max_series=3)
    for n in range(50):
        metrics.observe(f"svc{n}", "m", 200, 0.001)
    for n in range(50):
        metrics.observe(f"svc{n}", "m", 503, 0.001, "unavailable")
    metrics.observe("svc0", "m", 200, 0.001)  # a set made before the cap keeps its labels

    found = scrape(metrics)

    requests = "zerogate_requests_total"
    assert {dict(labels)["service"] for labels in label_sets(found, requests)} == {
        "svc0",
        "svc1",
        "svc2",
        OVERFLOW,
    }
    assert found[key(requests, service="svc0", method="m", status="200")] == 2.0
    assert found[key(requests, service=OVERFLOW, method=OVERFLOW, status="200")] == 47.0
    assert found[key(requests, service=OVERFLOW, method=OVERFLOW, status="503")] == 50.0
    assert sum(v for (name, _), v in found.items() if name == requests) == 101.0
    # The accelerator cache is capped too, whatever keys the caller sends.
    assert len(metrics._cache) == 3
    assert len(metrics._series) == 5  # three real sets, two overflow ones (200, 503)
    assert "series=5/3" in repr(metrics)


def test_max_series_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_series"):
        Metrics(max_series=0)


# -- pool gauges, read at scrape time ---------------------------------------------------------


def test_pool_gauges_follow_the_snapshot_source() -> None:
    pools: list[Mapping[str, Any]] = []
    metrics = Metrics(lambda: pools)
    assert label_sets(scrape(metrics), "zerogate_endpoint_up") == set()

    pools.append({"service": "calc", "endpoints": [endpoint("tcp://a:1", in_flight=3)]})
    pools.append(
        {
            "service": "users",
            "endpoints": [endpoint("tcp://b:1", up=False), endpoint("tcp://b:2", in_flight=1)],
        }
    )
    found = scrape(metrics)
    assert found[key("zerogate_calls_in_flight", service="calc", endpoint="tcp://a:1")] == 3.0
    assert found[key("zerogate_endpoint_up", service="calc", endpoint="tcp://a:1")] == 1.0
    assert found[key("zerogate_endpoint_up", service="users", endpoint="tcp://b:1")] == 0.0
    assert found[key("zerogate_calls_in_flight", service="users", endpoint="tcp://b:2")] == 1.0
    lines = metrics.render()[0].decode().splitlines()
    assert 'zerogate_endpoint_up{endpoint="tcp://b:1",service="users"} 0.0' in lines

    pools[0] = {"service": "calc", "endpoints": [endpoint("tcp://a:1", up=False)]}
    del pools[1]
    found = scrape(metrics)
    assert found[key("zerogate_calls_in_flight", service="calc", endpoint="tcp://a:1")] == 0.0
    assert found[key("zerogate_endpoint_up", service="calc", endpoint="tcp://a:1")] == 0.0
    assert len(label_sets(found, "zerogate_endpoint_up")) == 1


def test_the_source_is_not_called_before_a_scrape() -> None:
    def not_ready() -> list[Mapping[str, Any]]:
        raise AssertionError("called outside a scrape")

    Metrics(not_ready).observe("calc", "add", 200, 0.001)


def test_real_pool_snapshots() -> None:
    config = ServiceConfig(name="calc", endpoints=("tcp://127.0.0.1:1", "tcp://127.0.0.1:2"))

    async def main() -> Samples:
        async with ServicePool(config) as pool:
            return scrape(Metrics(lambda: [pool.snapshot()]))

    found = asyncio.run(main())
    for address in config.endpoints:
        # Endpoints start up (optimistically) until a probe says otherwise.
        assert found[key("zerogate_endpoint_up", service="calc", endpoint=address)] == 1.0
        assert found[key("zerogate_calls_in_flight", service="calc", endpoint=address)] == 0.0


# -- cost of the hot path ---------------------------------------------------------------------


def test_observe_is_cheap() -> None:
    metrics = Metrics()
    number = 20_000
    best = min(
        timeit.repeat(lambda: metrics.observe("calc", "add", 200, 0.0012), number=number, repeat=5)
    )
    per_call = best / number
    # About 1.2 us on the 2-core machine; the bound leaves room for a loaded CI box.
    assert per_call < 25e-6, f"observe() took {per_call * 1e6:.2f} us per call"


# -- multiprocess mode ------------------------------------------------------------------------

WORKER = """
import sys
from gateway.metrics import Metrics

address, scrape = sys.argv[1], sys.argv[2] == "scrape"
pools = [{"service": "calc", "endpoints": [
    {"endpoint": address, "up": True, "in_flight": 2, "last_error": None}]}]
metrics = Metrics(lambda: pools)
metrics.observe("calc", "add", 200, 0.002)
metrics.observe("calc", "add", 504, 30.0, "deadline_exceeded")
if scrape:
    sys.stdout.buffer.write(metrics.render()[0])
"""


def run_worker(directory: Path, address: str, scrape: bool = False) -> str:
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, address, "scrape" if scrape else "-"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_workers_are_summed(tmp_path: Path) -> None:
    run_worker(tmp_path, "tcp://a:1")
    run_worker(tmp_path, "tcp://b:1")
    found = samples(run_worker(tmp_path, "tcp://c:1", scrape=True))

    requests = "zerogate_requests_total"
    assert found[key(requests, service="calc", method="add", status="200")] == 3.0
    assert found[key(requests, service="calc", method="add", status="504")] == 3.0
    errors = "zerogate_request_errors_total"
    assert found[key(errors, service="calc", method="add", status="504", code="deadline_exceeded")]
    duration = "zerogate_request_duration_seconds"
    assert found[key(duration + "_count", service="calc", method="add")] == 6.0
    assert found[key(duration + "_bucket", service="calc", method="add", le="0.0025")] == 3.0
    # The live gauges are the answering worker's only.
    assert label_sets(found, "zerogate_endpoint_up") == {
        frozenset({"service": "calc", "endpoint": "tcp://c:1"}.items())
    }
    assert found[key("zerogate_calls_in_flight", service="calc", endpoint="tcp://c:1")] == 2.0


def test_multiprocess_dir_set_too_late_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process imported prometheus_client without the variable: its values live in memory,
    # so a scrape reading the directory would never see them.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="set after prometheus_client was imported"):
        Metrics()
