"""The bridge's time, injected: processing code asks a ``Clock`` instead of the system, so one source of
time drives every decision and timer, and a test sets the time instead of patching it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""The current time as an aware UTC datetime."""


def system_clock() -> datetime:
    return datetime.now(UTC)
