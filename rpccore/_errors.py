"""The exception tree of rpccore.

RPCError                    base of everything rpccore raises to its users
├── RemoteError             the remote method raised: .name, .message, .traceback
│   └── MethodNotFound      the remote answered NameError for the method we called
├── TimeoutExpired          no first reply within the call's timeout
├── LostRemote              the remote stopped heartbeating
└── ProtocolError           the conversation broke the protocol
    ├── LocalProtocolError  we were asked to do something the protocol forbids
    └── RemoteProtocolError the peer sent something the protocol forbids
"""

from __future__ import annotations


class RPCError(Exception):
    """Base class of every error rpccore raises."""


class RemoteError(RPCError):
    """The remote method raised an exception.

    ``name`` is the remote exception's class name, ``message`` its text and
    ``traceback`` the remote traceback text (``None`` when the peer sent none).
    """

    def __init__(self, name: str, message: str, traceback: str | None = None) -> None:
        super().__init__(name, message, traceback)
        self.name = name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


class MethodNotFound(RemoteError):
    """The remote has no method of that name (it answered ``NameError``)."""


class TimeoutExpired(RPCError):
    """No first reply arrived within the call's timeout."""


class LostRemote(RPCError):
    """The remote stopped heartbeating: it is gone, blocked or unreachable."""


class ProtocolError(RPCError):
    """The conversation broke the ZeroRPC protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (our fault)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (its fault)."""


class MessageTooLarge(LocalProtocolError):
    """An event we were asked to send exceeds the configured maximum message size."""
