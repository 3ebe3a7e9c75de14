"""The client logic both drivers share: starting calls and delivering what comes back.

A driver's Client subclasses ClientPump and adds only how a caller waits: a ``Pending``
subclass with ``wait``/``wake`` (a gevent Waiter, or an asyncio future), and its own
blocking or async ``call``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from time import monotonic
from typing import Any, Final, Generic, TypeVar

from . import _tracing
from ._client import DEFAULT_TIMEOUT, DEFAULT_WINDOW, ClientConnection
from ._codec import Frames, MessageId
from ._curve import CurveClientKeys
from ._errors import RPCError
from ._events import CallFailed, ClientEvent, Reply, StreamEnd, StreamItem
from ._heartbeat import DEFAULT_HEARTBEAT
from ._pump import Pump
from ._sockets import DEFAULT_MAX_MESSAGE_SIZE
from ._sockets import bind as bind_socket
from ._sockets import connect as connect_socket
from ._trace import outgoing_trace_header


class UseDefault:
    """The type of DEFAULT: "use the client's setting" for a per-call option."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = UseDefault()


class Pending:
    """What has arrived for one call so far. Drivers add ``wake`` (and a way to wait)."""

    __slots__ = ("done", "error", "items", "stream", "value")

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.stream = False
        self.done = False
        self.value: Any = None
        self.error: RPCError | None = None

    def wake(self) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        """No more items, buffered ones included."""
        self.items.clear()
        self.error = None
        self.done = True


P = TypeVar("P", bound=Pending)


class StreamCursor:
    """What both drivers' streams share. Credit is granted each time the application asks
    for another item (never ahead of it), so a slow consumer slows the server down instead
    of filling memory; ``close()`` abandons the rest of the stream."""

    _DRIVER = "rpccore"

    def __init__(self, client: ClientPump[Any], cid: MessageId, pending: Pending) -> None:
        self._client, self._cid, self._pending = client, cid, pending
        self._first = True  # the first item arrived with the reply: no credit to ask for

    def __repr__(self) -> str:
        pending = self._pending
        return (
            f"<{self._DRIVER}.{type(self).__name__} buffered={len(pending.items)} "
            f"done={pending.done}>"
        )

    def _ask_for_next(self) -> None:
        if self._first:
            self._first = False
        elif not self._pending.done:
            self._client._request_next(self._cid)

    def _take(self) -> tuple[bool, Any]:
        """(True, item) when an item is buffered; (False, None) at the end of the stream;
        raises the stream's error."""
        pending = self._pending
        if pending.items:
            return True, pending.items.popleft()
        if pending.error is not None:
            raise pending.error
        return False, None

    def close(self) -> None:
        if not self._pending.done:
            self._client._abandon(self._cid)
        self._pending.abandon()

    def __del__(self) -> None:
        if not self._pending.done:
            self.close()


class ClientPump(Pump, Generic[P]):
    """One DEALER socket and its calls."""

    # Send a new call at once, or after the running callback (asyncio: calls begun by many
    # tasks in one loop turn then wake ZeroMQ's I/O thread once; measured on the gateway).
    _defer_flush = False

    def __init__(
        self,
        sock: Any,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        passive_heartbeat: bool = False,
        window: int = DEFAULT_WINDOW,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self._client = ClientConnection(
            heartbeat=heartbeat, passive_heartbeat=passive_heartbeat, window=window
        )
        super().__init__(
            sock, self._client, max_message_size=max_message_size, idle_period=heartbeat or 1.0
        )
        self._secure(curve, self._client.problems, CurveClientKeys)
        self.timeout = timeout
        self._heartbeat = heartbeat
        self._calls: dict[MessageId, P] = {}
        # Trace records: the spans of calls begun while tracing was on (empty when off).
        self._spans: dict[MessageId, _tracing.Span] = {}
        self._endpoints: list[str] = []
        self._endpoint_names = ""  # the endpoints, as trace records name an unnamed remote
        # The remote service's name, for trace records (describe() sets it; the gateway
        # may too); until then records name the endpoint.
        self.remote_name: str | None = None
        _tracing.enable_from_environment()

    @property
    def open_channels(self) -> int:
        return self._client.open_channels

    @property
    def problems(self) -> dict[str, int]:
        return dict(self._client.problems.counts)

    @property
    def curve_failure(self) -> str | None:
        """Why the CurveZMQ handshake with the server failed, when the last one did; None
        once one succeeds, and always without keys."""
        return None if self._curve is None else self._curve.failure

    def _connect(self, endpoint: str | Iterable[str]) -> list[str]:
        return self._linked(connect_socket(self._sock, endpoint))

    def _bind(self, endpoint: str | Iterable[str]) -> list[str]:
        return self._linked(bind_socket(self._sock, endpoint))

    def _linked(self, endpoints: list[str]) -> list[str]:
        self._endpoints += endpoints
        self._endpoint_names = ",".join(self._endpoints)  # joined once, not per traced call
        return endpoints

    def _fail_all(self, message: str) -> list[P]:
        """Close the socket; every call still waiting fails with RPCError(message)."""
        calls, self._calls = self._calls, {}
        self._close_pump()
        for cid, pending in calls.items():
            self._client.cancel(cid)  # the protocol state forgets them too
            pending.error = RPCError(message)
            pending.done = True
        if self._spans:
            spans, self._spans = self._spans, {}
            for span in spans.values():
                _tracing.finish(span, _tracing.ABANDONED)
        return list(calls.values())

    def _begin(
        self,
        method: str,
        args: Sequence[Any],
        timeout: float | UseDefault | None,
        pending: P,
        metadata: Mapping[str, Any] | None = None,
    ) -> MessageId:
        """Send a request; the reply will be delivered to ``pending``. ``metadata``: header
        keys for this call alone, after the context's (``call_metadata``)."""
        if self._closed:
            raise RPCError("the client is closed")
        limit = self.timeout if isinstance(timeout, UseDefault) else timeout
        now = monotonic()
        if _tracing.ON:
            header, span = _tracing.client_begin(method, self.remote_name or self._endpoint_names)
        else:
            header, span = outgoing_trace_header(), None
        cid = self._client.start_call(
            method, args, now=now, timeout=limit, header=header, metadata=metadata
        )
        if span is not None:
            self._spans[cid] = span
        self._calls[cid] = pending
        if self._defer_flush:
            self._flush_soon()
        else:
            self._flush()
        # The call's first deadline: its heartbeat tick, or its timeout if that is sooner.
        first = self._heartbeat or 3600.0
        if limit is not None and limit < first:
            first = limit
        self._wake_timer_by(now + first)
        return cid

    def _learn_name(self, description: dict[str, Any]) -> None:
        """Name trace records after the service ``describe()`` found, unless named."""
        name = description.get("name")
        if self.remote_name is None and isinstance(name, str) and name:
            self.remote_name = name

    def _request_next(self, cid: MessageId) -> None:
        self._client.request_next(cid)
        self._flush()

    def _abandon(self, cid: MessageId) -> None:
        self._calls.pop(cid, None)
        self._client.cancel(cid)
        if self._spans:
            span = self._spans.pop(cid, None)
            if span is not None:
                _tracing.finish(span, _tracing.ABANDONED)

    def _on_message(self, frames: Frames, now: float) -> None:
        event = self._client.receive(frames, now)
        if event is not None:
            self._deliver(event)

    def _on_timer_event(self, event: Any) -> None:
        self._deliver(event)

    def _deliver(self, event: ClientEvent) -> None:
        cid = event.channel
        pending = self._calls.get(cid)
        if pending is None:
            return
        if type(event) is StreamItem:
            pending.stream = True
            pending.items.append(event.item)
            if self._spans:
                item_span = self._spans.get(cid)
                if item_span is not None:
                    _tracing.item(item_span)
            self._delivered(cid, pending)
            return
        del self._calls[cid]
        pending.done = True
        if type(event) is Reply:
            pending.value = event.value
        elif type(event) is StreamEnd:
            pending.stream = True
        elif type(event) is CallFailed:
            curve = self._curve
            pending.error = event.error if curve is None else curve.explain(event.error)
        # Ended before the caller is woken (a caller that goes on to end its own span, or
        # to close the client, comes after), shipped after: the record never delays a reply.
        span = self._spans.pop(cid, None) if self._spans else None
        if span is not None:
            if type(event) is Reply:
                _tracing.end(span, _tracing.OK)
            elif type(event) is StreamEnd:
                _tracing.end(span, _tracing.STREAM)
            elif type(event) is CallFailed:
                _tracing.end_failed(span, event.error)
        self._delivered(cid, pending)
        if span is not None:
            _tracing.ship(span)

    def _delivered(self, cid: MessageId, pending: P) -> None:
        """Something arrived for ``pending``; by default, wake whoever waits for it."""
        pending.wake()
