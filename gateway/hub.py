"""``zerogate hub``: a load-balancing ZeroRPC hub on gevent's loop.

Clients connect to ``in``, workers (rpccore or zerorpc servers that *connect*) to ``out``;
both are ROUTER sockets and ``rpccore._hub.HubRouter`` decides where each event goes. This
module only moves frames: plain pyzmq sockets, non-blocking, watched by gevent io
watchers, plus a timer and a monitor on ``out`` that trigger the search for workers.

Finding workers: a worker never sends first, so the hub must guess its routing id. libzmq
names a ROUTER's anonymous peers ``0x00`` + a 32-bit counter, one step per accepted
connection. Before binding anything else, ``out`` binds a private inproc endpoint and a
probe DEALER sends one message through it: its routing id is the counter's current value.
With ROUTER_MANDATORY a send to an id that is not connected fails at once with
EHOSTUNREACH, so the hub pings the next ids (``HubRouter.candidates``) whenever a
connection completes its handshake, and each heartbeat period.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final

import gevent
import gevent.event
import zmq

from rpccore._hub import HubRouter, id_number
from rpccore._naming import ENDPOINT_FORMS, is_endpoint
from rpccore._sockets import EVENTS, POLLIN, bind, prepare, recv_frames, send_frames

from ._yaml import MalformedYaml, Problems, Section, compose

logger = logging.getLogger("rpccore")

DEFAULT_HEARTBEAT: Final = 5.0
_BATCH: Final = 256  # events read from one socket per pass
_PASSES: Final = 8  # passes per drain before yielding to the loop
_REPROBE: Final = (0.0, 0.05, 0.25)  # after a connection event: the pipe may attach late


class Hub:
    def __init__(
        self,
        in_endpoints: Sequence[str],
        out_endpoints: Sequence[str],
        *,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        self._context: zmq.Context[Any] = zmq.Context()
        self._in: Any = self._context.socket(zmq.ROUTER)
        self._out: Any = self._context.socket(zmq.ROUTER)
        for sock in (self._in, self._out):
            prepare(sock, max_message_size=None)
        self._out.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router = HubRouter(heartbeat, probe_base=self._probe_counter())
        self._monitor: Any = self._out.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        self.in_endpoints = bind(self._in, in_endpoints)
        self.out_endpoints = bind(self._out, out_endpoints)
        self._watchers: list[Any] = []
        self._drain_scheduled = False
        self._stopped = gevent.event.Event()

    def __repr__(self) -> str:
        return f"<Hub in={self.in_endpoints} out={self.out_endpoints} {self.router!r}>"

    def stats(self) -> dict[str, Any]:
        return self.router.stats()

    def _probe_counter(self) -> int:
        endpoint = f"inproc://zerogate-hub-probe-{os.getpid()}-{id(self)}"
        self._out.bind(endpoint)
        probe = self._context.socket(zmq.DEALER)
        try:
            probe.setsockopt(zmq.LINGER, 0)
            probe.connect(endpoint)
            probe.send_multipart([b"", b"probe"])
            if not self._out.poll(5000):
                raise RuntimeError("the hub's probe message did not arrive")
            frames = self._out.recv_multipart()
        finally:
            probe.close(linger=0)
        number = id_number(frames[0])
        if number is None:
            raise RuntimeError(f"unexpected routing id from libzmq: {frames[0]!r}")
        return number

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        loop = gevent.get_hub().loop
        for sock, callback in (
            (self._in, self._schedule_drain),
            (self._out, self._schedule_drain),
            (self._monitor, self._on_monitor),
        ):
            watcher = loop.io(sock.getsockopt(zmq.FD), 1)
            watcher.start(callback)
            self._watchers.append(watcher)
        period = self.router.heartbeat / 2
        timer = loop.timer(period, period)
        timer.start(self._on_tick)
        self._watchers.append(timer)
        self._schedule_drain()
        self._probe(everyone=True)

    def run(self) -> None:
        self.start()
        self._stopped.wait()
        self.close()

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
            watcher.close()
        self._watchers.clear()
        self._out.disable_monitor()
        self._monitor.close(linger=0)
        self._in.close(linger=0)
        self._out.close(linger=0)
        self._context.term()

    # -- moving frames ------------------------------------------------------------------

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            gevent.get_hub().loop.run_callback(self._drain)

    def _drain(self) -> None:
        """Read everything queued on both sockets (up to _BATCH each per pass), then send
        what the router produced in one go: fewer wake-ups of ZeroMQ's I/O thread."""
        self._drain_scheduled = False
        if self._stopped.is_set():
            return
        router, sin, sout = self.router, self._in, self._out
        from_client, from_worker = router.from_client, router.from_worker
        for _ in range(_PASSES):
            now = monotonic()
            count = 0
            while count < _BATCH and sin.getsockopt(EVENTS) & POLLIN:
                from_client(recv_frames(sin), now)
                count += 1
            received = count
            count = 0
            while count < _BATCH and sout.getsockopt(EVENTS) & POLLIN:
                from_worker(recv_frames(sout), now)
                count += 1
            received += count
            self._flush()
            if not received:
                return  # both sockets checked after the last send: the edges are re-armed
        # More is waiting: let the loop poll first (edges were consumed, so re-arm by hand).
        timer = gevent.get_hub().loop.timer(0.0)
        timer.start(self._schedule_drain)

    def _flush(self) -> None:
        router = self.router
        to_workers = router.to_workers()
        if to_workers:
            sout = self._out
            for frames in to_workers:
                try:
                    send_frames(sout, frames)
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EHOSTUNREACH:
                        router.unreachable(frames[0])
                    else:
                        logger.warning("hub: dropping an event for a worker: %s", exc)
        to_clients = router.to_clients()
        if to_clients:
            sin = self._in
            for frames in to_clients:
                try:
                    send_frames(sin, frames)
                except zmq.ZMQError as exc:
                    logger.warning("hub: dropping an event for a client: %s", exc)

    # -- finding and watching workers ---------------------------------------------------

    def _probe(self, *, everyone: bool) -> None:
        """Ping the workers due (all of them if ``everyone``) and the candidate ids."""
        if self._stopped.is_set():
            return
        router, now = self.router, monotonic()
        known = list(router.workers) if everyone else router.due_pings(now)
        for wid in known + router.candidates():
            try:
                send_frames(self._out, router.ping(wid, now))
            except zmq.ZMQError as exc:
                if exc.errno != errno.EHOSTUNREACH:
                    raise
                router.unreachable(wid)
            else:
                router.reachable(wid)
        self._schedule_drain()

    def _on_tick(self) -> None:
        self._drain()
        self.router.tick(monotonic())
        self._probe(everyone=False)

    def _on_monitor(self) -> None:
        monitor, events = self._monitor, 0
        while monitor.getsockopt(EVENTS) & POLLIN:
            monitor.recv_multipart()
            events += 1
        if events:
            for delay in _REPROBE:
                gevent.spawn_later(delay, self._probe, everyone=True)


# -- the hub file -------------------------------------------------------------------------


class HubFileError(ValueError):
    pass


@dataclass(frozen=True)
class HubFile:
    in_endpoint: str
    out_endpoint: str
    heartbeat: float | None


_HUB_KEYS: Final = ("in", "out", "type", "heartbeat")


def load_hub_file(path: str) -> HubFile:
    """Read a hub file (``in``, ``out``, ``type: queue``, optional ``heartbeat``); every
    problem is reported as ``FILE line N: key: message`` in one HubFileError."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise HubFileError(f"cannot read {path}: {exc}") from None
    try:
        root = compose(text)
    except MalformedYaml as exc:
        where = f" line {exc.line}" if exc.line is not None else ""
        raise HubFileError(f"{path}{where}: not valid YAML: {exc}") from None
    problems = Problems(path)
    top = Section(problems, "", 1, root, _HUB_KEYS)
    endpoint = f"a ZeroMQ endpoint ({ENDPOINT_FORMS})"
    checks = (top.require("in", endpoint), top.require("out", endpoint))
    top.require("type", "queue")
    in_endpoint = top.string("in", "", _endpoint, endpoint)
    out_endpoint = top.string("out", "", _endpoint, endpoint)
    top.string("type", "queue", lambda text: text if text == "queue" else None, "queue")
    heartbeat = top.seconds("heartbeat", 0.0) or None
    messages = problems.messages()
    if messages or not all(checks):
        raise HubFileError("\n".join(messages))
    return HubFile(in_endpoint, out_endpoint, heartbeat)


def _endpoint(text: str) -> str | None:
    return text if is_endpoint(text) else None  # wildcards allowed: the hub binds


# -- the command line ---------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    in_endpoint, out_endpoint, heartbeat = args.in_, args.out, args.heartbeat
    if args.file is not None:
        try:
            config = load_hub_file(args.file)
        except HubFileError as exc:
            print(f"zerogate hub: {exc}", file=sys.stderr)
            return 2
        in_endpoint = in_endpoint or config.in_endpoint
        out_endpoint = out_endpoint or config.out_endpoint
        heartbeat = heartbeat if heartbeat is not None else config.heartbeat
    if not in_endpoint or not out_endpoint:
        print("zerogate hub: give a hub file, or both --in and --out", file=sys.stderr)
        return 2
    if heartbeat is None:
        heartbeat = DEFAULT_HEARTBEAT
    if not heartbeat > 0:
        print("zerogate hub: --heartbeat must be a positive number", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="zerogate hub: %(message)s")
    try:
        hub = Hub([in_endpoint], [out_endpoint], heartbeat=heartbeat)
    except (zmq.ZMQError, RuntimeError) as exc:
        print(f"zerogate hub: cannot start: {exc}", file=sys.stderr)
        return 2
    gevent.signal_handler(signal.SIGINT, hub.stop)
    gevent.signal_handler(signal.SIGTERM, hub.stop)
    print(f"in {hub.in_endpoints[0]}", flush=True)
    print(f"out {hub.out_endpoints[0]}", flush=True)
    hub.run()
    print(f"zerogate hub: stopped {hub.router!r}", file=sys.stderr)
    return 0
