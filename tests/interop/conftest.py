"""Fixtures for the interop tests that run in the asyncio (non-gevent) pytest process.

``child_processes`` starts bounded child processes and kills each one by PID at teardown;
``zerorpc_server`` starts the real zerorpc 0.6.3 server in one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_support import (
    HEARTBEAT,
    QUIET_HEARTBEAT,
    ChildProcesses,
    ZerorpcServer,
    start_zerorpc_server,
)


@pytest.fixture
def child_processes(tmp_path: Path) -> Iterator[ChildProcesses]:
    children = ChildProcesses(tmp_path)
    try:
        yield children
    finally:
        children.kill_all()


@pytest.fixture
def zerorpc_server(child_processes: ChildProcesses) -> ZerorpcServer:
    """zerorpc 0.6.3's Server with the test service, heartbeat HEARTBEAT."""
    return start_zerorpc_server(child_processes, heartbeat=HEARTBEAT)


@pytest.fixture
def quiet_zerorpc_server(child_processes: ChildProcesses) -> ZerorpcServer:
    """The same with the default heartbeat, for tests that are not about heartbeats."""
    return start_zerorpc_server(child_processes, heartbeat=QUIET_HEARTBEAT)
