"""Fixtures of the rogue-peer and leak tests (asyncio side).

``no_socket_left_open`` (autouse) checks that a test closed every socket it opened on the
shared ``zmq.asyncio`` context; ``problem_log`` captures rpccore's "dropped input" lines, which
must appear once per kind of problem however often the problem repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import zmq.asyncio
from rogue_support import ProblemLines


@pytest.fixture(autouse=True)
def no_socket_left_open() -> Iterator[None]:
    context = zmq.asyncio.Context.instance()
    before = set(context._sockets)
    yield
    left = [sock for sock in context._sockets if sock not in before and not sock.closed]
    assert not left, f"{len(left)} socket(s) left open by the test"


@pytest.fixture
def problem_log(caplog: pytest.LogCaptureFixture) -> ProblemLines:
    caplog.set_level(logging.DEBUG, logger="rpccore")
    return ProblemLines(caplog)
