"""`badge-bridge backup` and `restore`: consistent online copies of the database, checked before they count.

A backup is only worth something if it restores into a log that verifies, so every backup is verified where
it lies: a SQLite copy is opened read-only and its chains recomputed; a PostgreSQL dump is restored into a
throw-away database and verified there (the only honest check of a dump). A backup that does not verify is
kept for forensics but reported as failed, in its manifest too.

SQLite is copied with the online backup API while holding one read transaction on the source: in WAL mode
that never blocks the bridge's writer, and it keeps the snapshot fixed across page steps (without it, every
commit of the writer restarts the copy, which then never finishes on a busy log). PostgreSQL uses
``pg_dump --format=custom``, which reads one snapshot; its password goes through PGPASSWORD, never the
command line, where any user could read it with ``ps``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from badge_bridge import db
from badge_bridge.audit.verify import Report, verify
from badge_bridge.config import SiteConfig
from badge_bridge.keys import KeyStore

PAGES_PER_STEP = 4096
"""SQLite pages copied per backup step (16 MiB at 4 KiB pages): bounds each burst of I/O."""
LOCK_TIMEOUT_S = 0.5
"""How long restore waits for a write lock on a live SQLite file before deciding a writer is using it."""
PROBLEMS_KEPT = 20


class BackupError(db.DatabaseError):
    """A backup or restore that cannot be made or is refused, with what to do about it."""


@dataclass
class ChainSummary:
    entries: int
    head_seq: int
    head_hash: str


@dataclass
class BackupReport:
    """What a backup holds and whether it verified; also what its JSON manifest records."""

    path: Path
    kind: str
    """sqlite or postgresql."""
    made_at: str
    source: str
    """The database URL without its password."""
    sha256: str = ""
    size: int = 0
    verified: bool = False
    chains: dict[str, ChainSummary] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.chains.values())

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    def manifest(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = self.path.name
        return data


@dataclass
class RestoreReport:
    target: str
    """The restored database: a file for SQLite, the URL without password for PostgreSQL."""
    entries: int
    chains: dict[str, ChainSummary]
    replaced: Path | None = None
    """SQLite: where the database that was replaced is kept."""


# --- shared ------------------------------------------------------------------------------------------


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _free_name(dest: Path, stem: str, suffix: str) -> Path:
    """badge-bridge-<ts><suffix>, or with -2, -3 ... when two backups land in the same second."""
    path, n = dest / f"{stem}{suffix}", 1
    while path.exists() or path.with_name(path.name + ".partial").exists():
        n += 1
        path = dest / f"{stem}-{n}{suffix}"
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(data)
    _fsync(tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _public_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _apply(report: BackupReport | None, result: Report) -> tuple[dict[str, ChainSummary], list[str]]:
    chains = {c.chain_id: ChainSummary(c.entries, c.head_seq, c.head_hash) for c in result.chains.values()}
    problems = [str(f) for f in result.findings[:PROBLEMS_KEPT]]
    if report is not None:
        report.chains, report.problems, report.verified = chains, problems, result.ok
    return chains, problems


def _check_sidecar(src: Path) -> None:
    """A backup whose bytes differ from what was written is refused before anything else is read."""
    sidecar = src.with_name(src.name + ".sha256")
    if not sidecar.is_file():
        return
    if _sha256(src) not in sidecar.read_text().split()[:1]:
        raise BackupError(f"backup {src} does not match its checksum in {sidecar.name}: the file was changed or "
                          "damaged after it was written")


def backup(config: SiteConfig, dest: Path) -> BackupReport:
    """Copy the live database into ``dest``, verify the copy, and write its checksum and manifest."""
    url = config.database_owner_url()  # the owner: the bridge role may not read prune_window nor drop tables
    trusted = KeyStore(config.keys_dir()).trusted_public_keys()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"backup folder {dest} cannot be created: {exc.strerror}") from None
    if not os.access(dest, os.W_OK):
        raise BackupError(f"backup folder {dest} is not writable")
    started = datetime.now(UTC)
    path = db.sqlite_path(url)
    if path is not None:
        out = _free_name(dest, f"badge-bridge-{_timestamp()}", ".db")
        report = BackupReport(out, "sqlite", started.isoformat(), _public_url(url))
        _sqlite_copy(path, out)
        report.sha256, report.size = _sha256(out), out.stat().st_size
        _sqlite_verify(out, trusted, report)
    elif make_url(url).get_backend_name() == "postgresql":
        out = _free_name(dest, f"badge-bridge-{_timestamp()}", ".dump")
        report = BackupReport(out, "postgresql", started.isoformat(), _public_url(url))
        _pg_dump(url, out)
        report.sha256, report.size = _sha256(out), out.stat().st_size
        try:
            _apply(report, _pg_verify_dump(url, out, trusted))
        except BackupError as exc:
            report.verified, report.problems = False, [str(exc)]
    else:
        raise BackupError(f"backups support SQLite files and PostgreSQL, not {make_url(url).get_backend_name()}")
    report.seconds = round((datetime.now(UTC) - started).total_seconds(), 3)
    _write_atomic(out.with_name(out.name + ".sha256"), f"{report.sha256}  {out.name}\n")
    _write_atomic(report.manifest_path, json.dumps(report.manifest(), indent=2) + "\n")
    return report


def restore(config: SiteConfig, src: Path, *, force: bool) -> RestoreReport:
    """Replace the configured database with a verified backup. Refuses while the bridge may be using it."""
    url = config.database_owner_url()
    if not src.is_file():
        raise BackupError(f"backup file {src} does not exist")
    trusted = KeyStore(config.keys_dir()).trusted_public_keys()
    path = db.sqlite_path(url)
    if path is not None:
        return _sqlite_restore(path, src, trusted, force=force)
    if make_url(url).get_backend_name() == "postgresql":
        return _pg_restore_live(url, src, trusted, force=force)
    raise BackupError(f"restore supports SQLite files and PostgreSQL, not {make_url(url).get_backend_name()}")


# --- SQLite ------------------------------------------------------------------------------------------


def _sqlite_copy(live: Path, out: Path) -> None:
    if not live.is_file():
        raise BackupError(f"database file {live} does not exist")
    partial = out.with_name(out.name + ".partial")
    src = sqlite3.connect(f"file:{live}?mode=ro", uri=True, isolation_level=None, timeout=10)
    dst = sqlite3.connect(partial, isolation_level=None)
    try:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot the copy is of
        src.backup(dst, pages=PAGES_PER_STEP)
        src.execute("COMMIT")
        # A self-contained file: no -wal beside it, and it opens read-only anywhere.
        dst.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"copying {live} failed: {exc}") from None
    finally:
        src.close()
        dst.close()
    _fsync(partial)
    os.replace(partial, out)
    _fsync(out.parent)


def _readonly_engine(path: Path) -> Engine:
    """The file opened so that verifying it cannot change a byte of it."""
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True,
                                                                      check_same_thread=False))


def _sqlite_verify(path: Path, trusted: Mapping[str, Ed25519PublicKey], report: BackupReport | None = None
                   ) -> tuple[dict[str, ChainSummary], list[str]]:
    """Integrity check, then the chains. ``jobs=1``: parallel workers would reopen the file read-write."""
    engine = _readonly_engine(path)
    try:
        with engine.connect() as conn:
            damage = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").all()]
        if damage != ["ok"]:
            problems = [f"the file is damaged: {damage[0]}"]
        else:
            return _apply(report, verify(engine, f"sqlite:///{path}", trusted, jobs=1))
    except SQLAlchemyError as exc:
        problems = [f"the file is not a readable badge-bridge database: {db.describe(exc).removeprefix('database error: ')}"]
    finally:
        engine.dispose()
    if report is not None:
        report.verified, report.problems = False, problems
    return {}, problems


def _sqlite_holders(path: Path) -> set[int]:
    """Other processes with the database open: in WAL mode every connection keeps a lock on its -shm.

    /proc/locks is read rather than trying a lock ourselves, because closing a file descriptor would drop
    the locks SQLite holds in this process. Empty where /proc/locks does not exist (not Linux)."""
    inodes = set()
    for candidate in (path, path.with_name(path.name + "-shm")):
        try:
            st = candidate.stat()
        except FileNotFoundError:
            continue
        inodes.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return set()
    holders = set()
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a waiting lock: "1: -> POSIX ..."
            parts.remove("->")
        if len(parts) >= 6 and parts[5] in inodes and parts[4].lstrip("-").isdigit():
            pid = int(parts[4])
            if pid not in (os.getpid(), -1):
                holders.add(pid)
    return holders


def _sqlite_check_idle(path: Path) -> None:
    holders = _sqlite_holders(path)
    if holders:
        raise BackupError(f"database {path} is open in process {', '.join(map(str, sorted(holders)))}: stop the "
                          "bridge (and anything else using it) first, or use --force")
    conn = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise BackupError(f"database {path} is being written ({exc}): stop the bridge first, or use --force") from None
    finally:
        conn.close()


def _sqlite_restore(target: Path, src: Path, trusted: Mapping[str, Ed25519PublicKey], *, force: bool) -> RestoreReport:
    if target.exists() and not force:
        _sqlite_check_idle(target)
    if not target.parent.is_dir():
        raise BackupError(f"folder {target.parent} for the database file does not exist")
    _check_sidecar(src)
    tmp = target.with_name(f".{target.name}.restore-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(src, tmp)
        _fsync(tmp)
        chains, problems = _sqlite_verify(tmp, trusted)
        if problems:
            raise BackupError(f"backup {src} does not verify, nothing was restored: {problems[0]}")
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # how the bridge runs the file
        finally:
            conn.close()
        replaced = _set_aside(target)
        os.replace(tmp, target)
        _fsync(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
        for side in ("-wal", "-shm"):
            tmp.with_name(tmp.name + side).unlink(missing_ok=True)
    return RestoreReport(str(target), sum(c.entries for c in chains.values()), chains, replaced)


def _set_aside(target: Path) -> Path | None:
    """Keep the database being replaced as <db>.before-restore-<ts>, with everything committed in it.

    Its -wal must not survive beside the restored file, or SQLite would replay it into the new one."""
    if not target.exists():
        return None
    conn = sqlite3.connect(target, timeout=LOCK_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass  # --force with a writer still on it: its -wal is kept below, beside the old file
    finally:
        conn.close()
    kept = target.with_name(f"{target.name}.before-restore-{_timestamp()}")
    os.link(target, kept)
    for side in ("-wal", "-shm"):
        extra = target.with_name(target.name + side)
        if extra.exists():
            os.replace(extra, kept.with_name(kept.name + side))
    return kept


# --- PostgreSQL --------------------------------------------------------------------------------------


def _libpq(url: str, dbname: str | None = None) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password, and the environment that carries the password."""
    parsed = make_url(url)
    parts = {"host": parsed.host, "port": parsed.port, "user": parsed.username, "dbname": dbname or parsed.database}
    parts.update({k: v for k, v in parsed.query.items() if isinstance(v, str)})
    conninfo = " ".join(f"{k}='{str(v).replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'"
                        for k, v in parts.items() if v not in (None, ""))
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return conninfo, env


def _run(tool: str, args: list[str], env: dict[str, str], what: str) -> None:
    exe = shutil.which(tool)
    if exe is None:
        raise BackupError(f"{tool} is not installed; install the PostgreSQL client tools (Debian: postgresql-client)")
    result = subprocess.run([exe, *args], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        detail = lines[0] if lines else f"exit {result.returncode}"
        password = env.get("PGPASSWORD")
        if password:
            detail = detail.replace(password, "***")
        raise BackupError(f"{what} failed: {detail}")


def _pg_dump(url: str, out: Path) -> None:
    conninfo, env = _libpq(url)
    partial = out.with_name(out.name + ".partial")
    try:
        _run("pg_dump", ["--format=custom", f"--file={partial}", f"--dbname={conninfo}"], env, "pg_dump")
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    _fsync(partial)
    os.replace(partial, out)
    _fsync(out.parent)


def _admin_engine(url: str) -> Engine:
    return create_engine(make_url(url), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


@contextmanager
def _scratch_database(url: str) -> Iterator[str]:
    """A database of our own on the same server, dropped afterwards whatever happens."""
    name = f"bb_verify_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(url)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except SQLAlchemyError as exc:
        admin.dispose()
        raise BackupError(f"cannot create a scratch database to verify the dump in (the database user needs "
                          f"CREATEDB): {db.describe(exc)}") from None
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _pg_verify_dump(url: str, dump: Path, trusted: Mapping[str, Ed25519PublicKey]) -> Report:
    """Restore the dump into a scratch database and verify the chains there."""
    with _scratch_database(url) as scratch:
        conninfo, env = _libpq(scratch)
        _run("pg_restore", ["--exit-on-error", "--no-owner", "--no-privileges", f"--dbname={conninfo}", str(dump)],
             env, f"restoring {dump.name} into a scratch database")
        engine = db.make_engine(scratch)
        try:
            return verify(engine, scratch, trusted)
        except SQLAlchemyError as exc:
            raise BackupError(f"the restored dump is not a badge-bridge database: {db.describe(exc)}") from None
        finally:
            engine.dispose()


def _pg_other_sessions(url: str) -> list[str]:
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT pid, coalesce(nullif(application_name, ''), usename) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )).all()
    finally:
        engine.dispose()
    return [f"{pid} ({who})" for pid, who in rows]


def _pg_restore_live(url: str, src: Path, trusted: Mapping[str, Ed25519PublicKey], *, force: bool) -> RestoreReport:
    try:
        others = _pg_other_sessions(url)
    except SQLAlchemyError as exc:
        raise BackupError(db.describe(exc, url)) from None
    if others and not force:
        raise BackupError(f"{len(others)} other sessions are connected to the database (pids {', '.join(others)}): "
                          "stop the bridge first, or use --force")
    _check_sidecar(src)
    try:
        chains, problems = _apply(None, _pg_verify_dump(url, src, trusted))
    except BackupError as exc:
        raise BackupError(f"backup {src} does not verify, nothing was restored: {exc}") from None
    if problems:
        raise BackupError(f"backup {src} does not verify, nothing was restored: {problems[0]}")
    conninfo, env = _libpq(url)
    _run("pg_restore", ["--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
                        f"--dbname={conninfo}", str(src)], env, f"restoring {src.name}")
    return RestoreReport(_public_url(url), sum(c.entries for c in chains.values()), chains)


__all__ = ["BackupError", "BackupReport", "RestoreReport", "backup", "restore"]
