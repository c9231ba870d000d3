"""Muster, "who is inside now": from the anti-passback positions the bridge writes, with the door and time
of the grant that put each person there. Entries and exits through the real bridge and a simulated
controller; rows the bridge cannot read, people who left the company or are gone from the database, areas
no longer in the site file and grants whose audit entry is gone are listed, never dropped.
(The live page in Chromium: test_console_plan_browser.py.)"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from http.cookiejar import CookieJar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audited import commit_change
from badge_bridge.config import SiteConfig
from badge_bridge.models import AuditEntry, Person, SiteState
from tests import test_console_routes as routes
from tests.console_site import Console
from tests.test_console_routes import Seed, page
from tests.waiting import wait_until
from web.muster import Muster, muster

app, cheap_password_hashes, client_as, make_app, seed = (  # the route tests' fixtures, shared
    routes.app, routes.cheap_password_hashes, routes.client_as, routes.make_app, routes.seed)
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
AT = datetime(2026, 12, 7, 8, 15, 30, tzinfo=UTC)


def position(s: Session, person: int | str, value: str, event_id: str, at: datetime = AT) -> None:
    s.add(SiteState(key=f"position/{person}", value=value, event_id=event_id, partition="bridge-1", updated_at=at))


def grant(s: Session, event_id: str, door: str, at: datetime, person: int) -> None:
    """An audit entry as the bridge writes it (this test reads it, nothing verifies the chain)."""
    seq = (s.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) or 0) + 1
    s.add(AuditEntry(chain_id="muster-test", seq=seq, event_id=event_id, ts_us=int(at.timestamp() * 1_000_000),
                     received_us=0, source="ctl-lobby", door=door, kind="access.granted",
                     subject=json.dumps({"person": person}), detail="{}", prev_hash="0" * 64, hash=f"{seq:064x}",
                     person_id=person))


def by_area(m: Muster) -> dict[str, list[tuple[str, str, str, str]]]:
    return {a.key: [(i.name, i.door, i.at, i.left_company) for i in a.people] for a in m.areas}


def test_who_is_where_with_the_door_and_time_that_put_them_there(engine: Engine, site: SiteConfig, seed: Seed) -> None:
    with Session(engine) as s, s.begin():
        ada = s.get(Person, seed.person)
        grace = s.scalar(select(Person).where(Person.name == "Grace Hopper"))
        alan = s.scalar(select(Person).where(Person.name == "Alan Turing"))
        assert ada and grace and alan
        grant(s, "g-ada", "hall-a", AT, ada.id)
        position(s, ada.id, '"hall-a"', "g-ada")
        grant(s, "g-grace", "main-entrance", AT.replace(hour=9), grace.id)
        position(s, grace.id, '"outside"', "g-grace")
        position(s, alan.id, '"lobby"', "pruned-long-ago", at=AT.replace(minute=1))  # its audit entry is gone
        position(s, 4040, '"noc"', "g-ghost")  # a person id the database does not have
        position(s, 77, '"basement"', "g-x")  # an area the site file no longer has
    with Session(engine) as s:
        m = muster(s, site, NOW)
    found = by_area(m)
    assert found["hall-a"] == [("Ada Lovelace", "Data hall A", "Mon 07 Dec 09:15:30 CET", "")]
    assert found["lobby"] == [("Alan Turing", "unknown door", "Mon 07 Dec 09:01:30 CET", "")]
    assert found["outside"] == [("Grace Hopper", "Main entrance", "Mon 07 Dec 10:15:30 CET", "")]
    assert found["noc"] == [("person 4040 (not in the database)", "unknown door", "Mon 07 Dec 09:15:30 CET", "")]
    assert found["basement"][0][0] == "person 77 (not in the database)"
    assert found["cage-7"] == []
    areas = {a.key: a for a in m.areas}
    assert areas["outside"].outside and not areas["lobby"].outside  # no door leads into the car park
    assert [a.key for a in m.areas][-1] == "outside"  # listed last
    assert m.inside == 4  # Ada, Alan, the unknown person and the one in the basement; Grace badged out
    assert m.as_of == "Mon 07 Dec 11:00:00 CET"
    assert m.unreadable == []


def test_rows_the_bridge_cannot_read_are_listed_for_a_search(engine: Engine, site: SiteConfig, seed: Seed) -> None:
    with Session(engine) as s, s.begin():
        for person, value in [("abc", '"lobby"'), ("12x", '"lobby"'), ("１２", '"lobby"'), ("1" * 19, '"lobby"'),
                              (5, "{broken"), (6, "42"), (7, '""'), (8, "null")]:
            position(s, person, value, "e")
    with Session(engine) as s:
        m = muster(s, site, NOW)
    assert m.unreadable == sorted(["position/abc", "position/12x", "position/１２", "position/" + "1" * 19,
                                   "position/5", "position/6", "position/7", "position/8"])
    assert m.inside == 0


def test_people_who_left_the_company_are_marked_and_counted_apart(engine: Engine, site: SiteConfig, seed: Seed,
                                                                  client_as) -> None:
    with Session(engine) as s, s.begin():
        grant(s, "g-ada", "hall-a", AT, seed.person)
        position(s, seed.person, '"hall-a"', "g-ada")
        people.person_left(s, "test", seed.person, "Contract ended")
    with Session(engine) as s:
        m = muster(s, site, NOW)
    hall = next(a for a in m.areas if a.key == "hall-a")
    today = datetime.now(site.site_tz()).strftime("%Y-%m-%d")
    assert [(i.name, i.left_company) for i in hall.people] == [("Ada Lovelace", today)]
    assert (hall.count, hall.left, m.inside) == (0, 1, 0)
    text = page(client_as("guard"), "/muster")
    assert f"LEFT THE COMPANY {today}" in text
    assert "and 1 who left the company since" in text


def test_the_page_and_its_list_for_guards(client_as, engine: Engine, seed: Seed) -> None:
    with Session(engine) as s, s.begin():
        grant(s, "g-ada", "hall-a", AT, seed.person)
        position(s, seed.person, '"hall-a"', "g-ada")
        position(s, "<script>", '"lobby"', "e")
        position(s, 99, '"<img src=x onerror=alert(1)>"', "e")
    guard = client_as("guard")
    for path in ("/muster", "/muster/list"):
        text = page(guard, path)
        assert "Ada Lovelace" in text and "Mon 07 Dec 09:15:30 CET" in text and "Data hall A" in text
        assert "<script>" not in text and "<img src=x" not in text
        assert "position/&lt;script&gt;" in text
        assert "&lt;img src=x onerror=alert(1)&gt; (not in the site file)" in text
    assert "Print for evacuation" in page(guard, "/muster")
    assert "Print for evacuation" not in page(guard, "/muster/list")  # the list alone, for muster.js


# --- through the bridge ------------------------------------------------------------------------------------


def muster_now(console: Console) -> Muster:
    with Session(console.engine) as s:
        return muster(s, console.config, datetime.now(UTC))


def granted(console: Console, reader: str) -> AuditEntry:
    """Ada's card at ``reader``; the audit entry of the grant once its position is committed."""
    with Session(console.engine) as s:
        before = s.scalar(select(SiteState.event_id).where(SiteState.key == "position/1"))
    console.lobby.present(reader, None, "wiegand26", "12:1001")

    def moved() -> AuditEntry | None:
        with Session(console.engine) as s:
            event_id = s.scalar(select(SiteState.event_id).where(SiteState.key == "position/1"))
            return s.scalar(select(AuditEntry).where(AuditEntry.event_id == event_id)) if event_id != before else None

    return wait_until(moved, what=f"Ada's position after {reader}")


def test_entries_and_exits_through_the_bridge(console: Console) -> None:
    entry = granted(console, "main-in")
    assert entry.kind == "access.granted" and entry.door == "main-entrance"
    m = muster_now(console)
    when = datetime.fromtimestamp(entry.ts_us / 1e6, UTC).astimezone(console.config.site_tz())
    assert by_area(m)["lobby"] == [("Ada", "Main entrance", when.strftime("%a %d %b %H:%M:%S %Z"), "")]
    assert m.inside == 1

    exit_ = granted(console, "main-out")
    m = muster_now(console)
    when = datetime.fromtimestamp(exit_.ts_us / 1e6, UTC).astimezone(console.config.site_tz())
    assert by_area(m)["lobby"] == []
    assert by_area(m)["outside"] == [("Ada", "Main entrance", when.strftime("%a %d %b %H:%M:%S %Z"), "")]
    assert m.inside == 0

    # the page over HTTP, as a guard
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(console.url + "/login") as r:
        token = r.read().decode().split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    data = urllib.parse.urlencode({"csrf_token": token, "username": "gus", "password": "correct horse battery staple"})
    opener.open(console.url + "/login", data.encode()).close()
    with opener.open(console.url + "/muster/list") as r:
        text = r.read().decode()
    assert "0</strong> people inside" in text and "Ada" in text


def test_a_person_marked_left_stays_listed_where_the_bridge_last_saw_them(console: Console) -> None:
    granted(console, "main-in")
    commit_change(console.seeder, "test", lambda s: people.person_left(s, "test", 1, "Contract ended"))
    m = muster_now(console)
    [(name, door, _, left)] = by_area(m)["lobby"]
    assert (name, door) == ("Ada", "Main entrance") and left
    assert m.inside == 0
