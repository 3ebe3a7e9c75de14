"""One-way events on asyncio: ``Publisher``/``Subscriber`` and ``Pusher``/``Puller``.

pub = Publisher(); pub.bind("tcp://127.0.0.1:4243"); pub.tick(1, "a")  # inside the loop
sub = Subscriber(Handlers()); sub.connect("tcp://127.0.0.1:4243"); await sub.run()

Every class takes ``curve=``: CurveServerKeys on the side that is the CurveZMQ server
(usually the one that binds, sender or receiver), CurveClientKeys on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Self

import zmq
import zmq.asyncio

from .._curve import CurveKeys
from .._oneway import OneWayEvent
from .._oneway_pumps import ReceiverPump, SenderPump
from .._pump import Host
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from .._trace import TraceContext, current_trace
from ._peer import LoopHost, aio_socket, run_method


class _Sender(SenderPump):
    """What Publisher and Pusher share on asyncio: the first ``emit`` ties the sender to
    the running loop (call it on the loop's thread)."""

    _DRIVER = "aio"

    def __init__(
        self, sock_type: int, context: zmq.asyncio.Context | None, curve: CurveKeys | None
    ) -> None:
        super().__init__(aio_socket(sock_type, context), curve=curve)

    def _new_host(self) -> Host:
        return LoopHost(asyncio.get_running_loop())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Publisher(_Sender):
    """Publish events to every connected Subscriber (a PUB socket).

    ``pub.emit("tick", 1, "a")``, or ``pub.tick(1, "a")`` (names starting with ``_`` and
    this class's own method names are not events; use ``emit`` for those). Both are plain
    calls, not coroutines, and never block. Like any ZeroMQ PUB socket, a publisher drops
    what no subscriber can receive now: events sent while nobody is subscribed, events
    sent before a new subscriber's subscription has arrived (the "slow joiner": allow it a
    moment after connecting), and events for a subscriber whose queue is full (1,000
    events by default).
    """

    _ROLE = "publisher"

    def __init__(
        self, *, context: zmq.asyncio.Context | None = None, curve: CurveKeys | None = None
    ) -> None:
        super().__init__(zmq.PUB, context, curve)


class Pusher(_Sender):
    """Push events to Pullers, each event to one of them (a PUSH socket, round robin).

    ``pusher.emit("add", 1, 2)``, or ``pusher.add(1, 2)``: plain calls that never block.
    Events that no puller can take yet (none connected, or their queues full) wait in
    memory, in order, and are sent as soon as one can; ``queued`` tells how many wait.
    ``close()`` drops them.
    """

    _ROLE = "pusher"

    def __init__(
        self, *, context: zmq.asyncio.Context | None = None, curve: CurveKeys | None = None
    ) -> None:
        super().__init__(zmq.PUSH, context, curve)


class _Receiver(ReceiverPump["asyncio.Task[None]"]):
    """What Subscriber and Puller share on asyncio."""

    _DRIVER = "aio"

    def __init__(
        self,
        sock: Any,
        obj: object,
        *,
        executor: Executor | None,
        max_message_size: int | None,
        curve: CurveKeys | None,
    ) -> None:
        super().__init__(sock, obj, max_message_size=max_message_size, curve=curve)
        self._executor = executor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> None:
        """Start receiving on the running loop, in the background."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._start_pump(LoopHost(self._loop), watch_disconnects=True)

    async def run(self) -> None:
        """Receive until ``stop()``."""
        self.start()
        if self._stopped is None:
            self._stopped = asyncio.Event()
        await self._stopped.wait()

    def stop(self) -> None:
        """Stop receiving; methods still running as tasks are cancelled (those already in
        the executor finish on their own)."""
        self._stop_receiving()
        if self._stopped is not None:
            self._stopped.set()

    close = stop

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def _start_handler(self, event: OneWayEvent, func: Callable[..., Any]) -> None:
        assert self._loop is not None
        handler = self._loop.create_task(self._handle(event, func))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    def _cancel_handler(self, handler: asyncio.Task[None]) -> None:
        handler.cancel()

    async def _handle(self, event: OneWayEvent, func: Callable[..., Any]) -> None:
        current_trace.set(TraceContext.from_header(event.header))
        error: Exception | None = None
        try:
            await run_method(func, event.args, self._executor)
        except Exception as exc:
            error = exc
        self._oneway.finished(event.method, error)


class Subscriber(_Receiver):
    """Receive published events (a SUB socket subscribed to everything) and call the
    method of ``obj`` named by each event with the event's args.

    Methods are exposed as on a Server. Coroutine methods run as tasks on the loop; plain
    methods run in a thread pool (``executor``, default: the loop's), so a method that
    blocks never stops the loop. The event's trace context is current while a method
    runs. Unknown methods and methods that raise are logged (once per kind) and counted in
    ``problems``; they never stop the subscriber. ``handled`` counts the events run.
    """

    _ROLE = "subscriber"

    def __init__(
        self,
        obj: object,
        *,
        executor: Executor | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        sock = aio_socket(zmq.SUB, context)
        # Every payload starts with the same header bytes: topics cannot filter (spec 12).
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        super().__init__(
            sock, obj, executor=executor, max_message_size=max_message_size, curve=curve
        )


class Puller(_Receiver):
    """Receive pushed events (a PULL socket) and call the method of ``obj`` named by each
    event with the event's args; otherwise like ``Subscriber``."""

    _ROLE = "puller"

    def __init__(
        self,
        obj: object,
        *,
        executor: Executor | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        super().__init__(
            aio_socket(zmq.PULL, context),
            obj,
            executor=executor,
            max_message_size=max_message_size,
            curve=curve,
        )
