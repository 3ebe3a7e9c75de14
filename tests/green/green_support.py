"""Helpers of the gevent-driver tests: a started server, a connected client, and waiting
for a condition (``from green_support import serving``; pytest puts this folder on the path)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent

from rpccore.green import Client, Server

HB = 0.2  # heartbeat period of every server and client, unless a test gives another
LOOPBACK = "tcp://127.0.0.1:*"


@contextmanager
def serving(obj: object, endpoint: str = LOOPBACK, **options: Any) -> Iterator[tuple[Server, str]]:
    """A started Server for ``obj`` (heartbeat HB unless given) and its bound endpoint."""
    options.setdefault("heartbeat", HB)
    server = Server(obj, **options)
    try:
        bound = server.bind(endpoint)[0]
        server.start()
        yield server, bound
    finally:
        server.stop()


@contextmanager
def connected(endpoint: str, **options: Any) -> Iterator[Client]:
    options.setdefault("heartbeat", HB)
    options.setdefault("timeout", 10.0)
    client = Client(endpoint, **options)
    try:
        yield client
    finally:
        client.close()


def eventually(predicate: Callable[[], bool], within: float, what: str) -> float:
    """Wait (cooperatively) until ``predicate()``; AssertionError after ``within`` seconds.
    Returns how long it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        gevent.sleep(0.01)
    return time.monotonic() - start
