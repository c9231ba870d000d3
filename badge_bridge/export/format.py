"""The export's file format: file names, row fields, the time spelling, the manifest's file entries and what
its signature covers. The writer, the offline verifier, the console and the bench all take it from here, so
they cannot drift apart; a change here is a new ``FORMAT``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import date
from pathlib import Path
from typing import TypedDict

FORMAT = "badge-bridge-export/2"
"""/2: proof.json carries each chain's ``tree`` (badge_bridge.export.tree_proof); /1 had none."""
FIELDS = ("chain_id", "seq", "event_id", "ts", "received", "source", "door", "kind", "subject", "detail",
          "prev_hash", "hash")
"""Every hashed field (see audit.chain.entry_body) plus seq and both hashes: enough to recompute the chain."""
CSV_NAME, JSONL_NAME, PDF_NAME, PROOF_NAME = "events.csv", "events.jsonl", "report.pdf", "proof.json"
MANIFEST_NAME, SIGNATURE_NAME = "manifest.json", "manifest.sig"
REVIEW_DOORS, REVIEW_AREAS = "review-door-totals.csv", "review-area-totals.csv"
REVIEW_RESTRICTED_BY_PERSON, REVIEW_RESTRICTED = "review-restricted-by-person.csv", "review-restricted-entries.csv"
REVIEW_DENIALS_BY_PERSON, REVIEW_DENIALS_BY_DOOR = "review-denials-by-person.csv", "review-denials-by-door.csv"
REVIEW_ALARMS, REVIEW_AFTER_HOURS = "review-alarms.csv", "review-after-hours.csv"
REVIEW_HOLDERS, REVIEW_LEVEL_CHANGES = "review-access-holders.csv", "review-level-changes.csv"
REVIEW_LEAVERS, REVIEW_UNUSED = "review-leavers.csv", "review-unused-credentials.csv"
REVIEW_EXPIRED, REVIEW_USERS = "review-expired-not-revoked.csv", "review-console-users.csv"
REVIEW_USER_CHANGES, REVIEW_KINDS = "review-console-user-changes.csv", "review-entry-kinds.csv"
REVIEW_REQUESTS, REVIEW_VISITORS = "review-access-requests.csv", "review-visitors.csv"
REVIEW_FILES = (REVIEW_DOORS, REVIEW_AREAS, REVIEW_RESTRICTED_BY_PERSON, REVIEW_RESTRICTED, REVIEW_DENIALS_BY_PERSON,
                REVIEW_DENIALS_BY_DOOR, REVIEW_ALARMS, REVIEW_AFTER_HOURS, REVIEW_HOLDERS, REVIEW_LEVEL_CHANGES,
                REVIEW_REQUESTS, REVIEW_LEAVERS, REVIEW_UNUSED, REVIEW_EXPIRED, REVIEW_USERS, REVIEW_USER_CHANGES, REVIEW_KINDS,
                REVIEW_VISITORS)
"""The report's tables, one CSV each beside report.pdf (``export.review``); the manifest covers them."""
ROW_FILES = (CSV_NAME, JSONL_NAME)
MONTH_RE = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])\Z")
"""An export covers one month, named YYYY-MM (the manifest's ``month``). Whole and ASCII: ``$`` would take
"2026-01\\n" and ``\\d`` "２０２６-01" (int() reads both)."""


class ManifestFile(TypedDict):
    """One file's entry under manifest.json's ``files``: every file of the export but the manifest and its
    signature."""

    sha256: str
    bytes: int


def manifest_message(manifest_bytes: bytes) -> bytes:
    """What manifest.sig signs: a domain prefix, so a checkpoint signature can never pass for it."""
    return b"badge-bridge-export-manifest/1\n" + manifest_bytes


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_EPOCH = date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=4096)
def _day_text(day: int) -> str:
    return date.fromordinal(_EPOCH + day).isoformat()


@functools.lru_cache(maxsize=4096)
def _day_number(text: str) -> int:
    return date.fromisoformat(text).toordinal() - _EPOCH


_CLOCK: list[str] = []
"""``HH:MM:SS`` for every second of a day, filled on the first ``iso_us`` (about 30 ms)."""


def _clock() -> list[str]:
    _CLOCK.extend(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400))
    return _CLOCK


def iso_us(us: int) -> str:
    """Microseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: exact, readable in a spreadsheet,
    and about six times faster than datetime.isoformat (day and clock parts are looked up), which matters
    at a million rows."""
    secs, frac = divmod(us, 1_000_000)
    day, rest = divmod(secs, 86_400)
    return f"{_day_text(day)}T{(_CLOCK or _clock())[rest]}.{frac:06d}Z"


def us_from_iso(text: str) -> int:
    """The inverse of ``iso_us``, strict: any other spelling of a time is an edit and is refused."""
    if len(text) != 27 or text[10] != "T" or text[26] != "Z":
        raise ValueError(f"time {text[:40]!r}: expected YYYY-MM-DDTHH:MM:SS.ffffffZ")
    us = (_day_number(text[:10]) * 86_400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60
          + int(text[17:19])) * 1_000_000 + int(text[20:26])
    if iso_us(us) != text:
        raise ValueError(f"time {text!r} is not a valid time")
    return us
