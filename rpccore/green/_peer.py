"""The gevent plumbing shared by every green socket owner: one reader greenlet, one timer
greenlet, and a sender that never blocks the greenlet that produced the bytes.

No protocol rules live here: the sans-IO connection decides everything; this module only
moves frames and time between it and a ``zmq.green`` socket.
"""

from __future__ import annotations

import logging
from collections import deque
from time import monotonic
from typing import Any, Protocol

import gevent
import gevent.event
import zmq
import zmq.green

from .._codec import Frames
from .._sockets import prepare

logger = logging.getLogger("rpccore.green")


class Connection(Protocol):
    def data_to_send(self) -> list[Frames]: ...
    def next_deadline(self) -> float | None: ...
    def handle_timers(self, now: float) -> list[Any]: ...


class GreenPeer:
    """Owns a socket and drives a sans-IO connection with greenlets."""

    def __init__(
        self,
        sock_type: int,
        conn: Connection,
        *,
        context: zmq.green.Context[Any] | None,
        max_message_size: int | None,
        idle_period: float,
    ) -> None:
        self._context = context if context is not None else zmq.green.Context.instance()
        self._sock: Any = self._context.socket(sock_type)
        prepare(self._sock, max_message_size=max_message_size)
        self._conn = conn
        self._idle = idle_period
        self._pending: deque[Frames] = deque()
        self._writer: gevent.Greenlet | None = None
        self._reader: gevent.Greenlet | None = None
        self._timer: gevent.Greenlet | None = None
        self._timer_target = float("inf")
        self._wake = gevent.event.Event()
        self._closed = False
        self._monitor: Any = None
        self._monitor_task: gevent.Greenlet | None = None

    # -- what subclasses implement -------------------------------------------------

    def _on_message(self, frames: Frames, now: float) -> None:
        raise NotImplementedError

    def _on_timer_event(self, event: Any) -> None:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._reader is None:
            self._reader = gevent.spawn(self._read_loop)
            self._timer = gevent.spawn(self._timer_loop)

    def _watch_disconnects(self) -> None:
        """Call ``_on_disconnect`` whenever a peer's connection drops."""
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._monitor_task = gevent.spawn(self._monitor_loop)

    def _monitor_loop(self) -> None:
        while True:
            try:
                self._monitor.recv_multipart()
            except zmq.ZMQError:
                return
            self._on_disconnect()

    def _on_disconnect(self) -> None:
        pass

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        current = gevent.getcurrent()
        for task in (self._reader, self._timer, self._writer, self._monitor_task):
            if task is not None and task is not current:
                task.kill(block=False)
        self._pending.clear()
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close(linger=0)

    # -- sending -------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the connection queued, without ever blocking: frames the socket
        cannot take now (high-water mark, no peer yet) wait in order for the writer."""
        pending = self._pending
        send = self._sock.send_multipart
        for frames in self._conn.data_to_send():
            if pending:
                pending.append(frames)
                continue
            try:
                send(frames, zmq.NOBLOCK)
            except zmq.Again:
                pending.append(frames)
                self._writer = gevent.spawn(self._write_loop)
            except zmq.ZMQError as exc:
                if self._closed:
                    return
                logger.warning("dropping an outgoing event: %s", exc)

    def _write_loop(self) -> None:
        pending, send = self._pending, self._sock.send_multipart
        while pending:
            send(pending[0])  # zmq.green: waits cooperatively for room
            pending.popleft()

    # -- receiving and time --------------------------------------------------------

    def _read_loop(self) -> None:
        recv = self._sock.recv_multipart
        on_message = self._on_message
        while True:
            try:
                frames = recv(copy=True)
            except zmq.ZMQError:
                if self._closed:
                    return
                raise
            on_message(frames, monotonic())
            # Drain what is already queued before sending, so replies go out in batches.
            self._drain()
            self._flush()

    def _drain(self, limit: int = 256) -> None:
        """Handle up to ``limit`` messages that are already queued, without waiting."""
        recv, on_message = self._sock.recv_multipart, self._on_message
        for _ in range(limit):
            try:
                frames = recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            on_message(frames, monotonic())

    def _wake_timer_by(self, when: float) -> None:
        """Make sure the timer greenlet wakes up by ``when``."""
        if when < self._timer_target:
            self._timer_target = when
            self._wake.set()

    def _timer_loop(self) -> None:
        conn, wake = self._conn, self._wake
        while True:
            now = monotonic()
            deadline = conn.next_deadline()
            # With nothing scheduled, sleep one idle period: every new deadline is at least
            # that far away (heartbeats), and shorter call timeouts wake us explicitly.
            target = deadline if deadline is not None else now + self._idle
            self._timer_target = target
            wake.clear()
            if target > now:
                wake.wait(target - now)
            # Read what has arrived before judging anyone lost: after a busy spell the
            # peer's heartbeats may be waiting in the socket.
            self._drain(limit=10_000)
            for event in conn.handle_timers(monotonic()):
                self._on_timer_event(event)
            self._flush()
