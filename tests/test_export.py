"""The monthly audit export and `audit verify-export`, on SQLite and PostgreSQL.

A month of known events written by the real AuditWriter (with entries before and after it), people and
credentials made with badge_bridge.people; the export's rows and proof checked, then every kind of tamper
tried on a fresh copy of the export and reported precisely. The PDF is rendered to PNG with pdftoppm
(test-artifacts/test_export/) so a person can look at it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit.chain import entry_body, entry_hash
from badge_bridge.audit.segments import prune, seal
from badge_bridge.audit.tree_head import TreeHead, cosign
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.cli import main
from badge_bridge.config import SiteConfig
from badge_bridge.db import make_engine
from badge_bridge.events import Event, to_us
from badge_bridge.export import verify as export_verify
from badge_bridge.export.format import FIELDS, REVIEW_FILES, manifest_message, sha256_file
from badge_bridge.export.verify import verify_export
from badge_bridge.export.write import ExportError, export_month
from badge_bridge.keys import KeyStore
from badge_bridge.site_sync import sync_site
from tests.test_console_routes import PASSWORDS, cheap_password_hashes, make_app, post, seed_site  # noqa: F401 (fixtures)
from tests.tree_heads import public_key_file, publish_heads, witness_keys

OCT = datetime(2026, 10, 1, tzinfo=UTC)
MONTH_EVENTS = 60


def _event(i: int, ts: datetime, person: int, credential: int) -> Event:
    granted = i % 6 != 5
    door = ("main-entrance", "hall-a", "noc")[i % 3]
    detail = {"reader": f"{door}-in", "reason": "granted" if granted else "not_in_schedule"}
    return Event(id=f"ctl:{i}", kind="access.granted" if granted else "access.denied", source="ctl-lobby", ts=ts,
                 received_ts=ts + timedelta(milliseconds=5), door=door,
                 subject={"person": person, "credential": credential}, detail=detail)


@pytest.fixture
def witness(tmp_path: Path) -> KeyStore:
    return witness_keys(tmp_path)


@pytest.fixture
def month(engine: Engine, site: SiteConfig, keys: KeyStore, witness: KeyStore) -> dict[str, int]:
    """People (one left with a card still active, one expired card), then 3 September events, 60 in
    October (some after hours, a forced door), 3 in November, checkpoints every 7 entries, and a signed
    tree head after every entry, cosigned by the witness."""
    with Session(engine) as s, s.begin():
        sync_site(s, site)
        ada, _ = people.add_person(s, "cli:test", "Ada Lovelace", company="Analytical Engines",
                                   levels=["staff", "hall-a-engineers"])
        card, _ = people.add_credential(s, "cli:test", ada.id, "wiegand26", "12:1001", pepper=keys.pin_pepper())
        bob, _ = people.add_person(s, "cli:test", "Bob <script>alert(1)</script> Łukasz", levels=["staff"])
        old, _ = people.add_credential(s, "cli:test", bob.id, "wiegand26", "12:1002", pepper=keys.pin_pepper(),
                                       valid_until=datetime(2026, 9, 1, tzinfo=UTC))
        people.add_user(s, "cli:test", "auditor", "auditor", PASSWORDS["auditor"])
        ids = {"ada": ada.id, "card": card.id, "bob": bob.id, "old": old.id}
    with Session(engine) as s, s.begin():
        gone, _ = people.add_person(s, "cli:test", "Carol Left", levels=["staff"])
        people.add_credential(s, "cli:test", gone.id, "wiegand26", "12:1003", pepper=keys.pin_pepper())
        s.flush()
        gone.status = "left"  # marked as left by hand, the card forgotten: what the review must catch
    writer = AuditWriter(engine, "bridge-1", keys.signer())
    writer.start()
    times = ([OCT - timedelta(days=3, hours=h) for h in range(3)]
             + [OCT + timedelta(hours=3 + 11 * i) for i in range(MONTH_EVENTS)]
             + [datetime(2026, 11, 1, 12, tzinfo=UTC) + timedelta(minutes=i) for i in range(3)])
    for i, ts in enumerate(times):
        writer.submit(_event(i, ts, ids["ada"], ids["card"]))
        if i == 20:
            writer.submit(Event(id="ctl:forced-1", kind="door.forced", source="ctl-lobby", ts=ts, received_ts=ts,
                                door="hall-a"))
        writer.flush()  # one commit each, so checkpoints fall every 7 entries inside the month
    assert writer.stop()
    publish_heads(engine, keys.signer(), witness.signer())
    return ids


def test_export_rows_proof_and_pdf(engine: Engine, month: dict[str, int], keys: KeyStore, tmp_path: Path,
                                   db_url: str, request: pytest.FixtureRequest) -> None:
    out = tmp_path / "export"
    summary = export_month(engine, keys, "2026-10", out, actor="cli:test")
    assert summary.verified, summary.problems
    assert sorted(p.name for p in out.iterdir()) == sorted(["events.csv", "events.jsonl", "manifest.json",
                                                            "manifest.sig", "proof.json", "report.pdf", *REVIEW_FILES])
    with (out / "events.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert len(rows) == len(lines) == MONTH_EVENTS + 1  # the forced door too
    assert [r["seq"] for r in rows] == [str(x["seq"]) for x in lines]
    first = rows[0]
    assert list(first) == list(FIELDS)
    assert first["event_id"] == "ctl:3" and first["ts"] == "2026-10-01T03:00:00.000000Z"
    assert first["received"] == "2026-10-01T03:00:00.005000Z" and first["door"] == "main-entrance"
    assert json.loads(first["subject"]) == {"person": month["ada"], "credential": month["card"]}
    assert lines[-1]["event_id"] == f"ctl:{MONTH_EVENTS + 2}"
    proof = json.loads((out / "proof.json").read_text())
    chain = proof["chains"][0]
    assert chain["anchor"]["event_id"] == "ctl:2" and chain["first_seq"] == 4
    tree = chain["tree"]
    cover = tree["heads"][-1]["head"]
    assert cover["size"] == 65 and chain["last_seq"] == 64, "the first head with an entry after the month"
    assert chain["tail"][0]["seq"] == 65 and chain["tail"][-1]["seq"] >= 65
    assert tree["previous"]["head"]["size"] == 4 and tree["frontier_size"] == 3, "September's covering head"
    assert all(h["cosignatures"] for h in tree["heads"]) and tree["consistency"]
    assert chain["checkpoints"], "the month has signed checkpoints"
    result = verify_export(out, keys.trusted_public_keys())
    assert result.ok, result.problems
    assert result.rows == {"events.csv": MONTH_EVENTS + 1, "events.jsonl": MONTH_EVENTS + 1}
    with pytest.raises(ExportError, match="not empty"):
        export_month(engine, keys, "2026-10", out, actor="cli:test")
    with pytest.raises(ExportError, match="no audit entries"):
        export_month(engine, keys, "2025-01", tmp_path / "empty", actor="cli:test")
    if db_url.startswith("sqlite"):
        _render_pdf(out / "report.pdf", request.getfixturevalue("artifacts"))


def test_free_text_survives_csv_and_jsonl_alike(engine: Engine, month: dict[str, int], keys: KeyStore,
                                                 tmp_path: Path) -> None:
    """The CSV is written by hand (export._csv): commas, quotes, line breaks, carriage returns and
    non-ASCII text in the JSON fields read back from the CSV exactly as from the JSON Lines, and verify."""
    notes = ["comma, inside", 'quote " inside', "line\nbreak", "carriage\rreturn", "crlf\r\n", "ünïcödé ✓ 🚪", ""]
    writer = AuditWriter(engine, "bridge-2", keys.signer())
    writer.start()
    for i, note in enumerate(notes):
        ts = OCT + timedelta(days=2, minutes=i)
        writer.submit(Event(id=f"odd:{i}", kind="console.note", source="console", ts=ts, received_ts=ts,
                            subject={"user": f'o"brien,{i}'}, detail={"note": note}))
    nov = datetime(2026, 11, 2, tzinfo=UTC)  # an entry after the month: its head shows the month ended
    writer.submit(Event(id="odd:nov", kind="console.note", source="console", ts=nov, received_ts=nov))
    writer.flush()
    assert writer.stop()
    publish_heads(engine, keys.signer(), None)
    out = tmp_path / "export"
    assert export_month(engine, keys, "2026-10", out, actor="cli:test").verified
    with (out / "events.csv").open(newline="", encoding="utf-8") as f:
        from_csv = [r for r in csv.DictReader(f) if r["chain_id"] == "bridge-2"]
    from_json = [x for x in map(json.loads, (out / "events.jsonl").read_text(encoding="utf-8").splitlines())
                 if x["chain_id"] == "bridge-2"]
    assert [json.loads(r["detail"])["note"] for r in from_csv] == notes
    assert from_csv == [{k: str(v) for k, v in x.items()} for x in from_json]
    result = verify_export(out, keys.trusted_public_keys())
    assert result.ok, result.problems


def _render_pdf(pdf: Path, artifacts: Path) -> None:
    """Render every page to PNG for a person to look at (pdftoppm, poppler-utils)."""
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(artifacts / "report")], check=True)
    pngs = sorted(artifacts.glob("report-*.png"))
    assert pngs and all(p.stat().st_size > 5000 for p in pngs)
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for expected in ("Chain verified", "Totals per door", "Denials by door and reason", "After-hours entries",
                     "Ada Lovelace (#1)", "expired but not revoked", "Console users and their roles", "door.forced",
                     "10 denials;", "31 after-hours entries by 1 person",
                     "no recorded access state before the month's end"):  # its people were never audited
        assert expected in text, expected


def _rewrite_csv(path: Path, change: Callable[[list[list[str]]], None]) -> None:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    change(rows)
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _edit_field(rows: list[list[str]]) -> None:
    rows[10][FIELDS.index("door")] = "noc" if rows[10][FIELDS.index("door")] != "noc" else "hall-a"


def _add_row(rows: list[list[str]]) -> None:
    rows.insert(20, list(rows[20]))


def _swap(rows: list[list[str]]) -> None:
    rows[30], rows[31] = rows[31], rows[30]


def _json_edit(path: Path) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[4])
    row["kind"] = "access.denied" if row["kind"] == "access.granted" else "access.granted"
    lines[4] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def _checkpoint_signature(path: Path) -> None:
    proof = json.loads(path.read_text())
    sig = proof["chains"][0]["checkpoints"][1]["signature"]
    proof["chains"][0]["checkpoints"][1]["signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    path.write_text(json.dumps(proof))


def _pdf_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _manifest(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["rows"] += 1
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def _manifest_sig(path: Path) -> None:
    sig = path.read_text().strip()
    path.write_text(("a" if sig[0] != "a" else "b") + sig[1:] + "\n")


def test_every_tamper_is_reported_precisely(engine: Engine, month: dict[str, int], keys: KeyStore,
                                            tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    export_month(engine, keys, "2026-10", clean, actor="cli:test")
    seq_at = {i: int(r[1]) for i, r in enumerate(csv.reader((clean / "events.csv").open(newline="")))  if i}
    tampers: dict[str, tuple[Callable[[Path], None], list[str]]] = {
        "edit a CSV field": (lambda d: _rewrite_csv(d / "events.csv", _edit_field),
                             [f"events.csv line 11 (chain bridge-1 seq {seq_at[10]}): hash does not match its content "
                              "(modified)", "file events.csv: sha256 mismatch (modified)"]),
        "delete a CSV row": (lambda d: _rewrite_csv(d / "events.csv", lambda rows: rows.pop(15)),
                             [f"events.csv: chain bridge-1 rows missing between seq {seq_at[15] - 1} and "
                              f"{seq_at[15] + 1} (seq {seq_at[15]} deleted)"]),
        "add a row": (lambda d: _rewrite_csv(d / "events.csv", _add_row),
                      [f"events.csv line 22 (chain bridge-1 seq {seq_at[20]}): a second row numbered {seq_at[20]} (added)"]),
        "reorder two rows": (lambda d: _rewrite_csv(d / "events.csv", _swap),
                             [f"events.csv line 32 (chain bridge-1 seq {seq_at[30]}): out of order, it stands after "
                              f"seq {seq_at[31]} (reordered)"]),
        "edit JSONL": (lambda d: _json_edit(d / "events.jsonl"),
                       [f"events.jsonl line 5 (chain bridge-1 seq {seq_at[5]}): hash does not match its content "
                        "(modified)", "file events.jsonl: sha256 mismatch (modified)"]),
        "checkpoint signature": (lambda d: _checkpoint_signature(d / "proof.json"),
                                 ["signature invalid (the checkpoint was changed)",
                                  "file proof.json: sha256 mismatch (modified)"]),
        "edit the PDF": (lambda d: _pdf_bytes(d / "report.pdf"), ["file report.pdf: sha256 mismatch (modified)"]),
        "delete a file": (lambda d: (d / "report.pdf").unlink(),
                          ["file report.pdf listed in the manifest is missing (deleted)"]),
        "add a file": (lambda d: (d / "notes.txt").write_text("x"), ["extra file notes.txt not in manifest (added)"]),
        "change the manifest": (lambda d: _manifest(d / "manifest.json"),
                                ["manifest signature invalid (the manifest or its signature was changed)"]),
        "change the manifest signature": (lambda d: _manifest_sig(d / "manifest.sig"),
                                          ["manifest signature invalid (the manifest or its signature was changed)"]),
    }
    runner = CliRunner()
    for name, (tamper, expected) in tampers.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(clean, copy)
        tamper(copy)
        result = verify_export(copy, keys.trusted_public_keys())
        for message in expected:
            assert any(message in p for p in result.problems), (name, message, result.problems)
        assert len(result.problems) <= len(expected) + 1, (name, result.problems)
        cli = runner.invoke(main, ["audit", "verify-export", str(copy), "--public-key", str(public_key_file(keys))])
        assert cli.exit_code == 1, (name, cli.output)
        printed = [line for line in cli.output.splitlines() if not line.startswith("note:")]
        assert printed[:len(result.problems)] == result.problems, (name, cli.output)
    no_key = runner.invoke(main, ["audit", "verify-export", str(clean)])
    assert no_key.exit_code == 1 and "no trusted public key" in no_key.output, no_key.output
    mine = runner.invoke(main, ["audit", "verify-export", str(clean), "--public-key", str(public_key_file(keys))])
    assert mine.exit_code == 0 and "verified 61 rows" in mine.output, mine.output
    other = KeyStore(tmp_path / "other-keys")
    other.ensure()
    stranger = runner.invoke(main, ["audit", "verify-export", str(clean), "--public-key",
                                    str(next((other.dir / "signing").glob("*.pub")))])
    assert stranger.exit_code == 1 and "which is not a trusted key" in stranger.output, stranger.output


def test_large_row_files_are_scanned_in_parallel_with_the_same_findings(
        engine: Engine, month: dict[str, int], keys: KeyStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past PARALLEL_BYTES the CSV and the JSON Lines are checked in two processes; the result is the same."""
    out = tmp_path / "export"
    export_month(engine, keys, "2026-10", out, actor="cli:test")
    _rewrite_csv(out / "events.csv", _edit_field)
    _json_edit(out / "events.jsonl")
    serial = verify_export(out, keys.trusted_public_keys())
    monkeypatch.setattr(export_verify, "PARALLEL_BYTES", 0)
    parallel = verify_export(out, keys.trusted_public_keys())
    assert serial.problems and parallel.problems == serial.problems and parallel.rows == serial.rows
    assert [p.split(" ")[0] for p in serial.problems if p.startswith("events.")] == ["events.csv", "events.jsonl"]


def test_cli_export(engine: Engine, month: dict[str, int], site_file: Path, tmp_path: Path, keys: KeyStore) -> None:
    out = tmp_path / "cli-export"
    result = CliRunner().invoke(main, ["-c", str(site_file), "export", "--month", "2026-10", "--out", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert "exported 61 entries of 2026-10" in result.output and "chain verified" in result.output
    assert verify_export(out, keys.trusted_public_keys()).ok
    bad = CliRunner().invoke(main, ["-c", str(site_file), "export", "--month", "2026-13", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "expected YYYY-MM" in bad.output


def test_console_download(make_app: Callable[..., object], engine: Engine, site: SiteConfig, keys: KeyStore,  # noqa: F811
                          tmp_path: Path) -> None:
    from tests.test_console_routes import audited, login

    seed_site(engine, site, keys)
    month = datetime.now(UTC).strftime("%Y-%m")
    app = make_app(site)
    client = app.test_client()  # type: ignore[attr-defined]
    assert login(client, "auditor").status_code == 302
    response = post(client, "/audit/export", month=month)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/zip"
    assert f"audit-export-{month}-INCOMPLETE.zip" in response.headers["Content-Disposition"]  # the month is not over
    folder = tmp_path / "download"
    with zipfile.ZipFile(io.BytesIO(response.get_data())) as z:
        # The month is not over: no head shows its end, so the export is not signed.
        assert {"events.csv", "events.jsonl", "report.pdf", "proof.json", "manifest.json"} <= set(z.namelist())
        assert "manifest.sig" not in z.namelist()
        z.extractall(folder)
    result = verify_export(folder, keys.trusted_public_keys())
    assert "manifest.sig is missing: the manifest is not signed" in result.problems, result.problems
    entry = audited(engine, "console.export_downloaded")
    assert entry.subject["user"] == "auditor" and entry.detail["month"] == month
    guard = app.test_client()  # type: ignore[attr-defined]
    assert login(guard, "guard").status_code == 302
    assert post(guard, "/audit/export", month=month).status_code == 403
    refused = post(client, "/audit/export", month="not-a-month")
    assert refused.status_code == 302


# --- exports an auditor can trust offline (issue 15, part 5) ----------------------------------------------

NOV = datetime(2026, 11, 1, tzinfo=UTC)


def _verify_cli(folder: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["audit", "verify-export", str(folder), *args])


def _as_dba(engine: Engine, *statements: tuple[str, dict[str, Any]]) -> None:
    """Raw SQL past the append-only triggers, as a database administrator can: SQLite's are dropped,
    PostgreSQL's bypassed with ``session_replication_role = replica`` (superuser), which leaves no trace."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
                conn.execute(text(f"DROP TRIGGER {name}"))
        else:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        for sql, params in statements:
            conn.execute(text(sql), params)


def _sign_by_hand(folder: Path, keys: KeyStore) -> None:
    """What an exporter that does not check (or a key holder) would ship: the manifest listing the files as
    they are now, signed with the real key."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(folder.iterdir())
                         if p.name not in ("manifest.json", "manifest.sig")}
    raw = (json.dumps(manifest, indent=1) + "\n").encode()
    (folder / "manifest.json").write_bytes(raw)
    (folder / "manifest.sig").write_text(keys.signer().sign(manifest_message(raw)) + "\n")


def test_a_forged_export_verifies_only_with_the_forgers_key(sqlite_url: str, keys: KeyStore, tmp_path: Path) -> None:
    """An attacker builds a whole month of his own (rows, checkpoints, heads, a witness) and signs it with his
    own keys, which he ships inside: it verifies with his key only, never with the real one or with none."""
    forger, his_witness = witness_keys(tmp_path, "forger"), witness_keys(tmp_path, "his-witness")
    engine = make_engine(sqlite_url)
    try:
        writer = AuditWriter(engine, "bridge-1", forger.signer())
        writer.start()
        for i, ts in enumerate([OCT + timedelta(hours=5 * i) for i in range(12)] + [NOV + timedelta(hours=1)]):
            writer.submit(_event(i, ts, 1, 1))
        assert writer.stop()
        publish_heads(engine, forger.signer(), his_witness.signer())
        out = tmp_path / "forged"
        assert export_month(engine, forger, "2026-10", out, actor="cli:mallory").verified
    finally:
        engine.dispose()
    assert verify_export(out, forger.trusted_public_keys(), his_witness.trusted_public_keys()).ok
    real = verify_export(out, keys.trusted_public_keys())
    assert not real.ok and any("which is not a trusted key" in p for p in real.problems), real.problems
    assert _verify_cli(out, "--public-key", str(public_key_file(forger))).exit_code == 0
    for args in ([], ["--public-key", str(public_key_file(keys))]):
        cli = _verify_cli(out, *args)
        assert cli.exit_code == 1 and "TAMPERED" in cli.output, (args, cli.output)
    assert "no trusted public key" in _verify_cli(out).output


def _cut_month_end(engine: Engine, heads_too: bool, after_too: bool) -> int:
    """Delete the entries received from October 25 (and, ``after_too``, everything after them), with the
    checkpoints (and ``heads_too``, the tree heads and cosignatures) over them. Returns the new last seq."""
    cut = to_us(datetime(2026, 10, 25, tzinfo=UTC))
    with engine.connect() as conn:
        first_cut = conn.scalar(text("SELECT min(seq) FROM audit_entry WHERE chain_id = 'bridge-1' AND received_us >= :c"),
                                dict(c=cut))
        nov = conn.scalar(text("SELECT min(seq) FROM audit_entry WHERE chain_id = 'bridge-1' AND received_us >= :n"),
                          dict(n=to_us(NOV)))
    last = nov - 1 if not after_too else 10**9
    statements: list[tuple[str, dict[str, Any]]] = [
        ("DELETE FROM audit_entry WHERE chain_id = 'bridge-1' AND seq BETWEEN :a AND :b", dict(a=first_cut, b=last)),
        ("DELETE FROM checkpoint WHERE chain_id = 'bridge-1' AND seq >= :a", dict(a=first_cut))]
    if heads_too:
        statements += [("DELETE FROM tree_head WHERE chain_id = 'bridge-1' AND size >= :a", dict(a=first_cut)),
                       ("DELETE FROM witness_cosignature WHERE chain_id = 'bridge-1' AND size >= :a", dict(a=first_cut))]
    _as_dba(engine, *statements)
    return first_cut - 1


@pytest.mark.parametrize(("heads_too", "after_too"), [(False, False), (False, True), (True, True)],
                         ids=["last-days", "end-of-log", "end-of-log-and-heads"])
def test_a_month_cut_short_in_the_database_is_found(engine: Engine, month: dict[str, int], keys: KeyStore,
                                                    witness: KeyStore, tmp_path: Path, site_file: Path,
                                                    heads_too: bool, after_too: bool) -> None:
    """The DBA deletes the month's last days (entries and checkpoints; then everything after them too; then
    the tree heads and cosignatures as well) before the export. The export refuses to sign; an export signed
    anyway (by hand with the real key) fails verify-export."""
    last = _cut_month_end(engine, heads_too, after_too)
    out = tmp_path / "cut"
    cli = CliRunner().invoke(main, ["-c", str(site_file), "export", "--month", "2026-10", "--out", str(out), "--quiet"])
    assert cli.exit_code == 1 and "manifest NOT signed" in cli.output, cli.output
    assert not (out / "manifest.sig").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chains"]["bridge-1"][1] == last
    _sign_by_hand(out, keys)
    result = verify_export(out, keys.trusted_public_keys(), witness.trusted_public_keys())
    assert not result.ok
    expected = ("no signed tree head covers the month's last entry" if heads_too
                else f"the entries {last + 1}..{last + 1} the covering head signs are not in the export")
    assert any(expected in p for p in result.problems), "\n".join(result.problems)
    assert _verify_cli(out, "--public-key", str(public_key_file(keys))).exit_code == 1


def test_export_refuses_to_sign_a_log_that_does_not_verify(engine: Engine, month: dict[str, int], keys: KeyStore,
                                                           tmp_path: Path, site_file: Path) -> None:
    """The DBA rewrites the month's last ten entries with recomputed hashes (the chain itself links): the
    checkpoints and the signed tree heads over them no longer match, and the export is not signed."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, event_id, ts_us, received_us, source, door, kind, subject, detail, "
                                 "prev_hash FROM audit_entry WHERE chain_id = 'bridge-1' AND seq >= 55 ORDER BY seq")).all()
    head = rows[0].prev_hash
    statements: list[tuple[str, dict[str, Any]]] = []
    for r in rows:
        detail = r.detail.replace("not_in_schedule", "granted")
        new = entry_hash(head, entry_body("bridge-1", r.event_id, r.ts_us, r.received_us, r.source, r.door or "", r.kind,
                                          r.subject, detail))
        statements.append(("UPDATE audit_entry SET detail = :d, prev_hash = :p, hash = :h WHERE chain_id = 'bridge-1' "
                           "AND seq = :s", dict(d=detail, p=head, h=new, s=r.seq)))
        head = new
    _as_dba(engine, *statements)
    out = tmp_path / "rewritten"
    cli = CliRunner().invoke(main, ["-c", str(site_file), "export", "--month", "2026-10", "--out", str(out), "--quiet"])
    assert cli.exit_code == 1 and "manifest NOT signed" in cli.output, cli.output
    assert "differs from the signed tree head" in cli.output and "checkpoint" in cli.output, cli.output.splitlines()
    assert not (out / "manifest.sig").exists()
    assert "manifest.sig is missing" in " ".join(verify_export(out, keys.trusted_public_keys()).problems)


def test_months_meet_with_no_gap_or_overlap(engine: Engine, month: dict[str, int], keys: KeyStore, witness: KeyStore,
                                            tmp_path: Path) -> None:
    """September's and October's exports meet: same seq, same hash, and October's consistency proof starts
    from September's covering head. A previous export that ends too early (a gap) or too late (an overlap),
    signed with the real key, is found; so is the export of another month given as the previous one."""
    sep, oct_ = tmp_path / "2026-09", tmp_path / "2026-10"
    assert export_month(engine, keys, "2026-09", sep, actor="cli:test").verified
    assert export_month(engine, keys, "2026-10", oct_, actor="cli:test").verified
    k, w = keys.trusted_public_keys(), witness.trusted_public_keys()
    together = verify_export(oct_, k, w, previous=sep)
    assert together.ok, together.problems
    cli = _verify_cli(oct_, "--public-key", str(public_key_file(keys)), "--witness-key", str(public_key_file(witness)),
                      "--previous", str(sep))
    assert cli.exit_code == 0 and "cosigned by 1 witness" in cli.output, cli.output
    for shift, says in ((-1, "seq 3..3 are in neither export (gap between the months)"),
                        (+1, "seq 4..4 are in both exports (overlap between the months)")):
        moved = tmp_path / f"moved{shift}"
        shutil.copytree(sep, moved)
        proof = json.loads((moved / "proof.json").read_text())
        proof["chains"][0]["last_seq"] += shift
        (moved / "proof.json").write_text(json.dumps(proof))
        _sign_by_hand(moved, keys)
        result = verify_export(oct_, k, w, previous=moved)
        assert any(says in p for p in result.problems), (shift, result.problems)
    assert any("does not end where this month starts" in p for p in verify_export(oct_, k, w, previous=oct_).problems)


def test_witness_cosignatures_are_checked(engine: Engine, month: dict[str, int], keys: KeyStore, witness: KeyStore,
                                          tmp_path: Path) -> None:
    """Every exported head needs a valid cosignature by each witness key the auditor gives; a head the
    witness never saw (a cosignature removed), or another witness, is a problem."""
    out = tmp_path / "export"
    export_month(engine, keys, "2026-10", out, actor="cli:test", witnesses=witness.trusted_public_keys())
    k = keys.trusted_public_keys()
    assert verify_export(out, k, witness.trusted_public_keys()).ok
    stranger = witness_keys(tmp_path, "stranger").trusted_public_keys()
    other = verify_export(out, k, stranger)
    assert any("has no valid cosignature by witness" in p for p in other.problems), other.problems
    proof = json.loads((out / "proof.json").read_text())
    proof["chains"][0]["tree"]["heads"][-1]["cosignatures"] = []
    (out / "proof.json").write_text(json.dumps(proof))
    _sign_by_hand(out, keys)
    bare = verify_export(out, k, witness.trusted_public_keys())
    assert bare.problems == [f"proof.json chain bridge-1 tree head of size 65 has no valid cosignature by witness "
                             f"{next(iter(witness.trusted_public_keys()))}"], bare.problems


def test_a_partly_pruned_month_verifies_and_says_what_was_pruned(engine: Engine, month: dict[str, int], keys: KeyStore,
                                                                 witness: KeyStore, tmp_path: Path) -> None:
    """Retention pruned October's first two weeks (whole sealed days, signed prune records): the export is
    signed, verifies, and names each pruned day with its seq range; nothing is called tampered."""
    seal(engine, keys.signer(), until_day=date(2026, 11, 2))
    report = prune(engine, keys.signer(), keep_days=90, now=datetime(2026, 10, 15, 12, tzinfo=UTC) + timedelta(days=90))
    assert report.entries > 20
    out = tmp_path / "pruned"
    summary = export_month(engine, keys, "2026-10", out, actor="cli:test", witnesses=witness.trusted_public_keys())
    assert summary.verified, summary.problems
    assert any("2026-10-01 (seq 4..5, 2 entries) was pruned under the retention policy" in n for n in summary.notes), \
        summary.notes
    result = verify_export(out, keys.trusted_public_keys(), witness.trusted_public_keys())
    assert result.ok, result.problems
    pruned_days = [n for n in result.notes if "was pruned under the retention policy" in n]
    assert len(pruned_days) == 14, result.notes
    cli = _verify_cli(out, "--public-key", str(public_key_file(keys)))
    assert cli.exit_code == 0 and "TAMPERED" not in cli.output and "2026-10-14" in cli.output, cli.output


def test_an_idle_chain_is_shown_complete_by_a_countersignature_after_the_month(
        engine: Engine, month: dict[str, int], keys: KeyStore, witness: KeyStore, tmp_path: Path) -> None:
    """The CLI's chain had its last entry in October and none since: its last head was signed in October, so
    only a witness countersigning that head again after the month's end (the publisher re-sends unchanged
    heads hourly) shows the chain had not grown; without it the month is not signed."""
    writer = AuditWriter(engine, "bridge-1.cli", keys.signer())
    writer.start()
    for i in range(2):
        ts = OCT + timedelta(days=20, minutes=i)
        writer.submit(Event(id=f"cli:{i}", kind="admin.key_rotated", source="cli:root", ts=ts, received_ts=ts))
    assert writer.stop()
    publish_heads(engine, keys.signer(), witness.signer(), chain="bridge-1.cli")
    w = witness.trusted_public_keys()
    stale = export_month(engine, keys, "2026-10", tmp_path / "stale", actor="cli:test", witnesses=w)
    assert stale.problems == ["proof.json chain bridge-1.cli: no signed tree head covers the month's last entry "
                              "(seq 2): the month may have been cut in the database; wait for the bridge's next head, "
                              "or investigate"]
    assert not (tmp_path / "stale" / "manifest.sig").exists()
    with engine.begin() as conn:
        head = conn.execute(text("SELECT chain_id, size, root, head_hash, signed_us, key_id, signature FROM tree_head "
                                 "WHERE chain_id = 'bridge-1.cli' AND size = 2")).one()
        fresh = cosign(witness.signer(), TreeHead(*head), to_us(NOV) + 60_000_000)
        conn.execute(text("INSERT INTO witness_cosignature (chain_id, size, witness_key_id, cosigned_us, signature) "
                          "VALUES ('bridge-1.cli', 2, :k, :t, :s)"),
                     dict(k=fresh.witness_key_id, t=fresh.cosigned_us, s=fresh.signature))
    out = tmp_path / "fresh"
    assert export_month(engine, keys, "2026-10", out, actor="cli:test", witnesses=w).verified
    assert verify_export(out, keys.trusted_public_keys(), w).ok
    unwitnessed = verify_export(out, keys.trusted_public_keys())
    assert any("bridge-1.cli: the last tree head (size 2)" in p for p in unwitnessed.problems), unwitnessed.problems
