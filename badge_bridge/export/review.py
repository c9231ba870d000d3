"""The monthly access review an auditor works through (PCI DSS 10, SOC 2 CC6.4, ISO 27001 A.7.2): each
section is a table, written as its own CSV beside the PDF (the PDF shows the same rows, the first
``LIST_MAX`` of a long one).

Activity (entries, denials, alarms) comes from SQL aggregates over the month's exported seq ranges; the
only table read row by row is the list of entries into restricted areas, streamed into its CSV. "Entries"
are grants at a reader whose direction is ``in``; exits are counted apart. The access review (who held what,
who changed it) is rebuilt from the log: the admin entries' recorded states (``audit.access_tables``)
replayed up to the month's end, never today's tables, so a later change cannot leak into an old month.
Door names and areas are the site's configuration as it is now.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.audit import access_tables
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import from_us, to_us
from badge_bridge.export import format as fmt
from badge_bridge.models import Area, Door, Person, Schedule
from badge_bridge.policy import Reason

if TYPE_CHECKING:
    from badge_bridge.export.write import ExportSummary

BUSINESS_SCHEDULE = "business"
"""Entries outside this schedule are after hours; without it, Monday to Friday 07:00-19:00 site time."""
UNUSED_DAYS = 90
REVOKE_WITHIN_H = 24
"""A leaver's credential revoked later than this after they left is flagged."""
LIST_MAX = 60
"""Rows the PDF shows of a table; its CSV holds every row."""
FLAGGED_DENIALS = {"credential_revoked": "REVOKED card used", "credential_lost": "LOST card used",
                   "expired": "EXPIRED card used", "credential_suspended": "SUSPENDED card used",
                   "person_inactive": "card of a person who left"}
"""Denials that mean someone tried a credential they should no longer have: highlighted."""


@dataclass
class Section:
    """One table of the review: its CSV file, its PDF heading, and its rows (possibly a stream)."""

    csv: str
    title: str
    header: list[str]
    widths: Sequence[float]
    """PDF column widths in mm (the landscape A4 page holds 273)."""
    rows: Iterable[list[Any]]
    note: str = ""
    flag: int | None = None
    """A column whose non-empty value highlights the row in the PDF."""
    head: list[list[str]] = field(default_factory=list)
    total: int = 0
    written: bool = False


def write_csv(section: Section, folder: Path) -> None:
    """Every row into the section's CSV, keeping the first LIST_MAX for the PDF: the two show the same text."""
    with (folder / section.csv).open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(section.header)
        for row in section.rows:
            out.writerow(row)  # None as "", as below
            if section.total < LIST_MAX:
                section.head.append(["" if v is None else str(v) for v in row])
            section.total += 1
    section.written = True


def json_field(conn: Connection, column: str, key: str) -> str:
    """A top-level JSON field as text, in each database's dialect."""
    if conn.dialect.name == "postgresql":
        return f"(({column})::jsonb ->> '{key}')"
    return f"json_extract({column}, '$.{key}')"


class Month:
    """SQL over the exported rows: the union of each chain's seq range."""

    def __init__(self, conn: Connection, summary: ExportSummary) -> None:
        self.conn = conn
        self.params: dict[str, Any] = {}
        parts = []
        for i, c in enumerate(summary.chains):
            parts.append(f"(chain_id = :c{i} AND seq BETWEEN :lo{i} AND :hi{i})")
            self.params.update({f"c{i}": c.chain_id, f"lo{i}": c.first_seq, f"hi{i}": c.last_seq})
        self.where = "(" + " OR ".join(parts) + ")"
        self.spans = {c.chain_id: (c.first_seq, c.last_seq) for c in summary.chains}
        plus = "+" if conn.dialect.name == "sqlite" else ""
        self.filter = self.where.replace("chain_id =", f"{plus}chain_id =").replace("seq BETWEEN", f"{plus}seq BETWEEN")
        """The same rows, worded so that SQLite checks it row by row and walks another index (``+column``
        keeps a column's index out of the plan there; PostgreSQL's planner chooses by its statistics)."""
        self.direction = f"coalesce({json_field(conn, 'detail', 'direction')}, 'in')"
        """A grant's reader direction; entries from before readers recorded it count as entries."""

    def contains(self, chain: str, seq: int) -> bool:
        span = self.spans.get(chain)
        return span is not None and span[0] <= seq <= span[1]

    def rows(self, sql: str, **params: Any) -> list[Any]:
        return list(self.stream(sql, **params))

    def stream(self, sql: str, **params: Any) -> Any:
        sql = sql.replace("{month}", self.where).replace("{month_filter}", self.filter)
        sql = sql.replace("{direction}", self.direction)
        return self.conn.execution_options(stream_results=True, yield_per=10_000).execute(
            text(sql), {**self.params, **params})


_EPOCH_DAY = date(1970, 1, 1).toordinal()


class Clock:
    """Site time as ``YYYY-MM-DD HH:MM:SS``, fast enough for a few hundred thousand rows: the UTC offset is
    looked up once per quarter hour (every time zone changes its offset on a quarter hour)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.offsets: dict[int, int] = {}
        """quarter hour -> UTC offset in seconds"""
        self.days: dict[int, str] = {}
        self.times = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)]

    def _offset(self, quarter: int) -> int:
        offset = from_us(quarter * 900_000_000).astimezone(self.tz).utcoffset()
        return self.offsets.setdefault(quarter, int(offset.total_seconds()) if offset else 0)

    def _day(self, day: int) -> str:
        return self.days.setdefault(day, date.fromordinal(_EPOCH_DAY + day).isoformat())

    def __call__(self, us: int | None) -> str:
        if us is None:
            return ""
        quarter = us // 900_000_000
        offset = self.offsets.get(quarter)
        day, second = divmod(us // 1_000_000 + (self._offset(quarter) if offset is None else offset), 86_400)
        return f"{self.days.get(day) or self._day(day)} {self.times[second]}"


def count(n: int, one: str, many: str | None = None) -> str:
    """``1 person``, ``1,000,000 entries``: an auditor reads large figures at a glance."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def duration(us: int | None) -> str:
    """``2:05:00`` or ``1 day, 6:00:00``: exact, and sorts and reads alike in a spreadsheet."""
    return "" if us is None else str(timedelta(seconds=us // 1_000_000))


def _iso_us(value: str | None) -> int | None:
    return to_us(datetime.fromisoformat(value)) if value else None


@dataclass
class Site:
    """What the report names: doors and areas (the site's configuration) and people (the log first)."""

    clock: Clock
    door_names: dict[str, str]
    door_into: dict[str, str]
    """door key -> the area its ``in`` readers lead into."""
    restricted: set[str]
    """Area keys marked ``restricted = true`` in the site file."""
    people: dict[int, str]

    def person(self, pid: int | None) -> str:
        return "(unknown card)" if pid is None else f"{self.people.get(pid, '?')} (#{pid})"

    @property
    def restricted_doors(self) -> list[str]:
        return sorted(d for d, a in self.door_into.items() if a in self.restricted)


def _site(conn: Connection, tz: ZoneInfo, logged: dict[str, access_tables.State]) -> Site:
    areas = {a.id: a for a in Session(conn).scalars(select(Area))}
    doors = list(Session(conn).scalars(select(Door)))
    people = dict(conn.execute(select(Person.id, Person.name)).all())  # only for people the log never named
    people.update({int(k.split("/", 1)[1]): v["name"] for k, v in logged.items() if k.startswith("person/")})
    return Site(Clock(tz), {d.key: d.name for d in doors},
                {d.key: areas[d.area_in_id].key for d in doors if d.area_in_id in areas},
                {a.key for a in areas.values() if a.restricted}, people)


# --- activity --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """One group of the month's entries: how many, the first and the last."""

    kind: str
    door: str
    what: str
    """A grant's reader direction (``in``/``out``), a denial's reason, else empty."""
    person: int | None
    """A denial's person (entries are counted per person by ``scan_entries``)."""
    subject: str
    """A known person's denial: the subject, naming the credential used."""
    n: int
    first: int
    last: int


def tally(m: Month) -> list[Tally]:
    """Counts per kind and door from ONE pass over the month's rows, on a small group key: SQLite groups by
    sorting every row, so each column in the key costs (directions come from ``scan_entries``)."""
    return [Tally(kind, door or "", "", None, "", n, first, last) for kind, door, n, first, last in m.rows(
        "SELECT kind, door, count(*), min(ts_us), max(ts_us) FROM audit_entry WHERE {month} GROUP BY kind, door")]


def denied(m: Month, tallies: list[Tally]) -> list[Tally]:
    """Denials by door, person, credential and reason, found through the (kind, ts) index between the
    month's first and last denial: only the denials are read and grouped, not the month."""
    spans = [(t.first, t.last) for t in tallies if t.kind == EventKind.ACCESS_DENIED]
    if not spans:
        return []
    reason = json_field(m.conn, "detail", "reason")
    return [Tally(EventKind.ACCESS_DENIED, door or "", what or "", person, subject, n, first, last)
            for door, person, what, subject, n, first, last in m.rows(
        f"SELECT door, person_id, {reason} AS w, CASE WHEN person_id IS NULL THEN '' ELSE subject END AS s, "
        "count(*), min(ts_us), max(ts_us) FROM audit_entry WHERE kind = 'access.denied' AND ts_us >= :first AND "
        "ts_us <= :last AND {month_filter} GROUP BY door, person_id, w, s",
        first=min(a for a, _ in spans), last=max(b for _, b in spans))]


def _inside(bounds: list[int], lo: int, hi: int) -> str:
    """SQL giving 1 when ts_us lies in one of the windows whose sorted boundaries (start, end, start, end...)
    are ``bounds``: a binary search as nested CASEs, so a row costs log2(boundaries) comparisons, not one per
    window (60 windows a month). ``lo``..``hi`` is how many boundaries may lie at or before ts_us."""
    if lo == hi:
        return str(lo % 2)
    mid = (lo + hi) // 2
    return f"CASE WHEN ts_us < {int(bounds[mid])} THEN {_inside(bounds, lo, mid)} ELSE {_inside(bounds, mid + 1, hi)} END"


class _PerPerson(dict[tuple[int | None, str], list[int]]):
    """(person, door) -> [entries, first, last]."""

    def add(self, key: tuple[int | None, str], ts: int) -> None:
        have = self.get(key)
        if have is None:
            self[key] = [1, ts, ts]
            return
        have[0] += 1
        if ts > have[2]:
            have[2] = ts
        elif ts < have[1]:
            have[1] = ts

    def rows(self, site: Site) -> list[list[Any]]:
        return [[site.person(p), d, n, site.clock(a), site.clock(b)] for (p, d), (n, a, b) in self.items()]


def scan_entries(m: Month, site: Site, windows: list[tuple[int, int]],
                 folder: Path) -> tuple[list[Section], dict[str, int]]:
    """Entries into restricted areas (each one, and by person) and after-hours entries by person, from one
    pass over the month's entries in time order; each restricted entry is written to its CSV as it streams,
    so memory stays flat."""
    doors = set(site.restricted_doors)
    restricted, after = _PerPerson(), _PerPerson()
    entered: dict[str, int] = defaultdict(int)
    bounds = [b for window in windows for b in window]

    def each() -> Iterator[list[Any]]:
        clock, into = site.clock, site.door_into
        names: dict[int | None, str] = {}
        for ts, pid, door, late in m.stream(
                f"SELECT ts_us, person_id, door, {_inside(bounds, 0, len(bounds))} FROM audit_entry WHERE {{month}} "
                "AND kind = 'access.granted' AND {direction} = 'in' ORDER BY ts_us, chain_id, seq"):
            key = (pid, door or "")
            entered[key[1]] += 1
            if late:
                after.add(key, ts)
            if door in doors:
                restricted.add(key, ts)
                name = names.get(pid) or names.setdefault(pid, site.person(pid))
                yield [clock(ts), name, door, into[door]]

    every = Section(fmt.REVIEW_RESTRICTED, "Entries into restricted areas, each one",
                    ["time", "person", "door", "area"], [40, 90, 50, 50], each())
    write_csv(every, folder)
    by_person = sorted(restricted.rows(site))
    note = (f"{count(sum(r[2] for r in by_person), 'entry', 'entries')} into {', '.join(sorted(site.restricted))} "
            f"by {count(len({r[0] for r in by_person}), 'person', 'people')} (entry readers of doors "
            f"{', '.join(sorted(doors))})." if doors else
            "No area is marked restricted in the site file (restricted = true under [[areas]]).")
    late = sorted(after.rows(site), key=lambda r: (-r[2], r[0], r[1]))
    return [Section(fmt.REVIEW_RESTRICTED_BY_PERSON, "Entries into restricted areas, by person",
                    ["person", "door", "entries", "first", "last"], [90, 50, 20, 40, 40], by_person, note),
            every,
            Section(fmt.REVIEW_AFTER_HOURS,
                    "After-hours entries (granted at entry readers outside the business schedule)",
                    ["person", "door", "entries", "first", "last"], [90, 50, 20, 40, 40], late,
                    f"{count(sum(r[2] for r in late), 'after-hours entry', 'after-hours entries')} by "
                    f"{count(len({r[0] for r in late}), 'person', 'people')} (schedule '{BUSINESS_SCHEDULE}'; "
                    "exits are not counted)." if windows else "The business schedule covers the whole month.")], entered


_COLUMN: dict[str, int] = {EventKind.ACCESS_GRANTED: 1, EventKind.ACCESS_DENIED: 2, EventKind.ALARM_RAISED: 3}
"""door_totals' columns: grants (less the entries: exits), denials, alarms."""


def door_totals(tallies: list[Tally], entered: dict[str, int], site: Site) -> list[Section]:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for t in tallies:
        i = _COLUMN.get(t.kind)
        if t.door and i is not None:
            per[t.door][i] += t.n
    for door, n in entered.items():
        if not door:
            continue
        per[door][0] += n
        per[door][1] -= n  # the grants that are not entries are exits
    doors: list[list[Any]] = []
    areas: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for key, counts in sorted(per.items()):
        into = site.door_into.get(key, "")
        doors.append([key, site.door_names.get(key, "(not in the site)"), into,
                      "yes" if into in site.restricted else "", *counts])
        for i, n in enumerate(counts):
            areas[into or "(unknown)"][i] += n
    counted = ["entries (in)", "exits (out)", "denied", "alarms"]
    return [Section(fmt.REVIEW_DOORS, "Totals per door", ["door", "name", "leads into", "restricted", *counted],
                    [40, 70, 40, 22, 25, 25, 22, 22], doors,
                    "Entries are grants at the door's entry readers, exits grants at its exit readers."),
            Section(fmt.REVIEW_AREAS, "Totals per area entered (through its doors' entry readers)",
                    ["area", "restricted", *counted], [50, 22, 25, 25, 22, 22],
                    [[a, "yes" if a in site.restricted else "", *v] for a, v in sorted(areas.items())])]


def denials(denials: list[Tally], site: Site) -> list[Section]:
    who: dict[tuple[int | None, str, str], list[int]] = {}
    by_door: dict[tuple[str, str], int] = defaultdict(int)
    for t in denials:
        have = who.setdefault((t.person, t.subject, t.what), [0, t.first, t.last])
        have[0] += t.n
        have[1], have[2] = min(have[1], t.first), max(have[2], t.last)
        by_door[(t.door, t.what)] += t.n
    rows: list[list[Any]] = []
    for (pid, subject, reason), (n, first, last) in who.items():
        cred = json.loads(subject).get("credential", "") if subject else ""
        rows.append([site.person(pid), cred, reason, FLAGGED_DENIALS.get(reason, ""), n, site.clock(first),
                     site.clock(last)])
    rows.sort(key=lambda x: (x[3] == "", x[0], str(x[1]), x[2]))
    flagged = sum(r[4] for r in rows if r[3])
    return [Section(fmt.REVIEW_DENIALS_BY_PERSON, "Denials by person and reason",
                    ["person", "credential", "reason", "attention", "count", "first", "last"],
                    [70, 20, 40, 45, 15, 38, 38], rows,
                    f"{count(sum(r[4] for r in rows), 'denial')}; {flagged:,} of them with a revoked, lost, expired or "
                    "suspended credential or a leaver's (highlighted, listed first).", flag=3),
            Section(fmt.REVIEW_DENIALS_BY_DOOR, "Denials by door and reason", ["door", "reason", "count"],
                    [50, 80, 25], [[d, r, n] for (d, r), n in sorted(by_door.items(), key=lambda x: (-x[1], x[0]))])]


def _by_kind(m: Month, kinds: tuple[str, ...], first: int, last: int, *columns: str) -> list[Any]:
    """Rows of a few rare kinds found through the (kind, ts) index between two device times, kept if they
    are in the month's seq ranges: no pass over the month's rows."""
    params = {f"k{i}": k for i, k in enumerate(kinds)} | {"first": first, "last": last}
    rows = m.conn.execute(text(
        f"SELECT chain_id, seq, {', '.join(columns)} FROM audit_entry WHERE kind IN "
        f"({', '.join(':k' + str(i) for i in range(len(kinds)))}) AND ts_us >= :first AND ts_us <= :last "
        "ORDER BY ts_us, chain_id, seq"), params)
    return [r[2:] for r in rows if m.contains(r[0], r[1])]


def alarms(m: Month, tallies: list[Tally], site: Site) -> list[Section]:
    """Each alarm once (its alarm.raised entry, not the event that caused it), with the console's steps:
    acknowledgements and resolutions are audited by the operator's name as the source (web/alarms.py),
    looked for up to now, since an alarm raised on the 31st may be handled on the 1st."""
    spans = [(t.first, t.last) for t in tallies if t.kind == EventKind.ALARM_RAISED]
    raised = _by_kind(m, (EventKind.ALARM_RAISED,), min(a for a, _ in spans), max(b for _, b in spans),
                      "event_id", "ts_us", "door", "source", "detail") if spans else []
    steps: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)
    if raised:
        for kind, ts, source, subject in m.conn.execute(text(
                "SELECT kind, ts_us, source, subject FROM audit_entry WHERE kind IN ('alarm.acknowledged', "
                "'alarm.resolved') AND ts_us >= :first ORDER BY ts_us"), dict(first=raised[0][1])):
            alarm = json.loads(subject).get("alarm")
            if isinstance(alarm, str):
                steps[alarm].setdefault(kind, (ts, source))
    rows, to_ack, to_resolve = [], [], []
    for event_id, ts, door, source, detail in raised:
        ack = steps[event_id].get(EventKind.ALARM_ACKNOWLEDGED)
        res = steps[event_id].get(EventKind.ALARM_RESOLVED)
        ack_us, res_us = (ack[0] - ts if ack else None), (res[0] - ts if res else None)
        to_ack += [ack_us] if ack_us is not None else []
        to_resolve += [res_us] if res_us is not None else []
        rows.append([site.clock(ts), json.loads(detail).get("alarm", ""), door or source, ack[1] if ack else "",
                     duration(ack_us), res[1] if res else "", duration(res_us),
                     "" if ack else "not acknowledged"])

    def stats(values: list[int], what: str) -> str:
        if not values:
            return f"none {what}"
        return (f"{len(values):,} {what}, median {duration(int(statistics.median(values)))}, "
                f"worst {duration(max(values))}")

    note = (f"{count(len(rows), 'alarm')} raised. Raise to acknowledge: {stats(to_ack, 'acknowledged')}. "
            f"Raise to resolve: {stats(to_resolve, 'resolved')}.")
    return [Section(fmt.REVIEW_ALARMS, "Alarms (each once) and the response to them",
                    ["raised", "alarm", "door or device", "acknowledged by", "raise to ack.", "resolved by",
                     "raise to resolve", "attention"], [36, 45, 38, 32, 24, 32, 26, 32], rows, note, flag=7)]


def after_hours_windows(conn: Connection, tz: ZoneInfo, start_us: int, end_us: int) -> list[tuple[int, int]]:
    """The month's after-hours periods as UTC microsecond ranges: each local day minus the business
    schedule's intervals (a holiday is after hours all day), converted through the time zone so DST is right."""
    sched = Session(conn).scalars(select(Schedule).where(Schedule.key == BUSINESS_SCHEDULE)).first()
    if sched is not None:
        intervals = [(i.weekday, i.start_minute, i.end_minute) for i in sched.intervals]
        holidays = {h.day for h in sched.holidays}
        tz = ZoneInfo(sched.timezone) if sched.timezone else tz
    else:
        intervals, holidays = [(d, 7 * 60, 19 * 60) for d in range(5)], set()
    windows: list[tuple[int, int]] = []
    day = from_us(start_us).astimezone(tz).date() - timedelta(days=1)
    last = from_us(end_us).astimezone(tz).date()
    while day <= last:
        open_ = [] if day in holidays else sorted((a, b) for w, a, b in intervals if w == day.weekday())
        cursor = 0
        for a, b in open_ + [(24 * 60, 24 * 60)]:
            if a > cursor:
                lo = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(minutes=cursor)
                hi = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(minutes=a)
                lo_us, hi_us = to_us(lo), to_us(hi)
                if windows and windows[-1][1] >= lo_us:
                    windows[-1] = (windows[-1][0], hi_us)
                else:
                    windows.append((lo_us, hi_us))
            cursor = max(cursor, b)
        day += timedelta(days=1)
    return [(max(a, start_us), min(b, end_us)) for a, b in windows if b > start_us and a < end_us]


def entry_kinds(tallies: list[Tally]) -> Section:
    kinds: dict[str, int] = defaultdict(int)
    for t in tallies:
        kinds[t.kind] += t.n
    return Section(fmt.REVIEW_KINDS, "Every kind of entry in the export", ["kind", "count"], [70, 30],
                   [[k, n] for k, n in sorted(kinds.items())])


# --- the access review, rebuilt from the log -------------------------------------------------------------


@dataclass
class Change:
    """One row's change by one admin entry."""

    ts_us: int
    actor: str
    key: str
    before: access_tables.State | None
    after: access_tables.State | None


@dataclass
class Leaver:
    pid: int
    left_us: int
    actor: str
    credentials: dict[str, int | None] = field(default_factory=dict)
    """credential key -> when the log recorded it revoked (None: not yet)."""


@dataclass
class History:
    """The admin entries' recorded states replayed in log order (received time, then chain and seq)."""

    at_end: dict[str, access_tables.State]
    first_seen: dict[str, int]
    changes: list[Change]
    """Within the month."""
    leavers: list[Leaver]
    """People who left within the month, with their credentials' revocations up to now."""
    recorded: bool
    """Whether any admin entry before the month's end carried a recorded state."""


def _states(detail: str) -> access_tables.Changes:
    found = json.loads(detail).get("state")
    return found if isinstance(found, dict) else {}


def history(conn: Connection, start_us: int, end_us: int) -> History:
    kinds = [k.value for k in EventKind if k.startswith("admin.")]  # IN: the kind index, on either database
    entries = conn.execute(text(
        f"SELECT received_us, ts_us, source, detail FROM audit_entry WHERE kind IN "
        f"({', '.join(f':k{i}' for i in range(len(kinds)))}) ORDER BY received_us, chain_id, seq"),
        {f"k{i}": k for i, k in enumerate(kinds)})
    rows: dict[str, access_tables.State] = {}
    at_end: dict[str, access_tables.State] | None = None
    first_seen: dict[str, int] = {}
    changes: list[Change] = []
    leavers: list[Leaver] = []
    pending: dict[str, Leaver] = {}
    recorded = False
    for received, ts, source, detail in entries:
        if received >= end_us and at_end is None:
            at_end = dict(rows)
        states = _states(detail)
        if not states:
            continue
        recorded = recorded or received < end_us
        in_month = start_us <= received < end_us
        revoked_now, left_now = [], []
        for key, after in states.items():
            before = rows.get(key)
            first_seen.setdefault(key, ts)
            if in_month:
                changes.append(Change(ts, source, key, before, after))
            if key.startswith("credential/") and (after is None or after.get("status") == "revoked") and (
                    before is not None and before.get("status") != "revoked"):
                revoked_now.append(key)
            if (key.startswith("person/") and in_month and after is not None and after.get("status") == "left"
                    and (before is None or before.get("status") != "left")):
                left_now.append(Leaver(int(key.split("/", 1)[1]), _iso_us(after.get("left_at")) or ts, source))
            if after is None:  # as access_tables.replay does, one entry at a time
                rows.pop(key, None)
            else:
                rows[key] = after
        for key in revoked_now:
            leaver = pending.pop(key, None)
            if leaver is not None:
                leaver.credentials[key] = ts
        for leaver in left_now:
            for key, cred in rows.items():
                if key.startswith("credential/") and cred.get("person") == leaver.pid:
                    if key in revoked_now:
                        leaver.credentials[key] = ts
                    elif cred.get("status") != "revoked":
                        leaver.credentials[key] = None
                        pending[key] = leaver
            leavers.append(leaver)
    return History(rows if at_end is None else at_end, first_seen, changes, leavers, recorded)


def _of(rows: dict[str, access_tables.State], prefix: str) -> dict[str, access_tables.State]:
    return {k.split("/", 1)[1]: v for k, v in sorted(rows.items()) if k.startswith(prefix)}


def access_review(conn: Connection, site: Site, h: History, summary: ExportSummary) -> list[Section]:
    clock, end_us = site.clock, summary.end_us
    people, creds, levels = _of(h.at_end, "person/"), _of(h.at_end, "credential/"), _of(h.at_end, "level/")
    nothing = "" if h.recorded else ("The log holds no recorded access state before the month's end (admin entries "
                                     "made before states were recorded): this part cannot be rebuilt.")
    boxed = timeboxed(h.at_end, end_us)

    def areas(keys: Iterable[str]) -> str:
        into = {site.door_into.get(door, "") for lvl in keys for door, _ in levels.get(lvl, {}).get("doors", [])}
        return ", ".join(sorted(f"{a} (restricted)" if a in site.restricted else a for a in into if a))

    holders = []
    for key, p in sorted(people.items(), key=lambda x: (x[1]["name"], int(x[0]))):
        mine = boxed.get(int(key), [])
        if p.get("status") != "active" or not (p.get("levels") or mine):
            continue
        holders.append([site.person(int(key)), p.get("company", ""), ", ".join(p["levels"]), areas(p["levels"]),
                        "; ".join(f"{r['level']} until {clock(_iso_us(r['ends_at']))} (request {rid}: "
                                  f"{areas([r['level']]) or 'no doors'})" for rid, r in mine)])

    level_changes, user_changes = [], []
    for c in h.changes:
        if c.key.startswith("person/"):
            was = set((c.before or {}).get("levels", []))
            now = set((c.after or {}).get("levels", []))
            pid = int(c.key.split("/", 1)[1])
            level_changes += [[clock(c.ts_us), site.person(pid), lvl, "granted", c.actor] for lvl in sorted(now - was)]
            level_changes += [[clock(c.ts_us), site.person(pid), lvl, "removed", c.actor] for lvl in sorted(was - now)]
        elif c.key.startswith("user/"):
            what = _user_change(c.before, c.after)
            if what:
                user_changes.append([clock(c.ts_us), c.key.split("/", 1)[1], what, c.actor])

    leavers = []
    for lv in h.leavers:
        if not lv.credentials:
            leavers.append([site.person(lv.pid), clock(lv.left_us), lv.actor, "(none held)", "", "", ""])
        for key, revoked in sorted(lv.credentials.items()):
            late = (revoked if revoked is not None else summary.generated_us) - lv.left_us
            flag = ("NOT REVOKED" if revoked is None else
                    f"revoked after more than {REVOKE_WITHIN_H} h" if late > REVOKE_WITHIN_H * 3_600_000_000 else "")
            leavers.append([site.person(lv.pid), clock(lv.left_us), lv.actor, key.split("/", 1)[1], clock(revoked),
                            duration(late) if revoked is not None else f"{duration(late)} so far", flag])

    since = end_us - UNUSED_DAYS * 86_400_000_000
    used = set()
    for (subject,) in conn.execute(text("SELECT DISTINCT subject FROM audit_entry WHERE kind = 'access.granted' "
                                        "AND ts_us >= :a AND ts_us < :b"), dict(a=since, b=end_us)):
        used.add(str(json.loads(subject).get("credential")))
    unused, expired = [], []
    for cid, cred in creds.items():
        until = _iso_us(cred.get("valid_until"))
        if (cred.get("status") == "active" and cid not in used and (until is None or until > end_us)
                and h.first_seen.get(f"credential/{cid}", end_us) <= since):
            unused.append([cid, site.person(cred.get("person")), cred.get("format"), cred.get("number"),
                           clock(h.first_seen.get(f"credential/{cid}"))])
        if until is not None and until <= end_us and cred.get("status") != "revoked":
            expired.append([cid, site.person(cred.get("person")), cred.get("status"), clock(until)])
    users = [[name, u.get("role"), "yes" if u.get("active") else "no"] for name, u in _of(h.at_end, "user/").items()]

    month_end = f"as of {clock(end_us)}"
    return [
        Section(fmt.REVIEW_HOLDERS, "Who holds access", ["person", "company", "levels",
                "areas their levels open", "time-boxed (approved requests)"], [48, 32, 45, 63, 85], holders,
                nothing or "Active people and their standing access levels, rebuilt from the log's recorded states; "
                "a level given by an approved access request is listed apart, with the end of its window (it opens "
                "nothing after it)."),
        Section(fmt.REVIEW_LEVEL_CHANGES, "Access levels granted and removed during the month",
                ["time", "person", "level", "change", "by"], [40, 80, 50, 25, 50], level_changes, nothing),
        requests_section(conn, site, h, summary, areas),
        Section(fmt.REVIEW_LEAVERS, "People who left during the month, and when their credentials were revoked",
                ["person", "left", "recorded by", "credential", "revoked", "left to revoked", "attention"],
                [60, 36, 40, 20, 36, 36, 45], leavers,
                nothing or f"Flagged: a credential revoked more than {REVOKE_WITHIN_H} h after its holder left, or "
                "not revoked yet (looked for in the log up to the export).", flag=6),
        Section(fmt.REVIEW_UNUSED, f"Active credentials unused for {UNUSED_DAYS} days before the month's end",
                ["credential", "person", "format", "number", "first recorded"], [25, 80, 30, 40, 40], unused,
                nothing or f"No access.granted entry with the credential in the {UNUSED_DAYS} days up to the month's "
                "end; credentials recorded for less than that are not listed."),
        Section(fmt.REVIEW_EXPIRED, "Credentials expired but not revoked at the month's end",
                ["credential", "person", "status", "valid until"], [25, 80, 30, 40], expired, nothing),
        Section(fmt.REVIEW_USERS, f"Console users and their roles {month_end}", ["user", "role", "active"],
                [60, 40, 20], users, nothing),
        Section(fmt.REVIEW_USER_CHANGES, "Console user and role changes during the month",
                ["time", "user", "change", "by"], [40, 60, 90, 50], user_changes, nothing),
    ]


def timeboxed(at_end: dict[str, access_tables.State], end_us: int) -> dict[int, list[tuple[str, access_tables.State]]]:
    """Person -> (request id, state) of their requests approved and not yet ended at ``end_us``."""
    out: dict[int, list[tuple[str, access_tables.State]]] = defaultdict(list)
    for rid, r in _of(at_end, "request/").items():
        if r.get("state") == "approved" and (_iso_us(r.get("ends_at")) or 0) > end_us:
            out[int(r["person"])].append((rid, r))
    return out


def requests_section(conn: Connection, site: Site, h: History, summary: ExportSummary,
                     areas: Callable[[Iterable[str]], str]) -> Section:
    """Every access request the month's admin entries touched: who asked, why, who endorsed and decided, how it
    stood at the month's end, and when it ended."""
    clock = site.clock
    touched = sorted({int(c.key.split("/", 1)[1]) for c in h.changes if c.key.startswith("request/")})
    opened: dict[int, tuple[str, dict[str, Any]]] = {}
    for source, subject, detail in conn.execute(text(
            "SELECT source, subject, detail FROM audit_entry WHERE kind = :k AND received_us < :end"),
            dict(k=EventKind.ADMIN_REQUEST_OPENED.value, end=summary.end_us)):
        rid = json.loads(subject).get("request")
        if rid in touched:
            opened[rid] = (source, json.loads(detail))
    ended: dict[int, str] = {}
    for c in h.changes:
        after = c.after or {}
        if c.key.startswith("request/") and after.get("state") in ("expired", "cancelled"):
            ended[int(c.key.split("/", 1)[1])] = f"{after['state']} {clock(c.ts_us)} by {c.actor}"
    final = {c.key: c.after for c in h.changes if c.key.startswith("request/")}
    rows = []
    for rid in touched:
        r = h.at_end.get(f"request/{rid}") or final.get(f"request/{rid}") or {}
        source, said = opened.get(rid, ("(before the log)", {}))
        why = " / ".join(str(x) for x in (said.get("ticket"), said.get("reason")) if x)
        rows.append([rid, site.person(r.get("person")), r.get("level"), areas([str(r.get("level"))]),
                     f"{clock(_iso_us(r.get('starts_at')))} to {clock(_iso_us(r.get('ends_at')))}", why, source,
                     r.get("tenant_approved_by") or "", r.get("decided_by") or "", r.get("state"), ended.get(rid, "")])
    return Section(fmt.REVIEW_REQUESTS, "Access requests during the month",
                   ["request", "person", "level", "areas", "window", "ticket / reason", "requested by", "endorsed by",
                    "decided by", "outcome", "ended"], [17, 30, 26, 22, 32, 30, 22, 20, 16, 20, 38], rows,
                   "Requests opened, endorsed, decided or ended during the month (admin.request_* entries), each as it "
                   "stood at the month's end; an approved request opens its level inside its window only.")


def _user_change(before: access_tables.State | None, after: access_tables.State | None) -> str:
    if before is None and after is not None:
        return f"added with role {after.get('role')}"
    if after is None:
        return "removed"
    if before is None:
        return ""
    parts = []
    if before.get("role") != after.get("role"):
        parts.append(f"role {before.get('role')} -> {after.get('role')}")
    if before.get("active") != after.get("active"):
        parts.append("enabled" if after.get("active") else "disabled")
    if any(before.get(k) != after.get(k) for k in (before.keys() | after.keys()) - {"role", "active"}):
        parts.append("password reset")
    return ", ".join(parts)


ESCORTED = (Reason.GRANTED_ESCORTED.value, Reason.GRANTED_ESCORTING.value)
NOT_BACK = {"on_site": "not returned", "cancelled": "(cancelled)"}


def visitor_log(m: Month, site: Site, h: History, summary: ExportSummary) -> Section:
    """Each visit whose window meets the month, from the log alone: the visit's recorded states (host,
    window, badge issued and returned), the escorted grants (the visitor's ``granted_escorted`` naming the
    escort, or the escort's ``granted_escorting`` naming the visitor) and the ``visitor.overdue`` alarms."""
    clock = site.clock
    visits = {int(k): v for k, v in _of(h.at_end, "visit/").items()
              if (_iso_us(v.get("ends_at")) or 0) >= summary.start_us and (_iso_us(v.get("starts_at")) or 0) < summary.end_us}
    issued = {int(c.key.split("/", 1)[1]): c.ts_us for c in h.changes if c.key.startswith("visit/")
              and (c.after or {}).get("state") == "on_site" and (c.before or {}).get("state") != "on_site"}
    by_person = {v.get("person"): vid for vid, v in visits.items()}
    passages: dict[int, list[tuple[int, str, int | None]]] = defaultdict(list)
    overdue: dict[int, int] = {}
    if visits:
        first = min(_iso_us(v.get("starts_at")) or 0 for v in visits.values())
        reason = json_field(m.conn, "detail", "reason")
        for ts, door, person, detail in m.rows(
                f"SELECT ts_us, door, person_id, detail FROM audit_entry WHERE kind = 'access.granted' AND "
                f"ts_us >= :first AND ts_us < :last AND {reason} IN (:escorted, :escorting) AND {{month_filter}} "
                "ORDER BY ts_us", first=first, last=summary.end_us, escorted=ESCORTED[0], escorting=ESCORTED[1]):
            said = json.loads(detail)
            visitor, escort = ((person, said.get("companion")) if said.get("reason") == ESCORTED[0]
                               else (said.get("companion"), person))
            if visitor in by_person:
                passages[by_person[visitor]].append((ts, door or "", escort))
        for ts, detail in _by_kind(m, (EventKind.ALARM_RAISED,), first, summary.end_us, "ts_us", "detail"):
            said = json.loads(detail)
            if said.get("alarm") == EventKind.VISITOR_OVERDUE and said.get("visit") in visits:
                overdue.setdefault(said["visit"], ts)
    people = _of(h.at_end, "person/")
    rows = []
    for vid, v in sorted(visits.items(), key=lambda x: (x[1].get("starts_at") or "", x[0])):
        seen = passages[vid]
        escorts = sorted({site.person(e) for _, _, e in seen if isinstance(e, int)})
        ends = _iso_us(v.get("ends_at"))
        attention = (f"OVERDUE from {clock(overdue[vid])}" if vid in overdue else
                     "NOT RETURNED" if v.get("state") == "on_site" and ends is not None and ends <= summary.end_us
                     else "")
        rows.append([vid, site.person(v.get("person")), people.get(str(v.get("person")), {}).get("company", ""),
                     v.get("host", ""), f"{clock(_iso_us(v.get('starts_at')))} to {clock(ends)}",
                     clock(issued.get(vid)) or ("" if v.get("state") in ("expected", "cancelled") else "before"),
                     clock(_iso_us(v.get("returned_at"))) or NOT_BACK.get(str(v.get("state")), ""), "; ".join(escorts),
                     "; ".join(f"{site.door_names.get(door, door)} {clock(ts)}" for ts, door, _ in seen),
                     attention])
    note = (f"{count(len(rows), 'visit')}; {count(len(overdue), 'badge')} overdue (highlighted). A visitor's badge "
            "opens a door only with an escort badging there within the escort window; each passage names its escort.")
    return Section(fmt.REVIEW_VISITORS, "Visitor log: visits, escorts, doors and badges", [
        "visit", "visitor", "company", "host", "window", "badge issued", "returned", "escorts", "doors and times",
        "attention"], [12, 34, 24, 20, 40, 22, 22, 30, 45, 24], rows, note, flag=9)


def write(conn: Connection, summary: ExportSummary, folder: Path) -> tuple[list[Section], list[Section]]:
    """Every section's CSV into ``folder``; the activity sections and the access review, in the PDF's order,
    each holding the rows the PDF shows."""
    h = history(conn, summary.start_us, summary.end_us)
    site = _site(conn, ZoneInfo(summary.timezone), h.at_end)
    m = Month(conn, summary)
    windows = after_hours_windows(conn, site.clock.tz, summary.start_us, summary.end_us)
    tallies = tally(m)
    (restricted_by_person, restricted, late), entered = scan_entries(m, site, windows, folder)
    activity = [*door_totals(tallies, entered, site), restricted_by_person, restricted,
                *denials(denied(m, tallies), site),
                *alarms(m, tallies, site), late]
    access = [*access_review(conn, site, h, summary), entry_kinds(tallies), visitor_log(m, site, h, summary)]
    for section in activity + access:
        if not section.written:
            write_csv(section, folder)
    return activity, access
