"""One-way events on gevent: ``Publisher``/``Subscriber`` and ``Pusher``/``Puller``.

pub = Publisher(); pub.bind("tcp://127.0.0.1:4243"); pub.tick(1, "a")
sub = Subscriber(Handlers()); sub.connect("tcp://127.0.0.1:4243"); sub.run()
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from typing import Any, Final, Self

import gevent
import gevent.event
import gevent.threadpool
import zmq

from .._codec import Frames
from .._errors import RPCError
from .._oneway import OneWayConnection, OneWayEvent
from .._pump import Pump
from .._service import Service
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE, report_disconnect
from .._sockets import bind as bind_socket
from .._sockets import connect as connect_socket
from .._trace import TraceContext, current_trace
from ._peer import HubHost, green_socket

# One-way sockets have no timers; the pump still wakes once per idle period.
_IDLE: Final = 60.0


class _Sender(Pump):
    """What Publisher and Pusher share: ``emit`` never blocks the caller."""

    _ROLE = "sender"

    def __init__(self, sock_type: int, context: zmq.Context[Any] | None) -> None:
        self._oneway = OneWayConnection(self._ROLE)
        super().__init__(
            green_socket(sock_type, context), self._oneway, max_message_size=None, idle_period=_IDLE
        )

    def __repr__(self) -> str:
        return f"<green.{type(self).__name__} queued={len(self._pending)} closed={self._closed}>"

    @property
    def queued(self) -> int:
        """Events the socket could not take yet (no peer, or a full high-water mark)."""
        return len(self._pending)

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        """Bind; returns the bound endpoints (``tcp://127.0.0.1:*`` picks a port)."""
        bound = bind_socket(self._sock, endpoint)
        self._start_pump(HubHost())
        return bound

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        connected = connect_socket(self._sock, endpoint)
        self._start_pump(HubHost())
        return connected

    def emit(self, method: str, *args: Any) -> None:
        """Send the event ``method(*args)``; returns at once (see the class docstring for
        what happens to events nobody can receive yet)."""
        if self._closed:
            raise RPCError(f"the {type(self).__name__} is closed")
        if not self._started:
            self._start_pump(HubHost())
        self._oneway.emit(method, args)
        self._flush()

    def close(self) -> None:
        """Close the socket; events not yet sent are dropped."""
        self._close_pump()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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


class Publisher(_Sender):
    """Publish events to every connected Subscriber (a PUB socket).

    ``pub.emit("tick", 1, "a")``, or ``pub.tick(1, "a")`` (names starting with ``_`` and
    this class's own method names are not events; use ``emit`` for those). Emitting never
    blocks. Like any ZeroMQ PUB socket, a publisher drops what no subscriber can receive
    now: events sent while nobody is subscribed, events sent before a new subscriber's
    subscription has arrived (the "slow joiner": allow it a moment after connecting), and
    events for a subscriber whose queue is full (1,000 events by default).
    """

    _ROLE = "publisher"

    def __init__(self, *, context: zmq.Context[Any] | None = None) -> None:
        super().__init__(zmq.PUB, context)


class Pusher(_Sender):
    """Push events to Pullers, each event to one of them (a PUSH socket, round robin).

    ``pusher.emit("add", 1, 2)``, or ``pusher.add(1, 2)``. Emitting never blocks: events
    that no puller can take yet (none connected, or their queues full) wait in memory, in
    order, and are sent as soon as one can; ``queued`` tells how many wait. ``close()``
    drops them.
    """

    _ROLE = "pusher"

    def __init__(self, *, context: zmq.Context[Any] | None = None) -> None:
        super().__init__(zmq.PUSH, context)


class _Receiver(Pump):
    """What Subscriber and Puller share: each event calls a method of ``obj``."""

    _ROLE = "receiver"

    def __init__(
        self,
        sock: Any,
        obj: object,
        *,
        threaded: bool,
        max_message_size: int | None,
    ) -> None:
        self.service = Service(obj)
        self._oneway = OneWayConnection(self._ROLE)
        super().__init__(sock, self._oneway, max_message_size=max_message_size, idle_period=_IDLE)
        self._max_message_size = max_message_size
        self._threads: gevent.threadpool.ThreadPool | None = (
            gevent.get_hub().threadpool if threaded else None
        )
        self._handlers: set[gevent.Greenlet] = set()
        self._stopped = gevent.event.Event()

    def __repr__(self) -> str:
        return (
            f"<green.{type(self).__name__} {self.service.name!r} handled={self.handled} "
            f"running={len(self._handlers)} closed={self._closed}>"
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

    def start(self) -> None:
        """Start receiving in the background (``run`` starts and waits)."""
        first = not self._started
        self._start_pump(HubHost())
        if first:
            self._watch_disconnects()

    def run(self) -> None:
        """Receive until ``stop()``."""
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        """Stop receiving; methods still running are killed."""
        handlers = list(self._handlers)
        self._handlers.clear()
        for handler in handlers:
            handler.kill(block=False)
        self._close_pump()
        self._stopped.set()

    close = stop

    # -- events --------------------------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._oneway.receive(frames)
        if event is None:
            return
        func = self._oneway.resolve(self.service.methods, event)
        if func is None:
            return
        handler = gevent.Greenlet(self._handle, event, func)
        self._handlers.add(handler)
        # Switch straight into the handler (we are in the hub), as servers do: a method
        # that does not wait has run before the next event is read, so events keep order.
        handler.switch()

    def _on_timer_event(self, event: Any) -> None:
        pass

    def _on_disconnect(self) -> None:
        report_disconnect(self._oneway.problems, self._max_message_size)

    def _handle(self, event: OneWayEvent, func: Callable[..., Any]) -> None:
        current_trace.set(TraceContext.from_header(event.header))
        error: Exception | None = None
        try:
            if self._threads is None:
                func(*event.args)
            else:
                context = contextvars.copy_context()
                self._threads.apply(context.run, (func, *event.args))
        except gevent.GreenletExit:
            return  # stop() killed us
        except Exception as exc:
            error = exc
        finally:
            self._handlers.discard(gevent.getcurrent())
        self._oneway.finished(event.method, error)


class Subscriber(_Receiver):
    """Receive published events (a SUB socket subscribed to everything) and call the
    method of ``obj`` named by each event with the event's args.

    Methods are exposed as on a Server. Each event runs in its own greenlet, with the
    event's trace context current; ``threaded=True`` runs methods in gevent's thread pool
    instead. Unknown methods and methods that raise are logged (once per kind) and counted
    in ``problems``; they never stop the subscriber. ``handled`` counts the events run.
    """

    _ROLE = "subscriber"

    def __init__(
        self,
        obj: object,
        *,
        threaded: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        sock = green_socket(zmq.SUB, context)
        # Every payload starts with the same header bytes: topics cannot filter (spec 12).
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        super().__init__(sock, obj, threaded=threaded, max_message_size=max_message_size)


class Puller(_Receiver):
    """Receive pushed events (a PULL socket) and call the method of ``obj`` named by each
    event with the event's args; otherwise like ``Subscriber``."""

    _ROLE = "puller"

    def __init__(
        self,
        obj: object,
        *,
        threaded: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        super().__init__(
            green_socket(zmq.PULL, context),
            obj,
            threaded=threaded,
            max_message_size=max_message_size,
        )
