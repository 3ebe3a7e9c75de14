"""The plumbing both drivers share: frames and time between a sans-IO connection and a
ZeroMQ socket, on whatever event loop the driver supplies.

No protocol rules live here, and no event loop either: a driver hands in a ``Host`` that
can run a callback soon, run one later, and watch a file descriptor (asyncio's loop, or
gevent's hub). Everything else is the same on both.

Theory of operation. The socket is a plain pyzmq socket used only with NOBLOCK:

* A watcher on ZeroMQ's file descriptor runs ``_on_readable``, which drains queued
  messages into the connection, a batch at a time (then yields, so one busy peer cannot
  starve the loop). The descriptor is edge-triggered: any operation on the socket may
  consume the edge, so after sending we read ``EVENTS`` and schedule another drain if
  messages are waiting.
* One timer runs ``_on_timer`` at the connection's next deadline; it reads what has
  arrived before judging anyone lost.
* Sending never waits: frames the socket cannot take now (a full high-water mark, no peer
  yet) wait in order and are retried a few milliseconds later.
* A socket given CurveZMQ keys (``_secure``) has a monitor from its creation, for its
  handshake events (``rpccore._curve``); a plain one pays nothing for it.

Waiting on the descriptor ourselves, rather than through zmq.green or zmq.asyncio, saves
a wrapper, a future or a greenlet switch per message: most of the cost of a small call.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any, Final, Protocol

import zmq

from ._codec import Frames
from ._curve import HANDSHAKE_EVENTS, CurveKeys, CurveSocket, monitor_event
from ._problems import ProblemLog
from ._sockets import EVENTS, POLLIN, prepare, recv_frames, send_frames

logger = logging.getLogger("rpccore")

_BATCH: Final = 256  # messages handled per callback before letting others run
# Replies made while a batch is read go out together (see _flush_reply), at most this
# many, and none held longer than this many seconds.
REPLY_BATCH: Final = 32
REPLY_HOLD: Final = 0.001
_RETRY: Final = 0.005  # seconds between attempts to send what the socket refused
_DISCONNECTED: Final = int(zmq.EVENT_DISCONNECTED)


class Handle(Protocol):
    def cancel(self) -> None: ...


class Host(Protocol):
    """What a driver's event loop offers the pump."""

    def call_soon(self, callback: Callable[[], None]) -> None: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle: ...
    def watch(self, fd: int, callback: Callable[[], None]) -> Handle: ...


class Connection(Protocol):
    def data_to_send(self) -> list[Frames]: ...
    def next_deadline(self) -> float | None: ...
    def handle_timers(self, now: float) -> list[Any]: ...


class Pump:
    """Drives a sans-IO connection over a socket. Subclasses handle what arrives
    (``_on_message``, ``_on_timer_event``, ``_on_disconnect``)."""

    def __init__(
        self,
        sock: Any,
        conn: Connection,
        *,
        max_message_size: int | None,
        idle_period: float,
    ) -> None:
        # Any: pyzmq types getsockopt as int | bytes, and the hot path reads EVENTS often.
        self._sock: Any = sock
        prepare(sock, max_message_size=max_message_size)
        self._conn = conn
        self._idle = idle_period
        self._host: Host | None = None
        self._handles: list[Handle] = []
        self._timer: Handle | None = None
        self._timer_target = float("inf")
        self._drain_scheduled = False
        self._flush_scheduled = False
        self._reading = False  # inside _on_readable's loop
        self._more = 0  # while reading: another message waits (POLLIN) or not (0)
        self._held = 0  # replies queued since the last flush (_flush_reply)
        self._held_since = 0.0
        self._retry: Handle | None = None
        self._pending: deque[Frames] = deque()
        self._monitor: Any = None
        self._curve: CurveSocket | None = None
        self._closed = False

    def _secure(
        self, keys: CurveKeys | None, problems: ProblemLog, *accepted: type[CurveKeys]
    ) -> None:
        """Give the socket CurveZMQ keys, of one of the ``accepted`` types; call it before
        any bind or connect. None leaves the socket plain, at no cost. On an error the
        socket is closed (the constructor calling this raises)."""
        if keys is None:
            return
        try:
            if not isinstance(keys, accepted):
                names = " or ".join(kind.__name__ for kind in accepted)
                raise TypeError(
                    f"{type(self).__name__}(curve=) takes {names}, got {type(keys).__name__}"
                )
            self._curve = CurveSocket(self._sock, keys, problems)
            # Watched from now on, not from the start of the pump: a refused client is not
            # retried, so its only handshake event may come before the pump starts.
            self._monitor = self._sock.get_monitor_socket(HANDSHAKE_EVENTS | _DISCONNECTED)
        except BaseException:
            self._close_pump()  # e.g. another ZAP handler holds the context's endpoint
            raise

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
        return self._host is not None

    def _start_pump(self, host: Host, *, watch_disconnects: bool = False) -> None:
        """Start on ``host`` (idempotent); ``watch_disconnects``: call ``_on_disconnect``
        whenever a peer's connection drops."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._host is None:
            self._host = host
            self._handles.append(host.watch(self._sock.getsockopt(zmq.FD), self._on_readable))
            self._schedule_drain()  # messages may be queued already
            self._wake_timer_by(monotonic() + self._idle)
            if watch_disconnects or self._curve is not None:
                self._watch_disconnects(host)
            if self._curve is not None:
                self._curve.start(host)

    def _watch_disconnects(self, host: Host) -> None:
        if self._monitor is None:
            self._monitor = self._sock.get_monitor_socket(_DISCONNECTED)
        self._handles.append(host.watch(self._monitor.getsockopt(zmq.FD), self._on_monitor))
        host.call_soon(self._on_monitor)  # events may predate the watcher

    def _on_monitor(self) -> None:
        monitor = self._monitor
        while not self._closed and monitor.getsockopt(EVENTS) & POLLIN:
            event, value, endpoint = monitor_event(recv_frames(monitor))
            if event == _DISCONNECTED:
                self._on_disconnect()
            elif self._curve is not None:
                self._curve.on_event(event, value, endpoint)

    def _close_pump(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in (*self._handles, self._timer, self._retry):
            if handle is not None:
                handle.cancel()
        self._pending.clear()
        if self._curve is not None:
            self._curve.close()
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close(linger=0)

    # -- receiving -----------------------------------------------------------------

    def _schedule_drain(self, *, after_io: bool = False) -> None:
        """Drain soon; ``after_io``: only once the loop has polled its other sockets (after
        a full batch, so one flooding peer cannot delay everybody else's replies)."""
        if not self._drain_scheduled and self._host is not None:
            self._drain_scheduled = True
            if after_io:
                # A zero-delay timer runs after the next poll; gevent runs queued
                # callbacks back to back and polls only every 50 of them.
                self._host.call_later(0.0, self._on_readable)
            else:
                self._host.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        self._drain_scheduled = False
        if self._closed:
            return
        sock, on_message = self._sock, self._on_message
        more = sock.getsockopt(EVENTS) & POLLIN
        self._reading = True
        try:
            for _ in range(_BATCH):
                # A handler run by on_message may close us; then stop reading.
                if self._closed or not more:
                    break
                frames = recv_frames(sock)
                # Whether another message waits, asked once: for this loop, and for the
                # reply of the handler on_message may run (_flush_reply). One that comes
                # while the handler runs is drained next time (_flush looks at the end).
                more = self._more = sock.getsockopt(EVENTS) & POLLIN
                on_message(frames, monotonic())
            else:
                self._schedule_drain(after_io=True)  # more is waiting: let others run first
        finally:
            self._reading = False
        self._flush()

    # -- sending -------------------------------------------------------------------

    def _flush_reply(self) -> None:
        """Send the reply a handler just queued: now, or, if the handler ran to its end
        while a batch of requests is read (it never waited) and more requests wait, with
        the batch's other replies: when the batch ends, or REPLY_BATCH replies wait, or
        the first has waited REPLY_HOLD seconds (checked here, and by ``_release_held``
        before the next handler runs). Sent one by one, each reply woke ZeroMQ's I/O
        thread, which shares the core: with 64 calls in flight, batching them gave a fifth
        more calls a second. A lone request's reply leaves at once."""
        if self._reading and self._more:
            now = monotonic()
            if not self._held:
                self._held_since = now
            self._held += 1
            if self._held < REPLY_BATCH and now - self._held_since < REPLY_HOLD:
                return
        self._flush()

    def _release_held(self, now: float, slow: bool) -> None:
        """A handler is about to run in the read loop, which waits for it: send the held
        replies first if it is ``slow`` (its method last kept the loop REPLY_HOLD or longer)
        or the first of them has waited REPLY_HOLD already."""
        if self._held and (slow or now - self._held_since >= REPLY_HOLD):
            self._flush()

    def _flush(self) -> None:
        """Send what the connection queued, without ever waiting."""
        self._held = 0
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
                self._schedule_retry()
            except zmq.ZMQError as exc:
                logger.warning("dropping an outgoing event: %s", exc)
        # Sending may have consumed the descriptor's edge for a message that just arrived.
        if not self._drain_scheduled and sock.getsockopt(EVENTS) & POLLIN:
            self._schedule_drain()

    def _flush_soon(self) -> None:
        """Flush once the running callback is done: calls begun by many tasks in one loop
        turn then reach ZeroMQ together, and its I/O thread is woken once, not per call."""
        if not self._flush_scheduled and self._host is not None:
            self._flush_scheduled = True
            self._host.call_soon(self._flush_scheduled_now)

    def _flush_scheduled_now(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _schedule_retry(self) -> None:
        """Frames wait for room only when the high-water mark is full or no peer is
        connected yet: rare enough that retrying on a short timer beats a second watcher."""
        if self._retry is None and self._host is not None:
            self._retry = self._host.call_later(_RETRY, self._send_pending)

    def _send_pending(self) -> None:
        self._retry = None
        pending, sock = self._pending, self._sock
        while pending and not self._closed:
            try:
                send_frames(sock, pending[0])
            except zmq.Again:
                self._schedule_retry()
                return
            except zmq.ZMQError as exc:
                logger.warning("dropping an outgoing event: %s", exc)
            pending.popleft()

    # -- time ----------------------------------------------------------------------

    def _wake_timer_by(self, when: float) -> None:
        """Make sure the timers run by ``when``."""
        if when < self._timer_target and self._host is not None and not self._closed:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_target = when
            self._timer = self._host.call_later(max(0.0, when - monotonic()), self._on_timer)

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
