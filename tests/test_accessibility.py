"""Every console page, for every role, checked as a guard with a screen reader or a small screen would meet it:
axe-core (from the npm registry, node_modules/ by ``make test``'s ``npm ci``; injected by Playwright into a
context with ``bypass_csp``, since the console's policy forbids inline script) finds no serious or critical
violation, and at 1366x768 and 1920x1080 no page scrolls sideways and its header and heading are on screen.

On the browser-test site (tests/console_site.py), after a forced door has raised an alarm. Per page: the axe
report in ``test-artifacts/test_accessibility/<test>/axe.json`` and a screenshot at each size.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from badge_bridge import access_requests, people, tenants
from badge_bridge.audited import commit_change
from badge_bridge.models import Alarm, AuditEntry, Person
from tests.conftest import IN_CI
from tests.console_site import PASSWORD, Console, Watched
from tests.waiting import wait_until

AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"
SIZES = {"1366x768": {"width": 1366, "height": 768}, "1920x1080": {"width": 1920, "height": 1080}}
BLOCKING = ("serious", "critical")
USERS = {"guard": "gus", "supervisor": "sam", "admin": "ada-admin", "auditor": "abe-auditor", "tenant_admin": "acme-ops"}
MONITORING = ["/", "/alarms", "/doors", "/people", "/people/{person}", "/events", "/events/{event}", "/requests",
              "/requests/{request}"]
PAGES = {
    "anonymous": ["/login", "/wall/connect", "/wall", "/no-such-page"],
    "guard": [*MONITORING, "/users"],  # /users: the 403 page
    "supervisor": [*MONITORING, "/approvals"],
    "admin": [*MONITORING, "/audit", "/users"],
    "auditor": ["/events", "/events/{event}", "/audit", "/", "/requests/{request}"],  # /: the 403 page
    "wall": ["/wall", "/alarms"],  # /alarms: the wall's 403 page
    "tenant_admin": ["/tenant", "/tenant/people/{tenant_person}", "/tenant/cages", "/tenant/events", "/people"],
}
"""The pages each role opens, with the error pages it meets."""
for _role in ("guard", "supervisor", "admin"):
    PAGES[_role].append("/visitors")  # visitors and escorts (web/visitors.py)


class _BypassCsp:
    """A browser whose new contexts let Playwright add axe's script despite the page's policy."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser

    def new_context(self, **options: Any) -> Any:
        return self.browser.new_context(bypass_csp=True, **options)


def _require_axe() -> None:
    if not AXE.exists():
        if IN_CI:
            pytest.fail(f"{AXE} is missing (make test installs it with npm ci)")
        pytest.skip(f"{AXE} is missing: run `npm ci` (make test does)")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5], "why": v["nodes"][0]["failureSummary"]}
            for v in result["violations"]]


def fits(page: Any) -> list[str]:
    """What is wrong with the page at the current size: a sideways scroll, a header item or the page's heading
    (its first part, on a page without one) off screen."""
    return page.evaluate("""() => {
      const wrong = [], w = window.innerWidth, h = window.innerHeight;
      if (document.documentElement.scrollWidth > w) wrong.push(`scrolls sideways: ${document.documentElement.scrollWidth} > ${w}`);
      const header = document.querySelector("body > header");
      if (header) for (const el of header.querySelectorAll("a, button, .live-state, .brand")) {
        const r = el.getBoundingClientRect();
        if (r.right > w || r.left < 0 || r.bottom > h) wrong.push(`header item off screen: ${el.textContent.trim()}`);
      }
      const first = document.querySelector("main h1") || document.querySelector("main > :not(.flash)");
      if (!first) wrong.push("an empty page");
      else if (first.getBoundingClientRect().top > h - 40) wrong.push("the page's heading or first part below the fold");
      return wrong;
    }""")


def slug(url: str) -> str:
    return re.sub(r"\W+", "_", url).strip("_") or "root"


def connect_wall(console: Console, page: Any) -> None:
    (_, token), _ = commit_change(console.seeder, "test",
                                  lambda s: people.add_wall(s, "test", "Axe wall", now=datetime.now(UTC)))
    page.goto(f"/wall/connect#{token}")
    page.wait_for_url("**/wall")


@pytest.mark.parametrize("role", list(PAGES))
def test_every_page_is_accessible_and_fits_the_screen(role: str, console: Console, browser, artifacts: Path) -> None:
    _require_axe()
    for r, name in USERS.items():
        if name not in ("gus", "sam", "acme-ops"):
            commit_change(console.seeder, "test", lambda s, r=r, name=name: people.add_user(s, "test", name, r, PASSWORD))

    def acme(s: Session) -> tenants.Scope:  # the example's customer (customer cages)
        return tenants.scope(s, console.config, "acme")

    commit_change(console.seeder, "test", lambda s: tenants.add_admin(s, "test", acme(s), "acme-ops", PASSWORD))
    commit_change(console.seeder, "test", lambda s: tenants.add_person(s, "test", acme(s), "Tess", levels=["cage-7-acme"]))
    console.lobby.open_door("main-entrance")  # a forced door: an open alarm on the pages that show alarms
    console.lobby.close_door("main-entrance")
    asked, _ = commit_change(console.seeder, "test", lambda s: access_requests.open_request(
        s, access_requests.Who("console:gus", "guard"), console.config, 1, "noc-24x7", datetime.now(UTC),
        datetime.now(UTC) + timedelta(hours=8), ticket="CHG-1", now=datetime.now(UTC)))
    with Session(console.engine) as s:
        wait_until(lambda: s.scalar(select(func.count()).select_from(Alarm)), 15, "the forced-door alarm")
        ids = {"request": asked.id, "person": s.scalar(select(Person.id).where(Person.name == "Ada")),
               "event": s.scalar(select(func.max(AuditEntry.id)).where(AuditEntry.kind == "alarm.raised")),
               "tenant_person": s.scalar(select(Person.id).where(Person.name == "Tess"))}
    visitor = Watched(_BypassCsp(browser), console.url)
    page = visitor.page
    if role == "wall":
        connect_wall(console, page)
    elif role != "anonymous":
        home = {"auditor": "/events", "tenant_admin": "/tenant"}.get(role, "/")
        visitor.login(USERS[role], lands_on=home, live=role not in ("auditor", "tenant_admin"))

    report: dict[str, Any] = {}
    blocking: dict[str, list[dict[str, Any]]] = {}
    misfits: dict[str, list[str]] = {}
    for path in PAGES[role]:
        url = path.format(**ids)
        page.set_viewport_size(SIZES["1366x768"])
        page.goto(url)
        page.wait_for_load_state("load")
        violations = axe_violations(page)
        report[url] = violations
        if found := [v for v in violations if v["impact"] in BLOCKING]:
            blocking[url] = found
        for size, viewport in SIZES.items():
            page.set_viewport_size(viewport)
            if wrong := fits(page):
                misfits[f"{url} at {size}"] = wrong
            page.screenshot(path=str(artifacts / f"{slug(url)}-{size}.png"), animations="disabled")
    (artifacts / "axe.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({url: [f"{v['impact']} {v['id']}" for v in vs] for url, vs in report.items()}, indent=1))
    assert blocking == {}, json.dumps(blocking, indent=1)
    assert misfits == {}, json.dumps(misfits, indent=1)
    expected = "the server responded with a status of 40"  # the 403, 404 and not-connected pages, on purpose
    assert [e for e in visitor.errors if expected not in e] == []
