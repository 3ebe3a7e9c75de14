"""rpccore on asyncio (``zmq.asyncio``). Importing it never imports gevent.

server = Server(Calc()); server.bind("tcp://127.0.0.1:4242"); await server.run()
client = Client("tcp://127.0.0.1:4242"); await client.call("add", 1, 2)
async for item in client.stream("count", 10): ...

Tasks and ``asyncio.to_thread`` carry the current trace by themselves; for a thread or an
executor of your own, wrap the function in ``rpccore.traced``.
"""

from .._service import stream
from ._client import AsyncStream, Client
from ._oneway import Publisher, Puller, Pusher, Subscriber
from ._server import Server

__all__ = [
    "AsyncStream",
    "Client",
    "Publisher",
    "Puller",
    "Pusher",
    "Server",
    "Subscriber",
    "stream",
]
