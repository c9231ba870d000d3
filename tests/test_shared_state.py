"""The facts that follow a person across doors, shared by the partitions of one site on PostgreSQL
(badge_bridge/failover/shared_state.py, ingest/shared_facts.py), attacked as the issue measured them:

- anti-passback across two partitions (a second entry into the lobby at the other partition's door);
- a two-person wait across a failover (the active is SIGKILLed between the two people);
- a site lockdown from the console reaching both partitions, and one started after it;
- notifications missed (the listener's connection terminated) and a storm of them;
- rows and notifications a DBA (or an attacker with SQL) planted.

The site: the example site split in two partitions, ``bridge-1`` (ctl-lobby: main entrance; esp-noc) and
``halls`` (ctl-hall-a: hall A, cage 7); the lobby is under hard anti-passback, so hall A's exit reader (an
entry into the lobby) is the second door into it, in the other partition.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from badge_bridge.bridge import Bridge
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.db import make_engine
from badge_bridge.failover.shared_state import CHANNEL, PAYLOAD_MAX, payload
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, Person
from badge_bridge.policy import AccessState
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.topics import Topics
from tests.bridge_proc import BridgeProcess
from tests.conftest import require_mosquitto, secured_broker, write_site
from tests.console_commands import command, operator
from tests.test_mqtt_bridge import seed
from tests.waiting import wait_until

ADA, GRACE = "12:1001", "12:1002"
HALLS = ("ctl-hall-a", "halls")
SPLIT = (
    ('key = "ctl-hall-a"', 'key = "ctl-hall-a"\npartition = "halls"'),
    ('name = "Lobby"', 'name = "Lobby"\nanti_passback = "hard"'),
    ('factors = ["card", "pin"]', 'factors = ["card"]'),  # hall A: a card is enough here
    ('factors = ["card", "biometric"]', 'factors = ["card"]'),  # cage 7: two people with cards
    ("[mqtt]", '[mqtt]\nusername = "bridge-1"'),  # one bridge account for both partitions (broker-config has no per-partition one yet)
)


class Rig:
    """A two-partition site on the test's PostgreSQL and broker: in-process bridges on each partition's view,
    simulated controllers, and a console."""

    def __init__(self, tmp_path: Path, pg_url: str, broker: Broker, keys: KeyStore) -> None:
        self.tmp_path = tmp_path
        self.site_file = write_site(tmp_path, pg_url, *SPLIT, broker_port=broker.port)
        self.config = load_config(self.site_file)
        self.engine = make_engine(pg_url)
        self.keys = keys
        self.broker = broker
        seed(self.engine, self.site_file, keys)
        with Session(self.engine) as session:
            self.person = {name: pid for pid, name in session.execute(select(Person.id, Person.name))}
        self.bridges: dict[str, Bridge] = {}
        self.sims: dict[str, SimController] = {}
        self.session = operator(self.engine, "supervisor", "supervisor")
        self.console = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.console.username_pw_set(*broker.login("console"))
        self.console.connect("127.0.0.1", broker.port)
        self.console.loop_start()

    def view(self, partition: str) -> SiteConfig:
        return self.config.partition_view(partition)

    def start(self, partition: str) -> Bridge:
        bridge = self.bridges[partition] = Bridge(self.view(partition), self.engine, self.keys)
        bridge.start()
        assert bridge.shared_state is not None and bridge.shared_state.listening.is_set()
        return bridge

    def stop(self, partition: str) -> None:
        self.bridges.pop(partition).stop()

    def sim(self, key: str) -> SimController:
        readers = {r.key: r.door for r in self.config.readers if r.controller == key}
        username, password = self.broker.login(key)
        sim = self.sims[key] = SimController(key, "127.0.0.1", self.broker.port, sync_key=self.keys.sync_key(key),
                                             readers=readers, walk_through=False, username=username, password=password)
        sim.go_online()
        sim.wait_connected()
        return sim

    def badge(self, sim: SimController, reader: str, card: str) -> c.Grant | c.Deny:
        """A card at a reader, and the bridge's answer."""
        eid = sim.present(reader, None, "wiegand26", card)
        answer = sim.wait_for_command(lambda cmd: isinstance(cmd, (c.Grant, c.Deny)) and cmd.request == eid, 20)
        assert isinstance(answer, (c.Grant, c.Deny))
        return answer

    def send_console(self, type_: str, **fields: object) -> str:
        cmd = command(self.keys, self.session, type=type_, user="supervisor", reason="shared state test",
                      **{"door": None, **fields})
        topic = Topics(self.config.mqtt.topic_prefix).console_commands()
        self.console.publish(topic, cmd.model_dump_json(), qos=1).wait_for_publish(10)
        return f"console:{cmd.id}"

    def committed(self, event_id: str, chain: str) -> AuditEntry:
        def find() -> AuditEntry | None:
            with Session(self.engine) as session:
                return session.scalar(select(AuditEntry).where(AuditEntry.chain_id == chain,
                                                               AuditEntry.event_id == event_id))
        return wait_until(find, 30, f"{event_id} in chain {chain}")

    def entries(self, chain: str, kind: str) -> list[AuditEntry]:
        with Session(self.engine) as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.chain_id == chain, AuditEntry.kind == kind)
                                        .order_by(AuditEntry.seq)))

    def close(self) -> None:
        for sim in self.sims.values():
            sim.close()
        for partition in list(self.bridges):
            self.stop(partition)
        self.console.loop_stop()
        self.console.disconnect()
        self.engine.dispose()


def memory(bridge: Bridge) -> AccessState:
    """What a bridge decides with: its in-memory state (the one thing these tests read from inside)."""
    assert bridge.processor is not None
    return bridge.processor._state


def dba(rig: Rig, sql: str, **params: object) -> None:
    """SQL as a DBA (or an attacker with a login) runs it, notifications included."""
    with rig.engine.begin() as conn:
        conn.execute(text(sql), params)


@pytest.fixture
def split_broker(tmp_path: Path, keys: KeyStore) -> Iterator[Broker]:
    """The test's Mosquitto as `badge-bridge mqtt broker-config` configures it for the split site (an account
    per partition's bridge)."""
    require_mosquitto()
    b = secured_broker(tmp_path, load_config(write_site(tmp_path, "sqlite://", *SPLIT)))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def rig(tmp_path: Path, pg_url: str, split_broker: Broker, keys: KeyStore) -> Iterator[Rig]:
    r = Rig(tmp_path, pg_url, split_broker, keys)
    yield r
    r.close()


# --- anti-passback ----------------------------------------------------------------------------------


def test_hard_anti_passback_holds_across_two_partitions(rig: Rig) -> None:
    """The issue's measurement: with two bridges, 3 of 3 second entries into the lobby were granted."""
    rig.start("bridge-1")
    halls = rig.start("halls")
    lobby, hall = rig.sim("ctl-lobby"), rig.sim("ctl-hall-a")
    ada = rig.person["Ada"]
    denied = 0
    for _ in range(3):
        assert isinstance(rig.badge(lobby, "main-out", ADA), c.Grant)  # out to the car park
        assert isinstance(rig.badge(lobby, "main-in", ADA), c.Grant)  # into the lobby, at partition bridge-1
        wait_until(lambda: memory(halls).location.get(ada) == "lobby", 10, "partition halls to learn Ada's position")
        answer = rig.badge(hall, "hall-a-mantrap-out", ADA)  # out of hall A's mantrap into the lobby again, at halls
        denied += isinstance(answer, c.Deny) and answer.reason == "anti_passback"
    assert denied == 3
    # halls never wrote Ada's position: it is bridge-1's fact, not journaled back
    with rig.engine.connect() as conn:
        assert conn.execute(text("""SELECT "partition" FROM site_state WHERE "key" = :k"""),
                            {"k": f"position/{ada}"}).scalar_one() == "bridge-1"


# --- two-person rule across a failover -----------------------------------------------------------------


def test_two_person_wait_survives_a_sigkill_failover(rig: Rig, tmp_path: Path) -> None:
    """The first person badges at cage 7; the active of its partition is killed (SIGKILL) right after its
    answer, committed or not; a standby takes the lease and the second person's card opens the door with the
    first as companion (the wait read from the database at its start, or the first card delivered again)."""
    active = BridgeProcess(rig.site_file, tmp_path / "active.log", ("run", "--partition", "halls", "--instance", "a"))
    standby = BridgeProcess(rig.site_file, tmp_path / "standby.log", ("run", "--partition", "halls", "--instance", "b"))
    try:
        active.start()
        hall = rig.sim("ctl-hall-a")
        first = rig.badge(hall, "cage-7-in", ADA)
        assert isinstance(first, c.Deny) and first.reason == "two_person_waiting"
        active.kill()
        standby.start()
        second = rig.badge(hall, "cage-7-in", GRACE)
        assert isinstance(second, c.Grant), second
        def two_person_grant() -> dict[str, object] | None:
            return next((d for e in rig.entries("halls", "access.granted")
                         if (d := json.loads(e.detail)).get("reason") == "granted_two_person"), None)

        grant = wait_until(two_person_grant, 20, "the two-person grant in chain halls")
        assert grant["companion"] == rig.person["Ada"]
        assert rig.entries("halls", "bridge.took_over")
    finally:
        standby.close()
        active.close()


# --- lockdown -------------------------------------------------------------------------------------


def test_a_site_lockdown_reaches_every_partition_and_one_started_after_it(rig: Rig) -> None:
    rig.start("bridge-1")
    lobby, hall = rig.sim("ctl-lobby"), rig.sim("ctl-hall-a")
    down = rig.send_console("lockdown")
    rig.committed(f"{down}@bridge-1", "bridge-1")
    assert lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Lockdown) and cmd.active)
    assert rig.badge(lobby, "main-in", ADA).reason == "lockdown"  # type: ignore[union-attr]

    rig.start("halls")  # not running when the lockdown was given: it reads the shared fact at its start
    assert rig.badge(hall, "hall-a-in", ADA).reason == "lockdown"  # type: ignore[union-attr]
    assert hall.wait_for_command(lambda cmd: isinstance(cmd, c.Lockdown) and cmd.active and "hall-a" in cmd.doors)

    lift = rig.send_console("lift_lockdown")
    rig.committed(f"{lift}@bridge-1", "bridge-1")
    rig.committed(f"{lift}@halls", "halls")
    assert isinstance(rig.badge(lobby, "main-in", ADA), c.Grant)
    assert isinstance(rig.badge(hall, "hall-a-in", GRACE), c.Grant)
    with rig.engine.connect() as conn:
        assert conn.execute(text("""SELECT count(*) FROM site_state WHERE "key" LIKE 'lockdown%'""")).scalar_one() == 0


def test_lifting_one_door_under_a_site_lockdown_leaves_the_other_partitions_doors_locked_down(rig: Rig) -> None:
    """The review's attack: a lift for one door ends the site-wide fact; a partition that had the lockdown
    only from that fact (started after it) must not unlock its doors with it."""
    rig.start("bridge-1")
    lobby, hall = rig.sim("ctl-lobby"), rig.sim("ctl-hall-a")
    rig.committed(f"{rig.send_console('lockdown')}@bridge-1", "bridge-1")
    halls = rig.start("halls")  # reads the site lockdown at its start
    assert rig.badge(hall, "hall-a-in", ADA).reason == "lockdown"  # type: ignore[union-attr]
    lift = rig.send_console("lift_lockdown", door="main-entrance")
    rig.committed(f"{lift}@bridge-1", "bridge-1")
    wait_until(lambda: not memory(halls).lockdown_all, 10, "the end of the site-wide fact, in halls")
    assert isinstance(rig.badge(lobby, "main-in", ADA), c.Grant)
    assert rig.badge(hall, "hall-a-in", GRACE).reason == "lockdown"  # type: ignore[union-attr]
    assert not any(isinstance(cmd, c.Lockdown) and not cmd.active for cmd in hall.commands)


def test_a_console_command_for_another_partitions_door_is_theirs_not_a_dead_letter(rig: Rig) -> None:
    rig.start("bridge-1")
    rig.start("halls")
    hall = rig.sim("ctl-hall-a")
    unlock = rig.send_console("unlock", door="hall-a", duration_s=30)
    rig.committed(f"{unlock}@halls", "halls")
    assert hall.wait_for_command(lambda cmd: isinstance(cmd, c.Unlock) and cmd.door == "hall-a")
    rig.send_console("lock", door="no-such-door")  # in no partition: refused by each, one dead letter for the site
    ours, theirs = rig.send_console("lock", door="main-entrance"), rig.send_console("lock", door="hall-a")
    rig.committed(f"{ours}@bridge-1", "bridge-1")  # each partition handles the console's commands in order
    rig.committed(f"{theirs}@halls", "halls")
    letters = [json.loads(e.detail)["code"] for chain in ("bridge-1", "halls") for e in rig.entries(chain, "input.rejected")]
    assert letters == ["unknown_door"], "the same refused payload is one dead letter (its id is the payload's)"
    assert not rig.entries("bridge-1", "console.unlock"), "bridge-1 serves no hall A: it says nothing of it"
    assert [e.event_id for e in rig.entries("bridge-1", "console.lock")] == [f"{ours}@bridge-1"]
    assert [e.event_id for e in rig.entries("halls", "console.lock")] == [f"{theirs}@halls"]


def test_a_lockdown_another_partition_commits_is_commanded_and_audited_here(rig: Rig) -> None:
    """A site lockdown row written by a partition while this one missed the console command (its own
    session expired, say): the notification alone locks our doors down, commanded and audited."""
    rig.start("bridge-1")
    halls = rig.start("halls")
    hall = rig.sim("ctl-hall-a")
    dba(rig, """INSERT INTO site_state ("key", value, event_id, "partition", updated_at)
                VALUES ('lockdown', 'true', 'console:x@bridge-1', 'bridge-1', now())""")
    dba(rig, "SELECT pg_notify(:ch, :p)", ch=CHANNEL, p=payload("bridge-1", ["lockdown"]))
    assert hall.wait_for_command(lambda cmd: isinstance(cmd, c.Lockdown) and cmd.active and set(cmd.doors) == {"hall-a", "cage-7", "hall-a-mantrap"})
    applied = wait_until(lambda: rig.entries("halls", "state.applied"), 10, "state.applied in chain halls")
    assert json.loads(applied[0].detail)["locked_down"] == ["cage-7", "hall-a", "hall-a-mantrap"]
    assert memory(halls).lockdown_all
    assert rig.badge(hall, "hall-a-in", ADA).reason == "lockdown"  # type: ignore[union-attr]
    # not written back as halls's fact
    with rig.engine.connect() as conn:
        assert conn.execute(text("""SELECT "partition" FROM site_state WHERE "key" = 'lockdown'""")).scalar_one() == "bridge-1"


# --- missed notifications ----------------------------------------------------------------------------


def listener_pid(rig: Rig, partition: str) -> int:
    with psycopg.connect(rig.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                           (f"badge-bridge-state-{partition}",)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_lost_listen_connection_is_recovered_by_a_full_reload(rig: Rig) -> None:
    halls = rig.start("halls")
    assert halls.shared_state is not None
    reloads = halls.shared_state.reloads
    grace = rig.person["Grace"]
    # a fact committed while nobody listened: no notification will ever tell of it
    dba(rig, """INSERT INTO site_state ("key", value, event_id, "partition", updated_at)
                VALUES (:k, '"lobby"', 'ctl-lobby:missed', 'bridge-1', now())""", k=f"position/{grace}")
    dba(rig, "SELECT pg_terminate_backend(:pid)", pid=listener_pid(rig, "halls"))
    wait_until(lambda: halls.shared_state is not None and halls.shared_state.reloads > reloads, 20, "a reconnection")
    wait_until(lambda: memory(halls).location.get(grace) == "lobby", 10, "the missed position after the reload")
    assert isinstance(rig.badge(rig.sim("ctl-hall-a"), "hall-a-mantrap-out", GRACE), c.Deny)  # into the lobby


def test_a_notification_storm_is_applied_whole(rig: Rig) -> None:
    """3,000 positions of another partition, one notification each, in one transaction; then one too big to
    list its keys (the reload marker): every fact arrives, none is journaled back."""
    halls = rig.start("halls")
    people = range(100_000, 103_000)
    with rig.engine.begin() as conn:
        conn.execute(text("""INSERT INTO site_state ("key", value, event_id, "partition", updated_at)
                             VALUES (:k, '"hall-a"', 'storm', 'bridge-1', now())"""), [{"k": f"position/{p}"} for p in people])
        for p in people:
            conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": CHANNEL, "p": payload("bridge-1", [f"position/{p}"])})
    wait_until(lambda: all(memory(halls).location.get(p) == "hall-a" for p in people), 30, "every position of the storm")
    many = [f"position/{p}" for p in range(200_000, 201_000)]
    assert json.loads(payload("bridge-1", many)) == {"from": "bridge-1", "all": True}
    assert len(payload("bridge-1", many[:10]).encode()) < PAYLOAD_MAX
    reloads = halls.shared_state.reloads if halls.shared_state else 0
    with rig.engine.begin() as conn:
        conn.execute(text("""INSERT INTO site_state ("key", value, event_id, "partition", updated_at)
                             VALUES (:k, '"noc"', 'storm', 'bridge-1', now())"""), [{"k": k} for k in many])
        conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": CHANNEL, "p": payload("bridge-1", many)})
    wait_until(lambda: all(memory(halls).location.get(p) == "noc" for p in range(200_000, 201_000)), 30, "the marker's reload")
    assert halls.shared_state is not None and halls.shared_state.reloads == reloads + 1
    with rig.engine.connect() as conn:
        assert conn.execute(text("""SELECT count(*) FROM site_state WHERE "partition" = 'halls'""")).scalar_one() == 0


# --- hostile rows and notifications -----------------------------------------------------------------------


def test_planted_rows_and_notifications_are_read_as_their_safe_value(rig: Rig) -> None:
    """A DBA plants garbage under a real partition's name and announces it: positions and the site lockdown
    are read as their safe values; our own doors' facts are never another partition's to give."""
    halls = rig.start("halls")
    assert halls.shared_state is not None
    ada, grace = rig.person["Ada"], rig.person["Grace"]
    memory_before = halls.shared_state.applied
    rows = {f"position/{ada}": '{"area": ', "lockdown": '"maybe"', "two-person/cage-7": f'{{"person": {grace}, '
            '"since": "2030-01-01T00:00:00Z"}', "position/../../etc": '"lobby"', "lockdown/door/nowhere": "true",
            "lockdown/door/hall-a": "false", "door/hall-a": '{"lock": "unlocked"}'}
    with rig.engine.begin() as conn:
        for key, value in rows.items():
            conn.execute(text("""INSERT INTO site_state ("key", value, event_id, "partition", updated_at)
                                 VALUES (:k, :v, 'planted', 'bridge-1', now())"""), {"k": key, "v": value})
        conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": CHANNEL, "p": payload("bridge-1", sorted(rows))})
    wait_until(lambda: halls.shared_state is not None and halls.shared_state.applied >= memory_before + len(rows), 10,
               "the planted facts to be read")
    state = memory(halls)
    assert state.lockdown_all, "a lockdown row that cannot be read reads as locked down"
    assert ada not in state.location and "cage-7" not in state.waiting
    assert "nowhere" not in state.lockdown_doors
    assert halls.processor is not None and halls.processor.door_state("hall-a").lock == "lockdown"
    applied = wait_until(lambda: rig.entries("halls", "state.applied"), 10, "the lockdown it caused, audited")
    assert "lockdown" in json.loads(applied[0].detail)["unreadable"]
    # notifications from no partition of the site, or that cannot be read: ignored, no reload, still serving
    reloads, seen = halls.shared_state.reloads, halls.shared_state.applied
    dba(rig, "SELECT pg_notify(:ch, :p)", ch=CHANNEL, p=payload("mallory", [f"position/{ada}"]))
    dba(rig, "SELECT pg_notify(:ch, :p)", ch=CHANNEL, p='{"from": "mallory", "all": true}')
    dba(rig, "SELECT pg_notify(:ch, :p)", ch=CHANNEL, p='{"from": 1, "keys": "x"}')
    dba(rig, "SELECT pg_notify(:ch, 'not json at all')", ch=CHANNEL)
    dba(rig, "SELECT pg_notify(:ch, :p)", ch=CHANNEL, p=payload("bridge-1", ["position/../../etc"]))  # a real one
    wait_until(lambda: halls.shared_state is not None and halls.shared_state.applied == seen + 1, 10,
               "the one notification of a partition, after the forged ones")
    assert halls.shared_state.reloads == reloads
    assert rig.badge(rig.sim("ctl-hall-a"), "hall-a-in", GRACE).reason == "lockdown"  # type: ignore[union-attr]
    assert grace not in state.location


def test_sqlite_has_no_listener(tmp_path: Path, sqlite_url: str, keys: KeyStore, broker: Broker,
                                ) -> None:
    """SQLite: one bridge, no partitions sharing, no notifications (the single-machine default)."""
    site_file = write_site(tmp_path, sqlite_url, broker_port=broker.port)
    config = load_config(site_file)
    engine = make_engine(sqlite_url)
    seed(engine, site_file, keys)
    bridge = Bridge(config, engine, keys)
    bridge.start()
    try:
        assert bridge.shared_state is None
    finally:
        bridge.stop()
        engine.dispose()



@pytest.mark.parametrize("query", ["application_name=bridge-a", "host=127.0.0.1:5432&host=127.0.0.1:5432"],
                         ids=["its own application name", "multi-host"])
def test_the_listener_connects_whatever_the_url_names(pg_url: str, query: str) -> None:
    """The URL's own application_name once clashed with the listener's (it never listened, and a standby
    waited 5 s before its broker session: the old active commanded meanwhile); a multi-host URL was read as
    one host named "h:5432"."""
    from sqlalchemy.engine import make_url

    from badge_bridge.failover.shared_state import SharedStateListener
    url = make_url(pg_url)
    if "host=" in query:
        url = url.set(host=None, port=None)
        query = query.replace("127.0.0.1:5432", f"{make_url(pg_url).host}:{make_url(pg_url).port or 5432}")
    engine = make_engine(f"{url.render_as_string(hide_password=False)}{'&' if url.query else '?'}{query}")
    stopping = threading.Event()
    listener = SharedStateListener(engine, "bridge-1", lambda facts, origin: None, stopping, ["bridge-1"])
    listener.start()
    try:
        assert listener.listening.wait(20), "the listener never listened"
    finally:
        stopping.set()
        listener.join(5)
        engine.dispose()
