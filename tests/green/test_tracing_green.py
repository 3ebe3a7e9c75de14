"""Trace records on the gevent driver, and spawn_traced for greenlets a handler starts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import gevent.subprocess
import pytest
from green_support import connected, serving
from trace_capture import Records, recording

from rpccore import RemoteError, current_trace, tracing
from rpccore.green import Client, spawn_traced, stream


@pytest.fixture
def records() -> Iterator[Records]:
    with recording("green-test") as handler, gevent.Timeout(30):
        yield handler


def wait_for(records: Records, count: int) -> None:
    with gevent.Timeout(5, AssertionError(f"not {count} records: {records.records}")):
        while len(records.records) < count:
            gevent.sleep(0.01)


class Backend:
    def whoami(self) -> str | None:
        ctx = current_trace.get()
        return None if ctx is None else ctx.span_id

    def fail(self) -> None:
        raise ValueError("bad")

    @stream
    def count(self, n: int) -> Any:
        return range(n)


class Front:
    def __init__(self, backend: Client) -> None:
        self._backend = backend

    def relay(self) -> Any:
        return self._backend.whoami()

    def relay_spawned(self) -> Any:
        return spawn_traced(self._backend.whoami).get()

    def relay_plain_spawn(self) -> Any:
        return gevent.spawn(self._backend.whoami).get()


@pytest.mark.parametrize("method", ["relay", "relay_spawned"])
def test_records_link_into_a_call_tree(records: Records, method: str) -> None:
    with (
        serving(Backend(), name="back") as (_, b_endpoint),
        connected(b_endpoint) as to_b,
        serving(Front(to_b), name="front") as (_, a_endpoint),
        connected(a_endpoint) as to_a,
    ):
        b_span = to_a.call(method)
        wait_for(records, 4)
    root, front = records.find("client", method), records.find("server", method)
    back_client, back = records.find("client", "whoami"), records.find("server", "whoami")
    assert len({r["tid"] for r in records.records}) == 1
    assert root["par"] is None
    assert front["sid"] == root["sid"]
    assert back_client["par"] == front["sid"]
    assert back["sid"] == back_client["sid"] == b_span
    assert all(r["out"] == "ok" and r["proc"] == "green-test" for r in records.records)
    # Each span lies within its parent's: a caller's span ends after its callee's.
    for parent, child in ((root, front), (front, back_client), (back_client, back)):
        assert parent["t0"] <= child["t0"] <= child["t2"] <= parent["t2"], (parent, child)


def test_a_plain_spawn_starts_a_new_trace(records: Records) -> None:
    with (
        serving(Backend()) as (_, b_endpoint),
        connected(b_endpoint) as to_b,
        serving(Front(to_b)) as (_, a_endpoint),
        connected(a_endpoint) as to_a,
    ):
        to_a.relay_plain_spawn()
        wait_for(records, 4)
    front = records.find("server", "relay_plain_spawn")
    assert records.find("client", "whoami")["tid"] != front["tid"]  # hence spawn_traced


def test_errors_and_streams(records: Records) -> None:
    errors: list[Any] = []
    remove = tracing.on_error(lambda record, error: errors.append(error))
    try:
        with serving(Backend(), threaded=True) as (_, endpoint), connected(endpoint) as client:
            with pytest.raises(RemoteError):
                client.fail()
            assert list(client.stream("count", 4)) == [0, 1, 2, 3]
            wait_for(records, 4)
    finally:
        remove()
    assert records.find("server", "fail")["exc"] == "ValueError"
    assert records.find("client", "fail")["out"] == "error"
    assert records.find("server", "count")["n"] == records.find("client", "count")["n"] == 4
    assert [type(e).__name__ for e in errors] == ["ValueError", "RemoteError"]


def test_zerogate_rpc_collector_ships_the_calls_records(tmp_path: Any) -> None:
    import subprocess
    import sys

    import zmq.green

    from gateway.trace_records import decode_message

    context = zmq.green.Context.instance()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        with serving(Backend(), name="back") as (_, endpoint):
            argv = [sys.executable, "-m", "gateway.cli", "rpc", "--collector"]
            argv += [f"tcp://127.0.0.1:{port}", endpoint, "whoami"]
            proc = gevent.subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
            got: list[Any] = []  # as the collector reads them
            with gevent.Timeout(5):
                while not any(r.side == "client" for r in got):
                    got += decode_message(pull.recv())[0]
        [record] = [r for r in got if r.side == "client"]
        assert record.m == "whoami"
        assert record.out == "ok"
        assert record.sid in out.decode()  # the server's handler ran in that span
    finally:
        pull.close()


# A monkey-patched client whose first record is made in the hub: a green client's replies
# are read by the hub, which must never wait (starting a thread waits for it).
PATCHED_CLIENT = """
from gevent import monkey

monkey.patch_all()

import sys

from rpccore import tracing
from rpccore.green import Client

tracing.enable(sys.argv[1], process_name="patched")
client = Client(sys.argv[2], timeout=10)
print([client.whoami() for _ in range(3)], flush=True)
client.close()
"""


def test_a_monkey_patched_process_ships_records_made_in_the_hub() -> None:
    import subprocess
    import sys

    import zmq.green

    from gateway.trace_records import decode_message

    assert not tracing.is_enabled()  # the server here stays untraced: the client's come first
    pull = zmq.green.Context.instance().socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        with serving(Backend(), name="back") as (_, endpoint):
            argv = [sys.executable, "-c", PATCHED_CLIENT, f"tcp://127.0.0.1:{port}", endpoint]
            proc = gevent.subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
            assert err.decode() == ""  # gevent prints a callback that failed in the hub
            got: list[Any] = []
            with gevent.Timeout(5):
                while len(got) < 3:
                    got += decode_message(pull.recv())[0]
        assert [(r.side, r.m, r.out, r.proc) for r in got] == [
            ("client", "whoami", "ok", "patched")
        ] * 3
        assert out.decode().strip() == repr([r.sid for r in got])  # the spans the server saw
    finally:
        pull.close()
