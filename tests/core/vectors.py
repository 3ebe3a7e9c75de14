"""Loader for the wire vectors captured from the real zerorpc 0.6.3.

The vectors live outside this repository, in the read-only ``shared/spec/vectors`` folder next
to it, and are read at run time (never copied in). Each JSON file records the frames of one
scenario with a *typed* decoding of every payload:

* msgpack bin         -> ``{"$bin": hex, "ascii": ...}``
* msgpack float64     -> ``{"$float64": v}``
* map with odd keys   -> ``{"$map": [[k, v], ...]}``

and the real client's outcome, where ``{"$bytes": hex}`` and ``{"$float": v}`` mark bytes and
floats. ``from_typed`` turns all of these into the Python values our decoder should produce.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from required import required

from rpccore._codec import MessageId, new_message_id

VECTORS_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "spec" / "vectors"

C2S = "client->server"
S2C = "server->client"

# The names listed in spec section 17 (the loader must find every one of them).
SPEC_VECTOR_NAMES = frozenset(
    {
        "call_ok_simple",
        "call_ok_string",
        "call_ok_dict",
        "call_ok_list",
        "call_ok_bytes",
        "call_ok_bytes_return",
        "call_ok_none",
        "call_no_args",
        "call_ok_float",
        "call_ok_bigint",
        "call_ok_negint",
        "call_ok_tuple",
        "err_exception",
        "err_unknown_method",
        "err_wrong_args",
        "err_kwargs_dropped",
        "err_nonstring_exception_args",
        "err_unicode_message",
        "err_unserializable_result",
        "err_int_overflow_result",
        "pitfall_int_map_keys",
        "stream_3",
        "stream_empty",
        "stream_window_slots10",
        "stream_error_midway",
        "raw_stream_manual_more",
        "heartbeat_long_call",
        "lost_remote_client_side",
        "lost_remote_server_side",
        "timeout_client",
        "introspection_list",
        "introspection_name",
        "introspection_ping",
        "introspection_help",
        "introspection_help_undocumented",
        "introspection_help_unknown",
        "introspection_args",
        "introspection_inspect",
        "introspection_inspect_annotated_py310",
        "raw_v1_client",
        "raw_str_message_id",
        "raw_extra_header_keys",
        "raw_no_delimiter",
        "raw_args_nil",
        "raw_args_map",
        "raw_malformed_payloads",
        "raw_bin_method_name",
        "raw_bin_header_keys",
        "middleware_task_context",
        "publisher_event",
        "pusher_event",
        "cli_outputs",
    }
)


def from_typed(value: Any) -> Any:
    """Convert a typed JSON decoding into the Python value msgpack gives us."""
    if isinstance(value, list):
        return [from_typed(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "$bin" in value:
        return bytes.fromhex(value["$bin"])
    if "$bytes" in value:
        return bytes.fromhex(value["$bytes"])
    if "$float64" in value:
        return float(value["$float64"])
    if "$float" in value:
        return float(value["$float"])
    if "$map" in value:
        return {from_typed(key): from_typed(item) for key, item in value["$map"]}
    return {key: from_typed(item) for key, item in value.items()}


def strict(value: Any) -> Any:
    """A comparable form that also keeps types and map order: ``1 != 1.0 != True`` here,
    and ``b"x" != "x"``, which plain ``==`` would not always tell apart."""
    if isinstance(value, dict):
        return ("map", [(strict(key), strict(item)) for key, item in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [strict(item) for item in value])
    return (type(value).__name__, value)


@dataclass(frozen=True)
class Frame:
    raw: bytes
    has_decoding: bool
    decoded: Any  # the typed decoding, converted (None when has_decoding is False)
    redacted: bool
    error: str | None  # the capture's note when msgpack could not decode the frame


@dataclass(frozen=True)
class VectorEvent:
    seq: int
    t: float
    direction: str
    frames: tuple[Frame, ...]
    header: dict[Any, Any] | None  # None when the capture could not decode the event
    name: Any
    args: Any
    sent_by: str | None

    @property
    def wire(self) -> list[bytes]:
        return [frame.raw for frame in self.frames]

    @property
    def payload(self) -> bytes:
        return self.frames[-1].raw

    @property
    def message_id(self) -> Any:
        assert self.header is not None
        return self.header.get("message_id")

    @property
    def response_to(self) -> Any:
        assert self.header is not None
        return self.header.get("response_to")


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    setup: dict[str, Any]
    events: tuple[VectorEvent, ...]
    client_outcome: dict[str, Any] | None
    routing_id: bytes | None
    document: dict[str, Any]

    def __repr__(self) -> str:
        return f"<Vector {self.name} events={len(self.events)}>"

    def sent(self, direction: str) -> list[VectorEvent]:
        return [event for event in self.events if event.direction == direction]

    @property
    def request(self) -> VectorEvent:
        first = self.events[0]
        assert first.direction == C2S
        assert first.header is not None
        assert "response_to" not in first.header
        return first

    def ids(self, direction: str) -> list[MessageId]:
        """The message ids one side used, in the order it sent them."""
        return [event.message_id for event in self.sent(direction) if event.header is not None]


def _frame(doc: dict[str, Any]) -> Frame:
    return Frame(
        raw=bytes.fromhex(doc["hex"]),
        has_decoding="msgpack" in doc,
        decoded=from_typed(doc["msgpack"]) if "msgpack" in doc else None,
        redacted=bool(doc.get("redacted", False)),
        error=doc.get("msgpack_error"),
    )


def _event(doc: dict[str, Any]) -> VectorEvent:
    event = doc.get("event")
    return VectorEvent(
        seq=doc["seq"],
        t=float(doc["t"]),
        direction=doc["direction"],
        frames=tuple(_frame(frame) for frame in doc["frames"]),
        header=None if event is None else from_typed(event["header"]),
        name=None if event is None else from_typed(event["name"]),
        args=None if event is None else from_typed(event["args"]),
        sent_by=doc.get("sent_by"),
    )


def missing_vectors() -> str:
    """What to say when VECTORS_DIR is not there."""
    return (
        f"the zerorpc 0.6.3 wire vectors are not at {VECTORS_DIR.resolve()}: the tests read "
        "them from the read-only shared/ folder beside this repository (shared/spec/vectors)"
    )


def vectors_dir() -> Path:
    """``VECTORS_DIR``; when it is missing the test is skipped, or fails under CI=true
    (``required``), saying where the folder belongs."""
    if not VECTORS_DIR.is_dir():
        required(missing_vectors())
    return VECTORS_DIR


def vector_names() -> list[str]:
    """The vectors' names, or none when their folder is missing. Collection then goes on and
    the rest of the suite still runs; every test that loads a vector is skipped (fails under
    CI=true) with ``missing_vectors``' message, and the parametrized ones have no cases."""
    if not VECTORS_DIR.is_dir():
        return []
    return sorted(path.stem for path in VECTORS_DIR.glob("*.json"))


@cache
def load(name: str) -> Vector:
    document = json.loads((vectors_dir() / f"{name}.json").read_text(encoding="utf-8"))
    router_view = document.get("router_view")
    outcome = document.get("client_outcome")
    return Vector(
        name=name,
        description=document["description"],
        setup=document.get("setup", {}),
        events=tuple(_event(event) for event in document.get("events", [])),
        client_outcome=None if outcome is None else from_typed(outcome),
        routing_id=None if router_view is None else bytes.fromhex(router_view["routing_id_hex"]),
        document=document,
    )


def with_events() -> list[str]:
    """Vector files that hold frames (cli_outputs only has command-line runs)."""
    return [name for name in vector_names() if load(name).events]


class IdFeed:
    """Stands in for ``new_message_id``: hands out the captured ids in order, then fresh ones.

    Patched into rpccore._client or rpccore._server, it makes our output byte-comparable with
    the capture, since message ids are the only random part of an event.
    """

    def __init__(self, ids: Iterable[MessageId]) -> None:
        self._ids: deque[MessageId] = deque(ids)
        self.fresh = 0

    def __repr__(self) -> str:
        return f"<IdFeed left={len(self._ids)} fresh={self.fresh}>"

    def __call__(self) -> Any:
        if self._ids:
            return self._ids.popleft()
        self.fresh += 1
        return new_message_id()

    @property
    def left(self) -> int:
        return len(self._ids)
