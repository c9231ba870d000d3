"""Backup of a large SQLite log while the bridge appends: how long it takes, and what it costs the writer.

The writer runs in its own process (as the bridge does) and appends as fast as it can; its throughput is
measured without a backup, during the copy, and during the verification of the copy. Prints JSON.
Usage: python bench/bench_backup.py [ENTRIES]  (default 1,000,000)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from badge_bridge.audit.backup import _sha256, _sqlite_copy, _sqlite_verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine, migrate
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore

NOW = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)
WRITER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from datetime import UTC, datetime
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
engine = make_engine(sys.argv[1])
w = AuditWriter(engine, "bridge-2", KeyStore(__import__("pathlib").Path(sys.argv[2])).signer(), batch_max=100)
w.start()
now, n = datetime(2026, 10, 5, tzinfo=UTC), 0
while True:
    for _ in range(100):
        n += 1
        w.submit(Event(id=f"w:{n}", kind="access.granted", source="ctl-2", ts=now, door="d", detail={"n": n}))
    w.flush()
    print(time.monotonic(), w.stats.committed, flush=True)
"""


def fill(url: str, keys: KeyStore, n: int) -> None:
    engine = make_engine(url, must_exist=False)
    migrate(engine)
    writer = AuditWriter(engine, "bridge-1", keys.signer(), batch_max=5000)
    writer.start()
    for i in range(n):
        writer.submit(Event(id=f"ctl-1:{i}", kind="access.granted", source="ctl-1", ts=NOW, door="main-entrance",
                            subject={"person": i % 500, "credential": i}, detail={"reader": "main-in", "n": i}),
                      timeout=None)
    assert writer.stop(timeout=600)
    engine.dispose()


def rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    inside = [(t, c) for t, c in samples if start <= t <= end]
    if len(inside) < 2:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = KeyStore(root / "keys")
        keys.ensure()
        live = root / "bridge.db"
        url = f"sqlite:///{live}"
        started = time.perf_counter()
        fill(url, keys, entries)
        fill_s = time.perf_counter() - started
        proc = subprocess.Popen([sys.executable, "-c", WRITER, url, str(root / "keys"), str(Path(__file__).parents[1])],
                                stdout=subprocess.PIPE, text=True)
        samples: list[tuple[float, int]] = []

        def read_until(deadline: float) -> None:
            assert proc.stdout is not None
            while time.monotonic() < deadline:
                line = proc.stdout.readline().split()
                if not line:  # the writer was stopped
                    return
                samples.append((float(line[0]), int(line[1])))

        try:
            read_until(time.monotonic() + 3)  # warm-up and the baseline
            base_end = time.monotonic()
            # The writer's stdout is drained in the background so it never blocks on a full pipe.
            reader = threading.Thread(target=read_until, args=(float("inf"),), daemon=True)
            reader.start()
            out = root / "backup.db"
            t0 = time.monotonic()
            _sqlite_copy(live, out)
            t1 = time.monotonic()
            _chains, problems = _sqlite_verify(out, keys.trusted_public_keys())
            t2 = time.monotonic()
            digest_s = time.perf_counter()
            _sha256(out)
            digest_s = time.perf_counter() - digest_s
            time.sleep(1)
        finally:
            proc.kill()
            proc.wait()
        print(json.dumps({
            "entries": entries,
            "db_bytes": live.stat().st_size,
            "fill_s": round(fill_s, 1),
            "copy_s": round(t1 - t0, 2),
            "verify_s": round(t2 - t1, 2),
            "sha256_s": round(digest_s, 2),
            "verified": not problems,
            "writer_events_per_s": {
                "without_backup": round(rate(samples, base_end - 2, base_end)),
                "during_copy": round(rate(samples, t0, t1)),
                "during_verify": round(rate(samples, t1, t2)),
            },
        }, indent=2))


if __name__ == "__main__":
    main()
