"""Face enrollment on both databases with real photos: who matches whom, refusals that store nothing, the
encoding sealed at rest and bound to its person, kept photos encrypted, removal, and audit events that
never carry the encoding."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge import biometrics, face_match, people
from badge_bridge.audit import access_tables
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, FaceTemplate
from camera import enrollment, faces
from camera.evidence import EvidenceStore

FACES = Path(__file__).resolve().parent / "data" / "faces"
TOLERANCE = 0.6


def photo(name: str) -> bytes:
    return (FACES / name).read_bytes()


def side_by_side(*names: str) -> bytes:
    """One JPEG with the faces of several photos next to each other."""
    images = [cv2.imread(str(FACES / name)) for name in names]
    height = min(image.shape[0] for image in images)
    scaled = [cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height)) for image in images]
    return cv2.imencode(".jpg", np.hstack(scaled))[1].tobytes()


def add_person(engine: Engine, name: str) -> int:
    with Session(engine) as s, s.begin():
        person, _ = people.add_person(s, "cli:test", name)
        return person.id


def enroll(engine: Engine, person_id: int, name: str, key: bytes, store: EvidenceStore | None = None
           ) -> tuple[int, Event]:
    with Session(engine) as s, s.begin():
        template, event = enrollment.enroll_face(s, "cli:test", person_id, photo(name), key=key, photos=store)
        return template.id, event


def templates(engine: Engine) -> list[FaceTemplate]:
    with Session(engine) as s:
        return list(s.scalars(select(FaceTemplate).order_by(FaceTemplate.id)))


def gallery(engine: Engine, key: bytes) -> face_match.Gallery:
    with Session(engine) as s:
        return biometrics.load_gallery(s, key)


@pytest.fixture
def key(keys: KeyStore) -> bytes:
    return keys.evidence_key()


@pytest.fixture
def store(tmp_path: Path, key: bytes) -> EvidenceStore:
    return EvidenceStore(tmp_path / "evidence", key)


def test_the_same_person_matches_and_another_does_not(engine: Engine, key: bytes) -> None:
    obama, biden = add_person(engine, "Barack"), add_person(engine, "Joe")
    enroll(engine, obama, "obama.jpg", key)
    enroll(engine, biden, "biden.jpg", key)
    probe = faces.encode_photo(photo("obama2.jpg"))  # another photo, not enrolled yet
    known = gallery(engine, key)
    assert known.distance_to(obama, probe) < TOLERANCE
    assert known.distance_to(biden, probe) > TOLERANCE
    assert known.nearest(probe)[0] == obama

    enroll(engine, obama, "obama2.jpg", key)
    known = gallery(engine, key)
    assert len(known) == 3  # encodings: Barack has two
    joe = faces.encode_photo(photo("biden.jpg"))
    assert known.distance_to(biden, joe) < TOLERANCE
    assert known.distance_to(obama, joe) > TOLERANCE


@pytest.mark.parametrize(("make", "code"), [
    (lambda: photo("no_face_coffee.png"), "no_face"),
    (lambda: side_by_side("obama.jpg", "biden.jpg"), "several_faces"),
    (lambda: b"not a picture at all", "not_an_image"),
], ids=["no face", "two faces", "not an image"])
def test_a_refused_photo_says_why_and_stores_nothing(make, code: str, engine: Engine, key: bytes,
                                                     store: EvidenceStore) -> None:
    person = add_person(engine, "Ada")
    with Session(engine) as s, s.begin(), pytest.raises(enrollment.PhotoRefused) as refused:
        enrollment.enroll_face(s, "cli:test", person, make(), key=key, photos=store)
    assert refused.value.code == code
    assert str(refused.value).startswith(f"photo refused ({code}): ")
    assert templates(engine) == []
    assert not store.root.exists() or not any(store.root.rglob("*.bin"))


def test_only_active_people_are_enrolled(engine: Engine, key: bytes) -> None:
    with pytest.raises(people.AdminError, match="no person with id 99"):
        enroll(engine, 99, "obama.jpg", key)
    person = add_person(engine, "Ada")
    with Session(engine) as s, s.begin():
        people.person_left(s, "cli:test", person, "Retired")
    with pytest.raises(people.AdminError, match=f"person {person} has left"):
        enroll(engine, person, "obama.jpg", key)


def test_the_encoding_is_sealed_and_bound_to_its_person(engine: Engine, key: bytes) -> None:
    person, other = add_person(engine, "Barack"), add_person(engine, "Joe")
    enroll(engine, person, "obama.jpg", key)
    encoding = faces.encode_photo(photo("obama.jpg"))
    (row,) = templates(engine)
    assert row.person_id == person and row.created_by == "cli:test" and row.photo_sha256 is None
    for dtype in (np.float64, np.float32):
        plain = np.asarray(encoding, dtype).tobytes()
        assert plain not in row.sealed
        assert plain[:16] not in row.sealed  # not even the first two numbers
    assert np.allclose(face_match.open_encoding(key, person, row.sealed), encoding)
    with pytest.raises(ValueError):
        face_match.open_encoding(bytes(32), person, row.sealed)
    with pytest.raises(ValueError):
        face_match.open_encoding(key, other, row.sealed)


def test_a_kept_photo_is_encrypted_in_the_store(engine: Engine, key: bytes, store: EvidenceStore) -> None:
    person = add_person(engine, "Barack")
    data = photo("obama.jpg")
    _, event = enroll(engine, person, "obama.jpg", key, store)
    (row,) = templates(engine)
    assert row.photo_sha256 == hashlib.sha256(data).hexdigest()
    assert event.detail == {"template_id": row.id, "photo_kept": True, "photo_sha256": row.photo_sha256,
                            "state": {f"face/{row.id}": access_tables.face(row)[1]}}
    (path,) = store.root.rglob("*.bin")
    on_disk = path.read_bytes()
    assert data[:16] not in on_disk and b"JFIF" not in on_disk
    assert store.get(row.photo_sha256) == (data, "image/jpeg")

    _, without = enroll(engine, person, "obama2.jpg", key)
    assert without.detail["photo_kept"] is False and without.detail["photo_sha256"] is None
    assert len(list(store.root.rglob("*.bin"))) == 1


def test_remove_faces_removes_templates_and_photos(engine: Engine, key: bytes, store: EvidenceStore) -> None:
    barack, joe = add_person(engine, "Barack"), add_person(engine, "Joe")
    enroll(engine, barack, "obama.jpg", key, store)
    enroll(engine, barack, "obama2.jpg", key, store)
    enroll(engine, joe, "biden.jpg", key, store)
    enroll(engine, joe, "obama.jpg", key, store)  # a photo shared with Barack's stays while Joe's row needs it
    ids = [t.id for t in templates(engine) if t.person_id == barack]
    with Session(engine) as s, s.begin():
        event = biometrics.remove_faces(s, "cli:test", barack, photos=store)
    assert event.kind == "admin.face_removed" and event.subject == {"person": barack}
    assert event.detail == {"templates_removed": ids, "count": 2, "state": {f"face/{i}": None for i in ids}}
    assert {t.person_id for t in templates(engine)} == {joe}
    assert not store.exists(hashlib.sha256(photo("obama2.jpg")).hexdigest())
    assert store.get(hashlib.sha256(photo("obama.jpg")).hexdigest())[0] == photo("obama.jpg")
    assert gallery(engine, key).distance_to(barack, faces.encode_photo(photo("obama.jpg"))) is None
    with Session(engine) as s, s.begin(), pytest.raises(people.AdminError, match="has no enrolled faces"):
        biometrics.remove_faces(s, "cli:test", barack, photos=store)


def test_a_person_who_left_is_not_in_the_gallery(engine: Engine, key: bytes, store: EvidenceStore) -> None:
    barack, joe = add_person(engine, "Barack"), add_person(engine, "Joe")
    enroll(engine, barack, "obama.jpg", key, store)
    joes, _ = enroll(engine, joe, "biden.jpg", key)
    probe = faces.encode_photo(photo("obama.jpg"))
    with Session(engine) as s, s.begin():
        people.person_left(s, "cli:test", barack, "Retired")  # templates still there, but not matched
    assert gallery(engine, key).distance_to(barack, probe) is None
    assert len(templates(engine)) == 2
    with Session(engine) as s, s.begin():
        _, event = biometrics.person_left(s, "cli:test", joe, "Retired", photos=store)
    assert event.kind == "admin.person_left" and event.detail["face_templates_removed"] == [joes]
    assert event.detail["reason"] == "Retired" and event.detail["credentials_revoked"] == []
    person = add_person(engine, "Ada")  # leaving with a kept photo removes the photo as well
    enroll(engine, person, "obama2.jpg", key, store)
    with Session(engine) as s, s.begin():
        biometrics.person_left(s, "cli:test", person, "Retired", photos=store)
    assert not store.exists(hashlib.sha256(photo("obama2.jpg")).hexdigest())
    assert [t.person_id for t in templates(engine)] == [barack]


def test_a_template_that_does_not_open_is_skipped(engine: Engine, key: bytes,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    barack, joe = add_person(engine, "Barack"), add_person(engine, "Joe")
    enroll(engine, barack, "obama.jpg", key)
    joes, _ = enroll(engine, joe, "biden.jpg", key)
    with Session(engine) as s, s.begin():  # Barack's sealed encoding copied onto Joe's row
        row = s.get(FaceTemplate, joes)
        row.sealed = s.scalar(select(FaceTemplate.sealed).where(FaceTemplate.person_id == barack))
    with caplog.at_level(logging.WARNING, logger="badge_bridge.biometrics"):
        known = gallery(engine, key)
    assert known.distance_to(barack, faces.encode_photo(photo("obama.jpg"))) < TOLERANCE
    assert known.distance_to(joe, faces.encode_photo(photo("biden.jpg"))) is None
    (warning,) = [r for r in caplog.records if r.name == "badge_bridge.biometrics"]
    assert f"face template {joes} " in warning.getMessage()


def test_audit_events_carry_no_encoding(engine: Engine, key: bytes, keys: KeyStore, store: EvidenceStore) -> None:
    person = add_person(engine, "Barack")
    _, enrolled = enroll(engine, person, "obama.jpg", key, store)
    with Session(engine) as s, s.begin():
        removed = biometrics.remove_faces(s, "cli:test", person, photos=store)
    writer = AuditWriter(engine, "bridge-1.cli", keys.signer())
    writer.start()
    for event in (enrolled, removed):
        writer.submit(event)
    assert writer.stop(timeout=30)
    with Session(engine) as s:
        entries = list(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
        assert s.scalar(select(func.count()).select_from(FaceTemplate)) == 0
    assert [e.kind for e in entries] == ["admin.face_enrolled", "admin.face_removed"]
    encoding = faces.encode_photo(photo("obama.jpg"))
    for entry in entries:
        assert entry.source == "cli:test" and json.loads(entry.subject) == {"person": person}
        assert not any(repr(float(x))[:7] in entry.detail for x in encoding), entry.detail
        assert not [v for v in leaves(json.loads(entry.detail)) if isinstance(v, float)], entry.detail


def leaves(value: object) -> list[object]:
    """Every scalar in a JSON value."""
    if isinstance(value, dict):
        return [leaf for inner in value.values() for leaf in leaves(inner)]
    if isinstance(value, list):
        return [leaf for inner in value for leaf in leaves(inner)]
    return [value]
