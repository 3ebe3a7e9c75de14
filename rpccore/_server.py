"""The server half of the protocol: requests in, replies out, no I/O (spec sections 6-9).

A ServerConnection holds every call open on one ROUTER socket. The driver feeds it each
received message with ``receive(frames, now)``; a Request event means "run this method";
the driver answers with ``send_reply``, ``send_exception`` or a stream
(``send_stream_item`` ... ``send_stream_done``), calls ``handle_timers(now)`` at
``next_deadline()`` and sends what ``data_to_send()`` returns.

Theory of operation:

* Channels are keyed by (routing envelope, message id), not by the id alone as in the
  reference: one peer cannot reach into another peer's calls by guessing ids, and two
  clients that happen to reuse an id do not collide.
* Every reply is prefixed with the request's full envelope, so replies find their way
  back through any number of ROUTER/DEALER hops.
* Sending a data event (OK, ERR, STREAM, STREAM_DONE) needs credit: one implicit credit
  from the request, plus every ``_zpc_more`` grant. A stream whose credit runs out waits
  for CreditGranted. Heartbeats and grants are free.
* A request from a legacy peer (no ``v`` or ``v`` < 2) gets the v1 error form and passive
  heartbeat; for ``v`` < 3, an incoming ``_zpc_hb`` also grants credit (spec 5.3).
* Bad input never raises: undecodable or unroutable events are counted and logged once
  (``problems``); a request the reference would answer (a non-str method name, args that
  are not an array) gets an ERR.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Final

from ._codec import (
    PROTOCOL_VERSION,
    Encoder,
    Envelope,
    Frames,
    decode,
    new_message_id,
    preview,
    split_frames,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import ChannelLost, CreditGranted, Request, ServerChannelId, ServerEvent
from ._heartbeat import DEFAULT_HEARTBEAT, Heartbeat, check_period
from ._problems import ProblemLog
from ._timers import TimerQueue

_HASHABLE_IDS: Final = (bytes, str, int)
_CONTROL: Final = frozenset(("_zpc_hb", "_zpc_more"))


class _Channel:
    __slots__ = ("credit", "envelope", "heartbeat", "key", "message_id", "version", "waiting")

    def __init__(self, key: ServerChannelId, version: int, heartbeat: Heartbeat | None) -> None:
        self.key = key
        self.envelope, self.message_id = key
        self.version = version
        self.heartbeat = heartbeat
        self.credit = 1  # the implicit credit of the request
        self.waiting = False


class ServerConnection:
    """Sans-IO state of one server socket. ``heartbeat`` in seconds, or None to disable."""

    def __init__(self, *, heartbeat: float | None = DEFAULT_HEARTBEAT) -> None:
        check_period(heartbeat)
        self.heartbeat = heartbeat
        self.problems = ProblemLog("server")
        self._channels: dict[ServerChannelId, _Channel] = {}
        self._timers: TimerQueue[ServerChannelId] = TimerQueue()
        self._outbox: list[Frames] = []
        self._encoder = Encoder()

    def __repr__(self) -> str:
        return (
            f"<ServerConnection open={len(self._channels)} heartbeat={self.heartbeat} "
            f"queued={len(self._outbox)}>"
        )

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    def is_open(self, cid: ServerChannelId) -> bool:
        return cid in self._channels

    def data_to_send(self) -> list[Frames]:
        out, self._outbox = self._outbox, []
        return out

    # -- incoming ------------------------------------------------------------------

    def receive(self, frames: Frames, now: float) -> ServerEvent | None:
        if not frames:
            return None
        envelope, payload = split_frames(frames)
        try:
            event = decode(payload)
        except RemoteProtocolError as exc:
            self.problems.report("undecodable", "{}", str(exc))
            return None
        header = event.header
        reply_to = header.get("response_to")
        if reply_to is not None:
            return self._on_channel_event(envelope, reply_to, event.name, event.args, now)

        message_id = header.get("message_id")
        if not isinstance(message_id, _HASHABLE_IDS):
            if any(isinstance(key, bytes) for key in header):
                self.problems.report("bin header keys", "header keys must be str, not bin")
            else:
                self.problems.report("no message_id", "request header {}", header)
            return None
        key = (envelope, message_id)
        if key in self._channels:
            self.problems.report("duplicate id", "message_id {} already open", message_id)
            return None
        version = header.get("v")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            version = 1
        hb = None
        if self.heartbeat is not None:
            hb = Heartbeat(self.heartbeat, now, passive=version < 2)
        channel = _Channel(key, version, hb)
        self._channels[key] = channel
        self._schedule(channel)

        name, args = event.name, event.args
        if not isinstance(name, str):
            self.problems.report("bad method name", "method name is {}", _msgpack_type(name))
            # repr of bytes matches the reference's message ("b'add'"); other types are
            # previewed, since a hostile name may be huge or deeply nested.
            shown = repr(name) if isinstance(name, bytes) else preview(name)
            self._send_error(channel, "NameError", shown, None)
            return None
        if type(args) is not list:
            self.problems.report("bad args", "args of {} is {}", name, _msgpack_type(args))
            detail = f"arguments must be an array, not {_msgpack_type(args)}"
            self._send_error(channel, "TypeError", detail, None)
            return None
        return Request(key, name, args, header)

    def _on_channel_event(
        self, envelope: Envelope, reply_to: Any, name: Any, args: Any, now: float
    ) -> ServerEvent | None:
        channel = None
        if isinstance(reply_to, _HASHABLE_IDS):
            channel = self._channels.get((envelope, reply_to))
        if channel is None:
            self.problems.report(
                "unroutable",
                "{} for an unknown or finished channel (normal after a call ends)",
                name,
                level=logging.DEBUG,
            )
            return None
        if name == "_zpc_more" or (name == "_zpc_hb" and channel.version < 3):
            if name == "_zpc_hb" and channel.heartbeat is not None:
                self._heartbeat_received(channel, now)
            grant = args[0] if type(args) is list and args else None
            if type(grant) is not int or grant < 0:
                self.problems.report("bad credit", "{} args {}", name, args)
                return None
            channel.credit += grant
            if channel.waiting and channel.credit > 0:
                channel.waiting = False
                return CreditGranted(channel.key)
            return None
        if name == "_zpc_hb":
            if channel.heartbeat is not None:
                self._heartbeat_received(channel, now)
            return None
        self.problems.report("unexpected event", "client sent {} inside a call", name)
        return None

    def _heartbeat_received(self, channel: _Channel, now: float) -> None:
        hb = channel.heartbeat
        assert hb is not None
        passive_start = hb.next_tick is None
        hb.received(now)
        if passive_start:
            self._schedule(channel)

    # -- outgoing ------------------------------------------------------------------

    def can_send(self, cid: ServerChannelId) -> bool:
        """True if the channel may send a data event now. When False, the driver waits for
        CreditGranted (or ChannelLost)."""
        channel = self._channels.get(cid)
        if channel is None:
            return False
        if channel.credit > 0:
            return True
        channel.waiting = True
        return False

    def send_reply(self, cid: ServerChannelId, value: Any) -> None:
        """Send OK and close. A value that cannot be encoded is answered with ERR instead,
        as the reference does ("can not serialize 'set' object")."""
        channel = self._take_credit(cid)
        try:
            payload = self._encode(channel, "OK", [value])
        except LocalProtocolError as exc:
            self._send_exception(channel, exc.__cause__ or exc)
            return
        self._emit(channel, payload)
        self._close(channel)

    def send_stream_item(self, cid: ServerChannelId, item: Any) -> bool:
        """Send one STREAM item. Returns False when the item could not be encoded: the
        stream has then been ended with ERR and the channel is closed."""
        channel = self._take_credit(cid)
        try:
            payload = self._encode(channel, "STREAM", item)
        except LocalProtocolError as exc:
            self._send_exception(channel, exc.__cause__ or exc)
            return False
        self._emit(channel, payload)
        return True

    def send_stream_done(self, cid: ServerChannelId) -> None:
        channel = self._take_credit(cid)
        self._emit(channel, self._encode(channel, "STREAM_DONE", None))
        self._close(channel)

    def send_exception(self, cid: ServerChannelId, exc: BaseException) -> None:
        """Send ERR for an exception the method raised, and close."""
        self._send_exception(self._take_credit(cid), exc)

    def send_error(
        self, cid: ServerChannelId, name: str, message: str, tb: str | None = None
    ) -> None:
        """Send ERR [name, message, traceback] and close."""
        self._send_error(self._take_credit(cid), name, message, tb)

    def close(self, cid: ServerChannelId) -> None:
        """Forget a channel without sending anything (its handler was abandoned)."""
        channel = self._channels.get(cid)
        if channel is not None:
            self._close(channel)

    # -- timers --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timers(self, now: float) -> list[ServerEvent]:
        lost: list[ServerEvent] = []
        for key in self._timers.pop_due(now):
            channel = self._channels[key]
            hb = channel.heartbeat
            assert hb is not None  # only heartbeats schedule server timers
            if hb.tick(now):
                self._close(channel)
                lost.append(ChannelLost(key))
                continue
            header = {
                "message_id": new_message_id(),
                "v": PROTOCOL_VERSION,
                "response_to": channel.message_id,
            }
            self._outbox.append(
                [*channel.envelope, b"", self._encoder.encode(header, "_zpc_hb", [0])]
            )
            self._schedule(channel)
        return lost

    # -- internals -----------------------------------------------------------------

    def _take_credit(self, cid: ServerChannelId) -> _Channel:
        channel = self._channels.get(cid)
        if channel is None:
            raise LocalProtocolError("the channel is closed")
        if channel.credit <= 0:
            raise LocalProtocolError("no credit: wait for CreditGranted before sending")
        channel.credit -= 1
        return channel

    def _encode(self, channel: _Channel, name: str, args: Any) -> bytes:
        header = {
            "message_id": new_message_id(),
            "v": PROTOCOL_VERSION,
            "response_to": channel.message_id,
        }
        return self._encoder.encode(header, name, args)

    def _emit(self, channel: _Channel, payload: bytes) -> None:
        self._outbox.append([*channel.envelope, b"", payload])

    def _send_exception(self, channel: _Channel, exc: BaseException) -> None:
        if channel.version < 2:
            self._send_error(channel, type(exc).__name__, "", None, legacy_text=repr(exc))
            return
        text = "".join(traceback.format_exception(exc))
        self._send_error(channel, type(exc).__name__, str(exc), text)

    def _send_error(
        self,
        channel: _Channel,
        name: str,
        message: str,
        tb: str | None,
        *,
        legacy_text: str | None = None,
    ) -> None:
        if channel.version < 2:
            args: list[Any] = [legacy_text if legacy_text is not None else f"{name}({message!r})"]
        else:
            args = [name, message, tb if tb is not None else f"{name}: {message}\n"]
        try:
            payload = self._encode(channel, "ERR", args)
        except LocalProtocolError:
            # Text msgpack cannot carry (lone surrogates from a non-UTF-8 file name):
            # escape it rather than leave the caller waiting for an answer.
            payload = self._encode(channel, "ERR", [_utf8(arg) for arg in args])
        self._emit(channel, payload)
        self._close(channel)

    def _schedule(self, channel: _Channel) -> None:
        hb = channel.heartbeat
        if hb is None or hb.next_tick is None:
            self._timers.cancel(channel.key)
        else:
            self._timers.schedule(channel.key, hb.next_tick)

    def _close(self, channel: _Channel) -> None:
        del self._channels[channel.key]
        self._timers.cancel(channel.key)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _msgpack_type(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, (str, bytes)):
        return "str" if isinstance(value, str) else "bin"
    return type(value).__name__
