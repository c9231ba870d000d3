"""A customer's monthly review (export.tenant_review), on both databases: it holds their people, cards,
approvals and the events at their cages, and nothing of another customer (no name, card, or event of
theirs, in any file, the PDF's text included); someone else at their door is there without a name; the
folder verifies with `badge-bridge audit verify-export` and a tampered one does not."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import people, tenants
from badge_bridge.audited import commit_change
from badge_bridge.cli.export import verify_export
from badge_bridge.config import SiteConfig
from badge_bridge.events import Event
from badge_bridge.export import tenant_review
from badge_bridge.export.verify import verify_export as verify_folder
from badge_bridge.export.write import ExportError
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from tests.test_tenants import synced, two_tenants
from tests.tree_heads import public_key_file

NOW = datetime.now(UTC)
MONTH = NOW.astimezone().strftime("%Y-%m")
ACME_ONLY = ("Ann Acme", "12:4242")
GLOBEX = ("Gina Globex", "12:9009", "Globex", "Dave Globex")
STAFF = ("Ada Lovelace", "12:1001")


@pytest.fixture
def site_month(engine: Engine, site: SiteConfig, keys: KeyStore) -> Iterator[tuple[SiteConfig, dict[str, str]]]:
    """Acme's Ann (approved, a card), Globex's Gina (a card) and staff's Ada, each at some doors this month;
    Gina even badges at Acme's cage 7 (denied)."""
    config = two_tenants(site)
    writer = synced(engine, config, keys, "cli")  # this month's: an export of the month made just now

    def do(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        return commit_change(writer, "cli:t", lambda s: fn(s, "cli:t", *args, **kwargs))[0]

    def sc(key: str):  # type: ignore[no-untyped-def]
        with Session(engine) as s:
            return tenants.scope(s, config, key)

    try:
        ann = do(tenants.add_person, sc("acme"), "Ann Acme", levels=["cage-7-acme"]).id
        ann_card = do(tenants.add_credential, sc("acme"), ann, "wiegand26", "12:4242", pepper=keys.pin_pepper(),
                      valid_until=NOW + timedelta(days=30), now=NOW).id
        do(tenants.approve, ann)
        gina = do(tenants.add_person, sc("globex"), "Gina Globex", levels=["noc-24x7"]).id
        gina_card = do(tenants.add_credential, sc("globex"), gina, "wiegand26", "12:9009", pepper=keys.pin_pepper(),
                       valid_until=NOW + timedelta(days=5), now=NOW).id
        dave = do(tenants.add_person, sc("globex"), "Dave Globex").id
        do(tenants.refuse, dave, "not on the list")
        ada = do(people.add_person, "Ada Lovelace", levels=["hall-a-engineers"]).id
        ada_card = do(people.add_credential, ada, "wiegand26", "12:1001", pepper=keys.pin_pepper()).id
        for i, (event_id, kind, door, pid, cid) in enumerate((
                ("ann-in", "access.granted", "cage-7", ann, ann_card),
                ("ann-front", "access.granted", "main-entrance", ann, ann_card),
                ("gina-at-cage", "access.denied", "cage-7", gina, gina_card),
                ("gina-at-noc", "access.granted", "noc", gina, gina_card),
                ("ada-in", "access.granted", "cage-7", ada, ada_card))):
            ts = NOW - timedelta(seconds=10 - i)
            writer.submit(Event(id=f"ctl:{event_id}", kind=kind, source="ctl-hall-a", ts=ts, received_ts=NOW, door=door,
                                subject={"person": pid, "credential": cid},
                                detail={"reason": "granted" if kind == "access.granted" else "no_access_level",
                                        "direction": "in"}))
    finally:
        assert writer.stop()
    yield config, {"ann": str(ann), "gina": str(gina)}


def entry_hashes(engine: Engine) -> dict[str, str]:
    """The log's hash of each event the fixture made, by its name."""
    with Session(engine) as s:
        return {e.removeprefix("ctl:"): h for e, h in s.execute(
            select(AuditEntry.event_id, AuditEntry.hash).where(AuditEntry.event_id.startswith("ctl:")))}


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_a_tenants_review_holds_nothing_of_another(site_month: tuple[SiteConfig, dict[str, str]], engine: Engine,
                                                   keys: KeyStore, tmp_path: Path) -> None:
    config, _ = site_month
    out = tmp_path / "acme"
    done = tenant_review.export_tenant(engine, keys, config, MONTH, "acme", out, actor="cli:t")
    assert (done.people, done.credentials, done.events) == (1, 1, 4)  # Ann's two, Gina's and Ada's at cage 7
    every = b"".join(p.read_bytes() for p in sorted(out.iterdir())) + pdf_text(out / "report.pdf").encode()
    hashes = entry_hashes(engine)
    for wanted in ACME_ONLY + ("approved by site staff", "not of Acme Hosting", hashes["ann-in"], hashes["ada-in"]):
        assert wanted.encode() in every, wanted
    assert "Ann Acme" in pdf_text(out / "report.pdf")  # the PDF's text is searched, not its compressed bytes
    for unwanted in GLOBEX + STAFF + (hashes["gina-at-noc"],):
        assert unwanted.encode() not in every, unwanted

    other = tenant_review.export_tenant(engine, keys, config, MONTH, "globex", tmp_path / "globex", actor="cli:t")
    theirs = b"".join(p.read_bytes() for p in sorted((tmp_path / "globex").iterdir()))
    theirs += pdf_text(tmp_path / "globex" / "report.pdf").encode()
    assert b"Gina Globex" in theirs and b"refused by site staff" in theirs and other.events == 2
    for unwanted in ACME_ONLY + STAFF:
        assert unwanted.encode() not in theirs, unwanted


def test_the_review_verifies_and_a_tampered_one_does_not(site_month: tuple[SiteConfig, dict[str, str]],
                                                          engine: Engine, keys: KeyStore, tmp_path: Path) -> None:
    config, _ = site_month
    out = tmp_path / "acme"
    tenant_review.export_tenant(engine, keys, config, MONTH, "acme", out, actor="cli:t")
    key = str(public_key_file(keys))
    run = CliRunner().invoke(verify_export, [str(out), "--public-key", key])
    assert run.exit_code == 0 and "verified every file and the manifest signature" in run.output, run.output
    assert verify_folder(out, keys.trusted_public_keys()).ok

    people_csv = out / tenant_review.PEOPLE
    people_csv.write_text(people_csv.read_text().replace("Ann Acme", "Mallory"))
    run = CliRunner().invoke(verify_export, [str(out), "--public-key", key])
    assert run.exit_code == 1 and f"file {tenant_review.PEOPLE}: sha256 mismatch (modified)" in run.output, run.output
    people_csv.write_text(people_csv.read_text().replace("Mallory", "Ann Acme"))
    assert verify_folder(out, keys.trusted_public_keys()).ok

    manifest = out / "manifest.json"  # the hash of an edited file written into the manifest: its signature fails
    manifest.write_text(manifest.read_text().replace('"tenant": "acme"', '"tenant": "globex"'))
    result = verify_folder(out, keys.trusted_public_keys())
    assert "manifest signature invalid (the manifest or its signature was changed)" in result.problems


def test_a_tenant_signature_is_no_site_export_signature(site_month: tuple[SiteConfig, dict[str, str]],
                                                         engine: Engine, keys: KeyStore, tmp_path: Path) -> None:
    """Its manifest with the format changed to the site's: the signature covers another prefix and fails."""
    config, _ = site_month
    out = tmp_path / "acme"
    tenant_review.export_tenant(engine, keys, config, MONTH, "acme", out, actor="cli:t")
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text().replace(tenant_review.FORMAT, "badge-bridge-export/2"))
    result = verify_folder(out, keys.trusted_public_keys())
    assert not result.ok and any("manifest signature invalid" in p or "proof.json is missing" in p
                                 for p in result.problems), result.problems


def test_an_unknown_tenant_or_a_full_folder_is_refused(site_month: tuple[SiteConfig, dict[str, str]], engine: Engine,
                                                       keys: KeyStore, tmp_path: Path) -> None:
    config, _ = site_month
    with pytest.raises(ExportError, match=r"no tenant 'initech'.*\(known: acme, globex\)"):
        tenant_review.export_tenant(engine, keys, config, MONTH, "initech", tmp_path / "x", actor="cli:t")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    with pytest.raises(ExportError, match="is not empty"):
        tenant_review.export_tenant(engine, keys, config, MONTH, "acme", tmp_path / "full", actor="cli:t")
