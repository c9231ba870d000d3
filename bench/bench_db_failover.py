"""A PostgreSQL failover under a bridge taking cards (the scenario of tests/test_db_failover.py, run a few times):
a primary and a synchronous standby of the bench's own, the primary killed with SIGKILL, the standby promoted
once the bridge has answered cards for longer than a lease without the database.

Per round and as medians: time from the kill to the first commit on the promoted server (and from the
promotion, which is what the bridge itself adds), cards presented and answered by the bridge meanwhile, audit
events queued at the promotion, entries acknowledged before the kill, entries lost and doubled (0 and 0).

Prints one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _pytest.outcomes import Failed, Skipped

from badge_bridge.keys import KeyStore
from tests.conftest import require_mosquitto, secured_broker
from tests.pg_cluster import PgPair
from tests.test_db_failover import DB, run_failover

ROUNDS = 3


def one_round() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bb-bench-dbfail-") as tmp:
        path = Path(tmp)
        keys = KeyStore(path / "keys")
        keys.ensure()
        broker = secured_broker(path)
        broker.start()
        try:
            with PgPair() as pair:
                pair.primary.sql(f"CREATE DATABASE {DB}")
                return dataclasses.asdict(run_failover(path, pair, broker, keys))
        finally:
            broker.stop()


def main() -> None:
    try:
        require_mosquitto()
        rounds = [one_round() for _ in range(ROUNDS)]
    except (Skipped, Failed) as exc:  # no PostgreSQL binaries or no mosquitto here
        print(json.dumps({"bench": "db_failover", "skipped": str(exc)}))
        return
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(json.dumps({"bench": "db_failover", "rounds": rounds, "median": medians,
                      "entries_lost_total": sum(r["entries_lost"] for r in rounds),
                      "entries_doubled_total": sum(r["entries_doubled"] for r in rounds)}, indent=1))


if __name__ == "__main__":
    main()
