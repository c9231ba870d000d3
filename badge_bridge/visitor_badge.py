"""The visitor's printed badge: a card-sized PDF (ID-1, 85.6 x 54 mm) the desk prints at check-in, saying in
words anyone at a door can read that its holder is a visitor who must be escorted, whose guest they are, and
until when the badge is valid (in the site's local time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from sqlalchemy.orm import Session

from badge_bridge.export.pdf import _fonts
from badge_bridge.models import Person, Visit
from badge_bridge.people import AdminError

WIDTH, HEIGHT = 85.6 * mm, 54 * mm
MARGIN = 4 * mm
BAND = colors.HexColor("#b3261e")
"""The red band: seen across a hall before the words are read."""
BANNER = "VISITOR — ESCORT REQUIRED"


@dataclass(frozen=True)
class BadgeText:
    visit: int
    name: str
    company: str
    host: str
    valid_until: str
    """Local time with its zone, e.g. "2026-12-07 18:00 CET"."""


def badge_text(session: Session, visit_id: int, tz: ZoneInfo) -> BadgeText:
    """What the badge of visit ``visit_id`` says; only a visit whose badge was issued has one."""
    visit = session.get(Visit, visit_id)
    if visit is None:
        raise AdminError(f"no visit with id {visit_id}")
    if visit.state != "on_site":
        raise AdminError(f"visit {visit_id} is {visit.state.replace('_', ' ')}: a badge is printed for a visitor on "
                         "site (check them in first)")
    person = session.get(Person, visit.person_id)
    assert person is not None
    return BadgeText(visit.id, person.name, person.company, visit.host, local(visit.ends_at, tz))


def local(when: datetime, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def render(text: BadgeText) -> bytes:
    font, _ = _fonts()
    bold = f"{font}-Bold" if font == "DejaVuSans" else "Helvetica-Bold"
    out = BytesIO()
    canvas = Canvas(out, pagesize=(WIDTH, HEIGHT))
    canvas.setTitle(f"Visitor badge, visit {text.visit}")
    canvas.setFillColor(BAND)
    canvas.rect(0, HEIGHT - 12 * mm, WIDTH, 12 * mm, stroke=0, fill=1)
    canvas.setFillColor(colors.white)
    _fit(canvas, BANNER, bold, 13, WIDTH / 2, HEIGHT - 8 * mm, centred=True)
    canvas.setFillColor(colors.black)
    _fit(canvas, text.name, bold, 16, MARGIN, HEIGHT - 21 * mm)
    _fit(canvas, text.company, font, 10, MARGIN, HEIGHT - 27 * mm)
    _fit(canvas, f"Host: {text.host}", font, 8.5, MARGIN, HEIGHT - 34 * mm)
    _fit(canvas, f"Valid until {text.valid_until}", bold, 9.5, MARGIN, HEIGHT - 40 * mm)
    canvas.setFillColor(BAND)
    canvas.rect(0, 0, WIDTH, 9 * mm, stroke=0, fill=1)
    canvas.setFillColor(colors.white)
    _fit(canvas, f"Visit {text.visit} · return this badge to the desk", font, 7.5, MARGIN, 3.3 * mm)
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def _fit(canvas: Canvas, text: str, font: str, size: float, x: float, y: float, centred: bool = False) -> None:
    """``text`` at ``size`` points, smaller down to 60% if it is too wide, cut with an ellipsis beyond."""
    room = WIDTH - 2 * MARGIN
    size_now = size
    while stringWidth(text, font, size_now) > room and size_now > size * 0.6:
        size_now -= 0.5
    while stringWidth(text, font, size_now) > room and len(text) > 1:
        text = text[:-2] + "…"
    canvas.setFont(font, size_now)
    if centred:
        canvas.drawCentredString(x, y, text)
    else:
        canvas.drawString(x, y, text)
