"""zerorpc 0.6.3's one-way sockets, in their own process, for the PUB/SUB and PUSH/PULL
interop tests.

    python zrpc_oneway.py ROLE (--bind | --connect ENDPOINT) [options]

ROLE is ``publisher`` or ``pusher`` (zerorpc.Publisher / zerorpc.Pusher emit events) or
``subscriber`` or ``puller`` (zerorpc.Subscriber / zerorpc.Puller receive them).

stdout, one line each: with ``--bind``, the bound endpoint first. A receiver then prints
one JSON line per event, ``{"method": NAME, "args": "<python literal>"}`` (a literal keeps
what JSON would blur: bytes, ints vs floats), and exits after ``--count`` events. A sender
emits ``--count`` events (0: until killed), ``--interval`` seconds apart: ``METHOD(i)``, or
``METHOD(i, values)`` with ``--values`` (a Python literal dict, read from stdin before
anything else), then stays alive so ZeroMQ can deliver them. With ``--trace-id`` and
``--span-id`` a sender's events carry those header keys, put there by a 0.6.3 middleware
(``get_task_context``), the way 0.6.3 applications propagate context (spec 13.2). The
process ends by itself after ``--lifetime`` seconds at most.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
from typing import Any

import gevent
import zerorpc
import zmq


class Recorder:
    """Prints every event it receives; ends the process after ``count`` of them."""

    def __init__(self, count: int) -> None:
        self._left = count

    def _record(self, method: str, args: tuple[Any, ...]) -> None:
        print(json.dumps({"method": method, "args": repr(list(args))}), flush=True)
        self._left -= 1
        if self._left <= 0:
            os._exit(0)

    def tick(self, *args: Any) -> None:
        self._record("tick", args)

    def add(self, *args: Any) -> None:
        self._record("add", args)

    def values(self, *args: Any) -> None:
        self._record("values", args)


SENDERS = {"publisher": zerorpc.Publisher, "pusher": zerorpc.Pusher}
RECEIVERS = {"subscriber": zerorpc.Subscriber, "puller": zerorpc.Puller}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=sorted((*SENDERS, *RECEIVERS)))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bind", action="store_true", help="bind tcp://127.0.0.1:*")
    where.add_argument("--connect", metavar="ENDPOINT")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--method", default="tick")
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--values", action="store_true")
    parser.add_argument("--trace-id")
    parser.add_argument("--span-id")
    parser.add_argument("--lifetime", type=float, default=30.0)
    options = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="zrpc_oneway: %(levelname)s %(message)s")
    gevent.spawn_later(options.lifetime, os._exit, 3)

    values = ast.literal_eval(sys.stdin.read()) if options.values else None
    if options.trace_id:
        task_context = {"trace_id": options.trace_id, "span_id": options.span_id}
        zerorpc.Context.get_instance().register_middleware(
            {"get_task_context": lambda: task_context}
        )

    if options.role in SENDERS:
        sock = SENDERS[options.role]()
    else:
        sock = RECEIVERS[options.role](Recorder(options.count))
    if options.bind:
        sock.bind("tcp://127.0.0.1:*")
        print(sock._events._socket.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    else:
        sock.connect(options.connect)

    if options.role in RECEIVERS:
        sock.run()
        return
    emit = getattr(sock, options.method)
    i = 0
    while options.count == 0 or i < options.count:
        if values is None:
            emit(i)
        else:
            emit(i, values)
        i += 1
        gevent.sleep(options.interval)
    gevent.sleep(options.lifetime)  # keep the socket open: queued events still go out


if __name__ == "__main__":
    main()
