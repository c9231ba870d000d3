"""Face enrollment and the gallery the doors match against.

Enrollment turns a photo into a 128-number encoding (camera/faces.py), sealed under the evidence key and
bound to the person, so a row copied to another person does not open. Like badge_bridge.people, every
change returns the audit event that records it (the caller submits it once the change is committed);
the events name the template and the photo's hash, never the encoding.

Photos are personal data: kept only when the site asks (``faces.keep_photos``), then encrypted in the
evidence store, and deleted with their templates.
"""

from __future__ import annotations

import dataclasses
import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.events import Event
from badge_bridge.models import FaceTemplate, Person
from camera import faces
from camera.evidence import EvidenceStore

log = logging.getLogger(__name__)

_MEDIA_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"RIFF": "image/webp"}
"""What camera.faces accepts (JPEG, PNG, WebP), by the files' first bytes."""


class PhotoRefused(people.AdminError):
    """A photo that cannot be enrolled (no face, several faces, too small, not an image); the other
    photos of the same batch can still be. ``code`` is camera.faces.FaceError's."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"photo refused ({code}): {reason}")
        self.code = code


def enroll_face(session: Session, actor: str, person_id: int, photo: bytes, *, key: bytes,
                photos: EvidenceStore | None) -> tuple[FaceTemplate, Event]:
    """Enroll one photo of an active person; ``photos`` None: the photo is not kept, only the encoding."""
    person = session.get(Person, person_id)
    if person is None:
        raise people.AdminError(f"no person with id {person_id}")
    if person.status != "active":
        raise people.AdminError(f"person {person_id} has left; a face cannot be enrolled for them")
    try:
        encoding = faces.encode_photo(photo)
    except faces.FaceError as exc:
        raise PhotoRefused(exc.code, str(exc)) from None
    # Stored before the row: if the transaction then fails, an encrypted orphan is left, never a dangling row.
    sha = photos.put(photo, _media_type(photo)) if photos is not None else None
    template = FaceTemplate(person_id=person_id, sealed=faces.seal_encoding(key, person_id, encoding),
                            photo_sha256=sha, created_by=actor[:64])
    session.add(template)
    session.flush()
    return template, people.admin_event("admin.face_enrolled", actor, {"person": person_id},
                                   {"template_id": template.id, "photo_kept": sha is not None, "photo_sha256": sha})


def remove_faces(session: Session, actor: str, person_id: int, *, photos: EvidenceStore | None) -> Event:
    """Remove every face enrolled for a person, and their kept photos from ``photos``."""
    if session.get(Person, person_id) is None:
        raise people.AdminError(f"no person with id {person_id}")
    removed = _forget(session, person_id, photos)
    if not removed:
        raise people.AdminError(f"person {person_id} has no enrolled faces")
    return people.admin_event("admin.face_removed", actor, {"person": person_id},
                         {"templates_removed": removed, "count": len(removed)})


def person_left(session: Session, actor: str, person_id: int, reason: str, *,
                photos: EvidenceStore | None) -> tuple[Person, Event]:
    """people.person_left, and their faces removed too: a face must not outlive the person's access."""
    person, event = people.person_left(session, actor, person_id, reason)
    removed = _forget(session, person_id, photos)
    return person, dataclasses.replace(event, detail={**event.detail, "face_templates_removed": removed})


def face_count(session: Session, person_id: int) -> int:
    return session.scalar(select(func.count()).select_from(FaceTemplate)
                          .where(FaceTemplate.person_id == person_id)) or 0


def load_gallery(session: Session, key: bytes) -> faces.Gallery:
    """Every template of the active people. One that does not open (another key, an altered row) is
    skipped with a warning naming it, so one bad row does not blind every door."""
    gallery = faces.Gallery()
    rows = session.execute(select(FaceTemplate.id, FaceTemplate.person_id, FaceTemplate.sealed)
                           .join(Person, Person.id == FaceTemplate.person_id)
                           .where(Person.status == "active").order_by(FaceTemplate.id))
    for template_id, person_id, sealed in rows:
        try:
            encoding = faces.open_encoding(key, person_id, sealed)
        except ValueError:
            log.warning("face template %d does not open under the evidence key (another key, or the row was "
                        "altered); skipped", template_id)
            continue
        gallery.add(person_id, encoding)
    return gallery


def _forget(session: Session, person_id: int, photos: EvidenceStore | None) -> list[int]:
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


def _media_type(photo: bytes) -> str:
    return next((kind for magic, kind in _MEDIA_TYPES.items() if photo.startswith(magic)), "application/octet-stream")
