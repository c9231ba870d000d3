"""Sealing a million audit entries into daily segments, proving one event, and pruning, on SQLite.

Prints one JSON object. Sealing re-checks the chain it signs (entry hashes and links) and builds the RFC 9162
tree of each day; proving rebuilds one day's tree from the database.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from badge_bridge.audit.segments import prove, prune, seal, verify_proof
from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine, migrate
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore

N = int(os.environ.get("BENCH_SEGMENTS_N", "1000000"))
DAYS = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        engine = make_engine(url, must_exist=False)
        migrate(engine)
        keys = KeyStore(Path(tmp) / "keys")
        keys.ensure()
        step = timedelta(days=DAYS) / N
        writer = AuditWriter(engine, "bench", keys.signer(), batch_max=5000, queue_max=N + 10)
        writer.start()
        for i in range(N):
            at = T0 + step * i
            writer.submit(Event(id=f"ctl:{i}", kind="access.granted", source=f"ctl-{i % 40}", ts=at, received_ts=at,
                                door=f"door-{i % 1000}", subject={"person": i % 5000}, detail={"reader": f"r-{i % 2000}"}))
        assert writer.stop(timeout=3600)

        started = time.perf_counter()
        segments = seal(engine, keys.signer())
        seal_s = time.perf_counter() - started

        started = time.perf_counter()
        proof = prove(engine, f"ctl:{N // 2}")
        prove_s = time.perf_counter() - started
        started = time.perf_counter()
        verify_proof(proof, keys.trusted_public_keys())
        verify_proof_s = time.perf_counter() - started

        started = time.perf_counter()
        pruned = prune(engine, keys.signer(), keep_days=90, now=T0 + timedelta(days=90 + DAYS // 2))
        prune_s = time.perf_counter() - started
        started = time.perf_counter()
        report = verify(engine, url, keys.trusted_public_keys())
        verify_s = time.perf_counter() - started
        assert report.ok, report.findings[:3]
        engine.dispose()
    print(json.dumps({
        "database": "sqlite", "entries": N, "segments": len(segments),
        "seal_s": round(seal_s, 2), "seal_entries_per_s": round(N / seal_s),
        "prove_s": round(prove_s, 3), "proof_hashes": len(proof["inclusion_proof"]),
        "verify_proof_ms": round(verify_proof_s * 1000, 2),
        "prune_entries": pruned.entries, "prune_s": round(prune_s, 2),
        "verify_after_prune_s": round(verify_s, 2),
    }))


if __name__ == "__main__":
    main()
