"""An administrative change and the audit entry that records it, committed in one transaction.

A change to people, credentials, faces or console users is made by the audit writer, on its thread, in the
transaction that appends its entry (an ``Effect`` that returns the event): a process killed at any point
leaves both or neither, never a change the log does not know (audit verify compares the tables with the
states the entries carry). The change is first tried in a transaction of the caller's that is rolled back,
so a refused change (an ``AdminError``) is reported without touching the log.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TypeVar, cast

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.audit.writer import AuditWriter
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.people import AdminError

T = TypeVar("T")
E = TypeVar("E", bound=Event | None)
Change = Callable[[Session], tuple[T, E]]
"""A change made in the session given, returning (its result, the event recording it, or None when it changed
no recorded row: a site sync that touched only doors or readers)."""


class AuditUnavailable(Exception):
    """The audit log did not take the change in time; the change was not made."""


def commit_change(writer: AuditWriter, change: Change[T, E], timeout: float = 30.0) -> tuple[T, E]:
    """Make ``change`` and commit it with its audit entry on ``writer``'s chain; (result, recorded event).
    ``result`` is detached: its loaded attributes (ids, names) can be read, relations cannot."""
    with Session(writer.engine) as trial:  # the checks, the errors an operator must see; closing rolls back
        _, planned = change(trial)
    if planned is None:
        return _unrecorded(writer, change)
    made: dict[str, T] = {}
    recorded: list[Event] = []
    done = threading.Event()

    def effect(conn: Connection) -> Event:
        with Session(bind=conn, expire_on_commit=False) as session:
            result, event = change(session)
            session.flush()
            session.expunge_all()
        if event is None:
            raise AdminError("the change no longer changes anything (another change made it meanwhile)")
        made["result"] = result
        return dataclasses.replace(event, id=planned.id)

    def ack(event: Event, _duplicate: bool) -> None:
        recorded.append(event)
        done.set()

    writer.submit(planned, ack, effect=effect)
    if not done.wait(timeout):
        raise AuditUnavailable(f"the audit log did not confirm the change in time; it is made only once its "
                               f"entry is written: {writer.stats.last_error}")
    if recorded[0].kind == EventKind.AUDIT_QUARANTINED:  # the change failed in the writer's transaction
        raise AdminError(f"the change could not be made (it conflicted with another change; try again): "
                         f"{recorded[0].detail.get('error')}")
    return made["result"], cast(E, recorded[0])


def _unrecorded(writer: AuditWriter, change: Change[T, E]) -> tuple[T, E]:
    """A change that touches no recorded row needs no entry; were it to now (another change made meanwhile),
    it is refused, to be tried again."""
    with Session(writer.engine, expire_on_commit=False) as session, session.begin():
        result, event = change(session)
        if event is not None:
            raise AdminError("the tables changed while the change was being made; try again")
    return result, event
