"""A green rpccore server for the HAProxy test (tests/green/test_haproxy.py). Not a test
module: pytest does not collect it.

    python ha_server.py NAME HEARTBEAT [LIFETIME]

Serves ``whoami()`` (returns NAME) and ``slow(seconds)`` on ``tcp://127.0.0.1:*``, prints
the bound endpoint as its first stdout line, then ``slow NAME`` each time a ``slow`` call
starts (so the test knows the call is in flight on this server). It exits by itself after
LIFETIME seconds (default 120), so it cannot outlive a test run killed hard.
"""

from __future__ import annotations

import os
import sys

import gevent

from rpccore.green import Server


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def whoami(self) -> str:
        """This server's name."""
        return self.name

    def slow(self, seconds: float) -> str:
        """Wait ``seconds`` cooperatively (heartbeats keep flowing), then return the name."""
        print(f"slow {self.name}", flush=True)
        gevent.sleep(seconds)
        return self.name


def main() -> None:
    name, heartbeat = sys.argv[1], float(sys.argv[2])
    lifetime = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    gevent.spawn_later(lifetime, os._exit, 3)
    server = Server(Named(name), name=name, heartbeat=heartbeat)
    (endpoint,) = server.bind("tcp://127.0.0.1:*")
    print(endpoint, flush=True)
    server.run()


if __name__ == "__main__":
    main()
