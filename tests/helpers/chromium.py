"""Headless Chromium for the page tests: Debian's ``chromium`` driven by Playwright (the test
extra), which downloads no browser of its own. Without either, a test skips, except under
``CI=true`` (``.ci/run`` installs both), where it fails."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from required import required

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

FLAGS: Final = [
    "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # No name resolves but the loopback address: the network is cut off for the page and
    # for anything Chromium would do in the background.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
STEP_MS: Final = 20_000  # every wait of the browser is bounded by this


@contextlib.contextmanager
def headless_chromium(
    profile: Path, *, height: int = 800, login: tuple[str, str] | None = None
) -> Iterator[BrowserContext]:
    """A fresh Chromium profile in ``profile``, a 1280-wide window; closed on the way out.
    ``login``: the (user name, password) a person would type when a page asks for them (a
    401 with a Basic challenge): Playwright gives them then, and only then."""
    executable = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if executable is None:
        required("Debian's chromium is missing (apt-get install chromium; .ci/run does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        required("playwright is missing (the test extra; .ci/run installs it)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=FLAGS,
            timeout=60_000,
            viewport={"width": 1280, "height": height},
            http_credentials=(
                None if login is None else {"username": login[0], "password": login[1]}
            ),
        )
        context.set_default_timeout(STEP_MS)
        context.set_default_navigation_timeout(STEP_MS)
        try:
            yield context
        finally:
            context.close()
