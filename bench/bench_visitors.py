"""Visitors with escorts: ``decide()`` + ``record()`` per second on a stream where visitors, escorts and staff
badge at 100 doors (the escort rule on the hot path), and the desk's throughput: visits registered and
checked in (each an audited change committed with its entry) per second on SQLite.

Prints one JSON object; runs in well under a minute.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from badge_bridge import visitors
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore
from badge_bridge.policy import AccessState, Credential, Door, Request, Schedule, decide
from badge_bridge.site_sync import sync_site

ROOT = Path(__file__).resolve().parents[1]
DOORS, PEOPLE, DECISIONS, VISITS = 100, 3_000, 300_000, 300
ALWAYS = Schedule("always", ZoneInfo("UTC"), tuple((d, 0, 1440) for d in range(7)))


def decisions_per_second() -> dict[str, float]:
    rng = random.Random(19)
    doors = [Door(f"d{i}", area_in=f"a{i}", area_out="lobby", escort_window_s=30) for i in range(DOORS)]
    opened = {d.key: (ALWAYS,) for d in doors}
    tenants = (None, "a", "b")
    people = [Credential(id=i, person_id=i, doors=opened, visitor=i % 3 == 0, may_escort=i % 3 == 1,
                         tenant=tenants[i % 7 % 3]) for i in range(PEOPLE)]
    state, now = AccessState(), datetime(2026, 12, 7, 9, tzinfo=UTC)
    stream = [(rng.choice(people), rng.choice(doors), rng.random() * 2) for _ in range(DECISIONS)]
    escorted = 0
    began = time.perf_counter()
    for cred, door, gap in stream:
        now += timedelta(seconds=gap)
        request = Request(door=door, now=now)
        decision = decide(cred, request, state)
        state.record(cred, request, decision)
        escorted += decision.companion is not None
    took = time.perf_counter() - began
    return {"decisions_per_s": round(DECISIONS / took), "escorted_share": round(escorted / DECISIONS, 3)}


def desk_per_second(folder: Path) -> dict[str, float]:
    config = load_config(ROOT / "site.example.toml")
    engine = make_engine(f"sqlite:///{folder / 'bench.db'}", must_exist=False)
    migrate(engine)
    keys = KeyStore(folder / "keys")
    keys.ensure()
    writer = AuditWriter(engine, "bench.desk", keys.signer())
    writer.start()
    commit_change(writer, "cli:bench", lambda s: (None, sync_site(s, config)))
    start = datetime.now(UTC)
    began = time.perf_counter()
    ids = []
    for i in range(VISITS):
        visit, _ = commit_change(writer, "console:bench", lambda s, i=i: visitors.register(
            s, "console:bench", site=config, name=f"Visitor {i}", company="Bench", levels=["staff"],
            starts_at=start, ends_at=start + timedelta(hours=2)))
        ids.append(visit.id)
    registered = time.perf_counter() - began
    began = time.perf_counter()
    pepper = keys.pin_pepper()
    for i, vid in enumerate(ids):
        commit_change(writer, "console:desk", lambda s, i=i, vid=vid: visitors.check_in(
            s, "console:desk", vid, id_document="passport, last 4: 1234", fmt="wiegand26", number=f"99:{i}",
            pepper=pepper, now=datetime.now(UTC)))
    checked_in = time.perf_counter() - began
    writer.stop()
    engine.dispose()
    return {"registered_per_s": round(VISITS / registered, 1), "checked_in_per_s": round(VISITS / checked_in, 1)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = {"bench": "visitors", **decisions_per_second(), **desk_per_second(Path(tmp)),
                  "doors": DOORS, "people": PEOPLE, "decisions": DECISIONS, "visits": VISITS}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
