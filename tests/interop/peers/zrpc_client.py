"""The real zerorpc 0.6.3 client, in its own process, running one interop scenario.

    python zrpc_client.py ENDPOINT SCENARIO [ARG ...] [--heartbeat S] [--timeout S]

Prints one JSON line: ``{"scenario": SCENARIO, "outcome": "<python literal>"}``. The
outcome is a Python literal (``repr``) rather than plain JSON so that the test sees
exactly what zerorpc decoded (bytes stay bytes, 2.0 stays a float). Exceptions the
scenario expects are part of the outcome; anything else ends the process with a
traceback and a non-zero exit code. ``echo_values`` reads the values to send on stdin,
as a Python literal dict.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
import zerorpc

SCENARIOS: dict[str, Callable[..., Any]] = {}


def scenario(func: Callable[..., Any]) -> Callable[..., Any]:
    SCENARIOS[func.__name__] = func
    return func


def error_outcome(exc: BaseException) -> dict[str, Any]:
    """An exception as data: its zerorpc type, and for RemoteError its three fields and
    their types (the protocol says all three are str)."""
    outcome: dict[str, Any] = {"type": type(exc).__name__, "text": str(exc)}
    if isinstance(exc, zerorpc.RemoteError):
        outcome.update(
            name=exc.name,
            msg=exc.msg,
            traceback=exc.traceback,
            field_types=[type(exc.name).__name__, type(exc.msg).__name__],
            traceback_type=type(exc.traceback).__name__,
        )
    return outcome


@scenario
def echo_values(client: zerorpc.Client) -> dict[str, Any]:
    values = ast.literal_eval(sys.stdin.read())
    echoed = {name: client.echo(value) for name, value in values.items()}
    return {"echoed": echoed, "get_tuple": client.get_tuple()}


@scenario
def remote_error(client: zerorpc.Client) -> dict[str, Any]:
    try:
        client.fail("boom ✓ déjà vu")
    except zerorpc.RemoteError as exc:
        return error_outcome(exc)
    return {"type": None}


@scenario
def unknown_method(client: zerorpc.Client) -> dict[str, Any]:
    try:
        client.no_such_method(1, 2)
    except zerorpc.RemoteError as exc:
        return error_outcome(exc)
    return {"type": None}


@scenario
def stream(client: zerorpc.Client, method: str, *args: str) -> dict[str, Any]:
    """Consume a stream; an error raised while iterating ends it."""
    items: list[Any] = []
    error = None
    try:
        for item in getattr(client, method)(*map(int, args)):
            items.append(item)
    except zerorpc.RemoteError as exc:
        error = error_outcome(exc)
    return {"items": items, "error": error}


@scenario
def long_call(client: zerorpc.Client, seconds: str) -> dict[str, Any]:
    started = time.monotonic()
    result = client.slow(float(seconds))
    return {"result": result, "elapsed": time.monotonic() - started}


@scenario
def timeout(client: zerorpc.Client, seconds: str, timeout: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        client.slow(float(seconds), timeout=float(timeout))
    except zerorpc.TimeoutExpired as exc:
        return {**error_outcome(exc), "elapsed": time.monotonic() - started}
    return {"type": None}


@scenario
def hold_call(client: zerorpc.Client, seconds: str) -> dict[str, Any]:
    """A call the test kills us in the middle of."""
    return {"result": client.slow(float(seconds))}


@scenario
def introspection(client: zerorpc.Client) -> dict[str, Any]:
    names = client._zerorpc_list()
    help_unknown = None
    try:
        client._zerorpc_help("nope")
    except zerorpc.RemoteError as exc:
        help_unknown = error_outcome(exc)
    return {
        "list": names,
        "name": client._zerorpc_name(),
        "ping": client._zerorpc_ping(),
        "help": {name: client._zerorpc_help(name) for name in names},
        "help_unknown": help_unknown,
        "args": {name: client._zerorpc_args(name) for name in names},
        "inspect": client._zerorpc_inspect(),
    }


@scenario
def concurrent(client: zerorpc.Client, calls: str) -> dict[str, Any]:
    """``calls`` calls in flight at once (0.6.3 spells async as ``**{"async": True}``)."""
    pending = [client.add(i, i, **{"async": True}) for i in range(int(calls))]
    return {"results": [result.get(timeout=60) for result in pending]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    options = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="zrpc_client: %(levelname)s %(message)s")
    # A bound on the whole process, whatever happens to the test that started it.
    gevent.spawn_later(120, os._exit, 3)

    client = zerorpc.Client(options.endpoint, timeout=options.timeout, heartbeat=options.heartbeat)
    outcome = SCENARIOS[options.scenario](client, *options.args)
    print(json.dumps({"scenario": options.scenario, "outcome": repr(outcome)}), flush=True)
    # Exit at once: zerorpc sockets linger forever on undelivered messages (spec 15.3).
    os._exit(0)


if __name__ == "__main__":
    main()
