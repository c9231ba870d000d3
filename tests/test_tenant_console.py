"""The tenant admin's console view (web.tenant) through Flask's test client, on both databases: another
customer's (or site staff's) person, card, event or cage is 404 to them, exactly like a missing id, whether
read or posted to, and nothing changes; their events page names only their own people; the card form keeps
to the maximum validity; site staff approve the people customers add. Who may reach which route at all
(staff pages 403 to a tenant admin, tenant pages 403 to staff) and CSRF are in test_console_routes' matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import people, tenants
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import SiteConfig
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, Person
from tests import test_console_routes as console
from tests.test_console_routes import Seed, assert_inert, audited, login, messages, page, post, snapshot, submit, texts
from tests.test_tenants import two_tenants

cheap_password_hashes, make_app = console.cheap_password_hashes, console.make_app
HOSTILE = '<img src=x onerror=alert("globex")>'


@dataclass(frozen=True)
class Other:
    """What Globex, the other customer, and site staff hold: nothing of it exists for Acme's admin."""

    person: int
    credential: int
    event: int
    staff_event: int
    """Ada (site staff) granted into cage 7: Acme sees the entry, not her name."""


@pytest.fixture
def config(site: SiteConfig) -> SiteConfig:
    return two_tenants(site)


@pytest.fixture
def seed(engine: Engine, config: SiteConfig, keys: KeyStore) -> Seed:
    return console.seed_site(engine, config, keys)


@pytest.fixture
def other(engine: Engine, config: SiteConfig, keys: KeyStore, seed: Seed) -> Iterator[Other]:
    writer = AuditWriter(engine, f"{config.site.instance}.cli", keys.signer())
    writer.start()
    now = datetime.now(UTC)
    try:
        def add(s: Session):  # type: ignore[no-untyped-def]
            return tenants.add_person(s, "cli:t", tenants.scope(s, config, "globex"), f"Gina {HOSTILE}",
                                      levels=["noc-24x7"])
        gina, _ = commit_change(writer, "cli:t", add)
        cred, _ = commit_change(writer, "cli:t", lambda s: tenants.add_credential(
            s, "cli:t", tenants.scope(s, config, "globex"), gina.id, "wiegand26", "12:9009",
            pepper=keys.pin_pepper(), valid_until=now + timedelta(days=5), now=now))
        events = [Event(id=Event.new_id("access.denied"), kind="access.denied", source="ctl-hall-a", ts=now,
                        door=door, subject={"person": pid, "credential": cid}, detail={"reason": "no_access_level"})
                  for door, pid, cid in (("noc", gina.id, cred.id), ("cage-7", seed.person, seed.credential))]
        for e in events:
            writer.submit(e)
    finally:
        writer.stop()
    with Session(engine) as s:
        found = [s.scalar(select(AuditEntry.id).where(AuditEntry.event_id == e.id)) for e in events]
    yield Other(gina.id, cred.id, *found)


@pytest.fixture
def app(make_app: Callable[..., Flask], config: SiteConfig, seed: Seed) -> Flask:
    return make_app(config)


@pytest.fixture
def acme(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert login(client, "tenant_admin").status_code == 302
    return client


def test_another_customers_ids_are_not_found(acme: FlaskClient, other: Other, seed: Seed, engine: Engine) -> None:
    missing = 999_999
    for pid in (other.person, seed.person, missing):
        assert acme.get(f"/tenant/people/{pid}").status_code == 404
    for eid in (other.event, seed.event, missing):
        assert acme.get(f"/tenant/events/{eid}").status_code == 404
    assert acme.get("/tenant/events?area=noc").status_code == 404  # Globex's area here
    assert acme.get("/tenant/events?area=lobby").status_code == 404
    before = snapshot(engine)
    soon = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    for pid in (other.person, seed.person, missing):
        for path, form in ((f"/tenant/people/{pid}/levels", {"levels": ["cage-7-acme"]}),
                           (f"/tenant/people/{pid}/credentials", {"fmt": "wiegand26", "number": "12:7777",
                                                                  "valid_until": soon}),
                           (f"/tenant/people/{pid}/left", {"reason": "not ours at all"})):
            assert post(acme, path, **form).status_code == 404, path
    for cid in (other.credential, seed.credential, missing):
        assert post(acme, f"/tenant/credentials/{cid}/revoke", reason="stolen card").status_code == 404
        assert post(acme, f"/tenant/credentials/{cid}/validity", valid_until=soon).status_code == 404
    assert snapshot(engine) == before


def test_their_pages_name_only_their_people(acme: FlaskClient, other: Other, seed: Seed) -> None:
    shown = page(acme, "/tenant")
    assert "Tess Tenant" in shown and "AWAITING APPROVAL" in shown
    assert "Ada Lovelace" not in shown and "Gina" not in shown
    events = page(acme, "/tenant/events")
    assert "Tess Tenant" in events and "not approved by site staff yet" in events
    assert "not one of ours" in events  # Ada at cage 7: the entry, without her
    for name in ("Ada Lovelace", "Gina", "12:1001", "12:9009", "Analytical Engines"):
        assert name not in events, name
    assert_inert(events, HOSTILE)
    detail = page(acme, f"/tenant/events/{other.staff_event}")
    assert "not one of ours" in detail and "Ada" not in detail and "12:1001" not in detail
    assert "Tess Tenant" in page(acme, f"/tenant/events/{seed.tenant_event}")
    cages = page(acme, "/tenant/cages")
    assert "Customer cage 7" in cages and "NOC" not in cages


def test_no_card_beyond_the_maximum_validity_from_the_form(acme: FlaskClient, seed: Seed, engine: Engine) -> None:
    before = snapshot(engine)
    late = (datetime.now(UTC) + timedelta(days=120)).strftime("%Y-%m-%dT%H:%M")
    said = submit(acme, f"/tenant/people/{seed.tenant_person}/credentials", fmt="wiegand26", number="12:6006",
                  valid_until=late)
    assert "beyond the 90 days the site allows acme" in texts(said, "error")
    said = submit(acme, f"/tenant/people/{seed.tenant_person}/levels", levels=["staff"])  # a forged choice
    assert "not a valid choice" in texts(said, "error")
    assert snapshot(engine) == before


def test_site_staff_approve_and_the_log_says_who(app: Flask, seed: Seed, engine: Engine) -> None:
    guard = app.test_client()
    assert login(guard, "guard").status_code == 302
    assert guard.get("/approvals").status_code == 403
    supervisor = app.test_client()
    assert login(supervisor, "supervisor").status_code == 302
    waiting = page(supervisor, "/approvals")
    assert "Tess Tenant" in waiting and "Acme Hosting" in waiting and "12:1007" in waiting
    assert "approved" in texts(submit(supervisor, f"/approvals/{seed.tenant_person}/approve"), "info")
    assert "Nobody is waiting." in page(supervisor, "/approvals")
    entry = audited(engine, "admin.person_approved")
    assert entry.source == "console:supervisor" and entry.detail["tenant"] == "acme"
    assert entry.detail["state"][f"person/{seed.tenant_person}"]["status"] == "active"
    said = submit(supervisor, f"/approvals/{seed.tenant_person}/refuse", reason="too late")
    assert "not awaiting approval" in texts(said, "error")


def test_a_tenant_admin_adds_a_person_who_waits(acme: FlaskClient, engine: Engine, seed: Seed) -> None:
    response = post(acme, "/tenant/people", name="Tom Tenant", levels=["cage-7-acme"])
    assert response.status_code == 302, messages(response)
    with Session(engine) as s:
        tom = s.scalars(select(Person).where(Person.name == "Tom Tenant")).one()
        assert (tom.status, tom.company, [lvl.key for lvl in tom.levels]) == ("pending", "Acme Hosting",
                                                                              ["cage-7-acme"])
        acme_id = s.scalar(select(Person.tenant_id).where(Person.id == seed.tenant_person))
        assert tom.tenant_id == acme_id
    entry = audited(engine, "admin.person_added")
    assert entry.source == "console:tenant_admin" and entry.detail["tenant"] == "acme"


def test_a_tenant_admin_is_home_at_their_view_and_sees_no_alarms(app: Flask, acme: FlaskClient) -> None:
    response = acme.get("/")
    assert response.status_code == 302 and response.location.endswith("/tenant")
    shown = page(acme, "/tenant")
    assert 'data-stream=""' in shown  # no stream: the scripts have nothing to listen to
    for staff_only in ('href="/alarms', 'id="alarm-banner"', 'id="lockdown-banner"', 'href="/events"', "alarm-count", 'id="alarm-panel"'):
        assert staff_only not in shown, staff_only
    for path in ("/stream", "/alarms/panel", "/wall", "/people", "/events", "/muster/list", "/users"):
        assert acme.get(path).status_code == 403, path
    fresh = app.test_client()
    response = login(fresh, "tenant_admin")
    assert response.status_code == 302 and response.location.endswith("/tenant")


def test_a_tenant_gone_from_the_site_file_leaves_its_admin_nothing(make_app: Callable[..., Flask], site: SiteConfig,
                                                                   seed: Seed) -> None:
    app = make_app(site.model_copy(update={"tenants": []}))
    client = app.test_client()
    assert login(client, "tenant_admin").status_code == 302
    assert client.get("/tenant").status_code == 404
    assert client.get(f"/tenant/people/{seed.tenant_person}").status_code == 404


def test_a_staff_user_cannot_be_turned_into_a_tenant_admin(app: Flask, seed: Seed, engine: Engine) -> None:
    admin = app.test_client()
    assert login(admin, "admin").status_code == 302
    said = submit(admin, f"/users/{seed.users['guard']}/role", role="tenant_admin")
    assert "neither made from nor turned into" in texts(said, "error")
    with Session(engine) as s:
        assert people.user_id(s, "guard") == seed.users["guard"]
