"""Customer cages (badge_bridge.tenants), on both databases: a tenant admin reaches only their own people and
cards, gives only the levels the operator allows them, never a card valid longer than the site allows; a
person they add is refused at the door until site staff approve them; every change is bound to the log, so
a DBA who approves someone in the table is found."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from badge_bridge import people, policy, tenants
from badge_bridge.audit import state_check
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import SiteConfig, TenantConfig
from badge_bridge.keys import KeyStore
from badge_bridge.models import ConsoleUser, Person
from badge_bridge.people import AdminError
from badge_bridge.site_sync import sync_site
from badge_bridge.snapshot import load_snapshot

NOW = datetime.now(UTC)
GLOBEX = TenantConfig(key="globex", name="Globex", areas=["noc"], levels=["noc-24x7"], max_validity_days=30)


def two_tenants(site: SiteConfig) -> SiteConfig:
    """The example site (Acme in cage 7) with a second customer, Globex, given the NOC to play with."""
    return site.model_copy(update={"tenants": [*site.tenants, GLOBEX]})


@pytest.fixture
def config(site: SiteConfig) -> SiteConfig:
    return two_tenants(site)


def synced(engine: Engine, config: SiteConfig, keys: KeyStore, chain: str) -> AuditWriter:
    """The site synced, its change audited on ``chain`` (started: stop it), to commit more changes on."""
    with Session(engine) as s, s.begin():
        change = sync_site(s, config)
    w = AuditWriter(engine, f"{config.site.instance}.{chain}", keys.signer())
    w.start()
    if change is not None:
        w.submit(change)
    return w


@pytest.fixture
def writer(engine: Engine, config: SiteConfig, keys: KeyStore) -> Iterator[AuditWriter]:
    """The console's chain (as web.changes.admin_change commits)."""
    w = synced(engine, config, keys, "console")
    yield w
    w.stop()


def change(writer: AuditWriter, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """``fn(session, actor, *args)`` committed with its audit entry; its result."""
    return commit_change(writer, "console:t", lambda s: fn(s, "console:t", *args, **kwargs))[0]


def scope(engine: Engine, config: SiteConfig, key: str) -> tenants.Scope:
    with Session(engine) as s:
        return tenants.scope(s, config, key)


@pytest.fixture
def acme(engine: Engine, config: SiteConfig, writer: AuditWriter) -> tenants.Scope:
    return scope(engine, config, "acme")


@pytest.fixture
def globex(engine: Engine, config: SiteConfig, writer: AuditWriter) -> tenants.Scope:
    return scope(engine, config, "globex")


def card(writer: AuditWriter, sc: tenants.Scope, person: int, number: str, keys: KeyStore,
         days: float = 10) -> int:
    return change(writer, tenants.add_credential, sc, person, "wiegand26", number, pepper=keys.pin_pepper(),
                  valid_until=NOW + timedelta(days=days), now=NOW).id


# --- the attacker first ----------------------------------------------------------------------------------


def test_another_tenants_people_and_cards_do_not_exist(writer: AuditWriter, acme: tenants.Scope,
                                                       globex: tenants.Scope, keys: KeyStore,
                                                       engine: Engine) -> None:
    theirs = change(writer, tenants.add_person, globex, "Gina Globex", levels=["noc-24x7"]).id
    their_card = card(writer, globex, theirs, "12:3001", keys)
    with Session(engine) as s:
        staff = change(writer, people.add_person, "Sam Staff", levels=["staff"]).id
    missing = 10 ** 9
    for pid in (theirs, staff, missing):  # of another tenant, site staff, absent: one and the same answer
        with pytest.raises(AdminError, match=f"^no person with id {pid}$"):
            change(writer, tenants.add_credential, acme, pid, "wiegand26", "12:3999", pepper=keys.pin_pepper(),
                   valid_until=NOW + timedelta(days=1), now=NOW)
        with pytest.raises(AdminError, match=f"^no person with id {pid}$"):
            change(writer, tenants.set_levels, acme, pid, ["cage-7-acme"])
        with pytest.raises(AdminError, match=f"^no person with id {pid}$"):
            change(writer, tenants.person_left, acme, pid, "not ours")
    for cid in (their_card, missing):
        with pytest.raises(AdminError, match=f"^no credential with id {cid}$"):
            change(writer, tenants.revoke, acme, cid, "stolen")
        with pytest.raises(AdminError, match=f"^no credential with id {cid}$"):
            change(writer, tenants.set_validity, acme, cid, None, NOW + timedelta(days=1), now=NOW)
    with Session(engine) as s:
        gina = s.get(Person, theirs)
        assert gina is not None and gina.status == "pending" and [c.status for c in gina.credentials] == ["active"]


@pytest.mark.parametrize("levels", [["noc-24x7"], ["staff"], ["hall-a-engineers"], ["no-such-level"],
                                    ["cage-7-acme", "staff"]])
def test_a_level_outside_the_tenants_list_reads_as_unknown(writer: AuditWriter, acme: tenants.Scope,
                                                          levels: list[str]) -> None:
    with pytest.raises(AdminError, match=r"^unknown access level .* \(yours: cage-7-acme\)$") as refused:
        change(writer, tenants.add_person, acme, "Eve", levels=levels)
    assert "cage-7-acme," not in str(refused.value).split("(")[0]
    pid = change(writer, tenants.add_person, acme, "Ann Acme", levels=["cage-7-acme"]).id
    with pytest.raises(AdminError, match=r"^unknown access level"):
        change(writer, tenants.set_levels, acme, pid, levels)


def test_no_card_beyond_the_maximum_validity(writer: AuditWriter, acme: tenants.Scope, keys: KeyStore) -> None:
    pid = change(writer, tenants.add_person, acme, "Ann Acme").id
    with pytest.raises(AdminError, match="valid-until date is required"):
        change(writer, tenants.add_credential, acme, pid, "wiegand26", "12:4001", pepper=keys.pin_pepper(),
               valid_until=None, now=NOW)
    with pytest.raises(AdminError, match="beyond the 90 days the site allows acme"):
        card(writer, acme, pid, "12:4001", keys, days=90.01)
    cid = card(writer, acme, pid, "12:4001", keys, days=90)
    with pytest.raises(AdminError, match="beyond the 90 days"):  # nor stretched afterwards
        change(writer, tenants.set_validity, acme, cid, None, NOW + timedelta(days=365), now=NOW)
    with pytest.raises(AdminError, match="valid-until date is required"):  # nor made open-ended
        change(writer, tenants.set_validity, acme, cid, None, None, now=NOW)


def test_staff_levels_the_tenant_cannot_see_are_kept(writer: AuditWriter, acme: tenants.Scope,
                                                      engine: Engine) -> None:
    pid = change(writer, tenants.add_person, acme, "Ann Acme", levels=["cage-7-acme"]).id
    change(writer, people.update_person, pid, name="Ann Acme", company="Acme Hosting",
           levels=["cage-7-acme", "staff"], lockdown_exempt=False)  # site staff gave her the front door
    change(writer, tenants.set_levels, acme, pid, [])
    with Session(engine) as s:
        ann = s.get(Person, pid)
        assert ann is not None and [lvl.key for lvl in ann.levels] == ["staff"]
    change(writer, tenants.set_levels, acme, pid, ["cage-7-acme"])
    with Session(engine) as s:
        ann = s.get(Person, pid)
        assert ann is not None and sorted(lvl.key for lvl in ann.levels) == ["cage-7-acme", "staff"]


def test_a_tenant_admin_needs_a_tenant_and_only_they_have_one(writer: AuditWriter, acme: tenants.Scope,
                                                             engine: Engine) -> None:
    with pytest.raises(AdminError, match="tenant admin is added for a tenant"):
        change(writer, people.add_user, "loose", "tenant_admin", "a-long-password-1")
    with pytest.raises(AdminError, match="tenant admin is added for a tenant"):
        change(writer, people.add_user, "guard2", "guard", "a-long-password-1", tenant_id=acme.tenant_id)
    user = change(writer, tenants.add_admin, acme, "acme-admin", "a-long-password-1")
    with pytest.raises(AdminError, match="neither made from nor turned into"):
        change(writer, people.set_role, user.id, "admin")
    guard = change(writer, people.add_user, "guard2", "guard", "a-long-password-1")
    with pytest.raises(AdminError, match="neither made from nor turned into"):
        change(writer, people.set_role, guard.id, "tenant_admin")
    with Session(engine) as s:
        row = s.scalar(select(ConsoleUser).where(ConsoleUser.username == "acme-admin"))
        assert row is not None and (row.role, row.tenant_id) == ("tenant_admin", acme.tenant_id)


def test_unknown_tenant_is_a_clear_error(engine: Engine, config: SiteConfig, writer: AuditWriter) -> None:
    with Session(engine) as s, pytest.raises(AdminError, match=r"no tenant 'initech' \(in the site file: acme, globex"):
        tenants.scope(s, config, "initech")


def test_approval_is_for_pending_people_only(writer: AuditWriter, acme: tenants.Scope) -> None:
    staff = change(writer, people.add_person, "Sam Staff").id
    with pytest.raises(AdminError, match="not awaiting approval"):
        change(writer, tenants.approve, staff)
    pid = change(writer, tenants.add_person, acme, "Ann Acme").id
    with pytest.raises(AdminError, match="reason is required"):
        change(writer, tenants.refuse, pid, "  ")
    change(writer, tenants.approve, pid)
    with pytest.raises(AdminError, match="not awaiting approval"):
        change(writer, tenants.refuse, pid, "changed our mind")


def test_a_refused_persons_cards_are_revoked(writer: AuditWriter, acme: tenants.Scope, keys: KeyStore,
                                              engine: Engine) -> None:
    pid = change(writer, tenants.add_person, acme, "Mallory", levels=["cage-7-acme"]).id
    card(writer, acme, pid, "12:5001", keys)
    change(writer, tenants.refuse, pid, "not on the customer's contract list")
    with Session(engine) as s:
        m = s.get(Person, pid)
        assert m is not None and m.status == "refused" and [c.status for c in m.credentials] == ["revoked"]
        view = load_snapshot(s).credential("wiegand26", "12:5001")
    assert view is not None and view.view.status == "revoked"


def _decide(engine: Engine, number: str) -> policy.Reason:
    with Session(engine) as s:
        snap = load_snapshot(s)
    cred = snap.credential("wiegand26", number)
    assert cred is not None
    request = policy.Request(door=snap.doors["hall-a"], now=datetime.now(UTC),
                             factors=frozenset({policy.Factor.CARD, policy.Factor.PIN}))
    return policy.decide(cred.view, request, policy.AccessState()).reason


def test_a_pending_persons_card_opens_nothing_until_approved(writer: AuditWriter, acme: tenants.Scope,
                                                              keys: KeyStore, engine: Engine) -> None:
    pid = change(writer, tenants.add_person, acme, "Ann Acme", levels=["cage-7-acme"]).id
    card(writer, acme, pid, "12:6001", keys)
    assert _decide(engine, "12:6001") is policy.Reason.PERSON_NOT_APPROVED
    change(writer, tenants.approve, pid)
    assert _decide(engine, "12:6001") is policy.Reason.GRANTED


def test_changes_verify_clean_and_a_dba_approval_is_found(writer: AuditWriter, acme: tenants.Scope,
                                                          keys: KeyStore, engine: Engine) -> None:
    pid = change(writer, tenants.add_person, acme, "Ann Acme", levels=["cage-7-acme"]).id
    cid = card(writer, acme, pid, "12:7001", keys)
    change(writer, tenants.set_validity, acme, cid, None, NOW + timedelta(days=20), now=NOW)
    change(writer, tenants.add_admin, acme, "acme-admin", "a-long-password-1")
    other = change(writer, tenants.add_person, acme, "Bob Acme").id
    change(writer, tenants.approve, other)
    assert not writer.stats.last_error
    assert state_check.findings(engine) == []
    with engine.begin() as conn:  # a DBA lets her in without site staff's approval
        conn.execute(text("UPDATE person SET status = 'active' WHERE id = :p"), {"p": pid})
    assert [f.message for f in state_check.findings(engine)] == [f"person/{pid}: status differ from the last "
                                                                 "audited change"]
    with engine.begin() as conn:  # ... or moves her to another customer
        conn.execute(text("UPDATE person SET status = 'pending', tenant_id = NULL WHERE id = :p"), {"p": pid})
    assert [f.message for f in state_check.findings(engine)] == [f"person/{pid}: tenant differ from the last "
                                                                 "audited change"]


def test_the_cli_scopes_and_approves(tmp_path: Path, site_file: Path, engine: Engine) -> None:
    """The operator's commands, end to end through the CLI's chain."""
    from tests.test_state_binding import cli, ok

    ok(cli(site_file, "init"))
    out = ok(cli(site_file, "tenant", "list"))
    assert "acme\tAcme Hosting\tareas cage-7\tlevels cage-7-acme\tmax 90 days\t0 people, 0 pending" in out
    assert "tenant admin ops of acme added" in ok(cli(site_file, "tenant", "admin-add", "--tenant", "acme", "ops"))
    added = ok(cli(site_file, "tenant", "person-add", "--tenant", "acme", "Ann Acme", "--level", "cage-7-acme"))
    assert "awaiting approval" in added
    pid = added.split()[1]
    refused = cli(site_file, "tenant", "person-add", "--tenant", "acme", "Eve", "--level", "staff")
    assert refused.returncode == 1 and "unknown access level staff (yours: cage-7-acme)" in refused.stderr
    until = (datetime.now(UTC) + timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%S")
    too_long = cli(site_file, "tenant", "card-add", "--tenant", "acme", pid, "--card", "12:8001", "--valid-until", until)
    assert too_long.returncode == 1 and "beyond the 90 days" in too_long.stderr
    until = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
    ok(cli(site_file, "tenant", "card-add", "--tenant", "acme", pid, "--card", "12:8001", "--valid-until", until))
    assert f"{pid}\tAnn Acme\tacme" in ok(cli(site_file, "tenant", "pending"))
    assert "approved" in ok(cli(site_file, "tenant", "approve", pid))
    assert f"{pid}\tAnn Acme\tactive\tcage-7-acme\t12:8001 (active, until" in ok(
        cli(site_file, "tenant", "people", "--tenant", "acme"))
    assert "access tables match the log" in ok(cli(site_file, "audit", "verify"))
