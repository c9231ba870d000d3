"""The security-desk console under load, on SQLite (WAL) and PostgreSQL.

- search: the event log (``/events``) with a million audit entries in the database (about 1000 doors in
  50 areas, 5000 people, 30 days, access / door / alarm events and a few rare kinds), through the Flask test
  client logged in as a guard: the first page, by door, by area, by kind prefix, by exact kind, by person,
  by time range, a combined filter and pages 2..21 followed through the ``Older`` link; p50 / p99 / max per
  query type and overall (the time ``client.get`` takes: routing, login check, query, template), with the
  share of CPython's full garbage collections in it (``full_gc``) and the query plans of each shape.
  The entries are loaded straight into ``audit_entry`` (COPY on PostgreSQL, executemany on SQLite, the
  secondary indexes built after the load), not through the AuditWriter: their hash chain is not valid, which
  the search does not look at.
- live: a controller's door event (published on MQTT) to the moment each of 50 logged-in browsers reading
  ``/stream`` receives it, through the real chain: Mosquitto, the bridge (``badge-bridge run``, SQLite WAL
  FULL, a commit per batch), the console as web.serve runs it (gunicorn, own process; the login rate limit
  off so 50 sessions can log in from one address), 50 SSE clients over HTTP (threads in this process), a
  controller publishing an exit-request / door-opened / door-closed event every 50 ms for 20 s. The path is
  also split where the bridge publishes the committed batch (an MQTT subscriber on ``bridge/events``).
  There is no stated goal for it; every client must see every event.

PostgreSQL is a throw-away database on the local server (skipped, and said so, when none answers).
Prints one JSON object.
"""

from __future__ import annotations

import gc
import html
import http.client
import json
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import Session
from throwaway import NoPostgres, postgres_database

from badge_bridge import people
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "badge-bridge/v1"
PASSWORD = "bench-console-password"

EVENTS_N = int(os.environ.get("BENCH_CONSOLE_EVENTS", "1000000"))
DOORS, AREAS, PEOPLE, DAYS = 1000, 50, 5000, 30
T_END = datetime(2026, 11, 1, tzinfo=UTC)
PER_TYPE = 100        # requests per query type
CHAINS, DEPTH = 10, 20  # `Older` chains followed, pages down each
SEARCH_P99_MS = 50

SSE_CLIENTS = 50
LIVE_S, LIVE_INTERVAL_S = 20.0, 0.05

# kind, weight (per mille), has a door, has a person
KINDS: list[tuple[str, float, bool, bool]] = [
    ("access.granted", 360, True, True),
    ("access.denied", 40, True, True),
    ("door.opened", 270, True, False),
    ("door.closed", 270, True, False),
    ("door.exit_request", 40, True, False),
    ("door.forced", 2, True, False),
    ("alarm.raised", 8, True, False),
    ("alarm.cleared", 8, True, False),
    ("controller.offline", 0.5, False, False),
    ("controller.online", 0.5, False, False),
    ("reader.tamper", 0.2, False, False),
    ("console.login", 0.8, False, False),
]
HOUR_WEIGHT = [1, 1, 1, 1, 1, 2, 4, 8, 10, 9, 8, 8, 9, 8, 8, 8, 9, 10, 7, 4, 3, 2, 1, 1]
COLUMNS = ("chain_id", "seq", "event_id", "ts_us", "received_us", "source", "door", "kind", "subject", "detail",
           "prev_hash", "hash", "person_id")


def door_key(i: int) -> str:
    return f"door-{i:04d}"


def area_key(i: int) -> str:
    return f"area-{i:02d}"


def door_areas(i: int) -> tuple[str, str]:
    """(out, in): door i leads from area i%50 into area (i*7+1)%50, so an area has about 40 doors."""
    return area_key(i % AREAS), area_key((i * 7 + 1) % AREAS)


def write_search_site(tmp: Path, url: str) -> Path:
    lines = ['[site]\nname = "bench console"\ninstance = "bridge-1"\n', f'[database]\nurl = "{url}"\n',
             f'[keys]\ndir = "{tmp / "keys"}"\n', "[metrics]\nport = 0\n"]
    lines += [f'[[areas]]\nkey = "{area_key(a)}"\n' for a in range(AREAS)]
    for d in range(DOORS):
        out, into = door_areas(d)
        lines.append(f'[[doors]]\nkey = "{door_key(d)}"\nname = "Door {d}"\narea_out = "{out}"\narea_in = "{into}"\n')
    site = tmp / f"site-{uuid.uuid4().hex[:6]}.toml"
    site.write_text("\n".join(lines))
    return site


# --- a million entries -----------------------------------------------------------------------------


def generate(n: int, seed: int = 7) -> Iterator[list[tuple[Any, ...]]]:
    """Batches of audit_entry rows (COLUMNS order), oldest first, ids in receipt order; the same for a seed."""
    rng = random.Random(seed)
    end_us = int(T_END.timestamp() * 1_000_000)
    start_us = end_us - DAYS * 86_400 * 1_000_000
    hours = list(range(DAYS * 24))
    weights = [HOUR_WEIGHT[h % 24] * (0.4 if (h // 24) % 7 in (5, 6) else 1.0) for h in hours]
    picked = rng.choices(hours, weights, k=n)
    received = sorted(start_us + h * 3_600_000_000 + rng.randrange(3_600_000_000) for h in picked)
    kinds = rng.choices(KINDS, [k[1] for k in KINDS], k=n)
    door_weights = [1 / (1 + d) ** 0.4 for d in range(DOORS)]  # some doors far busier than others
    doors = rng.choices(range(DOORS), door_weights, k=n)
    head = "0" * 64
    batch: list[tuple[Any, ...]] = []
    for i in range(n):
        kind, _, has_door, has_person = kinds[i]
        rec = received[i]
        ts = rec - rng.randrange(5_000_000)  # device time a little before receipt: ids not quite in ts order
        d = doors[i]
        door = door_key(d) if has_door else None
        source = "console" if kind.startswith("console.") else f"ctl-{d // 4:03d}"
        person = None
        if has_person and (kind == "access.granted" or rng.random() < 0.7):
            person = rng.randrange(1, PEOPLE + 1)
            subject = f'{{"credential":{person + 10_000},"person":{person}}}'
        elif kind.startswith("access."):
            subject = f'{{"card":"26:{rng.randrange(100_000)}","format":"wiegand26"}}'
        elif kind == "console.login":
            subject = '{"user":"guard"}'
        else:
            subject = "{}"
        if kind.startswith("access."):
            reason = "granted" if kind == "access.granted" else rng.choice(("unknown_card", "schedule", "no_access"))
            detail = f'{{"actuated":true,"direction":"in","factors":["card"],"reader":"{door}-in","reason":"{reason}"}}'
        elif kind.startswith("alarm."):
            detail = '{"alarm":"door.held_open"}'
        else:
            detail = "{}"
        new_head = f"{rng.getrandbits(256):064x}"
        batch.append(("bridge-1", i + 1, f"{source}:b{i}", ts, rec, source, door, kind, subject, detail, head,
                      new_head, person))
        head = new_head
        if len(batch) == 100_000:
            yield batch
            batch = []
    if batch:
        yield batch


def load_sqlite(path: Path, n: int) -> float:
    started = time.perf_counter()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = OFF")  # the load only; the console reads with the bridge's settings
    con.execute("PRAGMA cache_size = -1000000")
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_entry' "
                          "AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        con.execute(f'DROP INDEX "{name}"')
    sql = f"INSERT INTO audit_entry ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    for batch in generate(n):
        con.execute("BEGIN")
        con.executemany(sql, batch)
        con.execute("COMMIT")
    for _, create in indexes:
        con.execute(create)
    con.execute("ANALYZE")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - started


def load_postgres(url: str, n: int) -> float:
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        indexes = con.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'audit_entry' AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)").fetchall()
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        with con.transaction(), con.cursor() as cur, \
                cur.copy(f"COPY audit_entry ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for batch in generate(n):
                for row in batch:
                    copy.write_row(row)
        for _, create in indexes:
            con.execute(create)
        con.execute("VACUUM ANALYZE audit_entry")  # what autovacuum would have done by now
    return time.perf_counter() - started


# --- the event log through the test client ------------------------------------------------------------


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def add_guard(engine: Any, username: str = "guard") -> None:
    with Session(engine) as session, session.begin():
        people.add_user(session, "bench", username, "guard", PASSWORD)


def ms_stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(ms[max(0, int(len(ms) * 0.99 + 0.5) - 1)], 2), "max_ms": round(ms[-1], 2)}


def day(offset_h: float) -> str:
    return (T_END - timedelta(hours=offset_h)).strftime("%Y-%m-%dT%H:%M")


def request_mix(rng: random.Random) -> list[tuple[str, str]]:
    def q(**kw: object) -> str:
        return "/events" + ("?" + urlencode(kw) if kw else "")

    mix: list[tuple[str, str]] = []
    exact = ["access.denied", "door.forced", "alarm.raised", "door.exit_request", "access.granted", "console.login"]
    for _ in range(PER_TYPE):
        since_h = rng.uniform(1, DAYS * 24)
        mix += [
            ("first_page", q()),
            ("door", q(door=door_key(rng.randrange(DOORS)))),
            ("area", q(area=area_key(rng.randrange(AREAS)))),
            ("kind_prefix", q(kind="access.")),
            ("kind_exact", q(kind=rng.choice(exact))),
            ("person", q(person=rng.randrange(1, PEOPLE + 1))),
            ("time_range", q(since=day(since_h), until=day(since_h - rng.uniform(0.5, 72))))]
        if rng.random() < 0.5:
            mix.append(("combined", q(area=area_key(rng.randrange(AREAS)), kind="access.denied",
                                      since=day(since_h + 168), until=day(since_h))))
        else:
            mix.append(("combined", q(door=door_key(rng.randrange(DOORS)), kind="access.",
                                      since=day(since_h + 72))))
        # rare families, and one absent from the log (input.rejected never happened)
        mix.append(("kind_prefix_rare", q(kind=rng.choice(["controller.", "reader.", "console.", "alarm.", "input."]))))
    rng.shuffle(mix)
    return mix


def chains(rng: random.Random) -> list[dict[str, str]]:
    starts = [{}, {"kind": "access."}, {"area": area_key(3)}, {"person": str(rng.randrange(1, PEOPLE + 1))},
              {"since": day(24 * 20), "until": day(24 * 10)}]
    starts += [{"door": door_key(d)} for d in (0, 1, 5, 17, 42)]
    return starts[:CHAINS]


def search_bench(url: str, tmp: Path, keys: KeyStore, loader: str) -> dict[str, Any]:
    from web import create_app, current_services
    from web.serve import freeze_startup_objects

    site = write_search_site(tmp, url)
    config: SiteConfig = load_config(site)
    engine = make_engine(url, must_exist=False)
    migrate(engine)
    if loader == "sqlite":
        load_s = load_sqlite(Path(engine.url.database), EVENTS_N)  # type: ignore[arg-type]
    else:
        load_s = load_postgres(engine.url.render_as_string(hide_password=False), EVENTS_N)
    add_guard(engine)
    app = create_app(config, engine, keys, mqtt_link=False)
    freeze_startup_objects()  # as web.serve does in the console's worker
    try:
        client = app.test_client()
        page = client.get("/login").get_data(as_text=True)
        r = client.post("/login", data={"csrf_token": csrf_of(page), "username": "guard", "password": PASSWORD})
        assert r.status_code == 302, r.get_data(as_text=True)[:500]
        rng = random.Random(11)
        for _ in range(20):  # warm the code paths (templates compiled, connections pooled)
            client.get("/events")
        gc.collect()
        full_gc = GcWatch()
        times: dict[str, list[tuple[float, bool]]] = {}

        def timed(kind: str, path: str) -> str:
            before = full_gc.count
            started = time.perf_counter()
            r = client.get(path)
            elapsed = time.perf_counter() - started
            assert r.status_code == 200, (path, r.status_code)
            times.setdefault(kind, []).append((elapsed, full_gc.count != before))
            return r.get_data(as_text=True)

        with full_gc:
            for kind, path in request_mix(rng):
                timed(kind, path)
            for args in chains(rng):
                body = client.get("/events" + ("?" + urlencode(args) if args else "")).get_data(as_text=True)
                for _ in range(DEPTH):
                    link = re.search(r'<a href="([^"]+)">Older', body)
                    if not link:
                        break
                    body = timed("deep_pages", html.unescape(link.group(1)))
        plans = explain(engine, config)
    finally:
        current_services(app).stop()
    engine.dispose()
    overall = [t for ts in times.values() for t, _ in ts]
    return {"entries": EVENTS_N, "load_s": round(load_s, 1),
            "by_query": {k: ms_stats([t for t, _ in v]) for k, v in sorted(times.items())},
            "overall": ms_stats(overall),
            "full_gc": {  # CPython's generation-2 collections during the requests, and the requests without one
                "tracked_objects": len(gc.get_objects()), "collections": len(full_gc.pauses),
                "pause": ms_stats(full_gc.pauses) if full_gc.pauses else None,
                "requests_with_one": sum(1 for ts in times.values() for _, g in ts if g),
                "overall_without_them": ms_stats([t for ts in times.values() for t, g in ts if not g])},
            "plans": plans}


class GcWatch:
    """Counts CPython's full (generation 2) collections and their pauses while active."""

    def __init__(self) -> None:
        self.count, self.pauses, self._started = 0, [], 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.pauses.append(time.perf_counter() - self._started)

    def __enter__(self) -> Self:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self)


def explain(engine: Any, config: SiteConfig) -> dict[str, str]:
    """The plan of each query shape, compiled from web.events.search_query itself."""
    from web.events import log_kinds, search_query
    from web.live import areas_of

    areas = areas_of(config)
    with Session(engine) as session:
        kinds = log_kinds(session)
    cases = {"first_page": {}, "door": {"door": door_key(7)}, "area": {"area": area_key(3)},
             "kind_prefix": {"kind": "access."}, "kind_prefix_rare": {"kind": "controller."},
             "kind_exact": {"kind": "alarm.raised"}, "person": {"person": "42"},
             "time_range": {"since": day(100), "until": day(90)},
             "combined": {"area": area_key(3), "kind": "access.denied", "since": day(300), "until": day(100)},
             "deep_page": {"before": "1792000000000000:500000"},
             "door_deep_page": {"door": door_key(7), "before": "1792000000000000:500000"}}
    out = {}
    with engine.connect() as conn:
        for name, args in cases.items():
            stmt = search_query(args, areas, kinds if args.get("kind", "").endswith(".") else None)
            compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
                out[name] = "; ".join(r[-1] for r in rows)
            else:
                rows = conn.exec_driver_sql(f"EXPLAIN {compiled}").all()
                out[name] = "; ".join(re.sub(r"^->\s*|\s*\(cost=.*$", "", r[0].strip()) for r in rows if "(cost=" in r[0])
    return out


# --- the live feed --------------------------------------------------------------------------------------


def make_live_site(tmp: Path, broker_port: int, console_port: int) -> Path:
    from badge_bridge.site_sync import sync_site

    text_ = (ROOT / "site.example.toml").read_text()
    text_ = text_.replace('url = "sqlite:///var/badge-bridge.db"', f'url = "sqlite:///{tmp / "live.db"}"')
    text_ = text_.replace('dir = "var/keys"', f'dir = "{tmp / "keys"}"')
    text_ = text_.replace("port = 1883", f"port = {broker_port}")
    text_ += f"\n[metrics]\nport = 0\n\n[console]\nport = {console_port}\n"
    site = tmp / "live.toml"
    site.write_text(text_)
    config = load_config(site)
    KeyStore(config.keys_dir()).ensure()
    engine = make_engine(config.database_url(), must_exist=False)
    migrate(engine)
    with Session(engine) as session, session.begin():
        sync_site(session, config)
    add_guard(engine)
    engine.dispose()
    return site


def serve_console(site: Path) -> None:
    """In a child process: the console as production serves it (web.serve: gunicorn, gthread, the app built
    in the worker), with the login rate limit off so 50 browsers can log in from one address."""
    from web import create_app
    from web.serve import ConsoleServer

    config = load_config(site)

    def factory():  # type: ignore[no-untyped-def]
        engine = make_engine(config.database_url())
        return create_app(config, engine, KeyStore(config.keys_dir()), overrides={"RATELIMIT_ENABLED": False})

    ConsoleServer(factory, config).run()


class SseClient(threading.Thread):
    def __init__(self, port: int, n: int, wanted: str) -> None:
        super().__init__(name=f"sse-{n}", daemon=True)
        self.port, self.wanted = port, wanted
        self.arrived: dict[str, float] = {}
        self.ready = threading.Event()
        self.error: str | None = None
        self.cookie = ""
        self.conn: http.client.HTTPConnection | None = None
        self.closing = False

    def _request(self, method: str, path: str, body: str | None = None) -> http.client.HTTPResponse:
        conn = self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Cookie": self.cookie, "User-Agent": "bench-sse"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        for key, value in r.getheaders():
            if key.lower() == "set-cookie" and value.startswith("bb_session="):
                self.cookie = value.split(";", 1)[0]
        return r

    def login(self) -> None:
        page = self._request("GET", "/login").read().decode()
        r = self._request("POST", "/login", urlencode({"csrf_token": csrf_of(page), "username": "guard",
                                                       "password": PASSWORD}))
        r.read()
        assert r.status == 302, r.status

    def close(self) -> None:
        if self.conn is not None and self.conn.sock is not None:
            try:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self) -> None:
        try:
            self.login()
            r = self._request("GET", "/stream")
            assert r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream"), r.status
            pattern = re.compile(rf'"id":"{re.escape(self.wanted)}([^"]+)"'.encode())
            kind = b""
            while True:
                line = r.readline()
                now = time.perf_counter()
                if not line:
                    return
                if line.startswith(b"retry:"):
                    self.ready.set()
                elif line.startswith(b"event:"):
                    kind = line[6:].strip()
                elif line.startswith(b"data:") and kind == b"events":
                    for m in pattern.finditer(line):
                        self.arrived.setdefault(m.group(1).decode(), now)
        except Exception as exc:
            if not self.closing:
                self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()


def live_bench(tmp: Path) -> dict[str, Any]:
    import paho.mqtt.client as mqtt

    from badge_bridge.mqtt_client import no_delay
    from badge_bridge.sim.broker import Broker, free_port

    broker = Broker(tmp / "mosquitto")
    broker.start()
    console_port = free_port()
    site = make_live_site(tmp, broker.port, console_port)
    bridge_log, console_log = tmp / "bridge.log", tmp / "console.log"
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[SseClient] = []
    mqtt_clients: list[mqtt.Client] = []

    def paho(name: str) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", broker.port)
        no_delay(c)
        c.loop_start()
        mqtt_clients.append(c)
        return c

    try:
        with bridge_log.open("ab") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "badge_bridge.cli", "-c", str(site), "run"],
                                          stdout=out, stderr=out))
        with console_log.open("ab") as out:
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve-console", str(site)], stdout=out,
                                          stderr=out))
        deadline = time.monotonic() + 30
        while b"started for site" not in bridge_log.read_bytes():
            assert procs[0].poll() is None and time.monotonic() < deadline, bridge_log.read_text()[-2000:]
            time.sleep(0.05)
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", console_port, timeout=2)
                conn.request("GET", "/login")
                conn.getresponse().read()
                break
            except OSError:
                assert procs[1].poll() is None and time.monotonic() < deadline, console_log.read_text()[-2000:]
                time.sleep(0.1)

        nonce = uuid.uuid4().hex[:6]
        wanted = f"ctl-lobby:{nonce}."
        clients += [SseClient(console_port, n, wanted) for n in range(SSE_CLIENTS)]
        login_started = time.perf_counter()
        for c in clients:
            c.start()
        for c in clients:
            assert c.ready.wait(120) and c.error is None, c.error
        login_s = time.perf_counter() - login_started

        # what the bridge publishes, seen by an MQTT subscriber: splits the path at the broker
        on_bus: dict[str, float] = {}
        bus_pattern = re.compile(rf'"id":"{re.escape(wanted)}([^"]+)"'.encode())

        def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
            now = time.perf_counter()
            for found in bus_pattern.finditer(m.payload):
                on_bus.setdefault(found.group(1).decode(), now)

        monitor = paho("bench-monitor")
        monitor.on_message = on_message
        monitor.subscribe(f"{PREFIX}/bridge/events", qos=0)
        ctl = paho("bench-ctl-lobby")
        sent: dict[str, float] = {}

        def publish(msg_id: str, step: int) -> None:
            """A passage out, over and over: exit request, door opened, door closed (no alarm raised)."""
            body: dict[str, object] = {"v": 1, "id": f"{nonce}.{msg_id}", "ts": datetime.now(UTC).isoformat(),
                                       "door": "main-entrance"}
            body.update(({"type": "rex"}, {"type": "door", "state": "opened"}, {"type": "door", "state": "closed"})[step % 3])
            payload = json.dumps(body)
            sent[msg_id] = time.perf_counter()
            ctl.publish(f"{PREFIX}/controllers/ctl-lobby/events", payload, qos=1)

        deadline = time.monotonic() + 30
        for warm in range(10_000):  # until every client sees events (the console's MQTT link is subscribed)
            publish(f"w{warm}", warm)
            waited = time.monotonic() + 1.0
            while time.monotonic() < waited and not all(f"w{warm}" in c.arrived for c in clients):
                time.sleep(0.02)
            if all(f"w{warm}" in c.arrived for c in clients):
                break
            assert time.monotonic() < deadline, "the live feed never reached every client"
        time.sleep(0.5)
        ids = []
        started = time.perf_counter()
        while time.perf_counter() - started < LIVE_S:
            ids.append(f"m{len(ids)}")
            publish(ids[-1], len(ids) + warm)
            time.sleep(max(0.0, started + len(ids) * LIVE_INTERVAL_S - time.perf_counter()))
        time.sleep(3.0)  # the stragglers
        latencies, to_console, missed = [], [], []
        for c in clients:
            missed.append(sum(1 for m in ids if m not in c.arrived))
            latencies += [c.arrived[m] - sent[m] for m in ids if m in c.arrived]
            to_console += [c.arrived[m] - on_bus[m] for m in ids if m in c.arrived and m in on_bus]
        errors = [c.error for c in clients if c.error]
        return {
            "sse_clients": SSE_CLIENTS, "events": len(ids), "events_per_s": round(1 / LIVE_INTERVAL_S),
            "server": "web.serve.ConsoleServer (gunicorn gthread), own process; bridge `badge-bridge run`",
            "logins_s": round(login_s, 2), "publish_to_browser": ms_stats(latencies),
            "publish_to_bridge_events_topic": ms_stats([on_bus[m] - sent[m] for m in ids if m in on_bus]),
            "bridge_events_topic_to_browser": ms_stats(to_console),
            "deliveries": len(latencies), "missed_per_client": sorted(set(missed)), "missed_total": sum(missed),
            "client_errors": errors[:3], "goal": "none stated"}
    finally:
        for c in clients:
            c.closing = True
            c.close()
        for m in mqtt_clients:
            m.loop_stop()
            m.disconnect()
        stop_processes(procs)
        broker.stop()


# --- main -------------------------------------------------------------------------------------------------


def postgres(tmp: Path, keys: KeyStore) -> dict[str, Any]:
    try:
        with postgres_database() as url:
            return search_bench(url, tmp, keys, "postgresql")
    except NoPostgres as exc:
        return {"skipped": str(exc)}


def main() -> None:
    out: dict[str, Any] = {"bench": "console", "goals": {"search_p99_ms": SEARCH_P99_MS, "live_p99_ms": None},
                           "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        keys = KeyStore(tmp / "keys")
        keys.ensure()
        search = {"sqlite": search_bench(f"sqlite:///{tmp / 'search.db'}", tmp, keys, "sqlite"),
                  "postgresql": postgres(tmp, keys)}
        out["search"] = search
        out["live"] = live_bench(tmp)
    out["meets_goals"] = {
        f"search_p99_{db}": r["overall"]["p99_ms"] <= SEARCH_P99_MS for db, r in search.items() if "overall" in r}
    out["meets_goals"]["live_nothing_missed"] = out["live"]["missed_total"] == 0  # no latency goal stated
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-console"]:
        serve_console(Path(sys.argv[2]))
    else:
        main()


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """The bridge (SIGTERM) and the console (gunicorn: SIGINT is the quick stop), killed if they hang."""
    for p, sig in zip(procs, (signal.SIGTERM, signal.SIGINT), strict=False):
        p.send_signal(sig)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
