"""Trace context carried in event headers (DESIGN.md, "Wire compatibility").

Headers may carry ``trace_id`` (32 lowercase hex), ``span_id`` (16 hex),
``parent_span_id`` and a W3C ``traceparent``. A server makes the incoming context current
while a handler runs; calls made inside the handler are child spans of it. The current
context lives in a ContextVar: asyncio tasks copy it, and every greenlet has its own
context, so the same variable serves both drivers.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final, NamedTuple

_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
ZERO_TRACE_ID: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_generator = random.Random(random.SystemRandom().getrandbits(128))
# Trace and span ids must be unique, not secret (W3C asks for random, not unguessable):
# the Mersenne Twister, seeded from os.urandom, costs no system call per id, where
# os.urandom costs one. An id is the hex of fresh random bytes: one C call each, where
# formatting an int would cost more than the rest of a traced call's span.
_random_bits = _generator.getrandbits


def new_span_id() -> str:
    """A random span id: 16 lowercase hex digits, never all zeros."""
    sid = _random_bits(64).to_bytes(8, "little").hex()
    while sid == _ZERO_SPAN:  # all zeros is invalid
        sid = _random_bits(64).to_bytes(8, "little").hex()
    return sid


def new_trace_id() -> str:
    """A random trace id: 32 lowercase hex digits, never all zeros."""
    tid = _random_bits(128).to_bytes(16, "little").hex()
    while tid == ZERO_TRACE_ID:
        tid = _random_bits(128).to_bytes(16, "little").hex()
    return tid


def new_root_ids() -> tuple[str, str]:
    """(a trace id, a span id) for a new trace, from one draw: a traced root call makes
    them for every call."""
    digits = _random_bits(192).to_bytes(24, "little").hex()
    tid, sid = digits[:32], digits[32:]
    if tid == ZERO_TRACE_ID or sid == _ZERO_SPAN:
        return new_trace_id(), new_span_id()
    return tid, sid


def _reseed_after_fork() -> None:
    # A forked child must not repeat its parent's ids.
    _generator.seed(random.SystemRandom().getrandbits(128))


os.register_at_fork(after_in_child=_reseed_after_fork)


def is_lowercase_hex(text: str) -> bool:
    """Whether ``text`` is an even number (not zero) of lowercase hex digits: the test of
    every id a traced request carries (and of every record at the collector). The bytes it
    spells, spelled again, must be ``text``: ``bytes.hex`` writes lowercase and no blanks.
    Without the regex engine, which cost a server a microsecond per request (cold there),
    nor ``str.islower``, which looks every character up in Unicode's tables."""
    try:
        return bytes.fromhex(text).hex() == text and text != ""
    except ValueError:  # a letter past f, an odd number of digits, or not ASCII
        return False


def are_trace_ids(trace_id: object, span_id: object, parent_span_id: object) -> bool:
    """Whether these are a trace id (32 lowercase hex), a span id (16) and a parent span
    id (16, or None): what every traced request carries (and every record at the
    collector), checked as one string."""
    if type(trace_id) is not str or type(span_id) is not str:
        return False
    if len(trace_id) != 32 or len(span_id) != 16:
        return False
    if parent_span_id is None:
        digits = trace_id + span_id
    elif type(parent_span_id) is str and len(parent_span_id) == 16:
        digits = trace_id + span_id + parent_span_id
    else:
        return False
    try:  # is_lowercase_hex(digits), in line: every traced request is checked here
        return bytes.fromhex(digits).hex() == digits
    except ValueError:
        return False


def _is_id(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and is_lowercase_hex(value)


class TraceContext(NamedTuple):
    """One span's place in a trace. A named tuple rather than a frozen dataclass: one is
    made per call on each side, and a tuple is made in half the time."""

    trace_id: str
    span_id: str
    parent_span_id: str | None = None

    @classmethod
    def new_root(cls) -> TraceContext:
        return _new_context(cls, (*new_root_ids(), None))

    @classmethod
    def from_header(cls, header: Mapping[Any, Any]) -> TraceContext | None:
        """The context an event carries, or None when it has none (or only garbage)."""
        trace_id = header.get("trace_id")
        if trace_id is None:  # an untraced caller's request (or one with a W3C context)
            return cls._from_traceparent_in(header)
        span_id, parent = header.get("span_id"), header.get("parent_span_id")
        if are_trace_ids(trace_id, span_id, parent) and trace_id != ZERO_TRACE_ID:
            return _new_context(cls, (trace_id, span_id, parent))
        return cls._from_other_header(header)  # something is off: keep what is valid

    @classmethod
    def _from_other_header(cls, header: Mapping[Any, Any]) -> TraceContext | None:
        """``from_header`` of any other header: a valid trace id keeps its trace (a span id
        that is not one is replaced, a parent that is not one dropped), else a valid
        ``traceparent`` is read."""
        trace_id = header.get("trace_id")
        if not _is_id(trace_id, 32) or trace_id == ZERO_TRACE_ID:
            return cls._from_traceparent_in(header)
        span_id = header.get("span_id")
        if not _is_id(span_id, 16):
            span_id = new_span_id()
        parent = header.get("parent_span_id")
        if parent is not None and not _is_id(parent, 16):
            parent = None
        return _new_context(cls, (trace_id, span_id, parent))

    @classmethod
    def _from_traceparent_in(cls, header: Mapping[Any, Any]) -> TraceContext | None:
        traceparent = header.get("traceparent")
        return cls.from_traceparent(traceparent) if isinstance(traceparent, str) else None

    @classmethod
    def from_traceparent(cls, value: str) -> TraceContext | None:
        match = _TRACEPARENT.fullmatch(value.strip().lower())
        if match is None or match[1] == ZERO_TRACE_ID or match[2] == _ZERO_SPAN:
            return None
        return cls(match[1], match[2])

    def child(self) -> TraceContext:
        """A new span whose parent is this one."""
        return _new_context(TraceContext, (self.trace_id, new_span_id(), self.span_id))

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

    def to_header(self) -> dict[str, str]:
        """The header keys of a call in this span. No ``traceparent``: ``trace_id`` and
        ``span_id`` say the same, and it would only cost every call its bytes (a header
        that carries only a ``traceparent`` is still read, by ``from_header``)."""
        header = {"trace_id": self.trace_id, "span_id": self.span_id}
        if self.parent_span_id is not None:
            header["parent_span_id"] = self.parent_span_id
        return header


# The tuple made without the named tuple's Python-level __new__: one is made per call, on
# each side, and that frame was a third of the cost.
_new_context: Final = tuple.__new__

current_trace: ContextVar[TraceContext | None] = ContextVar("rpccore_trace", default=None)

# Extra header keys for every call made in this context (the gateway names the caller's API
# token here: its id and name, never the credential). Protocol and trace keys always win.
call_metadata: ContextVar[Mapping[str, Any] | None] = ContextVar("rpccore_metadata", default=None)


def outgoing_trace_header() -> dict[str, Any] | None:
    """Header keys for a call made now: a child of the current span, if there is one, and
    the context's call metadata."""
    ctx = current_trace.get()
    header = None if ctx is None else ctx.child().to_header()
    metadata = call_metadata.get()
    if metadata:
        header = {**metadata, **header} if header else dict(metadata)
    return header
