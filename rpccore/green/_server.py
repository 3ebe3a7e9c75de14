"""The gevent server: ``Server(obj).bind(endpoint)``, then ``run()``."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
import gevent.threadpool
import zmq

from .._codec import Frames
from .._dispatch import resolve
from .._errors import LostRemote
from .._events import ChannelLost, CreditGranted, Request, ServerChannelId
from .._heartbeat import DEFAULT_HEARTBEAT
from .._server import ServerConnection
from .._service import Service
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE, report_disconnect
from .._sockets import bind as bind_socket
from .._sockets import connect as connect_socket
from .._trace import TraceContext, current_trace
from ._peer import GreenPeer

logger = logging.getLogger("rpccore.green")


class Server(GreenPeer):
    """Serve the public methods of ``obj`` over a ROUTER socket.

    Each request runs in its own greenlet, so methods that wait cooperatively (gevent
    sockets, ``gevent.sleep``, other RPC calls) serve many calls at once. A method that
    blocks the CPU or makes blocking calls gevent cannot see would also stop the
    heartbeats; with ``threaded=True`` methods run in gevent's thread pool instead, and the
    hub keeps heartbeating while they work (CPU-bound Python code still shares the GIL,
    which switches every few milliseconds, plenty for a heartbeat every few seconds).
    """

    def __init__(
        self,
        obj: object,
        *,
        name: str | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        threaded: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.Context[Any] | None = None,
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
        self._threads: gevent.threadpool.ThreadPool | None = (
            gevent.get_hub().threadpool if threaded else None
        )
        self._handlers: dict[ServerChannelId, gevent.Greenlet] = {}
        self._credit: dict[ServerChannelId, gevent.event.Event] = {}
        self._max_message_size = max_message_size
        self._stopped = gevent.event.Event()

    def __repr__(self) -> str:
        return f"<green.Server {self.service.name!r} {self._server!r}>"

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
        """Start serving in the background (``run`` starts and waits)."""
        self._start()

    def run(self) -> None:
        """Serve until ``stop()``."""
        self._start()
        self._stopped.wait()

    def stop(self) -> None:
        for handler in list(self._handlers.values()):
            handler.kill(block=False)
        self._handlers.clear()
        self._close_socket()
        self._stopped.set()

    close = stop

    # -- events --------------------------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._server.receive(frames, now)
        if event is None:
            return
        if type(event) is Request:
            func = resolve(self._server, self.service, event.channel, event.method)
            if func is not None:
                handler = gevent.Greenlet(self._serve, event, func)
                self._handlers[event.channel] = handler
                # Switch straight into the handler (we are in the hub): a method that
                # returns at once has replied before the next message is read.
                handler.switch()
        elif type(event) is CreditGranted:
            waiter = self._credit.get(event.channel)
            if waiter is not None:
                waiter.set()

    def _on_disconnect(self) -> None:
        report_disconnect(self._server.problems, self._max_message_size)

    def _on_timer_event(self, event: Any) -> None:
        if type(event) is ChannelLost:
            handler = self._handlers.pop(event.channel, None)
            if handler is not None:
                handler.kill(
                    LostRemote("Lost remote: the client stopped heartbeating"), block=False
                )
            waiter = self._credit.pop(event.channel, None)
            if waiter is not None:
                waiter.set()

    # -- running a method ----------------------------------------------------------

    def _serve(self, request: Request, func: Callable[..., Any]) -> None:
        cid, conn = request.channel, self._server
        current_trace.set(TraceContext.from_header(request.header))
        try:
            result = self._call(func, request.args)
            if self.service.is_stream(request.method):
                self._stream(cid, result)
            else:
                conn.send_reply(cid, result)
        except gevent.GreenletExit:
            conn.close(cid)
        except Exception as exc:
            # A stream may fail after using up its credit: the ERR waits for credit too.
            if self._wait_credit(cid):
                conn.send_exception(cid, exc)
        finally:
            self._handlers.pop(cid, None)
            self._credit.pop(cid, None)
            if not self._closed:
                self._flush()

    def _call(self, func: Callable[..., Any], args: list[Any]) -> Any:
        if self._threads is None:
            return func(*args)
        context = contextvars.copy_context()
        return self._threads.apply(context.run, (func, *args))

    def _stream(self, cid: ServerChannelId, result: Any) -> None:
        conn = self._server
        iterator = iter(result)
        advance: Callable[[], Any] = iterator.__next__
        if self._threads is not None:
            pool, context = self._threads, contextvars.copy_context()

            def advance() -> Any:
                return pool.apply(context.run, (iterator.__next__,))

        sent = 0
        while True:
            try:
                item = advance()
            except StopIteration:
                break
            if not self._wait_credit(cid) or not conn.send_stream_item(cid, item):
                return
            sent += 1
            if sent % 32 == 0:
                self._flush()
        if self._wait_credit(cid):
            conn.send_stream_done(cid)

    def _wait_credit(self, cid: ServerChannelId) -> bool:
        """Wait until the channel may send; False if it closed (the client is gone)."""
        conn = self._server
        while not conn.can_send(cid):
            if not conn.is_open(cid):
                return False
            self._flush()
            waiter = self._credit.get(cid)
            if waiter is None:
                waiter = self._credit[cid] = gevent.event.Event()
            waiter.clear()
            if not conn.can_send(cid):
                waiter.wait()
        return True
