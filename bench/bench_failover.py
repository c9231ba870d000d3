"""Failover of a partition's active bridge under steady load: 20 times SIGKILL of the active (two bridge
processes taking turns, the killed one started again as the standby), cards presented at a simulated
controller all along (20 a second). Prints JSON: the time from each kill to the first door command the new
active sent (p50, p99, max), to the lease taken, the cards lost and doubled in the audit log, and whether
every chain verifies.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_failover.py [failovers]
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from badge_bridge.config import load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.event_kinds import EventKind
from badge_bridge.keys import KeyStore
from bench.throwaway import NoPostgres, postgres_database
from tests.conftest import secured_broker, write_site
from tests.failover_rig import Cards, CommandWatch, Partition, commands_topic, entries, settled, sim, verify
from tests.test_mqtt_bridge import seed
from tests.waiting import wait_until

PARTITION = "bridge-1"
CARD = "12:1003"
"""Alan: granted at the main entrance every time."""


def nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "p99": round(nearest_rank(values, 0.99), 3),
            "max": round(max(values), 3)}


def run(tmp: Path, db_url: str, failovers: int) -> dict[str, object]:
    keys = KeyStore(tmp / "keys")
    keys.ensure()
    broker = secured_broker(tmp)
    broker.start()
    site_file = write_site(tmp, db_url, broker_port=broker.port)
    config = load_config(site_file)
    engine = make_engine(db_url)
    migrate(engine)
    seed(engine, site_file, keys)
    partition = Partition(site_file, PARTITION, tmp)
    lobby = watch = cards = None
    try:
        partition.active("a")
        partition.standby("b")
        lobby = sim(config, broker, "ctl-lobby", keys.sync_key("ctl-lobby"))
        watch = CommandWatch(broker, commands_topic(config, "ctl-lobby"))
        cards = Cards(lobby, "main-in", CARD)
        to_command: list[float] = []
        killed: list[datetime] = []
        for i in range(failovers):
            active = "ab"[i % 2]
            answered = len(cards.answered())
            wait_until(lambda answered=answered: len(cards.answered()) >= answered + 10, 60, "cards answered")
            killed.append(datetime.now(UTC))
            began = time.monotonic()
            partition.bridge(active).kill()
            first = wait_until(lambda at=killed[-1]: watch.first_decided_after(at), 60, "the new active's command")
            to_command.append(first.at - began)
            partition.standby(active)  # started again: the standby of the one that took over
        cards.stop()
        try:
            cards.wait_answered(60)
        except AssertionError:
            pass  # counted and explained below
        counts = settled(engine, [f"ctl-lobby:{r}" for r in cards.requests])
        unanswered = {f"ctl-lobby:{r}" for r in cards.unanswered()}
        why = [(e.kind, json.loads(e.detail).get("reason")) for e in entries(engine, PARTITION)
               if e.event_id in unanswered]
        took = [e for e in entries(engine, PARTITION) if e.kind == EventKind.BRIDGE_TOOK_OVER]
        to_lease = [t.ts_us / 1e6 - k.timestamp() for t, k in zip(took, killed, strict=False)]
        starts = [float(ms) for b in partition.bridges.values()
                  for ms in re.findall(r"started for site .*?\((\d+) ms\)", b.log.read_text())]
        result = verify(site_file)
        return {
            "failovers": failovers,
            "lease": config.failover.model_dump(),
            "kill_to_first_command_s": summary(to_command),
            "kill_to_lease_taken_s": summary(to_lease) if to_lease else None,
            "bridge_start_ms": summary(starts),
            "cards": len(cards.requests),
            "lost": sum(1 for n in counts.values() if n == 0),
            "doubled": sum(1 for n in counts.values() if n > 1),
            "unanswered": len(unanswered),
            "unanswered_entries": why,
            "took_over_entries": len(took),
            "chains_verify": result.returncode == 0,
        }
    finally:
        if cards is not None:
            cards.stop()
        if watch is not None:
            watch.close()
        if lobby is not None:
            lobby.close()
        partition.close()
        broker.stop()
        engine.dispose()


def main() -> None:
    failovers = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with postgres_database() as db_url:
                out = run(Path(tmp), db_url, failovers)
        except NoPostgres as exc:
            out = {"skipped": str(exc)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
