"""What a test needs from outside the repository (a system tool, a browser, the shared wire
vectors): without it the test is skipped, except under ``CI=true``, where ``.ci/run`` has set
everything up and a missing piece is a broken environment, so the test fails."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def required(missing: str) -> NoReturn:
    """Skip the test, or fail it under CI=true; ``missing`` says what is missing and how to
    get it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing} (CI=true: a failure, not a skip)")
    pytest.skip(missing)
