"""rpccore on gevent (``zmq.green``): a blocking API in the spirit of zerorpc.

server = Server(Calc()); server.bind("tcp://127.0.0.1:4242"); server.run()
client = Client("tcp://127.0.0.1:4242"); client.add(1, 2)
"""

from .._service import stream
from ._client import Client, Stream
from ._oneway import Publisher, Puller, Pusher, Subscriber
from ._server import Server
from ._traced import spawn_traced

__all__ = [
    "Client",
    "Publisher",
    "Puller",
    "Pusher",
    "Server",
    "Stream",
    "Subscriber",
    "spawn_traced",
    "stream",
]
