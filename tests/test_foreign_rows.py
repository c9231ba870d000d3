"""A DBA's rows in the writer's chain, on both databases: the writer never extends or signs over a row it did
not write (it alarms and goes on in ``<chain>~2``), every entry it commits is signed in its own transaction,
even when the process is killed, and `audit verify` names what no signature covers and every edited column."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from badge_bridge.audit import segments
from badge_bridge.audit.chain import entry_body, entry_hash
from badge_bridge.audit.verify import Report, verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry, Checkpoint
from badge_bridge.sim.broker import Broker
from tests.bridge_proc import BridgeProcess
from tests.test_restart_state import ALAN, Rig, console
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)
CHAIN = "bridge-1"


def ev(n: int) -> Event:
    return Event(id=f"ctl-1:{n}", kind="access.granted", source="ctl-1", ts=NOW, door="main-entrance",
                 subject={"person": n % 7, "credential": n}, detail={"reader": "main-in", "n": n})


def write(engine: Engine, keys: KeyStore, numbers: range, chain: str = CHAIN) -> AuditWriter:
    writer = AuditWriter(engine, chain, keys.signer(), batch_max=3)
    writer.start()
    for n in numbers:
        writer.submit(ev(n))
    assert writer.flush()
    return writer


def forge(db_url: str, chain: str = CHAIN) -> int:
    """What a DBA can do with a plain INSERT, no trigger touched: append a correctly hashed event to the
    chain's head. Returns its seq."""
    engine = make_engine(db_url)
    try:
        return _forge(engine, chain)
    finally:
        engine.dispose()


def _forge(engine: Engine, chain: str) -> int:
    with engine.begin() as conn:
        seq, head = conn.execute(select(AuditEntry.seq, AuditEntry.hash).where(AuditEntry.chain_id == chain)
                                 .order_by(AuditEntry.seq.desc()).limit(1)).one()
        forged = Event(id=f"forged:{chain}:{seq + 1}".replace("~", "+"), kind="access.granted", source="ctl-1", ts=NOW, door="server-room",
                       subject={"person": 3}, detail={"reader": "srv-in"})
        record = forged.record(chain)
        conn.execute(insert(AuditEntry).values(
            chain_id=chain, seq=seq + 1, event_id=forged.id, ts_us=record[2], received_us=record[3], source=forged.source,
            door=forged.door, kind=forged.kind, subject=forged.subject_json, detail=forged.detail_json, prev_hash=head,
            hash=entry_hash(head, entry_body(*record)), person_id=3))
    return int(seq) + 1


def foreign_alarms(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Alarm.event_id).where(Alarm.kind == EventKind.AUDIT_FOREIGN_ENTRY)))


def entries(engine: Engine, chain: str) -> list[AuditEntry]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditEntry).where(AuditEntry.chain_id == chain).order_by(AuditEntry.seq)))


def checkpoint_seqs(engine: Engine, chain: str) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Checkpoint.seq).where(Checkpoint.chain_id == chain).order_by(Checkpoint.seq)))


def findings(report: Report) -> list[tuple[str, int, str]]:
    return [(f.chain_id, f.seq, f.problem) for f in report.findings]


def assert_continued(engine: Engine, last_seq: int, forged: int, chain: str = f"{CHAIN}~2") -> None:
    first = entries(engine, chain)[0]
    assert (first.seq, first.kind) == (1, EventKind.AUDIT_CHAIN_CONTINUED)
    detail = json.loads(first.detail)
    own = entries(engine, CHAIN)[last_seq - 1]
    assert (detail["chain"], detail["last_seq"], detail["last_hash"]) == (CHAIN, last_seq, own.hash)
    assert detail["foreign_seqs"] == [forged]


def test_a_row_forged_while_the_writer_runs_is_alarmed_and_never_signed_over(
        engine: Engine, keys: KeyStore, db_url: str) -> None:
    writer = write(engine, keys, range(1, 6))
    forged = forge(db_url)
    wait_until(lambda: foreign_alarms(engine), 10, "an audit.foreign_entry alarm")
    assert writer.chain_id == f"{CHAIN}~2"
    for n in range(6, 12):
        writer.submit(ev(n))
    assert writer.stop()
    assert checkpoint_seqs(engine, CHAIN)[-1] == 5  # nothing signed over the forged row
    assert [e.seq for e in entries(engine, CHAIN)] == [1, 2, 3, 4, 5, forged]
    assert_continued(engine, 5, forged)
    later = entries(engine, f"{CHAIN}~2")
    assert [e.kind for e in later[:2]] == [EventKind.AUDIT_CHAIN_CONTINUED, EventKind.ALARM_RAISED]
    assert [json.loads(e.detail)["n"] for e in later[2:]] == list(range(6, 12))
    assert checkpoint_seqs(engine, f"{CHAIN}~2")[-1] == len(later)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    sealed = {s.chain_id: s.last_seq for s in segments.seal(engine, keys.signer(), until_day=tomorrow)}
    assert sealed == {CHAIN: 5, f"{CHAIN}~2": len(later)}  # the sealer does not sign over it either
    report = verify(engine, db_url, keys.trusted_public_keys())
    assert findings(report) == [(CHAIN, forged, "unsigned")]
    assert report.findings[0].message == f"entries {forged}..{forged}: no signature covers them"


def test_planted_checkpoints_with_no_entry_move_the_writer_on(engine: Engine, keys: KeyStore) -> None:
    """Checkpoint rows planted past the head (no entry of their own) take the seqs the writer's next batches
    need: the writer must not retry against them forever, it alarms and goes on in a new chain."""
    writer = write(engine, keys, range(1, 4))
    with engine.begin() as conn:
        for seq in range(4, 40):
            conn.execute(insert(Checkpoint).values(chain_id=CHAIN, seq=seq, hash="0" * 64, signed_us=0,
                                                   key_id="planted", signature="0" * 128))
    for n in range(4, 8):
        writer.submit(ev(n))
    wait_until(lambda: foreign_alarms(engine), 10, "an audit.foreign_entry alarm")
    assert writer.flush() and writer.stop()
    later = entries(engine, f"{CHAIN}~2")
    assert [json.loads(e.detail)["n"] for e in later if e.kind == "access.granted"] == [4, 5, 6, 7]


def test_a_planted_row_with_no_door_is_named_not_a_crash(engine: Engine, keys: KeyStore, db_url: str) -> None:
    """``door`` may be NULL: a row planted with it must be found by verify and by the writer, never crash them."""
    writer = write(engine, keys, range(1, 4))
    with engine.begin() as conn:
        head = conn.scalar(select(AuditEntry.hash).where(AuditEntry.chain_id == CHAIN, AuditEntry.seq == 3))
        conn.execute(insert(AuditEntry).values(chain_id=CHAIN, seq=4, event_id="planted:4", ts_us=0, received_us=0,
                                               source="x", door=None, kind="access.granted", subject="{}",
                                               detail="{}", prev_hash=head, hash="0" * 64))
    wait_until(lambda: foreign_alarms(engine), 10, "an audit.foreign_entry alarm")
    assert writer.stop()
    assert (CHAIN, 4, "modified") in findings(verify(engine, db_url, keys.trusted_public_keys()))


def test_a_conflicting_forged_row_moves_the_busy_writer_too(engine: Engine, keys: KeyStore, db_url: str) -> None:
    """The forged row takes the seq the writer's next batch wants: the insert conflicts, and the batch goes to
    the new chain after the continuation, none of it lost."""
    writer = write(engine, keys, range(1, 4))
    forged = forge(db_url)
    for n in range(4, 40):
        writer.submit(ev(n))
    assert writer.stop()
    assert len(foreign_alarms(engine)) == 1
    assert [e.seq for e in entries(engine, CHAIN)] == [1, 2, 3, forged]
    assert sorted(json.loads(e.detail)["n"] for e in entries(engine, f"{CHAIN}~2")[2:]) == list(range(4, 40))
    assert findings(verify(engine, db_url, keys.trusted_public_keys())) == [(CHAIN, forged, "unsigned")]


def test_a_row_forged_at_rest_is_found_when_the_writer_starts(engine: Engine, keys: KeyStore, db_url: str) -> None:
    assert write(engine, keys, range(1, 6)).stop()
    forged = forge(db_url)
    writer = AuditWriter(engine, CHAIN, keys.signer())
    writer.start()
    wait_until(lambda: foreign_alarms(engine), 10, "an audit.foreign_entry alarm at start")
    writer.submit(ev(6))
    assert writer.stop()
    assert_continued(engine, 5, forged)
    # A restart takes up the newest chain of the base, whose head is signed: no second alarm, no third chain.
    again = write(engine, keys, range(7, 9))
    assert again.stop() and again.chain_id == f"{CHAIN}~2"
    assert len(foreign_alarms(engine)) == 1
    assert [e.seq for e in entries(engine, f"{CHAIN}~2")] == [1, 2, 3, 4, 5]
    # A forged row in the continuation moves the writer on to ~3.
    forge(db_url, f"{CHAIN}~2")
    third = write(engine, keys, range(9, 10))
    assert third.stop() and third.chain_id == f"{CHAIN}~3"
    assert len(foreign_alarms(engine)) == 2
    assert findings(verify(engine, db_url, keys.trusted_public_keys())) == [(CHAIN, forged, "unsigned"),
                                                                          (f"{CHAIN}~2", 6, "unsigned")]


def test_a_stored_prev_hash_edit_alone_is_found(engine: Engine, keys: KeyStore, db_url: str) -> None:
    assert write(engine, keys, range(1, 11)).stop()
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_entry_no_update"))
        else:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("UPDATE audit_entry SET prev_hash = :h WHERE chain_id = :c AND seq = 4"),
                     dict(h="f" * 64, c=CHAIN))
    report = verify(engine, db_url, keys.trusted_public_keys())
    assert findings(report) == [(CHAIN, 4, "modified")]
    assert "prev_hash" in report.findings[0].message


WRITE_FOREVER = """
import sys, time
from datetime import UTC, datetime, timedelta
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
url, keys, chain, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
writer = AuditWriter(make_engine(url), chain, KeyStore(__import__("pathlib").Path(keys)).signer(), batch_max=7)
writer.start()
now = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)
n = 0
while count == 0 or n < count:
    writer.submit(Event(id=f"{prefix}:{n}", kind="access.granted", source="ctl-1", ts=now, detail={"n": n}))
    n += 1
    if n % 50 == 0:
        writer.flush()
assert writer.stop()
"""


def writer_process(db_url: str, keys: KeyStore, chain: str, prefix: str, count: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITE_FOREVER, db_url, str(keys.dir), chain, prefix, str(count)],
                            env=env, cwd=ROOT)


def test_a_writer_killed_mid_write_leaves_no_unsigned_entry(engine: Engine, keys: KeyStore, db_url: str) -> None:
    process = writer_process(db_url, keys, CHAIN, "k", 0)
    try:
        wait_until(lambda: len(entries(engine, CHAIN)) >= 300, 60, "300 entries from the writer process")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    report = verify(engine, db_url, keys.trusted_public_keys())
    assert report.ok, report.findings
    assert report.chains[CHAIN].last_checkpoint_seq == report.chains[CHAIN].head_seq
    assert write(engine, keys, range(1, 3)).stop()  # the next writer takes up the chain: nothing is foreign
    assert foreign_alarms(engine) == [] and f"{CHAIN}~2" not in verify(engine, db_url, {}).chains


def test_two_cli_processes_on_one_chain_adopt_each_other(engine: Engine, keys: KeyStore, db_url: str) -> None:
    chain = f"{CHAIN}.cli"
    processes = [writer_process(db_url, keys, chain, prefix, 200) for prefix in ("a", "b")]
    for process in processes:
        assert process.wait(120) == 0
    report = verify(engine, db_url, keys.trusted_public_keys())
    assert report.ok, report.findings
    assert list(report.chains) == [chain] and report.chains[chain].entries == 400
    assert foreign_alarms(engine) == []


@pytest.fixture
def bridge(tmp_path: Path, db_url: str, broker: Broker, keys: KeyStore,
           bridge_process: Callable[[Path], BridgeProcess]) -> Iterator[Rig]:
    """The bridge as a process with two simulated controllers and a console (tests/test_restart_state.py)."""
    rig = Rig(tmp_path, db_url, broker, keys, bridge_process)
    yield rig
    rig.close()


def test_the_running_bridge_alarms_moves_on_and_its_doors_and_state_keep_working(bridge: Rig, db_url: str) -> None:
    rig = bridge
    assert rig.card(rig.lobby, "main-in", ALAN).type == "grant"

    def forged_row() -> int:
        try:
            return forge(db_url)
        except IntegrityError:  # the bridge committed at that seq meanwhile: forge after its new head
            return 0

    forged = wait_until(forged_row, 30, "a forged row in the bridge's chain")
    wait_until(lambda: foreign_alarms(rig.engine), 30, "the audit.foreign_entry alarm")
    assert rig.card(rig.lobby, "main-in", ALAN).type == "grant"
    lockdown = console(rig, "lockdown")
    wait_until(lambda: [e for e in entries(rig.engine, f"{CHAIN}~2") if e.event_id == lockdown], 30,
               "the lockdown in the new chain")
    assert rig.card(rig.lobby, "main-in", ALAN).reason == "lockdown"
    rig.restart("sigterm")
    assert rig.card(rig.lobby, "main-in", ALAN).reason == "lockdown"  # its state is the instance's, not the chain's
    assert len(foreign_alarms(rig.engine)) == 1
    report = verify(rig.engine, db_url, rig.keys.trusted_public_keys())
    assert findings(report) == [(CHAIN, forged, "unsigned")]
    assert f"{CHAIN}~3" not in report.chains
