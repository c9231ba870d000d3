"""A network partition of a partition's active bridge, with real namespaces (tests/netns.py), a real Mosquitto,
a real PostgreSQL and two real bridge processes of one partition, each on its own "machine".

Each machine is plugged into two switches, one towards the database and one towards the broker (PostgreSQL
and the test's Mosquitto listen on 127.0.0.1: forwarders on the switches' addresses reach them), so a test
can cut a machine off entirely or from the database alone. The simulated controllers stand in the root
namespace, as the doors do: they never lose the broker.

Who did what is read from the wire and the database, not from the bridges' word: a tap on the broker's
forwarder records every PUBLISH by client address (the two bridges share one client id), and a trigger of
the test records which instance's connection (``application_name``) inserted each audit entry.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from badge_bridge.config import FailoverSection, load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.failover.lease import Lease
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.topics import Topics
from tests.bridge_proc import BridgeProcess
from tests.conftest import IN_CI, ROOT, write_site
from tests.mqtt_tap import PublishTap
from tests.netns import Host, Lab, lab
from tests.test_mqtt_bridge import PEOPLE, assert_exactly_once, listen, seed
from tests.waiting import wait_until

PARTITION = "bridge-1"  # the example site's one partition (its site.instance)
CARD_EVERY_S = 0.1

TAP_COMMITS = """
CREATE TABLE netsplit_commit (chain_id text, seq bigint, kind text, event_id text, app text,
                              at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION netsplit_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO netsplit_commit (chain_id, seq, kind, event_id, app)
  VALUES (NEW.chain_id, NEW.seq, NEW.kind, NEW.event_id, current_setting('application_name'));
  RETURN NEW; END $$;
CREATE TRIGGER netsplit_commit AFTER INSERT ON audit_entry FOR EACH ROW EXECUTE FUNCTION netsplit_commit();
"""


def _answer(payload: bytes) -> tuple[float, str | None]:
    return time.monotonic(), json.loads(payload).get("request")


def _require_netns() -> None:
    if shutil.which("ip") is None:
        (pytest.fail if IN_CI else pytest.skip)("iproute2 is needed for network namespaces")
    if os.geteuid() != 0:
        (pytest.fail if IN_CI else pytest.skip)("network namespaces need root")


@dataclass
class Machine:
    host: Host
    bridge: BridgeProcess

    @property
    def mqtt_address(self) -> str:
        return self.host.addresses["mqtt"]


class Rig:
    """Two bridge machines ``a`` and ``b`` of one partition and the lobby controller; from ``start`` on, a
    card presented every ``CARD_EVERY_S``."""

    def __init__(self, the_lab: Lab, tmp_path: Path, pg_url: str, broker: Broker, keys: KeyStore) -> None:
        self.lab, self.broker, self.keys = the_lab, broker, keys
        db, mq = the_lab.switch("db"), the_lab.switch("mqtt")
        url = make_url(pg_url)
        db_port = db.expose(url.port or 5432, url.host or "127.0.0.1")
        self.tap = PublishTap()
        mqtt_port = mq.expose(broker.port, tap=self.tap)
        inside = url.set(host=db.gateway, port=db_port)
        self.engine = make_engine(pg_url)
        with self.engine.begin() as conn:
            conn.execute(text(TAP_COMMITS))
        base = write_site(tmp_path, pg_url, broker_port=mqtt_port)
        self.config = load_config(base)
        seed(self.engine, base, keys)
        self.machines: dict[str, Machine] = {}
        for name in ("a", "b"):
            host = the_lab.host(name, "db", "mqtt")
            site = tmp_path / f"site-{name}.toml"
            own_url = inside.update_query_dict({"application_name": name}).render_as_string(hide_password=False)
            site.write_text(base.read_text()
                            .replace(f'url = "{pg_url}"', f'url = "{own_url}"')
                            .replace('host = "127.0.0.1"', f'host = "{mq.gateway}"', 1))
            bridge = BridgeProcess(site, tmp_path / f"bridge-{name}.log",
                                   args=("run", "--partition", PARTITION, "--instance", name),
                                   wrap=host.command([]))
            self.machines[name] = Machine(host, bridge)
        self.sim = SimController("ctl-lobby", "127.0.0.1", broker.port, sync_key=keys.sync_key("ctl-lobby"),
                                 readers={"main-in": "main-entrance", "main-out": "main-entrance"},
                                 walk_through=False, username="ctl-lobby", password=broker.passwords["ctl-lobby"])
        self.commands_topic = Topics(self.config.mqtt.topic_prefix).controller_commands("ctl-lobby")
        self.watcher, self.answers = listen(broker, self.commands_topic, parse=_answer)
        """(time.monotonic() of arrival, the request answered) of every command to the controller."""
        self.presented: list[tuple[float, str]] = []
        """(time.monotonic(), audit event id) of every card presented."""
        self._stop = threading.Event()
        self._cards: threading.Thread | None = None

    def start(self) -> None:
        self.machines["a"].bridge.start("started for site", timeout=60)
        self.machines["b"].bridge.start("standby", timeout=60)
        self.sim.wait_connected()
        self._cards = threading.Thread(target=self._present, name="cards", daemon=True)
        self._cards.start()

    def _present(self) -> None:
        for i in range(1_000_000):
            if self._stop.wait(CARD_EVERY_S):
                return
            card = PEOPLE[i % len(PEOPLE)][2] if i % 4 else f"77:{i}"
            event_id = self.sim.present(("main-in", "main-out")[i % 2], None, "wiegand26", card)
            self.presented.append((time.monotonic(), f"ctl-lobby:{event_id}"))

    def stop_cards(self) -> list[str]:
        self._stop.set()
        assert self._cards is not None
        self._cards.join()
        self.sim.wait_published(timeout=60)
        return [event_id for _, event_id in self.presented]

    def answered_after(self, since: float) -> float | None:
        """When the first card presented after ``since`` got its answer from a bridge (None: not yet)."""
        requests = {event_id.split(":", 1)[1] for at, event_id in self.presented if at > since}
        return min((at for at, request in self.answers if request in requests), default=None)

    def commands_by(self, machine: str, since: float) -> list[str]:
        """The commands to the controller ``machine`` put on the wire from ``since`` (``time.time()``) on."""
        return self.tap.topics(self.machines[machine].mqtt_address, since, contains=self.commands_topic)

    def commits_by(self, machine: str, after_seq: int) -> list[str]:
        """The entries ``machine`` inserted into the partition's chain after ``after_seq``: "seq kind"."""
        with self.engine.connect() as conn:
            return [f"{seq} {kind}" for seq, kind in conn.execute(text(
                "SELECT seq, kind FROM netsplit_commit WHERE app = :a AND chain_id = :p AND seq > :s ORDER BY seq"),
                {"a": machine, "p": PARTITION, "s": after_seq})]

    def lease_taken_at(self) -> float:
        """When the partition's lease was last taken (``time.time()``, from the database's clock)."""
        with self.engine.connect() as conn:
            return float(conn.scalar(text("SELECT extract(epoch FROM acquired_at) FROM partition_lease "
                                          "WHERE partition = :p"), {"p": PARTITION}))

    def takeover_seq(self, after: int = 0) -> int:
        """The seq of the partition's latest ``bridge.took_over`` entry, once there is one past ``after`` (the
        takeover is committed shortly after the new active says it started)."""
        def latest() -> int | None:
            with self.engine.connect() as conn:
                seq = conn.scalar(text(
                    "SELECT max(seq) FROM audit_entry WHERE chain_id = :p AND kind = 'bridge.took_over'"),
                    {"p": PARTITION})
            return seq if seq is not None and seq > after else None

        return int(wait_until(latest, timeout=30, what="the takeover in the log"))

    def close(self) -> None:
        self._stop.set()
        self.sim.close()
        self.watcher.disconnect()
        self.watcher.loop_stop()
        for machine in self.machines.values():
            machine.bridge.close()
        self.engine.dispose()


@pytest.fixture
def rig(tmp_path: Path, pg_url: str, broker: Broker, keys: KeyStore) -> Iterator[Rig]:
    _require_netns()
    with lab() as the_lab:
        r = Rig(the_lab, tmp_path, pg_url, broker, keys)
        try:
            yield r
        finally:
            r.close()


def _measure(what: str, **figures: object) -> None:
    """Measured figures go to the test's output (run with -s), not into assertions."""
    print(f"\n{what}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))


@pytest.mark.slow
def test_a_cut_off_active_is_replaced_and_healing_gives_no_split_brain(rig: Rig, pg_url: str) -> None:
    a, b = rig.machines["a"], rig.machines["b"]
    rig.start()
    wait_until(lambda: rig.answered_after(0.0), timeout=30, what="a first card answered by a")
    assert rig.commands_by("a", since=0.0) and rig.commits_by("a", after_seq=0), "the taps see nothing"
    cut_at = time.monotonic()
    a.host.cut()
    b.bridge.wait_for("started for site", timeout=60)
    active_at = time.monotonic()
    answered_at = wait_until(lambda: rig.answered_after(cut_at), timeout=60, what="a card answered after the cut")
    wait_until(lambda: rig.answered_after(active_at), timeout=60, what="cards answered by b")
    took_over, taken_at = rig.takeover_seq(), rig.lease_taken_at()
    healed_at = time.monotonic()
    a.host.heal()
    assert a.bridge.proc is not None
    exited = wait_until(lambda: a.bridge.proc.poll() is not None or time.monotonic() - healed_at > 20, timeout=40,
                        what="a to exit, or 20 s of it back on the network")
    fenced_after_s = time.monotonic() - healed_at
    since_heal = time.monotonic()
    wait_until(lambda: rig.answered_after(since_heal), timeout=30, what="b still answering after the heal")
    ids = rig.stop_cards()
    _measure("network partition of the active", cut_to_standby_active_s=active_at - cut_at,
             cut_to_first_answer_s=answered_at - cut_at, heal_to_old_active_exit_s=fenced_after_s,
             old_active_status=a.bridge.proc.poll(), old_active_connects=rig.tap.connects(a.mqtt_address, taken_at),
             cards=len(ids), exited=exited)
    assert rig.commands_by("b", since=taken_at), "the taps see nothing of b"
    assert rig.commands_by("a", since=taken_at) == [], "the old active sent door commands after the takeover"
    assert rig.commits_by("a", after_seq=took_over) == [], "the old active committed after the takeover"
    assert a.bridge.proc.poll() in (None, 75), a.bridge.output()[-3000:]
    assert_exactly_once(rig.engine, pg_url, rig.keys, ids)
    assert b.bridge.signal(signal.SIGTERM) == 0


@pytest.mark.slow
def test_an_active_cut_off_from_the_database_alone_is_replaced(rig: Rig, pg_url: str) -> None:
    """The active keeps the broker but loses the database; the standby still reaches both. Nobody can tell
    the active it lost the lease, so it must step aside by itself: it commands and commits nothing (its lease
    is no longer certain), the standby takes over, and on the heal it learns it is fenced and exits."""
    a, b = rig.machines["a"], rig.machines["b"]
    rig.start()
    wait_until(lambda: rig.answered_after(0.0), timeout=30, what="a first card answered by a")
    cut_at = time.monotonic()
    a.host.cut("db")
    b.bridge.wait_for("started for site", timeout=60)
    active_at = time.monotonic()
    answered_at = wait_until(lambda: rig.answered_after(active_at), timeout=60, what="a card answered by b")
    took_over, taken_at = rig.takeover_seq(), rig.lease_taken_at()
    window = time.monotonic()
    wait_until(lambda: time.monotonic() - window > 8, timeout=20, what="8 s with b active and a cut off")
    late = _answer_delays(rig, window, time.monotonic() - 2)
    healed_at = time.monotonic()
    a.host.heal("db")
    assert a.bridge.proc is not None
    wait_until(lambda: a.bridge.proc.poll() is not None, timeout=30, what="a to learn it is fenced")
    ids = rig.stop_cards()
    _measure("database partition of the active", cut_to_standby_active_s=active_at - cut_at,
             cut_to_first_answer_s=answered_at - cut_at, heal_to_old_active_exit_s=time.monotonic() - healed_at,
             old_active_status=a.bridge.proc.poll(), old_active_connects=rig.tap.connects(a.mqtt_address, taken_at),
             answer_delay_max_s=max(late), answer_delay_median_s=sorted(late)[len(late) // 2], cards=len(ids))
    assert rig.commands_by("a", since=taken_at) == [], "the old active sent door commands after the takeover"
    assert rig.commits_by("a", after_seq=took_over) == [], "the old active committed after the takeover"
    assert a.bridge.proc.poll() == 75
    assert_exactly_once(rig.engine, pg_url, rig.keys, ids)
    # the old active never took the broker session back (its reconnections wait for a lease it no longer has)
    assert rig.tap.connects(a.mqtt_address, since=taken_at) == 0


def _answer_delays(rig: Rig, start: float, end: float) -> list[float]:
    """Seconds from presentation to the first answer, for each card presented between ``start`` and ``end``
    (an unanswered card counts as still waiting at ``time.monotonic()``)."""
    first: dict[str, float] = {}
    for at, request in rig.answers:
        if request is not None:
            first.setdefault(request, at)
    now = time.monotonic()
    return [first.get(event_id.split(":", 1)[1], now) - at for at, event_id in rig.presented if start < at < end]


HOLD_THE_LEASE_ROW = """
import sys, time
from badge_bridge.config import FailoverSection
from badge_bridge.db import make_engine
from badge_bridge.failover.lease import Lease
engine = make_engine(sys.argv[1])
lease = Lease(engine, "p1", "old", FailoverSection(lease_s=float(sys.argv[2]), renew_s=0.2, poll_s=0.05))
assert lease.try_acquire() is not None
with engine.connect() as conn:
    conn.begin()
    lease.fence(conn)  # an audit commit under way: the lease row share-locked until its COMMIT
    print("locked", flush=True)
    time.sleep(600)
"""


def test_an_active_cut_off_mid_commit_does_not_block_the_takeover(tmp_path: Path, pg_url: str) -> None:
    """The active goes silent while its commit holds the lease row: the server would keep the lock (and the
    standby waiting) until its TCP gave up on the client, hours later, were the transaction not bounded."""
    _require_netns()
    settings = FailoverSection(lease_s=1.0, renew_s=0.2, poll_s=0.05)
    engine = make_engine(pg_url)
    migrate(engine)
    with lab() as the_lab:
        db = the_lab.switch("db")
        url = make_url(pg_url)
        inside = url.set(host=db.gateway, port=db.expose(url.port or 5432, url.host or "127.0.0.1"))
        host = the_lab.host("a", "db")
        old = host.popen([sys.executable, "-c", HOLD_THE_LEASE_ROW, inside.render_as_string(hide_password=False),
                          str(settings.lease_s)], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert old.stdout is not None and old.stdout.readline().strip() == b"locked"
            host.cut()
            cut_at = time.monotonic()
            standby, taken = Lease(engine, "p1", "new", settings), threading.Event()

            def take() -> None:
                wait_until(lambda: standby.try_acquire() is not None, timeout=60)
                taken.set()

            threading.Thread(target=take, daemon=True).start()
            assert taken.wait(30), "the standby waits on the lock of a client that went silent"
            _measure("takeover past a commit cut off mid-way", cut_to_lease_s=time.monotonic() - cut_at)
        finally:
            old.kill()
            old.wait()
    engine.dispose()
