"""The monthly review in report.pdf and its CSVs, on SQLite and PostgreSQL.

A month built as the bridge writes it: admin changes made with badge_bridge.people and audited with their
recorded states (``detail["state"]``, as every admin.* entry carries them), access decisions with reader
directions, an alarm raised with its cause and handled at the console, all through the real AuditWriter at
chosen times. The review must come from the log as of the month's end, never from today's tables.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import access_requests as ar
from badge_bridge import people
from badge_bridge.audit import access_tables as at
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import SiteConfig
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.export import format as fmt
from badge_bridge.export.write import export_month
from badge_bridge.keys import KeyStore
from badge_bridge.models import AccessLevel, ConsoleUser, Credential, Person
from badge_bridge.records import alarm_raised
from badge_bridge.site_sync import sync_site
from tests.test_console_routes import cheap_password_hashes  # noqa: F401 (fixture)
from tests.tree_heads import publish_heads

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
PASSWORD = "a-long-password-1"


class Month:
    """Submits events at chosen times, one commit each (log order = submission order)."""

    def __init__(self, engine: Engine, keys: KeyStore) -> None:
        self.engine = engine
        self.writer = AuditWriter(engine, "bridge-1", keys.signer())
        self.writer.start()
        self.pepper = keys.pin_pepper()
        self.n = 0
        self.queued: list[tuple[datetime, Event]] = []

    def commit(self) -> None:
        """Submit the admin entries queued while their change's transaction was open."""
        queued, self.queued = self.queued, []
        for when, event in queued:
            self.at(when, event)

    def at(self, when: datetime, event: Event, effect: Any = None) -> Event:
        self.commit()
        event = dataclasses.replace(event, ts=when, received_ts=when + timedelta(milliseconds=5))
        self.writer.submit(event, effect=effect)
        self.writer.flush()
        return event

    def admin(self, when: datetime, kind: str, actor: str, subject: dict[str, object],
              *rows: tuple[str, at.State]) -> None:
        """Queued (see commit), audited as the people.* functions do: the rows' states after the change."""
        self.queued.append((when, people.admin_event(kind, actor, subject, {}, *rows)))

    def swipe(self, when: datetime, door: str, direction: str, person: int, credential: int,
              reason: str = "granted") -> None:
        self.n += 1
        kind = EventKind.ACCESS_GRANTED if reason == "granted" else EventKind.ACCESS_DENIED
        self.at(when, Event(id=f"ctl:{self.n}", kind=kind, source="ctl-lobby", ts=when, door=door,
                            subject={"person": person, "credential": credential},
                            detail={"reader": f"{door}-{direction}", "direction": direction, "reason": reason}))


def _person(s: Session, name: str, levels: list[str]) -> Person:
    p, _ = people.add_person(s, "cli:test", name, levels=levels)
    return p


@pytest.fixture
def reviewed(engine: Engine, site: SiteConfig, keys: KeyStore) -> dict[str, Any]:
    """September: people, cards and users. October: entries, exits, denials, an alarm handled, level and role
    changes, a leaver whose card is revoked 30 h later. November: a new user and a level grant."""
    m = Month(engine, keys)
    sep = OCT - timedelta(days=20)
    with Session(engine) as s, s.begin():
        sync_site(s, site)
        ada = _person(s, "Ada <b>Lovelace</b>", ["staff", "hall-a-engineers"])
        dave = _person(s, "Dave Leaver", ["staff", "hall-a-engineers"])
        eve = _person(s, "Eve Revoked", ["staff"])
        gina = _person(s, "Gina Expired", ["staff"])
        cards = {}
        for p, number, until in ((ada, "12:1", None), (dave, "12:2", None), (eve, "12:3", None),
                                 (gina, "12:4", OCT + timedelta(days=9))):
            cards[p.id], _ = people.add_credential(s, "cli:test", p.id, "wiegand26", number, pepper=m.pepper,
                                                   valid_until=until)
        guard, _ = people.add_user(s, "cli:test", "guard1", "guard", PASSWORD)
        s.flush()
        guard_id = guard.id
        first = ([at.person(p) for p in (ada, dave, eve, gina)] + [at.credential(c) for c in cards.values()]
                 + [at.level(lvl) for lvl in s.scalars(select(AccessLevel))])  # as admin.site_synced records them
        ids = {"ada": ada.id, "dave": dave.id, "eve": eve.id, "gina": gina.id,
               **{f"card_{k}": cards[v.id].id for k, v in (("ada", ada), ("dave", dave), ("eve", eve), ("gina", gina))}}
    # Frank's card was issued in June and never used since: unused for 90 days.
    with Session(engine) as s, s.begin():
        frank = _person(s, "Frank Unused", ["staff"])
        fcard, _ = people.add_credential(s, "cli:test", frank.id, "wiegand26", "12:5", pepper=m.pepper)
        m.admin(OCT - timedelta(days=120), EventKind.ADMIN_PERSON_ADDED, "cli:hr", {"person": frank.id},
                at.person(frank), at.credential(fcard))
        ids["frank"] = frank.id
    m.admin(sep, EventKind.ADMIN_STATE_BASELINE, "cli:setup", {}, *first)
    with Session(engine) as s, s.begin():
        m.admin(sep, EventKind.ADMIN_USER_ADDED, "cli:setup", {"user": "guard1"},
                at.user(s.get(ConsoleUser, guard_id)))  # type: ignore[arg-type]
        cred = s.get(Credential, ids["card_eve"])
        assert cred is not None
        cred.status, cred.revoked_at = "revoked", sep + timedelta(days=1)
        m.admin(sep + timedelta(days=1), EventKind.ADMIN_CREDENTIAL_REVOKED, "cli:security",
                {"credential": cred.id}, at.credential(cred))

    # October. Tuesday 6th, 10:00 UTC (business hours); Saturday 10th, 02:00 UTC (after hours).
    tue, sat = datetime(2026, 10, 6, 10, tzinfo=UTC), datetime(2026, 10, 10, 2, tzinfo=UTC)
    for day in (tue, sat):
        m.swipe(day, "main-entrance", "in", ids["ada"], ids["card_ada"])
        m.swipe(day + timedelta(minutes=1), "hall-a", "in", ids["ada"], ids["card_ada"])
        m.swipe(day + timedelta(minutes=30), "hall-a", "out", ids["ada"], ids["card_ada"])
        m.swipe(day + timedelta(minutes=31), "main-entrance", "out", ids["ada"], ids["card_ada"])
    m.swipe(tue + timedelta(hours=1), "main-entrance", "in", ids["eve"], ids["card_eve"], "credential_revoked")
    m.swipe(tue + timedelta(hours=2), "hall-a", "in", ids["dave"], ids["card_dave"])
    forced_at = tue + timedelta(hours=3)
    cause = m.at(forced_at, Event(id="ctl:forced-1", kind=EventKind.DOOR_FORCED, source="ctl-hall-a", ts=forced_at,
                                  door="hall-a"))
    alarm, effect = alarm_raised(EventKind.DOOR_FORCED, door="hall-a", source="ctl-hall-a", cause=cause.id,
                                 ts=forced_at)
    m.at(forced_at, alarm, effect)
    m.at(forced_at + timedelta(minutes=4), Event(id="ack-1", kind=EventKind.ALARM_ACKNOWLEDGED, source="guard1",
                                                 ts=forced_at, door="hall-a", subject={"alarm": alarm.id},
                                                 detail={"alarm_kind": "door.forced", "comment": "checked"}))
    m.at(forced_at + timedelta(hours=2), Event(id="res-1", kind=EventKind.ALARM_RESOLVED, source="supervisor1",
                                               ts=forced_at, door="hall-a", subject={"alarm": alarm.id},
                                               detail={"alarm_kind": "door.forced", "comment": "latch fixed"}))
    later = tue + timedelta(days=2)
    held, held_effect = alarm_raised(EventKind.DOOR_HELD_OPEN, door="noc", source="esp-noc", cause="ctl:held-1",
                                     ts=later)
    m.at(later, held, held_effect)
    with Session(engine) as s, s.begin():
        ada_row = s.get(Person, ids["ada"])
        assert ada_row is not None
        people.update_person(s, "cli:test", ada_row.id, name=ada_row.name, company="", levels=["staff", "noc-24x7"],
                             lockdown_exempt=False)
        m.admin(tue + timedelta(days=3), EventKind.ADMIN_PERSON_CHANGED, "console:alice", {"person": ada_row.id},
                at.person(ada_row))
        user = s.get(ConsoleUser, guard_id)
        assert user is not None
        user.role = "supervisor"
        m.admin(tue + timedelta(days=4), EventKind.ADMIN_ROLE_CHANGED, "console:admin", {"user": "guard1"},
                at.user(user))
    left = datetime(2026, 10, 20, 16, tzinfo=UTC)
    with Session(engine) as s, s.begin():
        dave_row = s.get(Person, ids["dave"])
        assert dave_row is not None
        dave_row.status, dave_row.left_at = "left", left
        m.admin(left, EventKind.ADMIN_PERSON_LEFT, "console:hr", {"person": dave_row.id}, at.person(dave_row))
    with Session(engine) as s, s.begin():
        card = s.get(Credential, ids["card_dave"])
        assert card is not None
        card.status, card.revoked_at = "revoked", left + timedelta(hours=30)
        m.admin(left + timedelta(hours=30), EventKind.ADMIN_CREDENTIAL_REVOKED, "console:security",
                {"credential": card.id}, at.credential(card))

    ids["requests"] = _requests(m, engine, site, ids)
    # November: must not reach the October review.
    with Session(engine) as s, s.begin():
        newbie, _ = people.add_user(s, "cli:test", "nov-user", "admin", PASSWORD)
        m.admin(NOV + timedelta(days=19), EventKind.ADMIN_USER_ADDED, "cli:root", {"user": "nov-user"},
                at.user(newbie))
        eve_row = s.get(Person, ids["eve"])
        assert eve_row is not None
        people.update_person(s, "cli:test", eve_row.id, name=eve_row.name, company="",
                             levels=["staff", "hall-a-engineers"], lockdown_exempt=False)
        m.admin(NOV + timedelta(days=19), EventKind.ADMIN_PERSON_CHANGED, "cli:root", {"person": eve_row.id},
                at.person(eve_row))
    m.swipe(NOV + timedelta(days=2), "hall-a", "in", ids["ada"], ids["card_ada"])
    m.commit()
    assert m.writer.stop()
    publish_heads(engine, keys.signer(), None)  # the publisher's signed tree heads, which the export needs
    return ids


def _requests(m: Month, engine: Engine, site: SiteConfig, ids: dict[str, Any]) -> dict[str, int]:
    """October's access requests: Eve's approved and expired, Ada's refused, Frank's approved across the month's
    end; and Ada's of November, which the October review must not show."""
    gus, sam = ar.Who("console:gus", "guard"), ar.Who("console:sam", "supervisor")

    def step(when: datetime, change: Any) -> int:
        with Session(engine) as s, s.begin():
            row, event = change(s, when)
            rid = row.id
        m.at(when, event)
        return rid

    def ask(person: int, level: str, starts: datetime, hours: int, **why: str) -> Any:
        return lambda s, when: ar.open_request(s, gus, site, person, level, starts, starts + timedelta(hours=hours),
                                               now=when, **why)

    oct12, oct15, oct30 = (datetime(2026, 10, d, 8, tzinfo=UTC) for d in (12, 15, 30))
    eve = step(oct12 - timedelta(hours=3), ask(ids["eve"], "noc-24x7", oct12, 48, ticket="CHG-100"))
    step(oct12 - timedelta(hours=2), lambda s, when: ar.approve(s, sam, eve, now=when))
    step(oct12 + timedelta(hours=48), lambda s, when: ar.expire(s, "bridge-1", eve, now=when))
    ada = step(oct15, ask(ids["ada"], "hall-a-engineers", oct15 + timedelta(hours=1), 4, reason="cabling"))
    step(oct15 + timedelta(minutes=5), lambda s, when: ar.refuse(s, sam, ada, now=when, comment="no change ticket"))
    frank = step(oct30, ask(ids["frank"], "hall-a-engineers", oct30 + timedelta(hours=1), 96, reason="rack move"))
    step(oct30 + timedelta(minutes=10), lambda s, when: ar.approve(s, sam, frank, now=when))
    late = step(NOV + timedelta(days=3), ask(ids["ada"], "noc-24x7", NOV + timedelta(days=3, hours=1), 2,
                                             ticket="CHG-200"))
    return {"eve": eve, "ada": ada, "frank": frank, "late": late}


def _csv(out: Path, name: str) -> list[dict[str, str]]:
    with (out / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_october_review_from_the_log(engine: Engine, reviewed: dict[str, Any], keys: KeyStore, tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert export_month(engine, keys, "2026-10", out, actor="cli:test").verified
    ada, dave, eve = (f"{n} (#{reviewed[k]})" for n, k in (("Ada <b>Lovelace</b>", "ada"), ("Dave Leaver", "dave"),
                                                               ("Eve Revoked", "eve")))

    # Exits are not entries: Ada went in and out twice at each door.
    doors = {r["door"]: r for r in _csv(out, fmt.REVIEW_DOORS)}
    assert (doors["main-entrance"]["entries (in)"], doors["main-entrance"]["exits (out)"]) == ("2", "2")
    assert (doors["hall-a"]["entries (in)"], doors["hall-a"]["exits (out)"]) == ("3", "2")
    assert doors["hall-a"]["alarms"] == "1" and doors["hall-a"]["restricted"] == "yes"
    assert doors["main-entrance"]["restricted"] == "" and doors["main-entrance"]["denied"] == "1"

    # Entries into restricted areas, person by person (hall-a is restricted, the lobby not).
    entries = _csv(out, fmt.REVIEW_RESTRICTED)
    assert [(r["time"], r["person"], r["door"]) for r in entries] == [
        ("2026-10-06 12:01:00", ada, "hall-a"), ("2026-10-06 14:00:00", dave, "hall-a"),
        ("2026-10-10 04:01:00", ada, "hall-a")]
    by_person = _csv(out, fmt.REVIEW_RESTRICTED_BY_PERSON)
    assert [(r["person"], r["door"], r["entries"]) for r in by_person] == [(ada, "hall-a", "2"), (dave, "hall-a", "1")]

    # After hours: Saturday's two entries, not its two exits.
    after = _csv(out, fmt.REVIEW_AFTER_HOURS)
    assert sorted((r["door"], r["entries"]) for r in after) == [("hall-a", "1"), ("main-entrance", "1")]

    # The revoked card's use, attributed to Eve and flagged.
    denied = _csv(out, fmt.REVIEW_DENIALS_BY_PERSON)
    assert [(r["person"], r["credential"], r["reason"], r["attention"], r["count"]) for r in denied] == [
        (eve, str(reviewed["card_eve"]), "credential_revoked", "REVOKED card used", "1")]

    # Each alarm once, with who handled it and how fast.
    alarms = _csv(out, fmt.REVIEW_ALARMS)
    assert [(r["alarm"], r["acknowledged by"], r["raise to ack."], r["resolved by"], r["raise to resolve"],
             r["attention"]) for r in alarms] == [
        ("door.forced", "guard1", "0:04:00", "supervisor1", "2:00:00", ""),
        ("door.held_open", "", "", "", "", "not acknowledged")]

    # The access review as of October's end: November's user and grant are not there.
    users = {r["user"]: r for r in _csv(out, fmt.REVIEW_USERS)}
    assert set(users) == {"guard1"} and users["guard1"]["role"] == "supervisor"
    changes = _csv(out, fmt.REVIEW_USER_CHANGES)
    assert [(r["user"], r["change"], r["by"]) for r in changes] == [("guard1", "role guard -> supervisor",
                                                                      "console:admin")]
    holders = {r["person"]: r for r in _csv(out, fmt.REVIEW_HOLDERS)}
    assert holders[eve]["levels"] == "staff" and dave not in holders
    assert holders[ada]["levels"] == "noc-24x7, staff"
    assert holders[ada]["areas their levels open"] == "lobby, noc (restricted)"
    levels = _csv(out, fmt.REVIEW_LEVEL_CHANGES)
    assert sorted((r["person"], r["level"], r["change"], r["by"]) for r in levels) == [
        (ada, "hall-a-engineers", "removed", "console:alice"), (ada, "noc-24x7", "granted", "console:alice")]

    # Dave left; his card was revoked 30 h later: flagged.
    leavers = _csv(out, fmt.REVIEW_LEAVERS)
    assert [(r["person"], r["credential"], r["left to revoked"], r["attention"], r["recorded by"])
            for r in leavers] == [(dave, str(reviewed["card_dave"]), "1 day, 6:00:00",
                                   "revoked after more than 24 h", "console:hr")]
    unused = _csv(out, fmt.REVIEW_UNUSED)
    assert [r["person"] for r in unused] == [f"Frank Unused (#{reviewed['frank']})"]
    expired = _csv(out, fmt.REVIEW_EXPIRED)
    assert [(r["person"], r["status"]) for r in expired] == [(f"Gina Expired (#{reviewed['gina']})", "active")]


def test_november_review_sees_the_new_user(engine: Engine, reviewed: dict[str, Any], keys: KeyStore,
                                           tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_month(engine, keys, "2026-11", out, actor="cli:test")
    assert {r["user"] for r in _csv(out, fmt.REVIEW_USERS)} == {"guard1", "nov-user"}
    assert [(r["user"], r["change"], r["by"]) for r in _csv(out, fmt.REVIEW_USER_CHANGES)] == [
        ("nov-user", "added with role admin", "cli:root")]


def _squash(value: str) -> str:
    return re.sub(r"\s+", "", value)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pdf_tables_hold_the_csv_rows(engine: Engine, reviewed: dict[str, Any], keys: KeyStore, tmp_path: Path,
                                      artifacts: Path) -> None:
    """Every CSV row appears in the PDF, in order, cell by cell (pdftotext; whitespace ignored, since cells
    wrap); the PNGs are left for a person to look at."""
    out = tmp_path / "export"
    export_month(engine, keys, "2026-10", out, actor="cli:test")
    pdf = subprocess.run(["pdftotext", "-raw", str(out / fmt.PDF_NAME), "-"], capture_output=True, text=True,
                         check=True).stdout
    flat = _squash(pdf)
    position = 0
    for name in fmt.REVIEW_FILES:
        with (out / name).open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        shown = rows if len(rows) > 1 else []  # an empty table is printed as "None.", without its header
        for cell in [c for row in shown for c in row if c]:
            found = flat.find(_squash(cell), position)
            assert found >= 0, (name, cell, flat[position:position + 300])
            position = found + len(_squash(cell))
        assert f"{name}: {len(rows) - 1} row" in pdf, name
    assert "Ada <b>Lovelace</b>" in pdf  # a name is text, never markup
    subprocess.run(["pdftoppm", "-png", "-r", "70", str(out / fmt.PDF_NAME), str(artifacts / "report")], check=True)
    assert sorted(artifacts.glob("report-*.png"))


def test_the_months_access_requests_and_time_boxed_access(engine: Engine, reviewed: dict[str, Any], keys: KeyStore,
                                                          tmp_path: Path) -> None:
    """October's requests from the log, each as it stood at the month's end; time-boxed access listed as such,
    not as a standing level."""
    out = tmp_path / "export"
    assert export_month(engine, keys, "2026-10", out, actor="cli:test").verified
    ids = reviewed["requests"]
    eve, ada, frank = ids["eve"], ids["ada"], ids["frank"]
    asked = {int(r["request"]): r for r in _csv(out, fmt.REVIEW_REQUESTS)}
    assert sorted(asked) == [eve, ada, frank] and ids["late"] not in asked
    assert (asked[eve]["outcome"], asked[eve]["ticket / reason"], asked[eve]["requested by"],
            asked[eve]["decided by"]) == ("expired", "CHG-100", "console:gus", "sam")
    assert asked[eve]["ended"].startswith("expired 2026-10-14") and asked[eve]["ended"].endswith("by bridge-1")
    assert asked[eve]["areas"] == "noc (restricted)"
    assert (asked[ada]["outcome"], asked[ada]["ticket / reason"], asked[ada]["ended"]) == ("refused", "cabling", "")
    assert asked[frank]["outcome"] == "approved" and asked[frank]["window"].startswith("2026-10-30")

    holders = {r["person"].split(" (#")[0]: r for r in _csv(out, fmt.REVIEW_HOLDERS)}
    assert holders["Frank Unused"]["levels"] == "staff"  # the request's level is not a standing one
    boxed = holders["Frank Unused"]["time-boxed (approved requests)"]
    assert boxed.startswith("hall-a-engineers until 2026-11-03 ") and f"request {frank}" in boxed, boxed
    assert holders["Eve Revoked"]["time-boxed (approved requests)"] == ""  # expired before the month's end
