"""Heartbeats on the asyncio driver while handlers work, and while the driver sends.

A plain (non-coroutine) method runs in the thread pool, so one that blocks the CPU or sleeps
for many heartbeat periods must not make its caller declare the server lost. The server runs
in its own process: in one process a blocked loop would stall the client too, and the
heartbeat's "we were the ones who stalled" grace would hide the failure.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import msgpack
import pytest
import zmq
import zmq.asyncio
from aio_support import HB, connected, run_async, serving

BUSY = 1.2  # seconds: six heartbeat periods
assert BUSY > 3 * HB

WORKER = r"""
import asyncio, sys, time
from rpccore.aio import Server

class Worker:
    def busy(self, seconds):
        # Pure Python: holds the GIL except at the interpreter's periodic switches.
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            n += 1
        return n

    def sleepy(self, seconds):
        time.sleep(seconds)
        return seconds

async def main():
    server = Server(Worker(), heartbeat=float(sys.argv[1]))
    print(server.bind("tcp://127.0.0.1:*")[0], flush=True)
    server.start()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    server.stop()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def worker_endpoint() -> Iterator[str]:
    """An asyncio server in another process; it stops when its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(HB)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready, "the worker process did not start"
        endpoint = proc.stdout.readline().decode().strip()
        assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
        yield endpoint
    finally:
        proc.stdin.close()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("method", ["busy", "sleepy"])
@run_async
async def test_blocking_plain_method_keeps_heartbeating(worker_endpoint: str, method: str) -> None:
    async with connected(worker_endpoint) as client:
        start = time.monotonic()
        result = await client.call(method, BUSY)  # LostRemote if the heartbeats stopped
        took = time.monotonic() - start
        assert client.open_channels == 0
    assert result > 0
    assert took >= BUSY


# -- the reader's wake-up ------------------------------------------------------------------

# ZeroMQ's file descriptor is edge-triggered, and the driver sends on a shadow of the socket
# outside the reader task (handlers, timers, Client.call). A send makes libzmq process the
# socket's pending commands, which can consume the wake-up of a message that has just arrived;
# unless the driver makes zmq.asyncio look at ZMQ_EVENTS again, that message waits for the
# next timer drain (up to one heartbeat period). This once delayed requests by 5 s.


class Poker:
    def __init__(self, raw: zmq.asyncio.Socket) -> None:
        self._raw = raw

    async def echo(self, value: object) -> object:
        return value

    async def poke(self, payload: bytes) -> str:
        # Queue a request on our own server without yielding (over inproc it lands at
        # once), then use a few ms so that the send of our reply processes the server
        # socket's commands (libzmq does that at most about once a millisecond).
        zmq.Socket.shadow(self._raw.underlying).send_multipart([b"", payload])
        time.sleep(0.01)
        return "poked"


@run_async
async def test_message_arriving_while_the_driver_sends_is_read_at_once() -> None:
    context = zmq.asyncio.Context.instance()
    raw = context.socket(zmq.DEALER)
    raw.linger = 0
    endpoint = f"inproc://edge-{os.getpid()}-{time.monotonic_ns()}"
    request = msgpack.packb([{"message_id": b"r" * 32, "v": 3}, "echo", [7]])
    try:
        async with serving(Poker(raw), endpoint, heartbeat=5.0) as (_, bound):
            raw.connect(bound)
            async with connected(bound, heartbeat=5.0) as client:
                assert await client.echo(1) == 1
                await asyncio.sleep(0.05)  # both sockets idle, every pipe drained
                assert await client.poke(request) == "poked"
                frames = await asyncio.wait_for(raw.recv_multipart(), 1.0)  # not 5 s
        header, name, args = msgpack.unpackb(frames[-1])
        assert (header["response_to"], name, args) == (b"r" * 32, "OK", [7])
    finally:
        raw.close()
