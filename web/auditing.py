"""For auditors: each chain's length, head and signed checkpoints, a full verification on demand, and the
monthly audit export as a zip (the same files `badge-bridge export` writes)."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, flash, redirect, render_template, send_file, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import StringField
from wtforms.validators import DataRequired, Regexp

from badge_bridge.audit.verify import verify
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import from_us, to_us
from badge_bridge.export.format import MONTH_RE
from badge_bridge.export.write import ExportError, export_month, month_bounds
from badge_bridge.models import AuditEntry, Checkpoint
from web import current_services
from web.auth import role_required
from web.changes import read

bp = Blueprint("auditing", __name__, url_prefix="/audit")


class VerifyForm(FlaskForm):
    pass


class ExportForm(FlaskForm):
    month = StringField("Month", validators=[DataRequired(), Regexp(MONTH_RE.pattern, message="expected YYYY-MM")])


def _chains() -> list[dict[str, Any]]:
    presenter = current_services().presenter

    def query(s: Any) -> list[dict[str, Any]]:
        out = []
        for chain, entries, head in s.execute(select(AuditEntry.chain_id, func.count(), func.max(AuditEntry.seq))
                                              .group_by(AuditEntry.chain_id).order_by(AuditEntry.chain_id)):
            cp = s.scalars(select(Checkpoint).where(Checkpoint.chain_id == chain).order_by(Checkpoint.seq.desc())
                           .limit(1)).first()
            out.append({"chain": chain, "entries": entries, "head": head,
                        "checkpoint": cp, "checkpoint_at": presenter.local(cp.signed_us)[0] if cp else ""})
        return out

    return read(query)


def unfinished(month: str, now: datetime | None = None) -> str:
    """'' for a month that has ended in the site's time zone; otherwise what an export of it lacks, in words,
    for the page and the zip's comment."""
    config = current_services().config
    tz = ZoneInfo(config.site.timezone)
    now = now or datetime.now(UTC)
    _, end_us = month_bounds(month, tz)
    if to_us(now) >= end_us:
        return ""
    end = from_us(end_us).astimezone(tz)
    return (f"{month} is not complete: an export made now holds the events up to "
            f"{now.astimezone(tz):%Y-%m-%d %H:%M %Z} only. Export it again after {end:%Y-%m-%d %H:%M %Z} "
            "for the whole month.")


def _page(report: Any = None) -> str:
    current = f"{datetime.now(ZoneInfo(current_services().config.site.timezone)):%Y-%m}"
    return render_template("audit.html", chains=_chains(), form=VerifyForm(), export_form=ExportForm(),
                           report=report, current_warning=unfinished(current), zone=current_services().presenter.zone)


@bp.route("")
@role_required("auditor")
def status() -> Any:
    return _page()


@bp.route("/verify", methods=["POST"])
@role_required("auditor")
def run_verify() -> Any:
    svc = current_services()
    report = verify(svc.engine, svc.engine.url.render_as_string(hide_password=False), svc.keys.trusted_public_keys())
    svc.audit.record(EventKind.AUDIT_VERIFIED, current_user.username,
                     detail={"ok": report.ok, "findings": len(report.findings),
                             "chains": {c.chain_id: c.head_seq for c in report.chains.values()}})
    return _page(report)


@bp.route("/export", methods=["POST"])
@role_required("auditor")
def download_export() -> Any:
    """Build the month's export in a temporary folder and send it as a zip. The zip is spooled to an
    unlinked temporary file, so a large month never sits in memory and nothing is left on disk."""
    form = ExportForm()
    if not form.validate_on_submit():
        flash(f"Month: {', '.join(form.month.errors) or 'expected YYYY-MM'}", "error")
        return redirect(url_for("auditing.status"))
    svc = current_services()
    month = form.month.data
    try:
        incomplete = unfinished(month)
    except ExportError as exc:
        flash(str(exc), "error")
        return redirect(url_for("auditing.status"))
    work = Path(tempfile.mkdtemp(prefix="bb-export-"))
    try:
        try:
            summary = export_month(svc.engine, svc.keys, month, work / month, actor=f"console:{current_user.username}")
        except ExportError as exc:
            flash(str(exc), "error")
            return redirect(url_for("auditing.status"))
        spool = tempfile.TemporaryFile()
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted((work / month).iterdir()):
                z.write(path, path.name)
            if incomplete:  # in the archive's comment: a file added to the export would fail verify-export
                z.comment = f"INCOMPLETE MONTH. {incomplete}".encode()[:65535]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    svc.audit.record(EventKind.CONSOLE_EXPORT_DOWNLOADED, current_user.username,
                     detail={"month": month, "complete": not incomplete, "rows": summary.rows,
                             "verified": summary.verified,
                             "manifest_sha256": {n: f["sha256"] for n, f in summary.files.items()}})
    spool.seek(0)
    return send_file(spool, mimetype="application/zip", as_attachment=True,
                     download_name=f"audit-export-{month}{'-INCOMPLETE' if incomplete else ''}.zip")
