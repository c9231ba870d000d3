"""The audit writer on both databases: chain, idempotence, ack-after-commit, a checkpoint per batch, outages."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from badge_bridge.audit.chain import GENESIS, entry_body, entry_hash
from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter, QueueFull
from badge_bridge.db import make_engine
from badge_bridge.events import Event, InvalidEvent
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, Checkpoint
from tests.waiting import wait_until

NOW = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)


def ev(n: int, **kw: object) -> Event:
    fields = dict(id=f"ctl-1:{n}", kind="access.granted", source="ctl-1", ts=NOW, door="main-entrance",
                  subject={"person": n % 7, "credential": n}, detail={"reader": "main-in", "n": n})
    fields.update(kw)
    return Event(**fields)  # type: ignore[arg-type]


def writer(engine: Engine, keys: KeyStore, **kw: object) -> AuditWriter:
    w = AuditWriter(engine, "bridge-1", keys.signer(), **kw)  # type: ignore[arg-type]
    w.start()
    return w


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(AuditEntry)) or 0


def test_chain_is_gapless_and_linked(engine: Engine, keys: KeyStore, db_url: str) -> None:
    w = writer(engine, keys, batch_max=7)
    for n in range(100):
        w.submit(ev(n))
    assert w.stop()
    with Session(engine) as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [r.seq for r in rows] == list(range(1, 101))
    prev = GENESIS
    for r in rows:
        body = entry_body(r.chain_id, r.event_id, r.ts_us, r.received_us, r.source, r.door, r.kind, r.subject, r.detail)
        assert r.prev_hash == prev and r.hash == entry_hash(prev, body)
        prev = r.hash
    assert '"credential":3' in rows[3].subject
    report = verify(engine, db_url, keys.trusted_public_keys())
    assert report.ok, report.findings
    assert report.chains["bridge-1"].entries == 100


def test_replayed_event_makes_no_second_row(engine: Engine, keys: KeyStore) -> None:
    acks: list[tuple[str, bool]] = []
    w = writer(engine, keys)
    for n in (1, 2, 1, 3, 2):  # duplicates inside one batch
        w.submit(ev(n), lambda e, dup: acks.append((e.id, dup)))
    assert w.flush()
    w.submit(ev(3), lambda e, dup: acks.append((e.id, dup)))  # across batches
    assert w.stop()
    w2 = writer(engine, keys)  # across a restart of the writer
    w2.submit(ev(1), lambda e, dup: acks.append((e.id, dup)))
    w2.submit(ev(4), lambda e, dup: acks.append((e.id, dup)))
    assert w2.stop()
    assert count(engine) == 4
    assert acks == [("ctl-1:1", False), ("ctl-1:2", False), ("ctl-1:1", True), ("ctl-1:3", False),
                    ("ctl-1:2", True), ("ctl-1:3", True), ("ctl-1:1", True), ("ctl-1:4", False)]
    assert w.stats.duplicates == 3 and w2.stats.duplicates == 1


def test_ack_runs_only_after_commit(engine: Engine, keys: KeyStore, db_url: str) -> None:
    """At the moment a source is acknowledged, another connection must already see the row."""
    seen: list[bool] = []
    observer = make_engine(db_url)

    def ack(event: Event, _dup: bool) -> None:
        with observer.connect() as conn:
            seen.append(conn.scalar(select(AuditEntry.id).where(AuditEntry.event_id == event.id)) is not None)

    w = writer(engine, keys)
    for n in range(20):
        w.submit(ev(n), ack)
    assert w.stop()
    observer.dispose()
    assert seen == [True] * 20


def test_every_batch_commits_with_its_checkpoint(engine: Engine, keys: KeyStore) -> None:
    w = AuditWriter(engine, "bridge-1", keys.signer(), batch_max=5)
    for n in range(23):  # queued before the start: batches of exactly 5, 5, 5, 5, 3
        w.submit(ev(n))
    w.start()
    assert w.flush()
    with engine.connect() as conn:
        assert conn.scalars(select(Checkpoint.seq).order_by(Checkpoint.seq)).all() == [5, 10, 15, 20, 23]
    w.submit(ev(1))  # a duplicate only: nothing new to sign
    assert w.stop()
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Checkpoint)) == 5
    assert w.stats.checkpoints == 5


def test_two_writers_on_one_chain_stay_consistent(engine: Engine, keys: KeyStore, db_url: str) -> None:
    """Two processes that share a chain id (a CLI next to the bridge) must not fork the chain."""
    a, b = writer(engine, keys, batch_max=3), writer(make_engine(db_url), keys, batch_max=3)
    for n in range(30):
        (a if n % 2 else b).submit(ev(n))
    assert a.stop() and b.stop()
    assert count(engine) == 30
    assert a.stats.retries + b.stats.retries >= 1
    assert verify(engine, db_url, keys.trusted_public_keys()).ok


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(detail={"pin": "1234"}), "never logged"),
        (dict(subject={"person": {"template": "x"}}), "never logged"),
        (dict(ts=datetime(2026, 1, 1)), "no time zone"),
        (dict(kind="Granted"), "dotted lowercase"),
        (dict(id="bad id with spaces"), "letters, digits"),
        (dict(detail={"x": math.nan}), "not representable as JSON"),
        (dict(detail={"x": object()}), "not representable as JSON"),
        (dict(door="x" * 200), "door key"),
    ],
)
def test_invalid_events_are_refused_before_the_queue(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        ev(1, **fields)


def _hold_sqlite_lock(path: str, started: threading.Event, release: threading.Event) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    started.set()
    release.wait()
    conn.execute("ROLLBACK")
    conn.close()


def test_sqlite_locked_database_holds_events_until_free(sqlite_url: str, keys: KeyStore) -> None:
    engine = make_engine(sqlite_url)
    acked: list[str] = []
    started, release = threading.Event(), threading.Event()
    locker = threading.Thread(target=_hold_sqlite_lock, args=(sqlite_url.removeprefix("sqlite:///"), started, release))
    locker.start()
    started.wait()
    try:
        w = writer(engine, keys)  # starts while the database is locked
        for n in range(10):
            w.submit(ev(n), lambda e, _d: acked.append(e.id))
        wait_until(lambda: w.stats.retries, 30, "the writer to give up on the lock once (busy_timeout) and retry")
        assert acked == []  # nothing acknowledged while the database is locked
    finally:
        release.set()
        locker.join()
    assert w.stop(timeout=30)
    assert len(acked) == 10 and count(engine) == 10
    assert w.stats.retries >= 1


def test_postgres_outage_loses_nothing(pg_url: str, keys: KeyStore) -> None:
    engine = make_engine(pg_url)
    w = writer(engine, keys, retry_max_s=0.2)
    dbname = pg_url.rsplit("/", 1)[1]
    admin = psycopg.connect(pg_url.replace("+psycopg", "").rsplit("/", 1)[0] + "/postgres", autocommit=True)
    admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
    acked: list[str] = []
    for n in range(50):
        w.submit(ev(n), lambda e, _d: acked.append(e.id))
    wait_until(lambda: not w.stats.healthy, 10, "the writer to notice the outage")
    assert not w.stats.healthy and "database" in (w.stats.last_error or "")
    assert acked == []
    admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    admin.close()
    assert w.stop(timeout=30)
    assert sorted(acked) == sorted(f"ctl-1:{n}" for n in range(50))
    assert count(engine) == 50 and w.stats.healthy


def test_queue_full_is_reported_not_dropped(sqlite_url: str, keys: KeyStore) -> None:
    engine = make_engine(sqlite_url)
    w = AuditWriter(engine, "bridge-1", keys.signer(), queue_max=100)  # not started: nothing drains
    for n in range(100):
        w.submit(ev(n))
    with pytest.raises(QueueFull):
        w.submit(ev(101), timeout=0.1)
    w.start()
    assert w.stop()
    assert count(engine) == 100


def test_triggers_refuse_update_and_delete(engine: Engine, keys: KeyStore) -> None:
    w = writer(engine, keys)
    w.submit(ev(1))
    assert w.stop()
    for sql in ("UPDATE audit_entry SET door = 'x'", "DELETE FROM audit_entry",
                "UPDATE checkpoint SET seq = 9", "DELETE FROM checkpoint"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    assert count(engine) == 1


def _refused_by_the_database(db_url: str):
    """An effect whose row the database itself refuses: NUL in text on PostgreSQL, a NOT NULL column left
    empty on SQLite (which takes NUL)."""
    from badge_bridge.models import DeadLetter

    def effect(conn) -> None:
        if db_url.startswith("postgresql"):
            conn.execute(DeadLetter.__table__.insert().values(received_at=NOW, source="x", reason="a\x00b", payload=b""))
        else:
            conn.execute(DeadLetter.__table__.insert().values(received_at=NOW, source="x", reason=None, payload=b""))
    return effect


def test_a_refused_row_is_quarantined_and_the_rest_commits(engine: Engine, keys: KeyStore, db_url: str) -> None:
    """Once a value the database refused was retried for ever: nothing else was committed again."""
    acked: list[str] = []
    w = AuditWriter(engine, "bridge-1", keys.signer(), batch_max=100)
    unencodable = ev(37)
    object.__setattr__(unencodable, "detail_json", '{"x":"\ud800"}')  # past Event's own cleaning, as a bug would
    for n in range(100):
        event, effect = (unencodable, None) if n == 37 else (ev(n), _refused_by_the_database(db_url) if n == 61 else None)
        w.submit(event, lambda e, _d: acked.append(e.id), effect=effect)
    w.start()  # all 100 in one batch
    assert w.stop(timeout=60)
    assert sorted(acked) == sorted(f"ctl-1:{n}" for n in range(100))
    with Session(engine) as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    assert [r.event_id for r in rows] == [f"ctl-1:{n}" for n in range(100)]  # in order, none lost
    quarantined = {r.event_id: r for r in rows if r.kind == "audit.quarantined"}
    assert set(quarantined) == {"ctl-1:37", "ctl-1:61"} and w.stats.quarantined == 2
    assert "\\ud800" in quarantined["ctl-1:37"].detail and w.stats.healthy
    assert verify(engine, db_url, keys.trusted_public_keys()).ok
