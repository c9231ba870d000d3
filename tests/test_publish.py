"""The bridge's tree-head publisher against a real witness process, on SQLite and PostgreSQL: heads reach the
witness and its cosignatures the database; a witness away raises an alarm without holding up the log and
catches up with one proof when back; a database administrator cutting the log's tail is a fork; a restart
takes up the tree from its stored frontier; and `badge-bridge run` publishes."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.engine import Connection, Row

from badge_bridge.audit import merkle
from badge_bridge.audit.chain import entry_body, entry_hash
from badge_bridge.audit.publish import Publisher, Witness
from badge_bridge.audit.witness_api import WitnessClient
from badge_bridge.audit.writer import AuditWriter, write_checkpoint
from badge_bridge.db import make_engine
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore, key_id_of, public_from_hex
from badge_bridge.models import Alarm, AuditEntry, TreeFrontier, WitnessCosignature
from badge_bridge.models import TreeHead as TreeHeadRow
from badge_bridge.sim.broker import Broker
from tests.bridge_proc import CLI, BridgeProcess, cli_env
from tests.conftest import write_site
from tests.waiting import wait_until
from tests.witness_proc import WitnessProcess

CHAIN = "bridge-1"
PERIOD = 0.2
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)



@pytest.fixture
def writer(engine: Engine, keys: KeyStore) -> Iterator[AuditWriter]:
    """The bridge's writer (a checkpoint with every batch)."""
    w = AuditWriter(engine, CHAIN, keys.signer())
    w.start()
    yield w
    w.stop()


class Running:
    """Publishers made by a test, stopped at its end."""

    def __init__(self, engine: Engine, keys: KeyStore, writer: AuditWriter) -> None:
        self.engine, self.keys, self.writer = engine, keys, writer
        self.made: list[Publisher] = []

    def __call__(self, *witnesses: WitnessProcess, leaf_cap: int = 100_000) -> Publisher:
        targets = []
        for w in witnesses:
            key = public_from_hex(w.public_key)
            targets.append(Witness(w.url, key_id_of(key), key, WitnessClient(w.url, timeout=2)))
        publisher = Publisher(self.engine, self.keys.signer(), self.keys.trusted_public_keys(), targets,
                              lambda event, effect: self.writer.submit(event, effect=effect), CHAIN, PERIOD,
                              leaf_cap=leaf_cap)
        publisher.start()
        self.made.append(publisher)
        return publisher


@pytest.fixture
def publisher(engine: Engine, keys: KeyStore, writer: AuditWriter) -> Iterator[Running]:
    running = Running(engine, keys, writer)
    yield running
    for p in running.made:
        p.stop()


def write(writer: AuditWriter, n: int, prefix: str) -> None:
    for i in range(n):
        writer.submit(Event(id=f"{prefix}:{i}", kind=EventKind.ACCESS_GRANTED, source="ctl-1", door="dc-hall",
                            ts=T0 + timedelta(seconds=i), subject={"person": 1}, detail={"reader": "r1"}))
    assert writer.flush(30)


def chain_size(engine: Engine, chain: str = CHAIN) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(AuditEntry.seq).where(AuditEntry.chain_id == chain)
                           .order_by(AuditEntry.seq.desc()).limit(1)) or 0


def held_size(w: WitnessProcess, chain: str = CHAIN) -> int:
    try:
        held = WitnessClient(w.url, timeout=2).latest(chain)
    except Exception:
        return -1
    return held.head.size if held else 0


def open_alarms(engine: Engine, kind: str) -> list[Row[tuple[str, str]]]:
    with engine.connect() as conn:
        return list(conn.execute(select(Alarm.event_id, Alarm.source).where(Alarm.kind == kind,
                                                                           Alarm.cleared_at.is_(None))).all())


def alarm_rows(engine: Engine, kind: str) -> list[tuple[str, datetime | None]]:
    with engine.connect() as conn:
        return [(r.source, r.cleared_at) for r in conn.execute(select(Alarm.source, Alarm.cleared_at)
                                                                .where(Alarm.kind == kind))]


def behind_the_back(engine: Engine, sql: Callable[[Connection], None]) -> None:
    """What a database administrator can do: SQLite with the append-only triggers dropped, PostgreSQL as the
    superuser with triggers bypassed for the session."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            for table in ("audit_entry", "checkpoint", "tree_frontier"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
        else:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        sql(conn)


def test_heads_reach_the_witness_and_cosignatures_the_database(
        engine: Engine, writer: AuditWriter, publisher: Running, witness: WitnessProcess) -> None:
    write(writer, 40, "a")
    publisher(witness)
    wait_until(lambda: held_size(witness) == chain_size(engine) == 40, what="the witness to hold all 40 entries")
    write(writer, 25, "b")
    wait_until(lambda: held_size(witness) == 65, what="the witness to hold 65 entries")
    with engine.connect() as conn:
        hashes = [bytes.fromhex(h) for h in conn.scalars(select(AuditEntry.hash).where(AuditEntry.chain_id == CHAIN)
                                                         .order_by(AuditEntry.seq))]
        head = conn.execute(select(TreeHeadRow.root, TreeHeadRow.head_hash).where(TreeHeadRow.chain_id == CHAIN,
                                                                                TreeHeadRow.size == 65)).one()
        cosigned = wait_until(lambda: conn.execute(select(WitnessCosignature.witness_key_id, WitnessCosignature.signature)
                                                  .where(WitnessCosignature.size == 65)).first(),
                              what="the cosignature stored")
    assert head.root == merkle.root(hashes).hex() and head.head_hash == hashes[-1].hex()
    assert cosigned.witness_key_id == key_id_of(public_from_hex(witness.public_key))
    held = WitnessClient(witness.url).latest(CHAIN)
    assert held is not None and held.cosignature.signature == cosigned.signature


def test_a_witness_away_raises_an_alarm_and_catches_up_with_one_proof(
        engine: Engine, writer: AuditWriter, publisher: Running, witness: WitnessProcess) -> None:
    write(writer, 10, "a")
    publisher(witness)
    wait_until(lambda: held_size(witness) == 10, what="the witness to hold 10 entries")
    witness.kill()
    write(writer, 30, "away")  # the log does not wait for the witness
    wait_until(lambda: open_alarms(engine, EventKind.AUDIT_WITNESS_UNREACHABLE), what="the unreachable alarm")
    assert chain_size(engine) > 40
    lines_before = len((witness.dir / "heads.jsonl").read_text().splitlines())
    witness.start()
    wait_until(lambda: all(cleared for _, cleared in alarm_rows(engine, EventKind.AUDIT_WITNESS_UNREACHABLE)),
               what="the alarm cleared")
    lines = [json.loads(x)["head"]["size"] for x in (witness.dir / "heads.jsonl").read_text().splitlines()]
    assert lines[lines_before - 1] == 10 and lines[lines_before] > 40  # one head, one proof, for the whole gap
    wait_until(lambda: held_size(witness) == chain_size(engine), what="the witness to hold the alarm entries too")
    (source, _), = alarm_rows(engine, EventKind.AUDIT_WITNESS_UNREACHABLE)
    assert source == f"witness:{key_id_of(public_from_hex(witness.public_key))}"


def test_a_cut_tail_is_a_fork(engine: Engine, writer: AuditWriter, publisher: Running,
                              witness: WitnessProcess) -> None:
    """The DBA deletes the last entries and their checkpoints, behind the triggers' back."""
    for batch in range(5):
        write(writer, 10, f"b{batch}")
    publisher(witness)
    wait_until(lambda: held_size(witness) == 50, what="the witness to hold 50 entries")
    assert not open_alarms(engine, EventKind.AUDIT_FORK_DETECTED)

    def cut(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_entry WHERE chain_id = :c AND seq > 35"), {"c": CHAIN})
        conn.execute(text("DELETE FROM checkpoint WHERE chain_id = :c AND seq > 35"), {"c": CHAIN})

    behind_the_back(engine, cut)
    alarm, = wait_until(lambda: open_alarms(engine, EventKind.AUDIT_FORK_DETECTED), what="the fork alarm")
    assert alarm.source == f"witness:{key_id_of(public_from_hex(witness.public_key))}"
    with engine.connect() as conn:
        detail = json.loads(conn.scalar(select(AuditEntry.detail).where(AuditEntry.event_id == alarm.event_id)))
    assert detail["held_size"] == 50 and detail["chain"] == CHAIN and detail["severity"] == "critical"
    assert held_size(witness) == 50  # the witness never took the cut log


def test_entries_no_trusted_signature_covers_are_not_published(
        engine: Engine, writer: AuditWriter, publisher: Running, witness: WitnessProcess, tmp_path: Path) -> None:
    """The DBA appends a correctly hashed entry and a checkpoint signed with a key of their own (plain INSERTs):
    no head ever covers it."""
    write(writer, 20, "a")
    running = publisher(witness)
    wait_until(lambda: held_size(witness) == 20, what="the witness to hold 20 entries")
    stranger = KeyStore(tmp_path / "stranger")
    stranger.ensure()
    with engine.begin() as conn:
        last = conn.execute(select(AuditEntry.hash).where(AuditEntry.chain_id == CHAIN, AuditEntry.seq == 20)).scalar_one()
        record = Event(id="forged", kind=EventKind.ACCESS_GRANTED, source="ctl-1", door="dc-hall", ts=T0,
                       subject={"person": 2}).record(CHAIN)
        forged = entry_hash(last, entry_body(*record))
        conn.execute(insert(AuditEntry).values(
            chain_id=CHAIN, seq=21, event_id=record[1], ts_us=record[2], received_us=record[3], source=record[4],
            door=record[5], kind=record[6], subject=record[7], detail=record[8], prev_hash=last, hash=forged))
        write_checkpoint(conn, stranger.signer(), CHAIN, 21, forged)
    rounds = running.rounds
    wait_until(lambda: running.rounds >= rounds + 3, what="three more publication rounds")
    assert held_size(witness) == 20
    with engine.connect() as conn:
        assert conn.scalar(select(func.max(TreeHeadRow.size)).where(TreeHeadRow.chain_id == CHAIN)) == 20


def test_a_restart_takes_up_the_tree_from_the_stored_frontier(
        engine: Engine, writer: AuditWriter, publisher: Running, witness: WitnessProcess) -> None:
    write(writer, 30, "a")
    first = publisher(witness)
    wait_until(lambda: held_size(witness) == 30, what="the witness to hold 30 entries")
    first.stop()
    with engine.connect() as conn:
        assert conn.scalars(select(TreeFrontier.size).where(TreeFrontier.chain_id == CHAIN)).all() == [30]
    # The entries before the frontier are gone (as after pruning): only the frontier can give the tree back.
    behind_the_back(engine, lambda conn: conn.execute(
        text("DELETE FROM audit_entry WHERE chain_id = :c AND seq < 30"), {"c": CHAIN}))
    write(writer, 12, "b")
    publisher(witness)
    wait_until(lambda: held_size(witness) == 42, what="the witness to hold 42 entries")
    assert not open_alarms(engine, EventKind.AUDIT_FORK_DETECTED)


def test_a_forged_frontier_is_not_taken_up(engine: Engine, writer: AuditWriter, publisher: Running,
                                           witness: WitnessProcess) -> None:
    """A frontier row whose root is not the signed head's of its size is passed over (older one, or all
    entries), so the heads stay true and the witness keeps countersigning."""
    write(writer, 20, "a")
    first = publisher(witness)
    wait_until(lambda: held_size(witness) == 20, what="the witness to hold 20 entries")
    first.stop()

    def forge(conn: Connection) -> None:
        conn.execute(text("DELETE FROM tree_frontier"))
        conn.execute(text("INSERT INTO tree_frontier (chain_id, size, nodes) VALUES (:c, 20, :n)"),
                     {"c": CHAIN, "n": "ab" * 64})

    behind_the_back(engine, forge)
    write(writer, 5, "b")
    publisher(witness)
    wait_until(lambda: held_size(witness) == 25, what="the witness to hold 25 entries")
    assert not open_alarms(engine, EventKind.AUDIT_FORK_DETECTED)


def test_leaves_past_the_cap_are_reread(engine: Engine, writer: AuditWriter, publisher: Running,
                                        witness: WitnessProcess) -> None:
    write(writer, 10, "a")
    publisher(witness, leaf_cap=5)
    wait_until(lambda: held_size(witness) == 10, what="the witness to hold 10 entries")
    witness.kill()
    write(writer, 40, "away")
    witness.start()
    wait_until(lambda: held_size(witness) == chain_size(engine) >= 50, what="the witness to catch up")
    assert not open_alarms(engine, EventKind.AUDIT_FORK_DETECTED)


def test_the_bridge_publishes(tmp_path: Path, db_url: str, keys: KeyStore, broker: Broker,
                              bridge_process: Callable[[Path], BridgeProcess]) -> None:
    """`badge-bridge run` with a witness in its site file: heads countersigned while it runs, its frontier
    stored at stop, and after a restart the witness goes on countersigning (no fork)."""
    w = WitnessProcess(tmp_path / "witness", *sorted(keys.signing_dir.glob("*.pub")))
    w.start()
    try:
        (tmp_path / "witness.pub").write_text(w.public_key + "\n")
        site_file = write_site(tmp_path, db_url, ("queue_max = 100000", "queue_max = 100000\n"
                               f'publish_seconds = 0.5\nwitnesses = [{{url = "{w.url}", public_key = "witness.pub"}}]'),
                               broker_port=broker.port)
        subprocess.run([*CLI, "init"], env=cli_env(site_file), check=True, capture_output=True)
        bridge = bridge_process(site_file)
        bridge.start()
        wait_until(lambda: held_size(w) >= 1, what="the bridge's first head at the witness")
        assert bridge.signal(signal.SIGTERM) == 0
        held = held_size(w)
        engine = make_engine(db_url)
        with engine.connect() as conn:
            assert held in conn.scalars(select(TreeFrontier.size).where(TreeFrontier.chain_id == CHAIN)).all()
        bridge.start()
        wait_until(lambda: held_size(w) > held + 1, what="heads after the restart")
        assert bridge.signal(signal.SIGTERM) == 0
        assert not open_alarms(engine, EventKind.AUDIT_FORK_DETECTED)
        engine.dispose()
    finally:
        w.close()
