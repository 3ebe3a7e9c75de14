"""Socket set-up shared by both drivers (the only zmq-aware module outside them)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

import zmq
import zmq.backend

from ._codec import Frames
from ._problems import ProblemLog

# A single event larger than this is refused by libzmq before it is buffered: the peer
# that sent it is disconnected. 0.6.3 has no limit (its msgpack reader stops at 100 MiB).
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024


# Plain ints: pyzmq's flag enums cost a Python-level enum operation on every use.
NOBLOCK: Final = int(zmq.NOBLOCK)
EVENTS: Final = int(zmq.EVENTS)
POLLIN: Final = int(zmq.POLLIN)
_SEND_MORE: Final = int(zmq.NOBLOCK | zmq.SNDMORE)
# Below this size copying a frame is cheaper than tracking ZeroMQ's buffer; above it,
# frames are sent and received in place (a 1 MiB payload is never copied by us).
ZERO_COPY_MIN: Final = 64 * 1024

_base_send: Final[Any] = zmq.backend.Socket.send

_plain_contexts: dict[int, zmq.Context[Any]] = {}


def plain_context(context: zmq.Context[Any]) -> zmq.Context[Any]:
    """A plain pyzmq context on the same libzmq context as ``context`` (zmq.green or
    zmq.asyncio), so our sockets meet the application's on ``inproc://`` endpoints while
    our drivers do their own waiting."""
    if type(context) is zmq.Context:
        return context
    address = context.underlying
    plain = _plain_contexts.get(address)
    if plain is None:
        plain = _plain_contexts[address] = zmq.Context.shadow(address)
    return plain


def send_frames(sock: Any, frames: Frames) -> None:
    """Send one multipart message without blocking; raises zmq.Again when it cannot
    (ZeroMQ accepts all the parts of a message or none)."""
    # pyzmq's Python-level send only adds routing_id/group (DRAFT sockets): skip it.
    send = _base_send if type(sock) is zmq.Socket else type(sock).send
    last = frames[-1]
    for frame in frames[:-1]:
        send(sock, frame, _SEND_MORE, copy=len(frame) < ZERO_COPY_MIN)
    send(sock, last, NOBLOCK, copy=len(last) < ZERO_COPY_MIN)


def recv_frames(sock: Any) -> Frames:
    """Receive one queued multipart message without blocking. A large last frame stays a
    view on ZeroMQ's buffer (decode() reads any buffer); the rest become bytes.

    Frames are received as zmq.Frame and asked ``.more``: half the cost of a
    getsockopt(RCVMORE) per frame (pyzmq builds an enum for every getsockopt)."""
    frame = sock.recv(NOBLOCK, copy=False)
    frames: list[Any] = [frame.bytes]
    while frame.more:
        frame = sock.recv(NOBLOCK, copy=False)
        if frame.more or len(frame) < ZERO_COPY_MIN:
            frames.append(frame.bytes)  # envelope frames must be bytes: they are keys
        else:
            frames.append(frame.buffer)
    return frames


def prepare(sock: Any, *, max_message_size: int | None) -> None:
    # LINGER 0: a process that stops must not hang on undelivered messages (the reference
    # keeps the default of forever, spec 15.3).
    sock.setsockopt(zmq.LINGER, 0)
    if sock.getsockopt(zmq.TYPE) == zmq.ROUTER:
        # A ROUTER silently drops what it cannot queue for a peer (default: 1,000
        # messages), which would lose replies and stream items to a slow reader. What a
        # server queues is bounded anyway: one reply per request, and stream items by the
        # credit the client granted.
        sock.setsockopt(zmq.SNDHWM, 0)
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
