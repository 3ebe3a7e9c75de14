"""Fixtures of the gateway tests: child processes stopped by PID, and end-to-end helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Children


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    procs = Children(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()
