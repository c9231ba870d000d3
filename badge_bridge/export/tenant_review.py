"""A customer's own monthly access review: `badge-bridge export --month 2026-10 --tenant acme --out DIR`.

One folder per tenant, holding only that tenant's data: their people and cards as the log's recorded states
had them at the month's end (audit.access_tables, replayed as the site's review does), the month's changes
to them (added, approved, refused, levels granted and removed, cards issued, revoked, their validity), and
the access events at the doors into their cages or of their people. Someone else at their cage's door (site
staff, a visitor) is listed as "not of <tenant>", without a name or card, and another customer never
appears. Each event row carries its chain, seq and hash, so an auditor holding the site's export of the same
month can find it there, in the proven chain.

Signed like the site's export: manifest.json lists every file with its SHA-256 and is signed with the
bridge's signing key; the signature is over a prefix of its own (``MANIFEST_DOMAIN``), so a tenant's manifest
can never pass for a site export's, nor the reverse. `badge-bridge audit verify-export` checks either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import Connection

from badge_bridge.audit import access_tables
from badge_bridge.config import SiteConfig
from badge_bridge.events import to_us
from badge_bridge.export import review
from badge_bridge.export.format import MANIFEST_NAME, PDF_NAME, SIGNATURE_NAME, sha256_file
from badge_bridge.export.pdf import _Doc
from badge_bridge.export.verify import VerifyResult, _check_manifest
from badge_bridge.export.write import ExportError, month_bounds
from badge_bridge.keys import KeyStore, public_hex
from badge_bridge.models import Site, Tenant

FORMAT = "badge-bridge-tenant-review/1"
MANIFEST_DOMAIN = b"badge-bridge-tenant-review-manifest/1\n"
PEOPLE, CREDENTIALS, CHANGES, EVENTS = ("tenant-people.csv", "tenant-credentials.csv", "tenant-changes.csv",
                                        "tenant-events.csv")


STATUS_CHANGES = {"pending->active": "approved by site staff", "pending->refused": "refused by site staff",
                  "active->left": "left", "pending->left": "left"}


def manifest_message(manifest_bytes: bytes) -> bytes:
    return MANIFEST_DOMAIN + manifest_bytes


@dataclass
class TenantReview:
    """What the caller reports."""

    tenant: str
    month: str
    people: int = 0
    credentials: int = 0
    events: int = 0
    files: list[str] = field(default_factory=list)


def _ids(key: str) -> int:
    return int(key.split("/", 1)[1])


def export_tenant(engine: Engine, keys: KeyStore, config: SiteConfig, month: str, tenant_key: str, out: Path, *,
                  actor: str) -> TenantReview:
    """Write tenant ``tenant_key``'s review of ``month`` into ``out`` (created; must be empty) and sign it."""
    limits = config.tenant(tenant_key)
    with engine.connect() as conn:
        tenant = conn.execute(select(Tenant.id, Tenant.name).where(Tenant.key == tenant_key)).first()
        if limits is None or tenant is None:
            raise ExportError(f"no tenant {tenant_key!r} in the site file and the database "
                              f"(known: {', '.join(t.key for t in config.tenants) or 'none'})")
        site = conn.execute(select(Site.name, Site.timezone)).first()
        site_name, tz_name = (site[0], site[1]) if site else ("", "UTC")
        start_us, end_us = month_bounds(month, ZoneInfo(tz_name))
        out.mkdir(parents=True, exist_ok=True)
        if any(out.iterdir()):
            raise ExportError(f"{out} is not empty; export into a new folder")
        clock = review.Clock(ZoneInfo(tz_name))
        h = review.history(conn, start_us, end_us)
        mine = {_ids(k): s for k, s in h.at_end.items() if k.startswith("person/") and s.get("tenant") == tenant.id}
        mine.update({_ids(c.key): c.after or c.before or {} for c in h.changes  # people of theirs gone by the end
                     if c.key.startswith("person/") and (c.after or c.before or {}).get("tenant") == tenant.id
                     and _ids(c.key) not in mine})
        cards = {_ids(k): s for k, s in h.at_end.items() if k.startswith("credential/") and s.get("person") in mine}
        name = {pid: f"{s.get('name', '?')} (#{pid})" for pid, s in mine.items()}
        name_of = tenant.name or tenant_key
        sections = [
            review.Section(PEOPLE, f"People of {name_of} at the month's end", ["person", "status", "levels"],
                           [100, 40, 130], [[name[pid], s.get("status"), ", ".join(s.get("levels", []))]
                                            for pid, s in sorted(mine.items(), key=lambda x: (x[1].get("name", ""), x[0]))]),
            review.Section(CREDENTIALS, "Their cards at the month's end",
                           ["credential", "person", "format", "number", "status", "valid until"],
                           [22, 90, 30, 40, 30, 50],
                           [[cid, name.get(int(c.get("person") or 0), "?"), c.get("format"), c.get("number"), c.get("status"),
                             clock(review._iso_us(c.get("valid_until")))] for cid, c in sorted(cards.items())]),
            review.Section(CHANGES, "Changes during the month: added, approved, refused, levels, cards",
                           ["time", "person", "change", "by"], [40, 90, 100, 45],
                           _changes(h.changes, mine, cards, name, clock)),
            review.Section(EVENTS, f"Access events at the doors into {', '.join(limits.areas)} or of their people",
                           ["time", "door", "event", "reason", "who", "chain", "seq", "hash"],
                           [34, 24, 24, 30, 50, 26, 12, 73],
                           _events(conn, config, limits.areas, set(mine), name, f"not of {name_of}", start_us, end_us,
                                   clock), note="Each row is the site log's entry (chain, seq, hash): find it in the "
                           "site's export of the month to see it proven."),
        ]
        for section in sections:
            review.write_csv(section, out)
    doc = _Doc(out / PDF_NAME, f"Access review {month} - {name_of}")
    doc.heading(f"Monthly access review: {name_of}, {month}", 1)
    doc.para(f"Site {site_name}, month {month} in {tz_name}. Generated {clock(to_us(datetime.now(UTC)))} by {actor}. "
             f"Cards of {name_of} are limited by the site to the levels {', '.join(limits.levels)} and "
             f"{limits.max_validity_days} days' validity. Every table is also a CSV file in this folder.")
    for section in sections:
        doc.heading(section.title)
        if section.note:
            doc.para(section.note)
        doc.table(section.header, section.head, section.widths, total=section.total)
    doc.build()
    signer = keys.signer()
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(out.iterdir()) if p.is_file()}
    manifest = {"format": FORMAT, "tenant": tenant_key, "tenant_name": name_of, "site": site_name, "month": month,
                "timezone": tz_name, "start_us": start_us, "end_us": end_us, "generated_by": actor,
                "signing_key": signer.key_id, "public_key": public_hex(signer.public), "files": files}
    raw = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode()
    (out / MANIFEST_NAME).write_bytes(raw)
    (out / SIGNATURE_NAME).write_text(signer.sign(manifest_message(raw)) + "\n")
    return TenantReview(tenant_key, month, len(mine), len(cards), sections[3].total, sorted(files))


def _changes(changes: list[review.Change], mine: dict[int, access_tables.State], cards: dict[int, Any],
             name: dict[int, str], clock: review.Clock) -> list[list[Any]]:
    rows = []
    for c in changes:
        kind, rid = c.key.split("/", 1)
        before, after = c.before or {}, c.after or {}
        if kind == "person" and int(rid) in mine:
            said = []
            if not before:
                said.append(f"added ({after.get('status')})")
            elif before.get("status") != after.get("status"):
                said.append(STATUS_CHANGES.get(f"{before.get('status')}->{after.get('status')}",
                                               f"status {after.get('status')}"))
            was, now = set(before.get("levels", [])), set(after.get("levels", []))
            said += [f"level {lvl} granted" for lvl in sorted(now - was)]
            said += [f"level {lvl} removed" for lvl in sorted(was - now)]
            rows += [[clock(c.ts_us), name[int(rid)], what, c.actor] for what in said]
        elif kind == "credential" and (holder := int(after.get("person", before.get("person")) or 0)) in mine:
            card = f"card {after.get('number', before.get('number'))}"
            what = (f"{card} issued" if not before else f"{card} {after.get('status')}"
                    if before.get("status") != after.get("status") else f"{card} valid until {after.get('valid_until')}")
            rows.append([clock(c.ts_us), name[holder], what, c.actor])
    return rows


def _events(conn: Connection, config: SiteConfig, areas: list[str], people: set[int], name: dict[int, str],
            stranger: str, start_us: int, end_us: int, clock: review.Clock) -> list[list[Any]]:
    doors = sorted({d.key for d in config.doors if d.area_in in areas or d.area_out in areas})
    params: dict[str, Any] = {"a": start_us, "b": end_us, **{f"d{i}": d for i, d in enumerate(doors)}}
    at_doors = f"door IN ({', '.join(f':d{i}' for i in range(len(doors)))})" if doors else "1 = 0"
    by_people = f"person_id IN ({', '.join(str(int(p)) for p in sorted(people))})" if people else "1 = 0"
    rows = []
    for ts, door, kind, pid, detail, chain, seq, hsh in conn.execute(text(
            "SELECT ts_us, door, kind, person_id, detail, chain_id, seq, hash FROM audit_entry WHERE received_us >= :a "
            f"AND received_us < :b AND kind LIKE 'access.%' AND ({at_doors} OR {by_people}) ORDER BY ts_us, chain_id, seq"),
            params):
        reason = json.loads(detail).get("reason", "")
        who = name[pid] if pid in people else stranger if pid is not None else "unknown card"
        rows.append([clock(ts), door or "", kind, reason if isinstance(reason, str) else "", who, chain, seq, hsh])
    return rows


def is_review(directory: Path) -> bool:
    """Whether ``directory`` holds a tenant's review (its manifest says so; checked again by its signature)."""
    try:
        return json.loads((directory / MANIFEST_NAME).read_bytes()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def verify_review(directory: Path, trusted: dict[str, Ed25519PublicKey]) -> VerifyResult:
    """Every file listed with its SHA-256, nothing added, and the manifest signed by a trusted key."""
    result = VerifyResult()
    manifest = _check_manifest(directory, trusted, result, manifest_message)
    if manifest is not None:
        result.notes.append(f"tenant review of {manifest.get('tenant')} for {manifest.get('month')}")
    return result
