"""One-way events: PUSH/PULL and PUB/SUB, no I/O (spec section 12).

A pusher or publisher sends ``[{message_id, v: 3, <trace keys>}, method, [args...]]`` as a
single frame: no delimiter, no routing id, no ``response_to``. A puller or subscriber
calls the method of that name with the args. There is no channel, no heartbeat, no credit
and no reply, so a OneWayConnection has no timers: it satisfies the pump's connection
protocol with ``next_deadline() -> None`` and ``handle_timers(now) -> []``.

Theory of operation:

* Sending: ``emit`` encodes the event and queues its frame for ``data_to_send``. The
  header carries the trace context current at the time of the emit (a child span), exactly
  where 0.6.3's middleware puts its keys (after ``message_id`` and ``v``).
* Receiving: ``receive(frames)`` takes the last frame as the payload (one-way messages have
  one; a stray envelope is tolerated) and returns an OneWayEvent, or None after counting
  and logging once (``problems``) anything that is not a callable event: undecodable
  bytes, not a 3-array, a header that is not a map, a name that is not a str, args that
  are not an array. The reference would log and drop these too; nobody can be told.
* Dispatching: ``resolve`` finds the method among the exposed ones (the same exposure
  rules as a server's, without the ``_zerorpc_*`` built-ins, as 0.6.3's Puller) and counts
  unknown names; ``finished`` counts each handled event and each method that raised.
  Failures are counted per kind (exception type and method: both bounded by the code, never
  by what peers send) and the first of each kind is logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._codec import PROTOCOL_VERSION, Encoder, Frames, decode, new_message_id
from ._errors import RemoteProtocolError
from ._problems import ProblemLog
from ._trace import outgoing_trace_header

logger = logging.getLogger("rpccore")


@dataclass(frozen=True, slots=True)
class OneWayEvent:
    """A received event worth dispatching: ``method`` is a str and ``args`` an array."""

    method: str
    args: list[Any]
    header: dict[Any, Any]


def event_header() -> dict[str, Any]:
    """The header of an event emitted now: a fresh id, ``v``, and the trace context."""
    header: dict[str, Any] = {"message_id": new_message_id(), "v": PROTOCOL_VERSION}
    trace = outgoing_trace_header()
    if trace is not None:
        header.update(trace)
    return header


class OneWayConnection:
    """Sans-IO state of one PUSH, PULL, PUB or SUB socket. ``role`` names it in logs."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.problems = ProblemLog(role)
        self.handled = 0
        self._outbox: list[Frames] = []
        self._encoder = Encoder()

    def __repr__(self) -> str:
        return (
            f"<OneWayConnection {self.role} handled={self.handled} "
            f"problems={sum(self.problems.counts.values())} queued={len(self._outbox)}>"
        )

    # -- sending -------------------------------------------------------------------

    def emit(self, method: str, args: Sequence[Any]) -> None:
        """Queue one event. Raises LocalProtocolError (and queues nothing) when msgpack
        cannot carry an argument, and TypeError when ``method`` is not a str."""
        if not isinstance(method, str):
            raise TypeError(f"the event name must be a str, not {type(method).__name__}")
        self._outbox.append([self._encoder.encode(event_header(), method, args)])

    def data_to_send(self) -> list[Frames]:
        out, self._outbox = self._outbox, []
        return out

    # -- the pump's connection protocol: no timers -----------------------------------

    def next_deadline(self) -> float | None:
        return None

    def handle_timers(self, now: float) -> list[Any]:
        return []

    # -- receiving -----------------------------------------------------------------

    def receive(self, frames: Frames) -> OneWayEvent | None:
        if not frames:
            self.problems.report("empty message", "a message without frames")
            return None
        try:
            event = decode(frames[-1])
        except RemoteProtocolError as exc:
            self.problems.report("undecodable", "{}", str(exc))
            return None
        name, args = event.name, event.args
        if not isinstance(name, str):
            self.problems.report("bad method name", "method name is {}", name)
            return None
        if type(args) is not list:
            self.problems.report("bad args", "args of {} are {}", name, args)
            return None
        return OneWayEvent(name, args, event.header)

    def resolve(
        self, methods: Mapping[str, Callable[..., Any]], event: OneWayEvent
    ) -> Callable[..., Any] | None:
        """The method ``event`` calls, or None after counting an unknown name."""
        func = methods.get(event.method)
        if func is None:
            self.problems.report("unknown method", "no method named {}", event.method)
        return func

    def finished(self, method: str, exc: BaseException | None = None) -> None:
        """Count an event whose method returned, or raised ``exc``."""
        self.handled += 1
        if exc is None:
            return
        kind = f"{type(exc).__name__} in {method}"
        counts = self.problems.counts
        counts[kind] += 1
        if counts[kind] == 1:
            logger.error(
                "%s: method %s raised %s [logged once; see .problems for counts]",
                self.role,
                method,
                type(exc).__name__,
                exc_info=exc,
            )
