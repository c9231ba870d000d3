"""The export's PDF report: what an auditor reads without a spreadsheet.

The review's tables come from ``export.review`` (SQL aggregates over the exported seq ranges, the access
review rebuilt from the log); each is also written as a CSV beside the PDF, with the same rows. A long
table shows its first rows here and says which CSV holds them all.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
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
from sqlalchemy.engine import Connection

from badge_bridge.events import from_us
from badge_bridge.export import review

if TYPE_CHECKING:
    from badge_bridge.export.write import ExportSummary

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


class _Doc:
    def __init__(self, path: Path, title: str) -> None:
        self.font, self.mono = _fonts()
        styles = getSampleStyleSheet()
        self.h1 = ParagraphStyle("h1", parent=styles["Heading1"], fontName=self.font, fontSize=16, keepWithNext=True)
        self.h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontName=self.font, fontSize=12, spaceBefore=8,
                                 keepWithNext=True)
        self.body = ParagraphStyle("body", parent=styles["BodyText"], fontName=self.font, fontSize=8.5, leading=11)
        self.cell = ParagraphStyle("cell", parent=self.body, fontSize=7.5, leading=9)
        self.lead = ParagraphStyle("lead", parent=self.body, keepWithNext=True)
        self.file = ParagraphStyle("file", parent=self.cell, textColor=colors.HexColor("#4a5561"), keepWithNext=True)
        self.code = ParagraphStyle("code", parent=self.cell, fontName=self.mono, fontSize=6.5, leading=8)
        self.story: list[Any] = []
        self.doc = SimpleDocTemplate(str(path), pagesize=landscape(A4), title=title, author="badge-bridge",
                                     leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm, bottomMargin=14 * mm)
        self.title = title

    def heading(self, text_: str, level: int = 2) -> None:
        self.story.append(Paragraph(escape(text_), self.h1 if level == 1 else self.h2))

    def para(self, text_: str) -> None:
        self.story.append(Paragraph(escape(text_), self.body))

    def table(self, header: list[str], rows: list[list[Any]], widths: Sequence[float] | None = None,
              mono: Collection[int] = (), total: int | None = None, flagged: Collection[int] = ()) -> None:
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
            *[("BACKGROUND", (0, i + 1), (-1, i + 1), colors.HexColor("#f8d7d3")) for i in flagged],
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


def write_report(conn: Connection, summary: ExportSummary, path: Path) -> None:
    """report.pdf at ``path`` and the review's CSVs (``format.REVIEW_FILES``) beside it."""
    tz = ZoneInfo(summary.timezone)
    d = _Doc(path, f"Access audit {summary.month} - {summary.site}")
    d.heading(f"Monthly access audit: {summary.site or 'site'}, {summary.month}", 1)
    d.para(f"Month {summary.month} in {summary.timezone}: entries received from {_local(summary.start_us, tz)} to "
           f"{_local(summary.end_us, tz)} (exclusive). {review.count(summary.rows, 'audit entry', 'audit entries')} on "
           f"{review.count(len(summary.chains), 'chain')}. "
           f"Generated {_local(summary.generated_us, tz)} by {summary.generated_by}. Times are site time. "
           "Every table below is also a CSV file in this folder, with every row.")

    _verification(d, summary, tz)
    activity, access = review.write(conn, summary, path.parent)
    for section in activity:
        _section(d, section)
    d.heading(f"Access review as of {_local(summary.end_us, tz)} (the end of {summary.month}), rebuilt from the log", 1)
    for section in access:
        _section(d, section)
    d.build()


def _section(d: _Doc, section: review.Section) -> None:
    d.heading(section.title)
    d.story.append(Paragraph(escape(f"{section.csv}: {review.count(section.total, 'row')}"), d.file))
    if section.note:
        d.story.append(Paragraph(escape(section.note), d.lead))
    flagged = [i for i, row in enumerate(section.head) if section.flag is not None and row[section.flag]]
    d.table(section.header, section.head, section.widths, flagged=flagged)
    if section.total > len(section.head):
        d.para(f"First {len(section.head):,} of {section.total:,} rows shown; all are in {section.csv}.")


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
    d.table(["chain", "seq", "signed", "key id (fingerprint)", "head hash"], cps[:review.LIST_MAX], [38, 18, 40, 60, 120],
            mono={3, 4}, total=len(cps))
    d.para(f"Manifest signed with key {summary.key_id} (fingerprint: the first 16 bytes of SHA-256 of the public key, "
           f"hex). Public key: {summary.public_key}. Compare it with the key handed to you out of band.")
