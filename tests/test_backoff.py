"""The one back-off every retry loop uses (audit writer, bridge start-up, camera capture and supervisor)."""

from __future__ import annotations

import random

import pytest

from badge_bridge.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset_starts_again() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert [backoff.next() for _ in range(2)] == [0.5, 1.0]


def test_a_first_delay_above_the_cap_is_kept_once() -> None:
    """As the loops it replaced did: a camera configured to wait 60 s first waits 60 s."""
    backoff = Backoff(60.0, 30.0)
    assert [backoff.next() for _ in range(3)] == [60.0, 30.0, 30.0]


def test_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    plain, jittered = Backoff(1.0, 8.0), Backoff(1.0, 8.0, jitter=0.25, rng=random.Random(13).random)
    for _ in range(200):
        full, delay = plain.next(), jittered.next()
        assert full * 0.75 <= delay <= full
    assert len({Backoff(1.0, 8.0, jitter=0.25).next() for _ in range(20)}) > 1


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
def test_jitter_outside_0_to_1_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1.0, 8.0, jitter=jitter)
