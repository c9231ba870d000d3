"""The monthly export at a million events: CSV+JSONL time, PDF time, peak memory, verify-export time.

Prints one JSON object. The month is built straight into SQLite (precomputed chained rows, executemany),
with a signed checkpoint every 1000 entries as the writer makes them, a signed tree head every 10 s of
the month (what the publisher makes: 267,840 heads) cosigned by a witness, and 1,000 entries after the
month; the export then runs as the CLI runs it (export format /2: heads thinned to one an hour, the tree
regrown from the rows in a third process) and verify-export with the bridge's and the witness's keys.
Goals: CSV+JSONL <= 10 s, PDF <= 5 s, memory flat (it does not grow with the row count).
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import Session

from badge_bridge.audit import merkle
from badge_bridge.audit.chain import GENESIS, checkpoint_message, entry_body, entry_hash
from badge_bridge.audit.tree_head import cosign, sign_head
from badge_bridge.config import load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.events import canonical_json, to_us
from badge_bridge.export.format import PDF_NAME
from badge_bridge.export.pdf import write_report
from badge_bridge.export.write import export_month, write_manifest
from badge_bridge.keys import KeyStore
from badge_bridge.site_sync import sync_site

ROOT = Path(__file__).resolve().parents[1]
N = int(os.environ.get("BENCH_EXPORT_N", "1000000"))
AFTER = 1000
"""Entries after the month (received on November 1st): the covering head includes the first of them."""
T0 = to_us(datetime(2026, 10, 1, tzinfo=UTC))
SPAN = to_us(datetime(2026, 10, 31, tzinfo=UTC)) - T0
NOV = to_us(datetime(2026, 11, 1, tzinfo=UTC))
HEAD_EVERY_US = 10_000_000
COLS = ("chain_id, seq, event_id, ts_us, received_us, source, door, kind, subject, detail, prev_hash, hash, "
        "person_id")


def build(path: Path, keys: KeyStore, witness: KeyStore) -> None:
    """N chained entries spread over October on one chain (entries and exits at four doors, three of them
    into restricted areas) and AFTER in November, a checkpoint every 1000, a cosigned tree head every 10 s,
    and the example site's doors, areas and schedules."""
    signer, cosigner = keys.signer(), witness.signer()
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    head, batch, cps, heads, cosigs = GENESIS, [], [], [], []
    tree, next_head = merkle.CompactRange(), T0 + HEAD_EVERY_US
    for i in range(N + AFTER):
        seq = i + 1
        ts = T0 + SPAN * i // N if i < N else NOV + (i - N) * 1000
        if ts >= next_head and tree.size:
            h = sign_head(signer, "bridge-1", tree.size, tree.root().hex(), head, next_head)
            co = cosign(cosigner, h, next_head + 1000)
            heads.append((h.chain_id, h.size, h.root, h.head_hash, h.signed_us, h.key_id, h.signature))
            cosigs.append((h.chain_id, h.size, co.witness_key_id, co.cosigned_us, co.signature))
            next_head = max(next_head + HEAD_EVERY_US, ts - ts % HEAD_EVERY_US + HEAD_EVERY_US)
        kind = "access.granted" if i % 9 else "access.denied"
        door = ("main-entrance", "noc", "hall-a", "cage-7")[i % 4]
        direction = ("in", "out")[i // 4 % 2]
        person = i % 3000 + 1
        subject = canonical_json({"person": person, "credential": person})
        detail = canonical_json({"reader": f"{door}-{direction}", "direction": direction,
                                 "reason": "granted" if i % 9 else "not_in_schedule"})
        event = f"ctl:{i}"
        prev, head = head, entry_hash(head, entry_body("bridge-1", event, ts, ts + 3000, "ctl-lobby", door, kind,
                                                       subject, detail))
        batch.append(("bridge-1", seq, event, ts, ts + 3000, "ctl-lobby", door, kind, subject, detail, prev, head,
                      person))
        tree.append(bytes.fromhex(head))
        if seq % 1000 == 0 or seq == N:
            cps.append(("bridge-1", seq, head, ts + 5000, signer.key_id,
                        signer.sign(checkpoint_message("bridge-1", seq, head, ts + 5000))))
        if len(batch) == 50_000:
            con.executemany(f"INSERT INTO audit_entry ({COLS}) VALUES ({','.join('?' * 13)})", batch)
            batch = []
    con.executemany(f"INSERT INTO audit_entry ({COLS}) VALUES ({','.join('?' * 13)})", batch)
    con.executemany("INSERT INTO checkpoint (chain_id, seq, hash, signed_us, key_id, signature) VALUES (?,?,?,?,?,?)",
                    cps)
    h = sign_head(signer, "bridge-1", tree.size, tree.root().hex(), head, next_head)
    heads.append((h.chain_id, h.size, h.root, h.head_hash, h.signed_us, h.key_id, h.signature))
    co = cosign(cosigner, h, next_head + 1000)
    cosigs.append((h.chain_id, h.size, co.witness_key_id, co.cosigned_us, co.signature))
    con.executemany("INSERT INTO tree_head (chain_id, size, root, head_hash, signed_us, key_id, signature) "
                    "VALUES (?,?,?,?,?,?,?)", heads)
    con.executemany("INSERT INTO witness_cosignature (chain_id, size, witness_key_id, cosigned_us, signature) "
                    "VALUES (?,?,?,?,?)", cosigs)
    con.commit()
    con.close()
    with Session(make_engine(f"sqlite:///{path}")) as session, session.begin():
        sync_site(session, load_config(ROOT / "site.example.toml"))  # its doors, areas (restricted) and schedules


def main() -> None:
    from badge_bridge.export.verify import verify_export

    out: dict[str, object] = {"bench": "export", "events": N, "goals": {"csv_jsonl_s": 10.0, "pdf_s": 5.0}}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        keys, witness = KeyStore(tmpdir / "keys"), KeyStore(tmpdir / "witness")
        keys.ensure()
        witness.ensure()
        db = tmpdir / "month.db"
        url = f"sqlite:///{db}"
        migrate(make_engine(url, must_exist=False))
        started = time.perf_counter()
        build(db, keys, witness)
        out["build_s"] = round(time.perf_counter() - started, 1)
        engine = make_engine(url)
        export_dir = tmpdir / "export"
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        summary = export_month(engine, keys, "2026-10", export_dir, actor="bench", pdf=False,
                               witnesses=witness.trusted_public_keys())
        out["csv_jsonl_s"] = round(time.perf_counter() - started, 2)
        tracemalloc.start()  # a second, untimed export: tracemalloc slows Python several times over
        export_month(engine, keys, "2026-10", tmpdir / "traced", actor="bench", pdf=False)
        out["export_tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
        started = time.perf_counter()
        with engine.connect() as conn:
            write_report(conn, summary, export_dir / PDF_NAME)
        write_manifest(export_dir, summary, keys)
        out["pdf_s"] = round(time.perf_counter() - started, 2)
        out["review_csv_rows"] = {p.name: sum(1 for _ in p.open()) - 1 for p in sorted(export_dir.glob("review-*.csv"))}
        out["ru_maxrss_mb_before_export"] = round(rss_before / 1024, 1)
        out["ru_maxrss_mb_after_export"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["verified_while_exporting"] = summary.verified
        out["files_mb"] = {name: round(f["bytes"] / 2**20, 1) for name, f in summary.files.items()}
        started = time.perf_counter()
        result = verify_export(export_dir, keys.trusted_public_keys(), witness.trusted_public_keys())
        out["verify_export_s"] = round(time.perf_counter() - started, 2)
        out["verify_export_ok"] = result.ok
        out["problems"] = (summary.problems + result.problems)[:5]
        out["heads_exported"] = len(summary.chains[0].tree.heads) if summary.chains[0].tree else 0
        engine.dispose()
    out["meets_goals"] = {"csv_jsonl": out["csv_jsonl_s"] <= 10.0, "pdf": out["pdf_s"] <= 5.0}  # type: ignore[operator]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
