"""Sustained ingest with 1, 2 and 3 partitions side by side, on this machine: one broker, one database, one
`badge-bridge run --partition P` process per partition (on PostgreSQL each holds its partition's lease and
fences every commit with it; on SQLite the processes share one database file, without a lease).

Each partition has its own controller at its own door (a site file generated from the example, with
partitions ``part-1`` .. ``part-3``), its own card holder, and a publisher of its own. Measured as in
bench_mqtt: events/s from MQTT into the audit log, counted once committed, every id checked (nothing lost,
nothing doubled); "live" with the publishers running beside the bridges, "backlog" with the bridges alone
draining what the broker queued while they were down (timed from their first commit, so the start of the
processes is not counted). Per partition (its events over the time its last one committed) and in total
(all events over the time the last partition finished).

``--mix credentials`` for cards only (default ``passages``), ``--events N`` per partition, ``--sqlite`` or
``--postgresql`` for one database only. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, text

from badge_bridge.db import make_engine
from badge_bridge.sim.broker import Broker
from bench.bench_mqtt import BridgeRun, Gate, make_site, publish_share
from bench.throwaway import NoPostgres, postgres_database

COUNTS = (1, 2, 3)
POLL_S = 0.1


def gates(n: int) -> list[Gate]:
    return [Gate(f"ctl-gate-{i}", f"gate-{i}", f"gate-{i}-in", f"gate-{i}-out", f"12:{2000 + i}")
            for i in range(1, n + 1)]


def partition_site(n: int) -> Callable[[str], str]:
    """An edit of the example site: ``n`` gates into the lobby, gate i on controller ctl-gate-i in partition
    part-i, open to the ``staff`` level (the example's own devices stay in the default partition, unserved)."""

    def edit(site: str) -> str:
        staff = '{ door = "main-entrance", schedule = "always" }'
        site = site.replace(staff, ", ".join([staff, *(f'{{ door = "{g.door}", schedule = "always" }}'
                                                       for g in gates(n))]), 1)
        for i, g in enumerate(gates(n), 1):
            site += (f'\n[[doors]]\nkey = "{g.door}"\nname = "Gate {i}"\narea_out = "outside"\narea_in = "lobby"\n'
                     f'open_time_s = 5\nheld_open_limit_s = 30\n'
                     f'\n[[controllers]]\nkey = "{g.controller}"\nname = "Gate {i}"\nkind = "mqtt"\npartition = "part-{i}"\n'
                     f'\n[[readers]]\nkey = "{g.reader_in}"\ncontroller = "{g.controller}"\ndoor = "{g.door}"\n'
                     f'direction = "in"\n'
                     f'\n[[readers]]\nkey = "{g.reader_out}"\ncontroller = "{g.controller}"\ndoor = "{g.door}"\n'
                     f'direction = "out"\n')
        return site

    return edit


def committed(engine: Engine, prefix: str) -> dict[str, int]:
    """Committed events of this run, per controller."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT source, count(*) FROM audit_entry WHERE event_id LIKE :p GROUP BY source"),
                                 {"p": f"ctl-gate-%:{prefix}%"}).all())  # type: ignore[arg-type]


def lost_doubled(engine: Engine, gate: Gate, prefix: str, n: int) -> tuple[int, int]:
    with engine.connect() as conn:
        ids = list(conn.scalars(text("SELECT event_id FROM audit_entry WHERE event_id LIKE :p"),
                                {"p": f"{gate.controller}:{prefix}%"}))
    wanted = {f"{gate.controller}:{prefix}0-{i}" for i in range(n)}
    return len(wanted - set(ids)), len(ids) - len(set(ids) & wanted)


def publish(port: int, n: int, prefix: str, mix: str, todo: list[Gate]) -> list[mp.Process]:
    workers = [mp.Process(target=publish_share, args=(port, 0, n, prefix, mix, g)) for g in todo]
    for w in workers:
        w.start()
    return workers


def measure(engine: Engine, todo: list[Gate], prefix: str, n: int, started: float, *,
            from_first: bool = False) -> dict[str, object]:
    """Wait until every partition committed its ``n`` events; the rates per partition and in total, timed
    from ``started`` or, ``from_first``, from the first poll that sees a commit (a backlog drained by bridges
    just launched: their start is not the ingest), counting only what was committed after it."""
    done: dict[str, float] = {}
    base: dict[str, int] | None = None if from_first else {}
    while len(done) < len(todo) and time.perf_counter() - started < 600:
        counts = committed(engine, prefix)
        now = time.perf_counter()
        if base is None:
            if not any(counts.values()):
                time.sleep(POLL_S / 10)
                continue
            base, started = counts, now
        for g in todo:
            if g.controller not in done and counts.get(g.controller, 0) >= n:
                done[g.controller] = now - started
        time.sleep(POLL_S)
    base = base or {}
    per: dict[str, object] = {}
    for i, g in enumerate(todo, 1):
        lost, doubled = lost_doubled(engine, g, prefix, n)
        took = done.get(g.controller)
        per[f"part-{i}"] = {"events_per_s": round((n - base.get(g.controller, 0)) / took) if took else 0,
                            "committed_s": round(took or 0, 2), "lost": lost, "doubled": doubled}
    last = max(done.values(), default=0.0)
    total = n * len(todo) - sum(base.values())
    return {"events_per_s_total": round(total / last) if len(done) == len(todo) and last else 0,
            "committed_s": round(last, 2), "partitions": per}


def run_count(tmp: Path, count: int, db_url: str | None, n: int, mix: str) -> dict[str, object]:
    """``count`` partitions on one broker and database: live, then backlog."""
    tmp.mkdir()
    broker = Broker(tmp / "mosquitto")
    broker.start()
    todo = gates(count)
    site = make_site(tmp, broker.port, db_url=db_url, edit=partition_site(count), cards=[g.card for g in todo])
    engine = make_engine(db_url or f"sqlite:///{tmp / 'bench.db'}")
    bridges = [BridgeRun(site, tmp / f"bridge-{i}.log", ["--partition", f"part-{i}"]) for i in range(1, count + 1)]
    try:
        for b in bridges:
            b.launch()
        for b in bridges:
            b.wait_started()
        started = time.perf_counter()
        for w in publish(broker.port, n, "live-", mix, todo):
            w.join()
        live = measure(engine, todo, "live-", n, started)
        for b in bridges:
            b.stop()
        for w in publish(broker.port, n, "backlog-", mix, todo):
            w.join()
        started = time.perf_counter()
        for b in bridges:
            b.launch()
        backlog = measure(engine, todo, "backlog-", n, started, from_first=True)
        return {"live": live, "backlog": backlog}
    finally:
        for b in bridges:
            if b.proc is not None and b.proc.poll() is None:
                b.stop()
        broker.stop()
        engine.dispose()


def on_postgres(tmp: Path, n: int, mix: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for count in COUNTS:
        try:
            with postgres_database() as url:
                out[str(count)] = run_count(tmp / f"pg{count}", count, url, n, mix)
        except NoPostgres as exc:
            return {"skipped": str(exc)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000, help="events per partition and run")
    parser.add_argument("--mix", choices=("passages", "credentials"), default="passages")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sqlite", action="store_true")
    only.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {"bench": "partitions", "cores": os.cpu_count(), "events_per_partition": args.events,
                                 "mix": args.mix}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if not args.sqlite:
            result["postgresql"] = on_postgres(tmp, args.events, args.mix)
        if not args.postgresql:
            result["sqlite"] = {str(count): run_count(tmp / f"sqlite{count}", count, None, args.events, args.mix)
                                for count in COUNTS}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
