"""The gevent server sends the replies of a batch of requests together (Pump._flush_reply):
a lone request's reply leaves at once, a batch's leave when it ends, REPLY_BATCH at a
time, and none waits much longer than REPLY_HOLD, nor for a handler known to be slow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import zmq.green
from green_support import serving

from rpccore import _pump
from rpccore._client import ClientConnection
from rpccore._events import Reply

Flush = tuple[int, bool]  # (replies sent at once, sent while the batch was still read)


class Backend:
    def add(self, a: int, b: int) -> int:
        return a + b

    def pause(self, busy: float, seconds: float) -> str:
        """Keep the hub ``busy`` seconds, then wait ``seconds`` (letting it go)."""
        self.busy(busy)
        gevent.sleep(seconds)
        return "rested"

    def busy(self, seconds: float) -> str:
        # Never yields (gevent is not monkey-patched here): the hub waits for it.
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return "done"


@contextmanager
def recorded_server() -> Iterator[tuple[str, list[Flush]]]:
    """A started server whose flushes that sent replies are recorded."""
    with serving(Backend(), heartbeat=None) as (server, endpoint):
        flushes: list[Flush] = []
        conn = server._server
        data_to_send = conn.data_to_send

        def recording() -> Any:
            out = data_to_send()
            if out:
                flushes.append((len(out), server._reading))
            return out

        conn.data_to_send = recording  # type: ignore[method-assign]
        yield endpoint, flushes


def call_together(endpoint: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """Queue ``calls`` at the server before it reads any, then collect the answers."""
    client = ClientConnection(heartbeat=None)
    sock = zmq.green.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        ids = [client.start_call(m, args, now=0.0, timeout=None) for m, args in calls]
        for frames in client.data_to_send():
            sock.send_multipart(frames)
        # A blocking sleep: the hub (and so the server) does not run, ZeroMQ's I/O thread
        # does, and every request is waiting when the server first reads.
        time.sleep(0.3)
        answers: dict[Any, Any] = {}
        with gevent.Timeout(10):
            while len(answers) < len(ids):
                event = client.receive(sock.recv_multipart(), 0.0)
                if isinstance(event, Reply):
                    answers[event.channel] = event.value
        return [answers[cid] for cid in ids]
    finally:
        sock.close()


def test_a_lone_requests_reply_leaves_from_its_handler() -> None:
    with recorded_server() as (endpoint, flushes):
        assert call_together(endpoint, [("add", [1, 2])]) == [3]
    assert flushes == [(1, True)]


def test_a_batchs_replies_leave_together() -> None:
    with recorded_server() as (endpoint, flushes):
        answers = call_together(endpoint, [("add", [i, 1]) for i in range(20)])
    assert answers == [i + 1 for i in range(20)]
    assert sum(count for count, _ in flushes) == 20
    assert len(flushes) < 20
    assert max(count for count, _ in flushes) > 1


def test_at_most_reply_batch_replies_wait() -> None:
    count = _pump.REPLY_BATCH + 8
    with recorded_server() as (endpoint, flushes):
        answers = call_together(endpoint, [("add", [i, 1]) for i in range(count)])
    assert answers == [i + 1 for i in range(count)]
    assert sum(sent for sent, _ in flushes) == count
    assert max(sent for sent, _ in flushes) <= _pump.REPLY_BATCH


def test_a_reply_does_not_wait_long_behind_a_slow_handlers_first_run() -> None:
    slow = 10 * _pump.REPLY_HOLD
    with recorded_server() as (endpoint, flushes):
        answers = call_together(endpoint, [("add", [1, 1]), ("busy", [slow]), ("add", [2, 2])])
    assert answers == [2, "done", 4]
    # The first reply waited for the slow handler (it never yields), then left with its
    # reply, at once: not with the batch's end. The last leaves from its handler.
    assert flushes == [(2, True), (1, True)]


def test_a_reply_does_not_wait_for_a_handler_known_to_be_slow() -> None:
    slow = 10 * _pump.REPLY_HOLD
    with recorded_server() as (endpoint, flushes):
        # A batch's handlers are timed (a lone request's need not be): busy is now slow.
        assert call_together(endpoint, [("busy", [slow]), ("add", [0, 0])]) == ["done", 0]
        answers = call_together(endpoint, [("add", [1, 1]), ("busy", [slow]), ("add", [2, 2])])
    assert answers == [2, "done", 4]
    # The first reply left alone, before the slow handler ran (it never yields, so a
    # flush of one reply while it ran is impossible); the other two leave together.
    assert flushes[1:] == [(1, True), (2, True)]


def test_a_held_reply_leaves_once_reply_hold_old_while_handlers_wait() -> None:
    # Each pause keeps the hub a fifth of REPLY_HOLD, then waits without replying: add's
    # reply would wait for the whole batch to be read if only replies let it go.
    hold = _pump.REPLY_HOLD
    calls: list[tuple[str, list[Any]]] = [("add", [1, 1])]
    calls += [("pause", [hold / 5, 0.2])] * 50
    with recorded_server() as (endpoint, flushes):
        answers = call_together(endpoint, calls)
    assert answers == [2] + ["rested"] * 50
    assert flushes[0] == (1, True)  # sent while the batch was still being read
