"""A test backend for the end-to-end tests: ``python backends.py KIND ENDPOINT [HEARTBEAT]``.

KIND is ``green`` (rpccore.green), ``aio`` (rpccore.aio) or ``zerorpc`` (the real zerorpc
0.6.3, which cannot publish argument names on Python 3.11). Every kind serves the same
``Shop`` service; the 0.6.3 server gets it through zerorpc's own stream decorator.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal, TypedDict


class Item(TypedDict):
    name: str
    price: float


STOCK: dict[str, Item] = {
    "apple": {"name": "apple", "price": 0.5},
    "pear": {"name": "pear", "price": 0.75},
}


class Shop:
    """A small shop, for the gateway's end-to-end tests.

    It has typed methods, a stream, methods that raise and a slow one."""

    def add(self, a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def greet(self, name: str, greeting: str = "Hello", punct: str = "!") -> str:
        """Greet someone."""
        return f"{greeting}, {name}{punct}"

    def get_item(self, name: str) -> Item:
        """One item of the stock; KeyError when there is none."""
        return STOCK[name]

    def list_items(self, order: Literal["name", "price"] = "name") -> list[Item]:
        """Every item, sorted."""
        return sorted(STOCK.values(), key=lambda item: item[order])

    def echo(self, value: Any) -> Any:
        """Return the value as received."""
        return value

    def blob(self, size: int) -> bytes:
        """``size`` bytes that are not UTF-8."""
        return b"\xff" * size

    def nan(self) -> float:
        """A value JSON cannot hold."""
        return float("nan")

    def fail(self, message: str) -> None:
        """Raise ValueError(message)."""
        raise ValueError(message)

    def slow(self, seconds: float) -> float:
        """Sleep, then return the seconds."""
        time.sleep(seconds)
        return seconds

    def pid(self) -> int:
        """The backend's process id."""
        return os.getpid()

    def _hidden(self) -> str:
        return "never exposed"

    def count(self, n: int) -> Iterator[int]:
        """Stream 0 .. n - 1."""
        yield from range(n)

    def chunks(self, n: int, size: int) -> Iterator[str]:
        """Stream n strings of size characters."""
        chunk = "x" * size
        for _ in range(n):
            yield chunk

    def fail_after(self, n: int) -> Iterator[int]:
        """Stream n items, then raise RuntimeError."""
        yield from range(n)
        raise RuntimeError(f"failed after {n}")

    def ticks(self, n: int, every: float) -> Iterator[int]:
        """Stream n items, one every ``every`` seconds (and note each in a file)."""
        for i in range(n):
            time.sleep(every)
            yield i

    # -- methods that leave a trace in a file, for tests that watch the backend --------
    # Each produced item appends one byte to ``log`` (its size counts them); the method
    # writes ``log + ".end"`` when it returns or is closed (a stream abandoned by the
    # gateway ends by GeneratorExit once the backend gives up on the channel).

    def ticks_logged(self, log: str, n: int, every: float) -> Iterator[int]:
        """ticks, counting the items produced into the file ``log``."""
        try:
            for i in range(n):
                time.sleep(every)
                _note(log)
                yield i
        finally:
            _note(log + ".end")

    def chunks_logged(self, log: str, n: int, size: int) -> Iterator[str]:
        """chunks, counting the items produced into the file ``log``."""
        chunk = "x" * size
        try:
            for _ in range(n):
                _note(log)
                yield chunk
        finally:
            _note(log + ".end")

    def slow_logged(self, log: str, seconds: float) -> float:
        """slow, noting its start in the file ``log`` and its end in ``log + ".end"``."""
        _note(log)
        try:
            time.sleep(seconds)
        finally:
            _note(log + ".end")
        return seconds


def _note(path: str) -> None:
    with open(path, "ab") as file:
        file.write(b".")


STREAMS = ("count", "chunks", "fail_after", "ticks", "ticks_logged", "chunks_logged")


def serve_green(endpoint: str, heartbeat: float) -> None:
    from rpccore.green import Server

    # Generator methods stream by themselves on our servers.
    server = Server(Shop(), name="shop", heartbeat=heartbeat, threaded=True)
    server.bind(endpoint)
    server.run()


def serve_aio(endpoint: str, heartbeat: float) -> None:
    import asyncio

    from rpccore.aio import Server

    async def main() -> None:
        server = Server(Shop(), name="shop", heartbeat=heartbeat)
        server.bind(endpoint)
        await server.run()

    asyncio.run(main())


def serve_zerorpc(endpoint: str, heartbeat: float) -> None:
    import gevent.monkey

    gevent.monkey.patch_all()
    import zerorpc

    # 0.6.3 streams only what its own decorator wraps, as class attributes.
    streaming = {name: zerorpc.stream(getattr(Shop, name)) for name in STREAMS}
    shop = type("Shop", (Shop,), streaming)()
    server = zerorpc.Server(shop, name="shop", heartbeat=heartbeat)
    server.bind(endpoint)
    server.run()


if __name__ == "__main__":
    kind, endpoint = sys.argv[1], sys.argv[2]
    heartbeat = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    {"green": serve_green, "aio": serve_aio, "zerorpc": serve_zerorpc}[kind](endpoint, heartbeat)
