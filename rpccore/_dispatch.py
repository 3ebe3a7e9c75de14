"""How a server turns a Request into the method to run, shared by both drivers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._server import ServerConnection
from ._service import Service


def resolve(
    conn: ServerConnection, service: Service, channel: Any, method: str
) -> Callable[..., Any] | None:
    """The callable for a request, or None after answering ``NameError`` like 0.6.3."""
    func = service.lookup(method)
    if func is None:
        conn.send_error(
            channel,
            "NameError",
            method,
            f"Traceback (most recent call last):\nNameError: {method}\n",
        )
    return func
