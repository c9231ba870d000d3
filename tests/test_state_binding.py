"""The access tables are bound to the log: a database administrator who edits people, credentials, levels or
console users around the audited commands, directly or in a backup that is then restored, is found by
`audit verify` (each row named) and by a running bridge (audit.state_mismatch); changes made through the CLI
and the console verify clean; a CLI killed mid-change leaves no change the log does not know."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit import state_check
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import load_config
from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm, AuditEntry, Person
from badge_bridge.sim.broker import Broker
from tests.bridge_proc import BridgeProcess
from tests.conftest import write_site
from tests.waiting import wait_until

CLI = [sys.executable, "-m", "badge_bridge.cli"]


def cli(site_file: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BADGE_BRIDGE_DATABASE_URL"}
    env["BADGE_BRIDGE_CONFIG"] = str(site_file)
    return subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def tampered(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def populate(site_file: Path) -> None:
    """Through the CLI: a console user, two people with levels, cards, one of them revoked."""
    ok(cli(site_file, "init"))
    ok(cli(site_file, "user", "add", "alice", "--role", "guard"))
    ok(cli(site_file, "person", "add", "Ada", "--level", "staff"))
    ok(cli(site_file, "person", "add", "Grace", "--level", "staff", "--level", "noc-24x7"))
    ok(cli(site_file, "credential", "add", "1", "--card", "12:1001"))
    ok(cli(site_file, "credential", "add", "2", "--card", "12:1002"))
    ok(cli(site_file, "credential", "revoke", "2", "--reason", "lost"))
    assert "access tables match the log" in ok(cli(site_file, "audit", "verify"))


DBA_EDITS = [
    "UPDATE person SET name = 'Mallory' WHERE id = 1",
    "INSERT INTO credential (person_id, format, number, status, created_at) VALUES (1, 'wiegand26', '12:6666', "
    "'active', CURRENT_TIMESTAMP)",
    "UPDATE console_user SET role = 'admin' WHERE username = 'alice'",
    "UPDATE credential SET status = 'active', revoked_at = NULL WHERE id = 2",
    "INSERT INTO access_level_door (level_id, door_id, schedule_id) SELECT l.id, d.id, s.id FROM access_level l, "
    "door d, schedule s WHERE l.key = 'staff' AND d.key = 'cage-7' AND s.key = 'always'",
]
NAMED = ["person/1: name differ", "credential/3: no audited change made this row", "user/alice: role differ",
         "credential/2: revoked_at, status differ", "level/staff: doors differ"]


def dba(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))


def check_names(engine: Engine) -> list[str]:
    return [f.message for f in state_check.findings(engine)]


def test_direct_edits_are_named_by_verify(site_file: Path, engine: Engine) -> None:
    populate(site_file)
    dba(engine, *DBA_EDITS)
    out = tampered(cli(site_file, "audit", "verify"))
    for row in NAMED:
        assert row in out, out
    assert len(check_names(engine)) == len(NAMED)

    dba(engine, "UPDATE person SET name = 'Ada' WHERE id = 1")  # put back: no longer named
    assert "person/1" not in tampered(cli(site_file, "audit", "verify"))


def test_a_deleted_row_is_named(site_file: Path, engine: Engine) -> None:
    populate(site_file)
    dba(engine, "DELETE FROM console_user WHERE username = 'alice'")
    assert "user/alice: the log's admin entries say it exists" in tampered(cli(site_file, "audit", "verify"))


def _pg_tools() -> None:
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def _edit_backup(backup: Path, db_url: str, tmp_path: Path) -> None:
    """What a DBA with the backups does: the edits made in the backup, its checksum written again."""
    if backup.suffix == ".db":
        engine = create_engine(f"sqlite:///{backup}")
        dba(engine, *DBA_EDITS)
        engine.dispose()
    else:
        _pg_tools()
        admin = make_url(db_url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        scratch = f"bb_edit_{tmp_path.name[-20:].lower().replace('-', '_')}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        url = make_url(db_url).set(database=scratch)
        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            subprocess.run(["pg_restore", "--no-owner", "-d", plain, str(backup)], check=True, capture_output=True)
            engine = create_engine(url)
            dba(engine, *DBA_EDITS)
            engine.dispose()
            subprocess.run(["pg_dump", "--format=custom", "-f", str(backup), plain], check=True, capture_output=True)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{scratch}" WITH (FORCE)')
    digest = subprocess.run(["sha256sum", backup.name], cwd=backup.parent, check=True, capture_output=True,
                            text=True).stdout
    backup.with_name(backup.name + ".sha256").write_text(digest)


def test_edits_in_a_restored_backup_are_found(site_file: Path, engine: Engine, db_url: str, tmp_path: Path) -> None:
    populate(site_file)
    ok(cli(site_file, "backup", str(tmp_path / "backups")))
    [backup] = [p for p in (tmp_path / "backups").iterdir() if p.suffix in (".db", ".dump")]
    _edit_backup(backup, db_url, tmp_path)
    engine.dispose()
    refused = cli(site_file, "restore", str(backup), "--yes", "--force")
    assert refused.returncode != 0, refused.stdout
    assert "does not verify, nothing was restored" in refused.stderr, refused.stderr
    assert "state: level/staff: doors differ from the last audited change" in refused.stderr, refused.stderr
    assert check_names(engine) == []  # the live database was not replaced
    if backup.suffix == ".db":  # restored by copying the file instead: verify names every edited row
        live = make_url(db_url).database
        assert live is not None
        for suffix in ("-wal", "-shm"):
            Path(live + suffix).unlink(missing_ok=True)
        shutil.copyfile(backup, live)
        out = tampered(cli(site_file, "audit", "verify"))
        assert all(row in out for row in NAMED), out


def test_changes_through_the_cli_verify_clean(site_file: Path, engine: Engine) -> None:
    populate(site_file)
    ok(cli(site_file, "user", "role", "alice", "supervisor"))
    ok(cli(site_file, "user", "disable", "alice"))
    ok(cli(site_file, "user", "password", "alice"))
    ok(cli(site_file, "init"))  # nothing changed in the site file: no admin.site_synced
    ok(cli(site_file, "audit", "verify"))
    with engine.connect() as conn:
        kinds = list(conn.scalars(select(AuditEntry.kind).where(AuditEntry.kind.like("admin.%"))
                                  .order_by(AuditEntry.received_us)))
        details = [json.loads(d) for d in conn.scalars(select(AuditEntry.detail).where(
            AuditEntry.kind == "admin.role_changed"))]
    assert kinds.count("admin.site_synced") == 1
    assert details[0]["state"]["user/alice"]["role"] == "supervisor"
    assert "password" not in details[0]["state"]["user/alice"]  # a digest, under a name the log accepts


def test_changes_through_the_console_functions_verify_clean(site_file: Path, engine: Engine, tmp_path: Path) -> None:
    """What every console view does (web.changes.admin_change): the change made by the console's writer."""
    populate(site_file)
    config = load_config(site_file)
    writer = AuditWriter(engine, f"{config.site.instance}.console", KeyStore(tmp_path / "keys").signer())
    writer.start()
    try:
        commit_change(writer, "console:boss", lambda s: people.update_person(s, "console:boss", 1, name="Ada L.", company="ACME",
                                                             levels=["noc-24x7"], lockdown_exempt=True))
        commit_change(writer, "console:boss", lambda s: people.person_left(s, "console:boss", 2, "contract ended"))
        commit_change(writer, "console:boss", lambda s: people.set_role(s, "console:boss", people.user_id(s, "alice"), "auditor"))
        with pytest.raises(people.AdminError, match="unknown access level"):
            commit_change(writer, "console:boss", lambda s: people.add_person(s, "console:boss", "Eve", levels=["nope"]))
    finally:
        writer.stop()
    assert check_names(engine) == []
    ok(cli(site_file, "audit", "verify"))


def test_site_sync_records_levels_and_the_people_who_lose_one(site_file: Path, engine: Engine) -> None:
    populate(site_file)
    text_ = site_file.read_text()
    start = text_.index('[[access_levels]]\nkey = "noc-24x7"')
    end = text_.find("[[", start + 5)
    site_file.write_text(text_[:start] + (text_[end:] if end != -1 else ""))
    assert "site file applied" in ok(cli(site_file, "init"))
    with engine.connect() as conn:
        [detail] = [json.loads(d) for d in conn.scalars(select(AuditEntry.detail).where(
            AuditEntry.kind == "admin.site_synced").order_by(AuditEntry.received_us.desc()).limit(1))]
    assert detail["state"]["level/noc-24x7"] is None
    assert detail["state"]["person/2"]["levels"] == ["staff"]
    ok(cli(site_file, "audit", "verify"))


def test_an_upgraded_database_gets_its_baseline(site_file: Path, engine: Engine, keys: KeyStore) -> None:
    """Rows from before state records: init records them once, as the baseline; then edits are found."""
    from badge_bridge.site_sync import sync_site

    with Session(engine) as session, session.begin():  # as an older version left it: no state in the log
        sync_site(session, load_config(site_file), "old")
        session.add(Person(name="Old Timer"))
    assert state_check.NO_STATE in ok(cli(site_file, "audit", "verify"))
    assert "as the baseline" in ok(cli(site_file, "init"))
    assert "as the baseline" not in ok(cli(site_file, "init"))
    ok(cli(site_file, "audit", "verify"))
    dba(engine, "UPDATE person SET lockdown_exempt = TRUE WHERE name = 'Old Timer'")
    assert "lockdown_exempt differ" in tampered(cli(site_file, "audit", "verify"))
    assert "1 of them differed" in ok(cli(site_file, "audit", "baseline", "--yes"))  # reviewed, attested
    ok(cli(site_file, "audit", "verify"))


def _people(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(Person.id)).all())


def test_a_cli_killed_while_its_entry_waits_leaves_nothing(site_file: Path, engine: Engine) -> None:
    """PostgreSQL: the audit table locked by someone else, the CLI's change is made and its entry waits; killed
    there, both go (with the change committed before its entry, as it once was, the person stayed)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks that hold one writer mid-transaction: PostgreSQL")
    populate(site_file)
    env = {k: v for k, v in os.environ.items() if k != "BADGE_BRIDGE_DATABASE_URL"}
    env["BADGE_BRIDGE_CONFIG"] = str(site_file)
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE audit_entry IN EXCLUSIVE MODE"))
        proc = subprocess.Popen([*CLI, "person", "add", "Victim", "--level", "staff"], env=env)

        def waiting_on_the_lock() -> bool:
            with engine.connect() as conn:
                return bool(conn.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'INSERT INTO audit_entry%'")))

        wait_until(waiting_on_the_lock, 60, "the CLI's entry to wait on the lock")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        locker.rollback()
    wait_until(lambda: _people(engine) == 2 and check_names(engine) == [], 30, "the killed change to be gone",
               detail=lambda: (_people(engine), check_names(engine)))
    ok(cli(site_file, "audit", "verify"))


def test_a_running_bridge_raises_and_clears_the_mismatch(
    tmp_path: Path, db_url: str, engine: Engine, broker: Broker, bridge_process: Callable[[Path], BridgeProcess],
) -> None:
    site_file = write_site(tmp_path, db_url, broker_port=broker.port)
    site_file.write_text(site_file.read_text() + "\n[audit]\nstate_check_seconds = 0.2\n"
                         if "[audit]" not in site_file.read_text() else
                         site_file.read_text().replace("[audit]", "[audit]\nstate_check_seconds = 0.2", 1))
    populate(site_file)
    bridge = bridge_process(site_file)
    bridge.start()
    dba(engine, "UPDATE console_user SET role = 'admin' WHERE username = 'alice'",
        "UPDATE credential SET status = 'active', revoked_at = NULL WHERE id = 2")

    def mismatch() -> list[dict[str, object]]:
        with engine.connect() as conn:
            return [json.loads(d) for d in conn.scalars(select(AuditEntry.detail).where(
                AuditEntry.kind == "alarm.raised", AuditEntry.detail.contains("audit.state_mismatch")))]

    named = ["credential/2: revoked_at, status differ from the last audited change",
             "user/alice: role differ from the last audited change"]
    raised = wait_until(lambda: (alarms := mismatch()) and alarms[-1]["rows"] == named and alarms, 30,
                        "audit.state_mismatch naming both rows", detail=lambda: (mismatch(), bridge.output()))
    assert len(raised) == 1 and raised[0]["count"] == 2

    def open_alarms() -> list[object]:
        with engine.connect() as conn:
            return list(conn.scalars(select(Alarm.cleared_at).where(Alarm.kind == "audit.state_mismatch")))

    assert open_alarms() == [None]
    bridge.wait_for("access tables differ from the audit log in 2 rows: credential/2")
    ok(cli(site_file, "audit", "baseline", "--yes"))  # the operator reviewed and attests the rows
    wait_until(lambda: open_alarms() and all(open_alarms()), 30, "the alarm to clear", detail=bridge.output)
    ok(cli(site_file, "person", "add", "Later"))  # an audited change: no new alarm
    wait_until(lambda: "decisions and controller lists updated" in bridge.output(), 30, "the admin reload")
    assert len(mismatch()) == 1 and open_alarms() == [open_alarms()[0]]
    assert bridge.signal() == 0
