"""The fuzz harness's own parts (fuzz/, docs/fuzz.md): a finding must be the bridge's, never the tool's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fuzz.bus import crc16, frame
from fuzz.oracle import Oracle
from fuzz.payloads import TEMPLATES, Mutator
from fuzz.site import write_site
from fuzz.store import Crasher

GENUINE_PDID = bytes.fromhex("5381140004451e0b0b010101510000000001916c")
"""A reply libosdp's peripheral device sent on the pty bus (osdp_PDID, sequence 0, CRC)."""


def test_oracle_sees_nothing_wrong_in_valid_traffic(sqlite_url: str, tmp_path: Path) -> None:
    """Every kind of valid message, unmutated: the oracle has no false alarms to raise."""
    mutator = Mutator(seed=7, keep_valid=1.0, replay=0.0)
    payloads = [mutator.next() for _ in range(150)]
    valid = [p for p in payloads if not p.label.startswith("foreign-controller") and b'"offline"' not in p.data]
    assert {p.label.split(":")[0] for p in valid} == {name for name, _, _ in TEMPLATES} - {"foreign-controller"}
    oracle = Oracle(write_site(tmp_path, sqlite_url), sqlite_url)
    try:
        problems = {p.label: oracle.check(p.topic, p.data).problems for p in valid}
    finally:
        oracle.close()
    assert {label: found for label, found in problems.items() if found} == {}


def test_mutations_are_repeatable_from_the_seed() -> None:
    """The same seed, the same run (but for the times, which are now's)."""
    first, again = Mutator(seed=3), Mutator(seed=3)
    assert [(p.topic, p.label) for p in (first.next() for _ in range(500))] == \
        [(p.topic, p.label) for p in (again.next() for _ in range(500))]


def test_attacker_frames_carry_osdp_crc() -> None:
    assert frame(1, 0, 0x45, GENUINE_PDID[6:-2]) == GENUINE_PDID
    assert crc16(GENUINE_PDID[:-2]) == int.from_bytes(GENUINE_PDID[-2:], "little")


def test_a_crasher_replays_its_times_at_the_same_distance_from_now() -> None:
    crasher = Crasher(id="x", target="message", signature="s", problems=[], found_at="2026-01-01T00:00:00+00:00",
                      input=b'{"ts":"2026-01-01T00:06:00.5Z","at":"2026-01-01T00:00:00","old":"0001-01-01T00:00:00Z",'
                            b'"time":1767225660}')
    later = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=30)
    assert crasher.replay(later) == (b'{"ts":"2026-01-31T00:06:00.5Z","at":"2026-01-31T00:00:00",'
                                     b'"old":"0001-01-01T00:00:00Z","time":1769817660}')
