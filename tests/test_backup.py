"""`badge-bridge backup` and `restore` on both databases, with a real writer appending during the backup.

A backup must be a consistent prefix of the live log and verify on its own; a damaged or tampered backup
must be reported as failed and never restored; restore must refuse while the bridge may be using the
database; passwords never reach output, manifests or command lines.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

import badge_bridge.audit.backup
from badge_bridge.audit.backup import BackupError, backup, restore
from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.cli import main
from badge_bridge.config import load_config
from badge_bridge.db import make_engine, sqlite_path
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from tests.conftest import write_site
from tests.test_verify import drop_append_only_triggers
from tests.waiting import wait_until

CHAIN = "bridge-1"
CLI_CHAIN = "bridge-1.cli"
NOW = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)
PG_ADMIN = os.environ.get("BADGE_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def ev(n: int) -> Event:
    return Event(id=f"ctl-1:{n}", kind="access.granted", source="ctl-1", ts=NOW, door="main-entrance",
                 subject={"person": n % 7, "credential": n}, detail={"reader": "main-in", "n": n})


def write_events(url: str, keys: KeyStore, first: int, count: int) -> None:
    """Append events n = first.. as the bridge would; the engine is disposed so no session stays open."""
    engine = make_engine(url)
    try:
        writer = AuditWriter(engine, CHAIN, keys.signer())
        writer.start()
        for n in range(first, first + count):
            writer.submit(ev(n))
        assert writer.stop()
    finally:
        engine.dispose()


def count_entries(url: str, chain: str | None = None) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).select_from(AuditEntry)
            if chain:
                query = query.where(AuditEntry.chain_id == chain)
            return conn.scalar(query) or 0
    finally:
        engine.dispose()


def hashes(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text("SELECT hash FROM audit_entry WHERE chain_id = :c ORDER BY seq"), {"c": CHAIN}))
    finally:
        engine.dispose()


def verifies(url: str, keys: KeyStore) -> bool:
    engine = make_engine(url)
    try:
        report = verify(engine, url, keys.trusted_public_keys())
        return report.ok
    finally:
        engine.dispose()


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


@pytest.fixture
def fresh_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as db_url: a missing file, or a new PostgreSQL database."""
    if sqlite_path(db_url) is not None:
        (tmp_path / "fresh").mkdir()
        yield f"sqlite:///{tmp_path / 'fresh' / 'bridge.db'}"
        return
    name = f"bb_fresh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield make_url(db_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- backup while the bridge writes ----------------------------------------------------------------


def test_backup_while_writing_is_a_verified_prefix(engine: Engine, keys: KeyStore, db_url: str, site_file: Path,
                                                   tmp_path: Path) -> None:
    write_events(db_url, keys, 0, 500)
    writer = AuditWriter(engine, CHAIN, keys.signer(), batch_max=50)
    writer.start()
    done = threading.Event()
    produced = [0]

    def produce() -> None:  # small bursts like a busy site, until the backup is over and some more
        n = 1000
        while not done.is_set():
            writer.submit(ev(n))
            n += 1
            if n % 20 == 0:
                time.sleep(0.03)
        produced[0] = n - 1000

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: writer.stats.committed >= 100, 30, "the stream under way")
        report = backup(load_config(site_file), tmp_path / "backups")
        assert report.verified, report.problems
        copied = report.chains[CHAIN]
        wait_until(lambda: 500 + writer.stats.committed > copied.entries, 30, "the writer going on after the snapshot")
    finally:
        done.set()
        producer.join()
    assert writer.stop()
    total = produced[0]

    assert 500 < copied.entries < 500 + total, "the backup is not a snapshot taken mid-stream"
    live = hashes(db_url)
    assert len(live) == 500 + total
    assert live[copied.head_seq - 1] == copied.head_hash, "the copy's chain is not a prefix of the live one"
    if report.kind == "sqlite":
        assert hashes(f"sqlite:///{report.path}") == live[: copied.entries]

    sidecar = report.path.with_name(report.path.name + ".sha256").read_text()
    assert sidecar == f"{report.sha256}  {report.path.name}\n"
    manifest = json.loads(report.manifest_path.read_text())
    assert manifest["verified"] is True and manifest["kind"] == report.kind
    assert manifest["chains"][CHAIN]["head_hash"] == copied.head_hash
    assert not list((tmp_path / "backups").glob("*.partial"))


# --- restore -----------------------------------------------------------------------------------------


def test_restore_into_an_empty_database(db_url: str, keys: KeyStore, site_file: Path, fresh_url: str,
                                        tmp_path: Path) -> None:
    write_events(db_url, keys, 0, 300)
    report = backup(load_config(site_file), tmp_path / "backups")
    assert report.verified and report.entries == 300
    fresh_site = write_site(tmp_path, fresh_url)  # the same site and keys, pointed at the empty database
    restored = restore(load_config(fresh_site), report.path, force=False)
    assert restored.entries == 300 and restored.replaced is None
    assert count_entries(fresh_url) == 300
    assert verifies(fresh_url, keys)


def test_restore_replaces_the_live_database(keys: KeyStore, db_url: str, site_file: Path, tmp_path: Path) -> None:
    write_events(db_url, keys, 0, 200)
    report = backup(load_config(site_file), tmp_path / "backups")
    write_events(db_url, keys, 200, 50)
    restored = restore(load_config(site_file), report.path, force=False)
    assert count_entries(db_url) == 200 and verifies(db_url, keys)
    write_events(db_url, keys, 300, 10)  # the bridge carries on from the restored head
    assert count_entries(db_url) == 210 and verifies(db_url, keys)
    if restored.replaced is not None:  # SQLite keeps what it replaced, with everything committed in it
        assert count_entries(f"sqlite:///{restored.replaced}") == 250
        assert not Path(f"{sqlite_path(db_url)}.before-restore").exists()


# --- damaged and tampered backups ------------------------------------------------------------------


def test_backup_of_a_tampered_log_is_reported_failed_and_kept(engine: Engine, db_url: str, keys: KeyStore,
                                                              site_file: Path, tmp_path: Path) -> None:
    write_events(db_url, keys, 0, 100)
    with engine.begin() as conn:
        drop_append_only_triggers(conn)
        conn.execute(text("UPDATE audit_entry SET detail = :d WHERE chain_id = :c AND seq = 42"),
                     {"d": '{"forged":1}', "c": CHAIN})
    report = backup(load_config(site_file), tmp_path / "backups")
    assert not report.verified
    assert "entry 42: modified" in report.problems[0]
    assert report.path.is_file(), "a failed backup is kept for forensics"
    assert json.loads(report.manifest_path.read_text())["verified"] is False
    with pytest.raises(BackupError, match=r"does not verify, nothing was restored: .*entry 42: modified"):
        restore(load_config(site_file), report.path, force=True)


def test_restore_refuses_a_damaged_backup_file(keys: KeyStore, db_url: str, site_file: Path, tmp_path: Path) -> None:
    write_events(db_url, keys, 0, 2000)
    report = backup(load_config(site_file), tmp_path / "backups")
    assert report.verified
    flip_middle(report.path)
    with pytest.raises(BackupError, match="does not match its checksum"):
        restore(load_config(site_file), report.path, force=False)
    report.path.with_name(report.path.name + ".sha256").unlink()  # no checksum: the content check must catch it
    with pytest.raises(BackupError, match="does not verify, nothing was restored"):
        restore(load_config(site_file), report.path, force=False)
    assert count_entries(db_url) == 2000 and verifies(db_url, keys)


def test_restore_refuses_a_backup_edited_behind_its_back(keys: KeyStore, sqlite_url: str,
                                                         tmp_path: Path) -> None:
    """A SQLite backup whose audit row was edited (triggers dropped) and whose checksum was rewritten."""
    site_file = write_site(tmp_path, sqlite_url)
    write_events(sqlite_url, keys, 0, 60)
    report = backup(load_config(site_file), tmp_path / "backups")
    conn = sqlite3.connect(report.path)
    conn.execute("DROP TRIGGER audit_entry_no_update")
    conn.execute("UPDATE audit_entry SET door = 'server-room' WHERE seq = 7")
    conn.commit()
    conn.close()
    report.path.with_name(report.path.name + ".sha256").unlink()
    with pytest.raises(BackupError, match="entry 7: modified"):
        restore(load_config(site_file), report.path, force=False)


# --- restore refuses while the bridge may be running -----------------------------------------------


HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
if sys.argv[2] == "write":
    conn.execute("BEGIN IMMEDIATE")
else:
    conn.execute("SELECT count(*) FROM audit_entry").fetchone()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="open-file detection reads /proc/locks (Linux)")
@pytest.mark.parametrize("mode", ["write", "open"])
def test_sqlite_restore_refuses_while_another_process_uses_the_database(
    keys: KeyStore, sqlite_url: str, tmp_path: Path, mode: str
) -> None:
    site_file = write_site(tmp_path, sqlite_url)
    write_events(sqlite_url, keys, 0, 20)
    report = backup(load_config(site_file), tmp_path / "backups")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(sqlite_path(sqlite_url)), mode],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(BackupError, match=f"is open in process {holder.pid}.*--force"):
            restore(load_config(site_file), report.path, force=False)
        restored = restore(load_config(site_file), report.path, force=True)
        assert restored.entries == 20
    finally:
        holder.kill()
        holder.wait()
    assert verifies(sqlite_url, keys)


def test_postgresql_restore_refuses_while_other_sessions_are_connected(keys: KeyStore, pg_url: str,
                                                                       tmp_path: Path) -> None:
    site_file = write_site(tmp_path, pg_url)
    write_events(pg_url, keys, 0, 20)
    report = backup(load_config(site_file), tmp_path / "backups")
    libpq = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, application_name="bridge-under-test") as other:
        with pytest.raises(BackupError, match=r"1 other sessions .*bridge-under-test.*--force"):
            restore(load_config(site_file), report.path, force=False)
        assert restore(load_config(site_file), report.path, force=True).entries == 20
        other.execute("SELECT 1")
    assert verifies(pg_url, keys)


# --- the command ---------------------------------------------------------------------------------------


def run(site_file: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["-c", str(site_file), *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def one_error(stderr: str, *fragments: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in errors[0], stderr


def cli_kinds(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(AuditEntry.kind).where(AuditEntry.chain_id == CLI_CHAIN)
                                     .order_by(AuditEntry.seq)))
    finally:
        engine.dispose()


def test_cli_backup_and_restore_are_audited(keys: KeyStore, db_url: str, site_file: Path, tmp_path: Path) -> None:
    write_events(db_url, keys, 0, 100)
    code, out, err = run(site_file, "backup", str(tmp_path / "backups"))
    assert code == 0, err
    assert "100 entries in 1 chains, verified" in out
    dump = next(p for p in (tmp_path / "backups").iterdir() if p.suffix in (".db", ".dump"))
    assert cli_kinds(db_url) == ["backup.made"]

    code, out, err = run(site_file, "restore", str(dump), stdin="n\n")
    assert code == 1 and "Aborted" in err + out
    assert cli_kinds(db_url) == ["backup.made"]

    code, out, err = run(site_file, "restore", str(dump), "--yes")
    assert code == 0, err
    assert "restored" in out and "100 entries" in out
    # The backup was made before its own backup.made event; the restore event lands in the restored log.
    assert cli_kinds(db_url) == ["backup.restored"]
    assert count_entries(db_url) == 101 and verifies(db_url, keys)


def test_cli_errors_are_one_line(engine: Engine, db_url: str, keys: KeyStore, site_file: Path,
                                 tmp_path: Path) -> None:
    code, _, err = run(site_file, "restore", str(tmp_path / "missing.db"), "--yes")
    assert code == 1
    one_error(err, "backup file", "does not exist")

    write_events(db_url, keys, 0, 30)
    with engine.begin() as conn:
        drop_append_only_triggers(conn)
        conn.execute(text("DELETE FROM audit_entry WHERE chain_id = :c AND seq = 5"), {"c": CHAIN})
    engine.dispose()
    code, _, err = run(site_file, "backup", str(tmp_path / "backups"))
    assert code == 1
    one_error(err, "does NOT verify", "kept for forensics", "entry 5: deleted")


def test_password_never_reaches_output_manifest_or_command_line(keys: KeyStore, pg_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The local server trusts every connection, so a URL with a password still connects."""
    password = "s3cret-Pw-9f2"
    url = make_url(pg_url).set(password=password).render_as_string(hide_password=False)
    site_file = write_site(tmp_path, url)
    write_events(pg_url, keys, 0, 20)
    commands: list[list[str]] = []
    environments: list[dict[str, str]] = []
    real_run = subprocess.run

    def spy(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        commands.append(list(args))
        environments.append(dict(kw["env"]))  # type: ignore[arg-type]
        return real_run(args, **kw)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(badge_bridge.audit.backup.subprocess, "run", spy)
    code, out, err = run(site_file, "backup", str(tmp_path / "backups"))
    assert code == 0, err
    code, out2, err2 = run(site_file, "restore", "--yes", "--force",
                           str(next((tmp_path / "backups").glob("*.dump"))))
    assert code == 0, err2
    assert commands and all(password not in " ".join(c) for c in commands)
    assert environments[0]["PGPASSWORD"] == password
    texts = [out, err, out2, err2] + [p.read_text() for p in (tmp_path / "backups").glob("*.json")]
    assert all(password not in t for t in texts)

    monkeypatch.setenv("BADGE_BRIDGE_DATABASE_URL", url.replace("127.0.0.1:5432", "127.0.0.1:1"))
    code, out, err = run(site_file, "backup", str(tmp_path / "backups"))
    assert code == 1 and password not in out + err
    one_error(err, "pg_dump failed")
