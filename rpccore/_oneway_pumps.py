"""The one-way logic both drivers share: senders that never block, receivers that run a
method per event. A driver adds its host (event loop) and how a handler runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, TypeVar

import zmq

from ._codec import Frames
from ._curve import CurveClientKeys, CurveKeys, CurveServerKeys
from ._errors import RPCError
from ._oneway import OneWayConnection, OneWayEvent
from ._pump import Host, Pump
from ._service import Service
from ._sockets import bind as bind_socket
from ._sockets import connect as connect_socket
from ._sockets import report_disconnect

# One-way sockets have no timers; the pump still wakes once per idle period.
_IDLE: Final = 60.0

H = TypeVar("H")


class SenderPump(Pump):
    """What every Publisher and Pusher shares: ``emit`` never blocks (nor awaits)."""

    _ROLE = "sender"
    _DRIVER = "rpccore"

    def __init__(self, sock: Any, *, curve: CurveKeys | None = None) -> None:
        if sock.getsockopt(zmq.TYPE) == zmq.PUSH:
            # Queue events only for pullers that really connected: otherwise ZeroMQ takes
            # them into the pipe of a connection that may never complete, and they are
            # neither delivered nor counted in ``queued``.
            sock.setsockopt(zmq.IMMEDIATE, 1)
        self._oneway = OneWayConnection(self._ROLE)
        super().__init__(sock, self._oneway, max_message_size=None, idle_period=_IDLE)
        # Either kind of keys: the CURVE server is usually the side that binds, sender or
        # receiver, and the keys' type says which one this is.
        self._secure(curve, self._oneway.problems, CurveServerKeys, CurveClientKeys)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{self._DRIVER}.{name} queued={len(self._pending)} closed={self._closed}>"

    def _new_host(self) -> Host:
        """The event loop to send on (called at the first ``emit``)."""
        raise NotImplementedError

    @property
    def queued(self) -> int:
        """Events the socket could not take yet (no peer, or a full high-water mark)."""
        return len(self._pending)

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        """Bind; returns the bound endpoints (``tcp://127.0.0.1:*`` picks a port)."""
        return bind_socket(self._sock, endpoint)

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        return connect_socket(self._sock, endpoint)

    def emit(self, method: str, *args: Any) -> None:
        """Send the event ``method(*args)``; returns at once (see the class docstring for
        what happens to events nobody can receive yet)."""
        if self._closed:
            raise RPCError(f"the {type(self).__name__} is closed")
        if not self._started:
            self._start_pump(self._new_host())
        self._oneway.emit(method, args)
        self._flush()

    def close(self) -> None:
        """Close the socket; events not yet sent are dropped."""
        self._close_pump()

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)

        def event(*args: Any) -> None:
            self.emit(name, *args)

        event.__name__ = name
        return event

    def _on_message(self, frames: Frames, now: float) -> None:
        pass  # PUB and PUSH sockets receive nothing

    def _on_timer_event(self, event: Any) -> None:
        pass


class ReceiverPump(Pump, Generic[H]):
    """What every Subscriber and Puller shares: each event calls a method of ``obj``;
    ``H`` is the driver's handler type."""

    _ROLE = "receiver"
    _DRIVER = "rpccore"

    def __init__(
        self,
        sock: Any,
        obj: object,
        *,
        max_message_size: int | None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.service = Service(obj)
        self._oneway = OneWayConnection(self._ROLE)
        super().__init__(sock, self._oneway, max_message_size=max_message_size, idle_period=_IDLE)
        # Either kind of keys: the CURVE server is usually the side that binds, sender or
        # receiver, and the keys' type says which one this is.
        self._secure(curve, self._oneway.problems, CurveServerKeys, CurveClientKeys)
        self._max_message_size = max_message_size
        self._handlers: set[H] = set()

    def __repr__(self) -> str:
        return (
            f"<{self._DRIVER}.{type(self).__name__} {self.service.name!r} "
            f"handled={self.handled} running={len(self._handlers)} closed={self._closed}>"
        )

    @property
    def handled(self) -> int:
        """Events whose method has run (returned or raised)."""
        return self._oneway.handled

    @property
    def problems(self) -> dict[str, int]:
        """Counts of dropped events and failed methods, by kind."""
        return dict(self._oneway.problems.counts)

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        """Bind; returns the bound endpoints (``tcp://127.0.0.1:*`` picks a port)."""
        return bind_socket(self._sock, endpoint)

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        return connect_socket(self._sock, endpoint)

    # -- what drivers implement ----------------------------------------------------

    def _start_handler(self, event: OneWayEvent, func: Callable[..., Any]) -> None:
        """Run ``func`` for ``event``; keep the handler in ``_handlers`` while it runs."""
        raise NotImplementedError

    def _cancel_handler(self, handler: H) -> None:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------

    def _stop_receiving(self) -> None:
        handlers = list(self._handlers)
        self._handlers.clear()
        for handler in handlers:
            self._cancel_handler(handler)
        self._close_pump()

    # -- events --------------------------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._oneway.receive(frames)
        if event is None:
            return
        func = self._oneway.resolve(self.service.methods, event)
        if func is not None:
            self._start_handler(event, func)

    def _on_timer_event(self, event: Any) -> None:
        pass

    def _on_disconnect(self) -> None:
        report_disconnect(self._oneway.problems, self._max_message_size)
