"""The asyncio client: ``await Client(endpoint).call("add", 1, 2)``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import zmq
import zmq.asyncio

from .. import _describe
from .._calling import DEFAULT, ClientPump, Pending, StreamCursor, UseDefault
from .._client import DEFAULT_TIMEOUT, DEFAULT_WINDOW
from .._curve import CurveClientKeys
from .._errors import RemoteError
from .._heartbeat import DEFAULT_HEARTBEAT
from .._naming import resolve_all
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from ._peer import LoopHost, aio_socket


class _Pending(Pending):
    """What has arrived for one call so far, and the future its caller awaits."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[None] | None = None

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


class AsyncStream(StreamCursor, AsyncIterator[Any]):
    """The items of a stream reply, as they arrive (see StreamCursor); ``aclose()`` or
    leaving an ``async with`` block abandons the rest."""

    _DRIVER = "aio"
    _pending: _Pending

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        self._ask_for_next()
        try:
            await self._pending.wait()
        except asyncio.CancelledError:
            self.close()
            raise
        found, item = self._take()
        if not found:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Client(ClientPump[_Pending]):
    """A ZeroRPC client on asyncio (one DEALER socket; connect it to one server).

    ``await call(method, *args)`` returns the result, or an ``AsyncStream`` when the method
    streams; ``stream(method, *args)`` is an async iterator over a stream method's items.
    ``timeout`` bounds the wait for the first reply. Cancelling the awaiting task abandons
    the call. Attribute access is sugar: ``await client.add(1, 2)``. The client starts on
    the event loop of its first call.

    ``endpoint`` may also be a service name (no ``://``), looked up in the naming file
    ``names`` or else ``$ZEROGATE_NAMES`` (``rpccore._naming.NamingError``, a
    ``ValueError``, if it is not there). A name with several endpoints connects to all of
    them, as zerorpc does, and ZeroMQ then deals calls round-robin with no regard for which
    server is alive: for several servers the gateway's pool or a hub is the right tool.

    ``curve`` (``rpccore.CurveClientKeys``) encrypts the connection to a CurveZMQ server.
    A handshake that fails (a wrong server key, a key the server does not authorize, a
    server without CURVE) reaches no server: calls end as ``TimeoutExpired`` or
    ``LostRemote``, whose message then says why the handshake failed.
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
        names: str | os.PathLike[str] | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        # A name (no "://") is resolved first, so a naming error leaves no socket behind.
        endpoints = None if endpoint is None else resolve_all(endpoint, names)
        super().__init__(
            aio_socket(zmq.DEALER, context),
            timeout=timeout,
            heartbeat=heartbeat,
            passive_heartbeat=passive_heartbeat,
            window=window,
            max_message_size=max_message_size,
            curve=curve,
        )
        if endpoints is not None:
            self.connect(endpoints)

    _defer_flush = True  # see ClientPump: one I/O-thread wake-up per loop turn

    def __repr__(self) -> str:
        return f"<aio.Client {self._client!r}>"

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        return self._connect(endpoint)

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        return self._bind(endpoint)

    def close(self) -> None:
        for pending in self._fail_all("the client was closed"):
            pending.wake()

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
        self,
        method: str,
        *args: Any,
        timeout: float | UseDefault | None = DEFAULT,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """``metadata``: extra header keys for this call, as ``rpccore.call_metadata`` gives
        them to every call of a context (the protocol's and the trace's keys always win)."""
        if not self._started:
            self._start_pump(LoopHost(asyncio.get_running_loop()))
        pending = _Pending()
        cid = self._begin(method, args, timeout, pending, metadata)
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
        self, method: str, *args: Any, timeout: float | UseDefault | None = DEFAULT
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
            described = _describe.from_inspect(await self.call("_zerorpc_inspect"))
        except (RemoteError, ValueError):
            name = await self.call("_zerorpc_name")
            names = await self.call("_zerorpc_list")
            docs = {m: await self.call("_zerorpc_help", m) for m in names}
            described = _describe.from_fallback(name, docs)
        self._learn_name(described)
        return described
