"""Access requests in a real browser against the running console and bridge: a guard asks for a level for a
window (the form shows the doors each level opens), cannot approve their own request, and a supervisor
approves it from the list with a comment; each step's page is kept in docs/img/console/requests-*.png."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.models import AccessRequest
from tests.console_site import Console, Watched

DOCS = Path(__file__).resolve().parents[1] / "docs" / "img" / "console"


def test_a_guard_requests_and_a_supervisor_approves(console: Console, browser, artifacts: Path) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    guard = Watched(browser, console.url)
    guard.login("gus")
    page = guard.page
    page.goto("/requests")
    page.select_option("select[name=person]", label="Ada")
    level = page.locator("select[name=level] option", has_text="NOC operators").get_attribute("value")
    assert "doors: noc" in page.locator("select[name=level] option", has_text="NOC operators").inner_text()
    page.select_option("select[name=level]", value=level)
    start = datetime.now(UTC) + timedelta(hours=1)
    page.fill("input[name=starts_at]", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=ends_at]", (start + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=reason]", "<b>Replace</b> the NOC wall's UPS batteries")
    page.fill("input[name=ticket]", "CHG-4711")
    guard.shot(DOCS / "requests-form.png")
    page.click("button:has-text('Request')")
    page.wait_for_url("**/requests/*")
    assert "Access request opened." in page.inner_text("main")
    assert page.locator("button:has-text('Approve')").count() == 0  # neither a supervisor nor another pair of eyes
    assert "<b>Replace</b>" in page.inner_text("main")  # shown as typed, never as markup
    guard.shot(DOCS / "requests-opened.png")
    with Session(console.engine) as s:
        asked = s.scalars(select(AccessRequest)).one()

    supervisor = Watched(browser, console.url)
    supervisor.login("sam")
    page = supervisor.page
    page.goto("/requests")
    row = page.locator("table.requests tr", has_text="CHG-4711")
    assert "awaited" not in row.inner_text() and "open" in row.inner_text()
    supervisor.shot(DOCS / "requests-list.png")
    row.locator(f"input[aria-label='Comment on approving request {asked.id}']").fill("Escort not needed")
    row.locator("button:has-text('Approve')").click()
    page.wait_for_url(f"**/requests/{asked.id}")
    main = page.inner_text("main")
    assert f"Access request {asked.id} approved." in main and "sam: Escort not needed" in main
    assert "admin.request_opened" in main and "admin.request_approved" in main
    supervisor.shot(DOCS / "requests-approved.png")
    with Session(console.engine) as s:
        assert s.get_one(AccessRequest, asked.id).state == "approved"
    assert guard.errors == [] and supervisor.errors == []
