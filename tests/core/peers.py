"""In-memory peers: ClientConnections wired to one ServerConnection with a fake clock.

Like h11's tests/helpers.py, this moves bytes between the two sans-IO halves exactly as the
ZeroMQ sockets would: a client's ``[b"", payload]`` reaches the ROUTER as
``[routing_id, b"", payload]``, and the server's ``[*envelope, b"", payload]`` reaches the
DEALER whose routing id heads the envelope, without it. Time only moves when a test moves it,
and then every deadline in between fires in order, so heartbeats and timeouts are exact.

Every message that crosses is kept in ``wire`` (in the order it was *sent*), so tests can
audit flow control afterwards; ``drop`` can lose chosen messages on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rpccore import (
    ClientConnection,
    CreditGranted,
    ServerConnection,
    StreamItem,
)
from rpccore._codec import Encoder, Frames, MessageId, WireEvent, decode
from rpccore._errors import RemoteProtocolError
from rpccore._events import ClientEvent, ServerChannelId, ServerEvent

DATA_EVENTS = frozenset({"OK", "ERR", "STREAM", "STREAM_DONE"})


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __repr__(self) -> str:
        return f"<FakeClock now={self.now}>"


@dataclass(frozen=True)
class Traffic:
    """One message that crossed (or was dropped on) the in-memory wire."""

    at: float
    direction: str  # "c2s" or "s2c"
    rid: bytes
    frames: Frames
    event: WireEvent | None  # None when the payload does not decode

    @property
    def name(self) -> Any:
        return None if self.event is None else self.event.name

    @property
    def args(self) -> Any:
        return None if self.event is None else self.event.args

    @property
    def channel(self) -> Any:
        """The channel id the message belongs to (message_id of a request)."""
        if self.event is None:
            return None
        header = self.event.header
        return header.get("response_to", header.get("message_id"))


def _decoded(payload: bytes) -> WireEvent | None:
    try:
        return decode(payload)
    except RemoteProtocolError:
        return None


@dataclass
class ServerStream:
    """A stream handler on the server side: sends items while it has credit, then
    STREAM_DONE, the way a driver does (wait for CreditGranted when can_send is False)."""

    server: ServerConnection
    channel: ServerChannelId
    items: Iterator[Any]
    done: bool = False
    sent: list[Any] = field(default_factory=list)

    def pump(self) -> None:
        while not self.done and self.server.can_send(self.channel):
            try:
                item = next(self.items)
            except StopIteration:
                self.server.send_stream_done(self.channel)
                self.done = True
                return
            self.sent.append(item)
            self.server.send_stream_item(self.channel, item)


class Peers:
    """One ServerConnection and any number of ClientConnections on a fake clock."""

    def __init__(
        self,
        *,
        server: ServerConnection | None = None,
        client: ClientConnection | None = None,
        rid: bytes = b"\x00client",
        clock: FakeClock | None = None,
        auto_read: bool = True,
    ) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.server = server if server is not None else ServerConnection()
        self.clients: dict[bytes, ClientConnection] = {}
        self.client_events: dict[bytes, list[ClientEvent]] = {}
        self.server_events: list[ServerEvent] = []
        self.wire: list[Traffic] = []
        self.dropped: list[Traffic] = []
        self.drop: Callable[[Traffic], bool] | None = None
        # When a StreamItem reaches a client, ask for the next one at once (a fast reader).
        self.auto_read = auto_read
        self.streams: dict[ServerChannelId, ServerStream] = {}
        self._to_server: list[tuple[bytes, Frames]] = []
        self._to_clients: list[Frames] = []
        self.add_client(rid, client if client is not None else ClientConnection())

    def __repr__(self) -> str:
        return (
            f"<Peers t={self.clock.now} clients={len(self.clients)} wire={len(self.wire)} "
            f"server={self.server!r}>"
        )

    # -- set-up ----------------------------------------------------------------------

    def add_client(self, rid: bytes, client: ClientConnection | None = None) -> ClientConnection:
        assert rid not in self.clients
        self.clients[rid] = client if client is not None else ClientConnection()
        self.client_events[rid] = []
        return self.clients[rid]

    @property
    def rid(self) -> bytes:
        return next(iter(self.clients))

    @property
    def client(self) -> ClientConnection:
        return self.clients[self.rid]

    @property
    def events(self) -> list[ClientEvent]:
        """What the first client received, in order."""
        return self.client_events[self.rid]

    # -- driving -----------------------------------------------------------------------

    def call(
        self, method: str, args: Iterable[Any] = (), *, rid: bytes | None = None, **options: Any
    ) -> MessageId:
        """Start a call on a client (the first by default) and deliver everything."""
        client = self.clients[self.rid if rid is None else rid]
        cid = client.start_call(method, list(args), now=self.clock.now, **options)
        self.pump()
        return cid

    def serve_stream(self, channel: ServerChannelId, items: Iterable[Any]) -> ServerStream:
        stream = ServerStream(self.server, channel, iter(items))
        self.streams[channel] = stream
        stream.pump()
        self.pump()
        return stream

    def pump(self) -> None:
        """Deliver messages both ways, one at a time, until nobody has anything left to
        send. What each delivery makes a peer send is logged right after it, so ``wire``
        is in causal order."""
        self._collect()
        while self._to_server or self._to_clients:
            if self._to_server:
                rid, frames = self._to_server.pop(0)
                self._deliver_to_server(rid, frames)
            else:
                self._deliver_to_client(self._to_clients.pop(0))
            self._collect()

    def advance(self, seconds: float) -> None:
        self.run_until(self.clock.now + seconds)

    def run_until(self, when: float) -> None:
        """Move the clock to ``when``, firing every deadline on the way in order."""
        assert when >= self.clock.now
        while True:
            due = self._next_deadline()
            if due is None or due > when:
                break
            self.clock.now = max(self.clock.now, due)
            self._fire_timers()
            self.pump()
        self.clock.now = when

    def read_next(self, cid: MessageId, *, rid: bytes | None = None) -> None:
        """The application of a client asks for the next stream item."""
        self.clients[self.rid if rid is None else rid].request_next(cid)
        self.pump()

    # -- inspection --------------------------------------------------------------------

    def sent(self, direction: str, name: str | None = None) -> list[Traffic]:
        return [
            t for t in self.wire if t.direction == direction and (name is None or t.name == name)
        ]

    def open_channels(self) -> tuple[int, int]:
        """(open calls over all clients, open channels on the server)."""
        return sum(c.open_channels for c in self.clients.values()), self.server.open_channels

    def idle(self) -> bool:
        """Nothing open and no timer armed anywhere."""
        return self.open_channels() == (0, 0) and self._next_deadline() is None

    # -- internals ---------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        deadlines = [self.server.next_deadline()]
        deadlines += [client.next_deadline() for client in self.clients.values()]
        known = [d for d in deadlines if d is not None]
        return min(known) if known else None

    def _fire_timers(self) -> None:
        now = self.clock.now
        for rid, client in self.clients.items():
            self.client_events[rid].extend(client.handle_timers(now))
        self.server_events.extend(self.server.handle_timers(now))

    def _collect(self) -> None:
        now = self.clock.now
        for rid, client in self.clients.items():
            for frames in client.data_to_send():
                assert frames[0] == b"", "a DEALER message starts with the empty delimiter"
                traffic = Traffic(now, "c2s", rid, frames, _decoded(frames[-1]))
                if self._keep(traffic):
                    self._to_server.append((rid, frames))
        for frames in self.server.data_to_send():
            traffic = Traffic(now, "s2c", frames[0], frames, _decoded(frames[-1]))
            if self._keep(traffic):
                self._to_clients.append(frames)

    def _keep(self, traffic: Traffic) -> bool:
        if self.drop is not None and self.drop(traffic):
            self.dropped.append(traffic)
            return False
        self.wire.append(traffic)
        return True

    def _deliver_to_server(self, rid: bytes, frames: Frames) -> None:
        event = self.server.receive([rid, *frames], self.clock.now)
        if event is None:
            return
        self.server_events.append(event)
        if isinstance(event, CreditGranted) and event.channel in self.streams:
            self.streams[event.channel].pump()

    def _deliver_to_client(self, frames: Frames) -> None:
        rid, delimiter = frames[0], frames[1]
        assert delimiter == b"", "the server always sends the delimiter after the envelope"
        client = self.clients[rid]
        event = client.receive(frames[1:], self.clock.now)
        if event is None:
            return
        self.client_events[rid].append(event)
        if self.auto_read and isinstance(event, StreamItem):
            client.request_next(event.channel)


def credit_audit(wire: Iterable[Traffic]) -> dict[Any, tuple[int, int]]:
    """Per channel: (data events the server sent, credit the client had granted by then).

    Raises AssertionError at the first data event sent without credit: the implicit credit
    of the request plus every ``_zpc_more`` the server had received before sending it.
    """
    granted: dict[Any, int] = {}
    sent: dict[Any, int] = {}
    for traffic in wire:
        channel = traffic.channel
        if traffic.direction == "c2s":
            if traffic.event is not None and "response_to" not in traffic.event.header:
                granted[channel] = 1
            elif traffic.name == "_zpc_more":
                granted[channel] = granted.get(channel, 0) + traffic.args[0]
        elif traffic.name in DATA_EVENTS:
            sent[channel] = sent.get(channel, 0) + 1
            assert sent[channel] <= granted.get(channel, 0), (
                f"server sent data event #{sent[channel]} on {channel!r} "
                f"with only {granted.get(channel, 0)} credit"
            )
    return {channel: (sent.get(channel, 0), granted[channel]) for channel in granted}


def reference_grants(window: int, items: int) -> list[int]:
    """The ``_zpc_more`` sequence of the Python reference receiver (spec 8.3) reading a
    stream of ``items`` items then STREAM_DONE, with queue size ``window``. An independent
    model to compare our client against."""
    reserved = 1
    grants: list[int] = []
    for read in range(items + 1):  # every item, then STREAM_DONE
        if read > 0 and reserved < window // 2:
            grants.append(window - reserved)
            reserved = window
        reserved -= 1
    return grants


def rogue_frames(
    name: Any,
    args: Any,
    *,
    response_to: Any = None,
    message_id: Any = b"rogue",
    v: Any = 3,
    **extra: Any,
) -> Frames:
    """A hand-built message, as another (or a misbehaving) peer would send it:
    ``[b"", payload]``. ``v=None`` leaves the version out, like a v1 peer."""
    header: dict[str, Any] = {"message_id": message_id}
    if v is not None:
        header["v"] = v
    header.update(extra)
    if response_to is not None:
        header["response_to"] = response_to
    return [b"", Encoder().encode(header, name, args)]
