"""Visits (badge_bridge.visitors): what a host, the desk or a customer's admin may not do first, then the visit
from registration to the badge's return, every change audited with the rows' state (audit verify agrees)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import people, tenants, visitors
from badge_bridge.audit import state_check
from badge_bridge.event_kinds import EventKind
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, Credential, Person, Visit
from badge_bridge.people import AdminError
from tests.conftest import write_site
from tests.visit_site import TENANTS, Desk, synced, tenant_id, window


@pytest.fixture
def desk(tmp_path: Path, db_url: str, engine: Engine, keys: KeyStore) -> Iterator[Desk]:
    config = synced(engine, write_site(tmp_path, db_url, TENANTS), keys)
    d = Desk(engine, config, keys)
    yield d
    d.close()


def tenant_admin(desk: Desk, username: str, tenant: int) -> str:
    desk.change("cli:test", people.add_user, username, "tenant_admin", "tenant-admin-password", tenant_id=tenant)
    return f"console:{username}"


def visit(engine: Engine, visit_id: int) -> Visit:
    with Session(engine) as session:
        found = session.get(Visit, visit_id)
        assert found is not None
        return found


# --- refused --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"name": "  "}, "needs a name"),
    ({"levels": []}, "at least one access level"),
    ({"levels": ["noc-24x7"]}, "may not be given level noc-24x7"),  # outside [visitors] levels
    ({"levels": ["nope"]}, "may not be given level nope"),
    (window(minutes=13 * 60), "at most 12 hours"),
    (window(minutes=30, start=-60), "already ended"),
    ({"starts_at": datetime(2030, 1, 1), "ends_at": datetime(2030, 1, 1, 2)}, "time zone"),
    ({"starts_at": window()["ends_at"], "ends_at": window()["starts_at"]}, "must end after it starts"),
    ({"tenant_id": 999}, "no customer with id 999"),
])
def test_a_registration_outside_the_rules_is_refused(desk: Desk, fields: dict, message: str) -> None:
    with pytest.raises(AdminError, match=message):
        desk.register(**fields)
    with Session(desk.engine) as session:
        assert session.scalars(select(Visit)).all() == []
        assert session.scalars(select(Person).where(Person.kind == "visitor")).all() == []


def test_a_customers_admin_registers_for_their_own_customer_only(desk: Desk) -> None:
    a, b = tenant_id(desk.engine, "visit-co-a"), tenant_id(desk.engine, "visit-co-b")
    admin_a = tenant_admin(desk, "admin-a", a)
    with pytest.raises(AdminError, match="their own customer only"):
        desk.register(admin_a, tenant_id=b)
    with pytest.raises(AdminError, match="their own customer only"):
        desk.register(admin_a)  # a site visit, without a customer
    with pytest.raises(AdminError, match="may not be given level noc-24x7"):
        desk.register("console:host", tenant_id=b, levels=["noc-24x7"])  # B's level, but not a visitor level
    mine = desk.register(admin_a, tenant_id=a)
    theirs = desk.register("console:host", tenant_id=b)
    assert visit(desk.engine, mine).host == "admin-a"
    # another customer's visit does not exist for them: the same words as a missing one
    for vid in (theirs, 9999):
        with pytest.raises(AdminError, match=f"no visit with id {vid}"):
            desk.change(admin_a, visitors.cancel, vid, "not ours")
    desk.change(admin_a, visitors.cancel, mine, "meeting moved")
    assert visit(desk.engine, mine).state == "cancelled"


@pytest.mark.parametrize("document", [
    "passport 123456789",  # the whole number
    "ID 12345",
    "x",
    "passport, last 4: 1234 " + "x" * 60,
    "passport\u202elast 4",  # a bidi override
    "<script>",
    "passport;\nDROP",
])
def test_the_desk_notes_only_the_kind_of_id_and_its_last_digits(desk: Desk, document: str) -> None:
    vid = desk.register()
    with pytest.raises(AdminError, match="ID document"):
        desk.check_in(vid, "77:1", id_document=document)
    assert visit(desk.engine, vid).state == "expected"
    with Session(desk.engine) as session:
        assert session.scalars(select(Credential)).all() == []


def test_check_in_return_and_cancel_follow_the_visits_states(desk: Desk) -> None:
    vid = desk.register()
    with pytest.raises(AdminError, match="no badge is out"):
        desk.change("console:desk", visitors.return_badge, vid, datetime.now(UTC))
    desk.check_in(vid, "77:1")
    with pytest.raises(AdminError, match="only an expected visitor checks in"):
        desk.check_in(vid, "77:2")
    with pytest.raises(AdminError, match="return the badge instead"):
        desk.change("console:desk", visitors.cancel, vid, "changed plans")
    later = desk.register(**window(minutes=60, start=120))
    with pytest.raises(AdminError, match="at most an hour before"):
        desk.check_in(later, "77:3")
    other = desk.register()
    with pytest.raises(AdminError, match="already issued"):
        desk.check_in(other, "77:1")  # the card of a visitor on site
    with pytest.raises(AdminError, match="ended at"):
        desk.check_in(other, "77:4", now=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(AdminError, match="a reason is required"):
        desk.change("console:desk", visitors.cancel, other, " ")


def test_a_visitor_never_escorts(desk: Desk) -> None:
    vid = desk.register()
    person = visit(desk.engine, vid).person_id
    with pytest.raises(AdminError, match="a visitor never escorts"):
        desk.change("cli:test", visitors.set_may_escort, person, True)


# --- the visit ------------------------------------------------------------------------------------


def test_a_visit_from_registration_to_return_is_audited_with_its_rows(desk: Desk) -> None:
    vid = desk.register(name="Vera Visitor", company="Acme", purpose="rack survey")
    registered = visit(desk.engine, vid)
    assert (registered.state, registered.host, registered.purpose) == ("expected", "host", "rack survey")
    with Session(desk.engine) as session:
        person = session.get(Person, registered.person_id)
        assert person is not None and person.kind == "visitor" and [lvl.key for lvl in person.levels] == ["staff"]
    desk.check_in(vid, "77:1")
    on_site = visit(desk.engine, vid)
    assert (on_site.state, on_site.id_document, on_site.id_checked_by) == ("on_site", "passport, last 4: 1234", "desk")
    with Session(desk.engine) as session:
        cred = session.get(Credential, on_site.credential_id)
        assert cred is not None and cred.number == "77:1"
        assert (cred.valid_from, cred.valid_until) == (on_site.starts_at, on_site.ends_at)
    returned_at = datetime.now(UTC)
    desk.change("console:desk", visitors.return_badge, vid, returned_at)
    back = visit(desk.engine, vid)
    assert back.state == "returned" and back.returned_at == returned_at
    with Session(desk.engine) as session:
        cred = session.get(Credential, on_site.credential_id)
        assert cred is not None and cred.status == "revoked"
        logged = {kind: detail for kind, detail in session.execute(
            select(AuditEntry.kind, AuditEntry.detail).where(AuditEntry.kind.like("admin.visit_%")))}
    assert set(logged) == {EventKind.ADMIN_VISIT_REGISTERED, EventKind.ADMIN_VISIT_CHECKED_IN,
                           EventKind.ADMIN_VISIT_BADGE_RETURNED}
    assert "1234" in logged[EventKind.ADMIN_VISIT_CHECKED_IN]
    assert state_check.findings(desk.engine) == []


def test_may_escort_is_set_through_the_log(desk: Desk) -> None:
    ada = desk.staff("Ada", "12:2001", escort=False)
    desk.change("cli:test", visitors.set_may_escort, ada, True)
    with Session(desk.engine) as session:
        person = session.get(Person, ada)
        assert person is not None and person.may_escort
    assert state_check.findings(desk.engine) == []


def test_a_tenant_admin_cannot_badge_their_visitor_around_the_desk(desk: Desk) -> None:
    """The review's attack: a customer's admin registers a visitor, then treats the visitor as one of their people
    (a month-long card, levels beyond [visitors] levels, no desk check-in). The visitor is not theirs to badge; and
    whatever badge a visitor holds is revoked when the visit is cancelled or returned."""
    b = tenant_id(desk.engine, "visit-co-b")
    with Session(desk.engine) as s:
        scope_b = tenants.scope_of_id(s, desk.config, b)
    desk.change("cli:test", tenants.add_admin, scope_b, "admin-b", "tenant-admin-password-long")
    visit_id = desk.register("console:admin-b", tenant_id=b)
    with Session(desk.engine) as s:
        visitor = s.get(Visit, visit_id).person_id  # type: ignore[union-attr]
    now = datetime.now(UTC)
    with pytest.raises(AdminError, match=f"no person with id {visitor}"):
        desk.change("console:admin-b", tenants.add_credential, scope_b, visitor, "wiegand26", "12:4242",
                    pepper=desk.keys.pin_pepper(), valid_until=now + timedelta(days=29), now=now)
    with pytest.raises(AdminError, match=f"no person with id {visitor}"):
        desk.change("console:admin-b", tenants.set_levels, scope_b, visitor, ["staff"])
    desk.change("cli:test", people.add_credential, visitor, "wiegand26", "12:4243", pepper=desk.keys.pin_pepper())
    desk.change("console:admin-b", visitors.cancel, visit_id, "not coming")
    with Session(desk.engine) as s:
        assert {c.status for c in s.scalars(select(Credential).where(Credential.person_id == visitor))} == {"revoked"}


@pytest.mark.parametrize("note", ["passport C01X00T47", "ID card 1234 5678 9012", "DL 123-456-789"])
def test_a_whole_document_number_is_refused_however_it_is_split(note: str) -> None:
    with pytest.raises(AdminError, match="never the whole number"):
        visitors.check_id_document(note)
