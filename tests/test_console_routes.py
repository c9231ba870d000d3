"""The security desk console through Flask's test client, against a real database (SQLite and PostgreSQL).

Who may do what on every route, CSRF, escaping of hostile names, login and sessions, security headers, the
audited effect of each action, door commands over a real broker, and audit verification from the console.
Most tests run the app without a broker connection (``mqtt_link=False``).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import queue
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, selectinload
from werkzeug.test import TestResponse

from badge_bridge import access_requests, console_signing, people, tenants, visitors
from badge_bridge.audit import access_tables
from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.controllers.contract import ConsoleCommand
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry, ConsoleUser, Credential, FaceTemplate, Person
from badge_bridge.sim.broker import Broker
from badge_bridge.site_sync import sync_site
from camera.evidence import EvidenceStore
from tests.conftest import write_site
from tests.test_verify import drop_append_only_triggers
from tests.waiting import wait_until
from web import create_app, current_services
from web.tenant import SHARED_WITH_TENANTS

CONSOLE_CHAIN = "bridge-1.console"
ROLES = ("guard", "supervisor", "admin", "auditor", "tenant_admin")
JPEG = bytes(cv2.imencode(".jpg", np.full((48, 64, 3), (40, 90, 160), np.uint8))[1])
"""A camera snapshot (a small blue picture)."""
PASSWORDS = {role: f"{role}-password-1" for role in ROLES}
"""One console user per role, named after it."""
PIN = "73829164"
FACES = Path(__file__).resolve().parent / "data" / "faces"


# --- the seeded site ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    users: dict[str, int]
    """Role -> console user id."""
    person: int
    """Ada: staff and hall-a-engineers, one card with a PIN."""
    credential: int
    """Ada's card."""
    open_alarm: int
    acked_alarm: int
    event: int
    """An audit entry on the bridge's chain."""
    evidence: str
    """The SHA-256 of a snapshot in the evidence store, saved for the open alarm."""
    wall_link: str = ""
    """The one-time link token of the wall display "Seed wall" (users["wall"]), not yet used."""
    request: int = 0
    """An open access request for Grace (noc-24x7, 8 hours from now), opened by the guard."""
    visit: int = 0
    """An expected visitor (Vera), registered by cli:seed (badge_bridge.visitors)."""
    tenant_person: int = 0
    """Tess, of the customer Acme (users["tenant_admin"] is their admin): pending approval, with a card."""
    tenant_credential: int = 0
    tenant_event: int = 0
    """Tess denied at cage 7 (not approved yet): an audit entry Acme's admin may see."""

    def ids(self) -> dict[str, int | str]:
        """The names route paths are formatted with."""
        return {"person": self.person, "credential": self.credential, "open_alarm": self.open_alarm,
                "acked_alarm": self.acked_alarm, "event": self.event, "evidence": self.evidence, "request": self.request,
                "visit": self.visit, "tenant_person": self.tenant_person, "tenant_credential": self.tenant_credential,
                "tenant_event": self.tenant_event, **{f"{role}_user": uid for role, uid in self.users.items()}}


def seed_site(engine: Engine, config: SiteConfig, keys: KeyStore) -> Seed:
    """The site, a console user per role, three people (two with cards), an open and an acknowledged alarm;
    the people changes audited on the bridge's chain, as the CLI does."""
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():
        synced = sync_site(s, config)
        s.flush()
        acme = tenants.scope(s, config, "acme")
        users = {role: people.add_user(s, "cli:seed", role, role, PASSWORDS[role],
                                       tenant_id=acme.tenant_id if role == "tenant_admin" else None) for role in ROLES}
        (wall, wall_link), wall_added = people.add_wall(s, "cli:seed", "Seed wall", now=now)
        ada, ada_added = people.add_person(s, "cli:seed", "Ada Lovelace", employee_no="E-1",
                                           company="Analytical Engines", levels=["staff", "hall-a-engineers"])
        card, card_added = people.add_credential(s, "cli:seed", ada.id, "wiegand26", "12:1001",
                                                 pepper=keys.pin_pepper(), pin="4711")
        grace, grace_added = people.add_person(s, "cli:seed", "Grace Hopper", levels=["staff"])
        _, grace_card = people.add_credential(s, "cli:seed", grace.id, "wiegand26", "12:1002", pepper=keys.pin_pepper())
        _, alan_added = people.add_person(s, "cli:seed", "Alan Turing", company="Bletchley")
        # after the site's people: Ada is person 1, whom the forms name
        tess, tess_added = tenants.add_person(s, "cli:seed", acme, "Tess Tenant", levels=["cage-7-acme"])
        tess_card, tess_card_added = tenants.add_credential(
            s, "cli:seed", acme, tess.id, "wiegand26", "12:1007", pepper=keys.pin_pepper(),
            valid_until=now + timedelta(days=7), now=now)
        asked, asked_opened = access_requests.open_request(
            s, access_requests.Who("console:guard", "guard"), config, grace.id, "noc-24x7", now, now + timedelta(hours=8),
            ticket="CHG-1", now=now)
        forced = Alarm(event_id=Event.new_id("alarm.raised"), kind="door.forced", door="main-entrance",
                       source="ctl-lobby", raised_at=now - timedelta(minutes=5))
        held = Alarm(event_id=Event.new_id("alarm.raised"), kind="door.held_open", door="hall-a", source="ctl-hall-a",
                     raised_at=now - timedelta(minutes=9), state="acknowledged", acknowledged_by="guard",
                     acknowledged_at=now - timedelta(minutes=8), comment="Cleaner propped it open")
        s.add_all([forced, held])
        s.flush()
        ids = {"users": {**{role: user.id for role, (user, _) in users.items()}, "wall": wall.id}, "person": ada.id,
               "credential": card.id, "open_alarm": forced.id, "acked_alarm": held.id, "request": asked.id,
               "tenant_person": tess.id, "tenant_credential": tess_card.id}
        forced_event = forced.event_id
    snapshot = EvidenceStore(config.path(config.evidence.dir), keys.evidence_key()).put(JPEG, "image/jpeg")
    saved = Event(id=f"evidence:cam-lobby:{forced_event}", kind="evidence.saved", source="cam-lobby", ts=now,
                  detail={"event": forced_event, "items": [
                      {"kind": "snapshot", "sha256": snapshot, "media_type": "image/jpeg", "bytes": len(JPEG),
                       "frames": 1, "start": now.isoformat(), "end": now.isoformat()}]})
    denied = Event(id=Event.new_id("access.denied"), kind="access.denied", source="ctl-hall-a", ts=now, door="cage-7",
                   subject={"person": ids["tenant_person"], "credential": ids["tenant_credential"]},
                   detail={"reason": "person_not_approved", "direction": "in"})
    writer = AuditWriter(engine, config.site.instance, keys.signer())
    writer.start()
    for event in [e for _, e in users.values()] + [wall_added, ada_added, card_added, grace_added, grace_card, alan_added,
                                                   asked_opened, saved, synced, tess_added, tess_card_added, denied]:
        writer.submit(event)
    visit, _ = commit_change(writer, "cli:seed", lambda s: visitors.register(
        s, "cli:seed", site=config, name="Vera Visitor", company="Acme", levels=["staff"], starts_at=now,
        ends_at=now + timedelta(hours=10)))
    assert writer.stop()
    with Session(engine) as s:
        first = s.scalar(select(func.min(AuditEntry.id)).where(AuditEntry.chain_id == config.site.instance))
        tenant_event = s.scalar(select(AuditEntry.id).where(AuditEntry.event_id == denied.id))
    return Seed(**ids, event=first, evidence=snapshot, wall_link=wall_link, visit=visit.id, tenant_event=tenant_event)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """New console passwords hashed with the cheapest argon2id parameters: the hash carries its parameters,
    so logging in checks it as always, and the few hundred tests here do not spend minutes hashing."""
    monkeypatch.setattr(people, "hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def seed(engine: Engine, site: SiteConfig, keys: KeyStore) -> Seed:
    return seed_site(engine, site, keys)


@pytest.fixture
def make_app(engine: Engine, keys: KeyStore) -> Iterator[Callable[..., Flask]]:
    """Console apps on the test's database; each one's audit writer (and broker link) stops at the end."""
    apps: list[Flask] = []

    def make(config: SiteConfig, *, mqtt_link: bool = False, **overrides: Any) -> Flask:
        app = create_app(config, engine, keys, mqtt_link=mqtt_link, overrides={"TESTING": True, **overrides})
        apps.append(app)
        return app

    yield make
    for app in apps:
        current_services(app).stop()


@pytest.fixture
def app(make_app: Callable[..., Flask], site: SiteConfig, seed: Seed) -> Flask:
    return make_app(site)


@pytest.fixture
def client_as(app: Flask, seed: Seed) -> Callable[[str], FlaskClient]:
    """A fresh browser, logged in as the console user of that role (or not at all: "anonymous"); "wall": the
    seeded wall display's screen, connected with its one-time link."""
    def make(role: str) -> FlaskClient:
        client = app.test_client()
        if role == "wall":
            response = client.post("/wall/connect", data={"csrf_token": csrf_token(client), "token": seed.wall_link})
            assert response.status_code == 302 and response.location.endswith("/wall"), messages(response)
        elif role != "anonymous":
            response = login(client, role)
            assert response.status_code == 302, f"{role} could not log in: {messages(response)}"
        return client

    return make


# --- the browser's side ------------------------------------------------------------------------------

TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
FLASH = re.compile(r'<p class="flash (\w+)">(.*?)</p>', re.DOTALL)


def csrf_token(client: FlaskClient) -> str:
    """The session's form token, as any page shows it (the login page renders for everyone but a wall display,
    whose connect page has it)."""
    response = client.get("/login")
    if response.status_code == 403:
        response = client.get("/wall/connect")
    match = TOKEN.search(response.get_data(as_text=True))
    assert match, "no CSRF token on the login page"
    return match.group(1)


def login(client: FlaskClient, user: str, password: str | None = None, *, next: str | None = None) -> TestResponse:
    url = "/login" + (f"?next={quote(next, safe='')}" if next is not None else "")
    return client.post(url, data={"csrf_token": csrf_token(client), "username": user,
                                  "password": PASSWORDS.get(user, "") if password is None else password})


@dataclass(frozen=True)
class Upload:
    """A file a form uploads (multipart); a fresh stream on every post, so one form can be posted again."""
    filename: str
    data: bytes


def encoded(form: dict[str, Any]) -> dict[str, Any]:
    """A form as the test client posts it: uploads as (stream, file name)."""
    return {k: (io.BytesIO(v.data), v.filename) if isinstance(v, Upload) else v for k, v in form.items()}


def post(client: FlaskClient, path: str, **form: Any) -> TestResponse:
    """Submit a form as the page would, with the session's CSRF token."""
    return client.post(path, data={"csrf_token": csrf_token(client), **encoded(form)})


def get(client: FlaskClient, path: str) -> TestResponse:
    response = client.get(path)
    if response.mimetype == "text/event-stream":  # endless: read the first message, then hang up
        first = next(iter(response.response))
        response.close()
        assert first.startswith(b"retry:"), first
    return response


def messages(response: TestResponse) -> list[tuple[str, str]]:
    """The flashed messages a page shows: (category, text)."""
    return [(cat, html.unescape(msg)) for cat, msg in FLASH.findall(response.get_data(as_text=True))]


def submit(client: FlaskClient, path: str, **form: Any) -> list[tuple[str, str]]:
    """POST a form, expect the redirect back, and return the messages the page it leads to shows."""
    response = post(client, path, **form)
    assert response.status_code == 302, (response.status_code, messages(response))
    return messages(client.get(response.location))


def texts(flashed: list[tuple[str, str]], category: str) -> str:
    return "\n".join(msg for cat, msg in flashed if cat == category)


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


# --- the database's side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str
    source: str
    door: str | None
    subject: dict[str, Any]
    detail: dict[str, Any]
    raw: str
    """Subject and detail as stored."""


def console_log(engine: Engine, kind: str | None = None) -> list[Entry]:
    """The console's audit chain, oldest first (optionally one kind only)."""
    stmt = select(AuditEntry).where(AuditEntry.chain_id == CONSOLE_CHAIN).order_by(AuditEntry.seq)
    with Session(engine) as s:
        rows = list(s.scalars(stmt if kind is None else stmt.where(AuditEntry.kind == kind)))
    return [Entry(e.kind, e.source, e.door, json.loads(e.subject), json.loads(e.detail), e.subject + e.detail)
            for e in rows]


def audited(engine: Engine, kind: str) -> Entry:
    """The one console entry of ``kind``."""
    found = console_log(engine, kind)
    assert len(found) == 1, f"{len(found)} entries of {kind}: {found}"
    return found[0]


def by_console_user(entry: Entry, user: str) -> bool:
    """Console actions carry the user in the subject; admin.* changes go through badge_bridge.people, as the
    CLI's do, and name the actor as their source instead."""
    if entry.kind.startswith("admin."):
        return entry.source == f"console:{user}"
    return entry.source == "console" and entry.subject.get("user") == user


def snapshot(engine: Engine) -> dict[str, object]:
    """What any console action could change."""
    with Session(engine) as s:
        return {
            "console log": s.scalar(select(func.count()).where(AuditEntry.chain_id == CONSOLE_CHAIN)),
            "alarms": s.execute(select(Alarm.id, Alarm.state, Alarm.assigned_to, Alarm.comment)
                                .order_by(Alarm.id)).all(),
            "people": s.execute(select(Person.id, Person.name, Person.status, Person.company)
                                .order_by(Person.id)).all(),
            "levels": [(p.id, sorted(lvl.key for lvl in p.levels))
                       for p in s.scalars(select(Person).options(selectinload(Person.levels)).order_by(Person.id))],
            "credentials": s.execute(select(Credential.id, Credential.status, Credential.valid_until)
                                     .order_by(Credential.id)).all(),
            "users": s.execute(select(ConsoleUser.id, ConsoleUser.active, ConsoleUser.password_hash)
                               .order_by(ConsoleUser.id)).all(),
            "faces": s.execute(select(FaceTemplate.id, FaceTemplate.person_id).order_by(FaceTemplate.id)).all(),
        }


def assert_log_verifies(engine: Engine, keys: KeyStore) -> None:
    report = verify(engine, engine.url.render_as_string(hide_password=False), keys.trusted_public_keys())
    assert report.ok, [str(f) for f in report.findings]
    assert CONSOLE_CHAIN in report.chains


def assert_security_headers(response: TestResponse) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp, csp
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    if response.mimetype in ("text/html", "text/event-stream"):
        assert "no-store" in response.headers.get("Cache-Control", ""), response.headers


# --- 1. who may do what ------------------------------------------------------------------------------

GUARD_UP = frozenset({"guard", "supervisor", "admin"})
SUPERVISOR_UP = frozenset({"supervisor", "admin"})
ADMIN = frozenset({"admin"})
READERS = GUARD_UP | {"auditor"}
AUDITORS = frozenset({"auditor", "admin"})
LOGGED_IN = frozenset(ROLES)
EVERYONE = LOGGED_IN | {"anonymous"}
TENANT = frozenset({"tenant_admin"})
"""A customer's admin (web.tenant): their own view only; every staff page is 403 to them."""
WALL = frozenset({"wall"})
"""A wall display's screen (web.wall): its page, its stream and static files, nothing else."""
NOT_CONNECTED = "This console has no connection to the bridge."


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    path: str
    """Formatted with Seed.ids()."""
    allowed: frozenset[str]
    form: dict[str, Any] = field(default_factory=dict)
    """A valid form (without the CSRF token)."""
    lands: str | None = None
    """Where an allowed POST redirects to (a regular expression on the path); None: it answers 200."""
    says: str = ""
    """A message the page it lands on shows: proof the form was valid and acted on."""

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint}"


VISIT_FROM = datetime.now(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%dT%H:%M")
VISIT_UNTIL = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(hours=10)).strftime("%Y-%m-%dT%H:%M")
"""A visit's window as the register form takes it (the example site's local time)."""

ROUTES = [
    Route("live.feed", "GET", "/", GUARD_UP),
    Route("stream.stream", "GET", "/stream", GUARD_UP | WALL),
    Route("alarms.queue", "GET", "/alarms", GUARD_UP),
    Route("alarms.acknowledge", "POST", "/alarms/{open_alarm}/acknowledge", GUARD_UP,
          {"comment": "Checked on camera: a courier"}, "/alarms", "Alarm {open_alarm} acknowledged."),
    Route("alarms.assign", "POST", "/alarms/{open_alarm}/assign", SUPERVISOR_UP, {"user": "guard"}, "/alarms",
          "Alarm {open_alarm} assigned."),
    Route("alarms.resolve", "POST", "/alarms/{acked_alarm}/resolve", SUPERVISOR_UP, {"comment": "Closer fixed"},
          "/alarms", "Alarm {acked_alarm} resolved."),
    Route("alarms.panel", "GET", "/alarms/panel", GUARD_UP | WALL),
    Route("alarms.acknowledge_group", "POST", "/alarms/group/acknowledge", GUARD_UP,
          {"kind": "door.forced", "place": "main-entrance", "comment": "Checked on camera", "next": "/alarms"},
          "/alarms", "Alarm {open_alarm} acknowledged."),
    Route("doors.board", "GET", "/doors", GUARD_UP),
    Route("doors.unlock", "POST", "/doors/main-entrance/unlock", SUPERVISOR_UP,
          {"reason": "Delivery at the dock", "duration_s": "30"}, "/doors", NOT_CONNECTED),
    Route("doors.lock", "POST", "/doors/main-entrance/lock", SUPERVISOR_UP, {"reason": "Delivery done"}, "/doors",
          NOT_CONNECTED),
    Route("doors.lockdown", "POST", "/doors/lockdown", SUPERVISOR_UP, {"scope": "area:hall-a", "reason": "Intruder"},
          "/doors", NOT_CONNECTED),
    Route("doors.lift", "POST", "/doors/lockdown/lift", SUPERVISOR_UP, {"scope": "site", "reason": "All clear"},
          "/doors", NOT_CONNECTED),
    Route("plans.index", "GET", "/plans", GUARD_UP),
    Route("plans.show", "GET", "/plans/dc1", GUARD_UP),
    Route("plans.drawing", "GET", "/plans/dc1/drawing.svg", GUARD_UP | WALL),
    Route("muster.index", "GET", "/muster", GUARD_UP),
    Route("muster.current_list", "GET", "/muster/list", GUARD_UP),
    Route("people.index", "GET", "/people", GUARD_UP),
    Route("people.detail", "GET", "/people/{person}", GUARD_UP),
    Route("people.add", "POST", "/people", ADMIN, {"name": "Katherine Johnson", "company": "NASA", "levels": ["staff"]},
          r"/people/\d+", "Katherine Johnson added."),
    Route("people.edit", "POST", "/people/{person}", ADMIN, {"name": "Ada King", "levels": ["staff"]},
          "/people/{person}", "Saved."),
    Route("people.left", "POST", "/people/{person}/left", ADMIN, {"reason": "Contract ended"}, "/people/{person}",
          "Marked as left"),
    Route("people.add_credential", "POST", "/people/{person}/credentials", ADMIN,
          {"fmt": "wiegand26", "number": "12:2001"}, "/people/{person}", "Credential wiegand26 12:2001 issued."),
    Route("people.revoke", "POST", "/people/credentials/{credential}/revoke", ADMIN, {"reason": "Card lost"},
          "/people/{person}", "Credential {credential} revoked."),
    Route("people.validity", "POST", "/people/credentials/{credential}/validity", ADMIN,
          {"valid_until": "2030-01-01T00:00"}, "/people/{person}", "Validity of credential {credential} saved."),
    Route("people.enroll_face", "POST", "/people/{person}/faces", ADMIN,
          {"photo": Upload("obama.jpg", (FACES / "obama.jpg").read_bytes())}, "/people/{person}", "Face enrolled."),
    Route("people.remove_faces", "POST", "/people/{person}/faces/remove", ADMIN, {}, "/people/{person}",
          "has no enrolled faces"),  # the seeded Ada has none: the refusal proves the button was acted on
    Route("events.index", "GET", "/events", READERS),
    Route("events.detail", "GET", "/events/{event}", READERS),
    Route("events.find", "GET", "/events/find", READERS),
    Route("evidence.fetch", "GET", "/evidence/{evidence}", READERS),
    Route("auditing.status", "GET", "/audit", AUDITORS),
    Route("auditing.run_verify", "POST", "/audit/verify", AUDITORS),  # shows the report itself
    Route("auditing.download_export", "POST", "/audit/export", AUDITORS, {"month": datetime.now(UTC).strftime("%Y-%m")}),
    Route("users.index", "GET", "/users", ADMIN),
    Route("users.add", "POST", "/users", ADMIN, {"username": "night-guard", "role": "guard"}, "/users",
          "User night-guard added."),
    Route("users.toggle", "POST", "/users/{guard_user}/disable", ADMIN, {}, "/users", "User disabled."),
    Route("users.reset", "POST", "/users/{guard_user}/password", ADMIN, {}, "/users", "Password reset."),
    Route("users.role", "POST", "/users/{guard_user}/role", ADMIN, {"role": "supervisor"}, "/users", "Role changed."),
    Route("auth.login", "GET", "/login", EVERYONE),
    Route("auth.login", "POST", "/login", EVERYONE, {"username": "nobody", "password": "not a password"}),
    Route("auth.logout", "POST", "/logout", LOGGED_IN, {}, "/login", "Logged out."),
    Route("static", "GET", "/static/console.css", EVERYONE | WALL),
    # anonymous: the wall page says the screen is not connected (401), never a login form (see test_wall.py)
    Route("wall.show", "GET", "/wall", WALL),
    Route("wall.connect", "GET", "/wall/connect", EVERYONE | WALL),
    Route("wall.exchange", "POST", "/wall/connect", EVERYONE | WALL, {"token": "not-a-wall-link"}),
    Route("users.add_wall", "POST", "/users/walls", ADMIN, {"name": "Lobby wall"}, "/users",
          "Wall display added."),
    Route("users.revoke_wall", "POST", "/users/{wall_user}/revoke", ADMIN, {}, "/users", "Wall display revoked."),
    # access requests (tenant admins: tests/test_console_requests.py)
    Route("requests.index", "GET", "/requests", READERS),
    Route("requests.detail", "GET", "/requests/{request}", READERS),
    Route("requests.open_", "POST", "/requests", GUARD_UP,
          {"person": "1", "level": "noc-24x7", "starts_at": (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
           "ends_at": (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"), "ticket": "CHG-2"},
          r"/requests/\d+", "Access request opened."),
    Route("requests.approve", "POST", "/requests/{request}/approve", SUPERVISOR_UP, {"comment": "ok"},
          "/requests/{request}", "Access request {request} approved."),
    Route("requests.refuse", "POST", "/requests/{request}/refuse", SUPERVISOR_UP, {"comment": "no ticket"},
          "/requests/{request}", "Access request {request} refused."),
    Route("requests.endorse", "POST", "/requests/{request}/endorse", frozenset()),
    Route("requests.cancel", "POST", "/requests/{request}/cancel", GUARD_UP, {}, "/requests/{request}",
          "Access request {request} cancelled."),
    # visitors (web/visitors.py); a customer's admin: tests/test_visitors_console.py
    Route("visitors.index", "GET", "/visitors", GUARD_UP),
    Route("visitors.register", "POST", "/visitors", GUARD_UP,
          {"name": "Rosa Visitor", "levels": ["staff"], "starts_at": VISIT_FROM, "ends_at": VISIT_UNTIL},
          "/visitors", "Visit of Rosa Visitor registered."),
    Route("visitors.check_in", "POST", "/visitors/{visit}/check-in", GUARD_UP,
          {"id_document": "passport, last 4: 1234", "fmt": "wiegand26", "number": "77:1"}, "/visitors",
          "Visit {visit}: badge 77:1 issued"),
    Route("visitors.return_badge", "POST", "/visitors/{visit}/return", GUARD_UP, {}, "/visitors",
          "no badge is out"),  # Vera is expected: the refusal proves the button was acted on
    Route("visitors.cancel", "POST", "/visitors/{visit}/cancel", GUARD_UP, {"reason": "Meeting moved"}, "/visitors",
          "Visit {visit} cancelled."),
    Route("visitors.badge", "GET", "/visitors/{visit}/badge.pdf", GUARD_UP, {}, "/visitors", "check them in first"),
    Route("visitors.escort", "POST", "/visitors/escorts", ADMIN, {"person": "1", "may_escort": "y"}, "/visitors",
          "Person 1 may escort visitors."),
    # customer cages (web.tenant): a tenant admin's own view, and site staff's approvals
    Route("tenant.index", "GET", "/tenant", TENANT),
    Route("tenant.add_person", "POST", "/tenant/people", TENANT, {"name": "Tom Tenant", "levels": ["cage-7-acme"]},
          r"/tenant/people/\d+", "Tom Tenant added; site staff approve them"),
    Route("tenant.person", "GET", "/tenant/people/{tenant_person}", TENANT),
    Route("tenant.set_levels", "POST", "/tenant/people/{tenant_person}/levels", TENANT, {"levels": []},
          "/tenant/people/{tenant_person}", "Access levels saved."),
    Route("tenant.add_credential", "POST", "/tenant/people/{tenant_person}/credentials", TENANT,
          {"fmt": "wiegand26", "number": "12:2007", "valid_until": (datetime.now(UTC) + timedelta(days=20))
           .strftime("%Y-%m-%dT%H:%M")}, "/tenant/people/{tenant_person}", "Card 12:2007 issued."),
    Route("tenant.left", "POST", "/tenant/people/{tenant_person}/left", TENANT, {"reason": "Contract ended"},
          "/tenant/people/{tenant_person}", "Marked as gone"),
    Route("tenant.revoke", "POST", "/tenant/credentials/{tenant_credential}/revoke", TENANT, {"reason": "Card lost"},
          "/tenant/people/{tenant_person}", "Card {tenant_credential} revoked."),
    Route("tenant.validity", "POST", "/tenant/credentials/{tenant_credential}/validity", TENANT,
          {"valid_until": (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")},
          "/tenant/people/{tenant_person}", "Validity of card {tenant_credential} saved."),
    Route("tenant.cages", "GET", "/tenant/cages", TENANT),
    Route("tenant.events", "GET", "/tenant/events", TENANT),
    Route("tenant.event", "GET", "/tenant/events/{tenant_event}", TENANT),
    Route("tenant.approvals", "GET", "/approvals", SUPERVISOR_UP),
    Route("tenant.approve", "POST", "/approvals/{tenant_person}/approve", SUPERVISOR_UP, {}, "/approvals",
          "Person {tenant_person} approved"),
    Route("tenant.refuse", "POST", "/approvals/{tenant_person}/refuse", SUPERVISOR_UP,
          {"reason": "Not on the contract"}, "/approvals", "Person {tenant_person} refused."),
]
POSTS = [r for r in ROUTES if r.method == "POST"]


def test_every_route_is_in_the_matrix(app: Flask) -> None:
    served = {(rule.endpoint, method) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    listed = {(r.endpoint, r.method) for r in ROUTES}
    assert not served - listed, (f"add these routes to ROUTES in {__file__} with the roles allowed and a valid "
                                 f"form: {sorted(served - listed)}")
    assert not listed - served, f"ROUTES names routes the app does not have: {sorted(listed - served)}"
    adapter = app.url_map.bind("localhost")
    for r in ROUTES:
        endpoint, _ = adapter.match(r.path.format_map(defaultdict(lambda: "1", evidence="0" * 64)), method=r.method)
        assert endpoint == r.endpoint, f"{r}: {r.path} is {endpoint}"


@pytest.mark.parametrize("role", ("anonymous", *ROLES, "wall"))
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_who_may_do_what(route: Route, role: str, client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    client = client_as(role)
    ids = seed.ids()
    path = route.path.format(**ids)
    response = get(client, path) if route.method == "GET" else post(client, path, **route.form)
    assert_security_headers(response)
    if role not in route.allowed:
        if role == "tenant_admin" and route.endpoint == "live.feed":  # everyone's way in leads to their own view
            assert response.status_code == 302 and urlsplit(response.location).path == "/tenant", response.status
        elif role == "tenant_admin" and route.endpoint in SHARED_WITH_TENANTS:
            # their own customer's visits and requests only (tests/test_visitors_console.py, test_console_requests.py):
            # the seeded ones are the site's, so they do not exist for them, and nothing is made of the site's
            if "{request}" in route.path or "{visit}" in route.path:
                assert response.status_code == 404, response.status
            elif route.method == "GET":
                assert response.status_code == 200, response.status
            else:
                assert route.says.format(**ids) not in str(messages(client.get(response.location or path))), response.status
        elif role == "anonymous" and route.endpoint == "wall.show":
            assert response.status_code == 401, response.status
        elif role == "anonymous":
            assert response.status_code == 302 and urlsplit(response.location).path == "/login", response.status
        else:
            assert response.status_code == 403, response.status
    elif route.lands is None:
        assert response.status_code == 200, (response.status, messages(response))
    else:
        assert response.status_code == 302, (response.status, messages(response))
        assert re.fullmatch(route.lands.format(**ids), urlsplit(response.location).path), response.location
        flashed = messages(client.get(response.location))
        assert any(route.says.format(**ids) in msg for _, msg in flashed), flashed


# --- 2. CSRF -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", POSTS, ids=str)
def test_a_post_without_its_csrf_token_is_refused(route: Route, client_as: Callable[[str], FlaskClient],
                                                  seed: Seed, engine: Engine) -> None:
    admin = client_as("admin")  # allowed everywhere
    before = snapshot(engine)
    response = admin.post(route.path.format(**seed.ids()), data=encoded(route.form))
    assert response.status_code == 400
    assert "Form refused" in response.get_data(as_text=True)
    assert_security_headers(response)
    assert snapshot(engine) == before


def test_a_csrf_token_from_another_session_is_refused(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                      engine: Engine) -> None:
    stolen = csrf_token(client_as("guard"))
    admin = client_as("admin")
    before = snapshot(engine)
    response = admin.post(f"/people/{seed.person}/left", data={"csrf_token": stolen, "reason": "forged"})
    assert response.status_code == 400
    assert snapshot(engine) == before


# --- 3. hostile names are shown, never run -----------------------------------------------------------

NAME = "<script>alert(1)</script>"
COMPANY = '"><img src=x onerror=alert(1)>'


def assert_inert(page_text: str, hostile: str) -> None:
    assert hostile not in page_text
    assert hostile[hostile.index("<"):] not in page_text  # the markup itself, however it is quoted around


def assert_escaped(page_text: str, hostile: str) -> None:
    assert_inert(page_text, hostile)
    assert str(escape(hostile)) in page_text


def test_hostile_names_are_escaped(client_as: Callable[[str], FlaskClient], app: Flask, engine: Engine) -> None:
    admin = client_as("admin")
    assert texts(submit(admin, "/people", name=NAME, company=COMPANY, levels=["staff"]), "error") == ""
    with Session(engine) as s:
        hostile = s.scalars(select(Person).where(Person.name == NAME)).one()
        alarm = s.scalars(select(Alarm).where(Alarm.state == "open")).first()
    assert hostile.company == COMPANY
    # and into the event log: a login typed as the name, an alarm acknowledged with the company as comment
    login(app.test_client(), NAME, "anything at all")
    submit(admin, f"/alarms/{alarm.id}/acknowledge", comment=COMPANY)
    with Session(engine) as s:
        entries = list(s.scalars(select(AuditEntry.id).where(
            AuditEntry.kind.in_(("console.login_failed", "alarm.acknowledged")))))
    assert len(entries) == 2

    for path in ("/people", f"/people/{hostile.id}", "/events"):
        shown = page(admin, path)
        assert_escaped(shown, COMPANY)
        if path == "/events":  # a failed login by a name no account has is audited without that name
            assert_inert(shown, NAME)
        else:
            assert_escaped(shown, NAME)
    for path in ("/", "/alarms", *(f"/events/{e}" for e in entries)):
        shown = page(admin, path)
        assert_inert(shown, NAME)
        assert_inert(shown, COMPANY)


# --- 4. login and sessions ---------------------------------------------------------------------------

REFUSED = "Wrong user name or password."


def disable(engine: Engine, username: str) -> None:
    with Session(engine) as s, s.begin():
        user = s.scalars(select(ConsoleUser).where(ConsoleUser.username == username)).one()
        people.set_user_active(s, "cli:test", user.id, False)


@pytest.mark.parametrize(("user", "password", "disabled"), [
    ("guard", "not-the-password", False),
    ("nobody", "guard-password-1", False),
    ("guard", PASSWORDS["guard"], True),
], ids=["wrong password", "unknown user", "disabled user"])
def test_a_refused_login_says_so_and_is_audited(user: str, password: str, disabled: bool, app: Flask,
                                                engine: Engine) -> None:
    if disabled:
        disable(engine, user)
    client = app.test_client()
    response = login(client, user, password)
    assert response.status_code == 200
    assert ("error", REFUSED) in messages(response)
    assert client.get("/").status_code == 302  # not logged in
    failed = audited(engine, "console.login_failed")
    assert failed.subject == {"user": "(unknown user)" if user == "nobody" else user} and failed.source == "console"
    assert failed.detail == {"address": "127.0.0.1"}
    assert console_log(engine, "console.login") == []


@pytest.mark.parametrize(("role", "home"), [("guard", "/"), ("auditor", "/events")])
def test_a_login_is_audited_and_lands_on_the_roles_home(role: str, home: str, app: Flask, engine: Engine) -> None:
    client = app.test_client()
    response = login(client, role)
    assert response.status_code == 302 and response.location == home
    assert by_console_user(audited(engine, "console.login"), role)
    assert client.get(home).status_code == 200
    with Session(engine) as s:
        assert s.scalars(select(ConsoleUser).where(ConsoleUser.username == role)).one().last_login_at is not None
    assert post(client, "/logout").status_code == 302
    assert by_console_user(audited(engine, "console.logout"), role)
    assert client.get(home).status_code == 302


@pytest.mark.parametrize(("how", "secure"), [("default", False), ("override", True), ("tls", True)])
def test_session_cookie_flags(how: str, secure: bool, make_app: Callable[..., Flask], site: SiteConfig,
                              seed: Seed) -> None:
    if how == "tls":
        site = site.model_copy(update={"console": site.console.model_copy(
            update={"tls_cert": "console.pem", "tls_key": "console.key"})})
    app = make_app(site, **({"SESSION_COOKIE_SECURE": True} if how == "override" else {}))
    response = login(app.test_client(), "guard")
    assert response.status_code == 302
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("bb_session="))
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in flags
    assert flags.get("samesite") == "SameSite=Strict"
    assert ("secure" in flags) is secure, cookie
    if how == "tls":
        assert response.headers.get("Strict-Transport-Security")


def test_an_idle_session_expires(make_app: Callable[..., Flask], site: SiteConfig, seed: Seed) -> None:
    app = make_app(site, PERMANENT_SESSION_LIFETIME=timedelta(seconds=1))
    client = app.test_client()
    assert login(client, "guard").status_code == 302
    assert client.get("/").status_code == 200
    signed = int(time.time())  # not before the cookie's own timestamp, which counts whole seconds
    wait_until(lambda: int(time.time()) > signed + 1, 5, "the session idle for longer than its lifetime")
    response = client.get("/alarms")
    assert response.status_code == 302 and urlsplit(response.location).path == "/login"


@pytest.mark.parametrize("target", ["//evil.example", "//evil.example/alarms", "/\\evil.example",
                                    "https://evil.example/", "evil.example"])
def test_login_does_not_redirect_off_site(target: str, app: Flask) -> None:
    response = login(app.test_client(), "guard", next=target)
    assert response.status_code == 302
    assert response.location == "/", response.location


def test_login_returns_to_the_page_asked_for(app: Flask) -> None:
    client = app.test_client()
    asked = client.get("/alarms?x=1")
    assert urlsplit(asked.location).path == "/login"
    response = client.post(asked.location, data={"csrf_token": csrf_token(client), "username": "guard",
                                                  "password": PASSWORDS["guard"]})
    assert response.location == "/alarms?x=1"


# --- 5. security headers beyond the matrix -----------------------------------------------------------


def test_error_pages_carry_the_security_headers(client_as: Callable[[str], FlaskClient]) -> None:
    guard = client_as("guard")
    for response, status in ((guard.get("/no-such-page"), 404), (guard.get("/people/999999"), 404),
                             (guard.post("/alarms/1/acknowledge", data={"comment": "x"}), 400),
                             (guard.get("/users"), 403)):
        assert response.status_code == status
        assert_security_headers(response)


# --- 6. actions take effect and are audited with the user --------------------------------------------


def alarm(engine: Engine, alarm_id: int) -> Alarm:
    with Session(engine) as s:
        found = s.get(Alarm, alarm_id)
        assert found is not None
        return found


def test_alarm_acknowledge_assign_resolve(client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine,
                                          keys: KeyStore) -> None:
    guard, supervisor = client_as("guard"), client_as("supervisor")
    a = seed.open_alarm

    assert "Comment: Say what you saw or did." in texts(submit(guard, f"/alarms/{a}/acknowledge", comment=""), "error")
    assert alarm(engine, a).state == "open" and console_log(engine, "alarm.acknowledged") == []
    resolving_open = submit(supervisor, f"/alarms/{a}/resolve", comment="Nothing there")
    assert f"Alarm {a} is open: it cannot be resolved." in texts(resolving_open, "error")
    assert alarm(engine, a).state == "open" and console_log(engine, "alarm.resolved") == []

    submit(guard, f"/alarms/{a}/acknowledge", comment="Courier pushed the door; checked on camera")
    row = alarm(engine, a)
    assert (row.state, row.acknowledged_by, row.comment) == ("acknowledged", "guard",
                                                             "Courier pushed the door; checked on camera")
    assert row.acknowledged_at is not None
    entry = audited(engine, "alarm.acknowledged")
    assert by_console_user(entry, "guard") and entry.door == "main-entrance"
    assert entry.detail == {"alarm_kind": "door.forced", "comment": "Courier pushed the door; checked on camera"}
    assert "Acknowledge" not in page(guard, "/alarms").split(f'id="alarm-{a}"')[1].split("</tr>")[0]

    assert "Choose someone" in texts(submit(supervisor, f"/alarms/{a}/assign", user="auditor"), "error")
    submit(supervisor, f"/alarms/{a}/assign", user="guard")
    assert alarm(engine, a).assigned_to == "guard"
    entry = audited(engine, "alarm.assigned")
    assert by_console_user(entry, "supervisor") and entry.detail["assigned_to"] == "guard"

    submit(supervisor, f"/alarms/{a}/resolve", comment="Door closer replaced")
    row = alarm(engine, a)
    assert (row.state, row.resolution, row.resolved_by) == ("resolved", "Door closer replaced", "supervisor")
    assert row.comment == "Courier pushed the door; checked on camera" and row.resolved_at is not None
    assert by_console_user(audited(engine, "alarm.resolved"), "supervisor")
    again = submit(guard, f"/alarms/{a}/acknowledge", comment="again")
    assert f"Alarm {a} is resolved: it cannot be acknowledged." in texts(again, "error")
    assert len(console_log(engine, "alarm.acknowledged")) == 1
    assert_log_verifies(engine, keys)


def person(engine: Engine, person_id: int) -> Person:
    with Session(engine) as s:
        found = s.scalars(select(Person).where(Person.id == person_id).options(
            selectinload(Person.levels), selectinload(Person.credentials))).one()
        return found


def test_people_and_credentials(client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine,
                                keys: KeyStore) -> None:
    admin = client_as("admin")
    # add
    submit(admin, "/people", name="Katherine Johnson", company="NASA", employee_no="E-7", levels=["staff"],
           lockdown_exempt="y")
    with Session(engine) as s:
        kj = s.scalars(select(Person).where(Person.name == "Katherine Johnson")).one().id
    added = person(engine, kj)
    assert (added.company, added.employee_no, added.lockdown_exempt) == ("NASA", "E-7", True)
    assert [lvl.key for lvl in added.levels] == ["staff"]
    entry = audited(engine, "admin.person_added")
    assert by_console_user(entry, "admin") and entry.subject == {"person": kj}
    taken = submit(admin, "/people", name="Someone Else", employee_no="E-7")
    assert "employee number 'E-7' is already used" in texts(taken, "error")
    assert len(console_log(engine, "admin.person_added")) == 1

    # edit levels
    submit(admin, f"/people/{kj}", name="Katherine Johnson", company="NASA", levels=["staff", "noc-24x7"])
    assert sorted(lvl.key for lvl in person(engine, kj).levels) == ["noc-24x7", "staff"]
    entry = audited(engine, "admin.person_changed")
    assert by_console_user(entry, "admin")
    assert entry.detail["levels"] == ["noc-24x7", "staff"] and entry.detail["levels_before"] == ["staff"]

    # issue: a bad card number is refused and named, then a good one with a PIN
    before = snapshot(engine)
    refused = texts(submit(admin, f"/people/{kj}/credentials", fmt="wiegand26", number="12:99999"), "error")
    assert "card number 99999 is over 65535" in refused
    assert snapshot(engine) == before
    issued = submit(admin, f"/people/{kj}/credentials", fmt="wiegand26", number="12:3456", pin=PIN,
                    valid_until="2031-06-30T18:00")
    assert PIN not in str(issued)
    [card] = person(engine, kj).credentials
    assert (card.format, card.number, card.status) == ("wiegand26", "12:3456", "active")
    assert card.pin_hash and PIN not in card.pin_hash
    assert card.valid_until == datetime(2031, 6, 30, 18, 0, tzinfo=UTC)
    entry = audited(engine, "admin.credential_added")
    assert by_console_user(entry, "admin") and entry.subject == {"person": kj, "credential": card.id}
    assert entry.detail["has_pin"] is True
    submit(admin, f"/people/{kj}/credentials", fmt="wiegand26", number="12:3457")

    # validity
    submit(admin, f"/people/credentials/{card.id}/validity", valid_from="2026-01-01T08:00",
           valid_until="2027-01-01T08:00")
    with Session(engine) as s:
        row = s.get(Credential, card.id)
        assert (row.valid_from, row.valid_until) == (datetime(2026, 1, 1, 8, tzinfo=UTC),
                                                     datetime(2027, 1, 1, 8, tzinfo=UTC))
    entry = audited(engine, "admin.credential_validity")
    assert by_console_user(entry, "admin") and entry.detail["valid_until"].startswith("2027-01-01T08:00")
    backwards = submit(admin, f"/people/credentials/{card.id}/validity", valid_from="2027-01-01T08:00",
                       valid_until="2026-01-01T08:00")
    assert "valid-until must be after valid-from" in texts(backwards, "error")

    # revoke
    assert "Reason" in texts(submit(admin, f"/people/credentials/{card.id}/revoke", reason=""), "error")
    submit(admin, f"/people/credentials/{card.id}/revoke", reason="Card lost on the train")
    with Session(engine) as s:
        row = s.get(Credential, card.id)
        assert row.status == "revoked" and row.revoked_at is not None
    entry = audited(engine, "admin.credential_revoked")
    assert by_console_user(entry, "admin") and entry.detail["reason"] == "Card lost on the train"
    assert entry.detail["state"][f"credential/{card.id}"]["status"] == "revoked"

    # left: every credential still held is revoked
    submit(admin, f"/people/{kj}/left", reason="Retired")
    gone = person(engine, kj)
    assert gone.status == "left" and gone.left_at is not None
    assert {c.status for c in gone.credentials} == {"revoked"}
    entry = audited(engine, "admin.person_left")
    assert by_console_user(entry, "admin") and len(entry.detail["credentials_revoked"]) == 1
    assert "has left" in texts(submit(admin, f"/people/{kj}/credentials", fmt="wiegand26", number="12:3458"),
                                "error")

    assert all(PIN not in e.raw for e in console_log(engine))
    with Session(engine) as s:
        assert not any(PIN in row for row in s.scalars(select(AuditEntry.subject + AuditEntry.detail)))
    assert_log_verifies(engine, keys)


SHOWN_ONCE = re.compile(r"shown once: (\S+)")


def test_console_users(client_as: Callable[[str], FlaskClient], app: Flask, seed: Seed, engine: Engine,
                       keys: KeyStore) -> None:
    admin = client_as("admin")
    # add: the generated password is shown once, then works
    flashed = submit(admin, "/users", username="night-guard", role="guard")
    secret = texts(flashed, "secret")
    password = SHOWN_ONCE.search(secret).group(1)  # type: ignore[union-attr]
    assert "night-guard" in secret and len(password) >= people.PASSWORD_MIN
    assert password not in page(admin, "/users")
    entry = audited(engine, "admin.user_added")
    assert by_console_user(entry, "admin") and entry.subject == {"user": "night-guard"}
    assert password not in entry.raw
    assert "already exists" in texts(submit(admin, "/users", username="night-guard", role="guard"), "error")
    newcomer = app.test_client()
    assert login(newcomer, "night-guard", password).location == "/"
    assert newcomer.get("/alarms").status_code == 200

    # disable: not yourself; someone else is logged out at once and cannot log back in
    assert "You cannot disable yourself." in texts(submit(admin, f"/users/{seed.users['admin']}/disable"), "error")
    with Session(engine) as s:
        night = s.scalars(select(ConsoleUser).where(ConsoleUser.username == "night-guard")).one()
        assert s.get(ConsoleUser, seed.users["admin"]).active
    assert console_log(engine, "admin.user_disabled") == []
    submit(admin, f"/users/{night.id}/disable")
    with Session(engine) as s:
        assert not s.get(ConsoleUser, night.id).active
    assert by_console_user(audited(engine, "admin.user_disabled"), "admin")
    assert newcomer.get("/alarms").status_code == 302
    assert ("error", REFUSED) in messages(login(app.test_client(), "night-guard", password))
    submit(admin, f"/users/{night.id}/enable")
    assert by_console_user(audited(engine, "admin.user_enabled"), "admin")

    # reset: the old password stops working, the new one (shown once) works
    secret = texts(submit(admin, f"/users/{seed.users['guard']}/password"), "secret")
    fresh = SHOWN_ONCE.search(secret).group(1)  # type: ignore[union-attr]
    assert secret.startswith("New password for guard")
    assert by_console_user(audited(engine, "admin.password_reset"), "admin")
    assert login(app.test_client(), "guard").status_code == 200  # refused
    assert login(app.test_client(), "guard", fresh).status_code == 302
    assert all(fresh not in e.raw and password not in e.raw for e in console_log(engine))
    assert_log_verifies(engine, keys)


# --- 7. door commands over a real broker -------------------------------------------------------------


class CommandListener:
    """A plain MQTT client on the console's command topic, on the bridge's account (the one that reads it),
    subscribed before anything is sent."""

    def __init__(self, broker: Broker, topic: str = "badge-bridge/v1/console/commands") -> None:
        self.received: queue.Queue[bytes] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(*broker.login("bridge-1"))
        self.client.on_message = lambda _c, _u, msg: self.received.put(msg.payload)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(10), "no SUBACK from the broker"

    def next(self) -> ConsoleCommand:
        return ConsoleCommand.model_validate_json(self.received.get(timeout=10))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def linked_app(make_app: Callable[..., Flask], tmp_path: Path, db_url: str, broker: Broker, engine: Engine,
               keys: KeyStore) -> Flask:
    config = load_config(write_site(tmp_path, db_url, broker_port=broker.port))
    seed_site(engine, config, keys)
    app = make_app(config, mqtt_link=True)
    link = current_services(app).link
    assert link is not None and link.connected.wait(10), "the console did not connect to the broker"
    return app


def test_door_commands_reach_the_broker(linked_app: Flask, broker: Broker, keys: KeyStore) -> None:
    supervisor = linked_app.test_client()
    assert login(supervisor, "supervisor").status_code == 302
    assert "No connection to the bridge" not in page(supervisor, "/doors")
    listener = CommandListener(broker)
    try:
        refused = submit(supervisor, "/doors/main-entrance/unlock", reason="", duration_s="30")
        assert "Reason: A remote unlock needs a reason." in texts(refused, "error")
        sent = [
            ("/doors/main-entrance/lock", {"reason": "Night mode"}, {"type": "lock", "door": "main-entrance"}),
            ("/doors/main-entrance/unlock", {"reason": "Delivery at the dock", "duration_s": "30"},
             {"type": "unlock", "door": "main-entrance", "duration_s": 30}),
            ("/doors/hall-a/unlock", {"reason": "Fire brigade"},
             {"type": "unlock", "door": "hall-a", "duration_s": None}),
            ("/doors/lockdown", {"scope": "area:hall-a", "reason": "Intruder in hall A"},
             {"type": "lockdown", "area": "hall-a", "door": None}),
            ("/doors/lockdown/lift", {"scope": "site", "reason": "All clear"},
             {"type": "lift_lockdown", "area": None, "door": None}),
        ]
        for path, form, expected in sent:
            assert texts(submit(supervisor, path, **form), "error") == ""
            # the refused unlock above published nothing: the first command on the topic is the lock
            cmd = listener.next()
            assert cmd.user == "supervisor" and cmd.reason == form["reason"]
            assert {k: getattr(cmd, k) for k in expected} == expected
            # signed with the console key, naming the session (web.auth.current_session_ref)
            assert console_signing.verify(cmd, keys.console_command_public()) and cmd.session is not None  # type: ignore[arg-type]
        assert listener.received.empty()
    finally:
        listener.close()


def test_door_commands_without_a_broker_say_so(client_as: Callable[[str], FlaskClient]) -> None:
    supervisor = client_as("supervisor")
    assert "No connection to the bridge" in page(supervisor, "/doors")
    flashed = submit(supervisor, "/doors/main-entrance/unlock", reason="Delivery at the dock")
    assert NOT_CONNECTED in texts(flashed, "error") and texts(flashed, "info") == ""


# --- 8. verification from the console ----------------------------------------------------------------


def test_audit_verify_shows_tampering(client_as: Callable[[str], FlaskClient], engine: Engine) -> None:
    auditor = client_as("auditor")
    shown = page(auditor, "/audit")
    assert CONSOLE_CHAIN in shown and "bridge-1" in shown
    report = post(auditor, "/audit/verify")
    assert report.status_code == 200
    assert "Verified" in report.get_data(as_text=True) and "TAMPERED" not in report.get_data(as_text=True)
    assert audited(engine, "audit.verified").detail["ok"] is True

    with engine.begin() as conn:  # someone with database access, behind the application's back
        drop_append_only_triggers(conn)
        conn.execute(text("UPDATE audit_entry SET detail = :d WHERE chain_id = :c AND seq = 1"),
                     {"d": '{"address":"10.6.6.6"}', "c": CONSOLE_CHAIN})
    report = post(auditor, "/audit/verify").get_data(as_text=True)
    assert "TAMPERED" in report and "Verified" not in report
    assert f"chain {CONSOLE_CHAIN} entry 1: modified" in html.unescape(report)


# --- camera evidence ---------------------------------------------------------------------------------


def test_evidence_is_shown_decrypted_and_every_viewing_audited(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                                engine: Engine, site: SiteConfig, keys: KeyStore) -> None:
    guard = client_as("guard")
    with Session(engine) as s:
        saved = s.scalar(select(AuditEntry.id).where(AuditEntry.kind == "evidence.saved"))
    page = get(guard, f"/events/{saved}")
    assert page.status_code == 200
    assert f'src="/evidence/{seed.evidence}"' in page.get_data(as_text=True)
    picture = get(guard, f"/evidence/{seed.evidence}")
    assert picture.status_code == 200 and picture.mimetype == "image/jpeg" and picture.data == JPEG
    with Session(engine) as s:
        viewed = s.scalars(select(AuditEntry).where(AuditEntry.kind == "console.evidence_viewed")).all()
    assert [json.loads(v.detail)["sha256"] for v in viewed] == [seed.evidence]
    assert json.loads(viewed[0].subject)["user"] == "guard"
    assert get(guard, "/evidence/" + "0" * 64).status_code == 404
    assert get(guard, "/evidence/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_tampered_evidence_is_refused_with_the_reason(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                      site: SiteConfig) -> None:
    files = list(site.path(site.evidence.dir).rglob(f"{seed.evidence}*"))
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    data[-5] ^= 0x01
    files[0].write_bytes(bytes(data))
    response = get(client_as("auditor"), f"/evidence/{seed.evidence}")
    assert response.status_code == 422
    assert "integrity" in response.get_data(as_text=True)


# --- 7. faces ----------------------------------------------------------------------------------------


def faces_of(engine: Engine, person_id: int) -> list[FaceTemplate]:
    with Session(engine) as s:
        return list(s.scalars(select(FaceTemplate).where(FaceTemplate.person_id == person_id)))


@pytest.mark.parametrize("keep_photos", [False, True], ids=["photos not kept", "photos kept"])
def test_faces_are_enrolled_and_removed_from_the_person_page(
    keep_photos: bool, make_app: Callable[..., Flask], site: SiteConfig, seed: Seed, engine: Engine, keys: KeyStore
) -> None:
    site = site.model_copy(update={"faces": site.faces.model_copy(update={"keep_photos": keep_photos})})
    app = make_app(site)
    admin, guard = app.test_client(), app.test_client()
    assert login(admin, "admin").status_code == 302 and login(guard, "guard").status_code == 302
    ada = f"/people/{seed.person}"
    obama = (FACES / "obama.jpg").read_bytes()

    refused = submit(admin, f"{ada}/faces", photo=Upload("coffee.png", (FACES / "no_face_coffee.png").read_bytes()))
    assert "photo refused (no_face)" in texts(refused, "error")
    assert "A JPEG or PNG photo." in texts(submit(admin, f"{ada}/faces", photo=Upload("obama.gif", obama)), "error")
    assert "Choose a photo." in texts(submit(admin, f"{ada}/faces"), "error")
    assert faces_of(engine, seed.person) == [] and console_log(engine, "admin.face_enrolled") == []

    assert texts(submit(admin, f"{ada}/faces", photo=Upload("obama.jpg", obama)), "info") == "Face enrolled."
    (template,) = faces_of(engine, seed.person)
    assert template.created_by == "console:admin"
    entry = audited(engine, "admin.face_enrolled")
    assert by_console_user(entry, "admin") and entry.subject == {"person": seed.person}
    assert entry.detail == {"template_id": template.id, "photo_kept": keep_photos,
                            "state": {f"face/{template.id}": access_tables.face(template)[1]},
                            "photo_sha256": hashlib.sha256(obama).hexdigest() if keep_photos else None}
    evidence = EvidenceStore(site.path(site.evidence.dir), keys.evidence_key())
    assert evidence.exists(hashlib.sha256(obama).hexdigest()) is keep_photos

    # the count for everyone who sees the page; the upload and the remove button for admins only
    for client, is_admin in ((admin, True), (guard, False)):
        shown = page(client, ada)
        assert "Faces enrolled: 1" in shown
        assert (f'action="{ada}/faces"' in shown) is is_admin and (f'action="{ada}/faces/remove"' in shown) is is_admin
        assert template.sealed.hex() not in shown
    assert post(guard, f"{ada}/faces/remove").status_code == 403

    assert texts(submit(admin, f"{ada}/faces/remove"), "info") == "Faces removed."
    assert faces_of(engine, seed.person) == []
    assert not evidence.exists(hashlib.sha256(obama).hexdigest())
    entry = audited(engine, "admin.face_removed")
    assert by_console_user(entry, "admin") and entry.detail == {"templates_removed": [template.id], "count": 1,
                                                               "state": {f"face/{template.id}": None}}
    assert "Faces enrolled: 0" in page(admin, ada)
    assert_log_verifies(engine, keys)


def test_leaving_removes_the_faces(client_as: Callable[[str], FlaskClient], seed: Seed, engine: Engine) -> None:
    admin = client_as("admin")
    ada = f"/people/{seed.person}"
    submit(admin, f"{ada}/faces", photo=Upload("obama.jpg", (FACES / "obama.jpg").read_bytes()))
    (template,) = faces_of(engine, seed.person)
    assert "their faces removed" in texts(submit(admin, f"{ada}/left", reason="Retired"), "info")
    assert faces_of(engine, seed.person) == []
    assert audited(engine, "admin.person_left").detail["face_templates_removed"] == [template.id]
    assert f'action="{ada}/faces"' not in page(admin, ada)  # no enrolling for someone who left
