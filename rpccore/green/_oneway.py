"""One-way events on gevent: ``Publisher``/``Subscriber`` and ``Pusher``/``Puller``.

pub = Publisher(); pub.bind("tcp://127.0.0.1:4243"); pub.tick(1, "a")
sub = Subscriber(Handlers()); sub.connect("tcp://127.0.0.1:4243"); sub.run()

Every class takes ``curve=``: CurveServerKeys on the side that is the CurveZMQ server
(usually the one that binds, sender or receiver), CurveClientKeys on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import gevent
import gevent.event
import gevent.threadpool
import zmq

from .._curve import CurveKeys
from .._oneway import OneWayEvent
from .._oneway_pumps import ReceiverPump, SenderPump
from .._pump import Host
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from .._trace import TraceContext, current_trace
from ._peer import HubHost, green_socket, run_method


class _Sender(SenderPump):
    """What Publisher and Pusher share on gevent."""

    _DRIVER = "green"

    def __init__(
        self, sock_type: int, context: zmq.Context[Any] | None, curve: CurveKeys | None
    ) -> None:
        super().__init__(green_socket(sock_type, context), curve=curve)

    def _new_host(self) -> Host:
        return HubHost()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    def __init__(
        self, *, context: zmq.Context[Any] | None = None, curve: CurveKeys | None = None
    ) -> None:
        super().__init__(zmq.PUB, context, curve)


class Pusher(_Sender):
    """Push events to Pullers, each event to one of them (a PUSH socket, round robin).

    ``pusher.emit("add", 1, 2)``, or ``pusher.add(1, 2)``. Emitting never blocks: events
    that no puller can take yet (none connected, or their queues full) wait in memory, in
    order, and are sent as soon as one can; ``queued`` tells how many wait. ``close()``
    drops them.
    """

    _ROLE = "pusher"

    def __init__(
        self, *, context: zmq.Context[Any] | None = None, curve: CurveKeys | None = None
    ) -> None:
        super().__init__(zmq.PUSH, context, curve)


class _Receiver(ReceiverPump[gevent.Greenlet]):
    """What Subscriber and Puller share on gevent."""

    _DRIVER = "green"

    def __init__(
        self,
        sock: Any,
        obj: object,
        *,
        threaded: bool,
        max_message_size: int | None,
        curve: CurveKeys | None,
    ) -> None:
        super().__init__(sock, obj, max_message_size=max_message_size, curve=curve)
        self._threads: gevent.threadpool.ThreadPool | None = (
            gevent.get_hub().threadpool if threaded else None
        )
        self._stopped = gevent.event.Event()

    def start(self) -> None:
        """Start receiving in the background (``run`` starts and waits)."""
        self._start_pump(HubHost(), watch_disconnects=True)

    def run(self) -> None:
        """Receive until ``stop()``."""
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        """Stop receiving; methods still running are killed."""
        self._stop_receiving()
        self._stopped.set()

    close = stop

    def _start_handler(self, event: OneWayEvent, func: Callable[..., Any]) -> None:
        handler = gevent.Greenlet(self._handle, event, func)
        self._handlers.add(handler)
        # Switch straight into the handler (we are in the hub), as servers do: a method
        # that does not wait has run before the next event is read, so events keep order.
        handler.switch()

    def _cancel_handler(self, handler: gevent.Greenlet) -> None:
        handler.kill(block=False)

    def _handle(self, event: OneWayEvent, func: Callable[..., Any]) -> None:
        current_trace.set(TraceContext.from_header(event.header))
        error: Exception | None = None
        try:
            run_method(func, event.args, self._threads)
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
        curve: CurveKeys | None = None,
    ) -> None:
        sock = green_socket(zmq.SUB, context)
        # Every payload starts with the same header bytes: topics cannot filter (spec 12).
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        super().__init__(
            sock, obj, threaded=threaded, max_message_size=max_message_size, curve=curve
        )


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
        curve: CurveKeys | None = None,
    ) -> None:
        super().__init__(
            green_socket(zmq.PULL, context),
            obj,
            threaded=threaded,
            max_message_size=max_message_size,
            curve=curve,
        )
