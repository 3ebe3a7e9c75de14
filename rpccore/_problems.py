"""Counting and logging of dropped input: each kind is logged once, then only counted.

A rogue or confused peer can send the same bad event thousands of times a second; one log
line per kind tells the operator what is happening without drowning the log, and the
counters (exposed on every connection as ``problems``) tell how often.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from ._codec import preview

logger = logging.getLogger("rpccore")


class ProblemLog:
    __slots__ = ("_role", "counts")

    def __init__(self, role: str) -> None:
        self._role = role
        self.counts: Counter[str] = Counter()

    def report(self, kind: str, detail: str, *values: Any, level: int = logging.WARNING) -> None:
        """Count one occurrence of ``kind``; log it the first time. ``detail`` is a
        ``str.format`` template for ``values``, which are only rendered (with ``preview``)
        when the line is logged: repeated hostile input costs a counter increment."""
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            text = detail.format(*(preview(v) for v in values))
            logger.log(
                level,
                "%s: dropped input (%s): %s [logged once; see .problems for counts]",
                self._role,
                kind,
                text,
            )
