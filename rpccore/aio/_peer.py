"""The asyncio side of the shared plumbing (``rpccore._pump``): the running loop as host.

``loop.add_reader`` watches ZeroMQ's descriptor directly; this saves a zmq.asyncio future
and a task wake-up per message. The socket sits on zmq.asyncio's libzmq context, so
``inproc://`` endpoints meet the application's asyncio sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq
import zmq.asyncio

from .._pump import Connection, Handle, Pump
from .._sockets import plain_context


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


class AioPeer(Pump):
    """A socket driven by the running asyncio loop."""

    def __init__(
        self,
        sock_type: int,
        conn: Connection,
        *,
        context: zmq.asyncio.Context | None,
        max_message_size: int | None,
        idle_period: float,
    ) -> None:
        self._context = context if context is not None else zmq.asyncio.Context.instance()
        self._loop: asyncio.AbstractEventLoop | None = None
        super().__init__(
            plain_context(self._context).socket(sock_type),
            conn,
            max_message_size=max_message_size,
            idle_period=idle_period,
        )

    def _start(self) -> None:
        """Start on the running loop (idempotent)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._start_pump(LoopHost(self._loop))

    def _close_socket(self) -> None:
        self._close_pump()
