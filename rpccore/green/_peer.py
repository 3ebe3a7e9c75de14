"""The gevent side of the shared plumbing (``rpccore._pump``): gevent's hub as the host.

Callbacks, timers and descriptor watchers all run in the hub, so a result can be handed
straight to the greenlet waiting for it, and a request straight to its handler greenlet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import zmq
import zmq.green

from .._pump import Connection, Handle, Pump
from .._sockets import plain_context


class _Watcher:
    """A started gevent watcher, cancelled like an asyncio handle."""

    __slots__ = ("_watcher",)

    def __init__(self, watcher: Any, callback: Callable[[], None]) -> None:
        self._watcher = watcher
        watcher.start(callback)

    def cancel(self) -> None:
        self._watcher.stop()
        self._watcher.close()


class HubHost:
    """gevent's hub, as the pump's event loop."""

    def __init__(self) -> None:
        self._loop = gevent.get_hub().loop

    def call_soon(self, callback: Callable[[], None]) -> None:
        self._loop.run_callback(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        return _Watcher(self._loop.timer(delay), callback)

    def watch(self, fd: int, callback: Callable[[], None]) -> Handle:
        return _Watcher(self._loop.io(fd, 1), callback)


class GreenPeer(Pump):
    """A socket driven from gevent's hub."""

    def __init__(
        self,
        sock_type: int,
        conn: Connection,
        *,
        context: zmq.Context[Any] | None,
        max_message_size: int | None,
        idle_period: float,
    ) -> None:
        # The default context is zmq.green's, so inproc:// endpoints meet the application's
        # gevent sockets; ours is a plain socket on the same libzmq context.
        self._context = context if context is not None else zmq.green.Context.instance()
        super().__init__(
            plain_context(self._context).socket(sock_type),
            conn,
            max_message_size=max_message_size,
            idle_period=idle_period,
        )

    def _start(self) -> None:
        self._start_pump(HubHost())

    def _close_socket(self) -> None:
        self._close_pump()
