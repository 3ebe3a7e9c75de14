"""The asyncio plumbing shared by every asyncio socket owner.

No protocol rules live here: the sans-IO connection decides everything; this module only
moves frames and time between it and a ZeroMQ socket.

Theory of operation (the same as the gevent driver's). The socket is a plain pyzmq socket
on the zmq.asyncio context's libzmq context, used only with NOBLOCK:

* ``loop.add_reader`` on ZeroMQ's file descriptor runs ``_on_readable``, which drains
  queued messages into the connection, a batch at a time. The descriptor is
  edge-triggered: any operation on the socket may consume the edge, so after sending we
  read ``EVENTS`` and schedule another drain if messages are waiting.
* One loop timer runs ``_on_timer`` at the connection's next deadline.
* Sending never waits: frames the socket cannot take now (high-water mark, no peer yet)
  wait, in order, for a writer task.

Doing this ourselves rather than awaiting zmq.asyncio futures saves a future and a task
wake-up per message, and gives both drivers one shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import Any, Final, Protocol

import zmq
import zmq.asyncio

from .._codec import Frames
from .._sockets import EVENTS, POLLIN, plain_context, prepare, recv_frames, send_frames

logger = logging.getLogger("rpccore.aio")

_BATCH: Final = 256  # messages handled per callback before letting other tasks run


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
        # The default context is zmq.asyncio's, so inproc:// endpoints meet the
        # application's asyncio sockets; ours is a plain socket on the same libzmq context.
        self._context = context if context is not None else zmq.asyncio.Context.instance()
        # Any: pyzmq types getsockopt as int | bytes, and the hot path reads EVENTS often.
        self._sock: Any = plain_context(self._context).socket(sock_type)
        prepare(self._sock, max_message_size=max_message_size)
        self._conn = conn
        self._idle = idle_period
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_target = float("inf")
        self._drain_scheduled = False
        self._pending: deque[Frames] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._monitor: Any = None
        self._closed = False

    # -- what subclasses implement -------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        raise NotImplementedError

    def _on_timer_event(self, event: Any) -> None:
        raise NotImplementedError

    def _on_disconnect(self) -> None:
        pass

    # -- lifecycle -----------------------------------------------------------------

    @property
    def _started(self) -> bool:
        return self._loop is not None

    def _start(self) -> None:
        """Start reading on the running loop (idempotent)."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._loop is None:
            loop = self._loop = asyncio.get_running_loop()
            fd = self._sock.getsockopt(zmq.FD)
            loop.add_reader(fd, self._on_readable)
            self._fds.append(fd)
            self._schedule_drain()  # messages may be queued already
            self._wake_timer_by(monotonic() + self._idle)

    def _watch_disconnects(self) -> None:
        """Call ``_on_disconnect`` whenever a peer's connection drops (after ``_start``)."""
        assert self._loop is not None
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        fd = self._monitor.getsockopt(zmq.FD)
        self._loop.add_reader(fd, self._on_monitor)
        self._fds.append(fd)
        self._loop.call_soon(self._on_monitor)  # events may predate the reader

    def _on_monitor(self) -> None:
        monitor = self._monitor
        while not self._closed and monitor.getsockopt(EVENTS) & POLLIN:
            recv_frames(monitor)
            self._on_disconnect()

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for fd in self._fds:
                loop.remove_reader(fd)
        if self._timer is not None:
            self._timer.cancel()
        if self._writer is not None and self._writer is not _current_task(loop):
            self._writer.cancel()
        self._pending.clear()
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close(linger=0)

    # -- receiving -----------------------------------------------------------------

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        self._drain_scheduled = False
        if self._closed:
            return
        sock, on_message = self._sock, self._on_message
        for _ in range(_BATCH):
            if self._closed or not sock.getsockopt(EVENTS) & POLLIN:
                break
            on_message(recv_frames(sock), monotonic())
        else:
            self._schedule_drain()  # more is waiting: let other tasks run first
        self._flush()

    # -- sending -------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the connection queued, without ever waiting."""
        if self._closed:
            return
        pending, sock = self._pending, self._sock
        for frames in self._conn.data_to_send():
            if pending:
                pending.append(frames)
                continue
            try:
                send_frames(sock, frames)
            except zmq.Again:
                pending.append(frames)
                assert self._loop is not None
                self._writer = self._loop.create_task(self._write_loop())
            except zmq.ZMQError as exc:
                logger.warning("dropping an outgoing event: %s", exc)
        # Sending may have consumed the descriptor's edge for a message that just arrived.
        if not self._drain_scheduled and sock.getsockopt(EVENTS) & POLLIN:
            self._schedule_drain()

    async def _write_loop(self) -> None:
        """Send what waited for room. Rare (a full high-water mark, or no peer yet), so a
        short sleep between attempts is simpler than a second reader on the edge."""
        pending, sock = self._pending, self._sock
        while pending and not self._closed:
            try:
                send_frames(sock, pending[0])
            except zmq.Again:
                await asyncio.sleep(0.005)
                continue
            pending.popleft()
        self._writer = None

    # -- time ----------------------------------------------------------------------

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
        self._on_readable()
        now = monotonic()
        for event in self._conn.handle_timers(now):
            self._on_timer_event(event)
        self._flush()
        deadline = self._conn.next_deadline()
        # With nothing scheduled, check again after one idle period: every new deadline is
        # at least that far away (heartbeats); shorter call timeouts re-arm us explicitly.
        self._wake_timer_by(deadline if deadline is not None else now + self._idle)


def _current_task(loop: asyncio.AbstractEventLoop | None) -> asyncio.Task[Any] | None:
    if loop is None:
        return None
    try:
        return asyncio.current_task(loop)
    except RuntimeError:
        return None
