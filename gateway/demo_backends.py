"""The demo's backend services; ``zerogate demo`` runs each in a process of its own:

    python -m gateway.demo_backends calc        # Calc on rpccore.green (gevent), threaded
    python -m gateway.demo_backends inventory   # Inventory on rpccore.aio (asyncio)
    python -m gateway.demo_backends collector   # the trace collector, storing in memory

Each binds a free loopback port (``--bind``, default ``tcp://127.0.0.1:*``), prints the bound
endpoint as the one line of its stdout, and serves until SIGTERM or SIGINT. The collector
binds two, where it takes records and where it answers queries, and prints both on its line,
in that order. With
``--until-stdin-closes`` it also stops when its stdin reaches end of file: the demo holds the
other end of that pipe, so a backend never outlives a demo that was killed outright.

The two drivers run in separate processes, as two real services would: gevent's hub and
asyncio's loop each want the main thread, and the demo shows that both speak the same wire.
Between them they have typed methods (TypedDict, Literal) with a docstring each, streams, a
method that raises, and slow ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Final, Literal, TypedDict

LOOPBACK: Final = "tcp://127.0.0.1:*"
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class Point(TypedDict):
    x: float
    y: float


class Calc:
    """A small calculator, on the gevent driver."""

    def add(self, a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def greet(self, name: str, greeting: str = "Hello") -> str:
        """Build a greeting for ``name``."""
        return f"{greeting}, {name}!"

    def midpoint(self, a: Point, b: Point) -> Point:
        """The point halfway between two points."""
        return {"x": (a["x"] + b["x"]) / 2, "y": (a["y"] + b["y"]) / 2}

    def count(self, n: int, delay: float = 0.0) -> Iterator[int]:
        """Stream the integers from 0 to n - 1, waiting ``delay`` seconds before each."""
        for i in range(n):
            time.sleep(delay)
            yield i

    def divide(self, a: float, b: float) -> float:
        """Divide a by b; raises ZeroDivisionError when b is 0."""
        return a / b

    def slow(self, seconds: float = 1.0) -> float:
        """Wait for ``seconds`` (blocking), then return it."""
        time.sleep(seconds)
        return seconds


Category = Literal["fruit", "vegetable", "tool"]


class Item(TypedDict):
    sku: str
    name: str
    category: Category
    price: float
    stock: int


class Reservation(TypedDict):
    sku: str
    quantity: int
    left: int  # the stock after this reservation


def _stock() -> dict[str, Item]:
    items: list[Item] = [
        {"sku": "apple", "name": "Apple", "category": "fruit", "price": 0.5, "stock": 120},
        {"sku": "banana", "name": "Banana", "category": "fruit", "price": 0.25, "stock": 80},
        {"sku": "carrot", "name": "Carrot", "category": "vegetable", "price": 0.1, "stock": 300},
        {"sku": "hammer", "name": "Hammer", "category": "tool", "price": 12.0, "stock": 5},
    ]
    return {item["sku"]: item for item in items}


class Inventory:
    """The items of a small shop, on the asyncio driver."""

    def __init__(self) -> None:
        self._items = _stock()

    async def list_items(self, category: Category | None = None) -> list[Item]:
        """List the items, or only those of one category."""
        return [
            item
            for item in self._items.values()
            if category is None or item["category"] == category
        ]

    async def get_item(self, sku: str) -> Item:
        """The item with this SKU; raises KeyError when there is none."""
        return self._item(sku)

    async def reserve(self, sku: str, quantity: int = 1) -> Reservation:
        """Take ``quantity`` items out of stock; raises ValueError when there are too few."""
        item = self._item(sku)
        if not 0 < quantity <= item["stock"]:
            raise ValueError(f"cannot reserve {quantity} of {sku!r}: {item['stock']} in stock")
        item["stock"] -= quantity
        return {"sku": sku, "quantity": quantity, "left": item["stock"]}

    async def watch(self, sku: str, updates: int = 3, interval: float = 0.5) -> AsyncIterator[Item]:
        """Stream the item ``updates`` times, every ``interval`` seconds."""
        for update in range(updates):
            if update:
                await asyncio.sleep(interval)
            yield self._item(sku)

    def audit(self, seconds: float = 1.0) -> dict[str, int]:
        """Count the stock per category, slowly (blocks for ``seconds``).

        A plain method: the asyncio server runs it in a thread, and keeps heartbeating.
        """
        time.sleep(seconds)
        totals: dict[str, int] = {}
        for item in list(self._items.values()):
            totals[item["category"]] = totals.get(item["category"], 0) + item["stock"]
        return totals

    def _item(self, sku: str) -> Item:
        try:
            return self._items[sku]
        except KeyError:
            raise KeyError(f"no item with SKU {sku!r}") from None


# -- running one backend ------------------------------------------------------------------


def _announce(endpoint: str) -> None:
    print(endpoint, flush=True)


def _stop_when_stdin_closes() -> None:
    """Send ourselves SIGTERM once stdin reaches end of file (the demo is gone)."""

    def wait() -> None:
        # The raw descriptor: a thread blocked in sys.stdin's buffered reader would hold its
        # lock, and Python aborts at exit when a daemon thread holds it.
        while os.read(sys.stdin.fileno(), 4096):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="stdin lifeline", daemon=True).start()


def serve_calc(bind: str, on_bound: Callable[[str], None]) -> None:
    """Serve ``Calc`` on the gevent driver until SIGINT or SIGTERM."""
    # Only this process may import gevent: the inventory backend and the gateway never do.
    import gevent  # noqa: PLC0415

    from rpccore.green import Server  # noqa: PLC0415

    # threaded: slow() and count() really block, and heartbeats must keep flowing meanwhile.
    server = Server(Calc(), name="calc", threaded=True)
    endpoint = server.bind(bind)[0]
    for sig in STOP_SIGNALS:
        gevent.signal_handler(sig, server.stop)
    on_bound(endpoint)
    server.run()


def serve_inventory(bind: str, on_bound: Callable[[str], None]) -> None:
    """Serve ``Inventory`` on the asyncio driver until SIGINT or SIGTERM."""
    from rpccore.aio import Server  # noqa: PLC0415  (see serve_calc)

    async def main() -> None:
        server = Server(Inventory(), name="inventory")
        endpoint = server.bind(bind)[0]
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, server.stop)
        on_bound(endpoint)
        await server.run()

    asyncio.run(main())


def serve_collector(bind: str, on_bound: Callable[[str], None]) -> None:
    """Run ``zerogate collector`` with a memory store until SIGINT or SIGTERM: the demo's
    services and gateway send it their trace records, and the gateway asks it for them."""
    from .collector import Collector, serve  # noqa: PLC0415  (see serve_calc)
    from .trace_store import MemoryTraceStore  # noqa: PLC0415

    def ready(collector: Collector) -> None:
        on_bound(f"{collector.endpoint} {collector.query_endpoint}")

    asyncio.run(serve(Collector(MemoryTraceStore(), bind=bind, query=bind), ready))


BACKENDS: Final[dict[str, Callable[[str, Callable[[str], None]], None]]] = {
    "calc": serve_calc,
    "inventory": serve_inventory,
    "collector": serve_collector,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo_backends", description="Run one demo backend service."
    )
    parser.add_argument("name", choices=list(BACKENDS))
    parser.add_argument("--bind", default=LOOPBACK, help=f"endpoint to bind (default {LOOPBACK})")
    parser.add_argument(
        "--until-stdin-closes", action="store_true", help="also stop when stdin is closed"
    )
    args = parser.parse_args(argv)
    if args.until_stdin_closes:
        _stop_when_stdin_closes()
    BACKENDS[args.name](args.bind, _announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
