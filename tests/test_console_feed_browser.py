"""The feed for people in a real Chromium (issue 18, item 2): the `console` site (bridge, lobby controller,
the test's own Mosquitto) at 1920x1080. A grant arrives live with the person's name, the door's name and
Berlin time; the row opens its event; a rename shows in the next row without a reload; hostile person names
and hostile batches published on bridge/events stay text; motion stays out of the feed until asked for.
Screenshots go to test-artifacts/test_console_feed_browser/."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audited import commit_change
from badge_bridge.controllers import contract as c
from badge_bridge.models import Credential, Person
from badge_bridge.sim.broker import Broker
from badge_bridge.topics import Topics
from tests.console_site import PASSWORD, Console, Watched
from tests.mqtt_clients import Client

WALL = {"width": 1920, "height": 1080}
HOSTILE = '<img src=x onerror="window.__xss=1">'
LOCAL = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T")
GRANTED = "#feed tbody tr.new[data-kind='access.granted']"


def bridge_batch(broker: Broker, console: Console, *events: dict[str, object]) -> None:
    """Publish a batch on bridge/events as the bridge's account would (the only account the broker lets)."""
    now = datetime.now(UTC).isoformat()
    body = {"v": 1, "chain": "bridge-1", "events": [
        {"v": 1, "id": f"hostile-{i}-{now}", "ts": now, "source": "ctl-lobby", "door": None, "subject": {},
         "detail": {}, **e} for i, e in enumerate(events)]}
    client = Client(broker, "bridge-1")
    try:
        client.publish(Topics(console.config.mqtt.topic_prefix).bridge_events(), json.dumps(body))
    finally:
        client.client.disconnect()
        client.client.loop_stop()


def badge(console: Console, number: str) -> None:
    console.lobby.present("main-in", None, "wiegand26", number)
    console.lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant | c.Deny))


def test_the_feed_names_people_in_a_real_browser(console: Console, broker: Broker, browser, artifacts: Path) -> None:
    sup = Watched(browser, console.url)
    sup.page.set_viewport_size(WALL)
    sup.login("sam")
    page = sup.page
    assert page.inner_text("#feed thead th:first-child") == "time (Europe/Berlin)"
    sup.mark()

    badge(console, "12:1001")
    row = page.locator(GRANTED).first
    row.wait_for()
    assert row.locator("td.person").inner_text().splitlines()[0] == "Ada"
    assert "card wiegand26" in row.locator("td.person").inner_text()
    assert row.locator("td.where").inner_text().splitlines() == ["Main entrance", "Outside / car park → Lobby"]
    assert LOCAL.fullmatch(row.locator("td.time").inner_text())
    assert "{" not in row.inner_text()
    page.wait_for_selector("#feed tbody tr.new[data-kind='door.closed']")
    sup.shot(artifacts / "01-live-feed-names.png")

    # the live row and a row the server rendered look the same: reload, the same row comes from the page
    live_cells = [row.locator(f"td.{k}").inner_text() for k in ("time", "label", "where", "person", "text")]
    page.reload()
    page.wait_for_selector("#live-state:has-text('live')")
    served = page.locator("#feed tbody tr[data-kind='access.granted']").first
    assert [served.locator(f"td.{k}").inner_text() for k in ("time", "label", "where", "person", "text")] == live_cells
    sup.mark()

    # a click on the row (not on a link) opens its event
    badge(console, "12:1001")
    row = page.locator(GRANTED).first
    row.wait_for()
    row.locator("td.text").click()
    page.wait_for_url(re.compile(r".*/events/\d+$"))
    assert page.inner_text("h1") == "Access granted"
    assert page.is_hidden("details.raw pre")
    assert LOCAL.match(page.inner_text("dl.detail dd:first-of-type"))
    sup.shot(artifacts / "02-event-detail.png")
    page.click("details.raw summary")
    assert '"person": 1' in page.inner_text("details.raw")
    page.go_back()
    page.wait_for_selector("#live-state:has-text('live')")
    sup.mark()

    # renamed while the feed is open: the next row says so, no reload
    with Session(console.engine) as s:
        ada = s.scalars(select(Person).where(Person.name == "Ada")).one().id
    commit_change(console.seeder, "test", lambda s: people.update_person(
        s, "test", ada, name="Ada King", company="", levels=["staff"], lockdown_exempt=False))
    badge(console, "12:1001")
    page.wait_for_selector(f"{GRANTED} td.person a:text-is('Ada King')")
    assert sup.still_same_document()

    # a hostile name from the database, and a hostile batch on bridge/events: text, nothing runs
    commit_change(console.seeder, "test", lambda s: people.update_person(
        s, "test", ada, name=HOSTILE, company=HOSTILE, levels=["staff"], lockdown_exempt=False))
    badge(console, "12:1001")
    page.wait_for_selector(f"{GRANTED} td.person a:text-is('{HOSTILE}')")
    bridge_batch(broker, console, {"kind": "door.forced", "door": HOSTILE, "subject": {"user": HOSTILE, "card": HOSTILE},
                                   "detail": {"reason": HOSTILE, HOSTILE: HOSTILE}},
                 {"kind": "access.denied", "door": "main-entrance", "subject": {"person": HOSTILE},
                  "detail": {"reason": HOSTILE, "factors": [HOSTILE]}})
    page.wait_for_selector("#feed tbody tr.new[data-kind='access.denied'] td.person:has-text('unknown person #')")
    forced = page.locator("#feed tbody tr.new[data-kind='door.forced']").first
    assert forced.locator("td.where").inner_text() == HOSTILE
    assert HOSTILE in forced.locator("td.text").inner_text()
    assert page.locator("#feed img").count() == 0
    assert page.evaluate("window.__xss") is None
    sup.shot(artifacts / "03-hostile-names-stay-text.png")

    # motion is not a door event: out of the feed until asked for
    motion = {"kind": "motion.start", "door": "main-entrance", "source": "cam-lobby", "detail": {"people": 1}}
    bridge_batch(broker, console, motion)
    bridge_batch(broker, console, {"kind": "door.opened", "door": "main-entrance"})
    page.wait_for_selector("#feed tbody tr.new[data-kind='door.opened']")
    assert page.locator("#feed tbody tr[data-kind='motion.start']").count() == 0
    page.check("#show-all")
    page.wait_for_url(re.compile(r".*all=1.*"))
    page.wait_for_selector("#live-state:has-text('live')")
    bridge_batch(broker, console, motion)  # (published only, not in the log: the page did not have it)
    page.wait_for_selector("#feed tbody tr.new[data-kind='motion.start'][data-machine='1']")
    sup.shot(artifacts / "04-feed-with-motion.png")
    assert sup.errors == []


def test_the_people_page_in_a_real_browser(console: Console, browser, artifacts: Path) -> None:
    """Every kind of card a guard must not trust, and the reason, at 1920x1080."""
    now = datetime.now(UTC)
    kj, _ = commit_change(console.seeder, "test", lambda s: people.add_person(
        s, "test", "Katherine Johnson", employee_no="E-42", company="NASA", levels=["staff"]))
    issued = {}
    for number, valid in (("12:2001", (None, None)), ("12:2002", (now - timedelta(days=30), now - timedelta(days=1))),
                          ("12:2003", (now + timedelta(days=2), None)), ("12:2004", (None, None)),
                          ("12:2005", (None, None)), ("12:2006", (None, None))):
        issued[number], _ = commit_change(console.seeder, "test", lambda s, n=number, v=valid: people.add_credential(
            s, "test", kj.id, "wiegand26", n, pepper=b"p" * 32, valid_from=v[0], valid_until=v[1]))
    for number, status, reason in (("12:2004", "suspended", "Investigation pending"),
                                   ("12:2005", "lost", "Reported lost on the train"),
                                   ("12:2006", "revoked", "Replaced by 12:2001")):
        commit_change(console.seeder, "test", lambda s, n=number, st=status, r=reason: people.set_credential_status(
            s, "test", issued[n].id, st, r))
    guard = Watched(browser, console.url)
    guard.page.set_viewport_size(WALL)
    guard.login("gus")
    guard.page.goto("/people")
    row = guard.page.locator("tr", has_text="Katherine Johnson")
    assert "E-42" in row.inner_text()
    for text in ("✓ active", "✗ EXPIRED", "… NOT YET VALID", "✗ SUSPENDED", "✗ LOST", "✗ REVOKED"):
        assert text in row.inner_text()
    guard.shot(artifacts / "05-people.png")
    guard.page.click("a:text-is('Katherine Johnson')")
    guard.page.wait_for_selector("h1:has-text('employee no. E-42')")
    for reason in ("Investigation pending (by test)", "Reported lost on the train (by test)",
                   "Replaced by 12:2001 (by test)"):
        assert guard.page.locator(f"small.reason:text-is('{reason}')").count() == 1
    with Session(console.engine) as s:
        assert s.get(Credential, issued["12:2001"].id).status == "active"
    guard.shot(artifacts / "06-person.png")
    assert guard.errors == []


def test_the_auditor_from_the_front_door(console: Console, browser, artifacts: Path) -> None:
    """Asked for `/`, logged in as the auditor: the event log (in Berlin time), and the Audit page warns that
    the current month is not complete."""
    commit_change(console.seeder, "test", lambda s: people.add_user(s, "test", "ann", "auditor", PASSWORD))
    auditor = Watched(browser, console.url)
    auditor.page.set_viewport_size(WALL)
    auditor.page.goto("/")
    auditor.page.wait_for_url("**/login?next=*")
    auditor.page.fill("input[name=username]", "ann")
    auditor.page.fill("input[name=password]", PASSWORD)
    auditor.page.click("button:has-text('Log in')")
    auditor.page.wait_for_url("**/events")
    assert auditor.page.inner_text("h1") == "Event log"
    assert auditor.page.inner_text("table.events thead th:first-child") == "time (Europe/Berlin)"
    assert LOCAL.fullmatch(auditor.page.inner_text("table.events tbody tr:first-child td.time"))
    auditor.shot(artifacts / "07-auditor-lands-on-the-event-log.png")
    auditor.page.click("nav a[href='/audit']")
    warning = auditor.page.wait_for_selector(".export-warning")
    assert "The current month is not complete." in warning.inner_text()
    auditor.shot(artifacts / "08-audit-unfinished-month.png")
    assert auditor.errors == []
