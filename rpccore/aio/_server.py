"""The asyncio server: ``Server(obj).bind(endpoint)``, then ``await server.run()``."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

import zmq
import zmq.asyncio

from .._codec import Frames
from .._dispatch import resolve
from .._events import ChannelLost, CreditGranted, Request, ServerChannelId
from .._heartbeat import DEFAULT_HEARTBEAT
from .._server import ServerConnection
from .._service import Service
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE, report_disconnect
from .._sockets import bind as bind_socket
from .._sockets import connect as connect_socket
from .._trace import TraceContext, current_trace
from ._peer import AioPeer

logger = logging.getLogger("rpccore.aio")

_DONE = object()


def _advance(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


_IN_MEMORY = (list, tuple, range, dict, set, frozenset, str, bytes)


class Server(AioPeer):
    """Serve the public methods of ``obj`` on the running event loop.

    Coroutine methods (and async generators, which stream) run as tasks on the loop.
    Plain methods run in a thread pool (``executor``, default: the loop's), so a method
    that blocks never stops the loop, and heartbeats keep flowing while it works.
    """

    def __init__(
        self,
        obj: object,
        *,
        name: str | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        executor: Executor | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.service = Service(obj, name)
        self._server = ServerConnection(heartbeat=heartbeat)
        super().__init__(
            zmq.ROUTER,
            self._server,
            context=context,
            max_message_size=max_message_size,
            idle_period=heartbeat or 1.0,
        )
        self._executor = executor
        self._handlers: dict[ServerChannelId, asyncio.Task[None]] = {}
        self._credit: dict[ServerChannelId, asyncio.Future[None]] = {}
        self._max_message_size = max_message_size
        self._stopped: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<aio.Server {self.service.name!r} {self._server!r}>"

    @property
    def open_channels(self) -> int:
        return self._server.open_channels

    @property
    def problems(self) -> dict[str, int]:
        return dict(self._server.problems.counts)

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        """Bind; returns the bound endpoints (``tcp://127.0.0.1:*`` picks a port)."""
        return bind_socket(self._sock, endpoint)

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        return connect_socket(self._sock, endpoint)

    def _start(self) -> None:
        first = not self._started
        super()._start()
        if first:
            self._watch_disconnects()

    def start(self) -> None:
        """Start serving on the running loop, in the background."""
        self._start()

    async def run(self) -> None:
        """Serve until ``stop()``."""
        self._start()
        if self._stopped is None:
            self._stopped = asyncio.Event()
        await self._stopped.wait()

    def stop(self) -> None:
        for handler in list(self._handlers.values()):
            handler.cancel()
        self._handlers.clear()
        self._close_socket()
        if self._stopped is not None:
            self._stopped.set()

    close = stop

    async def __aenter__(self) -> Server:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    # -- events --------------------------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._server.receive(frames, now)
        if event is None:
            return
        if type(event) is Request:
            func = resolve(self._server, self.service, event.channel, event.method)
            if func is not None:
                assert self._loop is not None
                task = self._loop.create_task(self._serve(event, func))
                self._handlers[event.channel] = task
        elif type(event) is CreditGranted:
            self._release(event.channel)

    def _on_disconnect(self) -> None:
        report_disconnect(self._server.problems, self._max_message_size)

    def _on_timer_event(self, event: Any) -> None:
        if type(event) is ChannelLost:
            handler = self._handlers.pop(event.channel, None)
            if handler is not None:
                handler.cancel()
            self._release(event.channel)

    def _release(self, cid: ServerChannelId) -> None:
        waiter = self._credit.pop(cid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- running a method ----------------------------------------------------------

    async def _serve(self, request: Request, func: Callable[..., Any]) -> None:
        cid, conn = request.channel, self._server
        current_trace.set(TraceContext.from_header(request.header))
        try:
            result = await self._call(func, request.args)
            if self.service.is_stream(request.method):
                await self._stream(cid, result)
            else:
                conn.send_reply(cid, result)
        except asyncio.CancelledError:
            conn.close(cid)
        except Exception as exc:
            # A stream may fail after using up its credit: the ERR waits for credit too.
            if await self._wait_credit(cid):
                conn.send_exception(cid, exc)
        finally:
            self._handlers.pop(cid, None)
            self._credit.pop(cid, None)
            if not self._closed:
                self._flush()

    async def _call(self, func: Callable[..., Any], args: list[Any]) -> Any:
        target = getattr(func, "__func__", func)
        if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
            result = func(*args)
        else:
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()
            result = await loop.run_in_executor(self._executor, context.run, func, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _stream(self, cid: ServerChannelId, result: Any) -> None:
        conn = self._server
        sent = 0
        async for item in self._items(result):
            if not await self._wait_credit(cid) or not conn.send_stream_item(cid, item):
                return
            sent += 1
            if sent % 32 == 0:
                self._flush()
        if await self._wait_credit(cid):
            conn.send_stream_done(cid)

    async def _items(self, result: Any) -> Any:
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
            return
        if isinstance(result, _IN_MEMORY):
            for item in result:
                yield item
            return
        # Any other iterable (a generator) may block between items: advance it in the
        # thread pool so the loop keeps serving and heartbeating.
        iterator = iter(result)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        while True:
            item = await loop.run_in_executor(self._executor, context.run, _advance, iterator)
            if item is _DONE:
                return
            yield item

    async def _wait_credit(self, cid: ServerChannelId) -> bool:
        """Wait until the channel may send; False if it closed (the client is gone)."""
        conn = self._server
        while not conn.can_send(cid):
            if not conn.is_open(cid):
                return False
            self._flush()
            assert self._loop is not None
            waiter = self._credit[cid] = self._loop.create_future()
            await waiter
        return True
