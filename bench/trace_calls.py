"""What tracing costs one call, in a timeit loop: each side's span work and the sender's.

Run it from the repository root::

    .venv/bin/python bench/trace_calls.py            # 5 repeats of 100,000 calls each
    .venv/bin/python bench/trace_calls.py --quick    # 1 repeat of 10,000: a smoke test

It is a benchmark, not a test, and it measures code alone, warm: between the other work of a
real pair (``bench/rpc.py --tracing``), each figure costs about twice as much. With tracing on
and our collector handler alone on the ``rpccore.trace`` logger (the fast path), shipping to a
PULL socket of this process on 127.0.0.1, it times, per call, the best of the repeats (the
queue emptied, untimed, every ``PASS`` calls, as the sender thread does):

* ``server``: what a server does for a traced request (``server_start`` on a header with a
  caller's ids, ``end``, ``emit``, which queues the span);
* ``client``: what a client does for a traced root call (``client_begin``, ``end``,
  ``ship``);
* ``sender``: the sender thread's pass, per span: pack a pass's worth of queued spans
  (``PASS`` of them, 20 ms of a busy process's calls) and send them;
* ``untraced``: what a server does for a request while tracing is off
  (``TraceContext.from_header`` on the same header), for scale.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: a snapshot of rpccore can be benched

from rpccore import _tracing, tracing  # noqa: E402
from rpccore._trace import TraceContext, new_root_ids  # noqa: E402

PASS = 440  # spans a sender pass takes: 20 ms of 22,000 calls/s


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    """The best of ``repeat`` timings of ``number`` calls, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def best_in_passes(
    fn: Callable[[], object], empty: Callable[[], object], number: int, repeat: int
) -> float:
    """``best``, with ``empty()`` run untimed after every ``PASS`` calls: as the sender
    empties the queue of a busy process every 20 ms."""
    timings = []
    for _ in range(repeat):
        elapsed = 0.0
        for _ in range(max(number // PASS, 1)):
            start = time.perf_counter()
            for _ in range(PASS):
                fn()
            elapsed += time.perf_counter() - start
            empty()
        timings.append(elapsed / (max(number // PASS, 1) * PASS))
    return min(timings) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 10,000 calls")
    args = parser.parse_args()
    number, repeat = (10_000, 1) if args.quick else (100_000, 5)

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    handler = tracing.enable(f"tcp://127.0.0.1:{port}", process_name="bench")
    assert handler is not None
    try:
        handler._interval = handler._pause = 3600.0  # this script makes the passes
        handler.flush()
        if _tracing._route() is not handler:
            sys.exit("our collector handler is not alone on the rpccore.trace logger")
        tid, sid = new_root_ids()
        header = {"message_id": b"0" * 32, "v": 3, "trace_id": tid, "span_id": sid}

        def drain() -> None:
            handler._spans.clear()
            while True:
                try:
                    pull.recv(zmq.NOBLOCK)
                except zmq.Again:
                    return

        def server() -> None:
            _, span = _tracing.server_start(header, "bench", "add")
            assert span is not None
            _tracing.end(span, tracing.OK)
            _tracing.emit(span)

        def client() -> None:
            _, span = _tracing.client_begin("add", "bench")
            assert span is not None
            _tracing.end(span, tracing.OK)
            _tracing.ship(span)

        spans = []
        for _ in range(PASS):
            _, span = _tracing.server_start(header, "bench", "add")
            assert span is not None
            _tracing.end(span, tracing.OK)
            spans.append(span)

        def sender_pass() -> None:
            handler._spans.extend(spans)
            handler._send_queued()
            drain()

        results = {}
        for name, fn in (("server", server), ("client", client)):
            results[name] = best_in_passes(fn, drain, number, repeat)
        passes = max(number // PASS, 10)
        results["sender"] = best(sender_pass, passes, repeat) / PASS
        results["untraced"] = best(lambda: TraceContext.from_header(header), number, repeat)
    finally:
        tracing.disable()
        pull.close(linger=0)
        context.term()

    print(f"tracing, per call (best of {repeat} x {number:,}; warm, code alone)")
    print(f"  server  {results['server']:.2f} us  server_start + end + emit")
    print(f"  client  {results['client']:.2f} us  client_begin + end + ship")
    print(f"  sender  {results['sender']:.2f} us  a span's share of a pass of {PASS}")
    print(f"  untraced server header  {results['untraced']:.2f} us  (from_header, tracing off)")


if __name__ == "__main__":
    main()
