"""Where the access log goes: one JSON line per request.

``LoggingAccessLog`` hands each line to the ``zerogate.access`` logger, to route like any
other log (the default of ``create_app``). ``StreamAccessLog`` writes lines to a stream,
buffered and flushed at least every ``FLUSH_PERIOD`` seconds: a LogRecord per request costs
about a fifth of the gateway's CPU time at full load, so ``zerogate serve`` uses this one.
Lines are flushed when the app shuts down; a crash loses at most ``FLUSH_PERIOD`` of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol, TextIO

ACCESS_LOGGER: Final = "zerogate.access"
FLUSH_PERIOD: Final = 0.1  # seconds a line may wait in the buffer
FLUSH_LINES: Final = 512  # or this many lines, whichever comes first


class AccessLog(Protocol):
    def write(self, line: str) -> None: ...

    def flush(self) -> None: ...


class NoAccessLog:
    def write(self, line: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LoggingAccessLog:
    """Each line as an INFO record of the ``zerogate.access`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    def write(self, line: str) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(line)

    def flush(self) -> None:
        pass


class StreamAccessLog:
    """Lines written to ``stream`` in batches (one write per batch, not per request)."""

    def __init__(self, stream: TextIO, period: float = FLUSH_PERIOD) -> None:
        self.stream = stream
        self.period = period
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<StreamAccessLog buffered={len(self._lines)}>"

    def write(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a test, a shutdown): write at once
                self.flush()
                return
            self._timer = loop.call_later(self.period, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError) as exc:  # a closed pipe must not fail requests
                logging.getLogger("zerogate.gateway").warning("access log lost: %s", exc)
