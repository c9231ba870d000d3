"""A tenant admin's events page (web.tenant) against the staff's event log, on SQLite (WAL).

20 tenants of 200 people each and 1000 site staff; 200,000 access and door events at the example site's
four doors over 30 days, each by a random person (loaded straight into ``audit_entry``, as bench_console
does: the hash chain is not valid, which the pages do not look at). Through the Flask test client: the
first page and pages 2..11 (the ``Older`` link) of ``/tenant/events`` as tenant t00's admin (events at the
doors into cage 7, or of their 200 people), and the first page of ``/events`` as a guard. p50 / p99 / max
in ms per page type. Prints one JSON object.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people, tenants
from badge_bridge.config import TenantConfig, load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore
from badge_bridge.models import Person, Tenant
from badge_bridge.site_sync import sync_site

ROOT = Path(__file__).resolve().parents[1]
TENANTS, PER_TENANT, STAFF, EVENTS, DAYS = 20, 200, 1000, 200_000, 30
REQUESTS = 60
PASSWORD = "bench-tenant-password"
T_END = datetime(2026, 11, 1, tzinfo=UTC)
COLUMNS = ("chain_id", "seq", "event_id", "ts_us", "received_us", "source", "door", "kind", "subject", "detail",
           "prev_hash", "hash", "person_id")


def load_events(path: Path, person_ids: list[int], doors: list[str]) -> float:
    started = time.perf_counter()
    rnd = random.Random(19)
    start_us = int((T_END - timedelta(days=DAYS)).timestamp() * 1_000_000)
    step = DAYS * 86_400_000_000 // EVENTS
    rows = []
    for i in range(EVENTS):
        ts = start_us + i * step
        kind = rnd.choice(("access.granted", "access.granted", "access.denied", "door.opened", "door.closed"))
        pid = rnd.choice(person_ids) if kind.startswith("access.") else None
        subject = json.dumps({"person": pid, "credential": pid}) if pid else "{}"
        rows.append(("bench", i + 1, f"bench:{i}", ts, ts, "ctl-bench", rnd.choice(doors), kind, subject,
                     '{"reason": "granted", "direction": "in"}', "0" * 64, "0" * 64, pid))
    con = sqlite3.connect(path)
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO audit_entry ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()
    return time.perf_counter() - started


def timed(client, path: str) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (path, response.status_code)
    return elapsed, response.get_data(as_text=True)


def stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2), "max_ms": round(ms[-1], 2)}


def main() -> None:
    from web import create_app, current_services

    people.hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        url = f"sqlite:///{db}"
        example = load_config(ROOT / "site.example.toml")
        config = example.model_copy(update={"tenants": [
            TenantConfig(key=f"t{i:02d}", name=f"Tenant {i}", areas=["cage-7"], levels=["cage-7-acme"])
            for i in range(TENANTS)]})
        engine = make_engine(url, must_exist=False)
        migrate(engine)
        keys = KeyStore(Path(tmp) / "keys")
        keys.ensure()
        with Session(engine) as s, s.begin():
            sync_site(s, config)
            ids = dict(s.execute(select(Tenant.key, Tenant.id)).all())
            s.add_all(Person(name=f"{key} person {j}", tenant_id=tid) for key, tid in ids.items()
                      for j in range(PER_TENANT))
            s.add_all(Person(name=f"staff {j}") for j in range(STAFF))
            people.add_user(s, "bench", "guard", "guard", PASSWORD)
            tenants.add_admin(s, "bench", tenants.scope(s, config, "t00"), "t00-admin", PASSWORD)
        with Session(engine) as s:
            person_ids = list(s.scalars(select(Person.id)))
        load_s = load_events(db, person_ids, [d.key for d in config.doors])

        app = create_app(config, engine, keys, mqtt_link=False, overrides={"TESTING": True, "WTF_CSRF_ENABLED": False})
        try:
            clients = {}
            for user in ("t00-admin", "guard"):
                clients[user] = app.test_client()
                assert clients[user].post("/login", data={"username": user, "password": PASSWORD}).status_code == 302
            results = {}
            for name, user, path in (("tenant_first_page", "t00-admin", "/tenant/events"),
                                     ("tenant_cage_filter", "t00-admin", "/tenant/events?area=cage-7"),
                                     ("staff_first_page", "guard", "/events")):
                results[name] = stats([timed(clients[user], path)[0] for _ in range(REQUESTS)])
            older, page = [], "/tenant/events"
            for _ in range(REQUESTS // 10):
                page = "/tenant/events"
                for _ in range(10):
                    ms, body = timed(clients["t00-admin"], page)
                    older.append(ms)
                    found = re.search(r'href="(/tenant/events\?before=[^"]+)"', body)
                    assert found, "no Older link"
                    page = found.group(1).replace("&amp;", "&")
            results["tenant_older_pages"] = stats(older)
        finally:
            current_services(app).stop()
            engine.dispose()
    print(json.dumps({"bench": "tenant_scope", "database": "sqlite", "tenants": TENANTS, "people_per_tenant": PER_TENANT,
                      "staff": STAFF, "events": EVENTS, "load_s": round(load_s, 1), **results}))


if __name__ == "__main__":
    main()
