"""Framing and msgpack encoding of ZeroRPC events (spec sections 3 and 4).

A ZeroMQ message is a list of frames. On ROUTER/DEALER sockets the last frame is the
payload and the frames before the empty delimiter are the routing envelope; PUSH/PULL and
PUB/SUB carry the payload alone. The payload is one msgpack array ``[header, name, args]``.

We pack exactly like zerorpc 0.6.3 (``use_bin_type=True``) so our bytes are identical to
the reference's, and we unpack like it (``raw=False``) with one deliberate difference:
map keys of any type are accepted (``strict_map_key=False``), where the reference drops
the whole event.
"""

from __future__ import annotations

import binascii
import os
import reprlib
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from ._errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_VERSION: Final = 3

Frames = list[bytes]
Envelope = tuple[bytes, ...]
MessageId = bytes | str | int

EMPTY: Final = b""


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One decoded event: ``header`` is a map, ``name`` normally a str, ``args`` anything."""

    header: dict[Any, Any]
    name: Any
    args: Any


def new_message_id() -> bytes:
    """A random 128-bit id as 32 lowercase hex ASCII bytes, the form 0.6.3 sends as bin.

    Random rather than a counter: channel ids are the only thing that keeps one peer out
    of another peer's channels (spec 5.2).
    """
    return binascii.hexlify(os.urandom(16))


def split_frames(frames: Frames) -> tuple[Envelope, bytes]:
    """Split a received multipart message into (envelope, payload), tolerantly (spec 3.1).

    With three or more frames the one before the payload is assumed to be the delimiter
    and is not checked; with two, the first frame is the envelope (a request sent without
    the delimiter is still served); with one, there is no envelope.
    """
    n = len(frames)
    if n >= 3:
        return tuple(frames[:-2]), frames[-1]
    if n == 2:
        return (frames[0],), frames[1]
    return (), frames[0]


_unpack_kwargs: Final = {"raw": False, "strict_map_key": False, "use_list": True}


def decode(payload: bytes) -> WireEvent:
    """Decode one payload; raise RemoteProtocolError when it is not a valid event.

    Like the reference, only the first msgpack object counts; trailing bytes are ignored.
    """
    try:
        obj = msgpack.unpackb(payload, **_unpack_kwargs)
    except msgpack.ExtraData as extra:
        obj = extra.unpacked
    except Exception as exc:  # msgpack raises many types for garbage input
        raise RemoteProtocolError(f"payload is not valid msgpack ({exc})") from None
    if type(obj) is not list or len(obj) != 3:
        raise RemoteProtocolError(f"event is not a 3-element array: {preview(obj)}")
    header, name, args = obj
    if type(header) is not dict:
        raise RemoteProtocolError(f"event header is not a map: {preview(header)}")
    return WireEvent(header, name, args)


class Encoder:
    """Packs events; one per connection (msgpack packers are not thread-safe)."""

    __slots__ = ("_packer",)

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, header: dict[str, Any], name: str, args: Any) -> bytes:
        """Pack ``[header, name, args]``; raise LocalProtocolError if a value cannot be packed."""
        try:
            data: bytes = self._packer.pack((header, name, args))
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise LocalProtocolError(f"{type(exc).__name__}: {exc}") from exc
        return data


def _make_short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # attributes, not keywords: keywords need Python 3.12
    short.maxlevel, short.maxstring, short.maxother = 3, 60, 60
    short.maxlist = short.maxdict = short.maxtuple = 6
    return short


_short_repr: Final = _make_short_repr()


def preview(value: Any) -> str:
    """A short repr for messages, safe on hostile values (huge, or nested 1,000 deep)."""
    try:
        return _short_repr.repr(value)
    except RecursionError:
        return f"<deeply nested {type(value).__name__}>"
