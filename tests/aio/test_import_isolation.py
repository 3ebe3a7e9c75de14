"""Importing the asyncio side never brings in gevent, and the sans-IO core brings in neither
runtime. Each check runs in a fresh interpreter, since this one may have imported anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECKS = [
    ("rpccore", ["gevent", "zmq.green", "zmq.asyncio"]),
    ("rpccore.aio", ["gevent", "zmq.green"]),
]


@pytest.mark.parametrize(("module", "forbidden"), CHECKS)
def test_import_does_not_pull_in_the_other_runtime(module: str, forbidden: list[str]) -> None:
    code = (
        f"import sys, {module}\n"
        f"leaked = sorted(name for name in {forbidden!r} if name in sys.modules)\n"
        "print(','.join(leaked))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"import {module} imported {done.stdout.strip()}"


def test_the_literal_check_from_the_issue() -> None:
    code = "import rpccore.aio, sys; assert 'gevent' not in sys.modules"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
