"""The asyncio side of the shared plumbing (``rpccore._pump``): the running loop as host.

``loop.add_reader`` watches ZeroMQ's descriptor directly; this saves a zmq.asyncio future
and a task wake-up per message. The socket sits on zmq.asyncio's libzmq context, so
``inproc://`` endpoints meet the application's asyncio sockets.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import zmq
import zmq.asyncio

from .._pump import Handle
from .._sockets import plain_context


async def run_method(
    func: Callable[..., Any], args: Sequence[Any], executor: Executor | None
) -> Any:
    """Run a method the way every asyncio handler does: coroutine functions (and async
    generator functions) on the loop, anything else in ``executor`` with the caller's
    contextvars, so a blocking method never stops the loop."""
    target = getattr(func, "__func__", func)
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        result = func(*args)
    else:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        result = await loop.run_in_executor(executor, context.run, func, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


class _Reader:
    """A descriptor watched by ``loop.add_reader``, cancelled like a timer handle."""

    __slots__ = ("_fd", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop, self._fd = loop, fd

    def cancel(self) -> None:
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)


class LoopHost:
    """An asyncio event loop, as the pump's host."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def call_soon(self, callback: Callable[[], None]) -> None:
        self._loop.call_soon(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        return self._loop.call_later(delay, callback)

    def watch(self, fd: int, callback: Callable[[], None]) -> Handle:
        self._loop.add_reader(fd, callback)
        return _Reader(self._loop, fd)


def aio_socket(sock_type: int, context: zmq.asyncio.Context | None) -> Any:
    """A plain socket on the libzmq context of ``context`` (default: zmq.asyncio's, so
    ``inproc://`` endpoints meet the application's asyncio sockets)."""
    base = context if context is not None else zmq.asyncio.Context.instance()
    return plain_context(base).socket(sock_type)
