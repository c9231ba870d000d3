"""The people page (issue 18, item 6): a card that does not open doors must not look like one that does.
Expired, suspended, lost, revoked and not-yet-valid credentials read differently from active ones in words
(not colour alone), with the reason and who gave it, from the audit log; the employee number is shown.
Hostile reasons and names stay text."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import SiteConfig
from badge_bridge.keys import KeyStore
from badge_bridge.models import Credential, Person
from tests import test_console_routes as console
from tests.test_console_routes import Seed, assert_escaped, page, submit, texts

app, client_as, make_app, seed = console.app, console.client_as, console.make_app, console.seed
cheap_password_hashes = console.cheap_password_hashes

REASON = '<img src=x onerror=alert("reason")>'


def states(shown: str) -> dict[str, tuple[str, str]]:
    """Card number -> (state class, state text) as the people list shows each credential."""
    return {number: (css, text) for css, number, text in re.findall(
        r'<span class="card-state (\w+)"[^>]*>\w+ (\S+) <b>([^<]+)</b></span>', shown)}


def test_each_kind_of_dead_card_reads_differently(client_as: Callable[[str], FlaskClient], seed: Seed,
                                                  engine: Engine, site: SiteConfig, keys: KeyStore) -> None:
    admin = client_as("admin")
    now = datetime.now(UTC)
    submit(admin, "/people", name="Katherine Johnson", employee_no="E-42", company="NASA", levels=["staff"])
    with Session(engine) as s:
        kj = s.scalar(select(func.max(Person.id)))
    cards = {"12:2001": "active", "12:2002": "expired", "12:2003": "pending", "12:2004": "suspended",
             "12:2005": "lost", "12:2006": "revoked"}
    for number in cards:
        assert texts(submit(admin, f"/people/{kj}/credentials", fmt="wiegand26", number=number), "error") == ""
    with Session(engine) as s:
        ids = {number: cid for number, cid in s.execute(
            select(Credential.number, Credential.id).where(Credential.person_id == kj))}
    writer = AuditWriter(engine, f"{site.site.instance}.cli", keys.signer())  # the CLI's way, on its own chain
    writer.start()
    try:
        for number, status in (("12:2004", "suspended"), ("12:2005", "lost")):
            commit_change(writer, "cli:ops", lambda s, n=number, st=status: people.set_credential_status(
                s, "cli:ops", ids[n], st, f"{st} by {REASON}"))
        commit_change(writer, "cli:ops", lambda s: people.set_credential_validity(
            s, "cli:ops", ids["12:2002"], now - timedelta(days=30), now - timedelta(days=1)))
        commit_change(writer, "cli:ops", lambda s: people.set_credential_validity(
            s, "cli:ops", ids["12:2003"], now + timedelta(days=1), None))
    finally:
        writer.stop()
    submit(admin, f"/people/credentials/{ids['12:2006']}/revoke", reason="Card stolen from a car")

    listed = states(page(admin, "/people"))
    assert {n: listed[n] for n in cards} == {
        "12:2001": ("active", "✓ active"), "12:2002": ("expired", "✗ EXPIRED"),
        "12:2003": ("pending", "… NOT YET VALID"), "12:2004": ("suspended", "✗ SUSPENDED"),
        "12:2005": ("lost", "✗ LOST"), "12:2006": ("revoked", "✗ REVOKED")}
    assert ">E-42<" in page(admin, "/people")

    shown = page(client_as("guard"), f"/people/{kj}")  # a guard sees the same, without the forms
    assert "employee no. E-42" in shown
    assert '<small class="reason">Card stolen from a car (by admin)</small>' in shown
    assert_escaped(shown, f"suspended by {REASON} (by cli:ops)")
    assert_escaped(shown, f"lost by {REASON} (by cli:ops)")
    assert "valid until (Europe/Berlin)" in shown
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T", shown)


def test_leaving_gives_every_card_the_reason(client_as: Callable[[str], FlaskClient], seed: Seed) -> None:
    admin = client_as("admin")
    submit(admin, f"/people/{seed.person}/left", reason="Retired")
    shown = page(admin, f"/people/{seed.person}")
    assert "✗ REVOKED" in shown and "left the company: Retired (by admin)" in shown
    assert "<td>LEFT</td>" in page(admin, "/people")
