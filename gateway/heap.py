"""The garbage collector's settings for a serving process (``zerogate serve``, ``zerogate
collector``).

Two facts about a gateway make CPython's defaults a poor fit, and cost about 6 us of CPU
per request (~6%: ``bench/gateway.py``, 64 connections):

* Everything allocated by the time the app has started (modules, the config, the routes,
  the pools) lives as long as the process. ``gc.freeze()`` moves it to a generation the
  collector never scans, so the full collections stop re-walking it.
* A request allocates a few hundred container objects (coroutines, futures, dicts,
  frames) that reference counting frees as soon as it is answered. With the default
  generation-0 threshold of 700, a collection runs every couple of requests and finds
  nothing; at ``GEN0_THRESHOLD`` one runs every twenty or so requests, and a cycle of
  garbage still waits at most that long.

Only the process that serves calls ``settle``: an app embedded in another program (a test,
``zerogate demo``) leaves that program's collector alone. ``zerogate collector`` settles with a
threshold of its own (``gateway.collector.GC_THRESHOLD``).
"""

from __future__ import annotations

import gc
from typing import Final

GEN0_THRESHOLD: Final = 5_000


def settle(gen0: int = GEN0_THRESHOLD) -> None:
    """Collect once, freeze what survives start-up, and raise the generation-0 threshold to
    ``gen0`` (the older generations keep theirs)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
