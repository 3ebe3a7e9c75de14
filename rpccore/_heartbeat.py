"""Per-channel heartbeat (spec section 7), driven by a ``now`` argument.

Theory of operation: each open channel ticks every ``period`` seconds. At a tick, if the
remote's last ``_zpc_hb`` is more than two periods old, the remote is lost; otherwise we
send ``_zpc_hb [0]``. Only ``_zpc_hb`` refreshes the remote's liveness, never data.

The reference starts counting at its first tick (so a silent peer is lost at the third
tick, about 15 s with the defaults); we start counting at the channel's creation, which
gives the same tick. Passive heartbeat starts ticking only once the remote has sent its
first ``_zpc_hb``.

One refinement over the reference: when a tick arrives more than a period late, it was
our own process that stalled (a blocked event loop, a stopped VM), and the remote's
heartbeats are probably waiting unread in the socket. We then give the remote one more
period instead of blaming it for our pause.
"""

from __future__ import annotations

from typing import Final

DEFAULT_HEARTBEAT: Final = 5.0


class Heartbeat:
    __slots__ = ("last_seen", "next_tick", "period")

    def __init__(self, period: float, now: float, *, passive: bool = False) -> None:
        self.period = period
        self.last_seen = now
        self.next_tick: float | None = None if passive else now + period

    def __repr__(self) -> str:
        return f"<Heartbeat period={self.period} last_seen={self.last_seen} next={self.next_tick}>"

    def received(self, now: float) -> None:
        """The remote sent ``_zpc_hb``."""
        self.last_seen = now
        if self.next_tick is None:
            self.next_tick = now + self.period

    def due(self, now: float) -> bool:
        return self.next_tick is not None and now >= self.next_tick

    def tick(self, now: float) -> bool:
        """Run a due tick; return True if the remote is lost, False to send ``_zpc_hb``."""
        assert self.next_tick is not None
        period = self.period
        if now > self.next_tick + period:
            self.last_seen = max(self.last_seen, now - period)
        if now > self.last_seen + 2 * period:
            self.next_tick = None
            return True
        self.next_tick = now + period
        return False

    def lost_message(self) -> str:
        """The reference's wording: ``Lost remote after 10s heartbeat``."""
        return f"Lost remote after {format_seconds(2 * self.period)}s heartbeat"


def check_period(period: float | None) -> None:
    if period is not None and not period > 0:
        raise ValueError(f"heartbeat must be a positive number of seconds or None, not {period!r}")


def format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
