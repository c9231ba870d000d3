"""Engines, migrations and database errors an operator can act on.

SQLite runs in WAL mode with synchronous=FULL: a commit is on disk when it returns, which is what lets the
audit writer acknowledge a source only after commit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

if TYPE_CHECKING:  # alembic is imported where migrations run: worker processes that only read do not need it
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseError(Exception):
    """A database problem described for the operator, with what to do about it."""


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA busy_timeout = 5000")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = FULL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def make_engine(url: str, *, must_exist: bool = True) -> Engine:
    """Create an engine after checking what can be checked up front (file exists, is writable)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database URL {url!r} is not a valid SQLAlchemy URL") from None
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path, must_exist=must_exist)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    return create_engine(url)


def _check_sqlite_file(path: Path, *, must_exist: bool) -> None:
    if not path.exists():
        if must_exist:
            raise DatabaseError(f"database file {path} does not exist; create it with `badge-bridge init`")
        if not path.parent.is_dir():
            raise DatabaseError(f"folder {path.parent} for the database file does not exist")
        if not os.access(path.parent, os.W_OK):
            raise DatabaseError(f"folder {path.parent} is read-only; the database file cannot be created there")
        return
    if not os.access(path, os.W_OK):
        raise DatabaseError(f"database file {path} is read-only; the bridge must be able to write to it")
    if not os.access(path.parent, os.W_OK):
        raise DatabaseError(f"folder {path.parent} is read-only; SQLite needs it writable for its WAL files")


def describe(exc: BaseException, url: str | None = None) -> str:
    """One line saying what went wrong with the database, for logs and the CLI."""
    where = ""
    if url:
        parsed = make_url(url)
        where = f" ({parsed.get_backend_name()} {parsed.host or parsed.database})"
    if isinstance(exc, DatabaseError):
        return str(exc)
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if "database is locked" in text:
        return f"database is locked by another process{where}; it will be retried"
    if "readonly database" in text:
        return f"database is read-only{where}: {text}"
    if "Connection refused" in text or "connection refused" in text:
        return f"database refused the connection{where}: is the server running and reachable?"
    return f"database error{where}: {text}"


def _alembic_config(engine_conn: object) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = engine_conn
    return cfg


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration (so `run` can refuse an un-migrated database)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


__all__ = ["DatabaseError", "SQLAlchemyError", "describe", "make_engine", "migrate", "schema_is_current", "sqlite_path"]
