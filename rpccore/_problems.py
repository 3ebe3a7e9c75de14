"""Counting and logging of dropped input: each kind is logged once, then only counted.

A rogue or confused peer can send the same bad event thousands of times a second; one log
line per kind tells the operator what is happening without drowning the log, and the
counters (exposed on every connection as ``problems``) tell how often.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger("rpccore")


class ProblemLog:
    __slots__ = ("_role", "counts")

    def __init__(self, role: str) -> None:
        self._role = role
        self.counts: Counter[str] = Counter()

    def report(self, kind: str, detail: str, *, level: int = logging.WARNING) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            logger.log(
                level,
                "%s: dropped input (%s): %s [logged once; see .problems for counts]",
                self._role,
                kind,
                detail,
            )
