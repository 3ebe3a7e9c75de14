"""The real zerorpc 0.6.3 server, in its own process, for the interop tests.

    python zrpc_server.py [--heartbeat SECONDS] [--lifetime SECONDS]

Serves the test service (``InteropMethods`` from ../interop_support.py, named ``Interop``)
on ``tcp://127.0.0.1`` with a free port. stdout: the bound endpoint as the first line,
then ``started slow`` each time a ``slow`` call begins (so a test knows a call is in
flight before it kills this process). Runs until killed, or ``--lifetime`` seconds at
most, so that no test can leave it behind for long.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import gevent
import zerorpc
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interop_support import SLOW_DOC, InteropMethods


class Interop(InteropMethods):
    count = zerorpc.stream(InteropMethods.count)
    empty_stream = zerorpc.stream(InteropMethods.empty_stream)
    fail_midway = zerorpc.stream(InteropMethods.fail_midway)

    def slow(self, seconds):
        print("started slow", flush=True)
        gevent.sleep(seconds)
        return seconds

    slow.__doc__ = SLOW_DOC


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--lifetime", type=float, default=120.0)
    options = parser.parse_args()
    # zerorpc logs every remote error with its traceback; keep stderr readable.
    logging.basicConfig(level=logging.ERROR, format="zrpc_server: %(levelname)s %(message)s")

    server = zerorpc.Server(Interop(), heartbeat=options.heartbeat)
    server.bind("tcp://127.0.0.1:*")
    endpoint = server._events._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
    print(endpoint, flush=True)
    gevent.spawn_later(options.lifetime, os._exit, 3)
    server.run()


if __name__ == "__main__":
    main()
