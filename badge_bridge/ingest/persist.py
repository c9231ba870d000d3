"""What the bridge must not forget across a restart, kept in ``site_state``: the key names, the encoding,
the write with each message's audit entry, and the restore at start.

Facts kept, one row each (key -> canonical JSON; no row is the default):

- ``lockdown`` -> ``true``: the whole site is locked down;
- ``lockdown/door/<door>`` -> ``true``: that door is locked down (a site or an area lockdown names them);
- ``door/<door>`` -> lock (``unlocked`` with ``until``, the end of a timed unlock, or null: until a lock
  command; ``locked``), contact (``open`` with ``opened_at``, ``closed``) of a door not locked and closed;
- ``position/<person>`` -> the area the person last entered (anti-passback);
- ``two-person/<door>`` -> ``{"person", "since"}``: the first person waiting at a two-person door.

Open door alarms and their acknowledgements are not here: they live in the ``alarm`` table, written with
their own audit entries (``records``), and are read back at start (``Processor.restore_alarms``).

**Written with the audit entry.** The state objects journal what they change (``AccessState.journal``,
``DoorMonitor.changed``); after each message the processor takes the journal and attaches one effect to the
last event the message caused, so a fact's row commits in the transaction of the audit entry that changed
it (``AuditWriter.submit(effect=...)``). Taking the journal costs a few set operations per message, not a
look at every person.

**SIGKILL.** Nothing is half-written: a row and its audit entry commit together or not at all. A grant's
command leaves for the controller before the commit (a door cannot wait for a disk). If the process dies
between the two, the database has neither the grant nor the position it gave; but the controller's
message was not acknowledged to the broker either (that waits for the commit), so the broker delivers it
again to the restarted bridge, which decides it again on the restored state (the state as of the last
commit, which is the state the first decision saw), audits it (not actuated again if older than
``access.REQUEST_MAX_AGE``) and writes the position then. The person's door opening, queued behind it, is
matched to that grant. A console command the bridge died before committing is likewise delivered again and
carried out. The window in which a fact is lost is therefore that of the broker's session (its expiry,
``mqtt.session_expiry_s``), not that of the audit batch.

**A row that cannot be read** (a DBA's edit, a bad restore) never stops the start: it is logged at every
start, left in place for the DBA, and read as the safe value:

- a lockdown row reads as locked down (a site kept locked is a guard's call to lift; a site opened by a
  typo is not);
- a door row reads as locked and its contact as unknown (an unlock is never made of garbage);
- a two-person wait reads as absent (both people present again);
- a position reads as absent (the person is where no anti-passback rule applies: the one entry a bridge
  installed fresh would allow; treating it as "inside everywhere" would lock the holder out of every door
  with no way for the desk to correct it).

**Expired facts are dropped**, not restored: a two-person wait past its window (its row is deleted with the
next write), a timed unlock past its end (the door is relocked at start and that is audited as
``door.relocked`` dated at the unlock's end, as the timer would have).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, StrictInt, StrictStr, TypeAdapter
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.audit.writer import Effect
from badge_bridge.controllers import contract as c
from badge_bridge.doors import DoorMonitor, DoorStatus
from badge_bridge.failover.shared_state import announce
from badge_bridge.ingest.commands import command_id
from badge_bridge.models import SiteState
from badge_bridge.policy import AccessState, Change

log = logging.getLogger(__name__)

LOCKDOWN = "lockdown"
LOCKDOWN_DOOR = "lockdown/door/"
DOOR = "door/"
POSITION = "position/"
TWO_PERSON = "two-person/"

Row = tuple[str, str | None]
"""A key and its canonical JSON, or None: the fact is back to its default, the row goes."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DoorRow(_Strict):
    """Fields in alphabetical order, as every row's: the JSON pydantic writes is then canonical."""

    contact: Literal["open", "closed", "unknown"] = "unknown"
    lock: Literal["locked", "unlocked"]
    opened_at: AwareDatetime | None = None
    until: AwareDatetime | None = None


class WaitRow(_Strict):
    person: StrictInt
    since: AwareDatetime


_TRUE = TypeAdapter(Literal[True])
_AREA = TypeAdapter(StrictStr)


# --- after each message: the journal becomes rows, the rows an effect ---------------------------------


def take(state: AccessState, doors: DoorMonitor) -> list[Row]:
    """The facts changed since the last call, as rows, and the journals emptied."""
    rows: list[Row] = []
    if state.journal:
        rows += [_fact_row(state, change) for change in state.journal]
        state.journal.clear()
    if doors.changed:
        rows += [_door_row(doors.doors[door]) for door in doors.changed]
        doors.changed.clear()
    return rows


def _fact_row(state: AccessState, change: Change) -> Row:
    fact, ident = change
    if fact == "location":
        area = state.location.get(ident)  # type: ignore[call-overload]
        return f"{POSITION}{ident}", None if area is None else _AREA.dump_json(area).decode()
    if fact == "waiting":
        wait = state.waiting.get(ident)  # type: ignore[call-overload]
        return f"{TWO_PERSON}{ident}", None if wait is None else WaitRow(person=wait[0], since=wait[1]).model_dump_json()
    if fact == "lockdown_door":
        return f"{LOCKDOWN_DOOR}{ident}", "true" if ident in state.lockdown_doors else None
    assert fact == "lockdown_all", fact
    return LOCKDOWN, "true" if state.lockdown_all else None


def _door_row(status: DoorStatus) -> Row:
    unlocked = status.lock == "unlocked"
    if not unlocked and status.contact != "open":
        return f"{DOOR}{status.key}", None
    row = DoorRow(lock="unlocked" if unlocked else "locked", until=status.unlocked_until, contact=status.contact,  # type: ignore[arg-type]
                  opened_at=status.opened_at)
    return f"{DOOR}{status.key}", row.model_dump_json()


def effect(partition: str, rows: list[Row], event_id: str, now: datetime) -> Effect:
    """Writes ``rows`` for the audit entry ``event_id`` of ``partition``, in its transaction, and announces
    their keys to the other partitions when it commits (``failover.shared_state``, PostgreSQL)."""
    gone = [(key,) for key, value in rows if value is None]
    kept = [(key, value, event_id, partition) for key, value in rows if value is not None]

    def write(conn: Connection) -> None:
        upsert, remove, stamp = _statements(conn)
        announce(conn, partition, (key for key, _ in rows))
        if gone:
            conn.exec_driver_sql(remove, gone)
        if kept:
            at = stamp(now)
            conn.exec_driver_sql(upsert, [(*row, at) for row in kept])

    return write


_SQL: dict[str, tuple[str, str, Callable[[datetime], object]]] = {}


def _statements(conn: Connection) -> tuple[str, str, Callable[[datetime], object]]:
    """Driver-level statements, as the audit writer's own insert: compiling a Core upsert per message
    would cost the writer more than the audit entry itself. Both databases speak ``ON CONFLICT``."""
    dialect = conn.dialect
    if dialect.name not in _SQL:
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        upsert = (f'INSERT INTO site_state ("key", value, event_id, "partition", updated_at) VALUES ({mark}, {mark}, '
                  f'{mark}, {mark}, {mark}) ON CONFLICT ("key") DO UPDATE SET value = excluded.value, '
                  'event_id = excluded.event_id, "partition" = excluded."partition", updated_at = excluded.updated_at '
                  # two partitions deciding about one person: the later decision stands, whichever commits last
                  'WHERE site_state.updated_at <= excluded.updated_at')
        remove = f'DELETE FROM site_state WHERE "key" = {mark}'
        bind = SiteState.__table__.c.updated_at.type.bind_processor(dialect)
        _SQL[dialect.name] = (upsert, remove, bind or (lambda value: value))
    return _SQL[dialect.name]


# --- at start ---------------------------------------------------------------------------------------


def load(session: Session) -> list[tuple[str, str]]:
    """Every fact of the site: each partition restores the positions and lockdowns and its own doors' rows."""
    return [(key, value) for key, value in session.execute(select(SiteState.key, SiteState.value).order_by(SiteState.key))]


@dataclass
class Restored:
    """What a start found, for the log and the tests."""

    lockdown_all: bool = False
    lockdown_doors: list[str] = field(default_factory=list)
    unlocked: dict[str, datetime | None] = field(default_factory=dict)
    open_doors: list[str] = field(default_factory=list)
    positions: int = 0
    waits: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Expired facts: not restored."""
    unreadable: list[str] = field(default_factory=list)
    """Rows that could not be read, taken as their safe value."""

    def summary(self) -> str:
        until = {d: u.isoformat() if u else "until locked" for d, u in sorted(self.unlocked.items())}
        return (f"site lockdown: {'yes' if self.lockdown_all else 'no'}; doors locked down: {sorted(self.lockdown_doors)}; "
                f"unlocked: {until}; open: {sorted(self.open_doors)}; anti-passback positions: {self.positions}; "
                f"two-person waits: {sorted(self.waits)}; expired, dropped: {sorted(self.dropped)}; "
                f"unreadable, taken as safe: {sorted(self.unreadable)}")


def restore(rows: Iterable[tuple[str, str]], state: AccessState, doors: DoorMonitor, windows: dict[str, float],
            now: datetime, foreign: Collection[str] = ()) -> Restored:
    """Put the rows back into ``state`` and ``doors``. ``windows``: each two-person door's window in seconds;
    ``foreign``: the site's doors other partitions serve, whose rows are theirs. Timed unlocks already over
    are restored as they were: the caller relocks them (``DoorMonitor.relock``) so that is audited."""
    found = Restored()
    expired: list[Change] = []
    for key, value in rows:
        if door_of(key) in foreign:
            continue
        try:
            _restore_row(key, value, state, doors, windows, now, found, expired)
        except ValueError as exc:  # pydantic's ValidationError is one
            found.unreadable.append(key)
            log.error("site state %r cannot be read (%s); taken as its safe value", key, str(exc).splitlines()[0])
            _safe(key, state, doors)
    added: list[Change] = []
    if state.lockdown_all:  # each of our doors too, as the site lockdown given here would have (shared_facts)
        added = [("lockdown_door", door) for door in doors.doors if door not in state.lockdown_doors]
        state.lockdown_doors |= set(doors.doors)
    for door in state.lockdown_doors:
        doors.set_lock(door, "lockdown")
    found.lockdown_all, found.lockdown_doors = state.lockdown_all, sorted(state.lockdown_doors)
    found.unlocked = {s.key: s.unlocked_until for s in doors.doors.values() if s.lock == "unlocked"}
    found.open_doors = [s.key for s in doors.doors.values() if s.contact == "open"]
    state.journal.clear()
    state.journal.update(expired + added)  # their rows go with the next write
    doors.changed.clear()
    return found


def _restore_row(key: str, value: str, state: AccessState, doors: DoorMonitor, windows: dict[str, float],
                 now: datetime, found: Restored, expired: list[Change]) -> None:
    if key == LOCKDOWN:
        _TRUE.validate_json(value)
        state.lockdown_all = True
    elif key.startswith(LOCKDOWN_DOOR):
        door = _door(key[len(LOCKDOWN_DOOR):], doors)
        _TRUE.validate_json(value)
        state.lockdown_doors.add(door)
    elif key.startswith(DOOR):
        door_row = DoorRow.model_validate_json(value)
        status = doors.doors[_door(key[len(DOOR):], doors)]
        if door_row.lock == "unlocked":
            doors.set_lock(status.key, "unlocked", door_row.until)
        status.contact, status.opened_at = door_row.contact, door_row.opened_at
    elif key.startswith(POSITION):
        person = _person(key[len(POSITION):])
        state.location[person] = _AREA.validate_json(value)
        found.positions += 1
    elif key.startswith(TWO_PERSON):
        door = _door(key[len(TWO_PERSON):], doors)
        wait = WaitRow.model_validate_json(value)
        if door not in windows:
            raise ValueError(f"door {door!r} is not a two-person door")
        if now - wait.since > timedelta(seconds=windows[door]):
            found.dropped.append(key)
            expired.append(("waiting", door))
        else:
            state.waiting[door] = (wait.person, wait.since)
            found.waits.append(door)
    else:
        raise ValueError("not a key this bridge writes")


def replace(key: str, value: str | None, state: AccessState, doors: DoorMonitor, windows: dict[str, float],
            now: datetime) -> bool:
    """Set one fact to what another partition committed (``value`` None: its row is gone, the default), as
    a start would read it: a row that cannot be read is taken as its safe value (and False is returned).
    Door facts must name a door of ``doors``; the caller sets the locks the lockdowns imply."""
    try:
        _reset(key, state, doors)
        if value is not None:
            _restore_row(key, value, state, doors, windows, now, Restored(), [])
    except ValueError as exc:
        log.error("site state %r from another partition cannot be read (%s); taken as its safe value", key,
                  str(exc).splitlines()[0])
        _safe(key, state, doors)
        return False
    return True


def _reset(key: str, state: AccessState, doors: DoorMonitor) -> None:
    """A fact back to its default: what no row means."""
    if key == LOCKDOWN:
        state.lockdown_all = False
    elif key.startswith(LOCKDOWN_DOOR):
        state.lockdown_doors.discard(key[len(LOCKDOWN_DOOR):])
    elif key.startswith(DOOR):
        status = doors.doors[_door(key[len(DOOR):], doors)]
        if status.lock == "unlocked":
            doors.set_lock(status.key, "locked")
        if status.contact == "open":
            status.contact, status.opened_at = "closed", None
    elif key.startswith(POSITION):
        state.location.pop(_person(key[len(POSITION):]), None)
    elif key.startswith(TWO_PERSON):
        state.waiting.pop(key[len(TWO_PERSON):], None)


def _safe(key: str, state: AccessState, doors: DoorMonitor) -> None:
    """The safe reading of a row that could not be read: only a lockdown has one that is not the default."""
    if key == LOCKDOWN:
        state.lockdown_all = True
    elif key.startswith(LOCKDOWN_DOOR) and key[len(LOCKDOWN_DOOR):] in doors.doors:
        state.lockdown_doors.add(key[len(LOCKDOWN_DOOR):])


def door_of(key: str) -> str | None:
    """The door a fact's key names (a door's lock, its lockdown, its two-person wait), None for the others."""
    for prefix in (LOCKDOWN_DOOR, DOOR, TWO_PERSON):
        if key.startswith(prefix):
            return key[len(prefix):]
    return None


def _door(door: str, doors: DoorMonitor) -> str:
    if door not in doors.doors:
        raise ValueError(f"door {door!r} is not in the site file")
    return door


def _person(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ValueError(f"person {text[:40]!r} is not a person id")
    return int(text)


def commands(doors: DoorMonitor, by_controller: dict[str, list[str]], now: datetime,
             ) -> list[tuple[str, c.Lockdown | c.Unlock]]:
    """What the controllers must be told again after a restart (they may have restarted too): the doors
    locked down, and those unlocked, for what is left of a timed unlock. ``by_controller``: each
    controller's doors (``Wiring.by_controller``)."""
    sent: list[tuple[str, c.Lockdown | c.Unlock]] = []
    for controller, mine in by_controller.items():
        down = [d for d in mine if doors.doors[d].lock == "lockdown"]
        base = command_id("restore", f"{controller}:{now.isoformat()}")
        if down:
            sent.append((controller, c.Lockdown(type="lockdown", id=f"{base}-l", ts=now, active=True, doors=down)))
        for door in mine:
            status = doors.doors[door]
            if status.lock != "unlocked":
                continue
            left = None if status.unlocked_until is None else (status.unlocked_until - now).total_seconds()
            if left is None or left > 0:
                sent.append((controller, c.Unlock(type="unlock", id=command_id("restore", f"{base}:{door}"), ts=now,
                                                  door=door, duration_s=left, by="bridge",
                                                  reason="restored after a restart")))
    return sent
