"""Network partitions of the active bridge, again and again: two real bridge processes of one partition, each in
its own network namespace (tests/netns.py), on a real Mosquitto and PostgreSQL, a card every 0.1 s.

Each round cuts the active's switch ports, times the first answer to a card presented after the cut (the
standby took over), heals the link, times the old active's exit (status 75: fenced) and starts it again as a
standby, as systemd's Restart=always would; the next round cuts the other machine. At the end: every card in
the log exactly once, the chain verified, and what the old actives sent and committed after their cut (read on
the wire and in the database, tests/test_netsplit.py). Needs root. Prints one JSON object.

    sudo .venv/bin/python bench/bench_netsplit.py [ROUNDS]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throwaway import NoPostgres, postgres_database

from badge_bridge.audit.verify import verify
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore
from tests.conftest import secured_broker
from tests.netns import lab
from tests.test_mqtt_bridge import stream_ids_in_log
from tests.test_netsplit import Rig
from tests.waiting import wait_until


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def run(rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as url, lab() as the_lab:
        tmp_path = Path(tmp)
        migrate(make_engine(url))
        keys = KeyStore(tmp_path / "keys")
        keys.ensure()
        broker = secured_broker(tmp_path)
        broker.start()
        rig = Rig(the_lab, tmp_path, url, broker, keys)
        try:
            rig.start()
            wait_until(lambda: rig.answered_after(0.0), timeout=30, what="a first card answered")
            answer_s, exit_s, statuses, commands, commits, in_flight, connects = [], [], [], 0, 0, 0, 0
            active, standby, took_over = "a", "b", 0
            for _ in range(rounds):
                old, new = rig.machines[active], rig.machines[standby]
                cut_at, cut_wall = time.monotonic(), time.time()
                old.host.cut()
                answered = wait_until(lambda cut_at=cut_at: rig.answered_after(cut_at), timeout=60, what="the standby answering")
                answer_s.append(answered - cut_at)
                new.bridge.wait_for("started for site", timeout=60)
                took_over = rig.takeover_seq(after=took_over)
                old.host.heal()
                healed = time.monotonic()
                assert old.bridge.proc is not None
                statuses.append(old.bridge.proc.wait(timeout=60))
                exit_s.append(time.monotonic() - healed)
                taken_at = rig.lease_taken_at()
                in_flight += len(rig.commands_by(active, since=cut_wall)) - len(rig.commands_by(active, since=taken_at))
                commands += len(rig.commands_by(active, since=taken_at))
                connects += rig.tap.connects(old.mqtt_address, since=taken_at)
                commits += len(rig.commits_by(active, after_seq=took_over))
                old.bridge.start("standby", timeout=60)
                active, standby = standby, active
            ids = rig.stop_cards()
            wait_until(lambda: len(stream_ids_in_log(rig.engine)) >= len(ids), timeout=120, what="every card logged")
            logged = Counter(stream_ids_in_log(rig.engine))
            report = verify(rig.engine, url, keys.trusted_public_keys())
            return {
                "bench": "netsplit", "rounds": rounds, "lease_s": rig.config.failover.lease_s,
                "renew_s": rig.config.failover.renew_s, "poll_s": rig.config.failover.poll_s,
                "cut_to_first_answer_s": {"p50": _p(answer_s, 0.5), "p99": _p(answer_s, 0.99),
                                          "max": round(max(answer_s), 3),
                                          "mean": round(statistics.fmean(answer_s), 3)},
                "heal_to_old_active_exit_s": {"p50": _p(exit_s, 0.5), "max": round(max(exit_s), 3)},
                "old_active_exit_statuses": dict(Counter(statuses)),
                "old_active_commands_after_takeover": commands,
                "old_active_commands_between_cut_and_takeover": in_flight, "old_active_commits_after_takeover": commits,
                "old_active_broker_connects_after_takeover": connects,
                "cards": len(ids), "lost": sum(1 for i in ids if i not in logged),
                "doubled": sum(1 for n in logged.values() if n > 1), "chain_ok": report.ok,
            }
        finally:
            rig.close()
            broker.stop()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("mosquitto") is None:
        print(json.dumps({"bench": "netsplit", "skipped": "needs root, iproute2 and mosquitto"}))
        return
    try:
        result = run(rounds)
    except NoPostgres as exc:
        result = {"bench": "netsplit", "skipped": str(exc)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
