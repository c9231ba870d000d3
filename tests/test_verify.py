"""`audit verify` against a log tampered with behind the application's back, on both databases.

Each test writes a 50-entry chain with a signed checkpoint every 10 entries, drops the append-only
triggers with raw SQL (as someone with database access could) and edits the log; `verify` and the CLI must
name the first tampered entry and what happened to it, and pass an untouched log.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

import badge_bridge.audit.verify
from badge_bridge.audit import merkle, segments
from badge_bridge.audit.chain import checkpoint_message, entry_body, entry_hash
from badge_bridge.audit.segments import prove, seal
from badge_bridge.audit.verify import Report, verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.cli import main
from badge_bridge.db import sqlite_path
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore, Signer, key_id_of, public_hex

CLI = [sys.executable, "-m", "badge_bridge.cli"]
CHAIN = "bridge-1"
ENTRIES = 50
EVERY = 10
NOW = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)
Tamper = Callable[[Connection], None]


# --- writing the log -------------------------------------------------------------------------------


def marker(n: int) -> str:
    """A detail string that occurs once in the whole database: entry n's."""
    return f"marker-{n:04d}-ok"


def write_log(engine: Engine, keys: KeyStore) -> None:
    """Entries 1..50 (event n at seq n), checkpoints at 10, 20, .., 50."""
    for first in range(1, ENTRIES + 1, EVERY):  # one batch of EVERY events per writer: a checkpoint per batch
        writer = AuditWriter(engine, CHAIN, keys.signer(), batch_max=EVERY)
        for n in range(first, first + EVERY):
            writer.submit(Event(id=f"ctl-1:{n}", kind="access.granted", source="ctl-1", ts=NOW, door="main-entrance",
                                subject={"credential": n}, detail={"note": marker(n)}))
        writer.start()
        assert writer.stop()
    with engine.connect() as conn:
        assert conn.scalars(text("SELECT seq FROM checkpoint ORDER BY seq")).all() == [10, 20, 30, 40, 50]


@pytest.fixture
def log(engine: Engine, keys: KeyStore) -> Engine:
    write_log(engine, keys)
    return engine


# --- tampering with raw SQL ------------------------------------------------------------------------


def drop_append_only_triggers(conn: Connection) -> None:
    """What the migration created; see migrations/versions/0001_initial_schema.py."""
    for table in ("audit_entry", "checkpoint"):
        if conn.dialect.name == "sqlite":
            conn.execute(text(f"DROP TRIGGER {table}_no_update"))
            conn.execute(text(f"DROP TRIGGER {table}_no_delete"))
        else:
            conn.execute(text(f"DROP TRIGGER {table}_no_change ON {table}"))
            conn.execute(text(f"DROP TRIGGER {table}_no_truncate ON {table}"))


def behind_the_back(engine: Engine, tamper: Tamper) -> None:
    with engine.begin() as conn:
        drop_append_only_triggers(conn)
        tamper(conn)


def row(conn: Connection, seq: int) -> dict[str, Any]:
    return dict(conn.execute(text("SELECT * FROM audit_entry WHERE chain_id = :c AND seq = :s"),
                             dict(c=CHAIN, s=seq)).mappings().one())


def hash_of(entry: dict[str, Any], prev: str) -> str:
    return entry_hash(prev, entry_body(entry["chain_id"], entry["event_id"], entry["ts_us"], entry["received_us"],
                                       entry["source"], entry["door"], entry["kind"], entry["subject"],
                                       entry["detail"]))


def set_seq(conn: Connection, old: int, new: int) -> None:
    conn.execute(text("UPDATE audit_entry SET seq = :new WHERE chain_id = :c AND seq = :old"),
                 dict(c=CHAIN, old=old, new=new))


def modify(seq: int) -> Tamper:
    def tamper(conn: Connection) -> None:
        conn.execute(text("UPDATE audit_entry SET detail = :d WHERE chain_id = :c AND seq = :s"),
                     dict(d='{"note":"forged"}', c=CHAIN, s=seq))
    return tamper


def delete(seq: int) -> Tamper:
    def tamper(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_entry WHERE chain_id = :c AND seq = :s"), dict(c=CHAIN, s=seq))
    return tamper


def insert(seq: int) -> Tamper:
    """Renumber entries seq.. one up and put a well-formed forged entry at seq, linked to seq - 1."""
    def tamper(conn: Connection) -> None:
        # in two steps: the unique (chain_id, seq) constraint is checked row by row
        conn.execute(text("UPDATE audit_entry SET seq = seq + 1000000 WHERE chain_id = :c AND seq >= :s"),
                     dict(c=CHAIN, s=seq))
        conn.execute(text("UPDATE audit_entry SET seq = seq - 999999 WHERE chain_id = :c AND seq >= 1000000"),
                     dict(c=CHAIN))
        before = row(conn, seq - 1)
        forged = {**before, "seq": seq, "event_id": "ctl-1:forged", "detail": '{"note":"forged"}',
                  "prev_hash": before["hash"]}
        forged["hash"] = hash_of(forged, before["hash"])
        del forged["id"]
        columns = ", ".join(forged)
        values = ", ".join(f":{k}" for k in forged)
        conn.execute(text(f"INSERT INTO audit_entry ({columns}) VALUES ({values})"), forged)
    return tamper


def swap(a: int, b: int) -> Tamper:
    def tamper(conn: Connection) -> None:
        set_seq(conn, a, -1)
        set_seq(conn, b, a)
        set_seq(conn, -1, b)
    return tamper


def truncate_after(seq: int) -> Tamper:
    def tamper(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_entry WHERE chain_id = :c AND seq > :s"), dict(c=CHAIN, s=seq))
    return tamper


def rewrite_tail(start: int, resign_with: Signer | None = None) -> Tamper:
    """Edit entry ``start`` and recompute every hash after it, so the chain itself is consistent again.
    With ``resign_with``, also re-sign the later checkpoints over the new hashes and register that key in
    the database, as an intruder would."""
    def tamper(conn: Connection) -> None:
        conn.execute(text("UPDATE audit_entry SET detail = :d WHERE chain_id = :c AND seq = :s"),
                     dict(d='{"note":"forged"}', c=CHAIN, s=start))
        prev = row(conn, start - 1)["hash"]
        for seq in range(start, ENTRIES + 1):
            entry = row(conn, seq)
            new = hash_of(entry, prev)
            conn.execute(text("UPDATE audit_entry SET prev_hash = :p, hash = :h WHERE id = :id"),
                         dict(p=prev, h=new, id=entry["id"]))
            prev = new
        if resign_with is not None:
            conn.execute(text("INSERT INTO signing_key (key_id, public_key, created_at) VALUES (:k, :p, :t)"),
                         dict(k=resign_with.key_id, p=public_hex(resign_with.public), t=NOW))
            for seq in range(start // EVERY * EVERY + EVERY, ENTRIES + 1, EVERY):
                conn.execute(text("UPDATE checkpoint SET hash = :h WHERE chain_id = :c AND seq = :s"),
                             dict(h=row(conn, seq)["hash"], c=CHAIN, s=seq))
                resign(seq, resign_with)(conn)
    return tamper


def resign(seq: int, signer: Signer) -> Tamper:
    """Replace checkpoint seq's signature with a valid one by another key."""
    def tamper(conn: Connection) -> None:
        cp = conn.execute(text("SELECT hash, signed_us FROM checkpoint WHERE chain_id = :c AND seq = :s"),
                          dict(c=CHAIN, s=seq)).one()
        conn.execute(text("UPDATE checkpoint SET key_id = :k, signature = :sig WHERE chain_id = :c AND seq = :s"),
                     dict(k=signer.key_id, sig=signer.sign(checkpoint_message(CHAIN, seq, cp.hash, cp.signed_us)),
                          c=CHAIN, s=seq))
    return tamper


def alter_signature(seq: int) -> Tamper:
    def tamper(conn: Connection) -> None:
        sig = conn.scalar(text("SELECT signature FROM checkpoint WHERE chain_id = :c AND seq = :s"),
                          dict(c=CHAIN, s=seq))
        flipped = ("1" if sig[0] == "0" else "0") + sig[1:]
        conn.execute(text("UPDATE checkpoint SET signature = :sig WHERE chain_id = :c AND seq = :s"),
                     dict(sig=flipped, c=CHAIN, s=seq))
    return tamper


def all_of(*tampers: Tamper) -> Tamper:
    def tamper(conn: Connection) -> None:
        for t in tampers:
            t(conn)
    return tamper


def intruder() -> Signer:
    private = Ed25519PrivateKey.generate()
    return Signer(key_id_of(private.public_key()), private)


# --- checking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    tamper: Tamper
    problem: str
    seq: int
    says: str
    """A fragment of the first finding's message."""


CASES = {
    "modified": Case(modify(17), "modified", 17, "no longer matches its hash"),
    "deleted": Case(delete(25), "deleted", 25, "entries 25 are missing"),
    "deleted-checkpointed-entry": Case(delete(20), "deleted", 20, "entries 20 are missing"),
    "inserted": Case(insert(30), "inserted", 30, "entries 30..30 are not in the chain"),
    "reordered-adjacent": Case(swap(20, 21), "reordered", 20, "event ctl-1:21 was written after entry 21"),
    "reordered": Case(swap(12, 15), "reordered", 12, "event ctl-1:15 was written after entry 14"),
    "tail-truncated": Case(truncate_after(35), "deleted", 36, "entries 36..40 are missing"),
    "tail-rewritten": Case(rewrite_tail(33), "checkpoint", 40, "differs from what was signed"),
    "tail-rewritten-and-resigned": Case(rewrite_tail(33, intruder()), "unsigned", 31, "entries 31..50: no signature"),
    "checkpoint-untrusted-key": Case(resign(20, intruder()), "checkpoint", 20, "not a trusted key"),
    "checkpoint-signature-altered": Case(alter_signature(30), "checkpoint", 30, "signature does not verify"),
}


def run_cli(site_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BADGE_BRIDGE_DATABASE_URL"}
    env["BADGE_BRIDGE_CONFIG"] = str(site_file)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_site(site_file: Path) -> Path:
    """The site file, after `badge-bridge init` (which keeps the signing key the `keys` fixture made)."""
    result = run_cli(site_file, "init")
    assert result.returncode == 0, result.stderr
    assert "audit signing key" not in result.stdout
    return site_file


def assert_first(report: Report, problem: str, seq: int, says: str) -> None:
    first = report.first
    assert first is not None, "tampering went unnoticed"
    assert (first.chain_id, first.seq, first.problem) == (CHAIN, seq, problem), report.findings
    assert says in first.message, report.findings


def assert_cli_names(site_file: Path, problem: str, seq: int, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(site_file, "audit", "verify", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"TAMPERED: first problem at chain {CHAIN} entry {seq}: {problem}:" in result.stderr
    assert "Traceback" not in result.stderr
    return result


# --- tests ---------------------------------------------------------------------------------------


def test_untouched_log_verifies(log: Engine, db_url: str, keys: KeyStore, cli_site: Path) -> None:
    report = verify(log, db_url, keys.trusted_public_keys())
    assert report.ok, report.findings
    status = report.chains[CHAIN]
    assert (status.entries, status.head_seq, status.checkpoints, status.last_checkpoint_seq) == (50, 50, 5, 50)
    result = run_cli(cli_site, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert f"chain {CHAIN}: 50 entries, head 50" in result.stdout
    assert "audit log verified" in result.stdout


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_tampering_is_named_at_the_first_tampered_entry(
    case: Case, log: Engine, db_url: str, keys: KeyStore, cli_site: Path
) -> None:
    behind_the_back(log, case.tamper)
    assert_first(verify(log, db_url, keys.trusted_public_keys()), case.problem, case.seq, case.says)
    assert_cli_names(cli_site, case.problem, case.seq)


def test_a_long_chain_checks_its_newest_signatures_and_every_one_on_request(
    log: Engine, db_url: str, keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SIGN_ALL_UP_TO checkpoints, only the newest NEWEST_SIGNED signatures are checked (each vouches for
    every entry before it); older checkpoints are still checked against the log, and --every-signature
    checks their signatures too. An altered newest signature is always found."""
    monkeypatch.setattr(badge_bridge.audit.verify, "SIGN_ALL_UP_TO", 3)
    monkeypatch.setattr(badge_bridge.audit.verify, "NEWEST_SIGNED", 2)
    behind_the_back(log, all_of(alter_signature(10), modify(15)))
    report = verify(log, db_url, keys.trusted_public_keys())
    assert [(f.seq, f.problem) for f in report.findings] == [(15, "modified")], report.findings
    assert report.chains[CHAIN].unchecked_signatures == 3
    every = verify(log, db_url, keys.trusted_public_keys(), every_signature=True)
    assert [(f.seq, f.problem) for f in every.findings] == [(10, "checkpoint"), (15, "modified")]
    assert every.chains[CHAIN].unchecked_signatures == 0
    with log.begin() as conn:  # the triggers are already gone
        alter_signature(50)(conn)
    newest = verify(log, db_url, keys.trusted_public_keys())
    assert (50, "checkpoint") in [(f.seq, f.problem) for f in newest.findings]


def test_findings_stay_inside_the_tampered_range(log: Engine, db_url: str, keys: KeyStore) -> None:
    """Two independent edits are both reported, and nothing outside them is."""
    behind_the_back(log, all_of(modify(7), delete(33)))
    report = verify(log, db_url, keys.trusted_public_keys())
    assert [(f.seq, f.problem) for f in report.findings] == [(7, "modified"), (33, "deleted")]


def test_a_deleted_checkpointed_entry_is_reported_where_it_was(log: Engine, db_url: str, keys: KeyStore) -> None:
    behind_the_back(log, delete(20))
    report = verify(log, db_url, keys.trusted_public_keys())
    assert {(f.seq, f.problem) for f in report.findings} == {(20, "deleted")}
    assert not any("log ends" in f.message for f in report.findings), report.findings


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_edit_of_the_sqlite_file_bytes_is_found(log: Engine, db_url: str, keys: KeyStore, cli_site: Path) -> None:
    """Edit the database file itself, not through SQLite: same-length bytes, so the file stays valid."""
    log.dispose()
    path = sqlite_path(db_url)
    assert path is not None
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every committed page into the main file
    conn.close()
    data = path.read_bytes()
    old, new = marker(17).encode(), marker(17).replace("ok", "OK").encode()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))

    report = verify(log, db_url, keys.trusted_public_keys())
    assert_first(report, "modified", 17, "ctl-1:17")
    assert len(report.findings) == 1
    assert_cli_names(cli_site, "modified", 17)


@pytest.mark.parametrize("foreign", [True, False], ids=["foreign-key", "own-key"])
def test_public_key_option_decides_what_is_trusted(
    foreign: bool, log: Engine, keys: KeyStore, cli_site: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "auditor.pub"
    signer = intruder() if foreign else keys.signer()
    key_file.write_text(public_hex(signer.public) + "\n")
    if foreign:
        result = assert_cli_names(cli_site, "unsigned", 1, "--public-key", str(key_file))
        assert "not a trusted key" in result.stderr
    else:
        result = run_cli(cli_site, "audit", "verify", "--public-key", str(key_file))
        assert result.returncode == 0, result.stderr


PARALLEL_CASES = {
    "modified-end-of-first-range": modify(25),
    "modified-start-of-second-range": modify(26),
    "deleted-end-of-first-range": delete(25),
    "deleted-start-of-second-range": delete(26),
    "inserted-at-range-boundary": insert(26),
    "reordered-across-ranges": swap(24, 27),
}


@pytest.mark.parametrize("tamper", PARALLEL_CASES.values(), ids=PARALLEL_CASES.keys())
def test_parallel_ranges_report_what_one_process_does(
    tamper: Tamper, log: Engine, db_url: str, keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With RANGE_MIN at 10, jobs=2 checks seq 1..25 here and 26..50 in a spawned worker process."""
    monkeypatch.setattr(badge_bridge.audit.verify, "RANGE_MIN", 10)
    behind_the_back(log, tamper)
    trusted = keys.trusted_public_keys()
    serial = verify(log, db_url, trusted, jobs=1)
    parallel = verify(log, db_url, trusted, jobs=2)
    assert not serial.ok
    assert parallel.findings == serial.findings
    assert parallel.chains[CHAIN].entries == serial.chains[CHAIN].entries


@pytest.mark.parametrize("seq", [25, 26])
def test_parallel_modification_is_found_at_its_seq(
    seq: int, log: Engine, db_url: str, keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(badge_bridge.audit.verify, "RANGE_MIN", 10)
    behind_the_back(log, modify(seq))
    report = verify(log, db_url, keys.trusted_public_keys(), jobs=2)
    assert [(f.seq, f.problem) for f in report.findings] == [(seq, "modified")]
    assert report.chains[CHAIN].entries == ENTRIES


# --- proofs checked with nothing but the file and the auditor's key ----------------------------------------


def test_check_proof_needs_only_the_file_and_the_public_key(log: Engine, keys: KeyStore, tmp_path: Path,
                                                          cli_site: Path) -> None:
    """`audit check-proof` takes an inclusion proof (`audit prove`) or a consistency proof (`audit
    consistency`) and the auditor's own key: no database, no keys folder. Every edit of a proof fails, so
    does another key or none; `audit consistency --old-root` refuses a root the log does not have."""
    with log.connect() as conn:
        day = segments.utc_day(conn.scalar(text("SELECT max(received_us) FROM audit_entry")))
    seal(log, keys.signer(), until_day=day + timedelta(days=1))
    with log.connect() as conn:
        hashes = conn.scalars(text("SELECT hash FROM audit_entry WHERE chain_id = :c ORDER BY seq"), dict(c=CHAIN)).all()
    kept_root = merkle.root([bytes.fromhex(h) for h in hashes[:20]]).hex()
    inclusion, consistent = prove(log, "ctl-1:7"), segments.consistency(log, CHAIN, day, 20)
    assert consistent["old_root"] == kept_root
    pub = str(next((keys.dir / "signing").glob("*.pub")))
    stranger = KeyStore(tmp_path / "stranger")
    stranger.ensure()
    runner = CliRunner()

    def check(proof: Any, *args: str) -> Any:
        path = tmp_path / "proof.json"
        path.write_text(proof if isinstance(proof, str) else json.dumps(proof))
        return runner.invoke(main, ["audit", "check-proof", str(path), *args])

    ok = check(inclusion, "--public-key", pub)
    assert ok.exit_code == 0 and "event ctl-1:7 is entry 7 of 50" in ok.output and "verified" in ok.output, ok.output
    ok = check(consistent, "--public-key", pub, "--old-root", kept_root)
    assert ok.exit_code == 0 and "the root you hold is a prefix of the sealed 50" in ok.output, ok.output

    def edited(proof: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copy = json.loads(json.dumps(proof))
        change(copy)
        return copy

    def flip(text_: str) -> str:
        return ("0" if text_[0] != "0" else "1") + text_[1:]

    refused = {
        "no key": (check(inclusion), "no trusted public key"),
        "another key": (check(inclusion, "--public-key", str(next((stranger.dir / "signing").glob("*.pub")))),
                        "not a trusted key"),
        "event edited": (check(edited(inclusion, lambda p: p["event"].update(door="noc")), "--public-key", pub),
                         "does not match its hash"),
        "path edited": (check(edited(inclusion, lambda p: p["inclusion_proof"].__setitem__(0, flip(p["inclusion_proof"][0]))),
                              "--public-key", pub), "the inclusion proof fails"),
        "index moved": (check(edited(inclusion, lambda p: p.update(leaf_index=p["leaf_index"] + 1)), "--public-key", pub),
                        "not at the position"),
        "root edited": (check(edited(inclusion, lambda p: p["segment"].update(root=flip(p["segment"]["root"]))),
                              "--public-key", pub), "signature does not verify"),
        "consistency path edited": (
            check(edited(consistent, lambda p: p["consistency_proof"].__setitem__(0, flip(p["consistency_proof"][0]))),
                  "--public-key", pub), "not an extension of the earlier tree"),
        "another old root": (check(consistent, "--public-key", pub, "--old-root", flip(kept_root)),
                             "another earlier root"),
        "not JSON": (check("{", "--public-key", pub), "not JSON"),
        "not a proof": (check({"hello": 1}, "--public-key", pub), "neither inclusion_proof nor consistency_proof"),
    }
    for name, (result, says) in refused.items():
        assert result.exit_code == 1 and says in result.output, (name, result.output)
    site = ["-c", str(cli_site), "audit", "consistency", "--chain", CHAIN, "--day", day.isoformat(), "--old-size", "20"]
    wrong = runner.invoke(main, [*site, "--old-root", flip(kept_root)])
    assert wrong.exit_code == 1 and "another earlier root" in wrong.output, wrong.output
    right = runner.invoke(main, [*site, "--old-root", kept_root.upper(), "--public-key", pub])
    assert right.exit_code == 0 and kept_root in right.output, right.output
