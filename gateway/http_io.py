"""Reading requests: bodies within a size limit, timeouts from headers, and waiting for a
call while watching for the client to go away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from .observe import SCOPE_KEY, RequestInfo
from .problems import Problem, invalid_argument

T = TypeVar("T")

TIMEOUT_HEADER: Final = "x-timeout-ms"
WATCH_AFTER: Final = 0.02  # seconds a call runs before its client is watched for leaving


def raw_route_path(scope: Scope) -> str:
    """The path below the mount point (uvicorn ``--root-path``), still percent-encoded.
    Routing and the public-path check read this one, so that no encoding (``%2F``,
    ``/%68ealthz``) makes a path mean something else to them than to a proxy in front.
    Worked out once per request (kept in its ``RequestInfo``)."""
    info: RequestInfo | None = scope.get(SCOPE_KEY)
    if info is not None and info.route_path is not None:
        return info.route_path
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("latin-1") if raw is not None else scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        path = path[len(root) :]
    if info is not None:
        info.route_path = path
    return path


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


class _Watched:
    __slots__ = ("gone", "receive", "since", "task", "watcher")

    def __init__(self, task: asyncio.Task[Any], receive: Receive, since: float) -> None:
        self.task, self.receive, self.since = task, receive, since
        self.watcher: asyncio.Task[None] | None = None
        self.gone = False


class DisconnectWatch:
    """Awaits calls while watching their HTTP clients for leaving.

    A client that goes away shows up as an ``http.disconnect`` message from ``receive()``,
    which someone must be awaiting. Most calls end within milliseconds, so instead of a
    watcher task per request, one sweep every WATCH_AFTER seconds starts watchers only for
    the calls that have run longer than that (a dict entry is all a quick call costs)."""

    def __init__(self, period: float = WATCH_AFTER) -> None:
        self.period = period
        self._calls: dict[asyncio.Task[Any], _Watched] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<DisconnectWatch calls={len(self._calls)}>"

    async def until_disconnect(self, call: Awaitable[T], receive: Receive) -> T:
        """Await ``call``; if the client disconnects first, cancel it and raise
        ``ClientDisconnect`` (the backend call is abandoned, so nothing stays behind).
        Only once the body has been read: then the next ASGI message is the disconnect."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        watched = self._calls[task] = _Watched(task, receive, loop.time())
        if self._sweep is None:
            self._sweep = loop.call_later(self.period, self._sweep_calls)
        try:
            return await call
        except asyncio.CancelledError:
            if watched.gone and task.uncancel() == 0:
                raise ClientDisconnect() from None
            raise
        finally:
            del self._calls[task]
            if watched.watcher is not None:
                watched.watcher.cancel()

    def _sweep_calls(self) -> None:
        self._sweep = None
        if not self._calls:
            return
        loop = asyncio.get_running_loop()
        older = loop.time() - self.period
        for watched in self._calls.values():
            if watched.watcher is None and watched.since <= older:
                watched.watcher = loop.create_task(_watch(watched))
        self._sweep = loop.call_later(self.period, self._sweep_calls)


async def _watch(watched: _Watched) -> None:
    while True:
        message = await watched.receive()
        if message["type"] == "http.disconnect":
            watched.gone = True
            watched.task.cancel()
            return
