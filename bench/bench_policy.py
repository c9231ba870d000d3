"""`decide()` decisions per second on a site of 1,000 doors and 50,000 credentials, and the time to compile
that site's database into the snapshot the bridge decides from.

Prints one JSON object. The request mix is what a busy site sees: mostly valid cards, some unknown, some
outside their schedule, PIN doors, anti-passback areas and two-person doors.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert
from sqlalchemy.orm import Session

from badge_bridge import models as m
from badge_bridge.db import make_engine, migrate
from badge_bridge.policy import AccessState, Factor, Request, decide
from badge_bridge.snapshot import load_snapshot

DOORS, CREDENTIALS, LEVELS, DECISIONS = 1_000, 50_000, 200, 300_000
GOAL = 100_000
T0 = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)


def build_site(url: str) -> None:
    """Areas, schedules, 1,000 doors, 200 levels of 20 doors, 50,000 people with a card and 1-3 levels."""
    rng = random.Random(7)
    engine = make_engine(url, must_exist=False)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(insert(m.Area), [{"id": i + 1, "key": f"area-{i}", "anti_passback": ("none", "soft", "hard")[i % 3]}
                                      for i in range(100)])
        conn.execute(insert(m.Schedule), [{"id": 1, "key": "always", "timezone": "Europe/Berlin"},
                                          {"id": 2, "key": "business", "timezone": "Europe/Berlin"}])
        conn.execute(insert(m.ScheduleInterval), [{"schedule_id": 1, "weekday": d, "start_minute": 0, "end_minute": 1440}
                                                  for d in range(7)]
                     + [{"schedule_id": 2, "weekday": d, "start_minute": 420, "end_minute": 1140} for d in range(5)])
        conn.execute(insert(m.Door), [{"id": i + 1, "key": f"door-{i}", "area_out_id": i % 100 + 1,
                                       "area_in_id": (i + 1) % 100 + 1, "factors": "card,pin" if i % 10 == 0 else "card",
                                       "two_person": i % 50 == 0} for i in range(DOORS)])
        conn.execute(insert(m.AccessLevel), [{"id": i + 1, "key": f"level-{i}"} for i in range(LEVELS)])
        conn.execute(insert(m.AccessLevelDoor), _level_doors(rng))
        conn.execute(insert(m.Person), [{"id": i + 1, "name": f"person {i}"} for i in range(CREDENTIALS)])
        conn.execute(insert(m.PersonLevel), [{"person_id": p + 1, "level_id": lvl + 1}
                                             for p in range(CREDENTIALS)
                                             for lvl in rng.sample(range(LEVELS), rng.randint(1, 3))])
        conn.execute(insert(m.Credential), [{"id": i + 1, "person_id": i + 1, "format": "wiegand26",
                                             "number": f"{i // 65536}:{i % 65536}",
                                             "status": "revoked" if i % 97 == 0 else "active"}
                                            for i in range(CREDENTIALS)])
    engine.dispose()


def _level_doors(rng: random.Random) -> list[dict[str, int]]:
    rows = {}
    for lvl in range(LEVELS):
        for door in rng.sample(range(DOORS), 20):
            rows[(lvl, door)] = {"level_id": lvl + 1, "door_id": door + 1, "schedule_id": 2 if door % 4 == 0 else 1}
    return list(rows.values())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'site.db'}"
        build_site(url)
        engine = make_engine(url)
        started = time.perf_counter()
        with Session(engine) as session:
            snap = load_snapshot(session)
        load_s = time.perf_counter() - started
        engine.dispose()

    rng = random.Random(11)
    doors = list(snap.doors.values())
    numbers = [f"{i // 65536}:{i % 65536}" for i in range(CREDENTIALS)] + ["255:65535"] * (CREDENTIALS // 50)
    factor_sets = (frozenset({Factor.CARD}), frozenset({Factor.CARD, Factor.PIN}))
    requests = []
    for number in (rng.choice(numbers) for _ in range(DECISIONS)):
        record = snap.credential("wiegand26", number)
        own = list(record.view.doors) if record else []
        door = snap.doors[rng.choice(own)] if own and rng.random() < 0.8 else rng.choice(doors)
        requests.append((number, Request(door=door, now=T0 + timedelta(minutes=rng.randrange(7 * 1440)),
                                         direction=rng.choice(("in", "out")), factors=rng.choice(factor_sets))))
    state = AccessState(location={rng.randrange(CREDENTIALS): f"area-{rng.randrange(100)}" for _ in range(20_000)})
    lookup = snap.credential
    granted = 0
    started = time.perf_counter()
    for number, request in requests:
        record = lookup("wiegand26", number)
        decision = decide(record.view if record else None, request, state)
        granted += decision.granted
    elapsed = time.perf_counter() - started
    per_s = DECISIONS / elapsed
    print(json.dumps({
        "bench": "policy", "doors": len(snap.doors), "credentials": len(snap.credentials), "decisions": DECISIONS,
        "granted_share": round(granted / DECISIONS, 3), "decisions_per_s": round(per_s),
        "us_per_decision": round(elapsed / DECISIONS * 1e6, 2), "snapshot_load_s": round(load_s, 2),
        "goal_decisions_per_s": GOAL, "meets_goal": per_s >= GOAL,
    }))


if __name__ == "__main__":
    main()
