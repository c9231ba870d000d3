"""End-to-end receipts (docs/mqtt.md, "Receipts"), the bridge in this process on SQLite, one simulated
controller on its own Mosquitto:

- ``steady``: cards published as fast as the controller can, the time until every one is committed and until
  every one is receipted back (the controller's outbox empty), as events/s;
- ``broker_kill``: cards at a steady rate, the broker killed with SIGKILL a third of the way and restarted
  empty (no persistence), what the controller published again, how long from the restart until every event
  is receipted, and lost / doubled ids in the log (both must be 0).

Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, func, select

from badge_bridge.bridge import Bridge
from badge_bridge.config import load_config
from badge_bridge.db import make_engine
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from bench.bench_mqtt import make_site


def _decisions(engine: Engine) -> tuple[int, int]:
    """(decision entries, distinct ids among them) of the lobby controller."""
    with engine.connect() as conn:
        row = conn.execute(select(func.count(), func.count(func.distinct(AuditEntry.event_id)))
                           .where(AuditEntry.kind.in_(("access.granted", "access.denied")))).one()
    return int(row[0]), int(row[1])


def _wait(predicate, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the bench did not finish")
        time.sleep(0.01)


def steady(sim: SimController, engine: Engine, n: int) -> dict[str, float]:
    before, republished = _decisions(engine)[0], sim.outbox.republished
    started = time.monotonic()
    for i in range(n):
        sim.present("main-in", "main-entrance", "wiegand26", f"77:{i % 60000}")
    _wait(lambda: _decisions(engine)[0] >= before + n)
    committed = time.monotonic() - started
    sim.wait_receipted(300)
    receipted = time.monotonic() - started
    return {"events": n, "committed_per_s": round(n / committed), "receipted_per_s": round(n / receipted),
            "receipt_lag_ms": round((receipted - committed) * 1000, 1),
            "republished": sim.outbox.republished - republished}


def broker_kill(sim: SimController, broker: Broker, engine: Engine, n: int, rate: float) -> dict[str, float]:
    before = _decisions(engine)[0]
    republished = sim.outbox.republished
    ids: list[str] = []

    def publish() -> None:
        t0 = time.monotonic()
        for i in range(n):
            ids.append(sim.present("main-in", "main-entrance", "wiegand26", f"78:{i % 60000}"))
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    publisher = threading.Thread(target=publish)
    publisher.start()
    _wait(lambda: _decisions(engine)[0] >= before + n // 3)
    broker.kill(keep_persistence=False)
    broker.start()
    restarted = time.monotonic()
    publisher.join()
    sim.wait_receipted(300)
    recovered = time.monotonic() - restarted
    total, distinct = _decisions(engine)
    return {"events": n, "rate_per_s": rate, "republished": sim.outbox.republished - republished,
            "restart_to_all_receipted_s": round(recovered, 2), "lost": before + n - distinct,
            "doubled": total - distinct}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        broker = Broker(tmp / "mosquitto")
        broker.start()
        site = make_site(tmp, broker.port)
        config = load_config(site)
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"reconnect_max_s": 1})})
        engine = make_engine(config.database_url())
        bridge = Bridge(config, engine, KeyStore(config.keys_dir()))
        bridge.start()
        sim = SimController("ctl-lobby", "127.0.0.1", broker.port, sync_key=KeyStore(config.keys_dir()).sync_key(
            "ctl-lobby"), walk_through=False, receipt_timeout_s=2.0)
        try:
            sim.wait_connected()
            result = {"steady": steady(sim, engine, 5_000), "broker_kill": broker_kill(sim, broker, engine, 3_000, 600)}
        finally:
            sim.close()
            bridge.stop()
            broker.stop()
            engine.dispose()
    print(json.dumps({"bench": "receipts", **result, "load_average_1m": os.getloadavg()[0],
                      "meets_goals": {"lost": result["broker_kill"]["lost"] == 0,
                                      "doubled": result["broker_kill"]["doubled"] == 0}}))


if __name__ == "__main__":
    main()
