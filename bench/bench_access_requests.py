"""What approved access requests cost the bridge: the snapshot load (10,000 people with a card each) with no
request and with 10,000 approved requests, each checked against the log's newest entry for it
(badge_bridge.snapshot), and decide() with only time-boxed grants (a window on every schedule), on SQLite.

Prints one JSON object: load times in CPU ms (median of 3) and decisions per CPU second: process time, not
wall time, so a machine shared with other work measures the same.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from badge_bridge import models as m
from badge_bridge import policy
from badge_bridge.audit import access_tables
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.event_kinds import EventKind
from badge_bridge.keys import KeyStore
from badge_bridge.people import admin_event
from badge_bridge.site_sync import sync_site
from badge_bridge.snapshot import load_snapshot

PEOPLE = 10_000
DECISIONS = 100_000
ROOT = Path(__file__).resolve().parents[1]


def populate(engine: Engine) -> None:
    migrate(engine)
    with Session(engine) as session, session.begin():
        sync_site(session, load_config(ROOT / "site.example.toml"))
        now = datetime.now(UTC)
        session.execute(insert(m.Person), [dict(name=f"Person {i}", company="ACME", status="active",
                                                lockdown_exempt=False, created_at=now) for i in range(PEOPLE)])
        ids = list(session.scalars(select(m.Person.id).order_by(m.Person.id)))
        session.execute(insert(m.Credential), [dict(person_id=p, format="wiegand26", number=f"{p // 65536}:{p % 65536}",
                                                    status="active", created_at=now) for p in ids])


def approve_all(engine: Engine, keys: KeyStore, now: datetime) -> None:
    """One approved request per person for the staff level, from an hour ago to a week on, each window its own
    (a minute apart), each with the admin entry that approved it (as badge_bridge.access_requests writes them)."""
    with Session(engine) as session, session.begin():
        level = session.scalar(select(m.AccessLevel).where(m.AccessLevel.key == "staff"))
        assert level is not None
        ids = list(session.scalars(select(m.Person.id).order_by(m.Person.id)))
        session.execute(insert(m.AccessRequest), [dict(
            person_id=p, level_id=level.id, starts_at=now - timedelta(hours=1, minutes=p),
            ends_at=now + timedelta(days=7, minutes=p),
            reason="bench", ticket="", state="approved", requested_by="gus", requested_at=now, decided_by="sam",
            decided_at=now, comment="") for p in ids])
        rows = [access_tables.access_request(r, "staff") for r in session.execute(select(m.AccessRequest.__table__))]
    writer = AuditWriter(engine, "bench.console", keys.signer())
    writer.start()
    for key, state in rows:
        writer.submit(admin_event(EventKind.ADMIN_REQUEST_APPROVED, "console:sam", {"request": int(key.split("/")[1])},
                                  {}, (key, state)))
    assert writer.stop(120), writer.stats.last_error


def load_ms(engine: Engine) -> tuple[float, int]:
    times, granted = [], 0
    for _ in range(3):
        with Session(engine) as session:
            started = time.process_time()
            snap = load_snapshot(session)
            times.append((time.process_time() - started) * 1000)
        granted = sum(1 for c in snap.credentials.values() if c.view.doors)
    return round(statistics.median(times), 1), granted


def decide_rate(engine: Engine, now: datetime) -> float:
    with Session(engine) as session:
        snap = load_snapshot(session)
    creds = [c.view for c in snap.credentials.values()]
    door, state = snap.doors["main-entrance"], policy.AccessState()
    times = [now, now + timedelta(days=8)]  # inside the window, and after it (outside_window)
    started = time.process_time()
    for i in range(DECISIONS):
        policy.decide(creds[i % len(creds)], policy.Request(door, times[i % 2]), state)
    return round(DECISIONS / (time.process_time() - started))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyStore(Path(tmp) / "keys")
        keys.ensure()
        engine = make_engine(f"sqlite:///{tmp}/bench.db", must_exist=False)
        populate(engine)
        empty_ms, _ = load_ms(engine)
        now = datetime.now(UTC)
        approve_all(engine, keys, now)
        full_ms, granted = load_ms(engine)
        assert granted == PEOPLE, granted  # every approval matched its logged state
        rate = decide_rate(engine, now)
        engine.dispose()
    print(json.dumps({"bench": "access_requests", "database": "sqlite", "people": PEOPLE,
                      "snapshot_load_ms_no_requests": empty_ms, "snapshot_load_ms_10000_approved": full_ms,
                      "decisions_per_s_time_boxed": rate}))


if __name__ == "__main__":
    main()
