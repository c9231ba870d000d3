"""Access requests on the console for a tenant admin (the route matrix, tests/test_console_routes.py, covers the
site's roles): they see, ask for, endorse and refuse their own customer's people's requests only; another
customer's request, or site staff's, does not exist for them (404), and approving is not theirs (403)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge import access_requests as ar
from badge_bridge import people
from badge_bridge.audit import access_tables
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import SiteConfig
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import AccessRequest, ConsoleUser, Tenant
from tests.test_access_requests import acme_site, customer
from tests.test_console_routes import (  # noqa: F401 (fixture)
    cheap_password_hashes,
    login,
    make_app,
    messages,
    post,
    seed_site,
)

TENANT_PASSWORD = "road-runner-password"
NOW = datetime.now(UTC)


def _add(writer: AuditWriter, make: Callable[[Session], tuple[Any, Event]]) -> Any:
    return commit_change(writer, "cli:seed", make)[0]


def _tenant_admin(s: Session, tenant: int) -> tuple[int, Event]:
    user = ConsoleUser(username="rr", role="tenant_admin", tenant_id=tenant,
                       password_hash=people.hasher.hash(TENANT_PASSWORD))
    s.add(user)
    s.flush()
    return user.id, people.admin_event(EventKind.ADMIN_USER_ADDED, "cli:seed", {"user": "rr"}, {"role": "tenant_admin"},
                                       access_tables.user(user))


def test_a_tenant_admin_works_on_their_own_customers_requests_only(
        engine: Engine, site: SiteConfig, keys: KeyStore, make_app: Callable[..., Flask]) -> None:  # noqa: F811
    config = acme_site(site)
    seeded = seed_site(engine, config, keys)
    writer = AuditWriter(engine, "bridge-1.cli", keys.signer())
    writer.start()
    try:
        with Session(engine) as s:
            tenants = {t.key: t.id for t in s.scalars(select(Tenant))}
        _add(writer, lambda s: _tenant_admin(s, tenants["acme"]))
        wile = _add(writer, customer("Wile E. Coyote", tenants["acme"]))
        hank = _add(writer, customer("Hank Scorpio", tenants["globex"]))
        guard = ar.Who("console:guard", "guard")

        def ask(person: int) -> int:
            return _add(writer, lambda s: ar.open_request(s, guard, config, person, "hall-a-engineers", NOW,
                                                          NOW + timedelta(hours=4), ticket=f"T-{person}", now=NOW)).id

        ours, theirs = ask(wile), ask(hank)
    finally:
        writer.stop()
    app = make_app(config)
    rr = app.test_client()
    assert login(rr, "rr", TENANT_PASSWORD).status_code == 302

    listing = rr.get("/requests?state=all").get_data(as_text=True)
    assert f"<b>T-{wile}</b>" in listing and f"<b>T-{hank}</b>" not in listing and "<b>CHG-1</b>" not in listing
    assert "Wile E. Coyote" in listing and "Hank Scorpio" not in listing and "Grace" not in listing  # the form's people too
    for other in (theirs, seeded.request):  # another customer's, and site staff's
        assert rr.get(f"/requests/{other}").status_code == 404
        for action in ("endorse", "refuse", "cancel"):
            assert post(rr, f"/requests/{other}/{action}", comment="not mine").status_code == 404
    assert post(rr, f"/requests/{ours}/approve", comment="self-service").status_code == 403

    def count() -> int:
        with Session(engine) as s:
            return s.scalar(select(func.count()).select_from(AccessRequest)) or 0

    before = count()
    start, end = (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"), (NOW + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    forged = post(rr, "/requests", person=str(hank), level="hall-a-engineers", starts_at=start, ends_at=end, ticket="X")
    assert forged.status_code == 302 and "Not a valid choice" in str(messages(rr.get(forged.location)))
    forged = post(rr, "/requests", person=str(wile), level="noc-24x7", starts_at=start, ends_at=end, ticket="X")
    assert "Not a valid choice" in str(messages(rr.get(forged.location)))
    assert count() == before

    endorsed = post(rr, f"/requests/{ours}/endorse")
    assert endorsed.status_code == 302 and endorsed.location == f"/requests/{ours}"
    assert ("info", f"Access request {ours} endorsed: site staff decide next.") in messages(rr.get(endorsed.location))
    made = post(rr, "/requests", person=str(wile), level="hall-a-engineers",
                starts_at=(NOW + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M"),
                ends_at=(NOW + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M"), reason="rack audit")
    assert made.status_code == 302 and "Access request opened." in str(messages(rr.get(made.location)))
    assert post(rr, f"/requests/{count()}/refuse", comment="wrong day").status_code == 302
    with Session(engine) as s:
        mine = s.get_one(AccessRequest, ours)
        assert (mine.state, mine.tenant_approved_by) == ("open", "rr")
        last = s.get_one(AccessRequest, count())
        assert (last.requested_by, last.state, last.decided_by) == ("rr", "refused", "rr")

    supervisor = app.test_client()
    assert login(supervisor, "supervisor").status_code == 302
    assert post(supervisor, f"/requests/{ours}/approve").status_code == 302
    with Session(engine) as s:
        assert s.get_one(AccessRequest, ours).state == "approved"
