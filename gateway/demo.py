"""The demo service that ``zerogate demo`` serves: typed methods with docstrings, a
stream, a method that raises and a slow one, so every feature has something to show."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TypedDict


class Point(TypedDict):
    x: float
    y: float


class Calc:
    """A small calculator, to try rpccore and the gateway with."""

    def add(self, a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def greet(self, name: str, greeting: str = "Hello") -> str:
        """Build a greeting for ``name``."""
        return f"{greeting}, {name}!"

    def midpoint(self, a: Point, b: Point) -> Point:
        """The point halfway between two points."""
        return {"x": (a["x"] + b["x"]) / 2, "y": (a["y"] + b["y"]) / 2}

    def count(self, n: int) -> Iterator[int]:
        """Stream the integers from 0 to n - 1."""
        yield from range(n)

    def divide(self, a: float, b: float) -> float:
        """Divide a by b; raises ZeroDivisionError when b is 0."""
        return a / b

    def slow(self, seconds: float = 1.0) -> float:
        """Wait for ``seconds``, then return it."""
        time.sleep(seconds)
        return seconds
