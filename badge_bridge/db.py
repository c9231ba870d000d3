"""Engines, migrations and database errors an operator can act on.

SQLite runs in WAL mode with synchronous=FULL: a commit is on disk when it returns, which is what lets the
audit writer acknowledge a source only after commit.

PostgreSQL may be a primary with a synchronous standby, named together in one multi-host URL
(``postgresql+psycopg://user@/db?host=h1:5432&host=h2:5432&target_session_attrs=read-write``): each new
connection tries the hosts in order and keeps the one that accepts writes, so after a failover the next
connection finds the promoted standby by itself. ``server_unavailable`` tells such a failover (a server gone,
restarting, or read-only) from a value the database refuses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

if TYPE_CHECKING:  # alembic is imported where migrations run: worker processes that only read do not need it
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")

CONNECT_TIMEOUT_S = 5
"""Per host of a multi-host URL: a server that does not answer (a dead machine, a cut network) costs this
long before the next host is tried."""
SILENT_SERVER = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
                 "tcp_user_timeout": 5000}
"""libpq's TCP settings: a server that goes silent without closing the connection (a cut cable, a frozen
machine) is given up within about 5-9 s, as a database that is away (the writer retries, the lease's renewal
says ``db_away``), instead of a statement blocked for the kernel's default of many minutes."""
SERVER_UNAVAILABLE = frozenset({
    "25006",  # read_only_sql_transaction: a standby, or a demoted primary, took our connection
    "57P01", "57P02", "57P03",  # admin_shutdown, crash_shutdown, cannot_connect_now (starting, in recovery)
})
"""SQLSTATEs that say the server cannot take our writes now, not that a value is wrong: a failover under way."""


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
        if len(hosts_of(url)) > 1 and "target_session_attrs" not in parsed.query:
            # Several servers and no word on which: only the one that accepts writes will do for the bridge.
            parsed = parsed.update_query_dict({"target_session_attrs": "read-write"})
        # pre-ping: a pooled connection to a server that died (failed over) is replaced before use.
        engine = create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S, **SILENT_SERVER})
        event.listen(engine, "handle_error", _unavailable_is_disconnect)
        return engine
    return create_engine(url)


def libpq_params(engine: Engine) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` to the servers an engine names, for a connection of its own
    (``LISTEN``): the dialect's own reading of the URL, so a multi-host URL becomes libpq's ``host=h1,h2
    port=p1,p2`` rather than a host named "h1:5432", with the engine's timeouts and keepalives."""
    _args, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's type adapters, not a libpq parameter
    return {**params, "connect_timeout": CONNECT_TIMEOUT_S, **SILENT_SERVER}


def server_unavailable(exc: BaseException) -> bool:
    """The PostgreSQL server cannot take writes now (read-only, shutting down, starting): the caller should
    retry, on a new connection, rather than treat the statement as refused."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(orig, "sqlstate", None) in SERVER_UNAVAILABLE


def _unavailable_is_disconnect(context: ExceptionContext) -> None:
    """A read-only server still answers the pool's pre-ping: count its refusal as a lost connection, so the
    pool is emptied and the next connection goes through ``target_session_attrs`` to the server that now
    accepts writes (the raised error then says ``connection_invalidated``)."""
    if context.original_exception is not None and server_unavailable(context.original_exception):
        context.is_disconnect = True


def hosts_of(url: str) -> list[str]:
    """The servers a URL names: its host, or each ``host`` of a multi-host URL's query."""
    parsed = make_url(url)
    query_hosts = parsed.query.get("host", ())
    hosts = [query_hosts] if isinstance(query_hosts, str) else list(query_hosts)
    return hosts or ([parsed.host] if parsed.host else [])


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
        where = f" ({parsed.get_backend_name()} {','.join(hosts_of(url)) or parsed.database})"
    if isinstance(exc, DatabaseError):
        return str(exc)
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if "database is locked" in text:
        return f"database is locked by another process{where}; it will be retried"
    if "readonly database" in text:
        return f"database is read-only{where}: {text}"
    if "session is read-only" in text or "server is in hot standby mode" in text:
        return (f"no database server named in the URL takes writes now{where} (the primary is down and no standby "
                f"is promoted yet, or the URL lists only standbys): {text}; it will be retried")
    if server_unavailable(exc):
        return f"database server cannot take writes now (a standby, or failing over){where}: {text}; it will be retried"
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


__all__ = ["DatabaseError", "SQLAlchemyError", "describe", "hosts_of", "make_engine", "migrate", "schema_is_current",
           "server_unavailable", "sqlite_path"]
