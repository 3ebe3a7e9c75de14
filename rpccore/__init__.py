"""rpccore: a ZeroRPC implementation, wire-compatible with zerorpc 0.6.3.

The protocol lives in pure, I/O-free classes (ClientConnection, ServerConnection); the
drivers ``rpccore.aio`` (asyncio) and ``rpccore.green`` (gevent) move their bytes.
"""

from ._client import DEFAULT_TIMEOUT, DEFAULT_WINDOW, ClientConnection
from ._curve import (
    CurveClientKeys,
    CurveKeyError,
    CurveServerKeys,
    curve_keypair,
    load_key,
    load_keys,
    public_key_of,
)
from ._errors import (
    LocalProtocolError,
    LostRemote,
    MessageTooLarge,
    MethodNotFound,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    RPCError,
    TimeoutExpired,
)
from ._events import (
    CallFailed,
    ChannelLost,
    CreditGranted,
    Reply,
    Request,
    StreamEnd,
    StreamItem,
)
from ._heartbeat import DEFAULT_HEARTBEAT
from ._naming import NamingError
from ._server import ServerConnection
from ._service import stream
from ._trace import TraceContext, call_metadata, current_trace
from ._tracing import traced

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WINDOW",
    "CallFailed",
    "ChannelLost",
    "ClientConnection",
    "CreditGranted",
    "CurveClientKeys",
    "CurveKeyError",
    "CurveServerKeys",
    "LocalProtocolError",
    "LostRemote",
    "MessageTooLarge",
    "MethodNotFound",
    "NamingError",
    "ProtocolError",
    "RPCError",
    "RemoteError",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "ServerConnection",
    "StreamEnd",
    "StreamItem",
    "TimeoutExpired",
    "TraceContext",
    "call_metadata",
    "current_trace",
    "curve_keypair",
    "load_key",
    "load_keys",
    "public_key_of",
    "stream",
    "traced",
]
