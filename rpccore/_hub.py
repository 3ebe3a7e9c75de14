"""The routing state of a ZeroRPC hub, with no I/O: frames in, frames out.

Clients (DEALER) talk to the hub's ``in`` ROUTER, workers (ROUTER servers that *connect*
to the hub) to its ``out`` ROUTER. A channel (spec 6) is opened by a client event without
``response_to``; it goes to the live worker with the fewest open channels (ties: the one
that was given a channel least recently), and every later event of the channel, both
ways, follows it. ``OK``/``ERR``/``STREAM_DONE`` from the worker close it; a channel with
no traffic for three heartbeat periods is forgotten (its client vanished).

Workers never send first, so the hub finds them by pinging candidate routing ids (the
driver knows which: libzmq numbers a ROUTER's peers with a counter) with a real
``_zerorpc_ping`` request: a candidate that accepts the send is a worker, confirmed (and
named) by its ``OK ["pong", name]``. Every known worker is pinged each heartbeat period;
one that cannot be sent to, or that is silent for two periods, has left: its channels are
forgotten, and their clients raise LostRemote when the heartbeats stop.

A client that opens a channel while no worker is known gets at once
``ERR ["NoWorker", "no worker is connected to the hub", nil]``.

Payload bytes are forwarded unchanged; of each one only the header and name are read
(``peek``: a small payload is decoded whole, a large one only from its first bytes, so
the args of a large event are the worker's to check).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from ._codec import EMPTY, PROTOCOL_VERSION, Encoder, Envelope, Frames, decode, new_message_id
from ._errors import RemoteProtocolError
from ._problems import ProblemLog

TERMINAL: Final = frozenset({"OK", "ERR", "STREAM_DONE"})
PROBE_WINDOW: Final = 32  # candidate routing ids tried beyond the highest one known
PEEK_BYTES: Final = 4096  # payloads up to this size are decoded whole (one C call)

ChannelKey = tuple[Envelope, Any]  # (client envelope, channel id)


@dataclass(slots=True)
class Channel:
    client: Envelope
    cid: Any
    worker: bytes
    last_active: float


@dataclass(slots=True)
class Worker:
    wid: bytes
    last_heard: float
    name: str | None = None  # set by the first pong: only then does it get channels
    pings: set[bytes] = field(default_factory=set)  # ping ids awaiting their answer
    last_ping: float = float("-inf")
    last_assigned: int = 0
    channels: set[Any] = field(default_factory=set)  # channel ids


def id_number(wid: bytes) -> int | None:
    """The counter in a libzmq-generated routing id (0x00 + 32-bit big-endian)."""
    if len(wid) == 5 and wid[0] == 0:
        return int.from_bytes(wid[1:], "big")
    return None


def id_bytes(number: int) -> bytes:
    return b"\x00" + (number & 0xFFFFFFFF).to_bytes(4, "big")


class HubRouter:
    """Routing state of one hub. Feed it ``from_client``/``from_worker``/``tick``; send
    what ``to_clients``/``to_workers`` return (and report unreachable workers)."""

    def __init__(self, heartbeat: float, *, probe_base: int | None = None) -> None:
        self.heartbeat = heartbeat
        self.problems = ProblemLog("hub")
        self.channels: dict[ChannelKey, Channel] = {}
        self.by_worker: dict[tuple[bytes, Any], Channel] = {}
        self.workers: dict[bytes, Worker] = {}
        self._pings: dict[bytes, bytes] = {}  # ping message id -> worker id
        self._highest = probe_base  # highest routing-id number known on ``out``
        self._assigned = 0
        self._encoder = Encoder()
        self._to_clients: list[Frames] = []
        self._to_workers: list[Frames] = []
        self.forwarded = 0
        self.opened = 0
        self.joined = 0
        self.left = 0

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<HubRouter workers={s['workers']} channels={s['channels']} "
            f"opened={s['opened']} forwarded={s['forwarded']} joined={s['joined']} "
            f"left={s['left']} problems={s['problems']}>"
        )

    def stats(self) -> dict[str, Any]:
        return {
            "workers": {
                (w.name or w.wid.hex()): len(w.channels)
                for w in self.workers.values()
                if w.name is not None
            },
            "channels": len(self.channels),
            "opened": self.opened,
            "forwarded": self.forwarded,
            "joined": self.joined,
            "left": self.left,
            "problems": dict(self.problems.counts),
        }

    # -- output ----------------------------------------------------------------------

    def to_clients(self) -> list[Frames]:
        out, self._to_clients = self._to_clients, []
        return out

    def to_workers(self) -> list[Frames]:
        out, self._to_workers = self._to_workers, []
        return out

    # -- from clients ----------------------------------------------------------------

    def from_client(self, frames: Frames, now: float) -> None:
        envelope, payload = _split(frames)
        try:
            header, name = peek(payload)
        except RemoteProtocolError as exc:
            self.problems.report("undecodable client event", "{}", str(exc))
            return
        if "response_to" in header:
            channel = self.channels.get((envelope, _key(header["response_to"])))
            if channel is None:  # late heartbeat after the end, or the worker left
                self.problems.report(
                    "unknown channel from client",
                    "event {} for channel {}",
                    name,
                    header["response_to"],
                    level=logging.INFO,
                )
                return
            channel.last_active = now
            self._forward_to_worker(channel.worker, payload)
            return
        cid = _key(header.get("message_id"))
        if cid is None:
            self.problems.report("bad message id", "request without a usable message_id")
            return
        worker = self._choose()
        if worker is None:
            self.problems.report("no worker", "no worker for {}", name)
            self._reply_error(
                envelope, header["message_id"], "NoWorker", "no worker is connected to the hub"
            )
            return
        key = (envelope, cid)
        if key in self.channels or (worker.wid, cid) in self.by_worker:
            self.problems.report("duplicate channel id", "channel id {} reused", cid)
            return
        channel = Channel(envelope, cid, worker.wid, now)
        self.channels[key] = channel
        self.by_worker[(worker.wid, cid)] = channel
        worker.channels.add(cid)
        self._assigned += 1
        worker.last_assigned = self._assigned
        self.opened += 1
        self._forward_to_worker(worker.wid, payload)

    def _choose(self) -> Worker | None:
        best: Worker | None = None
        for w in self.workers.values():
            if w.name is None:
                continue
            if best is None or (len(w.channels), w.last_assigned) < (
                len(best.channels),
                best.last_assigned,
            ):
                best = w
        return best

    def _forward_to_worker(self, wid: bytes, payload: bytes) -> None:
        self.forwarded += 1
        self._to_workers.append([wid, EMPTY, payload])

    def _reply_error(self, envelope: Envelope, cid: Any, name: str, message: str) -> None:
        header = {"message_id": new_message_id(), "v": PROTOCOL_VERSION, "response_to": cid}
        payload = self._encoder.encode(header, "ERR", [name, message, None])
        self._to_clients.append([*envelope, EMPTY, payload])

    # -- from workers ----------------------------------------------------------------

    def from_worker(self, frames: Frames, now: float) -> None:
        envelope, payload = _split(frames)
        wid = envelope[0] if envelope else b""
        worker = self.workers.get(wid)
        if worker is None:
            self.problems.report("unknown worker", "event from unknown worker {}", wid)
            return
        worker.last_heard = now
        try:
            header, name = peek(payload)
        except RemoteProtocolError as exc:
            self.problems.report("undecodable worker event", "{}", str(exc))
            return
        cid = _key(header.get("response_to"))
        if cid is None:
            self.problems.report("worker event without response_to", "event {}", name)
            return
        channel = self.by_worker.get((wid, cid))
        if channel is None:
            if cid in self._pings:
                self._on_ping_reply(worker, cid, name, decode(payload).args)
                return
            self.problems.report(
                "unknown channel from worker",
                "event {} for channel {}",
                name,
                cid,
                level=logging.INFO,
            )
            return
        channel.last_active = now
        self.forwarded += 1
        client = channel.client
        if len(client) == 1:
            self._to_clients.append([client[0], EMPTY, payload])
        else:
            self._to_clients.append([*client, EMPTY, payload])
        if name in TERMINAL:
            self._close(channel)

    def _on_ping_reply(self, worker: Worker, cid: bytes, name: Any, args: Any) -> None:
        if name not in TERMINAL:
            return  # the ping channel's heartbeats
        del self._pings[cid]
        worker.pings.discard(cid)
        if worker.name is None:
            # OK [["pong", name]]: the call's result, wrapped in the args array.
            result = args[0] if name == "OK" and isinstance(args, list) and args else None
            named = result[1] if isinstance(result, list) and len(result) > 1 else None
            worker.name = str(named) if named is not None else worker.wid.hex()
            self.joined += 1
            logging.getLogger("rpccore").info("hub: worker %s joined", worker.name)

    def _close(self, channel: Channel) -> None:
        self.channels.pop((channel.client, channel.cid), None)
        self.by_worker.pop((channel.worker, channel.cid), None)
        worker = self.workers.get(channel.worker)
        if worker is not None:
            worker.channels.discard(channel.cid)

    # -- workers joining and leaving -----------------------------------------------

    def candidates(self) -> list[bytes]:
        """Routing ids to try: the window beyond the highest id number known."""
        if self._highest is None:
            return []
        return [id_bytes(self._highest + i) for i in range(1, PROBE_WINDOW + 1)]

    def ping(self, wid: bytes, now: float) -> Frames:
        """A ping request for ``wid`` (known or candidate); the driver sends it and calls
        ``unreachable`` if the socket has no such peer."""
        worker = self.workers.get(wid)
        if worker is None:
            worker = self.workers[wid] = Worker(wid, last_heard=now)
        ping_id = new_message_id()
        worker.pings.add(ping_id)
        worker.last_ping = now
        self._pings[ping_id] = wid
        payload = self._encoder.encode(
            {"message_id": ping_id, "v": PROTOCOL_VERSION}, "_zerorpc_ping", []
        )
        return [wid, EMPTY, payload]

    def reachable(self, wid: bytes) -> None:
        """A ping to ``wid`` was accepted by the socket: it is a connected peer."""
        number = id_number(wid)
        if number is not None and (self._highest is None or number > self._highest):
            self._highest = number

    def unreachable(self, wid: bytes) -> None:
        """The socket has no peer ``wid``: a candidate that is not there, or a worker gone."""
        worker = self.workers.get(wid)
        if worker is None:
            return
        self._drop_worker(worker, lost=worker.name is not None)

    def _drop_worker(self, worker: Worker, *, lost: bool) -> None:
        del self.workers[worker.wid]
        for ping_id in worker.pings:
            self._pings.pop(ping_id, None)
        for cid in list(worker.channels):
            channel = self.by_worker.get((worker.wid, cid))
            if channel is not None:
                self._close(channel)
        if lost:
            self.left += 1
            logging.getLogger("rpccore").info(
                "hub: worker %s left (%d channels dropped)",
                worker.name or worker.wid.hex(),
                len(worker.channels),
            )

    def due_pings(self, now: float) -> list[bytes]:
        """Known workers whose ping is due (one per heartbeat period)."""
        return [w.wid for w in self.workers.values() if now - w.last_ping >= self.heartbeat * 0.999]

    def tick(self, now: float) -> None:
        """Forget silent workers (two periods) and idle channels (three periods)."""
        for worker in list(self.workers.values()):
            if now - worker.last_heard > 2 * self.heartbeat:
                self.problems.report(
                    "worker silent", "worker {} stopped answering pings", worker.name
                )
                self._drop_worker(worker, lost=worker.name is not None)
        for channel in list(self.channels.values()):
            if now - channel.last_active > 3 * self.heartbeat:
                self.problems.report(
                    "channel expired", "channel {} idle for 3 periods", channel.cid
                )
                self._close(channel)


def _split(frames: Frames) -> tuple[Envelope, bytes]:
    n = len(frames)
    if n == 3:  # the usual case: one routing id, the delimiter, the payload
        return (bytes(frames[0]),), frames[2]
    if n > 3:
        return tuple(bytes(f) for f in frames[:-2]), frames[-1]
    if n == 2:
        return (bytes(frames[0]),), frames[1]
    return (), frames[0]


def peek(payload: bytes) -> tuple[dict[Any, Any], Any]:
    """The header and name of an event; its args are decoded only if the payload is
    small (one C call), otherwise skipped: only the first PEEK_BYTES are read.
    Raises RemoteProtocolError like ``decode``."""
    if len(payload) <= PEEK_BYTES:
        event = decode(payload)  # decode reads any buffer
        return event.header, event.name
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True)
    unpacker.feed(memoryview(payload)[:PEEK_BYTES])
    try:
        size = unpacker.read_array_header()
        header = unpacker.unpack()
        name = unpacker.unpack()
    except msgpack.OutOfData:  # a header larger than PEEK_BYTES: decode it all
        event = decode(payload)
        return event.header, event.name
    except Exception as exc:  # msgpack raises many types for garbage input
        raise RemoteProtocolError(f"payload is not valid msgpack ({exc})") from None
    if size != 3:
        raise RemoteProtocolError(f"event is not a 3-element array (it has {size})")
    if type(header) is not dict:
        raise RemoteProtocolError("event header is not a map")
    return header, name


def _key(value: Any) -> Any:
    """A channel id usable as a dict key, or None (a list or map is not an id)."""
    if isinstance(value, (bytes, str, int)) and not isinstance(value, bool):
        return value
    return None
