"""Least privilege on PostgreSQL, with real roles: after `badge-bridge init --grants ROLE --apply` run as the
owner, the bridge's role cannot UPDATE, DELETE or TRUNCATE an audit table, touch its triggers or SET
session_replication_role, and still does all the bridge, the console and the CLI write.

Roles are cluster-wide: each test makes its own (unique names) and drops them, with its database, after."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from badge_bridge import console_sessions, people
from badge_bridge.audit import segments
from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine
from badge_bridge.events import Event
from badge_bridge.grants import AUDIT_TABLES, statements
from badge_bridge.ingest import persist
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, Controller, Person
from badge_bridge.records import alarm_cleared, alarm_raised, dead_letter
from tests.conftest import _pg_admin, _pg_url, write_site

NOW = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)


@dataclass
class Roles:
    owner: str
    bridge: str
    owner_url: str
    bridge_url: str
    site_file: Path


@pytest.fixture
def roles(pg_clones: object, tmp_path: Path, keys: KeyStore) -> Iterator[Roles]:
    """An owner role, a bridge role and a database the owner owns, set up by `init --grants ... --apply`."""
    tag = uuid.uuid4().hex[:10]
    owner, bridge, database = f"bb_owner_{tag}", f"bb_bridge_{tag}", f"bb_grants_{tag}"
    with _pg_admin() as admin:
        admin.execute(f"CREATE ROLE {owner} LOGIN")
        admin.execute(f"CREATE ROLE {bridge} LOGIN")
        admin.execute(f'CREATE DATABASE "{database}" OWNER {owner}')
    try:
        url = _pg_url(database)
        owner_url, bridge_url = url.replace("//postgres@", f"//{owner}@"), url.replace("//postgres@", f"//{bridge}@")
        site_file = write_site(tmp_path, bridge_url, (f'url = "{bridge_url}"', f'url = "{bridge_url}"\nowner_url = "{owner_url}"'))
        result = cli(site_file, "init", "--grants", bridge, "--apply")
        assert result.returncode == 0, result.stderr
        yield Roles(owner, bridge, owner_url, bridge_url, site_file)
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f"DROP ROLE IF EXISTS {bridge}")
            admin.execute(f"DROP ROLE IF EXISTS {owner}")


def cli(site_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "badge_bridge.cli", "-c", str(site_file), *args],
                          capture_output=True, text=True, timeout=120)


def refused(url: str, sql: str) -> str:
    """Run ``sql`` as the role of ``url``; the error PostgreSQL refused it with."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            conn.execute(sql)
    return str(caught.value)


def test_the_bridge_role_cannot_rewrite_or_unprotect_the_audit_tables(roles: Roles) -> None:
    for table in AUDIT_TABLES:
        column = "key_id" if table == "signing_key" else "chain_id"
        assert "permission denied" in refused(roles.bridge_url, f"UPDATE {table} SET {column} = {column}")
        assert "permission denied" in refused(roles.bridge_url, f"DELETE FROM {table}")
        assert "permission denied" in refused(roles.bridge_url, f"TRUNCATE {table}")
    assert "must be owner" in refused(roles.bridge_url, "ALTER TABLE audit_entry DISABLE TRIGGER ALL")
    assert "must be owner" in refused(roles.bridge_url, "DROP TRIGGER audit_entry_no_change ON audit_entry")
    assert "session_replication_role" in refused(roles.bridge_url, "SET session_replication_role = replica")
    assert "permission denied" in refused(roles.bridge_url, "INSERT INTO prune_window VALUES ('x', 1, 2)")


def test_the_bridge_role_writes_the_log_and_what_the_bridge_and_console_need(roles: Roles, keys: KeyStore) -> None:
    engine = make_engine(roles.bridge_url)
    try:
        writer = AuditWriter(engine, "bridge-1", keys.signer(), batch_max=4)
        writer.start()
        for n in range(10):
            writer.submit(Event(id=f"ctl-1:{n}", kind="access.granted", source="ctl-1", ts=NOW, door="main-entrance"))
        for event, effect in (
            alarm_raised("door.forced", door="hall-a", source="ctl-hall", cause="c1", ts=NOW),
            alarm_cleared("door.forced", door="hall-a", source="ctl-hall", cause="c1", ts=NOW),
            dead_letter("ctl-1", "bad_json", "not JSON", b"{", where="topic", now=NOW),
        ):
            writer.submit(event, effect=effect)
        state = Event(id="state:1", kind="door.lockdown", source="bridge-1", ts=NOW)
        writer.submit(state, effect=persist.effect("bridge-1", [("lockdown_all", "1")], state.id, NOW))
        assert writer.flush()
        cleared = Event(id="state:2", kind="door.lockdown", source="bridge-1", ts=NOW)
        writer.submit(cleared, effect=persist.effect("bridge-1", [("lockdown_all", None)], cleared.id, NOW))
        assert writer.stop(), writer.stats.last_error
        report = verify(engine, roles.bridge_url, keys.trusted_public_keys())
        assert report.ok and report.chains["bridge-1"].entries == 15, report.findings
        check_console_and_cli_writes(engine)
    finally:
        engine.dispose()
    assert cli(roles.site_file, "person", "list").returncode == 0


def check_console_and_cli_writes(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        person, _ = people.add_person(s, "cli:test", "Ada Admin", levels=["staff"])
        people.add_credential(s, "cli:test", person.id, "wiegand26", "12:4711", pepper=b"p" * 32)
        user, _ = people.add_user(s, "cli:test", "desk1", "guard", "a-long-enough-password")
        s.flush()
        people.update_person(s, "console:desk1", person.id, name="Ada A.", company="", levels=["hall-a-engineers"],
                             lockdown_exempt=False)
        token = console_sessions.start(s, user.id, now=NOW, lifetime=timedelta(hours=8), address="127.0.0.1",
                                       user_agent="test")
        s.flush()
        assert console_sessions.end(s, console_sessions.digest(token), "logout", NOW) == 1
        s.execute(update(Alarm).values(state="acknowledged"))
        s.execute(update(Controller).where(Controller.key == "ctl-lobby").values(online=True, last_seen=NOW))
    with Session(engine) as s:
        assert s.scalar(select(Person.name)) == "Ada A."


def test_grants_are_printed_for_the_dba(roles: Roles) -> None:
    result = cli(roles.site_file, "init", "--grants", roles.bridge)
    assert result.returncode == 0, result.stderr
    assert "GRANT INSERT ON audit_entry TO" in result.stdout
    assert "UPDATE ON audit_entry" not in result.stdout and "GRANT SELECT ON prune_window" not in result.stdout
    assert result.stdout.strip().splitlines()[-len(statements(roles.bridge)):][0].startswith("REVOKE ALL")


def test_the_owner_prunes_and_a_superuser_or_the_owner_is_refused_as_bridge_role(roles: Roles, keys: KeyStore) -> None:
    result = cli(roles.site_file, "init", "--grants", roles.owner, "--apply")
    assert result.returncode == 1 and "member of, the owner role" in result.stderr
    result = cli(roles.site_file, "init", "--grants", "postgres", "--apply")
    assert result.returncode == 1 and "superuser" in result.stderr
    result = cli(roles.site_file, "audit", "prune", "--yes")
    assert result.returncode == 0, result.stderr
    bridge, owner = make_engine(roles.bridge_url), make_engine(roles.owner_url)
    try:
        old = NOW - timedelta(days=400)
        writer = AuditWriter(bridge, "bridge-1", keys.signer())
        for n in range(5):
            writer.submit(Event(id=f"old:{n}", kind="access.granted", source="ctl-1", ts=old, received_ts=old))
        writer.start()
        assert writer.stop()
        assert segments.seal(bridge, keys.signer())  # sealing is the bridge's: an INSERT
        with pytest.raises(DBAPIError, match="permission denied"):
            segments.prune(bridge, keys.signer(), now=NOW)
        assert segments.prune(owner, keys.signer(), now=NOW).entries == 5
        assert verify(bridge, roles.bridge_url, keys.trusted_public_keys()).ok
    finally:
        bridge.dispose()
        owner.dispose()


def test_a_bridge_role_that_owns_tables_is_refused(roles: Roles) -> None:
    """An install from before least privilege: its tables were created as the bridge's role, and an owner
    ignores grants (it could drop the triggers). Applying the grants refuses and says what to run."""
    with psycopg.connect(roles.owner_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {roles.bridge}")
    with psycopg.connect(roles.bridge_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("CREATE TABLE bridge_owned (id int)")
    result = cli(roles.site_file, "init", "--grants", roles.bridge, "--apply")
    assert result.returncode == 1 and f"REASSIGN OWNED BY {roles.bridge}" in result.stderr, result.stderr
