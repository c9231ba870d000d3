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

from throwaway import NoPostgres, postgres_database

from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine, migrate
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore

APPEND_N = 100_000
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
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "badge_bridge.cli", "-c", str(site), "audit", "verify"],
                   check=True, capture_output=True)
    cli = time.perf_counter() - started
    engine.dispose()
    return {"entries": VERIFY_N, "checkpoints": report.chains["bridge-1"].checkpoints, "verify_s": round(in_process, 2),
            "cli_verify_s": round(cli, 2)}


def main() -> None:
    out: dict[str, object] = {"bench": "audit", "goals": {
        "sqlite_append_per_s": 20_000, "postgresql_append_per_s": 10_000, "verify_1m_s": 3.0}}
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
