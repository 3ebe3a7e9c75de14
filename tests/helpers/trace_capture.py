"""Trace records as a logging handler on ``rpccore.trace`` sees them, for the tracing tests of
every driver."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from rpccore import tracing


class Records(logging.Handler):
    """Keeps every record (the dicts of ``rpccore._tracing``) logged while it is attached."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.zerogate_trace)

    def find(self, side: str, method: str) -> dict[str, Any]:
        [found] = [r for r in self.records if r["side"] == side and r["m"] == method]
        return found


@contextlib.contextmanager
def recording(process_name: str) -> Iterator[Records]:
    """Tracing on (records named after ``process_name``), a ``Records`` on the logger; both
    undone on the way out."""
    handler = Records()
    tracing.enable(process_name=process_name)
    logger = logging.getLogger(tracing.LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        tracing.disable()
