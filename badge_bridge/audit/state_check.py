"""Whether the access tables hold what the log's admin entries say they hold.

Every administrative change records the state of the rows it changed (badge_bridge.audit.access_tables);
replaying the admin entries of every chain in the order they were written (their row id: two changes of one
row are serialized by its lock, so the second one's entry is inserted after the first's commit; a process's
clock plays no part) gives what
people, credentials, levels, schedules, console users and faces must be. A row that differs was changed
around the audited commands: by hand in the database, or in a backup that was then restored. `audit verify`
names each such row; the bridge checks at start and every minute (badge_bridge.state_watch).

A database from before state records has none: ``audit baseline`` (and ``init``, once, on such a database)
records every row as it stands, the operator's attestation, audited with who ran it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.audit.access_tables import Replay, State, compare, snapshot
from badge_bridge.audit.ownership import covered_head
from badge_bridge.audit.scan import Finding
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.models import AuditEntry
from badge_bridge.people import admin_event

ADMIN = (AuditEntry.kind >= "admin.") & (AuditEntry.kind < "admin/")
"""The admin.* entries, as a range the kind index serves (LIKE does not, on PostgreSQL)."""
NO_STATE = ("the log records no state of the access tables (a database from before state records): run "
            "`badge-bridge audit baseline` once to record the current rows")


def admin_entries(conn: Connection, since_us: int = 0) -> Iterator[tuple[str, int, int, str, int]]:
    """(chain, seq, received_us, detail, id) of the admin entries received at or after ``since_us``, in the
    order they were written."""
    yield from conn.execute(
        select(AuditEntry.chain_id, AuditEntry.seq, AuditEntry.received_us, AuditEntry.detail, AuditEntry.id)
        .where(ADMIN, AuditEntry.received_us >= since_us).order_by(AuditEntry.id))


def has_state_records(conn: Connection) -> bool:
    """Whether any admin entry carries a state (canonical JSON: the key is written ``"state":``)."""
    return bool(conn.scalar(select(exists().where(ADMIN, AuditEntry.detail.contains('"state":')))))


def signed_through(conn: Connection, trusted: Mapping[str, Ed25519PublicKey]) -> dict[str, int]:
    """Per chain holding admin entries, the newest entry a valid signature of a trusted key covers: an admin
    entry past it (planted by hand, with its state) must not vouch for the tables."""
    chains = conn.scalars(select(AuditEntry.chain_id).where(ADMIN).distinct())
    return {chain: covered_head(conn, chain, trusted)[0] for chain in chains}


def logged(conn: Connection, trusted: Mapping[str, Ed25519PublicKey] | None = None) -> Replay:
    """Every admin entry applied in log order (with ``trusted``: only the signed ones)."""
    done = Replay()
    through = signed_through(conn, trusted) if trusted is not None else None
    for chain, seq, _, detail, _id in admin_entries(conn):
        if through is None or seq <= through.get(chain, 0):
            done.apply(detail, (chain, seq))
    return done


def needs_baseline(conn: Connection) -> bool:
    """A database from before state records: rows, and no admin entry recording any."""
    return not has_state_records(conn) and bool(tables(conn))


def tables(conn: Connection) -> dict[str, dict[str, object]]:
    with Session(bind=conn) as session:
        return snapshot(session)


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection that sees the log and the tables as of one moment: read at two moments, a change
    committed in between would look like a row edited around the log."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # the driver begins only before writes; a read transaction is a snapshot
        yield conn


def findings(engine: Engine, trusted: Mapping[str, Ed25519PublicKey] | None = None) -> list[Finding]:
    """One finding per row that differs, at the entry that last recorded it (an unrecorded row: the last
    admin entry, after which it appeared). None for a log without state records (see ``NO_STATE``)."""
    with reading(engine) as conn:
        done = logged(conn, trusted)
        now = tables(conn)
    if done.last is None:  # nothing to compare with: said by `audit verify`, solved by `init` or `audit baseline`
        return []
    return [Finding(*done.recorded_by.get(d.key, done.last), "state", str(d)) for d in compare(now, done.rows)]


def baseline(session: Session, actor: str, reason: str) -> tuple[int, Event]:
    """``audit baseline``: the operator attests the tables as they are, in one entry carrying every row's state
    (and ``null`` for a row the log has that the tables lack); (rows that differed from the log, the event)."""
    now = snapshot(session)
    done = logged(session.connection())
    rows: dict[str, State | None] = {**now, **{key: None for key in done.rows.keys() - now.keys()}}
    differed = len(compare(now, done.rows)) if done.last is not None else len(rows)
    return differed, admin_event(EventKind.ADMIN_STATE_BASELINE, actor, {},
                                 {"reason": reason, "rows": len(rows), "differed": differed}, *rows.items())


def carried(session: Session, actor: str, reason: str) -> Event | None:
    """The log's own states (not the tables') in one entry, written before older entries are pruned, so the
    replay of what remains still gives every row; None when the log records no state."""
    done = logged(session.connection())
    if done.last is None:
        return None
    return admin_event(EventKind.ADMIN_STATE_BASELINE, actor, {}, {"reason": reason, "rows": len(done.rows),
                                                                    "carried": True}, *done.rows.items())
