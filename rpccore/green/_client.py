"""The gevent client: ``Client(endpoint).call("add", 1, 2)`` or ``client.add(1, 2)``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import gevent
import gevent.event
import zmq
from gevent import get_hub, getcurrent
from gevent.hub import Waiter

from .. import _describe
from .._calling import DEFAULT, ClientPump, Pending, StreamCursor, UseDefault
from .._client import DEFAULT_TIMEOUT, DEFAULT_WINDOW
from .._codec import MessageId
from .._curve import CurveClientKeys
from .._errors import RemoteError
from .._heartbeat import DEFAULT_HEARTBEAT
from .._naming import resolve_all
from .._sockets import DEFAULT_MAX_MESSAGE_SIZE
from ._peer import HubHost, green_socket


class _Pending(Pending):
    """What the hub has delivered to one call so far, and who waits for more."""

    __slots__ = ("future", "waiter")

    def __init__(self) -> None:
        super().__init__()
        self.waiter: Waiter | None = None
        self.future: gevent.event.AsyncResult | None = None

    def wait(self) -> None:
        while not self.items and not self.done:
            waiter = self.waiter = Waiter()
            try:
                waiter.get()
            finally:
                self.waiter = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is None:
            return
        self.waiter = None
        hub = get_hub()
        if getcurrent() is hub:
            waiter.switch(None)  # straight to the caller: no extra trip through the loop
        else:
            hub.loop.run_callback(waiter.switch, None)


class Stream(StreamCursor, Iterator[Any]):
    """The items of a stream reply, as they arrive (see StreamCursor); ``close()`` or
    leaving a ``with`` block abandons the rest."""

    _DRIVER = "green"
    _pending: _Pending

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        self._ask_for_next()
        self._pending.wait()
        found, item = self._take()
        if not found:
            raise StopIteration
        return item

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(ClientPump[_Pending]):
    """A ZeroRPC client on gevent (one DEALER socket; connect it to one server).

    ``call(method, *args)`` blocks the calling greenlet and returns the result, or a
    ``Stream`` iterator when the method streams. ``timeout`` bounds the wait for the first
    reply; ``async_=True`` returns a gevent AsyncResult to ``get()`` later instead.
    Attribute access is sugar: ``client.add(1, 2)`` is ``client.call("add", 1, 2)`` (names
    starting with ``_`` are never remote calls; a method the server lacks raises
    ``MethodNotFound``).

    ``endpoint`` may also be a service name (no ``://``), looked up in the naming file
    ``names`` or else ``$ZEROGATE_NAMES`` (``rpccore._naming.NamingError``, a
    ``ValueError``, if it is not there). A name with several endpoints connects to all of
    them, as zerorpc does, and ZeroMQ then deals calls round-robin with no regard for which
    server is alive: for several servers the gateway's pool or a hub is the right tool.

    ``curve`` (``rpccore.CurveClientKeys``) encrypts the connection to a CurveZMQ server.
    A handshake that fails (a wrong server key, a key the server does not authorize, a
    server without CURVE) reaches no server: calls end as ``TimeoutExpired`` or
    ``LostRemote``, whose message then says why the handshake failed.
    """

    def __init__(
        self,
        endpoint: str | Iterable[str] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        passive_heartbeat: bool = False,
        window: int = DEFAULT_WINDOW,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.Context[Any] | None = None,
        names: str | os.PathLike[str] | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        # A name (no "://") is resolved first, so a naming error leaves no socket behind.
        endpoints = None if endpoint is None else resolve_all(endpoint, names)
        super().__init__(
            green_socket(zmq.DEALER, context),
            timeout=timeout,
            heartbeat=heartbeat,
            passive_heartbeat=passive_heartbeat,
            window=window,
            max_message_size=max_message_size,
            curve=curve,
        )
        if endpoints is not None:
            self.connect(endpoints)

    def __repr__(self) -> str:
        return f"<green.Client {self._client!r}>"

    def connect(self, endpoint: str | Iterable[str]) -> list[str]:
        connected = self._connect(endpoint)
        self._start_pump(HubHost())
        return connected

    def bind(self, endpoint: str | Iterable[str]) -> list[str]:
        bound = self._bind(endpoint)
        self._start_pump(HubHost())
        return bound

    def close(self) -> None:
        for pending in self._fail_all("the client was closed"):
            self._resolve_future(pending)
            pending.wake()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def remote_method(*args: Any, **options: Any) -> Any:
            return self.call(name, *args, **options)

        remote_method.__name__ = name
        return remote_method

    # -- calls ---------------------------------------------------------------------

    def call(
        self,
        method: str,
        *args: Any,
        timeout: float | UseDefault | None = DEFAULT,
        async_: bool = False,
    ) -> Any:
        pending = _Pending()
        if async_:
            pending.future = gevent.event.AsyncResult()
        cid = self._begin(method, args, timeout, pending)
        if async_:
            return pending.future
        try:
            pending.wait()
        except BaseException:
            self._abandon(cid)
            raise
        if pending.stream:
            return Stream(self, cid, pending)
        if pending.error is not None:
            raise pending.error
        return pending.value

    def stream(
        self, method: str, *args: Any, timeout: float | UseDefault | None = DEFAULT
    ) -> Stream:
        """Call a stream method; raises TypeError if the method answered a plain value."""
        result = self.call(method, *args, timeout=timeout)
        if not isinstance(result, Stream):
            raise TypeError(f"{method} answered a value, not a stream")
        return result

    def describe(self) -> dict[str, Any]:
        """Describe the remote service: ``_zerorpc_inspect``, else the 0.6.3 fallback."""
        try:
            described = _describe.from_inspect(self.call("_zerorpc_inspect"))
        except (RemoteError, ValueError):
            name = self.call("_zerorpc_name")
            docs = {m: self.call("_zerorpc_help", m) for m in self.call("_zerorpc_list")}
            described = _describe.from_fallback(name, docs)
        self._learn_name(described)
        return described

    # -- plumbing ------------------------------------------------------------------

    def _delivered(self, cid: MessageId, pending: _Pending) -> None:
        if pending.future is not None:
            self._resolve_future(pending, cid)
        pending.wake()  # last: it may switch to the caller

    def _resolve_future(self, pending: _Pending, cid: MessageId = b"") -> None:
        future = pending.future
        if future is None or future.ready():
            return
        if pending.stream:
            future.set(Stream(self, cid, pending))
        elif pending.error is not None:
            future.set_exception(pending.error)
        else:
            future.set(pending.value)
