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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.cli import main
from badge_bridge.config import SiteConfig
from badge_bridge.events import Event
from badge_bridge.export import verify as export_verify
from badge_bridge.export.format import FIELDS, REVIEW_FILES
from badge_bridge.export.verify import verify_export
from badge_bridge.export.write import ExportError, export_month
from badge_bridge.keys import KeyStore
from badge_bridge.site_sync import sync_site
from tests.test_console_routes import PASSWORDS, cheap_password_hashes, make_app, post, seed_site  # noqa: F401 (fixtures)

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
def month(engine: Engine, site: SiteConfig, keys: KeyStore) -> dict[str, int]:
    """People (one left with a card still active, one expired card), then 3 September events, 60 in
    October (some after hours, a forced door), 3 in November, checkpoints every 7 entries."""
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
    writer = AuditWriter(engine, "bridge-1", keys.signer(), checkpoint_every=7, checkpoint_seconds=3600)
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
    assert chain["tail"] == [] or chain["tail"][-1]["seq"] == chain["checkpoints"][-1]["seq"]
    assert chain["checkpoints"], "the month has signed checkpoints"
    result = verify_export(out)
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
    writer = AuditWriter(engine, "bridge-2", keys.signer(), checkpoint_every=3, checkpoint_seconds=3600)
    writer.start()
    for i, note in enumerate(notes):
        ts = OCT + timedelta(days=2, minutes=i)
        writer.submit(Event(id=f"odd:{i}", kind="console.note", source="console", ts=ts, received_ts=ts,
                            subject={"user": f'o"brien,{i}'}, detail={"note": note}))
    writer.flush()
    assert writer.stop()
    out = tmp_path / "export"
    assert export_month(engine, keys, "2026-10", out, actor="cli:test").verified
    with (out / "events.csv").open(newline="", encoding="utf-8") as f:
        from_csv = [r for r in csv.DictReader(f) if r["chain_id"] == "bridge-2"]
    from_json = [x for x in map(json.loads, (out / "events.jsonl").read_text(encoding="utf-8").splitlines())
                 if x["chain_id"] == "bridge-2"]
    assert [json.loads(r["detail"])["note"] for r in from_csv] == notes
    assert from_csv == [{k: str(v) for k, v in x.items()} for x in from_json]
    result = verify_export(out)
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
        result = verify_export(copy)
        for message in expected:
            assert any(message in p for p in result.problems), (name, message, result.problems)
        assert len(result.problems) <= len(expected) + 1, (name, result.problems)
        cli = runner.invoke(main, ["audit", "verify-export", str(copy)])
        assert cli.exit_code == 1, (name, cli.output)
        printed = [line for line in cli.output.splitlines() if not line.startswith("note:")]
        assert printed[:len(result.problems)] == result.problems, (name, cli.output)
    ok = runner.invoke(main, ["audit", "verify-export", str(clean)])
    assert ok.exit_code == 0 and "verified 61 rows" in ok.output, ok.output
    mine = runner.invoke(main, ["audit", "verify-export", str(clean), "--public-key",
                                str(next((keys.dir / "signing").glob("*.pub")))])
    assert mine.exit_code == 0, mine.output
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
    serial = verify_export(out)
    monkeypatch.setattr(export_verify, "PARALLEL_BYTES", 0)
    parallel = verify_export(out)
    assert serial.problems and parallel.problems == serial.problems and parallel.rows == serial.rows
    assert [p.split(" ")[0] for p in serial.problems if p.startswith("events.")] == ["events.csv", "events.jsonl"]


def test_cli_export(engine: Engine, month: dict[str, int], site_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-export"
    result = CliRunner().invoke(main, ["-c", str(site_file), "export", "--month", "2026-10", "--out", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert "exported 61 entries of 2026-10" in result.output and "chain verified" in result.output
    assert verify_export(out).ok
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
    assert f"audit-export-{month}.zip" in response.headers["Content-Disposition"]
    folder = tmp_path / "download"
    with zipfile.ZipFile(io.BytesIO(response.get_data())) as z:
        assert {"events.csv", "events.jsonl", "report.pdf", "proof.json", "manifest.json", "manifest.sig"} <= set(z.namelist())
        z.extractall(folder)
    result = verify_export(folder)
    assert result.ok, result.problems
    entry = audited(engine, "console.export_downloaded")
    assert entry.subject["user"] == "auditor" and entry.detail["month"] == month
    guard = app.test_client()  # type: ignore[attr-defined]
    assert login(guard, "guard").status_code == 302
    assert post(guard, "/audit/export", month=month).status_code == 403
    refused = post(client, "/audit/export", month="not-a-month")
    assert refused.status_code == 302
