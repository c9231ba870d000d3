"""Least privilege on PostgreSQL: what the bridge's role (the bridge, the console and the CLI on
``database.url``) may do, granted by the owner role that runs the migrations (``database.owner_url``).

The audit tables are append-only for the bridge's role by privilege, not only by trigger: it may INSERT and
SELECT there and nothing else, so it cannot UPDATE, DELETE or TRUNCATE them, and, not owning them, cannot
drop or disable their triggers; a role that is not a superuser cannot SET session_replication_role either.
Pruning (the one DELETE of audit entries) runs as the owner. Operational tables get exactly what the code
writes (grep for insert/update/delete and ORM changes when adding a write); everything else is SELECT only.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from badge_bridge.models import Base

AUDIT_TABLES = ("audit_entry", "checkpoint", "segment", "signing_key", "tree_head", "witness_cosignature",
                "tree_frontier")
"""INSERT and SELECT only. ``prune_window`` gets nothing: only pruning, as the owner, uses it."""
OWNER_ONLY = ("prune_window",)
WRITES = {
    "alarm": "INSERT, UPDATE",  # raised and cleared with their events; acknowledged and resolved at the console
    "site_state": "INSERT, UPDATE, DELETE",  # lockdowns, unlocks, anti-passback that survive a restart
    "partition_lease": "INSERT, UPDATE",  # which bridge of a partition is active (failover/lease.py)
    "dead_letter": "INSERT",  # refused input
    "controller": "UPDATE (online, last_seen)",  # liveness
    "console_session": "INSERT, UPDATE",  # console logins, their activity and end
    "console_user": "INSERT, UPDATE",  # audited admin changes (console, CLI)
    "person": "INSERT, UPDATE",
    "person_level": "INSERT, DELETE",  # a person's levels are replaced as a set
    "credential": "INSERT, UPDATE",
    "face_template": "INSERT, DELETE",  # enrolment and removal of faces
    "tenant": "INSERT, UPDATE",  # customers, from the site file
    "visit": "INSERT, UPDATE",  # registered, checked in, badge returned, overdue
    "access_request": "INSERT, UPDATE",  # opened, endorsed, approved, refused, expired
}
ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


class GrantError(Exception):
    """The grants cannot be made as asked; the message says what to do."""


def check_role(role: str) -> str:
    if not ROLE_RE.match(role):
        raise GrantError(f"role {role!r}: expected a lowercase PostgreSQL role name (letters, digits, _)")
    return role


def statements(role: str) -> list[str]:
    """The SQL the owner runs so that ``role`` has exactly what the bridge, the console and the CLI need."""
    check_role(role)
    tables = sorted(Base.metadata.tables)
    stmts = [f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
             f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
             f"GRANT USAGE ON SCHEMA public TO {role}",
             f"GRANT SELECT ON alembic_version TO {role}"]
    for table in tables:
        if table in OWNER_ONLY:
            continue
        stmts.append(f"GRANT SELECT ON {table} TO {role}")
        if table in AUDIT_TABLES:
            stmts.append(f"GRANT INSERT ON {table} TO {role}")
        elif table in WRITES:
            stmts.append(f"GRANT {WRITES[table]} ON {table} TO {role}")
    stmts.append(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")  # ids of the rows it inserts
    return stmts


def check_postgresql(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        raise GrantError("grants are for PostgreSQL; a SQLite file is protected by its file permissions")


def apply(owner: Engine, role: str) -> list[str]:
    """Run ``statements`` on the owner's connection, after checking the role cannot sidestep them."""
    check_postgresql(owner)
    stmts = statements(role)
    with owner.begin() as conn:
        found = conn.execute(text("SELECT rolsuper, pg_has_role(:r, current_user, 'MEMBER') FROM pg_roles "
                                  "WHERE rolname = :r"), dict(r=role)).first()
        if found is None:
            raise GrantError(f"role {role} does not exist; create it first: CREATE ROLE {role} LOGIN PASSWORD '...'")
        if found[0]:
            raise GrantError(f"role {role} is a superuser: it could bypass every grant and trigger; use a plain role")
        if found[1]:
            raise GrantError(f"role {role} is, or is a member of, the owner role {conn.scalar(text('SELECT current_user'))}"
                             ": it could alter the audit tables; use a separate role for the bridge")
        owned = conn.scalar(text(
            "SELECT count(*) FROM (SELECT relowner AS o FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() UNION ALL SELECT proowner FROM pg_proc p JOIN pg_namespace n ON "
            "n.oid = p.pronamespace WHERE n.nspname = current_schema()) x WHERE o = (SELECT oid FROM pg_roles WHERE "
            "rolname = :r)"), dict(r=role))
        if owned:
            raise GrantError(f"role {role} owns {owned} tables, sequences or functions (an install from before "
                             "least privilege): an owner ignores grants and can drop the triggers; as the owner role "
                             f"run REASSIGN OWNED BY {role} TO CURRENT_USER first")
        for stmt in stmts:
            conn.execute(text(stmt))
    return stmts
