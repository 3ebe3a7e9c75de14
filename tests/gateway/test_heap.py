"""``zerogate serve`` settles its garbage collector once the app has started (gateway.heap);
an app embedded in another program leaves that program's collector as it was."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from gateway import collector, heap
from gateway.app import create_app
from gateway.config import parse_config

# A service whose endpoint nobody listens on: the lifespan starts without it answering.
CONFIG = "services:\n  calc:\n    endpoints: [tcp://127.0.0.1:1]\n    timeout: 0.1\n"


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Put the collector back as it was, whatever the test did to it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _run_lifespan(settle_heap: bool) -> tuple[tuple[int, int, int], int]:
    """The collector's thresholds and freeze count while the app is started."""
    app = create_app(parse_config(CONFIG), settle_heap=settle_heap)

    async def started() -> tuple[tuple[int, int, int], int]:
        async with app.router.lifespan_context(app):
            return gc.get_threshold(), gc.get_freeze_count()

    return asyncio.run(started())


def test_settle_freezes_the_heap_and_raises_only_the_first_threshold(restored_gc: None) -> None:
    gc.set_threshold(700, 11, 12)
    gc.unfreeze()
    heap.settle()
    assert gc.get_threshold() == (heap.GEN0_THRESHOLD, 11, 12)
    assert gc.get_freeze_count() > 1000  # at least this test's modules
    heap.settle(collector.GC_THRESHOLD)  # what zerogate collector settles with
    assert gc.get_threshold() == (collector.GC_THRESHOLD, 11, 12)


def test_the_served_app_settles_once_started(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    thresholds, frozen = _run_lifespan(settle_heap=True)
    assert thresholds == (heap.GEN0_THRESHOLD, 10, 10)
    assert frozen > 1000


def test_an_embedded_app_leaves_the_collector_alone(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    thresholds, frozen = _run_lifespan(settle_heap=False)
    assert thresholds == (700, 10, 10)
    assert frozen == 0
