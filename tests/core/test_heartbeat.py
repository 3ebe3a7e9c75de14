"""Per-channel heartbeat (spec section 7) on a fake clock: the Heartbeat rule itself, the
captured timings (heartbeat_long_call, lost_remote_*), and both connections in a pair."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from peers import Peers, Traffic, rogue_frames
from vectors import C2S, S2C, IdFeed, load

import rpccore._client
import rpccore._server
from rpccore import (
    CallFailed,
    ChannelLost,
    ClientConnection,
    LocalProtocolError,
    LostRemote,
    Reply,
    Request,
    ServerConnection,
)
from rpccore._codec import decode
from rpccore._heartbeat import Heartbeat, format_seconds

# -- the rule -----------------------------------------------------------------------------


def ticks_until_lost(hb: Heartbeat, until: float) -> list[tuple[float, bool]]:
    """Run every tick on time until the remote is lost (or ``until``)."""
    results = []
    while hb.next_tick is not None and hb.next_tick <= until:
        when = hb.next_tick
        results.append((when, hb.tick(when)))
    return results


def test_active_heartbeat_ticks_every_period_from_creation() -> None:
    hb = Heartbeat(5.0, 100.0)
    assert hb.next_tick == 105.0
    assert not hb.due(104.999)
    assert hb.due(105.0)
    assert hb.tick(105.0) is False
    assert hb.next_tick == 110.0


def test_a_silent_remote_is_lost_at_the_third_tick() -> None:
    hb = Heartbeat(5.0, 0.0)
    assert ticks_until_lost(hb, 100.0) == [(5.0, False), (10.0, False), (15.0, True)]
    assert hb.next_tick is None  # lost: the timer stops


@pytest.mark.parametrize("stopped_at", [0.5, 5.0, 7.3, 10.0, 10.02, 12.5, 33.3])
def test_lost_at_the_first_tick_after_last_heartbeat_plus_two_periods(stopped_at: float) -> None:
    hb = Heartbeat(5.0, 0.0)
    t = 0.0
    while t < stopped_at:  # the remote heartbeats every 0.5 s, then stops
        t = min(t + 0.5, stopped_at)
        while hb.next_tick is not None and hb.next_tick <= t:
            assert hb.tick(hb.next_tick) is False
        hb.received(t)
    results = ticks_until_lost(hb, 1000.0)
    assert all(lost is False for _, lost in results[:-1])
    lost_at, lost = results[-1]
    assert lost is True
    assert lost_at == 5.0 * (math.floor((stopped_at + 10.0) / 5.0) + 1)
    assert lost_at > stopped_at + 10.0 >= lost_at - 5.0


def test_a_passive_heartbeat_starts_with_the_remotes_first() -> None:
    hb = Heartbeat(5.0, 0.0, passive=True)
    assert hb.next_tick is None
    assert not hb.due(1000.0)
    hb.received(42.0)
    assert hb.next_tick == 47.0
    assert ticks_until_lost(hb, 100.0) == [(47.0, False), (52.0, False), (57.0, True)]


@pytest.mark.parametrize(
    ("late_by", "lost"),
    [
        pytest.param(4.9, True, id="late-less-than-a-period-no-grace"),
        pytest.param(5.1, False, id="late-more-than-a-period-we-stalled"),
        pytest.param(300.0, False, id="long-stall"),
    ],
)
def test_a_tick_more_than_a_period_late_does_not_blame_the_remote(
    late_by: float, lost: bool
) -> None:
    hb = Heartbeat(5.0, 0.0)
    hb.received(4.0)
    assert hb.tick(5.0) is False
    assert hb.tick(10.0) is False
    # Due at 15; the remote's last heartbeat (4.0) is stale either way.
    assert hb.tick(15.0 + late_by) is lost


def test_after_a_stall_the_remote_gets_one_more_period_then_the_usual_rule() -> None:
    hb = Heartbeat(5.0, 0.0)
    hb.received(4.0)
    assert hb.tick(60.0) is False  # stalled from 5 to 60: not the remote's fault
    assert hb.next_tick == 65.0
    assert hb.tick(65.0) is False  # 65 <= 55 + 10
    assert hb.tick(70.0) is True  # still silent: lost


@pytest.mark.parametrize(
    ("period", "message"),
    [
        (5.0, "Lost remote after 10s heartbeat"),
        (5, "Lost remote after 10s heartbeat"),
        (2.5, "Lost remote after 5s heartbeat"),
        (0.75, "Lost remote after 1.5s heartbeat"),
    ],
)
def test_lost_message(period: float, message: str) -> None:
    assert Heartbeat(period, 0.0).lost_message() == message


@pytest.mark.parametrize(
    ("value", "text"), [(10, "10"), (10.0, "10"), (2.5, "2.5"), (0.1, "0.1"), (0, "0")]
)
def test_format_seconds(value: float, text: str) -> None:
    assert format_seconds(value) == text


def test_heartbeat_repr() -> None:
    assert repr(Heartbeat(5.0, 1.0)) == "<Heartbeat period=5.0 last_seen=1.0 next=6.0>"


# -- captured timings ---------------------------------------------------------------------


def test_heartbeat_long_call_timings_both_sides() -> None:
    vector = load("heartbeat_long_call")
    peers = Peers()
    cid = peers.call("slow", [12])
    (request,) = peers.server_events
    peers.run_until(12.013)
    peers.server.send_reply(request.channel, "done after 12s")
    peers.pump()
    assert peers.events == [Reply(cid, "done after 12s")]
    ours = [(t.direction, t.name, t.at) for t in peers.wire]
    assert ours == [
        ("c2s", "slow", 0.0),
        ("c2s", "_zpc_hb", 5.0),
        ("s2c", "_zpc_hb", 5.0),
        ("c2s", "_zpc_hb", 10.0),
        ("s2c", "_zpc_hb", 10.0),
        ("s2c", "OK", 12.013),
    ]
    # The capture: the same events, each side every 5 s (within the capture's jitter).
    captured = sorted((e.direction, e.name, e.t) for e in vector.events)
    expected = sorted((C2S if d == "c2s" else S2C, name, at) for d, name, at in ours)
    for (d1, n1, t1), (d2, n2, t2) in zip(captured, expected, strict=True):
        assert (d1, n1) == (d2, n2)
        assert t1 == pytest.approx(t2, abs=0.03)
    assert peers.idle()


def test_lost_remote_client_side(monkeypatch: pytest.MonkeyPatch) -> None:
    vector = load("lost_remote_client_side")
    monkeypatch.setattr(rpccore._client, "new_message_id", IdFeed(vector.ids(C2S)))
    client = ClientConnection()
    cid = client.start_call("add", [1, 2], now=0.0)
    sent = client.data_to_send()
    for when in (5.0, 10.0):
        assert client.next_deadline() == when
        assert client.handle_timers(when) == []
        sent += client.data_to_send()
    assert sent == [event.wire for event in vector.sent(C2S)]  # request, _zpc_hb, _zpc_hb
    assert client.next_deadline() == 15.0
    (failed,) = client.handle_timers(15.0)
    assert isinstance(failed, CallFailed)
    assert failed.channel == cid
    assert type(failed.error) is LostRemote
    assert str(failed.error) == "Lost remote after 10s heartbeat"
    assert vector.client_outcome is not None
    assert str(failed.error) == vector.client_outcome["str"]
    assert pytest.approx(vector.client_outcome["elapsed_s"], abs=0.05) == 15.0
    assert client.data_to_send() == []
    assert client.open_channels == 0


def test_lost_remote_server_side(monkeypatch: pytest.MonkeyPatch) -> None:
    vector = load("lost_remote_server_side")
    monkeypatch.setattr(rpccore._server, "new_message_id", IdFeed(vector.ids(S2C)))
    server = ServerConnection()
    request = server.receive([b"rid", *vector.request.wire], 0.0)
    assert isinstance(request, Request)
    assert (request.method, request.args) == ("slow", [60])
    sent = []
    for when in (5.0, 10.0):
        assert server.next_deadline() == when
        assert server.handle_timers(when) == []
        sent += server.data_to_send()
    assert sent == [[b"rid", *event.wire] for event in vector.sent(S2C)]
    assert server.next_deadline() == 15.0
    assert server.handle_timers(15.0) == [ChannelLost(request.channel)]
    # No ERR is sent, the channel is gone, the abandoned handler cannot reply.
    assert server.data_to_send() == []
    assert server.open_channels == 0
    assert server.next_deadline() is None
    with pytest.raises(LocalProtocolError, match="the channel is closed"):
        server.send_reply(request.channel, "done")
    late = rogue_frames("_zpc_hb", [0], response_to=vector.request.message_id)
    assert server.receive([b"rid", *late], 16.0) is None
    assert dict(server.problems.counts) == {"unroutable": 1}


# -- both sides in a pair -----------------------------------------------------------------


def stop_after(direction: str, when: float) -> Callable[[Traffic], bool]:
    def drop(traffic: Traffic) -> bool:
        return traffic.direction == direction and traffic.name == "_zpc_hb" and traffic.at > when

    return drop


@pytest.mark.parametrize(
    ("stopped_at", "lost_at"), [(0.0, 15.0), (5.0, 20.0), (10.0, 25.0), (20.0, 35.0)]
)
def test_server_loses_the_client_at_the_first_tick_after_last_heartbeat_plus_10s(
    stopped_at: float, lost_at: float
) -> None:
    peers = Peers()
    peers.drop = stop_after("c2s", stopped_at)
    cid = peers.call("slow", [], timeout=None)
    (request,) = peers.server_events
    peers.run_until(lost_at - 0.001)
    assert peers.server_events == [request]
    peers.run_until(lost_at)
    assert peers.server_events == [request, ChannelLost(request.channel)]
    assert peers.server.open_channels == 0
    assert peers.client.is_open(cid)  # the client still waits; its view is its own


@pytest.mark.parametrize(
    ("stopped_at", "lost_at"), [(0.0, 15.0), (5.0, 20.0), (10.0, 25.0), (20.0, 35.0)]
)
def test_client_loses_the_server_at_the_first_tick_after_last_heartbeat_plus_10s(
    stopped_at: float, lost_at: float
) -> None:
    peers = Peers()
    peers.drop = stop_after("s2c", stopped_at)
    cid = peers.call("slow", [], timeout=None)
    peers.run_until(lost_at - 0.001)
    assert peers.events == []
    peers.run_until(lost_at)
    (failed,) = peers.events
    assert isinstance(failed, CallFailed)
    assert failed.channel == cid
    assert type(failed.error) is LostRemote
    assert str(failed.error) == "Lost remote after 10s heartbeat"


def test_heartbeats_are_zpc_hb_zero_without_extra_header_keys() -> None:
    peers = Peers()
    peers.call("slow", [], header={"trace_id": "a" * 32})
    peers.advance(10.0)
    beats = peers.sent("c2s", "_zpc_hb") + peers.sent("s2c", "_zpc_hb")
    assert len(beats) == 4
    for beat in beats:
        assert beat.event is not None
        assert beat.args == [0]
        assert list(beat.event.header) == ["message_id", "v", "response_to"]
        assert beat.event.header["v"] == 3
    # They are never delivered to either application.
    assert peers.events == []
    assert len(peers.server_events) == 1


def test_passive_client_starts_heartbeating_after_the_servers_first() -> None:
    peers = Peers(client=ClientConnection(passive_heartbeat=True))
    cid = peers.call("slow", [], timeout=None)
    assert peers.client.next_deadline() is None
    (request,) = peers.server_events
    peers.run_until(60.0)
    assert [t.at for t in peers.sent("s2c", "_zpc_hb")] == [5.0 * n for n in range(1, 13)]
    assert [t.at for t in peers.sent("c2s", "_zpc_hb")] == [5.0 * n for n in range(2, 13)]
    peers.server.send_reply(request.channel, "ok")
    peers.pump()
    assert peers.events == [Reply(cid, "ok")]
    assert peers.idle()


def test_a_passive_client_never_loses_a_server_that_never_heartbeats() -> None:
    peers = Peers(
        client=ClientConnection(passive_heartbeat=True), server=ServerConnection(heartbeat=None)
    )
    cid = peers.call("slow", [], timeout=None)
    peers.run_until(300.0)
    assert peers.wire[1:] == []
    assert peers.events == []
    assert peers.client.is_open(cid)


def test_heartbeat_disabled_on_both_sides() -> None:
    peers = Peers(client=ClientConnection(heartbeat=None), server=ServerConnection(heartbeat=None))
    cid = peers.call("slow", [100], timeout=None)
    (request,) = peers.server_events
    assert peers.client.next_deadline() is None
    assert peers.server.next_deadline() is None
    peers.run_until(100.0)
    peers.server.send_reply(request.channel, "done")
    peers.pump()
    assert [t.name for t in peers.wire] == ["slow", "OK"]
    assert peers.events == [Reply(cid, "done")]
    assert peers.idle()


def test_client_heartbeat_against_a_server_without_one_is_lost_at_15s() -> None:
    peers = Peers(server=ServerConnection(heartbeat=None))
    peers.call("slow", [20], timeout=None)
    peers.run_until(14.999)
    assert peers.events == []
    peers.run_until(15.0)
    (failed,) = peers.events
    assert isinstance(failed, CallFailed)
    assert type(failed.error) is LostRemote
    # The server ignored the client's heartbeats without complaint.
    assert len(peers.sent("c2s", "_zpc_hb")) == 2
    assert dict(peers.server.problems.counts) == {}


def test_server_heartbeat_against_a_client_without_one_is_lost_at_15s() -> None:
    peers = Peers(client=ClientConnection(heartbeat=None))
    peers.call("slow", [20], timeout=None)
    (request,) = peers.server_events
    peers.run_until(15.0)
    assert peers.server_events == [request, ChannelLost(request.channel)]
    assert dict(peers.client.problems.counts) == {}


def test_a_stalled_client_does_not_blame_the_server() -> None:
    client = ClientConnection()
    cid = client.start_call("slow", [], now=0.0, timeout=None)
    client.receive(rogue_frames("_zpc_hb", [0], response_to=cid), 4.0)
    # The event loop was blocked from 5 s to 40 s; the timer finally runs.
    assert client.handle_timers(40.0) == []
    (beat,) = client.data_to_send()[1:]
    assert decode(beat[-1]).name == "_zpc_hb"
    assert client.next_deadline() == 45.0
    assert client.handle_timers(45.0) == []
    (failed,) = client.handle_timers(50.0)
    assert isinstance(failed, CallFailed)
    assert type(failed.error) is LostRemote


def test_timeout_wins_over_a_heartbeat_due_at_the_same_time() -> None:
    client = ClientConnection()
    client.start_call("slow", [], now=0.0, timeout=15.0)
    client.handle_timers(5.0)
    client.handle_timers(10.0)
    (failed,) = client.handle_timers(15.0)
    assert isinstance(failed, CallFailed)
    assert str(failed.error) == "timeout after 15s, when calling remote method slow"
