"""Shared site state on PostgreSQL (badge_bridge/failover/shared_state.py), with two partitions running in
this process on one Mosquitto and one throw-away PostgreSQL database:

- decision latency: a credential published by a simulated controller to the grant or deny command it
  receives, p50 and p99, cards alternating between the two partitions' doors into and out of the lobby
  (hard anti-passback), so every grant changes a position the other partition must learn; and before
  that, with only one partition running and cards at its doors alone (the same machine, for comparison);
- notification lag: a position committed as partition bridge-1 writes it (``persist.effect`` in a
  transaction, its ``pg_notify`` included) to the moment partition halls has it in memory, p50 and p99
  (measured from just before the commit: the commit's own time is included).

Prints one JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.bridge import Bridge
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.db import make_engine, migrate
from badge_bridge.ingest import persist
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_client import no_delay
from badge_bridge.sim.broker import for_site
from badge_bridge.sim.controller import SimController
from badge_bridge.site_sync import sync_site
from bench.throwaway import NoPostgres, postgres_database

ROOT = Path(__file__).resolve().parents[1]
PEOPLE, DECISIONS, LAGS = 50, 1000, 500
SPLIT = (
    ('key = "ctl-hall-a"', 'key = "ctl-hall-a"\npartition = "halls"'),
    ('name = "Lobby"', 'name = "Lobby"\nanti_passback = "hard"'),
    ('factors = ["card", "pin"]', 'factors = ["card"]'),
    ("[mqtt]", '[mqtt]\nusername = "bridge-1"'),
)


def make_site(tmp: Path, db_url: str, port: int | None) -> SiteConfig:
    text = (ROOT / "site.example.toml").read_text()
    text = text.replace('url = "sqlite:///var/badge-bridge.db"', f'url = "{db_url}"')
    text = text.replace('dir = "var/keys"', f'dir = "{tmp / "keys"}"')
    if port is not None:
        text = text.replace("port = 1883", f"port = {port}") + "\n[metrics]\nport = 0\n"
    for old, new in SPLIT:
        text = text.replace(old, new, 1)
    (tmp / "site.toml").write_text(text)
    return load_config(tmp / "site.toml")


def stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"n": len(ms), "p50_ms": round(ms[len(ms) // 2], 3), "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
            "max_ms": round(ms[-1], 3)}


def decisions(config: SiteConfig, keys: KeyStore, port: int, controllers: tuple[str, ...]) -> list[float]:
    """``DECISIONS`` cards at the doors of ``controllers`` (all steps at one controller: one partition)."""
    sims = {}
    for key in controllers:
        readers = {r.key: r.door for r in config.readers if r.controller == key}
        sims[key] = SimController(key, "127.0.0.1", port, sync_key=keys.sync_key(key), readers=readers,
                                  walk_through=False, username=key, password=keys.mqtt_password(key) or "")
        sims[key].go_online()
        sims[key].wait_connected()
        no_delay(sims[key].client)  # as a controller's firmware should: paho leaves Nagle on
    # into the lobby at bridge-1's door, then into it again at halls's (denied), out at bridge-1's door ...
    steps = [(ctl, reader) for ctl, reader in [
        ("ctl-lobby", "main-in"), ("ctl-hall-a", "hall-a-out"), ("ctl-hall-a", "hall-a-in"), ("ctl-hall-a", "hall-a-out"),
        ("ctl-lobby", "main-out"), ("ctl-lobby", "main-in")] if ctl in controllers]
    took: list[float] = []
    for i in range(DECISIONS):
        controller, reader = steps[(i // PEOPLE) % len(steps)]
        sim = sims[controller]
        card = f"12:{2000 + i % PEOPLE}"
        began = time.perf_counter()
        eid = sim.present(reader, None, "wiegand26", card)
        sim.wait_for_command(lambda cmd, eid=eid: isinstance(cmd, (c.Grant, c.Deny)) and cmd.request == eid)
        took.append(time.perf_counter() - began)
    for sim in sims.values():
        sim.close()
    return took


def lags(engine_url: str, halls: Bridge) -> list[float]:
    engine = make_engine(engine_url)
    arrived: dict[str, float] = {}
    done = threading.Condition()

    def seen(keys: list[str]) -> None:
        now = time.perf_counter()
        with done:
            for key in keys:
                arrived.setdefault(key, now)
            done.notify_all()

    assert halls.shared_state is not None
    halls.shared_state.on_applied = seen
    took: list[float] = []
    for i in range(LAGS):
        key = f"position/{900_000 + i}"
        write = persist.effect("bridge-1", [(key, '"lobby"')], f"bench:{i}", datetime.now(UTC))
        with engine.connect() as conn:
            write(conn)
            began = time.perf_counter()
            conn.commit()
        with done:
            done.wait_for(lambda key=key: key in arrived, 10)
        took.append(arrived[key] - began)
    engine.dispose()
    return took


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        with postgres_database() as url, tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            base = make_site(tmp, url, None)
            keys = KeyStore(base.keys_dir())
            keys.ensure()
            broker = for_site(tmp / "mosquitto", base)
            broker.start()
            try:
                config = make_site(tmp, url, broker.port)
                engine = make_engine(url)
                migrate(engine)
                with Session(engine) as session, session.begin():
                    sync_site(session, config)
                    for n in range(PEOPLE):
                        person, _ = people.add_person(session, "bench", f"P{n}", levels=["staff", "hall-a-engineers"])
                        people.add_credential(session, "bench", person.id, "wiegand26", f"12:{2000 + n}",
                                              pepper=keys.pin_pepper())
                bridges = {p: Bridge(config.partition_view(p), engine, keys) for p in ("bridge-1", "halls")}
                bridges["bridge-1"].start()
                try:
                    alone = decisions(config, keys, broker.port, ("ctl-lobby",))
                    bridges["halls"].start()
                    latency = decisions(config, keys, broker.port, ("ctl-lobby", "ctl-hall-a"))
                    lag = lags(url, bridges["halls"])
                finally:
                    for bridge in bridges.values():
                        bridge.stop()
                    engine.dispose()
            finally:
                broker.stop()
    except NoPostgres as exc:
        print(json.dumps({"bench": "shared_state", "skipped": str(exc)}))
        return
    decision = stats(latency)
    print(json.dumps({"bench": "shared_state", "partitions": 2, "database": "postgresql",
                      "decision_latency": decision, "decision_latency_one_partition_running": stats(alone),
                      "notification_lag": stats(lag),
                      "goals": {"decision_p99_ms": 5}, "meets_goals": {"decision_p99": decision["p99_ms"] <= 5}}))


if __name__ == "__main__":
    main()
