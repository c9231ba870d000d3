"""The bridge over MQTT, as a separate process on its own Mosquitto and a SQLite database (WAL, FULL):

- latency: a credential published by a controller to the grant or deny command it receives, p50 and p99,
  while another controller sends 200 events/s of background load;
- sustained ingest: events/s from MQTT into the audit log, counted once committed, with every id checked.

Prints one JSON object.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from badge_bridge import people  # noqa: E402
from badge_bridge.config import load_config  # noqa: E402
from badge_bridge.controllers.mqtt import no_delay  # noqa: E402
from badge_bridge.db import make_engine, migrate  # noqa: E402
from badge_bridge.keys import KeyStore  # noqa: E402
from badge_bridge.models import AuditEntry  # noqa: E402
from badge_bridge.sim.broker import Broker  # noqa: E402
from badge_bridge.site_sync import sync_site  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "badge-bridge/v1"
LATENCY_N, LATENCY_RATE, BACKGROUND_RATE = 1000, 50, 200
INGEST_N, PUBLISHERS = 20_000, 2


def make_site(tmp: Path, port: int) -> Path:
    text = (ROOT / "site.example.toml").read_text()
    text = text.replace('url = "sqlite:///var/badge-bridge.db"', f'url = "sqlite:///{tmp / "bench.db"}"')
    text = text.replace('dir = "var/keys"', f'dir = "{tmp / "keys"}"')
    text = text.replace("port = 1883", f"port = {port}") + "\n[metrics]\nport = 0\n"
    site = tmp / "site.toml"
    site.write_text(text)
    config = load_config(site)
    keys = KeyStore(config.keys_dir())
    keys.ensure()
    engine = make_engine(config.database_url(), must_exist=False)
    migrate(engine)
    with Session(engine) as session, session.begin():
        sync_site(session, config)
        person, _ = people.add_person(session, "bench", "Ada", levels=["staff"])
        people.add_credential(session, "bench", person.id, "wiegand26", "12:1001", pepper=keys.pin_pepper())
    engine.dispose()
    return site


def client(port: int, name: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    no_delay(c)
    c.loop_start()
    return c


def credential(msg_id: str, reader: str, card: str) -> str:
    return json.dumps({"v": 1, "id": msg_id, "ts": datetime.now(UTC).isoformat(), "type": "credential",
                       "reader": reader, "card": {"format": "wiegand26", "number": card}})


def background(port: int, stop: threading.Event) -> int:
    """Door contact traffic from the hall controller at BACKGROUND_RATE."""
    c = client(port, "bench-background")
    n, started = 0, time.monotonic()
    while not stop.is_set():
        state = "opened" if n % 2 == 0 else "closed"
        c.publish(f"{PREFIX}/controllers/ctl-hall-a/events", json.dumps(
            {"v": 1, "id": f"bg{n}", "ts": datetime.now(UTC).isoformat(), "type": "door", "door": "hall-a",
             "state": state}), qos=1)
        n += 1
        time.sleep(max(0.0, started + n / BACKGROUND_RATE - time.monotonic()))
    c.loop_stop()
    return n


def latency(port: int) -> dict[str, float]:
    c = client(port, "bench-lobby")
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    done = threading.Event()

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        request = json.loads(m.payload)["request"]
        got[request] = time.perf_counter()
        if len(got) == LATENCY_N:
            done.set()

    c.on_message = on_message
    c.subscribe(f"{PREFIX}/controllers/ctl-lobby/commands", qos=1)
    time.sleep(0.5)
    stop = threading.Event()
    bg = threading.Thread(target=background, args=(port, stop))
    bg.start()
    time.sleep(1.0)
    for i in range(LATENCY_N):
        msg_id = f"lat{i}"
        card = "12:1001" if i % 3 else "12:9999"  # grants and denies
        sent[msg_id] = time.perf_counter()
        c.publish(f"{PREFIX}/controllers/ctl-lobby/events", credential(msg_id, "main-in", card), qos=1)
        time.sleep(1 / LATENCY_RATE)
    done.wait(30)
    stop.set()
    bg.join()
    c.loop_stop()
    ms = sorted((got[k] - sent[k]) * 1000 for k in got)
    return {"samples": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 2), "max_ms": round(ms[-1], 2),
            "background_events_per_s": BACKGROUND_RATE}


def publish_share(port: int, worker: int, n: int) -> None:
    c = client(port, f"bench-ingest-{worker}")
    infos = [c.publish(f"{PREFIX}/controllers/ctl-lobby/events",
                       credential(f"in{worker}-{i}", "main-out", "12:1001"), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def ingest(port: int, db_url: str) -> dict[str, float]:
    engine = make_engine(db_url)

    def logged() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.event_id.like("ctl-lobby:in%"))) or 0

    share = INGEST_N // PUBLISHERS
    started = time.perf_counter()
    workers = [mp.Process(target=publish_share, args=(port, w, share)) for w in range(PUBLISHERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    published = time.perf_counter() - started
    while logged() < INGEST_N and time.perf_counter() - started < 300:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        ids = set(conn.scalars(select(AuditEntry.event_id).where(AuditEntry.event_id.like("ctl-lobby:in%"))))
    engine.dispose()
    wanted = {f"ctl-lobby:in{w}-{i}" for w in range(PUBLISHERS) for i in range(share)}
    return {"events": INGEST_N, "publishers": PUBLISHERS, "events_per_s": round(INGEST_N / elapsed),
            "publish_s": round(published, 2), "committed_s": round(elapsed, 2),
            "lost": len(wanted - ids), "doubled": len(ids) - len(wanted & ids)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        broker = Broker(tmp / "mosquitto")
        broker.start()
        site = make_site(tmp, broker.port)
        log = (tmp / "bridge.log").open("wb")
        bridge = subprocess.Popen([sys.executable, "-m", "badge_bridge.cli", "-c", str(site), "run"],
                                  stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while b"started for site" not in (tmp / "bridge.log").read_bytes():
                assert bridge.poll() is None and time.monotonic() < deadline, (tmp / "bridge.log").read_text()
                time.sleep(0.1)
            lat = latency(broker.port)
            ing = ingest(broker.port, load_config(site).database_url())
        finally:
            bridge.terminate()
            bridge.wait(30)
            broker.stop()
    print(json.dumps({"bench": "mqtt", "latency": lat, "ingest": ing,
                      "goals": {"p99_ms": 5, "ingest_events_per_s": 5000},
                      "meets_goals": {"p99": lat["p99_ms"] <= 5,
                                      "ingest": ing["events_per_s"] >= 5000 and ing["lost"] == 0}}))


if __name__ == "__main__":
    main()
