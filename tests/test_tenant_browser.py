"""Customer cages in a real headless Chromium, with the bridge running: Acme's admin adds a person and issues
a card within the maximum validity; the card is refused at the door (not approved yet) and that shows in
their events; a supervisor approves the person on the approvals page; the tenant admin's pages show no site
alarm, feed or staff link, and no script or console error. Screenshots: docs/img/console/tenant-*.png."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import tenants
from badge_bridge.audited import commit_change
from badge_bridge.models import AuditEntry, Person
from tests.console_site import PASSWORD, Console, Watched
from tests.waiting import wait_until

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "img" / "console"


def _denied(console: Console, person: int) -> str | None:
    with Session(console.engine) as s:
        return s.scalar(select(AuditEntry.detail).where(AuditEntry.kind == "access.denied",
                                                        AuditEntry.person_id == person))


def test_a_customer_admin_adds_a_person_who_waits_for_approval(console: Console, browser) -> None:
    commit_change(console.seeder, "test", lambda s: tenants.add_admin(
        s, "test", tenants.scope(s, console.config, "acme"), "acme-ops", PASSWORD))
    acme = Watched(browser, console.url)
    acme.login("acme-ops", lands_on="/tenant", live=False)
    page = acme.page
    assert page.locator("a[href='/']").count() == 0 and page.locator("#alarm-panel, #alarm-banner").count() == 0
    page.fill("input[name=name]", "Ann Acme")
    page.select_option("select[name=levels]", "cage-7-acme")
    page.click("button:has-text('Add (awaits approval)')")
    page.wait_for_url("**/tenant/people/*")
    person = int(page.url.rsplit("/", 1)[1])
    page.fill("input[name=number]", "12:4242")
    latest = page.get_attribute("input[name=valid_until][max]", "max")
    assert latest is not None and latest[:10] == (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%d")
    page.fill("form:has(h2:has-text('Issue a card')) input[name=valid_until]",
              (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"))
    page.click("button:has-text('Issue')")
    page.wait_for_selector(".flash.info:has-text('Card 12:4242 issued.')")
    acme.shot(SHOTS / "tenant-person.png")

    badged = [0.0]

    def refused() -> str | None:  # the bridge takes the new card up at its reload: badge once a second till then
        if time.monotonic() - badged[0] > 1:
            badged[0] = time.monotonic()
            console.lobby.present("main-in", None, "wiegand26", "12:4242")
        return _denied(console, person)

    assert "person_not_approved" in wait_until(refused, what="the card refused at the door")
    page.goto("/tenant/events")
    page.wait_for_selector("td:has-text('not approved by site staff yet')")
    acme.shot(SHOTS / "tenant-events.png")
    page.goto("/tenant/cages")
    page.wait_for_selector("h2:has-text('Customer cage 7')")
    acme.shot(SHOTS / "tenant-cages.png")

    staff = Watched(browser, console.url)
    staff.login("sam")
    staff.page.goto("/approvals")
    staff.page.wait_for_selector("td:has-text('Ann Acme')")
    staff.shot(SHOTS / "tenant-approvals.png")
    staff.page.click("tr:has-text('Ann Acme') button:has-text('Approve')")
    staff.page.wait_for_selector(".flash.info:has-text('approved')")
    with Session(console.engine) as s:
        ann = s.get(Person, person)
        assert ann is not None and ann.status == "active"

    page.goto("/tenant")
    page.wait_for_selector("td:has-text('✓ active')")
    acme.shot(SHOTS / "tenant-people.png")
    assert page.goto("/people").status == 403  # a staff page
    assert acme.errors == [e for e in acme.errors if "403" in e] and staff.errors == []
