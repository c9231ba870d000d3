"""Enrolled faces: the gallery the doors match against, and the templates removed with a person's access.

Enrollment from photos needs dlib and the evidence store, so it is camera/enrollment.py; what the bridge
needs is here. Like badge_bridge.people, every change returns the audit event that records it (the caller
submits it once the change is committed); the events name the templates, never the encodings.

Kept enrollment photos are personal data: they are deleted with their templates.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.face_match import Gallery, open_encoding
from badge_bridge.models import FaceTemplate, Person

log = logging.getLogger(__name__)


class PhotoStore(Protocol):
    """Where kept enrollment photos live (camera.evidence.EvidenceStore): removing faces deletes from it."""

    def delete(self, sha256: str) -> None: ...


def remove_faces(session: Session, actor: str, person_id: int, *, photos: PhotoStore | None) -> Event:
    """Remove every face enrolled for a person, and their kept photos from ``photos``."""
    if session.get(Person, person_id) is None:
        raise people.AdminError(f"no person with id {person_id}")
    removed = _forget(session, person_id, photos)
    if not removed:
        raise people.AdminError(f"person {person_id} has no enrolled faces")
    return people.admin_event(EventKind.ADMIN_FACE_REMOVED, actor, {"person": person_id},
                              {"templates_removed": removed, "count": len(removed)}, *_gone(removed))


def person_left(session: Session, actor: str, person_id: int, reason: str, *,
                photos: PhotoStore | None) -> tuple[Person, Event]:
    """people.person_left, and their faces removed too: a face must not outlive the person's access."""
    person, event = people.person_left(session, actor, person_id, reason)
    removed = _forget(session, person_id, photos)
    state = {**event.detail["state"], **dict(_gone(removed))}
    return person, dataclasses.replace(event, detail={**event.detail, "face_templates_removed": removed, "state": state})


def _gone(template_ids: list[int]) -> list[tuple[str, None]]:
    """The removed templates' entries of ``detail["state"]``."""
    return [(f"face/{i}", None) for i in template_ids]


def face_count(session: Session, person_id: int) -> int:
    return session.scalar(select(func.count()).select_from(FaceTemplate)
                          .where(FaceTemplate.person_id == person_id)) or 0


def load_gallery(session: Session, key: bytes) -> Gallery:
    """Every template of the active people. One that does not open (another key, an altered row) is
    skipped with a warning naming it, so one bad row does not blind every door."""
    gallery = Gallery()
    rows = session.execute(select(FaceTemplate.id, FaceTemplate.person_id, FaceTemplate.sealed)
                           .join(Person, Person.id == FaceTemplate.person_id)
                           .where(Person.status == "active").order_by(FaceTemplate.id))
    for template_id, person_id, sealed in rows:
        try:
            encoding = open_encoding(key, person_id, sealed)
        except ValueError:
            log.warning("face template %d does not open under the evidence key (another key, or the row was "
                        "altered); skipped", template_id)
            continue
        gallery.add(person_id, encoding)
    return gallery


def _forget(session: Session, person_id: int, photos: PhotoStore | None) -> list[int]:
    """Delete a person's templates, and the kept photos no other template shares (the store is content
    addressed). Files go at once, before the commit: if that fails, a row may point to a deleted photo,
    which errs on the side of privacy (the encoding still works; the photo only served review)."""
    templates = list(session.scalars(select(FaceTemplate).where(FaceTemplate.person_id == person_id)
                                     .order_by(FaceTemplate.id)))
    shas = {t.photo_sha256 for t in templates if t.photo_sha256}
    for template in templates:
        session.delete(template)
    session.flush()
    if photos is not None and shas:
        shared = set(session.scalars(select(FaceTemplate.photo_sha256).where(FaceTemplate.photo_sha256.in_(shas))))
        for sha in shas - shared:
            photos.delete(sha)
    return [t.id for t in templates]
