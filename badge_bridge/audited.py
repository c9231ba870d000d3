"""An administrative change and the audit entry that records it, committed in one transaction.

A change to people, credentials, faces, console users or the site's levels is made by the audit writer, on
its thread, in the transaction that appends its entry (an ``Effect`` that returns the event carrying the rows'
state): a process killed at any point leaves both or neither, never a change the log does not know (audit
verify compares the tables with those states). The change functions check everything before they write, and
the session does not flush on its own, so a refused change (an ``AdminError``) writes nothing and no entry.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.audit.writer import AuditWriter, NoEntry
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.people import AdminError

T = TypeVar("T")
E = TypeVar("E", bound=Event | None)
Change = Callable[[Session], tuple[T, E]]
"""A change made in the session given, returning (its result, the event recording it, or None when it changed
no recorded row: a site sync that touched only doors or readers)."""


class AuditUnavailable(Exception):
    """The audit log did not confirm the change in time."""


def commit_change(writer: AuditWriter, actor: str, change: Change[T, E], timeout: float = 30.0) -> tuple[T, E]:
    """Make ``change`` and commit it with its audit entry on ``writer``'s chain; (result, recorded event).
    ``result`` is detached: its loaded attributes (ids, names) can be read, relations cannot."""
    now = datetime.now(UTC)
    reserved = Event(id=Event.new_id("admin"), kind=EventKind.ADMIN_CHANGE, source=actor, ts=now, received_ts=now)
    """Stands in the queue for the entry the change makes; seen only in the audit.quarantined entry of a change
    that failed in the database."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def effect(conn: Connection) -> Event:
        outcome.clear()  # a batch retried after the database was away runs its effects again
        with Session(bind=conn, autoflush=False, expire_on_commit=False) as session:
            try:
                result, event = change(session)
            except AdminError as exc:
                outcome["error"] = exc
                raise NoEntry from None
            session.flush()
            session.expunge_all()
        outcome["result"], outcome["event"] = result, event
        if event is None:
            raise NoEntry
        return dataclasses.replace(event, id=reserved.id)

    def ack(event: Event, _no_entry: bool) -> None:
        outcome["recorded"] = event
        done.set()

    writer.submit(reserved, ack, effect=effect)
    if not done.wait(timeout):
        raise AuditUnavailable(f"the audit log did not confirm the change in time; it is made only once its "
                               f"entry is written: {writer.stats.last_error}")
    if "error" in outcome:
        raise outcome["error"]
    if outcome["recorded"].kind == EventKind.AUDIT_QUARANTINED:  # it failed in the database: nothing made
        raise AdminError(f"the change could not be made (another change conflicted with it; try again): "
                         f"{outcome['recorded'].detail.get('error')}")
    return outcome["result"], cast(E, outcome["recorded"] if outcome["event"] is not None else None)
