"""Durable append rate into the hash-chained audit log (every batch commits with its signed checkpoint), and
`audit verify` over a million entries (written in batches of up to 5,000, so about 200 checkpoints: each
checkpoint costs verify one Ed25519 signature check, some 60 µs).

Prints one JSON object. SQLite runs in WAL mode with synchronous=FULL (every commit on disk); PostgreSQL
is a throw-away database on the local server (skipped, and said so, when none answers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, insert, select
from throwaway import NoPostgres, postgres_database

from badge_bridge.audit.merkle import CompactRange
from badge_bridge.audit.tree_head import cosign, sign_head
from badge_bridge.audit.verify import verify
from badge_bridge.audit.witness_api import Held
from badge_bridge.audit.witness_check import views
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine, migrate
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore, Signer, key_id_of, public_from_hex, public_hex
from badge_bridge.models import AuditEntry, WitnessCosignature
from badge_bridge.models import TreeHead as TreeHeadRow

APPEND_N = 100_000
HEAD_EVERY = 10_000
"""A head per 10 s at 1,000 entries/s."""
SINGLE_N = 2_000
VERIFY_N = int(os.environ.get("BENCH_VERIFY_N", "1000000"))
T0 = datetime(2026, 10, 1, tzinfo=UTC)


def events(n: int, prefix: str) -> list[Event]:
    return [
        Event(id=f"{prefix}:{i}", kind="access.granted" if i % 5 else "access.denied", source=f"ctl-{i % 40}",
              ts=T0 + timedelta(milliseconds=i * 37), received_ts=T0 + timedelta(milliseconds=i * 37 + 3),
              door=f"door-{i % 1000}", subject={"person": i % 5000, "credential": i % 7000},
              detail={"reader": f"r-{i % 2000}", "direction": "in", "reason": "granted"})
        for i in range(n)
    ]


def append_rate(url: str, keys: KeyStore, n: int, batch_max: int, prefix: str) -> float:
    engine = make_engine(url)
    batch = events(n, prefix)
    writer = AuditWriter(engine, f"bench-{prefix}", keys.signer(), batch_max=batch_max, queue_max=n + 10)
    writer.start()
    started = time.perf_counter()
    for event in batch:
        writer.submit(event)
    assert writer.flush(timeout=3600)
    elapsed = time.perf_counter() - started
    writer.stop()
    engine.dispose()
    return n / elapsed


def measure(url: str, keys: KeyStore) -> dict[str, float]:
    batched = append_rate(url, keys, APPEND_N, 1000, "batched")
    single = append_rate(url, keys, SINGLE_N, 1, "single")
    return {"append_events_per_s": round(batched), "one_commit_per_event_per_s": round(single),
            "batched_over_single": round(batched / single, 1)}


def verify_time(url: str, keys: KeyStore, config_dir: Path) -> dict[str, float]:
    engine = make_engine(url)
    writer = AuditWriter(engine, "bridge-1", keys.signer(), batch_max=5000, queue_max=VERIFY_N + 10)
    writer.start()
    for i in range(0, VERIFY_N, 100_000):
        for event in events(min(100_000, VERIFY_N - i), f"v{i}"):
            writer.submit(event)
        writer.flush(timeout=3600)
    writer.stop()
    started = time.perf_counter()
    report = verify(engine, url, keys.trusted_public_keys())
    in_process = time.perf_counter() - started
    assert report.ok and report.chains["bridge-1"].entries == VERIFY_N, report.findings[:3]
    site = config_dir / "site.toml"
    site.write_text(f'[site]\nname = "bench"\n[database]\nurl = "{url}"\n[keys]\ndir = "{keys.dir}"\n')
    cli = _cli_verify(site)
    heads_file, witness_pub = publish_heads(engine, keys, config_dir)
    witness_key = public_from_hex(witness_pub.read_text())
    started = time.perf_counter()
    report = verify(engine, url, keys.trusted_public_keys(), witness_keys={key_id_of(witness_key): witness_key},
                    witnesses=views([str(heads_file)], {key_id_of(witness_key): witness_key}))
    with_witness = time.perf_counter() - started
    assert report.ok, report.findings[:3]
    cli_witness = _cli_verify(site, "--witness", str(heads_file), "--witness-key", str(witness_pub))
    engine.dispose()
    return {"entries": VERIFY_N, "checkpoints": report.chains["bridge-1"].checkpoints, "verify_s": round(in_process, 2), "cli_verify_s": round(cli, 2),
            "stored_heads": VERIFY_N // HEAD_EVERY, "verify_with_witness_s": round(with_witness, 2),
            "cli_verify_with_witness_s": round(cli_witness, 2)}


def _cli_verify(site: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "badge_bridge.cli", "-c", str(site), "audit", "verify", *args],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def publish_heads(engine: Engine, keys: KeyStore, folder: Path) -> tuple[Path, Path]:
    """What the publisher and a witness leave behind: a countersigned tree head every HEAD_EVERY entries in
    the database, and the witness's latest answer saved by the auditor (with its public key)."""
    private = Ed25519PrivateKey.generate()
    witness = Signer(key_id_of(private.public_key()), private)
    tree, held = CompactRange(), None
    with engine.begin() as conn:
        hashes = conn.scalars(select(AuditEntry.hash).where(AuditEntry.chain_id == "bridge-1").order_by(AuditEntry.seq))
        for n, digest in enumerate(hashes, 1):
            tree.append(bytes.fromhex(digest))
            if n % HEAD_EVERY == 0:
                head = sign_head(keys.signer(), "bridge-1", n, tree.root().hex(), digest)
                held = Held(head, cosign(witness, head))
                conn.execute(insert(TreeHeadRow).values(**head.to_dict()))
                conn.execute(insert(WitnessCosignature).values(chain_id="bridge-1", size=n,
                                                               **held.cosignature.to_dict()))
    assert held is not None
    heads, pub = folder / "heads.json", folder / "witness.pub"
    heads.write_text(json.dumps({"witness_key_id": witness.key_id, "heads": {"bridge-1": held.to_dict()}}))
    pub.write_text(public_hex(witness.public))
    return heads, pub


def main() -> None:
    out: dict[str, object] = {"bench": "audit", "goals": {
        "sqlite_append_per_s": 20_000, "postgresql_append_per_s": 10_000, "verify_1m_s": 3.0,
        "verify_1m_with_witness_s": 3.0}}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        keys = KeyStore(tmpdir / "keys")
        keys.ensure()
        url = f"sqlite:///{tmpdir / 'append.db'}"
        migrate(make_engine(url, must_exist=False))
        out["sqlite"] = measure(url, keys)
        verify_url = f"sqlite:///{tmpdir / 'verify.db'}"
        migrate(make_engine(verify_url, must_exist=False))
        out["sqlite_verify"] = verify_time(verify_url, keys, tmpdir)
        out["postgresql"] = postgres(keys)
    sqlite, pg, ver = out["sqlite"], out["postgresql"], out["sqlite_verify"]
    out["meets_goals"] = {
        "sqlite_append": sqlite["append_events_per_s"] >= 20_000,  # type: ignore[index]
        "postgresql_append": isinstance(pg, dict) and pg.get("append_events_per_s", 0) >= 10_000,
        "verify_1m": ver["verify_s"] <= 3.0,  # type: ignore[index]
        "verify_1m_with_witness": ver["verify_with_witness_s"] <= 3.0,  # type: ignore[index]
    }
    print(json.dumps(out))


def postgres(keys: KeyStore) -> dict[str, object]:
    try:
        with postgres_database() as url:
            migrate(make_engine(url))
            return measure(url, keys)
    except NoPostgres as exc:
        return {"skipped": str(exc)}


if __name__ == "__main__":
    main()
