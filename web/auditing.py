"""For auditors: each chain's length, head and signed checkpoints, and a full verification on demand."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select

from badge_bridge.events import from_us
from badge_bridge.models import AuditEntry, Checkpoint
from badge_bridge.verify import verify
from web import services
from web.auth import role_required
from web.changes import read

bp = Blueprint("auditing", __name__, url_prefix="/audit")


class VerifyForm(FlaskForm):
    pass


def _chains() -> list[dict[str, Any]]:
    def query(s: Any) -> list[dict[str, Any]]:
        out = []
        for chain, entries, head in s.execute(select(AuditEntry.chain_id, func.count(), func.max(AuditEntry.seq))
                                              .group_by(AuditEntry.chain_id).order_by(AuditEntry.chain_id)):
            cp = s.scalars(select(Checkpoint).where(Checkpoint.chain_id == chain).order_by(Checkpoint.seq.desc())
                           .limit(1)).first()
            out.append({"chain": chain, "entries": entries, "head": head,
                        "checkpoint": cp, "checkpoint_at": from_us(cp.signed_us) if cp else None})
        return out

    return read(query)


@bp.route("")
@role_required("auditor")
def status() -> Any:
    return render_template("audit.html", chains=_chains(), form=VerifyForm(), report=None)


@bp.route("/verify", methods=["POST"])
@role_required("auditor")
def run_verify() -> Any:
    svc = services()
    report = verify(svc.engine, svc.engine.url.render_as_string(hide_password=False), svc.keys.trusted_public_keys())
    svc.audit.record("audit.verified", current_user.username,
                     detail={"ok": report.ok, "findings": len(report.findings),
                             "chains": {c.chain_id: c.head_seq for c in report.chains.values()}})
    return render_template("audit.html", chains=_chains(), form=VerifyForm(), report=report)
