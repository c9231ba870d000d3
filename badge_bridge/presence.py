"""When the bridge heard each controller online, so that an "offline" decision can be checked.

A controller decides alone only while it cannot reach the bridge. One that reports an offline decision
dated inside a stretch of time when the bridge was hearing it online is lying or misconfigured, and its
decision (an offline grant turns the next door opening into an authorized one) must not be believed.
Times are the bridge's own clock at reception; a margin covers the moments of noticing a change.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

SPANS_KEPT = 64
"""Per controller: enough to cover a flapping link over the offline window, and bounded."""


class Presence:
    def __init__(self, grace: timedelta) -> None:
        self.grace = grace
        self._spans: dict[str, deque[tuple[datetime, datetime | None]]] = {}

    def online(self, controller: str, now: datetime) -> None:
        spans = self._spans.setdefault(controller, deque(maxlen=SPANS_KEPT))
        if not spans or spans[-1][1] is not None:
            spans.append((now, None))

    def offline(self, controller: str, now: datetime) -> None:
        spans = self._spans.get(controller)
        if spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], now)

    def link_lost(self, now: datetime) -> None:
        """The bridge lost the broker: from now on it hears nobody until their status comes again."""
        for controller in self._spans:
            self.offline(controller, now)

    def heard_online(self, controller: str, at: datetime) -> bool:
        """Whether ``at`` lies well inside a stretch when the bridge heard ``controller`` online."""
        for start, end in self._spans.get(controller, ()):
            if start + self.grace <= at and (end is None or at <= end - self.grace):
                return True
        return False
