"""Camera evidence: the snapshots and clips saved around door events and alarms, decrypted for the desk.

Evidence is content-addressed (the audit entry names the SHA-256) and encrypted at rest; the store checks
both the encryption tag and the hash on every read, so what the console shows is what was recorded.
Every viewing is audited with the user: pictures of people are personal data.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, abort, render_template
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.event_kinds import EventKind
from badge_bridge.models import AuditEntry
from camera.evidence import EvidenceError, EvidenceStore
from web import current_services
from web.auth import any_role
from web.params import query_text

bp = Blueprint("evidence", __name__, url_prefix="/evidence")
EVIDENCE_KINDS = (EventKind.EVIDENCE_SAVED, EventKind.EVIDENCE_FAILED)
LOOK_BEFORE_US, LOOK_AFTER_US = 60_000_000, 600_000_000
"""Evidence is recorded after its event (the clip waits for the seconds after it), on the camera's clock."""
INLINE = frozenset({"image/jpeg", "video/webm"})
"""What a browser shows in the page (``<img>``, ``<video>``); anything else (older Motion-JPEG AVI clips) downloads."""
EXTENSIONS = {"image/jpeg": "jpg", "video/webm": "webm", "video/x-msvideo": "avi"}


def store() -> EvidenceStore:
    svc = current_services()
    return EvidenceStore(svc.config.path(svc.config.evidence.dir), svc.keys.evidence_key())


def evidence_for(session: Session, entry: AuditEntry) -> list[dict[str, Any]]:
    """The evidence answers recorded for one event: ``[{camera, items, error}]``."""
    if entry.kind in EVIDENCE_KINDS:
        rows = [entry]
    else:
        rows = [r for r in session.scalars(
            select(AuditEntry).where(AuditEntry.kind.in_(EVIDENCE_KINDS),
                                     AuditEntry.ts_us.between(entry.ts_us - LOOK_BEFORE_US, entry.ts_us + LOOK_AFTER_US))
            .order_by(AuditEntry.ts_us, AuditEntry.id))
            if json.loads(r.detail).get("event") == entry.event_id]
    out = []
    for r in rows:
        detail = json.loads(r.detail)
        out.append({"camera": r.source, "items": detail.get("items", []), "error": detail.get("error")})
    return out


@bp.route("/<sha256:sha256>")
@any_role("guard", "auditor")
def fetch(sha256: str) -> Any:
    evidence = store()
    if not evidence.exists(sha256):
        abort(404)
    try:
        data, media_type = evidence.get(sha256)
    except EvidenceError as exc:
        current_services().audit.record(EventKind.CONSOLE_EVIDENCE_UNREADABLE, current_user.username,
                                detail={"sha256": sha256, "reason": str(exc)[:300]})
        return render_template("error.html", title="Evidence refused",
                               message=f"This evidence failed its integrity check and is not shown: {exc}"), 422
    current_services().audit.record(EventKind.CONSOLE_EVIDENCE_VIEWED, current_user.username, detail={"sha256": sha256})
    response = Response(data, mimetype=media_type)
    inline = media_type in INLINE and not query_text("download")
    response.headers["Content-Disposition"] = (
        f'{"inline" if inline else "attachment"}; filename="evidence-{sha256[:16]}.{EXTENSIONS.get(media_type, "bin")}"')
    response.headers["Cache-Control"] = "no-store"
    return response
