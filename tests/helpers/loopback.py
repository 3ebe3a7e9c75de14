"""Loopback ports for tests that start servers: a free port, and waiting until something
listens on one. One module for every test folder: pytest's ``pythonpath`` setting
(pyproject.toml) puts ``tests/helpers`` on ``sys.path``. Only helpers live there, so nothing
in it can shadow a package (``tests/gateway`` on the path would hide ``gateway``)."""

from __future__ import annotations

import socket
import time

START_TIMEOUT = 20.0  # seconds a server has to start listening, on a loaded two-core machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    (port,) = free_ports(1)
    return port


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on now. Taken
    together: ports asked for one at a time, each released before the next, can repeat."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, timeout: float = START_TIMEOUT) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
