"""The console end to end in a real headless Chromium: a seeded SQLite site, the bridge in process, a
simulated lobby controller on the test's own Mosquitto, and the console served over real HTTP.

A supervisor logs in, watches a grant arrive in the live feed without a reload, sees the alarm banner when
the door is forced, acknowledges the alarm and unlocks the main entrance from the doors board; a guard
watching the board sees the lock change live and has no unlock buttons. Full-page screenshots of each step
go to ``test-artifacts/test_console_browser/<test>/`` for a person to look at.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audited import commit_change
from badge_bridge.controllers import contract as c
from badge_bridge.models import Alarm, AuditEntry
from tests.conftest import CAMERAS
from tests.console_site import PASSWORD, Console, Watched
from tests.waiting import wait_until


def test_security_desk_in_a_real_browser(console: Console, browser, artifacts: Path) -> None:
    sup = Watched(browser, console.url)
    sup.login("sam", shot=artifacts / "01-login.png")
    page = sup.page
    assert page.inner_text("header .who span") == "sam · supervisor"
    assert page.inner_text("#alarm-count") == "0"
    sup.mark()

    # a card at the main entrance: the grant and the walk-through arrive in the feed, no reload
    console.lobby.present("main-in", None, "wiegand26", "12:1001")
    grant = console.lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant))
    assert grant.door == "main-entrance"
    page.wait_for_selector("#feed tbody tr.new[data-kind='access.granted'][data-door='main-entrance']")
    page.wait_for_selector("#feed tbody tr.new[data-kind='door.closed'][data-door='main-entrance']")
    granted = page.locator("#feed tbody tr[data-kind='access.granted']").first
    assert granted.locator("td.person a").inner_text() == "Ada"  # a name, not {"person":1} (test_console_feed*.py)
    assert sup.still_same_document()
    assert page.is_hidden("#alarm-banner")
    sup.shot(artifacts / "02-live-feed.png")

    # the door opens with no grant: forced, the red banner, the count goes up, the title says so
    console.lobby.open_door("main-entrance")
    banner = page.wait_for_selector("#alarm-banner:not([hidden])")
    assert "door.forced at Main entrance" in banner.inner_text()  # the door's name (the alarm panel's row)
    page.wait_for_selector("#alarm-count.hot:has-text('1')")
    page.wait_for_selector("#feed tbody tr.alarm[data-kind='alarm.raised']")
    assert page.title().startswith("(1) ALARM")
    assert sup.still_same_document()
    sup.shot(artifacts / "03-alarm-banner.png")
    console.lobby.close_door("main-entrance")
    page.locator("#feed tbody tr.new[data-kind='door.closed']").nth(1).wait_for()  # the second closing

    # the alarm queue: acknowledge with a comment
    with Session(console.engine) as session:
        alarm = session.scalars(select(Alarm)).one()
    assert (alarm.kind, alarm.state, alarm.door) == ("door.forced", "open", "main-entrance")
    page.click("nav a[href='/alarms']")
    row = f"#alarm-{alarm.id}"
    page.wait_for_selector(f"{row} .pill.open")
    sup.shot(artifacts / "04-alarms-queue.png")
    comment = "Checked on camera: courier pushed the door, escorted out"
    page.fill(f"{row} form[action$='/acknowledge'] [name=comment]", comment)
    page.click(f"{row} form[action$='/acknowledge'] button")
    page.wait_for_selector(f"{row} .pill.acknowledged")
    assert comment in page.inner_text(row)
    assert "sam" in page.inner_text(row)
    assert page.inner_text("#alarm-count") == "0"
    assert page.is_visible(f"{row} form[action$='/resolve']")  # a supervisor may resolve it next
    with Session(console.engine) as session:
        acked = session.get(Alarm, alarm.id)
        assert acked is not None
        assert (acked.state, acked.acknowledged_by, acked.comment) == ("acknowledged", "sam", comment)
        assert acked.acknowledged_at is not None
    sup.shot(artifacts / "05-alarm-acknowledged.png")

    # a guard has the doors board open: no unlock for a guard, and the unlock will show there live
    door = "#door-main-entrance"
    guard = Watched(browser, console.url)
    guard.login("gus")
    assert guard.page.inner_text("header .who span") == "gus · guard"
    guard.page.click("nav a[href='/doors']")
    guard.page.wait_for_selector("#live-state:has-text('live')")
    guard.page.wait_for_selector(f"{door} .door-lock:text-is('locked')")
    assert guard.page.locator("form[action$='/unlock']").count() == 0
    assert guard.page.locator("button", has_text="Unlock").count() == 0
    assert guard.page.locator("button", has_text="Lock down").count() == 0
    guard.mark()

    # the supervisor unlocks the main entrance with a reason: the controller gets the command
    page.click("nav a[href='/doors']")
    page.wait_for_selector(f"{door} .door-lock:text-is('locked')")
    assert page.inner_text(f"{door} td:nth-child(6)").split() == ["ctl-lobby", "●"]
    page.fill(f"{door} form[action$='/unlock'] [name=reason]", "Delivery of rack, dock closed")
    page.click(f"{door} form[action$='/unlock'] button")
    unlock = console.lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Unlock))
    assert (unlock.door, unlock.by, unlock.reason, unlock.duration_s) == (
        "main-entrance", "sam", "Delivery of rack, dock closed", None)
    page.wait_for_selector(".flash.info:has-text('Unlock of main-entrance until locked sent')")
    page.wait_for_selector(f"{door} .door-lock.lock-unlocked:text-is('unlocked')")
    sup.shot(artifacts / "06-doors-board.png")
    guard.page.wait_for_selector(f"{door} .door-lock.lock-unlocked:text-is('unlocked')")
    assert guard.still_same_document()

    # someone walks through the unlocked door: open on the board, not an alarm
    console.lobby.open_door("main-entrance")
    guard.page.wait_for_selector(f"{door} .door-state .pill.open:text-is('open')")
    assert guard.page.is_hidden("#alarm-banner")
    assert guard.page.inner_text("#alarm-count") == "0"
    assert guard.still_same_document()
    guard.shot(artifacts / "07-doors-board-guard.png")
    console.lobby.close_door("main-entrance")

    # an auditor lands on the event log, without the live feed
    auditor = Watched(browser, console.url)
    commit_change(console.seeder, "test", lambda s: people.add_user(s, "test", "ann", "auditor", PASSWORD))
    auditor.login("ann", lands_on="/events", live=False)
    auditor.page.wait_for_selector("h1:text-is('Event log')")
    assert auditor.page.locator("#live-state").count() == 0
    assert auditor.page.locator("nav a[href='/doors']").count() == 0

    assert sup.errors == [] and guard.errors == [] and auditor.errors == []
    with Session(console.engine) as session:
        assert session.scalars(select(Alarm)).one().state == "acknowledged"  # nothing else raised an alarm


@CAMERAS
def test_unauthorized_entry_shows_the_camera_snapshot(camera_console: Console, browser, artifacts: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A real camera worker plays the indoor footage; the first person walks in without badging: the alarm
    reaches the banner, and the event's page shows what the camera saw, decrypted."""
    from camera.supervisor import Supervisor

    monkeypatch.delenv("BADGE_BRIDGE_MQTT_PORT", raising=False)
    supervisor = Supervisor(camera_console.config, camera_console.site_file, ["cam-lobby"])
    runner = threading.Thread(target=supervisor.run, daemon=True)
    runner.start()
    try:
        guard = Watched(browser, camera_console.url)
        with Session(camera_console.engine) as session, session.begin():
            people.add_user(session, "test", "gil", "guard", PASSWORD)
        guard.login("gil")
        guard.page.wait_for_selector("#alarm-banner:visible", timeout=60_000)

        def snapshot_of_entry() -> int | None:
            with Session(camera_console.engine) as session:
                entry = session.scalar(select(AuditEntry).where(AuditEntry.kind == "door.unauthorized_entry"))
                saved = session.scalars(select(AuditEntry.detail).where(AuditEntry.kind == "evidence.saved")).all()
            return entry.id if entry is not None and any(json.loads(d)["event"] == entry.event_id for d in saved) else None

        entry_id = wait_until(snapshot_of_entry, 60, "a snapshot saved for the unauthorized entry")
        guard.page.goto(f"/events/{entry_id}")
        image = guard.page.wait_for_selector(".evidence img")
        guard.page.wait_for_function("document.querySelector('.evidence img').complete")
        assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [768, 432]
        guard.shot(artifacts / "08-unauthorized-entry-evidence.png")
        assert guard.errors == []
    finally:
        supervisor.stopping.set()
        runner.join(20)
