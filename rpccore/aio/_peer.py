"""The asyncio plumbing shared by every asyncio socket owner: a reader task, one loop
timer, and a sender that never blocks (or awaits in) the code that produced the bytes.

No protocol rules live here: the sans-IO connection decides everything. The socket is a
``zmq.asyncio`` socket; a synchronous shadow of it drains queued messages and sends
without creating a future per message, which is most of the cost of zmq.asyncio.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import Any, Protocol

import zmq
import zmq.asyncio

from .._codec import Frames
from .._sockets import prepare

logger = logging.getLogger("rpccore.aio")


class Connection(Protocol):
    def data_to_send(self) -> list[Frames]: ...
    def next_deadline(self) -> float | None: ...
    def handle_timers(self, now: float) -> list[Any]: ...


class AioPeer:
    """Owns a socket and drives a sans-IO connection on the running event loop."""

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
        self._sock: Any = self._context.socket(sock_type)
        self._shadow: zmq.Socket[bytes] = zmq.Socket.shadow(self._sock.underlying)
        prepare(self._shadow, max_message_size=max_message_size)
        self._conn = conn
        self._idle = idle_period
        self._pending: deque[Frames] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_target = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._monitor: Any = None
        self._monitor_task: asyncio.Task[None] | None = None

    # -- what subclasses implement -------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        raise NotImplementedError

    def _on_timer_event(self, event: Any) -> None:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------

    def _start(self) -> None:
        """Start the reader on the running loop (idempotent)."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._reader is None:
            self._loop = asyncio.get_running_loop()
            self._reader = self._loop.create_task(self._read_loop())
            self._wake_timer_by(monotonic() + self._idle)

    def _watch_disconnects(self) -> None:
        """Call ``_on_disconnect`` whenever a peer's connection drops (from ``_start``)."""
        assert self._loop is not None
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._monitor_task = self._loop.create_task(self._monitor_loop())

    async def _monitor_loop(self) -> None:
        while True:
            try:
                await self._monitor.recv_multipart()
            except zmq.ZMQError:
                return
            self._on_disconnect()

    def _on_disconnect(self) -> None:
        pass

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task() if self._loop is not None else None
        for task in (self._reader, self._writer, self._monitor_task):
            if task is not None and task is not current:
                task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self._pending.clear()
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close(linger=0)

    # -- sending -------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the connection queued, without ever waiting: frames the socket
        cannot take now (high-water mark, no peer yet) wait in order for the writer."""
        pending = self._pending
        send = self._shadow.send_multipart
        for frames in self._conn.data_to_send():
            if pending:
                pending.append(frames)
                continue
            try:
                send(frames, zmq.NOBLOCK)
            except zmq.Again:
                pending.append(frames)
                assert self._loop is not None
                self._writer = self._loop.create_task(self._write_loop())
            except zmq.ZMQError as exc:
                if self._closed:
                    return
                logger.warning("dropping an outgoing event: %s", exc)
        if not self._closed:
            # ZeroMQ's file descriptor is edge-triggered, and any operation on the socket
            # (our sends and drains go through the shadow) may consume the edge the reader
            # task waits for. Reading EVENTS through the asyncio socket makes pyzmq check
            # again and wake the reader if messages are waiting.
            self._sock.get(zmq.EVENTS)

    async def _write_loop(self) -> None:
        pending = self._pending
        while pending:
            await self._sock.send_multipart(pending[0])
            pending.popleft()

    # -- receiving and time --------------------------------------------------------

    async def _read_loop(self) -> None:
        recv_async = self._sock.recv_multipart
        while True:
            try:
                frames = await recv_async()
            except zmq.ZMQError:
                if self._closed:
                    return
                raise
            self._on_message(frames, monotonic())
            # Drain what is already queued before sending, so replies go out in batches.
            more = self._drain()
            self._flush()
            if more:
                # A full batch: let other tasks run before the next one. Awaiting a ready
                # recv future does not yield, so a flooding peer would starve the loop.
                await asyncio.sleep(0)

    def _drain(self, limit: int = 256) -> bool:
        """Handle up to ``limit`` messages that are already queued, without waiting;
        True when the limit was reached (more may be waiting)."""
        recv, on_message = self._shadow.recv_multipart, self._on_message
        for _ in range(limit):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return False
            on_message(frames, monotonic())
        return True

    def _wake_timer_by(self, when: float) -> None:
        """Make sure the timers run by ``when``."""
        if when < self._timer_target and self._loop is not None and not self._closed:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_target = when
            self._timer = self._loop.call_later(max(0.0, when - monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_target = float("inf")
        if self._closed:
            return
        # Read what has arrived before judging anyone lost: after a busy spell the peer's
        # heartbeats may be waiting in the socket.
        self._drain(limit=10_000)
        now = monotonic()
        for event in self._conn.handle_timers(now):
            self._on_timer_event(event)
        self._flush()
        deadline = self._conn.next_deadline()
        # With nothing scheduled, check again after one idle period: every new deadline is
        # at least that far away (heartbeats); shorter call timeouts re-arm us explicitly.
        self._wake_timer_by(deadline if deadline is not None else now + self._idle)
