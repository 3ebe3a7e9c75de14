"""What the protocol core hands to its driver: immutable event values.

Client side: every call ends with exactly one of Reply, StreamEnd or CallFailed (which
carries the exception to raise: RemoteError, TimeoutExpired, LostRemote or
RemoteProtocolError); a stream delivers StreamItem events before its end.

Server side: Request opens a call, CreditGranted wakes a stream that waits for credit,
ChannelLost tells that the client is gone and the handler should stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._codec import Envelope, MessageId
from ._errors import RPCError

# A client knows a call by its message id; a server by (routing envelope, message id).
ServerChannelId = tuple[Envelope, MessageId]


@dataclass(frozen=True, slots=True)
class Reply:
    channel: MessageId
    value: Any


@dataclass(frozen=True, slots=True)
class StreamItem:
    channel: MessageId
    item: Any


@dataclass(frozen=True, slots=True)
class StreamEnd:
    channel: MessageId


@dataclass(frozen=True, slots=True)
class CallFailed:
    channel: MessageId
    error: RPCError


ClientEvent = Reply | StreamItem | StreamEnd | CallFailed


@dataclass(frozen=True, slots=True)
class Request:
    channel: ServerChannelId
    method: str
    args: list[Any]
    header: dict[Any, Any]


@dataclass(frozen=True, slots=True)
class CreditGranted:
    channel: ServerChannelId


@dataclass(frozen=True, slots=True)
class ChannelLost:
    channel: ServerChannelId


ServerEvent = Request | CreditGranted | ChannelLost
