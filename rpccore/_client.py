"""The client half of the protocol: calls out, replies in, no I/O (spec sections 6-9).

A ClientConnection multiplexes any number of calls over one DEALER socket. The driver
feeds it every received message with ``receive(frames, now)``, calls ``handle_timers(now)``
at ``next_deadline()``, and sends whatever ``data_to_send()`` returns.

Theory of operation, per call (one channel, keyed by the request's message id):

* ``start_call`` queues the request and arms the call timeout (first reply only) and the
  heartbeat timer.
* The first data event decides the pattern: OK and ERR end the call, STREAM and
  STREAM_DONE make it a stream.
* Flow control follows the reference receiver (spec 8.3): the request implicitly grants
  one event; each time the application asks for another stream item (``request_next``)
  and fewer than half a window of grants remain, we grant up to a full window with
  ``_zpc_more``. So the server can never run further ahead of the application than one
  window, which is what keeps streaming back-pressured end to end.
* A server that sends more data events than we granted breaks the protocol: the call fails
  with RemoteProtocolError rather than buffering without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ._codec import (
    PROTOCOL_VERSION,
    Encoder,
    Frames,
    MessageId,
    decode,
    new_message_id,
    preview,
)
from ._errors import (
    LostRemote,
    MethodNotFound,
    RemoteError,
    RemoteProtocolError,
    RPCError,
    TimeoutExpired,
)
from ._events import CallFailed, ClientEvent, Reply, StreamEnd, StreamItem
from ._heartbeat import DEFAULT_HEARTBEAT, Heartbeat, check_period, format_seconds
from ._problems import ProblemLog
from ._timers import TimerQueue

DEFAULT_WINDOW: Final = 100
DEFAULT_TIMEOUT: Final = 30.0

_HASHABLE_IDS: Final = (bytes, str, int)


class _Call:
    __slots__ = (
        "deadline",
        "granted",
        "heartbeat",
        "id",
        "method",
        "reads",
        "received",
        "reserved",
        "timeout",
    )

    def __init__(
        self, cid: MessageId, method: str, timeout: float | None, hb: Heartbeat | None, now: float
    ) -> None:
        self.id = cid
        self.method = method
        self.timeout = timeout
        self.deadline = None if timeout is None else now + timeout
        self.heartbeat = hb
        self.granted = 1  # the implicit credit of the request
        self.received = 0
        self.reads = 0
        self.reserved = 1

    def next_wake(self) -> float | None:
        tick = None if self.heartbeat is None else self.heartbeat.next_tick
        if self.deadline is None:
            return tick
        return self.deadline if tick is None else min(tick, self.deadline)


class ClientConnection:
    """Sans-IO state of one client socket. Keyword-only options:

    heartbeat: seconds between ``_zpc_hb`` (None disables it; both sides must agree).
    passive_heartbeat: start heartbeating only once the server does.
    window: the stream receive window Q (grants refill to Q when fewer than Q/2 remain).
    """

    def __init__(
        self,
        *,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        passive_heartbeat: bool = False,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if window < 2:
            raise ValueError("window must be at least 2")
        check_period(heartbeat)
        self.heartbeat = heartbeat
        self.passive_heartbeat = passive_heartbeat
        self.window = window
        self.problems = ProblemLog("client")
        self._calls: dict[MessageId, _Call] = {}
        self._timers: TimerQueue[MessageId] = TimerQueue()
        self._outbox: list[Frames] = []
        self._encoder = Encoder()

    def __repr__(self) -> str:
        return (
            f"<ClientConnection open={len(self._calls)} heartbeat={self.heartbeat} "
            f"window={self.window} queued={len(self._outbox)}>"
        )

    @property
    def open_channels(self) -> int:
        return len(self._calls)

    def is_open(self, cid: MessageId) -> bool:
        return cid in self._calls

    # -- outgoing ------------------------------------------------------------------

    def start_call(
        self,
        method: str,
        args: Sequence[Any],
        *,
        now: float,
        timeout: float | None = DEFAULT_TIMEOUT,
        header: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> MessageId:
        """Queue a request; return its channel id. ``header`` (trace keys) and then
        ``metadata`` add keys to the event's header, never replacing one already there.
        Raises LocalProtocolError if the arguments cannot be encoded (nothing is queued)."""
        cid = new_message_id()
        head: dict[str, Any] = {"message_id": cid, "v": PROTOCOL_VERSION}
        if header:
            head.update(header)
            # A caller's keys never replace the protocol's (set again, in place).
            head["message_id"], head["v"] = cid, PROTOCOL_VERSION
        if metadata:
            for key, value in metadata.items():
                head.setdefault(key, value)
        payload = self._encoder.encode(head, method, list(args))
        hb = None
        if self.heartbeat is not None:
            hb = Heartbeat(self.heartbeat, now, passive=self.passive_heartbeat)
        call = _Call(cid, method, timeout, hb, now)
        self._calls[cid] = call
        self._schedule(call)
        self._outbox.append([b"", payload])
        return cid

    def request_next(self, cid: MessageId) -> None:
        """The application wants the next item of a stream: grant credit if it is due."""
        call = self._calls.get(cid)
        if call is None:
            return
        if call.reads and call.reserved < self.window // 2:
            grant = self.window - call.reserved
            self._send_control(cid, "_zpc_more", grant)
            call.granted += grant
            call.reserved = self.window
        call.reads += 1
        call.reserved -= 1

    def cancel(self, cid: MessageId) -> None:
        """Forget a call (the application gave up). Nothing is sent: the server notices
        when our heartbeats stop, and any late reply is dropped as unroutable."""
        if self._calls.pop(cid, None) is not None:
            self._timers.cancel(cid)

    def data_to_send(self) -> list[Frames]:
        out, self._outbox = self._outbox, []
        return out

    # -- incoming ------------------------------------------------------------------

    def receive(self, frames: Frames, now: float) -> ClientEvent | None:
        if not frames:
            return None
        try:
            event = decode(frames[-1])
        except RemoteProtocolError as exc:
            self.problems.report("undecodable", "{}", str(exc))
            return None
        cid = event.header.get("response_to")
        call = self._calls.get(cid) if isinstance(cid, _HASHABLE_IDS) else None
        if call is None:
            self.problems.report(
                "unroutable",
                "{} for an unknown or finished call (normal after a timeout)",
                event.name,
                level=logging.DEBUG,
            )
            return None
        name = event.name
        if name == "_zpc_hb":
            hb = call.heartbeat
            if hb is not None:
                passive_start = hb.next_tick is None
                hb.received(now)
                if passive_start:
                    self._schedule(call)
            return None
        if name == "_zpc_more":
            return None  # a client sends nothing after its request: credit is moot
        call.received += 1
        if call.received > call.granted:
            return self._fail(call, RemoteProtocolError("server sent more events than granted"))
        first = call.reads == 0
        if first:  # the first reply: the timeout is met; this is read #1
            call.reads = 1
            call.reserved -= 1
            call.deadline = None
        if name == "STREAM":
            if first:  # only a stream goes on: from now on only heartbeats are due
                self._schedule(call)
            return StreamItem(call.id, event.args)
        args = event.args
        if name == "OK":
            if type(args) is not list or not args:
                return self._fail(
                    call, RemoteProtocolError(f"OK args not [value]: {preview(args)}")
                )
            self._close(call)
            return Reply(call.id, args[0])
        if name == "STREAM_DONE":
            self._close(call)
            return StreamEnd(call.id)
        if name == "ERR":
            return self._fail(call, _remote_error(event.header, args, call.method))
        return self._fail(
            call, RemoteProtocolError(f"unable to find a pattern for: {preview(name)}")
        )

    # -- timers --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timers(self, now: float) -> list[ClientEvent]:
        failed: list[ClientEvent] = []
        for cid in self._timers.pop_due(now):
            call = self._calls[cid]
            if call.deadline is not None and now >= call.deadline:
                message = (
                    f"timeout after {format_seconds(call.timeout or 0)}s, "
                    f"when calling remote method {call.method}"
                )
                failed.append(self._fail(call, TimeoutExpired(message)))
                continue
            hb = call.heartbeat
            if hb is not None and hb.due(now):
                if hb.tick(now):
                    failed.append(self._fail(call, LostRemote(hb.lost_message())))
                    continue
                self._send_control(cid, "_zpc_hb", 0)
            self._schedule(call)
        return failed

    # -- internals -----------------------------------------------------------------

    def _send_control(self, cid: MessageId, name: str, value: int) -> None:
        header = {"message_id": new_message_id(), "v": PROTOCOL_VERSION, "response_to": cid}
        self._outbox.append([b"", self._encoder.encode(header, name, [value])])

    def _schedule(self, call: _Call) -> None:
        when = call.next_wake()
        if when is None:
            self._timers.cancel(call.id)
        else:
            self._timers.schedule(call.id, when)

    def _close(self, call: _Call) -> None:
        del self._calls[call.id]
        self._timers.cancel(call.id)

    def _fail(self, call: _Call, error: RPCError) -> CallFailed:
        self._close(call)
        return CallFailed(call.id, error)


def _remote_error(header: Mapping[Any, Any], args: Any, method: str) -> RPCError:
    """Build the exception an ERR event stands for (spec 9.4), v1 form included."""
    version = header.get("v")
    if not isinstance(version, int) or version < 2:
        text = args[0] if type(args) is list and args else args
        return RemoteError("RemoteError", _text(text), None)
    if type(args) is not list or len(args) not in (2, 3):
        return RemoteProtocolError(f"ERR args not [name, message, traceback]: {preview(args)}")
    name, message = _text(args[0]), _text(args[1])
    traceback = args[2] if len(args) == 3 and isinstance(args[2], str) else None
    if name == "NameError" and message == method:
        return MethodNotFound(name, message, traceback)
    return RemoteError(name, message, traceback)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else preview(value)
