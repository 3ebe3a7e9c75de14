"""Services for the ``zerogate rpc`` tests, served by the command line itself
(``zerogate rpc --server ... rpc_cli_service:Toolbox`` from this directory) and by a
zerorpc 0.6.3 server (``Legacy``). Not a test module: pytest does not collect it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


class Toolbox:
    """Typed methods, a stream, errors and a slow method."""

    def add(self, a: int, b: int) -> int:
        """Add two integers.

        Both must be integers; the sum is returned."""
        return a + b

    def greet(self, name: str, greeting: str = "Hello", *rest: str) -> str:
        """Build a greeting for ``name``."""
        return f"{greeting}, {name}!" + "".join(rest)

    def echo(self, value):  # no doc: listed by signature
        return value

    def kinds(self, value: Any) -> list[str]:
        """The Python type name of the argument, then its repr."""
        return [type(value).__name__, repr(value)]

    def blob(self) -> dict[Any, Any]:
        """Values that are not JSON as such: bytes, and keys that are not strings."""
        return {
            "text": b"caf\xc3\xa9",
            "binary": b"\xff\x00\x01",
            1: "one",
            "wide": {"k": "x" * 100, "n": list(range(30))},
        }

    def count(self, n: int) -> Iterator[int]:
        """Stream the integers 0 .. n-1."""
        yield from range(n)

    def records(self, n: int) -> Iterator[dict[str, Any]]:
        """Stream n records too wide for one pprint line."""
        for i in range(n):
            yield {"index": i, "payload": "y" * 90}

    def ticks(self, period: float) -> Iterator[int]:
        """Stream a tick every ``period`` seconds, forever."""
        tick = 0
        while True:
            yield tick
            tick += 1
            time.sleep(period)

    def fail(self, message: str) -> None:
        """Raise ValueError(message)."""
        raise ValueError(message)

    def slow(self, seconds: float) -> float:
        """Block for ``seconds`` (in a thread when served --threaded), then return it."""
        time.sleep(seconds)
        return seconds

    def pos_only(self, a: int, /, b: int = 2) -> int:
        """Positional-only first argument."""
        return a * b


class Legacy:
    """What a zerorpc 0.6.3 server exposes in the interop test."""

    def hello(self, name):
        """Say hello.

        To ``name``."""
        return "Hello, %s!" % name  # noqa: UP031 - code of the zerorpc era

    def numbers(self, n):
        return list(range(n))
