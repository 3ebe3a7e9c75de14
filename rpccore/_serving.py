"""The server logic both drivers share: dispatching requests and tracking handlers.

A driver's Server subclasses ServerPump and adds how a handler runs (a greenlet or a
task), how it is cancelled, and how a handler waiting for stream credit is woken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final, Generic, TypeVar

from . import _tracing
from ._codec import Frames
from ._curve import CurveServerKeys
from ._dispatch import resolve
from ._errors import MethodNotFound
from ._events import ChannelLost, CreditGranted, Request, ServerChannelId
from ._heartbeat import DEFAULT_HEARTBEAT
from ._pump import Pump
from ._server import ServerConnection
from ._service import Service
from ._sockets import DEFAULT_MAX_MESSAGE_SIZE, report_disconnect
from ._sockets import bind as bind_socket
from ._sockets import connect as connect_socket

H = TypeVar("H")


STREAM_DONE: Final = object()  # what next_item returns at the end of a stream


def next_item(iterator: Iterator[Any]) -> Any:
    """The next item of a stream, or STREAM_DONE. Never raises StopIteration: run in a
    thread pool, that would travel through gevent's and asyncio's futures, which do not
    carry it well (gevent prints a traceback for it)."""
    return next(iterator, STREAM_DONE)


class ServerPump(Pump, Generic[H]):
    """One ROUTER socket serving ``obj``; ``H`` is the driver's handler type."""

    def __init__(
        self,
        sock: Any,
        obj: object,
        *,
        name: str | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        curve: CurveServerKeys | None = None,
    ) -> None:
        self.service = Service(obj, name)
        self._server = ServerConnection(heartbeat=heartbeat)
        super().__init__(
            sock, self._server, max_message_size=max_message_size, idle_period=heartbeat or 1.0
        )
        self._secure(curve, self._server.problems, CurveServerKeys)
        self._max_message_size = max_message_size
        self._handlers: dict[ServerChannelId, H] = {}
        _tracing.enable_from_environment()

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

    # -- what drivers implement ----------------------------------------------------

    def _start_handler(self, request: Request, func: Any) -> None:
        """Run ``func`` for ``request``; register the handler in ``_handlers`` first."""
        raise NotImplementedError

    def _cancel_handler(self, handler: H, *, lost: bool) -> None:
        """Stop a handler: its client was lost (``lost``), or the server is stopping."""
        raise NotImplementedError

    def _credit_granted(self, cid: ServerChannelId) -> None:
        """Wake the handler of ``cid`` if it waits for credit (or for its channel's end)."""
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------

    def _stop_serving(self) -> None:
        handlers = list(self._handlers.values())
        self._handlers.clear()
        for handler in handlers:
            self._cancel_handler(handler, lost=False)
        self._close_pump()

    # -- events --------------------------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._server.receive(frames, now)
        if type(event) is Request:
            func = resolve(self._server, self.service, event.channel, event.method)
            if func is not None:
                self._start_handler(event, func)
            elif _tracing.ON:
                _, span = _tracing.server_start(event.header, self.service.name, event.method)
                if span is not None:
                    _tracing.end(
                        span, _tracing.ERROR, MethodNotFound("NameError", event.method, None)
                    )
                    _tracing.emit(span)
        elif type(event) is CreditGranted:
            self._credit_granted(event.channel)

    def _on_timer_event(self, event: Any) -> None:
        if type(event) is ChannelLost:
            handler = self._handlers.pop(event.channel, None)
            if handler is not None:
                self._cancel_handler(handler, lost=True)
            self._credit_granted(event.channel)

    def _on_disconnect(self) -> None:
        report_disconnect(self._server.problems, self._max_message_size)
