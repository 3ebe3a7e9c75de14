"""The asyncio server: ``Server(obj).bind(endpoint)``, then ``await server.run()``."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import zmq
import zmq.asyncio

from .. import _tracing
from .._curve import CurveServerKeys
from .._events import Request, ServerChannelId
from .._heartbeat import DEFAULT_HEARTBEAT
from .._serving import STREAM_DONE, ServerPump, next_item
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from .._trace import TraceContext, current_trace
from ._peer import LoopHost, aio_socket, run_method

_IN_MEMORY = (list, tuple, range, dict, set, frozenset, str, bytes)


class Server(ServerPump["asyncio.Task[None]"]):
    """Serve the public methods of ``obj`` on the running event loop.

    Coroutine methods (and async generators, which stream) run as tasks on the loop.
    Plain methods run in a thread pool (``executor``, default: the loop's), so a method
    that blocks never stops the loop, and heartbeats keep flowing while it works.

    ``curve`` makes the server a CurveZMQ server (encrypted, and with
    ``authorized_clients`` only listed clients admitted; see ``rpccore.CurveServerKeys``).
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
        curve: CurveServerKeys | None = None,
    ) -> None:
        super().__init__(
            aio_socket(zmq.ROUTER, context),
            obj,
            name=name,
            heartbeat=heartbeat,
            max_message_size=max_message_size,
            curve=curve,
        )
        self._executor = executor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._credit: dict[ServerChannelId, asyncio.Future[None]] = {}
        self._stopped: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<aio.Server {self.service.name!r} {self._server!r}>"

    def start(self) -> None:
        """Start serving on the running loop, in the background."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._start_pump(LoopHost(self._loop), watch_disconnects=True)

    async def run(self) -> None:
        """Serve until ``stop()``."""
        self.start()
        if self._stopped is None:
            self._stopped = asyncio.Event()
        await self._stopped.wait()

    def stop(self) -> None:
        self._stop_serving()
        if self._stopped is not None:
            self._stopped.set()

    close = stop

    async def __aenter__(self) -> Server:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers ------------------------------------------------------------------

    def _start_handler(self, request: Request, func: Callable[..., Any]) -> None:
        assert self._loop is not None
        self._handlers[request.channel] = self._loop.create_task(self._serve(request, func))

    def _cancel_handler(self, handler: asyncio.Task[None], *, lost: bool) -> None:
        handler.cancel()

    def _credit_granted(self, cid: ServerChannelId) -> None:
        waiter = self._credit.pop(cid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- running a method ----------------------------------------------------------

    async def _serve(self, request: Request, func: Callable[..., Any]) -> None:
        cid, conn = request.channel, self._server
        if _tracing.ON:
            trace, span = _tracing.server_start(request.header, self.service.name, request.method)
        else:
            trace, span = TraceContext.from_header(request.header), None
        current_trace.set(trace)
        try:
            result = await run_method(func, request.args, self._executor)
            if self.service.is_stream(request.method):
                await self._stream(cid, result, span)
            else:
                conn.send_reply(cid, result)
                if span is not None:
                    _tracing.end(span, _tracing.OK)
        except asyncio.CancelledError:
            if span is not None:  # the channel is still open when the server stops
                _tracing.end(span, _tracing.ABANDONED if conn.is_open(cid) else _tracing.LOST)
            conn.close(cid)
        except Exception as exc:
            # A stream may fail after using up its credit: the ERR waits for credit too.
            if await self._wait_credit(cid):
                conn.send_exception(cid, exc)
                if span is not None:
                    _tracing.end(span, _tracing.ERROR, exc)
            elif span is not None:
                _tracing.end(span, _tracing.LOST)
        finally:
            self._handlers.pop(cid, None)
            self._credit.pop(cid, None)
            if not self._closed:
                self._flush()
            if span is not None:  # after the answer left: the record never delays it
                _tracing.emit(span)

    async def _stream(self, cid: ServerChannelId, result: Any, span: _tracing.Span | None) -> None:
        conn = self._server
        async for item in self._items(result):
            if not await self._wait_credit(cid):
                if span is not None:
                    _tracing.end(span, _tracing.LOST)
                return
            if not conn.send_stream_item(cid, item):  # unencodable: ERR sent instead
                if span is not None:
                    _tracing.end(span, _tracing.ERROR)
                return
            if span is not None:
                _tracing.item(span)
            # Each item goes out now: the next one may be slow to come.
            self._flush()
        if await self._wait_credit(cid):
            conn.send_stream_done(cid)
            if span is not None:
                _tracing.end(span, _tracing.STREAM)
        elif span is not None:
            _tracing.end(span, _tracing.LOST)

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
            item = await loop.run_in_executor(self._executor, context.run, next_item, iterator)
            if item is STREAM_DONE:
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
