"""The asyncio client: ``await Client(endpoint).call("add", 1, 2)``."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from time import monotonic
from typing import Any, Final

import zmq
import zmq.asyncio

from .. import _describe
from .._client import DEFAULT_TIMEOUT, DEFAULT_WINDOW, ClientConnection
from .._codec import Frames, MessageId
from .._errors import RemoteError, RPCError
from .._events import CallFailed, Reply, StreamEnd, StreamItem
from .._heartbeat import DEFAULT_HEARTBEAT
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from .._sockets import bind as bind_socket
from .._sockets import connect as connect_socket
from .._trace import outgoing_trace_header
from ._peer import AioPeer


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()


class _Pending:
    """What the reader has delivered to one call so far."""

    __slots__ = ("done", "error", "items", "stream", "value", "waiter")

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.items: deque[Any] = deque()
        self.stream = False
        self.done = False
        self.value: Any = None
        self.error: RPCError | None = None

    async def wait(self) -> None:
        while not self.items and not self.done:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncStream(AsyncIterator[Any]):
    """The items of a stream reply, as they arrive. Credit is granted as you iterate, so a
    slow consumer slows the server down instead of filling memory. ``aclose()`` (or
    leaving an ``async with`` block) abandons the rest of the stream."""

    def __init__(self, client: Client, cid: MessageId, pending: _Pending) -> None:
        self._client, self._cid, self._pending = client, cid, pending
        self._first = True

    def __repr__(self) -> str:
        return f"<aio.AsyncStream buffered={len(self._pending.items)} done={self._pending.done}>"

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        pending = self._pending
        if self._first:
            self._first = False
        elif not pending.done:
            self._client._request_next(self._cid)
        try:
            await pending.wait()
        except asyncio.CancelledError:
            self.close()
            raise
        if pending.items:
            return pending.items.popleft()
        if pending.error is not None:
            raise pending.error
        raise StopAsyncIteration

    def close(self) -> None:
        pending = self._pending
        pending.items.clear()  # abandoning means no more items, buffered ones included
        pending.error = None
        if not pending.done:
            pending.done = True
            self._client._abandon(self._cid)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._pending.done:
            self.close()


class Client(AioPeer):
    """A ZeroRPC client on asyncio (one DEALER socket; connect it to one server).

    ``await call(method, *args)`` returns the result, or an ``AsyncStream`` when the method
    streams; ``stream(method, *args)`` is an async iterator over a stream method's items.
    ``timeout`` bounds the wait for the first reply. Cancelling the awaiting task abandons
    the call. Attribute access is sugar: ``await client.add(1, 2)``. Create and use a client
    inside a running event loop.
    """

    def __init__(
        self,
        endpoint: str | Iterable[str] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        passive_heartbeat: bool = False,
        window: int = DEFAULT_WINDOW,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self._client = ClientConnection(
            heartbeat=heartbeat, passive_heartbeat=passive_heartbeat, window=window
        )
        super().__init__(
            zmq.DEALER,
            self._client,
            context=context,
            max_message_size=max_message_size,
            idle_period=heartbeat or 1.0,
        )
        self.timeout = timeout
        self._heartbeat = heartbeat
        self._calls: dict[MessageId, _Pending] = {}
        self._endpoint = endpoint

    def __repr__(self) -> str:
        return f"<aio.Client {self._client!r}>"

    @property
    def open_channels(self) -> int:
        return self._client.open_channels

    @property
    def problems(self) -> dict[str, int]:
        return dict(self._client.problems.counts)

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        return connect_socket(self._sock, endpoint)

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        return bind_socket(self._sock, endpoint)

    def close(self) -> None:
        for pending in self._calls.values():
            pending.error = RPCError("the client was closed")
            pending.done = True
            pending.wake()
        self._calls.clear()
        self._close_socket()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def remote_method(*args: Any, **options: Any) -> Any:
            return await self.call(name, *args, **options)

        remote_method.__name__ = name
        return remote_method

    # -- calls ---------------------------------------------------------------------

    async def call(
        self, method: str, *args: Any, timeout: float | _Default | None = DEFAULT
    ) -> Any:
        if not self._started:
            if self._endpoint is not None:
                self.connect(self._endpoint)
                self._endpoint = None
            self._start()
        limit = self.timeout if isinstance(timeout, _Default) else timeout
        now = monotonic()
        cid = self._client.start_call(
            method, args, now=now, timeout=limit, header=outgoing_trace_header()
        )
        pending = self._calls[cid] = _Pending()
        self._flush()
        first = min(x for x in (limit, self._heartbeat, 3600.0) if x is not None)
        self._wake_timer_by(now + first)
        try:
            await pending.wait()
        except BaseException:
            self._abandon(cid)
            raise
        if pending.stream:
            return AsyncStream(self, cid, pending)
        if pending.error is not None:
            raise pending.error
        return pending.value

    async def stream(
        self, method: str, *args: Any, timeout: float | _Default | None = DEFAULT
    ) -> AsyncIterator[Any]:
        """Iterate a stream method's items; raises TypeError for a plain-value answer."""
        result = await self.call(method, *args, timeout=timeout)
        if not isinstance(result, AsyncStream):
            raise TypeError(f"{method} answered a value, not a stream")
        async with result:
            async for item in result:
                yield item

    async def describe(self) -> dict[str, Any]:
        """Describe the remote service: ``_zerorpc_inspect``, else the 0.6.3 fallback."""
        try:
            return _describe.from_inspect(await self.call("_zerorpc_inspect"))
        except (RemoteError, ValueError):
            name = await self.call("_zerorpc_name")
            names = await self.call("_zerorpc_list")
            docs = {m: await self.call("_zerorpc_help", m) for m in names}
            return _describe.from_fallback(name, docs)

    # -- plumbing ------------------------------------------------------------------

    def _request_next(self, cid: MessageId) -> None:
        self._client.request_next(cid)
        self._flush()

    def _abandon(self, cid: MessageId) -> None:
        self._calls.pop(cid, None)
        self._client.cancel(cid)

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._client.receive(frames, now)
        if event is not None:
            self._deliver(event)

    def _on_timer_event(self, event: Any) -> None:
        self._deliver(event)

    def _deliver(self, event: Reply | StreamItem | StreamEnd | CallFailed) -> None:
        pending = self._calls.get(event.channel)
        if pending is None:
            return
        kind = type(event)
        if kind is StreamItem:
            pending.stream = True
            pending.items.append(event.item)  # type: ignore[union-attr]
        else:
            del self._calls[event.channel]
            pending.done = True
            if kind is Reply:
                pending.value = event.value  # type: ignore[union-attr]
            elif kind is StreamEnd:
                pending.stream = True
            else:
                pending.error = event.error  # type: ignore[union-attr]
        pending.wake()
