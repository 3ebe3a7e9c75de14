"""A deadline queue keyed by channel: the only clock-driven state of the core.

Each channel has at most one pending deadline (its next heartbeat tick or its call
timeout, whichever is first). Rescheduling or cancelling leaves the old heap entry behind
and marks it stale; stale entries are skipped when they reach the top, and the heap is
rebuilt when they outnumber the live ones, so memory stays proportional to open channels.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from itertools import count
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TimerQueue(Generic[K]):
    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, int] = {}
        self._seq = count()

    def __len__(self) -> int:
        return len(self._live)

    def __repr__(self) -> str:
        return f"<TimerQueue live={len(self._live)} heap={len(self._heap)}>"

    def schedule(self, key: K, when: float) -> None:
        seq = next(self._seq)
        self._live[key] = seq
        heapq.heappush(self._heap, (when, seq, key))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._compact()

    def cancel(self, key: K) -> None:
        self._live.pop(key, None)

    def next_deadline(self) -> float | None:
        heap, live = self._heap, self._live
        while heap:
            when, seq, key = heap[0]
            if live.get(key) == seq:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[K]:
        """Remove and return the keys whose deadline is at or before ``now``."""
        heap, live = self._heap, self._live
        due: list[K] = []
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            if live.get(key) == seq:
                del live[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        live = self._live
        self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
        heapq.heapify(self._heap)
