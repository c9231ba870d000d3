"""What publishing tree heads costs the bridge: the audit log's append rate with the publisher running (a
witness process countersigning every second) against without it, and the publisher's own time per entry
(walking the chain to a checkpoint and extending the tree), on SQLite and PostgreSQL.

Prints one JSON object.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_audit import events
from bench_witness import serve_stdlib
from throwaway import NoPostgres, postgres_database

from badge_bridge.audit.publish import Publisher, Witness
from badge_bridge.audit.witness import init_dir
from badge_bridge.audit.witness_api import WitnessClient
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore, key_id_of, public_from_hex

N = 100_000
PERIOD = 1.0
ROUNDS = 2


@contextmanager
def witness(tmp: Path, keys: KeyStore) -> Iterator[tuple[str, str]]:
    """A witness process of its own (url, public key): a witness holding other runs' chains would make the
    publisher sign empty heads for them (a fork, correctly)."""
    directory = Path(tempfile.mkdtemp(dir=tmp))
    public = init_dir(directory / "w")
    spawn = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue = spawn.Queue()
    proc = spawn.Process(target=serve_stdlib, args=(str(directory / "w"), str(next(keys.signing_dir.glob("*.pub"))),
                                                    ready), daemon=True)
    proc.start()
    try:
        yield f"http://127.0.0.1:{ready.get(timeout=60)}", public
    finally:
        proc.terminate()
        proc.join(10)


def append_rate(url: str, keys: KeyStore, witness_url: str | None = None, witness_key: str = "") -> float:
    engine = make_engine(url)
    writer = AuditWriter(engine, "bench-1", keys.signer(), batch_max=1000, queue_max=N + 10)
    writer.start()
    publisher = None
    if witness_url is not None:
        key = public_from_hex(witness_key)
        publisher = Publisher(engine, keys.signer(), keys.trusted_public_keys(),
                              [Witness(witness_url, key_id_of(key), key, WitnessClient(witness_url))],
                              lambda event, effect: writer.submit(event, effect=effect), "bench", PERIOD)
        publisher.start()
    batch = events(N, "e")
    started = time.perf_counter()
    for event in batch:
        writer.submit(event)
    assert writer.flush(timeout=3600)
    elapsed = time.perf_counter() - started
    if publisher is not None:
        publisher.stop()
        for _round in range(100):  # catch up (a round takes a bounded slice; a fast run outpaces them)
            held = WitnessClient(witness_url or "").latest("bench-1")
            if held is not None and held.head.size > N * 0.9:
                break
            publisher.publish_once()
        assert held is not None and held.head.size > N * 0.9, held
    writer.stop()
    engine.dispose()
    return N / elapsed


def publisher_cost(url: str, keys: KeyStore) -> float:
    """One round over a chain from its first entry (no frontier stored): the publisher's CPU time per entry, us
    (CPU time, as this machine may be shared: the wall time would count waiting for a core)."""
    engine = make_engine(url)
    publisher = Publisher(engine, keys.signer(), keys.trusted_public_keys(), [], lambda e, f: None, "bench")
    started = time.process_time()
    publisher.publish_once()
    elapsed = time.process_time() - started
    size = publisher.chains["bench-1"].size
    engine.dispose()
    return elapsed / size * 1e6


def measure(database: Callable[[], AbstractContextManager[str]], keys: KeyStore, tmp: Path) -> dict[str, object]:
    """Runs without and with the publisher alternate, each on a new database (the machine's load drifts); the
    best of each counts."""
    without, with_, cost = [], [], []
    for _ in range(ROUNDS):
        with database() as url:
            migrate(make_engine(url, must_exist=False))
            without.append(append_rate(url, keys))
            cost.append(publisher_cost(url, keys))
        with database() as url, witness(tmp, keys) as (witness_url, witness_key):
            migrate(make_engine(url, must_exist=False))
            with_.append(append_rate(url, keys, witness_url, witness_key))
    return {"append_per_s_without_publisher": round(max(without)), "append_per_s_with_publisher": round(max(with_)),
            "ratio": round(max(with_) / max(without), 3), "publisher_cpu_us_per_entry": round(min(cost), 2)}


def main() -> None:
    out: dict[str, object] = {"bench": "publish", "entries": N, "publish_seconds": PERIOD,
                              "goals": {"sqlite_append_per_s": 20_000, "postgresql_append_per_s": 10_000}}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        keys = KeyStore(tmp / "keys")
        keys.ensure()

        @contextmanager
        def sqlite() -> Iterator[str]:
            yield f"sqlite:///{tempfile.mkdtemp(dir=tmp)}/bench.db"

        out["sqlite"] = measure(sqlite, keys, tmp)
        try:
            out["postgresql"] = measure(postgres_database, keys, tmp)
        except NoPostgres as exc:
            out["postgresql"] = {"skipped": str(exc)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
