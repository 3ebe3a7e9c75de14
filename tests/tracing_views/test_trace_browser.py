"""The trace and statistics pages in a real headless Chromium, the network cut off but for
the views' own server.

The views (a fake ``TraceSource`` holding a hand-made trace: the gateway's HTTP span -> a.run
-> b.work -> c.numbers, a stream, and c.fail, which raises) run under uvicorn on a loopback
port. Debian's Chromium, driven by Playwright through its own executable, opens the list of
recent traces, follows the link to the trace and checks the timeline draws every span at its
depth and in time order, with the failed one in red and named by its exception; then the
statistics page, which must reload itself. With token auth on, a browser is asked for a
token (HTTP Basic: the token as the password) and, given an operator's, shows the pages as
without auth. Any request off the server is refused and
recorded, and a Content-Security-Policy violation (the inline stylesheet's hash) would show as
a console error. Screenshots go to ``test-artifacts/`` (ignored by git).

Under CI=true a missing Chromium or Playwright fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import pytest
from chromium import STEP_MS, headless_chromium
from served import ServedApp
from views_support import (
    A_RUN,
    B_WORK,
    C_FAIL,
    C_NUMBERS,
    HTTP,
    T0,
    TRACE_ID,
    FakeSource,
    three_level_trace,
    views_app,
)

from auth.secret import load_hasher
from auth.store import issue_token, open_token_store
from auth.wiring import Door
from gateway.config import parse_config
from gateway.trace_records import TraceFilter

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # headless_chromium skips (or fails, under CI) the browser tests
    PlaywrightError = Exception

REPO: Final = Path(__file__).resolve().parent.parent.parent
ARTIFACTS: Final = REPO / "test-artifacts"
RED: Final = "rgb(220, 38, 38)"
STEP_S: Final = STEP_MS / 1000


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with headless_chromium(tmp_path / "profile") as context:
        yield context


@pytest.fixture
def source() -> FakeSource:
    source = FakeSource()
    source.traces[TRACE_ID] = three_level_trace()
    source.recent_traces = [
        {
            "trace_id": TRACE_ID,
            "start": T0,
            "duration": 0.05,
            "spans": 5,
            "errors": 1,
            "root": {"svc": "gateway", "m": "POST /rpc/a/run"},
        }
    ]
    source.current_stats = {
        "a": {
            "run": {"count": 40, "errors": 0, "rate": 4.0, "p50": 0.02, "p90": 0.04, "p99": 0.05}
        },
        "c": {
            "fail": {
                "count": 40,
                "errors": 40,
                "rate": 4.0,
                "p50": 0.007,
                "p90": 0.008,
                "p99": 0.009,
                "side": "server",
                "buckets": [[0.0025, 1], [0.005, 3], [0.01, 30], [None, 6]],
            }
        },
    }
    return source


class Watch:
    """Refuses and records every request off ``origin``; keeps script and console errors."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.origin = origin
        self.refused: list[str] = []
        self.errors: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route: Route) -> None:
        if route.request.url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("blockedbyclient")

    def page(self, context: BrowserContext) -> Page:
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"script: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )
        return page

    def check(self) -> None:
        assert self.refused == []
        assert self.errors == []


def wait_for_reloads(page: Page, source: FakeSource, reloads: int = 2) -> None:
    """Until the statistics page has asked the source ``reloads`` more times, by itself."""
    asked = sum(1 for what, _ in source.queries if what == "stats")
    deadline = time.monotonic() + 10
    while sum(1 for what, _ in source.queries if what == "stats") < asked + reloads:
        assert time.monotonic() < deadline, "the statistics page did not reload"
        page.wait_for_timeout(200)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


@pytest.mark.slow
def test_trace_timeline_draws_every_span(browser: BrowserContext, source: FakeSource) -> None:
    with ServedApp(views_app(source)) as served:
        watch = Watch(browser, served.url)
        page = watch.page(browser)
        page.goto(f"{served.url}/traces")
        page.click(f'a[href="traces/{TRACE_ID}"]')
        page.wait_for_url(f"{served.url}/traces/{TRACE_ID}")
        page.wait_for_selector("svg.timeline")

        rows = page.eval_on_selector_all(
            "svg.timeline g.span",
            """groups => groups.map(g => {
                const bar = g.querySelector('rect.bar').getBoundingClientRect();
                return {
                    id: g.dataset.spanId,
                    depth: Number(g.dataset.depth),
                    error: g.classList.contains('error'),
                    label: g.querySelector('text.label').textContent,
                    labelX: g.querySelector('text.label').getBoundingClientRect().x,
                    info: g.querySelector('text.info').textContent,
                    title: g.querySelector('title').textContent,
                    fill: getComputedStyle(g.querySelector('rect.bar')).fill,
                    weight: getComputedStyle(g.querySelector('text.label')).fontWeight,
                    x: bar.x, width: bar.width, y: bar.y, height: bar.height,
                };
            })""",
        )
        assert [(r["id"], r["depth"], r["label"]) for r in rows] == [
            (HTTP, 0, "gateway POST /rpc/a/run"),
            (A_RUN, 1, "a.run"),
            (B_WORK, 2, "b.work"),
            (C_NUMBERS, 3, "c.numbers"),
            (C_FAIL, 3, "c.fail"),
        ]
        # Drawn: every bar has a size, one row below the other, indented by depth.
        assert all(r["width"] > 0 and r["height"] > 0 for r in rows)
        assert [r["y"] for r in rows] == sorted(r["y"] for r in rows)
        assert len({r["y"] for r in rows}) == 5
        assert [r["labelX"] for r in rows[:4]] == sorted(r["labelX"] for r in rows[:4])
        # Placed in time: each child starts inside its parent; c.fail after c.numbers.
        by_id = {r["id"]: r for r in rows}
        for child, parent in ((A_RUN, HTTP), (B_WORK, A_RUN), (C_NUMBERS, B_WORK)):
            assert by_id[child]["x"] >= by_id[parent]["x"]
            inner_end = by_id[child]["x"] + by_id[child]["width"]
            assert inner_end <= by_id[parent]["x"] + by_id[parent]["width"] + 0.5
        assert by_id[C_FAIL]["x"] > by_id[C_NUMBERS]["x"] + by_id[C_NUMBERS]["width"]
        # The error: red, bold, named; the others are not red.
        failed = [r for r in rows if r["error"]]
        assert [r["id"] for r in failed] == [C_FAIL]
        assert failed[0]["fill"] == RED
        assert failed[0]["weight"] == "600"
        assert "ValueError" in failed[0]["info"]
        assert "error: ValueError" in failed[0]["title"]
        assert all(r["fill"] != RED for r in rows if not r["error"])
        assert "5 items" in by_id[C_NUMBERS]["info"]
        assert "stream items: 5" in by_id[C_NUMBERS]["title"]
        assert "process: c@box pid 4242" in by_id[C_FAIL]["title"]
        # The table lists the same spans; the summary counts them.
        assert page.locator("tbody tr").count() == 5
        assert page.locator("tbody tr.failed").count() == 1
        assert "5 spans" in page.locator(".summary").inner_text()
        assert "1 error" in page.locator(".summary").inner_text()
        page.hover(f'g.span[data-span-id="{C_FAIL}"] rect.bar')
        screenshot(page, "trace-timeline.png")
        watch.check()


@pytest.mark.slow
def test_stats_page_draws_charts_and_reloads(browser: BrowserContext, source: FakeSource) -> None:
    with ServedApp(views_app(source, refresh=1)) as served:
        watch = Watch(browser, served.url)
        page = watch.page(browser)
        page.goto(f"{served.url}/stats")
        rows = page.locator("tbody tr")
        assert rows.count() == 2
        assert page.locator("svg.sparkline polyline").count() == 2
        assert page.locator("svg.percentiles rect.pct").count() == 6
        assert page.locator("svg.histogram rect.hist").count() == 4
        assert page.locator("tr.failed").inner_text().startswith("c.fail")
        fill = page.eval_on_selector("svg.percentiles rect.p99", "r => getComputedStyle(r).fill")
        assert fill == "rgb(30, 64, 175)"  # the stylesheet applies (its hash is allowed)
        screenshot(page, "stats-page.png")
        # It reloads itself: the view asks the source again, with no click.
        wait_for_reloads(page, source)
        page.wait_for_selector("svg.sparkline")
        watch.check()


@pytest.mark.slow
def test_statistics_link_to_a_methods_traces_and_the_form_chooses_others(
    browser: BrowserContext, source: FakeSource
) -> None:
    with ServedApp(views_app(source, refresh=60)) as served:
        watch = Watch(browser, served.url)
        page = watch.page(browser)
        page.goto(f"{served.url}/stats")
        page.click('tr.failed a[href="traces?service=c&method=fail&failed=1"]')  # its errors
        page.wait_for_url(f"{served.url}/traces?service=c&method=fail&failed=1")
        assert "Traces with a failed call of c.fail" in page.locator("body").inner_text()
        assert source.queries[-1] == ("recent", (50, TraceFilter("c", "fail", failed=True)))
        # The form holds that filter; another one is asked with it, no script needed.
        assert page.input_value('input[name="service"]') == "c"
        assert page.is_checked('input[name="failed"]')
        page.fill('input[name="service"]', "a")
        page.fill('input[name="method"]', "run")
        page.uncheck('input[name="failed"]')
        page.click("form.filter button")
        page.wait_for_url(f"{served.url}/traces?service=a&method=run")
        assert source.queries[-1] == ("recent", (50, TraceFilter("a", "run")))
        assert page.locator("tbody tr").count() == 1
        screenshot(page, "traces-filtered.png")
        page.fill('input[name="service"]', "")
        page.fill('input[name="method"]', "")
        page.click("form.filter button")  # empty fields: every trace
        page.wait_for_url(f"{served.url}/traces?service=&method=")
        assert source.queries[-1] == ("recent", 50)
        watch.check()  # nothing off the server, no policy violation (form-action 'self')


SECRET_VARIABLE: Final = "ZEROGATE_VIEWS_TEST_SECRET"


def opened(page: Page, url: str) -> int | str:
    """The status ``url`` was answered with, or the network error that ended its navigation."""
    try:
        response = page.goto(url)
    except PlaywrightError as error:
        return next((word for word in str(error).split() if word.startswith("net::")), str(error))
    assert response is not None
    return response.status


def door_with_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Door, str, str]:
    """A real door (token auth, a SQLite store in ``tmp_path``) and two tokens: an
    operator's (scope ``*:*``) and one that may only call ``a.run``."""
    monkeypatch.setenv(SECRET_VARIABLE, "s" * 40)
    config = parse_config(
        "services: {}\n"
        f"auth: {{mode: token, store: 'sqlite:///{tmp_path}/tokens.db', "
        f"secret: 'env:{SECRET_VARIABLE}'}}\n"
    )

    async def issue() -> tuple[str, str]:
        # A store of its own, closed here: the door's opens in the server's event loop.
        store = open_token_store(config.auth.store)
        try:
            hasher = load_hasher(config.auth.secret)
            now = time.time()
            operator = await issue_token(store, hasher, name="ops", scopes=["*:*"], now=now)
            caller = await issue_token(store, hasher, name="app", scopes=["a:run"], now=now)
        finally:
            await store.aclose()
        return operator.token, caller.token

    operator, caller = asyncio.run(issue())
    return Door.from_config(config), operator, caller


@pytest.mark.slow
def test_with_auth_on_a_browser_asks_for_a_token_and_shows_the_pages(
    tmp_path: Path, source: FakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    door, operator, caller = door_with_tokens(tmp_path, monkeypatch)
    with ServedApp(views_app(source, refresh=1, gate=door.gate, closing=door)) as served:
        # Without a token a page's 401 asks for a user name and password as well.
        answer = httpx.get(f"{served.url}/traces", timeout=STEP_S)
        assert answer.status_code == 401
        assert answer.headers.get_list("www-authenticate") == [
            'Bearer realm="zerogate"',
            'Basic realm="zerogate", charset="UTF-8"',
        ]
        with headless_chromium(tmp_path / "nobody") as context:
            watch = Watch(context, served.url)
            # Chromium takes it as a question for the person at the keyboard; Playwright,
            # which has nothing to type, gives up (as this version does) or shows the 401.
            outcome = opened(watch.page(context), f"{served.url}/traces")
            assert outcome in (401, "net::ERR_INVALID_AUTH_CREDENTIALS"), outcome
            # Elsewhere (no page: no Basic challenge) the browser just shows the 401.
            page = watch.page(context)
            assert opened(page, f"{served.url}/nothing") == 401
            assert "needs a token" in page.locator("body").inner_text()
        assert source.queries == []

        # A token that may call a method, but not read every caller's traces: 403.
        with headless_chromium(tmp_path / "caller", login=("app", caller)) as context:
            page = Watch(context, served.url).page(context)
            assert opened(page, f"{served.url}/traces") == 403
            assert "needs the scope *:*" in page.locator("body").inner_text()
        assert source.queries == []

        # The operator types their token as the password: the pages work as without auth.
        with headless_chromium(tmp_path / "operator", login=("ops", operator)) as context:
            watch = Watch(context, served.url)
            page = watch.page(context)
            assert opened(page, f"{served.url}/traces") == 200
            page.click(f'a[href="traces/{TRACE_ID}"]')
            page.wait_for_url(f"{served.url}/traces/{TRACE_ID}")
            page.wait_for_selector("svg.timeline")
            assert page.locator("svg.timeline g.span").count() == 5
            page.goto(f"{served.url}/stats")
            # Each reload comes a second after the page loaded: count the rows in that second.
            page.wait_for_selector("svg.sparkline")
            assert page.locator("tbody tr").count() == 2
            screenshot(page, "stats-page-auth.png")
            wait_for_reloads(page, source)  # with the credentials the browser was given
            # A reload that was refused would show the problem document, not the table.
            page.wait_for_selector("tbody tr:nth-child(2) svg.sparkline")
            watch.check()
