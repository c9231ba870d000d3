"""The visitors page in a browser, on a running bridge: a hostile name stays text; the desk registers a
visitor, checks them in and prints the badge; an escort (made one on the same page) takes them through the
lobby door; a badge not returned in time shows OVERDUE until it is returned. Screenshots of each step in the
test's artifacts folder (docs/img/console/visitors-*.png are copies)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audited import commit_change
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm
from tests.console_site import PASSWORD, Console, Watched
from tests.visit_site import Desk, window
from tests.waiting import wait_until

HOSTILE = '"><img src=x onerror=alert(1)>'


def test_the_desk_registers_checks_in_and_takes_back_a_visitor(console: Console, browser, keys: KeyStore,
                                                                artifacts: Path) -> None:
    commit_change(console.seeder, "test", lambda s: people.add_user(s, "test", "ada-admin", "admin", PASSWORD))
    desk = Desk(console.engine, console.config, keys, chain="bridge-1.test")
    try:
        late = desk.register(name="Otto Overdue", company=HOSTILE, **window(minutes=1.1, start=-1))  # ends in ~6 s
        desk.check_in(late, "77:9")
        admin = Watched(browser, console.url)
        page = admin.page
        admin.login("ada-admin")
        page.click("nav a:has-text('Visitors')")
        page.wait_for_url("**/visitors")
        assert page.locator("table.visits img").count() == 0 and HOSTILE in page.inner_text("table.visits")

        page.fill("input[name=name]", "Vera Visitor")
        page.fill("input[name=company]", "Acme Data")
        page.select_option("select[name=levels]", ["staff"])
        page.fill("input[name=purpose]", "Rack survey, hall A")
        page.click("button:has-text('Register')")
        page.wait_for_selector(".flash.info:has-text('Visit of Vera Visitor registered.')")
        admin.shot(artifacts / "visitors-registered.png")

        row = page.locator("tr", has_text="Vera Visitor")
        row.locator("input[name=id_document]").fill("passport 123456789")  # the whole number: refused
        row.locator("input[name=number]").fill("77:1")
        row.locator("button:has-text('Check in')").click()
        page.wait_for_selector(".flash.error:has-text('never the whole number')")
        row = page.locator("tr", has_text="Vera Visitor")
        row.locator("input[name=id_document]").fill("passport, last 4: 6789")
        row.locator("input[name=number]").fill("77:1")
        row.locator("button:has-text('Check in')").click()
        page.wait_for_selector(".flash.info:has-text('badge 77:1 issued')")
        assert "on site" in page.locator("tr", has_text="Vera Visitor").inner_text()

        href = page.locator("a:has-text('Print badge of Vera Visitor')").get_attribute("href")
        assert href is not None
        pdf = page.request.get(href)
        assert pdf.ok and pdf.headers["content-type"] == "application/pdf"
        (artifacts / "visitors-badge.pdf").write_bytes(pdf.body())
        subprocess.run(["pdftoppm", "-png", "-r", "150", "-singlefile", str(artifacts / "visitors-badge.pdf"),
                        str(artifacts / "visitors-badge")], check=True)

        # Ada made an escort here; she badges, then Vera: both through the lobby door
        page.select_option(".escorts select[name=person]", label="Ada")
        page.click(".escorts button:has-text('Save')")
        page.wait_for_selector(".flash.info:has-text('may escort visitors')")
        # the bridge takes up the change within its reload period: until then Vera still waits for an escort
        wait_until(lambda: _escorted_through(console), what="Ada to take Vera through the lobby door")

        wait_until(lambda: _overdue(console), timeout=30, what="Otto's badge overdue")
        page.reload()
        overdue = page.locator("tr.visit-overdue")
        assert "OVERDUE" in overdue.inner_text() and "Otto Overdue" in overdue.inner_text()
        admin.shot(artifacts / "visitors-on-site-and-overdue.png")
        page.click("button:has-text('Badge returned by Otto Overdue')")
        page.wait_for_selector(".flash.info:has-text('badge returned and revoked')")
        wait_until(lambda: not _overdue(console), what="the overdue alarm cleared")
        page.reload()
        assert page.locator("tr.visit-overdue").count() == 0
        assert "badge returned" in page.locator("tr", has_text="Otto Overdue").inner_text()
        admin.shot(artifacts / "visitors-returned.png")
        assert admin.errors == []
    finally:
        desk.close()


def _escorted_through(console: Console) -> bool:
    """Ada badges at the lobby door, then Vera: whether Vera was let in."""
    lobby = console.lobby
    escort = lobby.present("main-in", None, "wiegand26", "12:1001")
    lobby.wait_for_command(lambda cmd: getattr(cmd, "request", None) == escort)
    visitor = lobby.present("main-in", None, "wiegand26", "77:1")
    return isinstance(lobby.wait_for_command(lambda cmd: getattr(cmd, "request", None) == visitor), c.Grant)


def _overdue(console: Console) -> bool:
    with Session(console.engine) as s:
        return s.scalar(select(Alarm.id).where(Alarm.kind == "visitor.overdue", Alarm.cleared_at.is_(None))) is not None

