"""A database administrator against the log, on both databases: issue 15's table, row by row.

The log is what a site holds after two weeks: a door chain of a few thousand entries over 14 days with
signed checkpoints, a `.cli` chain, every finished day sealed, and a tree head of each chain published
twice a day and countersigned by a witness (signed with tree_head.sign_head over the real chain and
countersigned with tree_head.cosign, as the witness does). The auditor kept the witness's `GET /v1/heads`
answer in a file (and one from the middle of the fortnight). The DBA's means: on SQLite, DROP the triggers;
on PostgreSQL, as the superuser, `SET session_replication_role = replica`, which bypasses them without a
trace. A thorough one also removes every row inside the database that would betray the change (checkpoints,
segments, tree heads, countersignatures, frontiers). Each tamper must make the real CLI,
`badge-bridge audit verify --witness FILE`, exit non-zero with a line naming the chain and entry.

Not here: "change only prev_hash" and "edit people/credentials" (other parts of issue 15).
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import Connection

from badge_bridge.audit import merkle, segments
from badge_bridge.audit.chain import GENESIS, checkpoint_message, entry_body, entry_hash
from badge_bridge.audit.tree_head import cosign, sign_head
from badge_bridge.audit.witness_api import Held
from badge_bridge.audit.witness_check import TreeTap, _roots
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine, sqlite_path
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore, Signer, key_id_of, public_hex
from badge_bridge.models import TreeHead as TreeHeadRow
from badge_bridge.models import WitnessCosignature
from tests.conftest import write_site
from tests.test_verify import run_cli

CHAIN, CLI_CHAIN = "bridge-1", "bridge-1.cli"
DAYS, PER_DAY, CLI_PER_DAY = 14, 173, 2
MID_DAY = 7
"""After this many days the auditor saved the witness's answer too (heads-mid.json)."""


def intruder() -> Signer:
    private = Ed25519PrivateKey.generate()
    return Signer(key_id_of(private.public_key()), private)


# --- the log -------------------------------------------------------------------------------------


@dataclass
class Log:
    engine: Engine
    url: str
    site: Path
    keys: KeyStore
    witness: Signer
    witness_key: Path
    heads: Path
    """The witness's latest answer, saved by the auditor."""
    mid_heads: Path
    """Its answer after MID_DAY days."""
    days: list[date]
    day_start: dict[date, int] = field(default_factory=dict)
    """First seq of each day on CHAIN."""
    held: dict[str, Held] = field(default_factory=dict)
    mid: dict[str, Held] = field(default_factory=dict)
    backup: Path | None = None

    def size(self, chain: str = CHAIN) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM audit_entry WHERE chain_id = :c"), dict(c=chain)))

    def checkpoints(self, chain: str = CHAIN) -> list[int]:
        with self.engine.connect() as conn:
            return list(conn.scalars(text("SELECT seq FROM checkpoint WHERE chain_id = :c ORDER BY seq"), dict(c=chain)))

    def verify(self, *args: str, witness: bool = True) -> tuple[int, str]:
        extra = ("--witness", str(self.heads), "--witness-key", str(self.witness_key)) if witness else ()
        result = run_cli(self.site, "audit", "verify", *extra, *args)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stdout + result.stderr


def publish(engine: Engine, signer: Signer, witness: Signer, chain: str, held: Held | None) -> Held:
    """What the bridge's publisher and the witness do when a chain has grown: a signed head of the chain as
    it is, countersigned, and both kept in the database too."""
    with engine.begin() as conn:
        hashes = list(conn.scalars(text("SELECT hash FROM audit_entry WHERE chain_id = :c ORDER BY seq"), dict(c=chain)))
        if held is not None and held.head.size == len(hashes):
            return held
        head = sign_head(signer, chain, len(hashes), merkle.root([bytes.fromhex(h) for h in hashes]).hex(),
                         hashes[-1] if hashes else GENESIS)
        cos = cosign(witness, head)
        conn.execute(insert(TreeHeadRow).values(chain_id=chain, size=head.size, root=head.root, head_hash=head.head_hash,
                                                signed_us=head.signed_us, key_id=head.key_id, signature=head.signature))
        conn.execute(insert(WitnessCosignature).values(chain_id=chain, size=head.size, witness_key_id=cos.witness_key_id,
                                                       cosigned_us=cos.cosigned_us, signature=cos.signature))
    return Held(head, cos)


def save_heads(path: Path, witness: Signer, held: dict[str, Held]) -> None:
    path.write_text(json.dumps({"witness_key_id": witness.key_id, "public_key": public_hex(witness.public),
                                "heads": {c: h.to_dict() for c, h in held.items()}}))


def sqlite_copy(log: Log, dest: Path) -> None:
    """A file copy of the SQLite database (WAL checkpointed into it first), by another process: closing a
    descriptor of the file here would drop this process's locks on it (POSIX), and SQLite's with them."""
    with log.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    subprocess.run(["cp", str(sqlite_path(log.url)), str(dest)], check=True)


def make_backup(log: Log, signer: Signer) -> None:
    if log.engine.dialect.name == "sqlite":
        log.backup = log.site.parent / "backup-mid.db"
        sqlite_copy(log, log.backup)
        return
    result = run_cli(log.site, "backup", str(log.site.parent / "backups"))
    assert result.returncode == 0, result.stderr
    log.backup = next((log.site.parent / "backups").glob("*.dump"))
    # `backup` is audited on the .cli chain: the publisher sends that chain's new head
    log.mid[CLI_CHAIN] = log.held[CLI_CHAIN] = publish(log.engine, signer, log.witness, CLI_CHAIN, log.held[CLI_CHAIN])


def write_log(log: Log, backup: bool) -> None:
    signer = log.keys.signer()
    doors = AuditWriter(log.engine, CHAIN, signer, batch_max=16)
    cli = AuditWriter(log.engine, CLI_CHAIN, signer, batch_max=1)
    doors.start()
    cli.start()
    seq = 0
    for d, day in enumerate(log.days):
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        log.day_start[day] = seq + 1
        for half in (0, 1):
            for i in range((0, PER_DAY // 2, PER_DAY)[half], (0, PER_DAY // 2, PER_DAY)[half + 1]):
                at = midnight + timedelta(hours=6, seconds=i * 200)
                doors.submit(Event(id=f"ctl-{i % 7}:{d}:{i}", kind="access.granted" if i % 9 else "access.denied",
                                   source=f"ctl-{i % 7}", ts=at, received_ts=at + timedelta(milliseconds=40),
                                   door=f"door-{i % 12}", subject={"person": i % 40, "credential": i % 40 + 100},
                                   detail={"reader": "in", "reason": "granted" if i % 9 else "no-access"}))
                seq += 1
            if half == 0:
                for j in range(CLI_PER_DAY):
                    at = midnight + timedelta(hours=9, minutes=j)
                    cli.submit(Event(id=f"cli:{d}:{j}", kind=EventKind.BACKUP_MADE, source="cli:ops", ts=at,
                                     received_ts=at, detail={"file": f"backup-{d}-{j}.db"}))
            assert doors.flush() and cli.flush()
            for chain in (CHAIN, CLI_CHAIN):
                log.held[chain] = publish(log.engine, signer, log.witness, chain, log.held.get(chain))
        if d + 1 == MID_DAY:
            log.mid = dict(log.held)
            save_heads(log.mid_heads, log.witness, log.mid)
            if backup:
                make_backup(log, signer)
    assert doors.stop() and cli.stop()
    segments.seal(log.engine, signer, until_day=log.days[-1])
    for chain in (CHAIN, CLI_CHAIN):
        log.held[chain] = publish(log.engine, signer, log.witness, chain, log.held.get(chain))
    save_heads(log.heads, log.witness, log.held)


@pytest.fixture
def make_log(tmp_path: Path, db_url: str, keys: KeyStore) -> Iterator[Callable[[bool], Log]]:
    """The log; with a backup made after MID_DAY days (SQLite: a file copy; PostgreSQL: `badge-bridge backup`)."""
    engines = []

    def make(backup: bool) -> Log:
        witness = intruder()  # the witness's key: another host's, not the bridge's
        witness_key = tmp_path / "auditor" / "witness.pub"
        witness_key.parent.mkdir()
        witness_key.write_text(public_hex(witness.public) + "\n")
        site = write_site(tmp_path, db_url)
        assert run_cli(site, "init").returncode == 0
        today = datetime.now(UTC).date()
        engines.append(make_engine(db_url))
        made = Log(engines[-1], db_url, site, keys, witness, witness_key, tmp_path / "auditor" / "heads.json",
                   tmp_path / "auditor" / "heads-mid.json", [today - timedelta(days=DAYS - 1 - i) for i in range(DAYS)])
        write_log(made, backup)
        return made

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def log(make_log: Callable[[bool], Log]) -> Log:
    return make_log(False)


# --- the DBA's means -----------------------------------------------------------------------------


@contextmanager
def as_dba(log: Log) -> Iterator[Connection]:
    """A transaction that the append-only triggers do not stop."""
    with log.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            for name in list(conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))):
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        else:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn


AUDIT_TABLES = {"audit_entry": "seq", "checkpoint": "seq", "segment": "last_seq", "tree_frontier": "size",
                "tree_head": "size", "witness_cosignature": "size"}


def cut_from(conn: Connection, chain: str, seq: int) -> None:
    """Remove entries seq.. and every row that speaks of them."""
    for table, column in AUDIT_TABLES.items():
        conn.execute(text(f"DELETE FROM {table} WHERE chain_id = :c AND {column} >= :s"), dict(c=chain, s=seq))


def rows(conn: Connection, chain: str, lo: int) -> list[dict[str, object]]:
    return [dict(r) for r in conn.execute(text("SELECT * FROM audit_entry WHERE chain_id = :c AND seq >= :s ORDER BY seq"),
                                          dict(c=chain, s=lo)).mappings()]


def rehash_from(conn: Connection, chain: str, seq: int) -> None:
    """Forge entry seq and recompute every hash after it, so the chain itself is consistent again."""
    conn.execute(text("UPDATE audit_entry SET detail = :d WHERE chain_id = :c AND seq = :s"),
                 dict(d='{"reader":"in","reason":"forged"}', c=chain, s=seq))
    prev = conn.scalar(text("SELECT hash FROM audit_entry WHERE chain_id = :c AND seq = :s"), dict(c=chain, s=seq - 1))
    for entry in rows(conn, chain, seq):
        new = entry_hash(prev, entry_body(chain, entry["event_id"], entry["ts_us"], entry["received_us"],  # type: ignore[arg-type]
                                          entry["source"], entry["door"] or "", entry["kind"], entry["subject"],  # type: ignore[arg-type]
                                          entry["detail"]))  # type: ignore[arg-type]
        conn.execute(text("UPDATE audit_entry SET prev_hash = :p, hash = :h WHERE id = :id"),
                     dict(p=prev, h=new, id=entry["id"]))
        prev = new


def resign_everything(log: Log, conn: Connection, attacker: Signer) -> None:
    """Every checkpoint, segment and tree head signed again by the attacker's key, over the log as it now is;
    countersignatures cannot be forged, so they go."""
    conn.execute(text("INSERT INTO signing_key (key_id, public_key, created_at) VALUES (:k, :p, :t)"),
                 dict(k=attacker.key_id, p=public_hex(attacker.public), t=datetime.now(UTC)))
    for chain in (CHAIN, CLI_CHAIN):
        hashes = dict(conn.execute(text("SELECT seq, hash FROM audit_entry WHERE chain_id = :c"), dict(c=chain)).all())
        for seq, signed_us in conn.execute(text("SELECT seq, signed_us FROM checkpoint WHERE chain_id = :c"),
                                           dict(c=chain)).all():
            conn.execute(text("UPDATE checkpoint SET hash = :h, key_id = :k, signature = :s WHERE chain_id = :c AND seq = :q"),
                         dict(h=hashes[seq], k=attacker.key_id, c=chain, q=seq,
                              s=attacker.sign(checkpoint_message(chain, seq, hashes[seq], signed_us))))
        leaves = [bytes.fromhex(hashes[s]) for s in sorted(hashes)]
        for size, in conn.execute(text("SELECT size FROM tree_head WHERE chain_id = :c"), dict(c=chain)).all():
            head = sign_head(attacker, chain, size, merkle.root(leaves[:size]).hex(), hashes[size])
            conn.execute(text("UPDATE tree_head SET root = :r, head_hash = :h, signed_us = :t, key_id = :k, signature = :s "
                              "WHERE chain_id = :c AND size = :n"),
                         dict(r=head.root, h=head.head_hash, t=head.signed_us, k=head.key_id, s=head.signature, c=chain,
                              n=size))
    for table in ("witness_cosignature", "segment", "tree_frontier"):
        conn.execute(text(f"DELETE FROM {table}"))


def replace_public_keys(log: Log, attacker: Signer, *, keep: bool) -> None:
    folder = log.keys.signing_dir
    if not keep:
        for pub in folder.glob("*.pub"):
            pub.unlink()
    (folder / f"{attacker.key_id}.pub").write_text(public_hex(attacker.public) + "\n")


# --- the table -----------------------------------------------------------------------------------


def expect(code: int, out: str, chain: str, seq: int, *says: str) -> None:
    assert code == 1, out
    assert f"chain {chain} entry {seq}: " in out, out
    lines = [line for line in out.splitlines() if f"chain {chain} entry {seq}: " in line]
    assert any(all(fragment in line for fragment in says) for line in lines), out


def test_the_untampered_log_verifies_against_the_witness(log: Log) -> None:
    code, out = log.verify()
    assert code == 0, out
    assert "it extends every head 1 witness(es) countersigned" in out
    assert f"chain {CHAIN}: {DAYS * PER_DAY} entries" in out
    code, out = log.verify("--witness", str(log.mid_heads))  # an older saved answer: the log extends it too
    assert code == 0, out


def test_append_one_correctly_hashed_forged_event(log: Log) -> None:
    """The witness holds nothing newer than its last head: the forged entry is found as one no signature covers."""
    n = log.size()
    with log.engine.begin() as conn:  # a plain INSERT: the triggers allow appending
        last = rows(conn, CHAIN, n)[0]
        forged = {**last, "seq": n + 1, "event_id": "ctl-1:forged", "detail": '{"reader":"in","reason":"granted"}',
                  "prev_hash": last["hash"]}
        del forged["id"]
        forged["hash"] = entry_hash(str(last["hash"]), entry_body(CHAIN, "ctl-1:forged", forged["ts_us"],  # type: ignore[arg-type]
                                    forged["received_us"], forged["source"], forged["door"] or "",  # type: ignore[arg-type]
                                    forged["kind"], forged["subject"], forged["detail"]))  # type: ignore[arg-type]
        conn.execute(text(f"INSERT INTO audit_entry ({', '.join(forged)}) VALUES ({', '.join(':' + k for k in forged)})"),
                     forged)
    code, out = log.verify()
    expect(code, out, CHAIN, n + 1)


def test_cut_the_entries_after_the_last_checkpoint(log: Log) -> None:
    """Every batch is signed: the DBA removes the last batches with their checkpoints, so the log ends at a
    checkpoint and looks complete."""
    last, before = log.checkpoints()[-1], log.checkpoints()[-2]
    assert last == log.size()
    with as_dba(log) as conn:
        cut_from(conn, CHAIN, before + 1)
    code, out = log.verify()
    expect(code, out, CHAIN, before + 1, "witness", f"entries {before + 1}..{last} are missing",
           f"the witness {log.heads} countersigned {last} entries")


def test_cut_todays_entries_with_their_checkpoints(log: Log) -> None:
    first = log.day_start[log.days[-1]]
    with as_dba(log) as conn:
        cut_from(conn, CHAIN, first)
    code, out = log.verify()
    expect(code, out, CHAIN, first, "witness", "missing", "cut, or rolled back")


def test_cut_eleven_days_with_their_checkpoints_and_segments(log: Log) -> None:
    first = log.day_start[log.days[-11]]
    with log.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM segment WHERE chain_id = :c AND first_seq >= :s"),
                           dict(c=CHAIN, s=first)) == 10
    with as_dba(log) as conn:
        cut_from(conn, CHAIN, first)
    code, out = log.verify()
    expect(code, out, CHAIN, first, "witness", f"entries {first}..{log.held[CHAIN].head.size} are missing")


def test_delete_a_whole_chain_with_its_checkpoints_and_segments(log: Log) -> None:
    with as_dba(log) as conn:
        cut_from(conn, CLI_CHAIN, 1)
    code, out = log.verify()
    n = log.held[CLI_CHAIN].head.size
    expect(code, out, CLI_CHAIN, 1, "witness", f"chain {CLI_CHAIN} was deleted", f"countersigned {n} entries")


def test_rewrite_the_tail_after_the_last_checkpoint_with_recomputed_hashes(log: Log) -> None:
    """The last checkpoint would betray the rewrite, so it goes too: the tail after the one before it is
    rewritten, hashes recomputed, and the heads that covered it removed."""
    before = log.checkpoints()[-2]
    with as_dba(log) as conn:
        rehash_from(conn, CHAIN, before + 1)
        for table, column in AUDIT_TABLES.items():
            if table != "audit_entry":
                conn.execute(text(f"DELETE FROM {table} WHERE chain_id = :c AND {column} > :s"), dict(c=CHAIN, s=before))
    code, out = log.verify()
    expect(code, out, CHAIN, before + 1, "witness", f"entries {before + 1}..{log.size()} are not the ones", "rewritten")


def test_roll_the_database_back_to_an_older_backup(make_log: Callable[[bool], Log]) -> None:
    log = make_log(True)
    assert log.backup is not None
    at_backup = log.mid[CHAIN].head.size
    if log.engine.dialect.name == "sqlite":
        log.engine.dispose()
        path = sqlite_path(log.url)
        assert path is not None
        for extra in ("-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
        shutil.copy(log.backup, path)
    else:
        result = run_cli(log.site, "restore", str(log.backup), "--yes", "--force")
        assert result.returncode == 0, result.stderr
    assert log.size() == at_backup
    code, out = log.verify()
    expect(code, out, CHAIN, at_backup + 1, "witness", f"entries {at_backup + 1}..{log.held[CHAIN].head.size} are missing")


@pytest.mark.parametrize("keys_folder", ["replaced", "added"])
def test_re_sign_everything_with_the_attackers_key(log: Log, keys_folder: str) -> None:
    """The DBA who can write the keys folder rewrites from the middle of day 10 and signs everything again;
    nothing inside the database is signed by the bridge's key any more. The witness's head is. Where the
    rewrite starts is bounded by the heads the auditor holds: the older saved answer still matches."""
    attacker = intruder()
    start = log.day_start[log.days[9]] + 17
    with as_dba(log) as conn:
        rehash_from(conn, CHAIN, start)
        resign_everything(log, conn, attacker)
    segments.seal(log.engine, attacker, until_day=log.days[-1])
    replace_public_keys(log, attacker, keep=keys_folder == "added")
    assert log.verify(witness=False)[0] == 0, "only the witness can tell"
    code, out = log.verify("--witness", str(log.mid_heads))
    mid = log.mid[CHAIN].head.size
    assert mid < start
    expect(code, out, CHAIN, mid + 1, "witness", f"entries {mid + 1}..{log.size()} are not the ones", "rewritten")
    if keys_folder == "replaced":
        expect(code, out, CHAIN, log.size(), "witness", "which is not a trusted key: the trusted keys were replaced")


def test_changes_newer_than_the_last_countersigned_head_are_the_bound(log: Log) -> None:
    """What the docs promise and no more: entries written after the witness's last head (at most
    audit.publish_seconds while it is reachable) can be cut, with their checkpoint, unseen."""
    n = log.size()
    late = AuditWriter(log.engine, CHAIN, log.keys.signer())
    late.start()
    at = datetime.now(UTC)
    for i in range(5):
        late.submit(Event(id=f"ctl-1:late:{i}", kind="access.granted", source="ctl-1", ts=at, received_ts=at,
                          door="door-1", subject={"person": 1}, detail={"reader": "in"}))
    assert late.stop()
    with as_dba(log) as conn:
        cut_from(conn, CHAIN, n + 1)
    code, out = log.verify()
    assert code == 0, out


# --- the stored heads, without --witness -----------------------------------------------------------


def test_stored_tree_heads_find_a_cut_that_leaves_them(log: Log) -> None:
    first = log.day_start[log.days[-3]]
    with as_dba(log) as conn:
        for table in ("audit_entry", "checkpoint", "segment"):
            column = AUDIT_TABLES[table]
            conn.execute(text(f"DELETE FROM {table} WHERE chain_id = :c AND {column} >= :s"), dict(c=CHAIN, s=first))
    code, out = log.verify(witness=False)
    expect(code, out, CHAIN, first, "tree_head", "a signed tree head vouches for")


def test_a_countersignature_of_a_head_that_is_gone_is_a_finding(log: Log) -> None:
    size = log.mid[CHAIN].head.size
    with as_dba(log) as conn:
        conn.execute(text("DELETE FROM tree_head WHERE chain_id = :c AND size = :n"), dict(c=CHAIN, n=size))
    code, out = log.verify(witness=False)
    expect(code, out, CHAIN, size, "witness", "no longer in the database")


def test_a_countersignature_by_another_key_is_a_finding_when_witnesses_are_configured(log: Log, tmp_path: Path) -> None:
    site = write_site(tmp_path, log.url, ("queue_max = 100000", "queue_max = 100000\n\n[[audit.witnesses]]\n"
                                          f'url = "https://witness.example"\npublic_key = "{log.witness_key}"'))
    assert run_cli(site, "audit", "verify").returncode == 0
    # the key from the site file is the default for --witness
    assert run_cli(site, "audit", "verify", "--witness", str(log.heads)).returncode == 0
    size = log.mid[CHAIN].head.size
    stranger = intruder()
    with as_dba(log) as conn:
        conn.execute(text("UPDATE witness_cosignature SET witness_key_id = :k WHERE chain_id = :c AND size = :n"),
                     dict(k=stranger.key_id, c=CHAIN, n=size))
    result = run_cli(site, "audit", "verify")
    expect(result.returncode, result.stdout + result.stderr, CHAIN, size, "witness", "no configured witness")


def test_a_witness_answer_with_no_trusted_key_is_one_clear_error(log: Log) -> None:
    result = run_cli(log.site, "audit", "verify", "--witness", str(log.heads))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: witness {log.heads} countersigns with key "
                                                            f"{log.witness.key_id}, which is none of the witness keys")


def test_an_altered_saved_answer_is_a_finding(log: Log) -> None:
    answer = json.loads(log.heads.read_text())
    answer["heads"][CHAIN]["head"]["size"] -= 1
    log.heads.write_text(json.dumps(answer))
    code, out = log.verify()
    expect(code, out, CHAIN, log.size() - 1, "witness", "does not verify with the witness key")


# --- pruned chains ---------------------------------------------------------------------------------


def prune_all_sealed(log: Log) -> int:
    report = segments.prune(log.engine, log.keys.signer(), keep_days=segments.MIN_KEEP_DAYS,
                            now=datetime.now(UTC) + timedelta(days=segments.MIN_KEEP_DAYS + 1))
    assert report.entries
    return log.day_start[log.days[-1]] - 1


def test_a_pruned_chain_is_checked_from_the_frontier_at_its_pruned_boundary(log: Log) -> None:
    pruned = prune_all_sealed(log)
    code, out = log.verify()
    assert code == 0, out
    assert f"entries 1..{pruned} pruned (signed)" in out


def test_a_wrong_frontier_at_the_pruned_boundary_is_a_root_mismatch(log: Log) -> None:
    pruned = prune_all_sealed(log)
    with as_dba(log) as conn:
        nodes = conn.scalar(text("SELECT nodes FROM tree_frontier WHERE chain_id = :c AND size = :n"), dict(c=CHAIN, n=pruned))
        conn.execute(text("UPDATE tree_frontier SET nodes = :v WHERE chain_id = :c AND size = :n"),
                     dict(v="0" * 64 + nodes[64:], c=CHAIN, n=pruned))
    code, out = log.verify()
    assert code == 1, out
    assert f"chain {CHAIN} entry " in out and "are not the ones the witness" in out, out



# --- the roots computed while scanning -------------------------------------------------------------


@pytest.mark.parametrize("bounds", [[1, 5001], [1, 700, 1800, 4097, 5001], [1, 1025, 2049, 5001]])
def test_ranges_scanned_apart_give_the_roots_of_the_whole_tree(bounds: list[int]) -> None:
    hashes = [entry_hash(GENESIS, str(i)) for i in range(5000)]
    marks = frozenset([1, 2, 3, 1023, 1024, 1025, 2048, 3000, 4999, 5000])
    taps = []
    for lo, end in pairwise(bounds):
        tap = TreeTap(lo, marks)
        for seq in range(lo, end):
            tap.add(seq, hashes[seq - 1])
        taps.append(pickle.loads(pickle.dumps(tap)))  # as a worker process hands it back
    known = _roots(taps)
    for m in marks:
        assert known[m] == (merkle.root([bytes.fromhex(h) for h in hashes[:m]]).hex(), hashes[m - 1]), m
