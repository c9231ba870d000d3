"""The bridge over MQTT, as a separate process on its own Mosquitto and a SQLite database (WAL, FULL):

- latency: a credential published by a controller to the grant or deny command it receives, p50 and p99,
  while another controller sends 200 events/s of background load; on an open broker over plain MQTT
  ("plain"), and on the broker `badge-bridge mqtt broker-config` generates, with every client over TLS on its
  own account under the generated ACL ("tls_acl");
- sustained ingest: events/s from MQTT into the audit log, counted once committed, with every id checked
  (nothing lost, nothing doubled); with publishers running beside the bridge ("live") and with the bridge
  alone draining what the broker queued while it was down ("backlog"); for door passages (card, door
  opened, door closed) and for cards only (every event a decision and a command); on SQLite and, when the
  local server answers, on a throw-away PostgreSQL database (bench/throwaway.py), where the bridge also
  holds its partition's lease and fences every commit with it.

``--ingest`` runs the ingest only (both databases), for a quick before/after comparison. The same ingest
with 1, 2 and 3 partitions side by side: bench/bench_partitions.py.

Prints one JSON object.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.config import load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from badge_bridge.mqtt_client import no_delay
from badge_bridge.sim.broker import Broker, for_site
from badge_bridge.site_sync import sync_site
from bench.throwaway import NoPostgres, postgres_database

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "badge-bridge/v1"
LATENCY_N, LATENCY_RATE, BACKGROUND_RATE = 1000, 50, 200
INGEST_N, PUBLISHERS = 20_000, 2


class Conn(NamedTuple):
    """How the bench's clients reach the broker: plain and anonymous, or over TLS on their own accounts."""

    port: int
    broker: Broker | None = None
    tls_ca: Path | None = None


def make_site(tmp: Path, port: int, tls_ca: Path | None = None, *, db_url: str | None = None,
              edit: Callable[[str], str] = lambda text: text, cards: Sequence[str] = ("12:1001",)) -> Path:
    """The example site on this broker and database (``db_url``, SQLite in ``tmp`` by default), changed by
    ``edit``, with one person per card of ``cards`` holding the ``staff`` level."""
    text = edit((ROOT / "site.example.toml").read_text())
    url = db_url or f"sqlite:///{tmp / 'bench.db'}"
    text = text.replace('url = "sqlite:///var/badge-bridge.db"', f'url = "{url}"')
    text = text.replace('dir = "var/keys"', f'dir = "{tmp / "keys"}"')
    text = text.replace("port = 1883", f"port = {port}") + "\n[metrics]\nport = 0\n"
    if tls_ca is not None:
        text = text.replace('host = "127.0.0.1"', f'host = "127.0.0.1"\ntls = true\nca_file = "{tls_ca}"', 1)
    site = tmp / "site.toml"
    site.write_text(text)
    config = load_config(site)
    keys = KeyStore(config.keys_dir())
    keys.ensure()
    engine = make_engine(config.database_url(), must_exist=False)
    migrate(engine)
    with Session(engine) as session, session.begin():
        sync_site(session, config)
        for i, card in enumerate(cards):
            person, _ = people.add_person(session, "bench", f"Ada {i}", levels=["staff"])
            people.add_credential(session, "bench", person.id, "wiegand26", card, pepper=keys.pin_pepper())
    engine.dispose()
    return site


def client(conn: Conn | int, name: str, account: str | None = None) -> mqtt.Client:
    conn = conn if isinstance(conn, Conn) else Conn(conn)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    if conn.broker is not None and account is not None:
        c.username_pw_set(*conn.broker.login(account))
    if conn.tls_ca is not None:
        c.tls_set(ca_certs=str(conn.tls_ca), cert_reqs=ssl.CERT_REQUIRED)
    c.connect("127.0.0.1", conn.port)
    no_delay(c)
    c.loop_start()
    return c


def credential(msg_id: str, reader: str, card: str) -> str:
    return json.dumps({"v": 1, "id": msg_id, "ts": datetime.now(UTC).isoformat(), "type": "credential",
                       "reader": reader, "card": {"format": "wiegand26", "number": card}})


def background(conn: Conn, stop: threading.Event) -> int:
    """Door contact traffic from the hall controller at BACKGROUND_RATE."""
    c = client(conn, "bench-background", "ctl-hall-a")
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


def latency(conn: Conn) -> dict[str, float]:
    c = client(conn, "bench-lobby", "ctl-lobby")
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
    bg = threading.Thread(target=background, args=(conn, stop))
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


def door(msg_id: str, state: str, door_key: str = "main-entrance") -> str:
    return json.dumps({"v": 1, "id": msg_id, "ts": datetime.now(UTC).isoformat(), "type": "door",
                       "door": door_key, "state": state})


class Gate(NamedTuple):
    """Where a stream goes: the controller, its door, its entry and exit readers, the card presented."""

    controller: str = "ctl-lobby"
    door: str = "main-entrance"
    reader_in: str = "main-in"
    reader_out: str = "main-out"
    card: str = "12:1001"


LOBBY = Gate()

def stream(prefix: str, worker: int, n: int, mix: str, gate: Gate = LOBBY) -> list[str]:
    """``credentials``: every event a card to decide and answer (the worst case). ``passages``: what a door
    really sends, a card then the door opening and closing, so one event in three needs a decision."""
    if mix == "credentials":
        return [credential(f"{prefix}{worker}-{i}", gate.reader_out, gate.card) for i in range(n)]
    states = ("opened", "closed")
    return [credential(f"{prefix}{worker}-{i}", gate.reader_in, gate.card) if i % 3 == 0
            else door(f"{prefix}{worker}-{i}", states[i % 3 - 1], gate.door) for i in range(n)]


def publish_share(port: int, worker: int, n: int, prefix: str, mix: str, gate: Gate = LOBBY) -> None:
    c = client(port, f"bench-ingest-{gate.controller}-{worker}")
    infos = [c.publish(f"{PREFIX}/controllers/{gate.controller}/events", payload, qos=1)
             for payload in stream(prefix, worker, n, mix, gate)]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def _count(engine: Engine, prefix: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(AuditEntry)
                           .where(AuditEntry.event_id.like(f"ctl-lobby:{prefix}%"))) or 0


def _lost_doubled(engine: Engine, prefix: str) -> tuple[int, int]:
    with engine.connect() as conn:
        ids = list(conn.scalars(select(AuditEntry.event_id).where(AuditEntry.event_id.like(f"ctl-lobby:{prefix}%"))))
    share = INGEST_N // PUBLISHERS
    wanted = {f"ctl-lobby:{prefix}{w}-{i}" for w in range(PUBLISHERS) for i in range(share)}
    return len(wanted - set(ids)), len(ids) - len(set(ids) & wanted)


def publish_all(port: int, prefix: str, mix: str) -> float:
    share = INGEST_N // PUBLISHERS
    started = time.perf_counter()
    workers = [mp.Process(target=publish_share, args=(port, w, share, prefix, mix)) for w in range(PUBLISHERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - started


def wait_committed(engine: Engine, prefix: str, started: float) -> float:
    while _count(engine, prefix) < INGEST_N and time.perf_counter() - started < 300:
        time.sleep(0.05)
    return time.perf_counter() - started


def ingest_live(port: int, engine: Engine, mix: str) -> dict[str, float]:
    """Publishers and bridge at once, on the same two cores as the broker."""
    prefix = f"live-{mix}-"
    started = time.perf_counter()
    published = publish_all(port, prefix, mix)
    elapsed = wait_committed(engine, prefix, started)
    lost, doubled = _lost_doubled(engine, prefix)
    return {"events": INGEST_N, "publishers": PUBLISHERS, "events_per_s": round(INGEST_N / elapsed),
            "publish_s": round(published, 2), "committed_s": round(elapsed, 2), "lost": lost, "doubled": doubled}


def ingest_backlog(port: int, engine: Engine, bridge: BridgeRun, mix: str) -> dict[str, float]:
    """The bridge alone working off a backlog the broker queued for its session while it was down (what
    happens after an outage): its own ingest capacity, without publishers competing for the cores."""
    prefix = f"backlog-{mix}-"
    bridge.stop()
    publish_all(port, prefix, mix)
    started = time.perf_counter()
    bridge.start()
    elapsed = wait_committed(engine, prefix, started)
    lost, doubled = _lost_doubled(engine, prefix)
    return {"events": INGEST_N, "events_per_s": round(INGEST_N / elapsed), "drained_s": round(elapsed, 2),
            "lost": lost, "doubled": doubled, "includes_bridge_start_s": round(bridge.start_s, 2)}


class BridgeRun:
    """``badge-bridge run`` as its own process (``args``: e.g. ``--partition``), started and stopped (SIGTERM)."""

    def __init__(self, site: Path, log: Path, args: Sequence[str] = ()) -> None:
        self.site, self.log, self.args = site, log, list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0
        self._launched, self._offset = 0.0, 0

    def start(self) -> None:
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        self._launched = time.perf_counter()
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "badge_bridge.cli", "-c", str(self.site), "run",
                                          *self.args], stdout=out, stderr=out)

    def wait_started(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while b"started for site" not in self.log.read_bytes()[self._offset:]:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.02)
        self.start_s = time.perf_counter() - self._launched

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)


def latency_tls_acl(tmp: Path) -> dict[str, float]:
    """The latency on the generated broker: the bridge and both controllers over TLS, each on its account."""
    config = load_config(ROOT / "site.example.toml")
    config = config.model_copy(update={"keys": config.keys.model_copy(update={"dir": str(tmp / "keys")})})
    broker = for_site(tmp / "mosquitto", config)
    broker.start()
    assert broker.tls_port is not None and broker.tls is not None
    ca = broker.tls.ca
    bridge = BridgeRun(make_site(tmp, broker.tls_port, tls_ca=ca), tmp / "bridge.log")
    try:
        bridge.start()
        return latency(Conn(broker.tls_port, broker, ca))
    finally:
        bridge.stop()
        broker.stop()


def latency_plain(tmp: Path) -> dict[str, float]:
    broker = Broker(tmp / "mosquitto")
    broker.start()
    bridge = BridgeRun(make_site(tmp, broker.port), tmp / "bridge.log")
    try:
        bridge.start()
        return latency(Conn(broker.port))
    finally:
        bridge.stop()
        broker.stop()


def latencies() -> None:
    """``--latency``: both latencies only, one after the other (no ingest runs), for a quick comparison."""
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "plain").mkdir()
        (tmp / "secured").mkdir()
        plain, secured = latency_plain(tmp / "plain"), latency_tls_acl(tmp / "secured")
    print(json.dumps({"bench": "mqtt-latency", "latency": plain, "latency_tls_acl": secured,
                      "goals": {"p99_ms": 5},
                      "meets_goals": {"p99": plain["p99_ms"] <= 5, "p99_tls_acl": secured["p99_ms"] <= 5}}))


def ingest_runs(port: int, engine: Engine, bridge: BridgeRun) -> dict[str, dict[str, float]]:
    """Live and backlog, passages and cards only, on a running bridge."""
    return {f"{how}_{mix}": run(mix) for mix in ("passages", "credentials")
            for how, run in (("live", lambda m: ingest_live(port, engine, m)),
                             ("backlog", lambda m: ingest_backlog(port, engine, bridge, m)))}


def ingest_postgres(tmp: Path) -> dict[str, object]:
    """The ingest on a throw-away PostgreSQL database, the bridge holding its partition's lease."""
    tmp.mkdir()
    try:
        with postgres_database() as url:
            broker = Broker(tmp / "mosquitto")
            broker.start()
            site = make_site(tmp, broker.port, db_url=url)
            engine = make_engine(url)
            bridge = BridgeRun(site, tmp / "bridge.log")
            try:
                bridge.start()
                return dict(ingest_runs(broker.port, engine, bridge))
            finally:
                bridge.stop()
                broker.stop()
                engine.dispose()
    except NoPostgres as exc:
        return {"skipped": str(exc)}


def meets(ingest: dict[str, object]) -> dict[str, bool]:
    return {k: v["events_per_s"] >= 5000 and v["lost"] == 0 for k, v in ingest.items() if isinstance(v, dict)}


def main() -> None:
    if "--latency" in sys.argv[1:]:
        latencies()
        return
    only_ingest = "--ingest" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        broker = Broker(tmp / "mosquitto")
        broker.start()
        site = make_site(tmp, broker.port)
        engine = make_engine(load_config(site).database_url())
        bridge = BridgeRun(site, tmp / "bridge.log")
        try:
            bridge.start()
            lat = None if only_ingest else latency(Conn(broker.port))
            ingest = ingest_runs(broker.port, engine, bridge)
        finally:
            bridge.stop()
            broker.stop()
            engine.dispose()
        ingest_pg = ingest_postgres(tmp / "postgresql")
        if only_ingest:
            print(json.dumps({"bench": "mqtt-ingest", "ingest": ingest, "ingest_postgresql": ingest_pg,
                              "goals": {"ingest_events_per_s": 5000},
                              "meets_goals": {**meets(ingest), **{f"postgresql_{k}": v for k, v in meets(ingest_pg).items()}}}))
            return
        (tmp / "secured").mkdir()
        secured = latency_tls_acl(tmp / "secured")
    assert lat is not None
    print(json.dumps({"bench": "mqtt", "latency": lat, "latency_tls_acl": secured, "ingest": ingest,
                      "ingest_postgresql": ingest_pg, "goals": {"p99_ms": 5, "ingest_events_per_s": 5000},
                      "meets_goals": {"p99": lat["p99_ms"] <= 5, "p99_tls_acl": secured["p99_ms"] <= 5, **meets(ingest),
                                      **{f"postgresql_{k}": v for k, v in meets(ingest_pg).items()}}}))


if __name__ == "__main__":
    main()
