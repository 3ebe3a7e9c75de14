"""The hub: the pure router with plain frames, then ``zerogate hub`` end to end with
rpccore and zerorpc 0.6.3 workers and clients in child processes (loopback only)."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Any

import gevent
import msgpack
import pytest
from conftest import GreenChildProcesses

from rpccore import LostRemote, RemoteError
from rpccore._hub import HubRouter, id_bytes
from rpccore.green import Client

HERE = Path(__file__).resolve().parent
WORKER = HERE / "hub_worker.py"
ZRPC_CLIENT = HERE.parent / "interop" / "peers" / "zrpc_client.py"
HB = 0.5

# -- the pure router ----------------------------------------------------------------------


def pack(header: dict[str, Any], name: str, args: Any) -> bytes:
    data: bytes = msgpack.packb([header, name, args], use_bin_type=True)
    return data


def unpack(payload: bytes) -> list[Any]:
    event: list[Any] = msgpack.unpackb(payload, raw=False)
    return event


def request(cid: bytes, name: str = "add") -> bytes:
    return pack({"message_id": cid, "v": 3}, name, [1, 2])


def reply(cid: bytes, name: str = "OK", args: Any = (3,)) -> bytes:
    return pack({"message_id": b"r" + cid, "v": 3, "response_to": cid}, name, list(args))


def join(router: HubRouter, wid: bytes, name: str, now: float = 0.0) -> None:
    frames = router.ping(wid, now)
    router.reachable(wid)
    ping_id = unpack(frames[2])[0]["message_id"]
    router.from_worker([wid, b"", reply(ping_id, "OK", [["pong", name]])], now)


W1, W2 = id_bytes(101), id_bytes(102)
C1, C2 = (b"\x00client1",), (b"\x00client2",)


def test_no_worker_answers_err_at_once() -> None:
    router = HubRouter(HB, probe_base=100)
    router.from_client([*C1, b"", request(b"c1")], 0.0)
    (out,) = router.to_clients()
    assert out[:2] == [C1[0], b""]
    header, name, args = unpack(out[2])
    assert (name, args[0], header["response_to"]) == ("ERR", "NoWorker", b"c1")
    assert router.problems.counts["no worker"] == 1


def test_candidates_follow_the_highest_known_id() -> None:
    router = HubRouter(HB, probe_base=100)
    assert router.candidates()[0] == id_bytes(101)
    assert len(router.candidates()) == 32
    router.ping(W2, 0.0)
    router.reachable(W2)
    assert router.candidates()[0] == id_bytes(103)
    router.ping(id_bytes(104), 0.0)
    router.unreachable(id_bytes(104))  # a candidate that is not there: no trace, no "left"
    assert set(router.workers) == {W2}
    assert router.left == 0


def test_affinity_reply_routing_and_fewest_open_channels() -> None:
    router = HubRouter(HB, probe_base=100)
    join(router, W1, "w1")
    join(router, W2, "w2")
    assert router.stats()["workers"] == {"w1": 0, "w2": 0}
    router.from_client([*C1, b"", request(b"a")], 1.0)
    router.from_client([*C2, b"", request(b"b")], 1.0)
    router.from_client([*C1, b"", request(b"c")], 1.0)
    sent = router.to_workers()
    assert [f[0] for f in sent] == [W1, W2, W1]
    assert sent[0][2] == request(b"a")  # payload bytes unchanged
    # w2 has one channel, w1 two: the next goes to w2
    router.from_client([*C2, b"", request(b"d")], 1.0)
    assert router.to_workers()[0][0] == W2
    # every later event of a channel follows it, both ways
    hb = pack({"message_id": b"h", "v": 3, "response_to": b"c"}, "_zpc_hb", [0])
    router.from_client([*C1, b"", hb], 1.1)
    assert router.to_workers() == [[W1, b"", hb]]
    router.from_worker(
        [W1, b"", pack({"message_id": b"x", "response_to": b"c"}, "_zpc_hb", [0])], 1.1
    )
    assert router.to_clients()[0][0] == C1[0]
    assert router.stats()["channels"] == 4
    # OK, ERR and STREAM_DONE close their channel
    router.from_worker([W1, b"", reply(b"a")], 1.2)
    router.from_worker([W2, b"", reply(b"b", "ERR", ["E", "m", None])], 1.2)
    router.from_worker([W1, b"", reply(b"c", "STREAM", [1])], 1.2)
    assert router.stats()["channels"] == 2
    router.from_worker([W1, b"", reply(b"c", "STREAM_DONE", [])], 1.2)
    assert router.stats()["channels"] == 1
    assert [f[0] for f in router.to_clients()] == [C1[0], C2[0], C1[0], C1[0]]
    # a late event for a closed channel is dropped and counted
    router.from_client([*C1, b"", hb], 1.3)
    assert router.to_workers() == []
    assert router.problems.counts["unknown channel from client"] == 1
    assert "channels=1" in repr(router)


def test_large_payloads_are_routed_by_their_first_bytes() -> None:
    router = HubRouter(HB, probe_base=100)
    join(router, W1, "w1")
    big = pack({"message_id": b"a", "v": 3}, "echo", [b"x" * 200_000])
    router.from_client([*C1, b"", memoryview(big)], 1.0)  # a large frame arrives as a view
    [sent] = router.to_workers()
    assert bytes(sent[2]) == big  # forwarded unchanged
    answer = pack({"message_id": b"r", "response_to": b"a", "big": "h" * 9000}, "OK", [b"y"])
    router.from_worker([W1, b"", answer + b"z" * 10_000], 1.0)  # header beyond the peek
    assert [f[0] for f in router.to_clients()] == [C1[0]]
    assert router.stats()["channels"] == 0
    router.from_client([*C1, b"", b"\xc1" * 5000], 1.0)
    router.from_client([*C1, b"", msgpack.packb([1, "x", b"y" * 5000])], 1.0)
    assert router.problems.counts["undecodable client event"] == 2
    assert router.to_workers() == []
    # Only the header and name are read: broken args are the worker's to reject.
    cut = pack({"message_id": b"b"}, "x", [b"y" * 5000])[:-10]
    router.from_client([*C1, b"", cut], 1.0)
    assert router.to_workers() == [[W1, b"", cut]]


def test_worker_left_forgets_only_its_channels() -> None:
    router = HubRouter(HB, probe_base=100)
    join(router, W1, "w1")
    join(router, W2, "w2")
    router.from_client([*C1, b"", request(b"a")], 1.0)
    router.from_client([*C1, b"", request(b"b")], 1.0)
    router.to_workers()
    router.unreachable(W1)
    assert router.stats()["workers"] == {"w2": 1}
    assert router.stats()["channels"] == 1
    assert router.left == 1
    router.from_client([*C1, b"", request(b"c")], 1.0)
    assert router.to_workers()[0][0] == W2
    router.from_worker([W1, b"", reply(b"a")], 1.0)  # from a forgotten worker: dropped
    assert router.to_clients() == []


def test_silent_workers_and_idle_channels_expire() -> None:
    router = HubRouter(HB, probe_base=100)
    join(router, W1, "w1", now=0.0)
    join(router, W2, "w2", now=0.0)
    router.from_client([*C1, b"", request(b"a")], 0.0)
    assert router.due_pings(HB) == [W1, W2]
    join(router, W2, "w2", now=1.0)  # w2 answers its pings, w1 does not
    router.tick(1.01)
    assert list(router.workers) == [W2]
    assert router.stats()["channels"] == 0
    router.from_client([*C1, b"", request(b"b")], 1.1)
    join(router, W2, "w2", now=2.6)  # still alive, but channel b is idle
    router.tick(1.1 + 3 * HB + 0.01)
    assert router.stats()["channels"] == 0
    assert router.problems.counts["channel expired"] == 1


# -- end to end ---------------------------------------------------------------------------


def start_hub(children: GreenChildProcesses) -> tuple[Any, str, str]:
    hub = children.spawn(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "hub",
            "--in",
            "tcp://127.0.0.1:*",
            "--out",
            "tcp://127.0.0.1:*",
            "--heartbeat",
            str(HB),
        ],
        name="hub",
    )
    in_line = children.read_line(hub, 10)
    out_line = children.read_line(hub, 10)
    assert in_line.startswith("in "), children.stderr(hub)
    assert out_line.startswith("out "), children.stderr(hub)
    return hub, in_line[3:], out_line[4:]


def start_worker(children: GreenChildProcesses, name: str, out: str, kind: str = "rpccore") -> Any:
    proc = children.spawn([sys.executable, str(WORKER), name, out, str(HB), kind, "60"], name=name)
    assert children.read_line(proc, 10) == "ready"
    return proc


def wait_for_workers(client: Client, names: set[str], timeout: float = 10.0) -> None:
    seen: set[str] = set()
    with gevent.Timeout(timeout, AssertionError(f"workers seen: {seen}, wanted {names}")):
        while not names <= seen:
            try:
                seen.add(client.whoami())
            except RemoteError:
                gevent.sleep(0.05)  # NoWorker: not discovered yet


@pytest.mark.usefixtures("green_test_timeout")
def test_hub_end_to_end(green_child_processes: GreenChildProcesses) -> None:
    children = green_child_processes
    hub, in_ep, out_ep = start_hub(children)
    workers = {n: start_worker(children, n, out_ep) for n in ("w1", "w2", "w3")}
    client = Client(in_ep, heartbeat=HB, timeout=10)
    try:
        wait_for_workers(client, set(workers))
        # 1,000 calls spread over the workers
        seen = collections.Counter(client.whoami() for _ in range(1000))
        assert set(seen) == set(workers), seen
        assert min(seen.values()) > 200, seen
        # 20 concurrent streams of 500 items
        streams = [gevent.spawn(lambda: list(client.count(500))) for _ in range(20)]
        gevent.joinall(streams, raise_error=True)
        assert all(g.value == list(range(500)) for g in streams)
        # a long call kept alive by heartbeats through the hub (8 periods)
        assert client.slow(4 * HB * 2) in workers
        # kill -9 of one worker mid-run: only its in-flight calls fail
        slow_calls = [gevent.spawn(client.slow, 30) for _ in range(3)]
        lines = {children.read_line(p, 5) for p in workers.values()}
        assert lines == {f"slow {n}" for n in workers}  # one slow call on each
        started = gevent.get_hub().loop.now()
        children.kill(workers.pop("w1"))
        with gevent.Timeout(4 * HB + 2):
            while not any(g.ready() for g in slow_calls):
                gevent.sleep(0.05)
        lost = [g for g in slow_calls if g.ready()]
        assert len(lost) == 1
        assert isinstance(lost[0].exception, LostRemote)
        assert gevent.get_hub().loop.now() - started < 3 * HB + 1.5
        seen = collections.Counter(client.whoami() for _ in range(200))
        assert set(seen) == {"w2", "w3"}
        assert sum(client.add(i, i) for i in range(100)) == 9900
        for g in slow_calls:
            g.kill()
    finally:
        client.close()
    hub.send_signal(15)
    assert hub.wait(timeout=5) == 0
    assert "stopped" in children.stderr(hub)


@pytest.mark.usefixtures("green_test_timeout")
def test_hub_interop_with_zerorpc(green_child_processes: GreenChildProcesses) -> None:
    children = green_child_processes
    _, in_ep, out_ep = start_hub(children)
    start_worker(children, "z1", out_ep, "zerorpc")
    client = Client(in_ep, heartbeat=HB, timeout=10)
    try:
        wait_for_workers(client, {"z1"})
        assert client.add(2, 3) == 5
        assert list(client.count(50)) == list(range(50))
        assert client.slow(3 * HB) == "z1"  # zerorpc heartbeats cross the hub
        start_worker(children, "w1", out_ep)
        wait_for_workers(client, {"z1", "w1"})
    finally:
        client.close()
    # a real zerorpc 0.6.3 client through the hub (to whichever worker)
    proc = children.spawn(
        [sys.executable, str(ZRPC_CLIENT), in_ep, "long_call", str(2 * HB), "--heartbeat", str(HB)],
        name="zrpc-client",
    )
    line = json.loads(children.read_line(proc, 20))
    assert proc.wait(timeout=10) == 0, children.stderr(proc)
    assert line["scenario"] == "long_call", line
    assert "z1" in line["outcome"] or "w1" in line["outcome"], line


def test_hub_file(tmp_path: Path) -> None:
    from gateway.hub import HubFileError, load_hub_file

    good = tmp_path / "hub.yml"
    good.write_text("in: tcp://127.0.0.1:5001\nout: tcp://127.0.0.1:5002\ntype: queue\n")
    config = load_hub_file(str(good))
    assert (config.in_endpoint, config.out_endpoint, config.heartbeat) == (
        "tcp://127.0.0.1:5001",
        "tcp://127.0.0.1:5002",
        None,
    )
    bad = tmp_path / "bad.yml"
    bad.write_text("in: tcp://127.0.0.1:5001\ntype: stack\nouts: x\n")
    with pytest.raises(HubFileError) as err:
        load_hub_file(str(bad))
    text = str(err.value)
    assert f"{bad} line 2: type: expected queue, got 'stack'" in text
    assert f"{bad} line 3: outs:" in text
    assert "out: required" in text


@pytest.mark.usefixtures("green_test_timeout")
def test_hub_full_size(green_child_processes: GreenChildProcesses) -> None:
    """The issue's full-size run: 4 workers, 10,000 concurrent calls (100 greenlets), 100
    concurrent streams of 100 items, long calls kept alive by heartbeats, and one worker
    killed with kill -9 mid-run: only its in-flight calls fail, with LostRemote."""
    children = green_child_processes
    hub, in_ep, out_ep = start_hub(children)
    names = ("w1", "w2", "w3", "w4")
    workers = {
        n: children.spawn(
            [sys.executable, str(WORKER), n, out_ep, str(HB), "rpccore", "60"], name=n
        )
        for n in names
    }
    assert {children.read_line(p, 10) for p in workers.values()} == {"ready"}
    client = Client(in_ep, heartbeat=HB, timeout=10)
    try:
        wait_for_workers(client, set(names))
        # Long calls, 10 heartbeat periods, two on each worker (fewest open channels).
        slow = [gevent.spawn(client.slow, 10 * HB) for _ in range(8)]
        started = collections.Counter(
            children.read_line(p, 5) for p in workers.values() for _ in "ab"
        )
        assert started == {f"slow {n}": 2 for n in names}, started
        answers: collections.Counter[str] = collections.Counter()
        failures: list[BaseException] = []

        def calls(n: int) -> None:
            for _ in range(n):
                try:
                    answers[client.whoami()] += 1
                except LostRemote as exc:
                    failures.append(exc)

        def count() -> list[int]:
            return list(client.count(100))

        def done() -> int:
            return sum(answers.values()) + len(failures)

        callers = [gevent.spawn(calls, 100) for _ in range(100)]
        streams = [gevent.spawn(count) for _ in range(100)]
        with gevent.Timeout(20, AssertionError("the calls did not progress")):
            while done() < 3000:
                gevent.sleep(0.01)
        children.kill(workers["w1"])  # kill -9 mid-run
        killed_at = done()
        assert killed_at < 10_000  # still running
        gevent.joinall(callers + streams + slow, timeout=30)
        assert all(g.ready() for g in callers + streams + slow)
        # The fast calls: all done; those lost were in flight on w1 when it died.
        assert done() == 10_000
        assert all(g.successful() for g in callers)
        assert set(answers) == set(names), answers
        assert min(answers.values()) > 500, answers
        assert len(failures) < 50, len(failures)
        # The streams: complete, or lost on w1 (a stream on w1 may have been cut).
        for g in streams:
            assert g.value == list(range(100)) or isinstance(g.exception, LostRemote), g
        # The long calls: exactly the two on w1 failed, the six others returned.
        lost = [g for g in slow if not g.successful()]
        assert len(lost) == 2
        assert all(isinstance(g.exception, LostRemote) for g in lost)
        assert sorted(g.value for g in slow if g.successful()) == sorted(["w2", "w3", "w4"] * 2)
        # Afterwards the hub reports w1 gone, and routes only to the others.
        with gevent.Timeout(4 * HB + 2, AssertionError(children.stderr(hub))):
            while "worker w1 left" not in children.stderr(hub):
                gevent.sleep(0.05)
        assert {client.whoami() for _ in range(100)} == {"w2", "w3", "w4"}
    finally:
        client.close()
    hub.send_signal(15)
    assert hub.wait(timeout=5) == 0
    stopped = children.stderr(hub)
    final = stopped.rsplit("stopped", 1)[1]  # the hub's last word: its state
    assert "left=1" in final, stopped
    assert "'w1'" not in final, stopped


@pytest.mark.usefixtures("green_test_timeout")
def test_hub_command_with_a_hub_file(
    green_child_processes: GreenChildProcesses, tmp_path: Path
) -> None:
    children = green_child_processes
    hub_file = tmp_path / "hub.yml"
    hub_file.write_text(
        f"in: tcp://127.0.0.1:*\nout: tcp://127.0.0.1:*\ntype: queue\nheartbeat: {HB}\n"
    )
    hub = children.spawn(
        [sys.executable, "-m", "gateway.cli", "hub", str(hub_file)], name="hub-file"
    )
    in_line, out_line = children.read_line(hub, 10), children.read_line(hub, 10)
    assert in_line.startswith("in tcp://127.0.0.1:"), children.stderr(hub)
    assert out_line.startswith("out tcp://127.0.0.1:"), children.stderr(hub)
    start_worker(children, "f1", out_line[4:])
    client = Client(in_line[3:], heartbeat=HB, timeout=10)
    try:
        wait_for_workers(client, {"f1"})
        assert client.add(20, 22) == 42
    finally:
        client.close()
    hub.send_signal(15)
    assert hub.wait(timeout=5) == 0


def test_hub_command_refuses_a_bad_file_in_one_line(
    green_child_processes: GreenChildProcesses, tmp_path: Path
) -> None:
    children = green_child_processes
    bad = tmp_path / "bad.yml"
    bad.write_text("in: tcp://127.0.0.1:5001\nout: tcp://127.0.0.1:5002\ntype: stack\n")
    proc = children.spawn([sys.executable, "-m", "gateway.cli", "hub", str(bad)], name="bad")
    assert proc.wait(timeout=10) == 2
    stderr = children.stderr(proc)
    assert f"{bad} line 3: type: expected queue, got 'stack'" in stderr
    assert "Traceback" not in stderr
