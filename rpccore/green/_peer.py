"""The gevent side of the shared plumbing (``rpccore._pump``): gevent's hub as the host.

Callbacks, timers and descriptor watchers all run in the hub, so a result can be handed
straight to the greenlet waiting for it, and a request straight to its handler greenlet.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import zmq
import zmq.green
from gevent.threadpool import ThreadPool

from .._pump import Handle
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


def run_method(func: Callable[..., Any], args: Sequence[Any], threads: ThreadPool | None) -> Any:
    """Run a method the way every gevent handler does: in the calling greenlet, or with a
    thread pool in one of its threads, with the greenlet's contextvars."""
    if threads is None:
        return func(*args)
    context = contextvars.copy_context()
    return threads.apply(context.run, (func, *args))


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


def green_socket(sock_type: int, context: zmq.Context[Any] | None) -> Any:
    """A plain socket on the libzmq context of ``context`` (default: zmq.green's, so
    ``inproc://`` endpoints meet the application's gevent sockets)."""
    base = context if context is not None else zmq.green.Context.instance()
    return plain_context(base).socket(sock_type)
