"""The cost of checking the access tables against the log: 10,000 people and 20,000 credentials, each created
by its own admin entry (30,000 entries carrying states), on SQLite and PostgreSQL.

Prints one JSON object: per database, the bridge's first check (every admin entry replayed), its periodic
check (no new entries: one read of the tables), and the state part of `audit verify`, in milliseconds.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from badge_bridge import models as m
from badge_bridge.audit import access_tables, state_check
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.event_kinds import EventKind
from badge_bridge.keys import KeyStore
from badge_bridge.people import admin_event
from badge_bridge.site_sync import sync_site
from badge_bridge.state_watch import StateWatch
from bench.throwaway import NoPostgres, postgres_database

PEOPLE, CREDENTIALS = 10_000, 20_000
ROOT = Path(__file__).resolve().parents[1]


def populate(engine: Engine, keys: KeyStore) -> None:
    migrate(engine)
    with Session(engine) as session, session.begin():
        sync_site(session, load_config(ROOT / "site.example.toml"))
        levels = list(session.scalars(select(m.AccessLevel.id)))
        now = datetime.now(UTC)
        session.execute(insert(m.Person), [dict(name=f"Person {i}", company="ACME", status="active",
                                                lockdown_exempt=False, created_at=now) for i in range(PEOPLE)])
        ids = list(session.scalars(select(m.Person.id).order_by(m.Person.id)))
        session.execute(insert(m.PersonLevel), [dict(person_id=p, level_id=levels[p % len(levels)]) for p in ids])
        session.execute(insert(m.Credential), [dict(person_id=ids[i % PEOPLE], format="wiegand26",
                                                    number=f"{i // 65536}:{i % 65536}", status="active",
                                                    created_at=now) for i in range(CREDENTIALS)])
        rows = access_tables.snapshot(session)
    writer = AuditWriter(engine, "bench.cli", keys.signer())
    writer.start()
    for key, state in rows.items():  # one admin entry per row, as the CLI and console make them
        writer.submit(admin_event(EventKind.ADMIN_PERSON_ADDED, "cli:bench", {}, {}, (key, state)))
    assert writer.stop(120), writer.stats.last_error


def ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return round((time.perf_counter() - started) * 1000, 1)


def measure(engine: Engine) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyStore(Path(tmp))
        keys.ensure()
        populate(engine, keys)
        watch = StateWatch(engine, AuditWriter(engine, "bench", keys.signer()), "bench", 60, threading.Event(),
                           keys.trusted_public_keys())
        return _timed(engine, watch, keys)


def _timed(engine: Engine, watch: StateWatch, keys: KeyStore) -> dict[str, object]:
    first = ms(watch.check)
    assert watch.differences == [], watch.differences[:3]
    periodic = statistics.median(ms(watch.check) for _ in range(5))
    verify_part = ms(lambda: state_check.findings(engine, keys.trusted_public_keys()))
    return {"first_check_ms": first, "periodic_check_ms": periodic, "verify_state_ms": verify_part}


def main() -> None:
    out: dict[str, object] = {"people": PEOPLE, "credentials": CREDENTIALS, "admin_entries": PEOPLE + CREDENTIALS}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite"] = measure(make_engine(f"sqlite:///{tmp}/bench.db", must_exist=False))
    try:
        with postgres_database() as url:
            engine = make_engine(url)
            out["postgresql"] = measure(engine)
            engine.dispose()
    except NoPostgres as exc:
        out["postgresql"] = str(exc)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
