"""Fixtures of the asyncio driver tests.

Every test must stop what it starts: the autouse ``no_socket_left_open`` fixture checks that no
socket of the shared ``zmq.asyncio`` context is still open after a test (pyzmq forgets sockets
when they close, so the context's live set is exactly the open ones).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq.asyncio


@pytest.fixture(autouse=True)
def no_socket_left_open() -> Iterator[None]:
    context = zmq.asyncio.Context.instance()
    before = set(context._sockets)
    yield
    left = [sock for sock in context._sockets if sock not in before and not sock.closed]
    assert not left, f"{len(left)} socket(s) left open by the test"
