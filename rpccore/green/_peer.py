"""The gevent plumbing shared by every green socket owner.

No protocol rules live here: the sans-IO connection decides everything; this module only
moves frames and time between it and a ZeroMQ socket.

Theory of operation. The socket is a plain (non-green) pyzmq socket used only with
NOBLOCK, and all waiting happens in gevent's hub:

* An io watcher on ZeroMQ's file descriptor runs ``_on_readable`` in the hub, which
  drains queued messages into the connection. The descriptor is edge-triggered: any
  operation on the socket may consume the edge, so after sending we read ``EVENTS`` and
  schedule another drain if messages are waiting.
* A hub timer runs ``_on_timer`` at the connection's next deadline.
* Greenlets that send (handlers, callers) never block: frames the socket cannot take now
  (high-water mark, no peer yet) wait, in order, for a writer greenlet.

This is much cheaper than ``zmq.green``, whose every send and receive goes through a
greenlet-aware wrapper; delivering results from the hub also lets a waiting caller be
switched to directly, without an extra trip through the event loop.
"""

from __future__ import annotations

import logging
from collections import deque
from time import monotonic
from typing import Any, Final, Protocol

import gevent
import zmq
import zmq.green

from .._codec import Frames
from .._sockets import EVENTS, POLLIN, plain_context, prepare, recv_frames, send_frames

logger = logging.getLogger("rpccore.green")

_BATCH: Final = 256  # messages handled per hub callback before letting others run


class Connection(Protocol):
    def data_to_send(self) -> list[Frames]: ...
    def next_deadline(self) -> float | None: ...
    def handle_timers(self, now: float) -> list[Any]: ...


class GreenPeer:
    """Owns a socket and drives a sans-IO connection from gevent's hub."""

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
        # gevent sockets; ours is a plain socket on the same libzmq context, since all
        # waiting happens in our own hub watchers.
        self._context = context if context is not None else zmq.green.Context.instance()
        # Any: pyzmq types getsockopt as int | bytes, and the hot path reads EVENTS often.
        self._sock: Any = plain_context(self._context).socket(sock_type)
        prepare(self._sock, max_message_size=max_message_size)
        self._conn = conn
        self._idle = idle_period
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop
        self._watcher: Any = None
        self._timer: Any = None
        self._timer_target = float("inf")
        self._drain_scheduled = False
        self._pending: deque[Frames] = deque()
        self._writer: gevent.Greenlet | None = None
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
        return self._watcher is not None

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._watcher is None:
            fd = self._sock.getsockopt(zmq.FD)
            self._watcher = self._loop.io(fd, 1)
            self._watcher.start(self._on_readable)
            self._schedule_drain()  # messages may be queued already
            self._wake_timer_by(monotonic() + self._idle)

    def _watch_disconnects(self) -> None:
        """Call ``_on_disconnect`` whenever a peer's connection drops."""
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        watcher = self._loop.io(self._monitor.getsockopt(zmq.FD), 1)
        self._monitor_watcher = watcher
        watcher.start(self._on_monitor)
        self._loop.run_callback(self._on_monitor)  # events may predate the watcher

    def _on_monitor(self) -> None:
        monitor = self._monitor
        while not self._closed and monitor.getsockopt(EVENTS) & POLLIN:
            recv_frames(monitor)
            self._on_disconnect()

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watcher in (self._watcher, self._timer, getattr(self, "_monitor_watcher", None)):
            if watcher is not None:
                watcher.stop()
        if self._writer is not None and self._writer is not gevent.getcurrent():
            self._writer.kill(block=False)
        self._pending.clear()
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close(linger=0)

    # -- receiving (in the hub) ----------------------------------------------------

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.run_callback(self._on_readable)

    def _on_readable(self) -> None:
        self._drain_scheduled = False
        if self._closed:
            return
        sock, on_message = self._sock, self._on_message
        for _ in range(_BATCH):
            # A handler run by on_message may close us; then stop reading.
            if self._closed or not sock.getsockopt(EVENTS) & POLLIN:
                break
            on_message(recv_frames(sock), monotonic())
        else:
            self._schedule_drain()  # more is waiting: let other greenlets run first
        self._flush()

    # -- sending -------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the connection queued, without ever blocking."""
        if self._closed:
            return
        pending = self._pending
        sock = self._sock
        for frames in self._conn.data_to_send():
            if pending:
                pending.append(frames)
                continue
            try:
                send_frames(sock, frames)
            except zmq.Again:
                pending.append(frames)
                self._writer = gevent.spawn(self._write_loop)
            except zmq.ZMQError as exc:
                logger.warning("dropping an outgoing event: %s", exc)
        # Sending may have consumed the descriptor's edge for a message that just arrived.
        if not self._drain_scheduled and sock.getsockopt(EVENTS) & POLLIN:
            self._schedule_drain()

    def _write_loop(self) -> None:
        """Send what waited for room. Rare (a full high-water mark, or no peer yet), so a
        short sleep between attempts is simpler than a second watcher on the edge."""
        pending, sock = self._pending, self._sock
        while pending and not self._closed:
            try:
                send_frames(sock, pending[0])
            except zmq.Again:
                gevent.sleep(0.005)
                continue
            pending.popleft()
        self._writer = None

    # -- time (in the hub) ---------------------------------------------------------

    def _wake_timer_by(self, when: float) -> None:
        """Make sure the timers run by ``when``."""
        if when < self._timer_target and not self._closed:
            if self._timer is not None:
                self._timer.stop()
            self._timer_target = when
            self._timer = self._loop.timer(max(0.0, when - monotonic()))
            self._timer.start(self._on_timer)

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
