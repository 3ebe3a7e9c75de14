"""Events reach the application complete and in order, on the asyncio driver, in two
situations that once broke it: the client's loop was busy when the events arrived, and the
server produced more events for one client than fit in ZeroMQ's default high-water mark."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import msgpack
import zmq
import zmq.asyncio
from rogue_support import (
    SLACK,
    connected,
    new_id,
    pack,
    rogue_socket,
    run_async,
    serving,
    unpack,
)

from rpccore.aio import AsyncStream, stream

# Both tests once failed. The reader handled an event only when its task resumed, while a
# timer that fired in between drained (and handled) the newer ones first: a stream's items
# came shuffled, and one that fell behind STREAM_DONE was dropped as unroutable. And the
# server's ROUTER had the default high-water mark (1,000), past which libzmq silently drops
# what a ROUTER sends: a slow reader lost stream items, and then waited forever.


@run_async
async def test_stream_items_stay_in_order_when_the_loop_was_busy() -> None:
    # A raw ROUTER plays the server over inproc, so its events land at once.
    endpoint = f"inproc://reorder-{os.getpid()}-{time.monotonic_ns()}"
    async with rogue_socket(endpoint, zmq.ROUTER) as router:
        raw = zmq.Socket.shadow(router.underlying)
        async with connected(endpoint, heartbeat=0.2, timeout=5.0) as client:
            call = asyncio.create_task(client.call("items"))
            routing_id, _, payload = await asyncio.wait_for(router.recv_multipart(), 5.0)
            channel = unpack(payload)[0]["message_id"]

            def send(name: str, args: Any) -> None:
                header = {"message_id": new_id(), "v": 3, "response_to": channel}
                raw.send_multipart([routing_id, b"", pack(header, name, args)])

            send("STREAM", 0)
            items = await call
            assert isinstance(items, AsyncStream)
            got = [await items.__anext__()]
            following = asyncio.create_task(items.__anext__())  # grants credit
            while True:  # until the grant that the second read sends
                frames = await asyncio.wait_for(router.recv_multipart(), 5.0)
                if unpack(frames[-1])[1] == "_zpc_more":
                    break
            for i in range(1, 6):
                send("STREAM", i)
            send("STREAM_DONE", None)
            # The loop is busy past the client's next heartbeat tick while they arrive.
            time.sleep(0.3)
            got.append(await asyncio.wait_for(following, 5.0))
            got += [item async for item in items]
    assert got == [0, 1, 2, 3, 4, 5]


class Blobs:
    @stream
    def blobs(self, n: int, size: int) -> list[bytes]:
        return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(n)]


BURST = 20_000  # items of 1 KiB: far more than the pipes and kernel buffers hold


@run_async
async def test_burst_to_a_slow_reader_is_not_dropped() -> None:
    # A client that grants credit for the whole stream but reads slowly.
    async with (
        serving(Blobs(), heartbeat=None) as (_, endpoint),
        rogue_socket(endpoint, rcvhwm=10, rcvbuf=4096) as rogue,
    ):
        mid = new_id()
        await rogue.send_multipart([b"", pack({"message_id": mid, "v": 3}, "blobs", [BURST, 1024])])
        grant = {"message_id": new_id(), "v": 3, "response_to": mid}
        await rogue.send_multipart([b"", pack(grant, "_zpc_more", [BURST + 10])])
        await asyncio.sleep(1.0)  # not reading yet
        names: list[str] = []
        indexes: list[int] = []
        while not names or names[-1] == "STREAM":
            try:
                frames = await asyncio.wait_for(rogue.recv_multipart(), 1.0 + SLACK)
            except TimeoutError:
                break
            _, name, args = msgpack.unpackb(frames[-1])
            names.append(name)
            if name == "STREAM":
                indexes.append(int.from_bytes(args[:4], "big"))
    assert names[-1:] == ["STREAM_DONE"], f"{len(indexes)} items, then silence"
    assert indexes == list(range(BURST))
