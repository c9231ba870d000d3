"""The visitors page for a customer's admin (tenant_admin): their own customer's visits only; another
customer's visit does not exist for them (404, as a missing one); a forged form cannot register for another
customer, nor give a level outside theirs; the desk's actions are not theirs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.config import load_config
from badge_bridge.keys import KeyStore
from badge_bridge.models import Visit
from badge_bridge.visitors import host_of
from tests import test_console_routes as console
from tests.conftest import write_site
from tests.test_console_routes import VISIT_FROM, VISIT_UNTIL, get, login, messages, post, seed_site, texts
from tests.visit_site import TENANTS, Desk, tenant_id

PASSWORD = "tenant-admin-password-1"
make_app, cheap_password_hashes = console.make_app, console.cheap_password_hashes


def test_a_customers_admin_sees_and_registers_their_own_visits_only(
        tmp_path: Path, db_url: str, engine: Engine, keys: KeyStore, make_app: Callable[..., Flask]) -> None:
    config = load_config(write_site(tmp_path, db_url, TENANTS))
    seed_site(engine, config, keys)
    a, b = tenant_id(engine, "visit-co-a"), tenant_id(engine, "visit-co-b")
    desk = Desk(engine, config, keys)
    try:
        desk.change("cli:test", people.add_user, "admin-a", "tenant_admin", PASSWORD, tenant_id=a)
        theirs = desk.register(name="Bea of B", tenant_id=b)
        site_visit = desk.register(name="Sid of the site")
    finally:
        desk.close()
    client = make_app(config).test_client()
    assert login(client, "admin-a", PASSWORD).status_code == 302

    # forged: another customer's id in the form, a level not theirs
    flashed = messages(client.get(post(client, "/visitors", name="Bob", levels=["staff"], tenant=str(b),
                                       starts_at=VISIT_FROM, ends_at=VISIT_UNTIL).location))
    assert "Hosted by: Not a valid choice." in texts(flashed, "error")
    flashed = messages(client.get(post(client, "/visitors", name="Ann of A", levels=["staff"],
                                       starts_at=VISIT_FROM, ends_at=VISIT_UNTIL).location))
    assert "Visit of Ann of A registered." in texts(flashed, "info")
    flashed = messages(client.get(post(client, "/visitors", name="Nils", levels=["noc-24x7"], starts_at=VISIT_FROM,
                                       ends_at=VISIT_UNTIL).location))
    assert "is not a valid choice" in texts(flashed, "error")
    with Session(engine) as session:
        ann = session.scalars(select(Visit).where(Visit.host == host_of("console:admin-a"))).one()
    assert ann.tenant_id == a  # their own customer, whatever the form said

    page = get(client, "/visitors").get_data(as_text=True)
    assert "Ann of A" in page and "Bea of B" not in page and "Sid of the site" not in page
    assert "Check in" not in page and "Escorts" not in page  # the desk's and the site admin's, not theirs
    for other in (theirs, site_visit, 999_999):
        assert post(client, f"/visitors/{other}/cancel", reason="not ours").status_code == 404
    for desk_only in (f"/visitors/{ann.id}/check-in", f"/visitors/{ann.id}/return"):
        assert post(client, desk_only, id_document="passport, last 4: 1234", number="77:1").status_code == 403
    assert get(client, f"/visitors/{ann.id}/badge.pdf").status_code == 403
    assert post(client, "/visitors/escorts", person="1", may_escort="y").status_code == 403
    response = post(client, f"/visitors/{ann.id}/cancel", reason="meeting moved")
    assert "Visit" in texts(messages(client.get(response.location)), "info")
    with Session(engine) as session:
        assert session.get(Visit, ann.id).state == "cancelled"  # type: ignore[union-attr]
        assert session.get(Visit, theirs).state == "expected"  # type: ignore[union-attr]

