"""The wall display in a real headless Chromium at 1920x1080: an admin adds a wall on the Users page, its
one-time link is opened on the "screen", which lands on /wall with the token gone from the address bar and the
history; a badge at the lobby arrives on the wall live; the admin revokes the wall and, within seconds, the
screen says it was revoked. Screenshots go to ``test-artifacts/test_wall_browser/<test>/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from badge_bridge import people
from badge_bridge.audited import commit_change
from tests.console_site import PASSWORD, Console, Watched

WALL_SIZE = {"width": 1920, "height": 1080}
UNAUTHORIZED = "the server responded with a status of 401"
"""The console's message for the revoked page's status: expected, the page itself says why."""


def test_a_wall_screen_from_link_to_revocation(console: Console, browser, artifacts: Path) -> None:
    commit_change(console.seeder, "test", lambda s: people.add_user(s, "test", "ada-admin", "admin", PASSWORD))
    admin = Watched(browser, console.url)
    admin.login("ada-admin")
    admin.page.goto("/users")
    admin.page.fill("input[name=name]", "NOC wall")
    admin.page.click("button:has-text('Add wall display')")
    secret = admin.page.inner_text(".flash.secret")
    link = re.search(r"(http://\S+/wall/connect)#(\S+)", secret)
    assert link, secret
    admin.shot(artifacts / "01-users-wall-added.png")

    wall = Watched(browser, console.url)
    page = wall.page
    page.set_viewport_size(WALL_SIZE)
    page.goto(f"{link.group(1)}#{link.group(2)}")
    page.wait_for_url("**/wall")
    page.wait_for_selector("#live-state:has-text('live')")
    assert link.group(2) not in page.url
    assert page.locator("a[href], form, input, button, select, textarea").count() == 0  # nothing to click
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight")  # one screen, no scroll

    console.lobby.present("main-in", None, "wiegand26", "12:1001")
    page.wait_for_selector("#feed tbody tr.new[data-kind='access.granted'][data-door='main-entrance']")
    wall.shot(artifacts / "02-wall-1920x1080.png")
    page.go_back()  # no entry of the history holds the link: the connect page replaced itself on the way
    assert link.group(2) not in page.url, page.url
    page.go_forward()
    page.wait_for_selector("#live-state:has-text('live')")

    admin.page.goto("/users")
    admin.page.click("button:has-text('Revoke noc-wall')")
    admin.page.wait_for_selector(".flash.info:has-text('Wall display revoked.')")
    page.wait_for_selector("h1:has-text('This wall display was revoked')", timeout=20_000)
    wall.shot(artifacts / "03-wall-revoked.png")
    assert [e for e in wall.errors if UNAUTHORIZED not in e] == [] and admin.errors == []
