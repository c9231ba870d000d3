"""The export's PDF report: what an auditor reads without a spreadsheet.

Every figure comes from a GROUP BY over the exported seq ranges (or from the small people and credential
tables), never from loading rows, so the report takes the same few seconds for a quiet month and for a
million events. The access review (who holds what) is the state when the export was made.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from badge_bridge.event_kinds import EventKind
from badge_bridge.events import from_us, to_us
from badge_bridge.models import (
    AccessLevel,
    AccessLevelDoor,
    Area,
    ConsoleUser,
    Credential,
    Door,
    Person,
    PersonLevel,
    Schedule,
)

if TYPE_CHECKING:
    from badge_bridge.export.write import ExportSummary

INCIDENT_KINDS = (EventKind.DOOR_FORCED, EventKind.DOOR_FORCED_CONFIRMED, EventKind.DOOR_HELD_OPEN,
                  EventKind.DOOR_TAILGATING, EventKind.DOOR_UNAUTHORIZED_ENTRY, EventKind.READER_TAMPER,
                  EventKind.FACE_UNVERIFIED, EventKind.FACE_ABSENT, EventKind.ALARM_RAISED,
                  EventKind.CONTROLLER_OFFLINE, EventKind.CAMERA_OFFLINE)
BUSINESS_SCHEDULE = "business"
"""Entries outside this schedule are after hours; without it, Monday to Friday 07:00-19:00 site time."""
UNUSED_DAYS = 90
LIST_MAX = 60
"""Rows listed in a detail table; the totals always count everything."""
FONT, MONO = "Helvetica", "Courier"
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def _fonts() -> tuple[str, str]:
    """DejaVu when installed (names in any script print), else the PDF base fonts."""
    if (_DEJAVU / "DejaVuSans.ttf").exists() and (_DEJAVU / "DejaVuSansMono.ttf").exists():
        if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont("DejaVuSans", str(_DEJAVU / "DejaVuSans.ttf")))
            pdfmetrics.registerFont(TTFont("DejaVuSansMono", str(_DEJAVU / "DejaVuSansMono.ttf")))
            if (_DEJAVU / "DejaVuSans-Bold.ttf").exists():
                pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(_DEJAVU / "DejaVuSans-Bold.ttf")))
        bold = "DejaVuSans-Bold" if "DejaVuSans-Bold" in pdfmetrics.getRegisteredFontNames() else "DejaVuSans"
        pdfmetrics.registerFontFamily("DejaVuSans", normal="DejaVuSans", bold=bold)
        return "DejaVuSans", "DejaVuSansMono"
    return FONT, MONO


def _json_field(conn: Connection, column: str, key: str) -> str:
    """A top-level JSON field as text, in each database's dialect."""
    if conn.dialect.name == "postgresql":
        return f"(({column})::jsonb ->> '{key}')"
    return f"json_extract({column}, '$.{key}')"


class _Month:
    """SQL over the exported rows: the union of each chain's seq range."""

    def __init__(self, conn: Connection, summary: ExportSummary) -> None:
        self.conn = conn
        self.params: dict[str, Any] = {}
        parts = []
        for i, c in enumerate(summary.chains):
            parts.append(f"(chain_id = :c{i} AND seq BETWEEN :lo{i} AND :hi{i})")
            self.params.update({f"c{i}": c.chain_id, f"lo{i}": c.first_seq, f"hi{i}": c.last_seq})
        self.where = "(" + " OR ".join(parts) + ")"

    def rows(self, sql: str, **params: Any) -> list[Any]:
        return list(self.conn.execute(text(sql.replace("{month}", self.where)), {**self.params, **params}).all())


def _after_hours_windows(conn: Connection, tz: ZoneInfo, start_us: int, end_us: int) -> list[tuple[int, int]]:
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


def _count(n: int, one: str, many: str | None = None) -> str:
    """``1 chain``, ``1,000,000 audit entries``: an auditor reads large figures at a glance."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


class _Doc:
    def __init__(self, path: Path, title: str) -> None:
        self.font, self.mono = _fonts()
        styles = getSampleStyleSheet()
        self.h1 = ParagraphStyle("h1", parent=styles["Heading1"], fontName=self.font, fontSize=16, keepWithNext=True)
        self.h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontName=self.font, fontSize=12, spaceBefore=8,
                                 keepWithNext=True)
        self.body = ParagraphStyle("body", parent=styles["BodyText"], fontName=self.font, fontSize=8.5, leading=11)
        self.cell = ParagraphStyle("cell", parent=self.body, fontSize=7.5, leading=9)
        self.code = ParagraphStyle("code", parent=self.cell, fontName=self.mono, fontSize=6.5, leading=8)
        self.story: list[Any] = []
        self.doc = SimpleDocTemplate(str(path), pagesize=landscape(A4), title=title, author="badge-bridge",
                                     leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm, bottomMargin=14 * mm)
        self.title = title

    def heading(self, text_: str, level: int = 2) -> None:
        self.story.append(Paragraph(escape(text_), self.h1 if level == 1 else self.h2))

    def para(self, text_: str) -> None:
        self.story.append(Paragraph(escape(text_), self.body))

    def table(self, header: list[str], rows: list[list[Any]], widths: list[float] | None = None,
              mono: Collection[int] = (), total: int | None = None) -> None:
        """Cells are escaped paragraphs (so hostile names print as text and long ones wrap)."""
        if not rows:
            self.para("None.")
            return

        def cell(i: int, v: Any) -> Paragraph:
            return Paragraph(escape("" if v is None else str(v)), self.code if i in mono else self.cell)

        data = [[Paragraph(f"<b>{escape(h)}</b>", self.cell) for h in header]]
        data += [[cell(i, v) for i, v in enumerate(r)] for r in rows]
        t = Table(data, colWidths=[w * mm for w in widths] if widths else None, repeatRows=1, hAlign="LEFT")
        t.setStyle(TableStyle([
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde3ea")),
            ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9aa5b1")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f4f6f8")]),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ]))
        self.story.append(t)
        if total is not None and total > len(rows):
            self.para(f"First {len(rows):,} of {total:,} listed.")

    def build(self) -> None:
        def footer(canvas: Any, doc: Any) -> None:
            canvas.saveState()
            canvas.setFont(self.font, 7)
            canvas.drawString(12 * mm, 7 * mm, self.title)
            canvas.drawRightString(landscape(A4)[0] - 12 * mm, 7 * mm, f"page {doc.page}")
            canvas.restoreState()

        self.doc.build(self.story, onFirstPage=footer, onLaterPages=footer)


def _local(us: int | None, tz: ZoneInfo) -> str:
    return "" if us is None else from_us(us).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _when(value: datetime | None, tz: ZoneInfo, missing: str = "never") -> str:
    return missing if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def write_report(conn: Connection, summary: ExportSummary, path: Path) -> None:
    tz = ZoneInfo(summary.timezone)
    m = _Month(conn, summary)
    names = dict(conn.execute(select(Person.id, Person.name)).all())
    doors = {d.key: d for d in Session(conn).scalars(select(Door))}
    areas: dict[int | None, str] = dict(conn.execute(select(Area.id, Area.key)).all())
    d = _Doc(path, f"Access audit {summary.month} - {summary.site}")
    d.heading(f"Monthly access audit: {summary.site or 'site'}, {summary.month}", 1)
    d.para(f"Month {summary.month} in {summary.timezone}: entries received from {_local(summary.start_us, tz)} to "
           f"{_local(summary.end_us, tz)} (exclusive). {_count(summary.rows, 'audit entry', 'audit entries')} on "
           f"{_count(len(summary.chains), 'chain')}. "
           f"Generated {_local(summary.generated_us, tz)} by {summary.generated_by}. Times are site time.")

    _verification(d, summary, tz)

    kinds = dict(m.rows("SELECT kind, count(*) FROM audit_entry WHERE {month} GROUP BY kind"))
    per_door: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for door, kind, n in m.rows("SELECT door, kind, count(*) FROM audit_entry WHERE {month} AND door <> '' "
                                "GROUP BY door, kind"):
        per_door[door][kind] += n
    d.heading("Totals per door")
    rows: list[list[Any]] = []
    area_tot: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for key in sorted(per_door):
        k = per_door[key]
        door = doors.get(key)
        into = areas.get(door.area_in_id) if door else None
        door_incidents = sum(k[x] for x in INCIDENT_KINDS)
        rows.append([key, door.name if door else "(not in the site)", f"{areas.get(door.area_out_id, '') if door else ''}"
                     f" -> {into or ''}", k[EventKind.ACCESS_GRANTED], k[EventKind.ACCESS_DENIED], door_incidents])
        tot = area_tot[into or "(unknown)"]
        tot[0] += k[EventKind.ACCESS_GRANTED]
        tot[1] += k[EventKind.ACCESS_DENIED]
        tot[2] += door_incidents
    d.table(["door", "name", "from -> into", "granted", "denied", "alarms and incidents"], rows, [40, 70, 60, 25, 25, 35])
    d.heading("Totals per area entered (the area a door leads into)")
    d.table(["area", "granted", "denied", "alarms and incidents"], [[a, *v] for a, v in sorted(area_tot.items())],
            [50, 30, 30, 40])

    d.heading("Denials by door and reason")
    reason = _json_field(conn, "detail", "reason")
    denials = m.rows(f"SELECT door, {reason} AS r, count(*) AS n FROM audit_entry WHERE {{month}} AND "
                     "kind = 'access.denied' GROUP BY door, r ORDER BY n DESC, door")
    d.para(f"{_count(kinds.get(EventKind.ACCESS_DENIED, 0), 'denial')} in all.")
    d.table(["door", "reason", "count"], [list(r) for r in denials[:LIST_MAX]], [50, 80, 25], total=len(denials))

    d.heading("Alarms and incidents")
    incidents = m.rows("SELECT kind, door, count(*) AS n, min(ts_us), max(ts_us) FROM audit_entry WHERE {month} AND "
                       f"kind IN ({', '.join(repr(k.value) for k in INCIDENT_KINDS)}) GROUP BY kind, door ORDER BY n DESC")
    d.table(["kind", "door", "count", "first", "last"],
            [[k, door, n, _local(a, tz), _local(b, tz)] for k, door, n, a, b in incidents[:LIST_MAX]],
            [55, 50, 20, 40, 40], total=len(incidents))

    _after_hours(d, m, conn, summary, tz, names)
    _access_review(d, conn, summary, tz)

    d.heading("Every kind of entry in the export")
    d.table(["kind", "count"], sorted([k, n] for k, n in kinds.items()), [70, 30])
    d.build()


def _verification(d: _Doc, summary: ExportSummary, tz: ZoneInfo) -> None:
    d.heading("Verification")
    if summary.verified:
        d.para("Chain verified: every exported entry's hash was recomputed from its content and the hash before it, "
               "with no gap, and every signed checkpoint in the range verifies. `badge-bridge audit verify-export` "
               "proves the export's files again, without the database.")
    else:
        d.para(f"NOT VERIFIED: {len(summary.problems)} problems while exporting. First: {summary.problems[0]}")
    rows = []
    for c in summary.chains:
        signed = f"up to seq {c.signed_up_to}" if c.signed_up_to else "none"
        rows.append([c.chain_id, c.rows, f"{c.first_seq}..{c.last_seq}", f"{c.first_hash}\n{c.last_hash}",
                     len(c.checkpoints), signed])
    d.table(["chain", "entries", "seq", "first / last entry hash", "checkpoints", "signed"], rows,
            [38, 18, 30, 120, 24, 30], mono={3})
    d.heading("Signed checkpoints")
    cps = [[c.chain_id, cp["seq"], _local(cp["signed_us"], tz), cp["key_id"], cp["hash"]]
           for c in summary.chains for cp in c.checkpoints]
    d.table(["chain", "seq", "signed", "key id (fingerprint)", "head hash"], cps[:LIST_MAX], [38, 18, 40, 60, 120],
            mono={3, 4}, total=len(cps))
    d.para(f"Manifest signed with key {summary.key_id} (fingerprint: the first 16 bytes of SHA-256 of the public key, "
           f"hex). Public key: {summary.public_key}. Compare it with the key handed to you out of band.")


def _after_hours(d: _Doc, m: _Month, conn: Connection, summary: ExportSummary, tz: ZoneInfo,
                 names: dict[int, str]) -> None:
    windows = _after_hours_windows(conn, tz, summary.start_us, summary.end_us)
    d.heading("After-hours entries (granted outside the business schedule)")
    if not windows:
        d.para("The business schedule covers the whole month.")
        return
    params = {f"a{i}": a for i, (a, _) in enumerate(windows)} | {f"b{i}": b for i, (_, b) in enumerate(windows)}
    when = " OR ".join(f"(ts_us >= :a{i} AND ts_us < :b{i})" for i in range(len(windows)))
    base = f"FROM audit_entry WHERE {{month}} AND kind = 'access.granted' AND ({when})"
    per = m.rows(f"SELECT person_id, door, count(*) AS n, max(ts_us) {base} GROUP BY person_id, door "
                 "ORDER BY n DESC, door", **params)
    d.para(f"{_count(sum(r[2] for r in per), 'after-hours entry', 'after-hours entries')} by "
           f"{_count(len({r[0] for r in per}), 'person', 'people')}.")
    d.table(["person", "door", "entries", "last"],
            [[f"{names.get(p, '?')} (#{p})" if p is not None else "(no person)", door, n, _local(last, tz)]
             for p, door, n, last in per[:LIST_MAX]], [70, 50, 20, 40], total=len(per))


def _access_review(d: _Doc, conn: Connection, summary: ExportSummary, tz: ZoneInfo) -> None:
    as_of = min(datetime.now(UTC), from_us(summary.end_us))
    d.heading(f"Access review (as of {as_of.astimezone(tz):%Y-%m-%d %H:%M})")
    d.para("Who holds access to which areas (active people, through their access levels):")
    holders: dict[int, dict[str, set[str]]] = defaultdict(lambda: {"levels": set(), "areas": set()})
    for pid, level, area in conn.execute(
            select(PersonLevel.person_id, AccessLevel.key, Area.key)
            .join(AccessLevel, AccessLevel.id == PersonLevel.level_id)
            .join(AccessLevelDoor, AccessLevelDoor.level_id == AccessLevel.id, isouter=True)
            .join(Door, Door.id == AccessLevelDoor.door_id, isouter=True)
            .join(Area, Area.id == Door.area_in_id, isouter=True)
            .join(Person, Person.id == PersonLevel.person_id).where(Person.status == "active")):
        holders[pid]["levels"].add(level)
        if area:
            holders[pid]["areas"].add(area)
    s = Session(conn)
    people = {p.id: p for p in s.scalars(select(Person))}
    d.table(["person", "company", "levels", "areas"],
            [[f"{people[p].name} (#{p})", people[p].company, ", ".join(sorted(h["levels"])), ", ".join(sorted(h["areas"]))]
             for p, h in sorted(holders.items(), key=lambda x: people[x[0]].name)], [60, 50, 70, 80])

    since = as_of - timedelta(days=UNUSED_DAYS)
    cred = _json_field(conn, "subject", "credential")
    used = {int(c) for (c,) in conn.execute(text(
        f"SELECT DISTINCT {cred} FROM audit_entry WHERE kind = 'access.granted' AND ts_us >= :a AND ts_us < :b"),
        dict(a=to_us(since), b=to_us(as_of))) if c is not None and str(c).isdigit()}
    creds = list(s.scalars(select(Credential).order_by(Credential.id)))
    unused = [c for c in creds if c.status == "active" and c.id not in used and c.created_at < since
              and (c.last_used_at is None or c.last_used_at < since)]
    d.heading(f"Active credentials unused for {UNUSED_DAYS} days")
    d.table(["credential", "person", "format", "number", "issued", "last used"],
            [[c.id, people[c.person_id].name, c.format, c.number, _when(c.created_at, tz), _when(c.last_used_at, tz)]
             for c in unused], [20, 60, 25, 35, 35, 35])
    d.heading("Expired but not revoked")
    expired = [c for c in creds if c.valid_until is not None and c.valid_until < as_of and c.status != "revoked"]
    d.table(["credential", "person", "status", "valid until"],
            [[c.id, people[c.person_id].name, c.status, _when(c.valid_until, tz)] for c in expired], [20, 60, 25, 40])
    d.heading("People marked as left who still hold credentials")
    left = [c for c in creds if people[c.person_id].status == "left" and c.status != "revoked"]
    d.table(["person", "left", "credential", "status"],
            [[f"{people[c.person_id].name} (#{c.person_id})", _when(people[c.person_id].left_at, tz, "not recorded"), c.id, c.status]
             for c in left], [60, 35, 20, 25])
    d.heading("Console users and their roles")
    d.table(["user", "role", "active", "created", "last login"],
            [[u.username, u.role, "yes" if u.active else "no", _when(u.created_at, tz), _when(u.last_login_at, tz)]
             for u in s.scalars(select(ConsoleUser).order_by(ConsoleUser.role, ConsoleUser.username))],
            [50, 30, 20, 40, 40])
