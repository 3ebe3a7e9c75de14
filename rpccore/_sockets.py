"""Socket set-up shared by both drivers (the only zmq-aware module outside them)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

import zmq

from ._problems import ProblemLog

# A single event larger than this is refused by libzmq before it is buffered: the peer
# that sent it is disconnected. 0.6.3 has no limit (its msgpack reader stops at 100 MiB).
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024


def prepare(sock: zmq.Socket[bytes], *, max_message_size: int | None) -> None:
    # LINGER 0: a process that stops must not hang on undelivered messages (the reference
    # keeps the default of forever, spec 15.3).
    sock.setsockopt(zmq.LINGER, 0)
    if max_message_size:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)


def report_disconnect(problems: ProblemLog, max_message_size: int | None) -> None:
    """Count a peer's disconnection. libzmq gives no reason, and one reason is ours to
    report: a peer that sends a message over MAXMSGSIZE is cut off without it being read."""
    problems.report(
        "disconnected",
        "a peer disconnected: it closed, crashed, or sent a message over "
        "max_message_size={} bytes, which is refused unread",
        max_message_size,
        level=logging.INFO,
    )


def endpoint_list(endpoints: str | Iterable[str]) -> list[str]:
    return [endpoints] if isinstance(endpoints, str) else list(endpoints)


def bind(sock: zmq.Socket[bytes], endpoints: str | Iterable[str]) -> list[str]:
    """Bind to each endpoint; return the endpoints actually bound (``tcp://host:*`` and
    ``tcp://host:0`` pick a free port)."""
    bound = []
    for endpoint in endpoint_list(endpoints):
        sock.bind(endpoint)
        last = sock.getsockopt(zmq.LAST_ENDPOINT)
        bound.append(last.decode() if isinstance(last, bytes) else str(last))
    return bound


def connect(sock: zmq.Socket[bytes], endpoints: str | Iterable[str]) -> list[str]:
    connected = endpoint_list(endpoints)
    for endpoint in connected:
        sock.connect(endpoint)
    return connected
