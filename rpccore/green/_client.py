"""The gevent client: ``Client(endpoint).call("add", 1, 2)`` or ``client.add(1, 2)``."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from time import monotonic
from typing import Any, Final

import gevent
import gevent.event
import zmq
from gevent import get_hub, getcurrent
from gevent.hub import Waiter

from .. import _describe
from .._client import DEFAULT_TIMEOUT, DEFAULT_WINDOW, ClientConnection
from .._codec import Frames, MessageId
from .._errors import RemoteError, RPCError
from .._events import CallFailed, Reply, StreamEnd, StreamItem
from .._heartbeat import DEFAULT_HEARTBEAT
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from .._sockets import bind as bind_socket
from .._sockets import connect as connect_socket
from .._trace import outgoing_trace_header
from ._peer import GreenPeer


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()


class _Pending:
    """What the hub has delivered to one call so far, and who waits for more."""

    __slots__ = ("done", "error", "future", "items", "stream", "value", "waiter")

    def __init__(self) -> None:
        self.waiter: Waiter | None = None
        self.future: gevent.event.AsyncResult | None = None
        self.items: deque[Any] = deque()
        self.stream = False
        self.done = False
        self.value: Any = None
        self.error: RPCError | None = None

    def wait(self) -> None:
        while not self.items and not self.done:
            waiter = self.waiter = Waiter()
            try:
                waiter.get()
            finally:
                self.waiter = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is None:
            return
        self.waiter = None
        hub = get_hub()
        if getcurrent() is hub:
            waiter.switch(None)  # straight to the caller: no extra trip through the loop
        else:
            hub.loop.run_callback(waiter.switch, None)


class Stream(Iterator[Any]):
    """The items of a stream reply, as they arrive. Credit is granted as you iterate, so a
    slow consumer slows the server down instead of filling memory. ``close()`` (or leaving
    a ``with`` block) abandons the rest of the stream."""

    def __init__(self, client: Client, cid: MessageId, pending: _Pending) -> None:
        self._client, self._cid, self._pending = client, cid, pending
        self._first = True

    def __repr__(self) -> str:
        return f"<green.Stream buffered={len(self._pending.items)} done={self._pending.done}>"

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        pending = self._pending
        if self._first:
            self._first = False
        elif not pending.done:
            self._client._request_next(self._cid)
        pending.wait()
        if pending.items:
            return pending.items.popleft()
        if pending.error is not None:
            raise pending.error
        raise StopIteration

    def close(self) -> None:
        pending = self._pending
        pending.items.clear()  # abandoning means no more items, buffered ones included
        pending.error = None
        if not pending.done:
            pending.done = True
            self._client._abandon(self._cid)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._pending.done:
            self.close()


class Client(GreenPeer):
    """A ZeroRPC client on gevent (one DEALER socket; connect it to one server).

    ``call(method, *args)`` blocks the calling greenlet and returns the result, or a
    ``Stream`` iterator when the method streams. ``timeout`` bounds the wait for the first
    reply; ``async_=True`` returns a greenlet to ``get()`` later instead. Attribute access
    is sugar: ``client.add(1, 2)`` is ``client.call("add", 1, 2)`` (names starting with
    ``_`` are never remote calls; a method the server lacks raises ``MethodNotFound``).
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
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self._client = ClientConnection(
            heartbeat=heartbeat, passive_heartbeat=passive_heartbeat, window=window
        )
        super().__init__(
            zmq.DEALER,
            self._client,
            context=context,
            max_message_size=max_message_size,
            idle_period=heartbeat or 1.0,
        )
        self.timeout = timeout
        self._heartbeat = heartbeat
        self._calls: dict[MessageId, _Pending] = {}
        if endpoint is not None:
            self.connect(endpoint)

    def __repr__(self) -> str:
        return f"<green.Client {self._client!r}>"

    @property
    def open_channels(self) -> int:
        return self._client.open_channels

    @property
    def problems(self) -> dict[str, int]:
        return dict(self._client.problems.counts)

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        connected = connect_socket(self._sock, endpoint)
        self._start()
        return connected

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        bound = bind_socket(self._sock, endpoint)
        self._start()
        return bound

    def close(self) -> None:
        calls, self._calls = self._calls, {}
        self._close_socket()
        for pending in calls.values():
            pending.error = RPCError("the client was closed")
            pending.done = True
            self._resolve_future(pending)
            pending.wake()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def remote_method(*args: Any, **options: Any) -> Any:
            return self.call(name, *args, **options)

        remote_method.__name__ = name
        return remote_method

    # -- calls ---------------------------------------------------------------------

    def call(
        self,
        method: str,
        *args: Any,
        timeout: float | _Default | None = DEFAULT,
        async_: bool = False,
    ) -> Any:
        if self._closed:
            raise RPCError("the client is closed")
        limit = self.timeout if isinstance(timeout, _Default) else timeout
        now = monotonic()
        cid = self._client.start_call(
            method, args, now=now, timeout=limit, header=outgoing_trace_header()
        )
        pending = self._calls[cid] = _Pending()
        self._flush()
        first = min(x for x in (limit, self._heartbeat, 3600.0) if x is not None)
        self._wake_timer_by(now + first)
        if async_:
            pending.future = gevent.event.AsyncResult()
            return pending.future
        try:
            pending.wait()
        except BaseException:
            self._abandon(cid)
            raise
        if pending.stream:
            return Stream(self, cid, pending)
        if pending.error is not None:
            raise pending.error
        return pending.value

    def stream(self, method: str, *args: Any, timeout: float | _Default | None = DEFAULT) -> Stream:
        """Call a stream method; raises TypeError if the method answered a plain value."""
        result = self.call(method, *args, timeout=timeout)
        if not isinstance(result, Stream):
            raise TypeError(f"{method} answered a value, not a stream")
        return result

    def describe(self) -> dict[str, Any]:
        """Describe the remote service: ``_zerorpc_inspect``, else the 0.6.3 fallback."""
        try:
            return _describe.from_inspect(self.call("_zerorpc_inspect"))
        except (RemoteError, ValueError):
            name = self.call("_zerorpc_name")
            docs = {m: self.call("_zerorpc_help", m) for m in self.call("_zerorpc_list")}
            return _describe.from_fallback(name, docs)

    # -- plumbing ------------------------------------------------------------------

    def _request_next(self, cid: MessageId) -> None:
        self._client.request_next(cid)
        self._flush()

    def _abandon(self, cid: MessageId) -> None:
        self._calls.pop(cid, None)
        self._client.cancel(cid)

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._client.receive(frames, now)
        if event is not None:
            self._deliver(event)

    def _on_timer_event(self, event: Any) -> None:
        self._deliver(event)

    def _deliver(self, event: Reply | StreamItem | StreamEnd | CallFailed) -> None:
        cid = event.channel
        pending = self._calls.get(cid)
        if pending is None:
            return
        kind = type(event)
        if kind is StreamItem:
            pending.stream = True
            pending.items.append(event.item)  # type: ignore[union-attr]
        else:
            del self._calls[cid]
            pending.done = True
            if kind is Reply:
                pending.value = event.value  # type: ignore[union-attr]
            elif kind is StreamEnd:
                pending.stream = True
            else:
                pending.error = event.error  # type: ignore[union-attr]
        if pending.future is not None:
            self._resolve_future(pending, cid)
        pending.wake()  # last: it may switch to the caller

    def _resolve_future(self, pending: _Pending, cid: MessageId = b"") -> None:
        future = pending.future
        if future is None or future.ready():
            return
        if pending.stream:
            future.set(Stream(self, cid, pending))
        elif pending.error is not None:
            future.set_exception(pending.error)
        else:
            future.set(pending.value)
