"""Reading requests: bodies within a size limit, timeouts from headers, and waiting for a
call while watching for the client to go away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Final, TypeVar

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from .problems import Problem, invalid_argument

T = TypeVar("T")

TIMEOUT_HEADER: Final = "x-timeout-ms"
WATCH_AFTER: Final = 0.02  # seconds a call runs before the client is watched for leaving


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit``: from
    ``Content-Length`` before reading anything, else while reading (never after buffering).
    Raises ``ClientDisconnect`` if the client goes away first."""
    if content_length is not None:
        if not content_length.isdigit():
            raise invalid_argument(f"Content-Length {content_length[:40]!r} is not a number")
        if int(content_length) > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> Problem:
    return Problem(413, f"the body is larger than the limit of {limit} bytes")


def requested_timeout(text: str | None) -> float | None:
    """``X-Timeout-Ms`` in seconds (it may only lower the service's timeout), or None."""
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or int(text) == 0:
        raise invalid_argument(
            f"X-Timeout-Ms must be a positive integer of milliseconds, not {text[:40]!r}",
            [
                {
                    "loc": ["header", "X-Timeout-Ms"],
                    "msg": "not a positive integer",
                    "type": "invalid_header",
                }
            ],
        )
    return int(text) / 1000


async def until_disconnect(call: Awaitable[T], receive: Receive) -> T:
    """Await ``call``; if the client disconnects first, cancel it and raise
    ``ClientDisconnect`` (the backend call is abandoned, so nothing stays behind).

    Call it only once the body has been read: then the next ASGI message is the
    disconnect. Most calls end within milliseconds, so the watcher (a task reading that
    message) starts only after WATCH_AFTER seconds; it cancels the request's own task
    rather than running the call in a second task."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER, start_watching)
    try:
        return await call
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientDisconnect() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
