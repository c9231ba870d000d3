"""The visitor log in the monthly export (badge_bridge.export.review.visitor_log), rebuilt from the log alone:
each visit of the month with its host, window, badge issued and returned, the escort of each passage and its
door and time, and the badge never returned flagged OVERDUE; a visit of another month is not in it. In
report.pdf too (rendered to PNG for a person to look at)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from badge_bridge.audit import access_tables as at
from badge_bridge.config import SiteConfig
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.export import format as fmt
from badge_bridge.export.write import export_month
from badge_bridge.keys import KeyStore
from badge_bridge.models import Person, Visit
from badge_bridge.records import alarm_raised
from badge_bridge.site_sync import sync_site
from tests.test_report import NOV, OCT, Month, _csv, _person
from tests.tree_heads import publish_heads

TUE = datetime(2026, 10, 6, 9, tzinfo=UTC)


def access(m: Month, when: datetime, door: str, person: int, reason: str, companion: int | None = None) -> None:
    m.n += 1
    detail: dict[str, object] = {"reader": f"{door}-in", "direction": "in", "reason": reason}
    if companion is not None:
        detail["companion"] = companion
    kind = EventKind.ACCESS_GRANTED if reason.startswith("granted") else EventKind.ACCESS_DENIED
    m.at(when, Event(id=f"ctl:{m.n}", kind=kind, source="ctl-lobby", ts=when, door=door,
                     subject={"person": person, "credential": person}, detail=detail))


def test_the_months_visitor_log(engine: Engine, site: SiteConfig, keys: KeyStore, tmp_path: Path,
                                artifacts: Path) -> None:
    m = Month(engine, keys)
    with Session(engine) as s, s.begin():
        sync_site(s, site)
        esther = _person(s, "Esther Escort", ["staff"])
        esther.may_escort = True
        vera, otto, nora = (Person(name=n, company=c, kind="visitor") for n, c in (
            ("Vera Visitor", "Acme"), ("Otto Overdue", "Globex"), ("Nora November", "Initech")))
        s.add_all([vera, otto, nora])
        s.flush()
        m.admin(OCT - timedelta(days=1), EventKind.ADMIN_PERSON_ADDED, "cli:hr", {}, at.person(esther))
        visits = {}
        for who, start in ((vera, TUE), (otto, TUE + timedelta(days=1))):
            v = Visit(person_id=who.id, host="ana", starts_at=start, ends_at=start + timedelta(hours=3),
                      state="expected")
            s.add(v)
            s.flush()
            visits[who.name] = v
            m.admin(start - timedelta(hours=1), EventKind.ADMIN_VISIT_REGISTERED, "console:ana", {},
                    at.person(who), at.visit(v))
            v.state = "on_site"
            m.admin(start + timedelta(minutes=5), EventKind.ADMIN_VISIT_CHECKED_IN, "console:desk", {}, at.visit(v))
        ids = {name: (v.id, v.person_id) for name, v in visits.items()}
        esther_id = esther.id
        s.expunge(nora)
    m.commit()
    # Vera: escort first at the main entrance, then she waits at the NOC and Esther takes her in
    vera = ids["Vera Visitor"][1]
    access(m, TUE + timedelta(minutes=10), "main-entrance", esther_id, "granted")
    access(m, TUE + timedelta(minutes=10, seconds=5), "main-entrance", vera, "granted_escorted", esther_id)
    access(m, TUE + timedelta(minutes=20), "noc", vera, "escort_waiting")
    access(m, TUE + timedelta(minutes=20, seconds=8), "noc", esther_id, "granted_escorting", vera)
    returned = TUE + timedelta(hours=2)
    with Session(engine) as s, s.begin():
        vera_visit = s.get(Visit, ids["Vera Visitor"][0])
        assert vera_visit is not None
        vera_visit.state, vera_visit.returned_at = "returned", returned
        m.admin(returned, EventKind.ADMIN_VISIT_BADGE_RETURNED, "console:desk", {}, at.visit(vera_visit))
    m.commit()
    otto_end = TUE + timedelta(days=1, hours=3)
    alarm, effect = alarm_raised(EventKind.VISITOR_OVERDUE, door=None, source="bridge-1",
                                 cause=f"visit-{ids['Otto Overdue'][0]}", ts=otto_end,
                                 detail={"visit": ids["Otto Overdue"][0], "person": ids["Otto Overdue"][1]})
    m.at(otto_end, alarm, effect)
    with Session(engine) as s, s.begin():  # November's visit, logged after October's
        nov = Visit(person_id=nora.id, host="ana", starts_at=NOV + timedelta(days=2), ends_at=NOV + timedelta(days=2, hours=1))
        s.add(nov)
        s.flush()
        m.admin(NOV + timedelta(days=1), EventKind.ADMIN_VISIT_REGISTERED, "console:ana", {},
                at.person(s.get(Person, nora.id)), at.visit(nov))  # type: ignore[arg-type]
    m.commit()
    assert m.writer.stop()
    publish_heads(engine, keys.signer(), None)

    out = tmp_path / "export"
    summary = export_month(engine, keys, "2026-10", out, actor="cli:test")
    assert summary.verified, summary.problems
    rows = {r["visitor"]: r for r in _csv(out, fmt.REVIEW_VISITORS)}
    vera_id, otto_id = ids["Vera Visitor"][1], ids["Otto Overdue"][1]
    assert set(rows) == {f"Vera Visitor (#{vera_id})", f"Otto Overdue (#{otto_id})"}  # not November's Nora
    vera_row, otto_row = rows[f"Vera Visitor (#{vera_id})"], rows[f"Otto Overdue (#{otto_id})"]
    assert (vera_row["company"], vera_row["host"], vera_row["escorts"]) == ("Acme", "ana", f"Esther Escort (#{esther_id})")
    assert vera_row["doors and times"] == "Main entrance 2026-10-06 11:10:05; NOC 2026-10-06 11:20:08"
    assert vera_row["badge issued"] == "2026-10-06 11:05:00" and vera_row["returned"] == "2026-10-06 13:00:00"
    assert vera_row["attention"] == ""
    assert otto_row["attention"] == "OVERDUE from 2026-10-07 14:00:00" and otto_row["returned"] == "not returned"
    pdf = subprocess.run(["pdftotext", "-raw", str(out / fmt.PDF_NAME), "-"], capture_output=True, text=True,
                         check=True).stdout
    flat = " ".join(pdf.split())
    assert "Visitor log: visits, escorts, doors and badges" in flat and "OVERDUE from 2026-10-07 14:00:00" in flat
    subprocess.run(["pdftoppm", "-png", "-r", "70", str(out / fmt.PDF_NAME), str(artifacts / "report")], check=True)
