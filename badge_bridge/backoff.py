"""Waits between retries of something that keeps failing: a database away, a camera stream down, a worker
that crashed. Each wait doubles up to a cap, so a short outage is retried quickly and a long one does not
flood the logs or the peer; the caller sleeps (or schedules) and resets after a success that lasted."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays ``initial``, twice that, and so on up to ``cap`` (the first is ``initial`` even above it).
    ``jitter`` (0..1) shortens each delay by up to that fraction at random, so many clients cut off together
    do not all come back at the same moment."""

    def __init__(self, initial: float, cap: float, *, jitter: float = 0.0,
                 rng: Callable[[], float] = random.random) -> None:
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter {jitter}: expected a fraction from 0 to 1")
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self._rng = rng
        self._delay = initial

    def next(self) -> float:
        """The delay to wait now, in seconds; the one after is twice as long, up to the cap."""
        delay = self._delay
        self._delay = min(delay * 2, self.cap)
        return delay * (1 - self.jitter * self._rng()) if self.jitter else delay

    def reset(self) -> None:
        """Start again from ``initial``: what failed has worked for a while."""
        self._delay = self.initial
