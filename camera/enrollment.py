"""Face enrollment from photos: the one face of a photo encoded (camera/faces.py), sealed under the evidence
key and bound to the person (badge_bridge/face_match.py), so a row copied to another person does not open.

Like badge_bridge.people, it returns the audit event that records the change (the caller submits it once
the change is committed); the event names the template and the photo's hash, never the encoding. Photos
are personal data: kept only when the site asks (``faces.keep_photos``), then encrypted in the evidence
store. Removing faces, and a person leaving, is badge_bridge/biometrics.py.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit import access_tables
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.face_match import seal_encoding
from badge_bridge.models import FaceTemplate, Person
from camera import faces
from camera.evidence import EvidenceStore

_MEDIA_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"RIFF": "image/webp"}
"""What camera.faces accepts (JPEG, PNG, WebP), by the files' first bytes."""


class PhotoRefused(people.AdminError):
    """A photo that cannot be enrolled (not an image, a thumbnail, no face or several, a face cut off, small,
    turned, dark, washed out or blurred: camera.faces.encode_photo says which and what to do); the other
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
    template = FaceTemplate(person_id=person_id, sealed=seal_encoding(key, person_id, encoding),
                            photo_sha256=sha, created_by=actor[:64])
    session.add(template)
    session.flush()
    return template, people.admin_event(EventKind.ADMIN_FACE_ENROLLED, actor, {"person": person_id},
                                        {"template_id": template.id, "photo_kept": sha is not None,
                                         "photo_sha256": sha}, access_tables.face(template))


def _media_type(photo: bytes) -> str:
    return next((kind for magic, kind in _MEDIA_TYPES.items() if photo.startswith(magic)), "application/octet-stream")
