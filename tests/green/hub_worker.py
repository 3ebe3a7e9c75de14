"""A worker for the hub tests (tests/green/test_hub.py). Not a test module.

    python hub_worker.py NAME OUT_ENDPOINT HEARTBEAT [rpccore|zerorpc] [LIFETIME]

Connects a server (rpccore green, or the real zerorpc 0.6.3) to the hub's ``out``
endpoint and serves ``whoami()``, ``add(a, b)``, ``slow(seconds)`` (prints ``slow NAME``
when it starts) and the stream ``count(n)``. Prints ``ready`` once connected; exits by
itself after LIFETIME seconds (default 120).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import gevent


class Worker:
    def __init__(self, name: str) -> None:
        self.name = name

    def whoami(self) -> str:
        return self.name

    def add(self, a: int, b: int) -> int:
        return a + b

    def slow(self, seconds: float) -> str:
        print(f"slow {self.name}", flush=True)
        gevent.sleep(seconds)
        return self.name

    def count(self, n: int) -> Iterator[int]:
        return iter(range(n))


def main() -> None:
    name, endpoint, heartbeat = sys.argv[1], sys.argv[2], float(sys.argv[3])
    kind = sys.argv[4] if len(sys.argv) > 4 else "rpccore"
    lifetime = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    gevent.spawn_later(lifetime, os._exit, 3)
    if kind == "zerorpc":
        import zerorpc

        class ZWorker(Worker):
            count = zerorpc.stream(Worker.count)

        server = zerorpc.Server(ZWorker(name), name=name, heartbeat=heartbeat)
    else:
        from rpccore.green import Server, stream

        class RWorker(Worker):
            count = stream(Worker.count)

        server = Server(RWorker(name), name=name, heartbeat=heartbeat)
    server.connect(endpoint)
    print("ready", flush=True)
    server.run()


if __name__ == "__main__":
    main()
