"""The gevent server: ``Server(obj).bind(endpoint)``, then ``run()``."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent
import gevent.event
import gevent.threadpool
import zmq

from .. import _tracing
from .._curve import CurveServerKeys
from .._errors import LostRemote
from .._events import Request, ServerChannelId
from .._heartbeat import DEFAULT_HEARTBEAT
from .._pump import REPLY_HOLD
from .._serving import STREAM_DONE, ServerPump, next_item
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from .._trace import TraceContext, current_trace
from ._peer import HubHost, green_socket, run_method


class Server(ServerPump[gevent.Greenlet]):
    """Serve the public methods of ``obj`` over a ROUTER socket.

    Each request runs in its own greenlet, so methods that wait cooperatively (gevent
    sockets, ``gevent.sleep``, other RPC calls) serve many calls at once. A method that
    blocks the CPU or makes blocking calls gevent cannot see would also stop the
    heartbeats; with ``threaded=True`` methods run in gevent's thread pool instead, and the
    hub keeps heartbeating while they work (CPU-bound Python code still shares the GIL,
    which switches every few milliseconds, plenty for a heartbeat every few seconds).

    ``curve`` makes the server a CurveZMQ server (encrypted, and with
    ``authorized_clients`` only listed clients admitted; see ``rpccore.CurveServerKeys``).
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
        curve: CurveServerKeys | None = None,
    ) -> None:
        super().__init__(
            green_socket(zmq.ROUTER, context),
            obj,
            name=name,
            heartbeat=heartbeat,
            max_message_size=max_message_size,
            curve=curve,
        )
        self._threads: gevent.threadpool.ThreadPool | None = (
            gevent.get_hub().threadpool if threaded else None
        )
        self._credit: dict[ServerChannelId, gevent.event.Event] = {}
        self._stopped = gevent.event.Event()
        # Seconds each method's last handler in a batch kept the hub before it returned
        # or waited (see _start_handler): an entry per method, so bounded by the service.
        self._hub_time: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<green.Server {self.service.name!r} {self._server!r}>"

    def start(self) -> None:
        """Start serving in the background (``run`` starts and waits)."""
        self._start_pump(HubHost(), watch_disconnects=True)

    def run(self) -> None:
        """Serve until ``stop()``."""
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        self._stop_serving()
        self._stopped.set()

    close = stop

    # -- handlers ------------------------------------------------------------------

    def _start_handler(self, request: Request, func: Callable[..., Any]) -> None:
        handler = gevent.Greenlet(self._serve, request, func)
        self._handlers[request.channel] = handler
        # Switch straight into the handler (we are in the hub): a method that returns at
        # once has replied before the next message is read. The switch comes back when
        # the handler returns or first waits.
        if not (self._held or self._more):  # a lone request: no reply can wait for it
            handler.switch()
            return
        # In a batch, replies are held (_flush_reply) while this handler keeps the hub:
        # they leave first if the method's last run in a batch kept it REPLY_HOLD or longer
        # (a synchronous slow method). Only a method's first slow run (or a slow one after
        # quick ones) still holds them.
        method, hub_time = request.method, self._hub_time
        started = monotonic()
        self._release_held(started, hub_time.get(method, 0.0) >= REPLY_HOLD)
        handler.switch()
        hub_time[method] = monotonic() - started

    def _cancel_handler(self, handler: gevent.Greenlet, *, lost: bool) -> None:
        if lost:
            handler.kill(LostRemote("the client stopped heartbeating"), block=False)
        else:
            handler.kill(block=False)

    def _credit_granted(self, cid: ServerChannelId) -> None:
        waiter = self._credit.get(cid)
        if waiter is not None:
            waiter.set()

    # -- running a method ----------------------------------------------------------

    def _serve(self, request: Request, func: Callable[..., Any]) -> None:
        cid, conn = request.channel, self._server
        if _tracing.ON:
            trace, span = _tracing.server_start(request.header, self.service.name, request.method)
        else:
            trace, span = TraceContext.from_header(request.header), None
        current_trace.set(trace)
        try:
            result = run_method(func, request.args, self._threads)
            if self.service.is_stream(request.method):
                self._stream(cid, result, span)
            else:
                conn.send_reply(cid, result)
                if span is not None:
                    _tracing.end(span, _tracing.OK)
        except gevent.GreenletExit:
            if span is not None:  # the channel is still open when the server stops
                _tracing.end(span, _tracing.ABANDONED if conn.is_open(cid) else _tracing.LOST)
            conn.close(cid)
        except Exception as exc:
            # A stream may fail after using up its credit: the ERR waits for credit too.
            if self._wait_credit(cid):
                conn.send_exception(cid, exc)
                if span is not None:
                    _tracing.end(span, _tracing.ERROR, exc)
            elif span is not None:  # the client is gone (LostRemote killed us)
                _tracing.end(span, _tracing.LOST)
        finally:
            self._handlers.pop(cid, None)
            self._credit.pop(cid, None)
            if not self._closed:
                self._flush_reply()
            if span is not None:  # after the answer left (or was queued to leave with
                # the replies of the batch being read): the record never delays it
                _tracing.emit(span)

    def _stream(self, cid: ServerChannelId, result: Any, span: _tracing.Span | None) -> None:
        conn = self._server
        iterator = iter(result)

        def advance() -> Any:
            return next_item(iterator)

        if self._threads is not None:
            pool, context = self._threads, contextvars.copy_context()

            def advance() -> Any:
                return pool.apply(context.run, (next_item, iterator))

        while True:
            item = advance()
            if item is STREAM_DONE:
                break
            if not self._wait_credit(cid):
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
        if self._wait_credit(cid):
            conn.send_stream_done(cid)
            if span is not None:
                _tracing.end(span, _tracing.STREAM)
        elif span is not None:
            _tracing.end(span, _tracing.LOST)

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
