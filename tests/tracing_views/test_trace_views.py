"""The trace and statistics views over HTTP: a fake ``TraceSource`` behind the routes, under
a real uvicorn on a loopback port (the same ``Observed`` layer as the gateway in front)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import httpx
import pytest
from served import ServedApp
from views_support import (
    C_FAIL,
    HTTP,
    T0,
    TRACE_ID,
    FakeSource,
    record,
    three_level_trace,
    views_app,
)

from gateway.trace_records import TraceFilter
from gateway.trace_views import PAGE_CSP, RateHistory, prefers_html, render_stats

BROWSER: Final = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
OTHER_ID: Final = "0af7651916cd43dd8448eb211c80319c"
HOSTILE_ID: Final = "11111111111111111111111111111111"


@pytest.fixture(scope="module")
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture(scope="module")
def served(source: FakeSource) -> Iterator[ServedApp]:
    with ServedApp(views_app(source)) as server:
        yield server


@pytest.fixture
def http(served: ServedApp, source: FakeSource) -> Iterator[httpx.Client]:
    source.traces = {TRACE_ID: three_level_trace()}
    source.recent_traces = []
    source.current_stats = {}
    source.down = False
    source.queries.clear()
    with httpx.Client(base_url=served.url, timeout=10) as client:
        yield client


def problem(answer: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = answer.json()
    assert document["status"] == status
    assert document.get("code") == code
    assert document["trace_id"] == answer.headers["x-trace-id"]
    return document


# -- content negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "default", "html"),
    [
        (None, False, False),
        (None, True, True),
        ("*/*", False, False),
        ("*/*", True, True),
        (BROWSER, False, True),
        ("application/json", True, False),
        ("text/html", False, True),
        ("text/*", False, True),
        ("application/json, text/html;q=0.5", True, False),
        ("text/html;q=0.5, application/json;q=0.9", True, False),
        ("text/html;q=0.9, application/json;q=0.5", False, True),
        ("text/html;q=0, */*", True, False),  # html refused outright
        ("application/*;q=0.2, text/html;q=0.1", True, False),
        ("text/html;q=oops, application/json", True, False),
        ("image/png", False, False),
        ("image/png", True, True),
    ],
)
def test_prefers_html(accept: str | None, default: bool, html: bool) -> None:
    assert prefers_html(accept, default=default) is html


# -- one trace ---------------------------------------------------------------------------------


def test_trace_is_json_by_default(http: httpx.Client) -> None:
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        answer = http.get(f"/traces/{TRACE_ID}", headers=headers)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["vary"] == "Accept"
        document = answer.json()
        assert (document["trace_id"], document["spans"], document["errors"]) == (TRACE_ID, 5, 1)
        assert document["start"] == T0
        assert document["roots"][0]["span_id"] == HTTP
    # Upper-case hex is the same id.
    assert http.get(f"/traces/{TRACE_ID.upper()}").json()["trace_id"] == TRACE_ID


def test_trace_is_a_timeline_page_for_a_browser(http: httpx.Client) -> None:
    answer = http.get(f"/traces/{TRACE_ID}", headers={"Accept": BROWSER})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["content-security-policy"] == PAGE_CSP
    assert "script" not in PAGE_CSP
    page = answer.text
    assert page.count('<g class="span') == 5
    assert page.count('<g class="span error"') == 1
    assert f'data-span-id="{C_FAIL}"' in page
    assert "✕ ValueError" in page
    assert "<script" not in page
    assert re.search(r'(src|href)="(https?:)?//', page) is None  # nothing from elsewhere
    # The same page on ?format=html, and JSON on ?format=json, whatever Accept says.
    assert http.get(f"/traces/{TRACE_ID}?format=html").text == page
    forced = http.get(f"/traces/{TRACE_ID}?format=json", headers={"Accept": BROWSER})
    assert forced.json()["spans"] == 5
    problem(http.get(f"/traces/{TRACE_ID}?format=xml"), 400, "invalid_argument")


def test_everything_from_backends_is_escaped(http: httpx.Client, source: FakeSource) -> None:
    evil = "<script>alert(1)</script>"
    source.traces[HOSTILE_ID] = [
        record("a000000000000001", "server", f"{evil}.{evil}", 0, 5, tid=HOSTILE_ID),
        {
            **record("a000000000000002", "server", "x.y", 1, 2, tid=HOSTILE_ID),
            "par": "a000000000000001",
            "out": "error",
            "exc": '"><img src=x onerror=alert(2)>',
            "proc": "</svg><b>",
            "host": "'\"&",
        },
    ]
    page = http.get(f"/traces/{HOSTILE_ID}", headers={"Accept": "text/html"}).text
    assert "<script>" not in page
    assert "<img" not in page
    assert "</svg><b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page


def test_unknown_and_malformed_trace_ids(http: httpx.Client, source: FakeSource) -> None:
    document = problem(http.get(f"/traces/{OTHER_ID}"), 404, "not_found")
    assert OTHER_ID in document["detail"]
    problem(http.get(f"/traces/{OTHER_ID}", headers={"Accept": BROWSER}), 404, "not_found")
    for bad in ("xyz", TRACE_ID[:-1], TRACE_ID + "0", "g" * 32, "%3Cb%3E" * 5):
        problem(http.get(f"/traces/{bad}"), 400, "invalid_argument")
    # A malformed id never reaches the source.
    assert source.queries == [("trace", OTHER_ID)] * 2


# -- recent traces -----------------------------------------------------------------------------


def recent_entries() -> list[dict[str, Any]]:
    return [
        {
            "trace_id": bytes.fromhex(TRACE_ID),  # bytes become hex
            "start": T0,
            "duration": 0.05,
            "spans": 5,
            "errors": 1,
            "root": {"svc": "gateway", "m": "POST /rpc/a/run"},
        },
        {"trace_id": "not-an-id", "start": T0},  # dropped
        {"trace_id": OTHER_ID, "start": "later", "spans": True, "root": None},
    ]


def test_recent_traces_json(http: httpx.Client, source: FakeSource) -> None:
    source.recent_traces = recent_entries()
    answer = http.get("/traces", headers={"Accept": "application/json"})
    assert answer.status_code == 200
    assert answer.json() == {
        "traces": [
            {
                "trace_id": TRACE_ID,
                "start": T0,
                "duration": 0.05,
                "spans": 5,
                "errors": 1,
                "root": {"svc": "gateway", "m": "POST /rpc/a/run"},
            },
            {
                "trace_id": OTHER_ID,
                "start": None,
                "duration": None,
                "spans": 0,
                "errors": 0,
                "root": {"svc": None, "m": None},
            },
        ]
    }
    assert source.queries == [("recent", 50)]
    http.get("/traces?limit=2&format=json")
    assert source.queries[-1] == ("recent", 2)
    for bad in ("0", "501", "-1", "ten", ""):
        problem(http.get(f"/traces?limit={bad}"), 400, "invalid_argument")


def test_recent_traces_page(http: httpx.Client, source: FakeSource) -> None:
    assert "No traces yet" in http.get("/traces").text
    source.recent_traces = recent_entries()
    for headers in ({}, {"Accept": "*/*"}, {"Accept": BROWSER}):  # HTML unless JSON is asked
        answer = http.get("/traces", headers=headers)
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        page = answer.text
        assert f'href="traces/{TRACE_ID}"' in page
        assert f'href="traces/{OTHER_ID}"' in page
        assert "gateway.POST /rpc/a/run" in page
        assert "2023-11-14 22:13:20.000Z" in page
        assert "50 ms" in page


def test_recent_traces_of_one_method(http: httpx.Client, source: FakeSource) -> None:
    page = http.get("/traces?service=calc&method=add&failed=1").text
    assert source.queries[-1] == ("recent", (50, TraceFilter("calc", "add", failed=True)))
    assert "Traces with a failed call of calc.add" in page
    assert '<a href="traces">all traces</a>' in page
    assert 'href="traces?format=json&amp;service=calc&amp;method=add&amp;failed=1"' in page
    assert "None of the newest 1000 failed traces has a failed call of calc.add." in page
    assert '<input type="text" name="service" value="calc">' in page  # the form holds it
    assert '<input type="checkbox" name="failed" value="1" checked>' in page
    assert "No failed traces." in http.get("/traces?failed=1").text
    page = http.get("/traces?method=add").text
    assert "None of the newest 1000 traces has a call of add." in page
    source.recent_traces = recent_entries()
    answer = http.get("/traces?service=calc&limit=3&format=json")
    assert len(answer.json()["traces"]) == 2
    assert source.queries[-1] == ("recent", (3, TraceFilter("calc")))
    page = http.get("/traces?service=<b>").text
    assert "Traces with a call of &lt;b&gt;" in page
    assert 'name="service" value="&lt;b&gt;"' in page
    http.get("/traces?failed=true&format=json")
    assert source.queries[-1] == ("recent", (50, TraceFilter(failed=True)))
    http.get("/traces?service=&method=&failed=0&format=json")  # empty: no filter
    assert source.queries[-1] == ("recent", 50)
    asked = len(source.queries)
    for bad in ("failed=maybe", "failed=2", f"service={'s' * 201}", f"method={'m' * 201}"):
        problem(http.get(f"/traces?{bad}"), 400, "invalid_argument")
    assert len(source.queries) == asked  # a bad filter never reaches the source


# -- statistics --------------------------------------------------------------------------------

BOUNDS: Final = [0.001, 0.005, 0.025, None]  # the collector's bounds are longer; same shape

STATS: Final = {
    "calc": {
        "add": {
            "count": 120,
            "errors": 0,
            "rate": 12.5,
            "p50": 0.0011,
            "p90": 0.003,
            "p99": 0.02,
            "side": "server",
            "buckets": [[b, n] for b, n in zip(BOUNDS, [50, 60, 10, 0], strict=True)],
        },
        "div": {
            "count": 7,
            "errors": 2,
            "rate": 0.5,
            "p50": 0.002,
            "p90": 0.004,
            "p99": 0.008,
            "side": "client",
            "buckets": [[0.001, 1], "odd"],  # not the collector's shape: no histogram
        },
    },
    "<b>": {"<i>": {"count": 1, "rate": None, "p50": None, "buckets": None, "side": "<u>"}},
    "junk": "not a map",
}


def test_stats_json_is_the_collectors(http: httpx.Client, source: FakeSource) -> None:
    source.current_stats = STATS
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        answer = http.get("/stats", headers=headers)
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == STATS


def test_stats_page(http: httpx.Client, source: FakeSource) -> None:
    assert "No calls recorded yet" in http.get("/stats?format=html").text
    source.current_stats = STATS
    answer = http.get("/stats", headers={"Accept": BROWSER})
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    page = answer.text
    assert '<meta http-equiv="refresh" content="5">' in page
    assert page.count("<tr") == 4  # the header and three methods
    assert 'data-service="calc" data-method="add"' in page
    # Each method links to its recent traces, and its errors to the failed ones.
    assert '<a href="traces?service=calc&amp;method=add">calc.add</a></td><td>server</td>' in page
    assert '<a href="traces?service=calc&amp;method=div&amp;failed=1">2</a>' in page
    assert 'href="traces?service=%3Cb%3E&amp;method=%3Ci%3E"' in page
    assert "12.5/s" in page
    assert page.count('class="sparkline"') == 3
    assert page.count('class="percentiles"') == 3
    assert "p99 20 ms" in page
    assert page.count('class="histogram"') == 1
    assert "≤ 1 ms: 50 calls" in page
    assert "slower: 0 calls" in page
    assert "&lt;b&gt;.&lt;i&gt;" in page
    assert "&lt;u&gt;" in page
    assert "<b>" not in page.split("</style>")[1]
    assert "since the collector started" in page
    assert source.queries[-1] == ("stats", None)


def test_stats_over_the_last_minutes(http: httpx.Client, source: FakeSource) -> None:
    source.current_stats = STATS
    assert http.get("/stats?minutes=5").json() == STATS
    assert source.queries[-1] == ("stats", 5)
    page = http.get("/stats?minutes=60&format=html").text
    assert "over the last 60 min" in page
    assert 'href="stats?format=json&amp;minutes=60"' in page
    for bad in ("0", "61", "x", ""):
        problem(http.get(f"/stats?minutes={bad}"), 400, "invalid_argument")


def test_rate_history_samples_once_a_second_and_forgets_gone_methods() -> None:
    history = RateHistory(size=3)
    stats = {"s": {"m": {"rate": 1.0}}}
    history.add(stats, 10.0)
    history.add({"s": {"m": {"rate": 9.0}}}, 10.5)  # too soon: ignored
    history.add({"s": {"m": {"rate": 2.0}}}, 11.0)
    history.add({"s": {"m": {"rate": 3.0}, "n": {"rate": "x"}}}, 12.0)
    history.add({"s": {"m": {"rate": 4.0}, "n": {}}}, 13.0)
    assert list(history.rates[("s", "m")]) == [2.0, 3.0, 4.0]
    assert list(history.rates[("s", "n")]) == [0.0, 0.0]
    history.add({"s": {"n": {"rate": 1.0}}}, 14.0)
    assert set(history.rates) == {("s", "n")}
    page = render_stats({"s": {"n": {"rate": 1.0}}}, history, refresh=2).decode()
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "<polyline" in page
    assert "RateHistory methods=1" in repr(history)


def test_rate_history_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.trace_views as views

    monkeypatch.setattr(views, "MAX_HISTORY_KEYS", 2)
    history = RateHistory()
    history.add({"s": {"a": {"rate": 1}, "b": {"rate": 1}, "c": {"rate": 1}}}, 0.0)
    assert set(history.rates) == {("s", "a"), ("s", "b")}


# -- the source down -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/traces", f"/traces/{TRACE_ID}", "/stats"])
def test_source_down_is_503_with_retry_after(
    http: httpx.Client, source: FakeSource, path: str
) -> None:
    source.down = True
    for accept in ("application/json", BROWSER):
        answer = http.get(path, headers={"Accept": accept})
        document = problem(answer, 503, "unavailable")
        assert answer.headers["retry-after"] == "7"
        assert "does not answer" in document["detail"]


def test_source_failure_is_502(http: httpx.Client, source: FakeSource) -> None:
    from gateway.trace_views import SourceError

    async def broken(minutes: int | None = None) -> dict[str, Any]:
        raise SourceError("the collector failed stats(): KeyError: x")

    source.stats = broken  # type: ignore[method-assign]
    try:
        document = problem(http.get("/stats"), 502, "unavailable")
        assert document["detail"] == "the collector failed stats(): KeyError: x"
    finally:
        del source.stats


def test_only_get(http: httpx.Client) -> None:
    assert http.post("/traces").status_code == 405
    assert http.head(f"/traces/{TRACE_ID}").status_code == 200
