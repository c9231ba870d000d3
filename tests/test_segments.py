"""Sealed segments, proofs, consistency and retention pruning, on both databases.

A chain of four days (5 entries a day, written by the real AuditWriter with past received times, a signed
checkpoint every 3 entries) is sealed; an event is proven and checked offline with only the public key;
tampering after sealing is caught by `audit verify` and by the tampered entry's proof; pruning keeps
`verify` green, and the append-only guards still refuse every direct change.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from badge_bridge.audit.segments import (
    ProofError,
    SegmentError,
    consistency,
    prove,
    prune,
    seal,
    verify_consistency,
    verify_proof,
)
from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.cli import main
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore, key_id_of, public_from_hex
from badge_bridge.models import AuditEntry, Segment

from .test_verify import drop_append_only_triggers

CHAIN = "bridge-1"
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(4)]
PER_DAY = 5
ENTRIES = PER_DAY * len(DAYS)


def event_id(n: int) -> str:
    return f"ctl-1:{n}"


def write_days(engine: Engine, keys: KeyStore, chain: str = CHAIN) -> None:
    """Entry n (1..20) is received on DAYS[(n - 1) // 5], at 23:00 so the day's end is near."""
    writer = AuditWriter(engine, chain, keys.signer(), batch_max=2)
    writer.start()
    for n in range(1, ENTRIES + 1):
        day = DAYS[(n - 1) // PER_DAY]
        at = datetime(day.year, day.month, day.day, 23, n, tzinfo=UTC)
        writer.submit(Event(id=event_id(n), kind="access.granted", source="ctl-1", ts=at, received_ts=at,
                            door="main-entrance", subject={"credential": n}, detail={"n": n}))
    assert writer.stop()


def only_public_key(keys: KeyStore) -> dict:
    """What an auditor holds: the .pub file, nothing from the database."""
    pub = public_from_hex(next(keys.signing_dir.glob("*.pub")).read_text())
    return {key_id_of(pub): pub}


def assert_verified(engine: Engine, keys: KeyStore) -> None:
    report = verify(engine, str(engine.url), keys.trusted_public_keys())
    assert report.ok, [str(f) for f in report.findings]


@pytest.fixture
def sealed(engine: Engine, keys: KeyStore) -> Engine:
    write_days(engine, keys)
    made = seal(engine, keys.signer(), until_day=DAYS[-1])
    assert [(s.day, s.first_seq, s.last_seq, s.size) for s in made] == [
        (DAYS[i], i * PER_DAY + 1, (i + 1) * PER_DAY, PER_DAY) for i in range(3)]
    return engine


def test_seal_is_idempotent_and_leaves_unfinished_days(sealed: Engine, keys: KeyStore) -> None:
    assert seal(sealed, keys.signer(), until_day=DAYS[-1]) == []
    last = seal(sealed, keys.signer())  # today is long after DAYS[-1]
    assert [(s.day, s.first_seq, s.last_seq) for s in last] == [(DAYS[-1], 16, 20)]
    assert seal(sealed, keys.signer()) == []
    with sealed.connect() as conn:
        segments = conn.execute(select(Segment.prev_segment_last_hash, Segment.last_hash).order_by(Segment.first_seq)).all()
    assert segments[0][0] == "0" * 64
    assert all(segments[i][0] == segments[i - 1][1] for i in range(1, len(segments)))
    assert_verified(sealed, keys)


def test_late_entry_goes_into_the_next_segment(engine: Engine, keys: KeyStore) -> None:
    """The cut is by seq: an entry received on day 1 but written after day 2's first entry stays in day 2."""
    writer = AuditWriter(engine, CHAIN, keys.signer())
    writer.start()
    for n, day in enumerate([DAYS[0], DAYS[1], DAYS[0], DAYS[2]], start=1):
        at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        writer.submit(Event(id=event_id(n), kind="access.granted", source="ctl-1", ts=at, received_ts=at))
    assert writer.stop()
    made = seal(engine, keys.signer(), until_day=DAYS[3])
    assert [(s.day, s.first_seq, s.last_seq) for s in made] == [(DAYS[0], 1, 1), (DAYS[1], 2, 3), (DAYS[2], 4, 4)]
    # committed after its day was sealed: it goes into the next day that gets sealed
    writer = AuditWriter(engine, CHAIN, keys.signer())
    writer.start()
    for n, day in enumerate([DAYS[1], DAYS[3]], start=5):
        at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        writer.submit(Event(id=event_id(n), kind="access.granted", source="ctl-1", ts=at, received_ts=at))
    assert writer.stop()
    assert seal(engine, keys.signer(), until_day=DAYS[3]) == []  # DAYS[3] is not over yet
    made = seal(engine, keys.signer())
    assert [(s.day, s.first_seq, s.last_seq) for s in made] == [(DAYS[3], 5, 6)]
    assert_verified(engine, keys)


def test_proof_verifies_offline_with_only_the_public_key(sealed: Engine, keys: KeyStore) -> None:
    trusted = only_public_key(keys)
    for n in (1, 7, 15):
        proof = json.loads(json.dumps(prove(sealed, event_id(n))))
        verify_proof(proof, trusted)
        assert proof["event"]["event_id"] == event_id(n)
    proof = prove(sealed, event_id(7))
    with pytest.raises(ProofError, match="not a trusted key"):
        verify_proof(proof, {})
    forged = json.loads(json.dumps(proof))
    forged["event"]["detail"] = '{"n":70}'
    with pytest.raises(ProofError, match="modified"):
        verify_proof(forged, trusted)
    forged = json.loads(json.dumps(proof))
    forged["segment"]["root"] = "00" * 32
    with pytest.raises(ProofError, match="signature"):
        verify_proof(forged, trusted)
    forged = json.loads(json.dumps(proof))
    forged["inclusion_proof"][0] = "00" * 32
    with pytest.raises(ProofError, match="inclusion proof fails"):
        verify_proof(forged, trusted)
    with pytest.raises(SegmentError, match="not sealed yet"):
        prove(sealed, event_id(18))
    with pytest.raises(SegmentError, match="not in the audit log"):
        prove(sealed, "ctl-1:nope")


def test_tampering_after_sealing(sealed: Engine, keys: KeyStore) -> None:
    with sealed.begin() as conn:
        drop_append_only_triggers(conn)
        conn.execute(text("UPDATE audit_entry SET detail = :d WHERE chain_id = :c AND seq = 7"),
                     dict(d='{"n":700}', c=CHAIN))
    trusted = only_public_key(keys)
    verify_proof(prove(sealed, event_id(8)), trusted)  # the neighbour's proof still holds
    with pytest.raises(ProofError, match="modified"):
        verify_proof(prove(sealed, event_id(7)), trusted)
    report = verify(sealed, str(sealed.url), keys.trusted_public_keys())
    assert report.first is not None and (report.first.seq, report.first.problem) == (7, "modified")
    # rewriting the stored hash too changes the day's tree: no proof is handed out for it any more
    with sealed.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET hash = :h WHERE chain_id = :c AND seq = 9"), dict(h="ab" * 32, c=CHAIN))
    with pytest.raises(SegmentError, match="no longer match their signed root"):
        prove(sealed, event_id(8))
    # a tampered log is neither sealed nor pruned: the signature would launder it, pruning destroy the evidence
    with sealed.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET detail = '{}' WHERE chain_id = :c AND seq = 17"), dict(c=CHAIN))
    with pytest.raises(SegmentError, match="does not follow"):
        seal(sealed, keys.signer())
    with pytest.raises(SegmentError, match="no longer match"):
        prune(sealed, keys.signer(), keep_days=90, now=datetime(2026, 12, 1, tzinfo=UTC))


def test_consistency_of_a_sealed_day(sealed: Engine, keys: KeyStore) -> None:
    trusted = only_public_key(keys)
    for old_size in range(1, PER_DAY + 1):
        proof = json.loads(json.dumps(consistency(sealed, CHAIN, DAYS[1], old_size)))
        verify_consistency(proof, trusted, old_root=proof["old_root"])
    proof = consistency(sealed, CHAIN, DAYS[1], 3)
    with pytest.raises(ProofError, match="another earlier root"):
        verify_consistency(proof, trusted, old_root="00" * 32)
    forged = dict(proof, old_root="11" * 32)
    with pytest.raises(ProofError, match="not an extension"):
        verify_consistency(forged, trusted)
    with pytest.raises(SegmentError, match="outside"):
        consistency(sealed, CHAIN, DAYS[1], PER_DAY + 1)
    with pytest.raises(SegmentError, match="no sealed segment"):
        consistency(sealed, CHAIN, DAYS[3], 1)


def test_prune_keeps_verify_green(sealed: Engine, keys: KeyStore) -> None:
    with pytest.raises(SegmentError, match="PCI DSS"):
        prune(sealed, keys.signer(), keep_days=89)
    now = datetime.combine(DAYS[2] + timedelta(days=90), datetime.min.time(), UTC)  # cutoff: DAYS[2]
    with sealed.connect() as conn:
        checkpoints = conn.scalar(text("SELECT count(*) FROM checkpoint WHERE seq <= 10"))
    assert checkpoints >= 2
    report = prune(sealed, keys.signer(), keep_days=90, now=now)
    assert (report.cutoff, report.entries, len(report.segments)) == (DAYS[2], 10, 2)
    assert prune(sealed, keys.signer(), keep_days=90, now=now).entries == 0
    with sealed.connect() as conn:
        assert conn.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all() == list(range(11, 21))
        assert conn.scalars(select(Segment.pruned).order_by(Segment.first_seq)).all() == [True, True, False]
        assert conn.scalar(text("SELECT count(*) FROM checkpoint WHERE seq <= 10")) == checkpoints
    report = verify(sealed, str(sealed.url), keys.trusted_public_keys())
    assert report.ok, [str(f) for f in report.findings]
    assert (report.chains[CHAIN].pruned_through, report.chains[CHAIN].entries) == (10, 10)
    with pytest.raises(SegmentError, match="pruned"):
        prove(sealed, event_id(3))
    with pytest.raises(SegmentError, match="was pruned"):
        consistency(sealed, CHAIN, DAYS[0], 1)
    verify_proof(prove(sealed, event_id(12)), only_public_key(keys))
    # everything sealed and pruned: the chain is only its signed segments and checkpoints, and still verifies
    seal(sealed, keys.signer())
    prune(sealed, keys.signer(), keep_days=90, now=datetime(2027, 1, 1, tzinfo=UTC))
    report = verify(sealed, str(sealed.url), keys.trusted_public_keys())
    assert report.ok, [str(f) for f in report.findings]
    assert (report.chains[CHAIN].pruned_through, report.chains[CHAIN].entries) == (20, 0)


@pytest.mark.parametrize("seq", [11, 13])
def test_deleting_outside_a_pruned_segment_is_still_reported(sealed: Engine, keys: KeyStore, seq: int) -> None:
    prune(sealed, keys.signer(), keep_days=90, now=datetime.combine(DAYS[2] + timedelta(days=90), datetime.min.time(), UTC))
    with sealed.begin() as conn:
        drop_append_only_triggers(conn)
        conn.execute(text("DELETE FROM audit_entry WHERE chain_id = :c AND seq = :s"), dict(c=CHAIN, s=seq))
    report = verify(sealed, str(sealed.url), keys.trusted_public_keys())
    assert report.first is not None and (report.first.seq, report.first.problem) == (seq, "deleted"), report.findings


def test_marking_a_segment_pruned_without_the_key_is_reported(sealed: Engine, keys: KeyStore) -> None:
    """Someone with database access marks day 1 pruned (no signature of theirs verifies) and deletes it."""
    with sealed.begin() as conn:
        drop_append_only_triggers(conn)
        conn.execute(text("UPDATE segment SET pruned = :t, pruned_us = 1, prune_key_id = :k, prune_signature = :s "
                          "WHERE first_seq = 1"), dict(t=True, k=keys.signer().key_id, s="00" * 64))
        conn.execute(text("DELETE FROM audit_entry WHERE chain_id = :c AND seq <= 5"), dict(c=CHAIN))
    report = verify(sealed, str(sealed.url), keys.trusted_public_keys())
    problems = {(f.seq, f.problem) for f in report.findings}
    assert (1, "deleted") in problems and (1, "segment") in problems, report.findings


def test_direct_changes_are_still_refused(sealed: Engine, keys: KeyStore) -> None:
    for sql in ("DELETE FROM audit_entry WHERE seq = 1", "UPDATE audit_entry SET detail = '{}' WHERE seq = 1",
                "DELETE FROM segment WHERE first_seq = 1", "UPDATE segment SET root = 'ab' WHERE first_seq = 1"):
        with pytest.raises(DBAPIError, match="append-only"), sealed.begin() as conn:
            conn.execute(text(sql))
    # a window alone is not enough: it must name a sealed segment already marked pruned
    with pytest.raises(DBAPIError, match="append-only"), sealed.begin() as conn:
        conn.execute(text("INSERT INTO prune_window (chain_id, first_seq, last_seq) VALUES (:c, 1, 5)"), dict(c=CHAIN))
        conn.execute(text("DELETE FROM audit_entry WHERE seq = 1"))
    # and a pruned segment cannot be un-pruned
    prune(sealed, keys.signer(), keep_days=90, now=datetime.combine(DAYS[1] + timedelta(days=90), datetime.min.time(), UTC))
    with pytest.raises(DBAPIError, match="append-only"), sealed.begin() as conn:
        conn.execute(text("UPDATE segment SET pruned = :f WHERE first_seq = 1"), dict(f=False))
    with sealed.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM audit_entry")) == ENTRIES - PER_DAY
        assert conn.scalar(text("SELECT count(*) FROM prune_window")) == 0
    assert_verified(sealed, keys)


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli(site_file: Path, db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> object:
        return runner.invoke(main, ["-c", str(site_file), *args], input=input, catch_exceptions=False)

    assert run("init").exit_code == 0
    keys = KeyStore(tmp_path / "keys")
    from badge_bridge.db import make_engine

    engine = make_engine(db_url)
    try:
        write_days(engine, keys)
    finally:
        engine.dispose()
    result = run("audit", "seal")
    assert result.exit_code == 0, result.output
    assert result.output.count("sealed chain bridge-1 ") == 4
    assert "nothing to seal" in run("audit", "seal").output
    result = run("audit", "prove", event_id(7), "--verify")
    assert result.exit_code == 2 and "pass --public-key" in result.output, result.output
    result = run("audit", "prove", event_id(7), "--verify", "--public-key",
                 str(next((keys.dir / "signing").glob("*.pub"))))
    assert result.exit_code == 0, result.output
    start = result.output.index("{")
    proof = json.loads(result.output[start:result.output.rindex("}") + 1])
    verify_proof(proof, only_public_key(keys))
    assert "verified" in result.output
    result = run("audit", "prove", "ctl-1:nope")
    assert result.exit_code == 1 and "not in the audit log" in result.output
    result = run("audit", "consistency", "--chain", CHAIN, "--day", DAYS[1].isoformat(), "--old-size", "2")
    assert result.exit_code == 0, result.output
    assert "is a prefix of the sealed 5" in result.output
    result = run("audit", "consistency", "--chain", CHAIN, "--day", "yesterday", "--old-size", "2")
    assert result.exit_code == 2 and "not a date" in result.output
    result = run("audit", "prune", "--keep-days", "30", "--yes")
    assert result.exit_code == 1 and "PCI DSS" in result.output
    result = run("audit", "prune", "--keep-days", "90", input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    result = run("audit", "prune", "--keep-days", "90", "--yes")
    assert result.exit_code == 0, result.output
    assert "pruned 20 entries of 4 segments" in result.output
    result = run("audit", "verify")
    assert result.exit_code == 0, result.output
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            kinds = conn.scalars(select(AuditEntry.kind).where(AuditEntry.chain_id == "bridge-1.cli")).all()
    finally:
        engine.dispose()
    assert kinds == ["admin.site_synced", "admin.state_baseline", "audit.pruned"]  # init; the states carried past the cut
