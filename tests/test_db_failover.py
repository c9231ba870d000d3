"""A database that fails over loses nothing (issue 16, item 5).

Against a primary and a synchronous streaming standby of the test's own (tests/pg_cluster.py): the primary is
killed with SIGKILL (with its backends, as a dying machine) while a bridge takes traffic from simulated
controllers over a real Mosquitto, and the standby is promoted. The bridge reaches the database through one
multi-host URL (``target_session_attrs=read-write``), keeps answering cards from memory while its audit
writer queues, holds on to its lease (no standby took it), commits on the promoted server, and loses nothing
that was acknowledged before the kill. And a server that turns read-only under the writer is a database
that is away (retry, and elsewhere), never a refused row to quarantine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from badge_bridge.audit.verify import verify
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.bridge import Bridge
from badge_bridge.config import FailoverSection, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.db import describe, hosts_of, make_engine, migrate
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.failover.lease import Lease, holder_name
from badge_bridge.failover.runner import choose_partition
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, DeadLetter
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from tests.conftest import write_site
from tests.pg_cluster import PgPair
from tests.test_mqtt_bridge import seed
from tests.waiting import wait_until

DB = "badge"
CARDS = ("12:1001", "12:1002", "12:1003", "12:4242")
"""Three known cards and an unknown one: every one gets an answer (grant or deny) from the bridge."""
LANES = (("ctl-lobby", "main-in"), ("ctl-lobby", "main-out"), ("ctl-hall-a", "hall-a-in"))
INTERVAL_S = 0.02
"""Between two cards: 50 a second, steady, before, during and after the failover."""


@pytest.fixture
def pair() -> Iterator[PgPair]:
    with PgPair() as made:
        made.primary.sql(f"CREATE DATABASE {DB}")
        yield made


def _event(i: int) -> Event:
    now = datetime.now(UTC)
    return Event(id=f"ctl:{i}", kind="door.opened", source="ctl", ts=now, received_ts=now, door="lobby")


def _logged(engine: Engine, *kinds: str) -> list[str]:
    with engine.connect() as conn:
        query = select(AuditEntry.event_id)
        if kinds:
            query = query.where(AuditEntry.kind.in_(kinds))
        return list(conn.scalars(query))


def _dead_letters(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(DeadLetter)) or 0)


def test_a_server_turned_read_only_is_away_not_a_refused_row(pair: PgPair, keys: KeyStore) -> None:
    """The writer's pooled connection outlives a demotion (the old primary set read-only, as a failover
    manager fences it): its inserts are refused as read-only. That must be retried, on the server that accepts
    writes once there is one, and never quarantine the events."""
    migrate(make_engine(pair.primary.url(DB)))
    engine = make_engine(pair.multi_host_url(DB))
    writer = AuditWriter(engine, "bridge-1", keys.signer(), retry_max_s=0.2)
    writer.start()
    writer.submit(_event(0))
    assert writer.flush(30)
    pair.primary.sql("ALTER SYSTEM SET default_transaction_read_only = on")
    pair.primary.sql("SELECT pg_reload_conf()")
    wait_until(lambda: pair.primary.sql("SHOW default_transaction_read_only", DB) == [("on",)], 10,
               "the primary to turn read-only")
    for i in range(1, 6):
        writer.submit(_event(i))
    wait_until(lambda: writer.stats.retries >= 3, 30, "the writer to retry",
               detail=lambda: writer.stats)
    assert writer.stats.quarantined == 0 and writer.stats.committed == 1
    assert writer.stats.last_error is not None
    assert not writer.flush(0.5)  # still waiting, nothing dropped
    pair.promote()  # the read-only old primary stays up; the URL's second host now takes writes
    assert writer.flush(30), writer.stats
    promoted = make_engine(pair.standby.url(DB))
    assert sorted(_logged(promoted)) == [f"ctl:{i}" for i in range(6)]
    assert _logged(promoted, EventKind.AUDIT_QUARANTINED) == [] and _dead_letters(promoted) == 0
    assert writer.stats.quarantined == 0
    writer.stop()
    report = verify(promoted, pair.standby.url(DB), keys.trusted_public_keys())
    assert report.ok, report.findings[:5]
    engine.dispose()
    promoted.dispose()


def test_an_old_primary_back_as_a_standby_is_passed_over(pair: PgPair, keys: KeyStore) -> None:
    """After the failover the old primary is rewound and started as a standby of the promoted server; the
    URL still names it first. New connections pass it over (it takes no writes) and nothing is refused."""
    migrate(make_engine(pair.primary.url(DB)))
    engine = make_engine(pair.multi_host_url(DB))  # the old primary first
    writer = AuditWriter(engine, "bridge-1", keys.signer(), retry_max_s=0.2)
    writer.start()
    for i in range(5):
        writer.submit(_event(i))
    assert writer.flush(30)
    pair.primary.kill()
    pair.promote()
    for i in range(5, 10):
        writer.submit(_event(i))
    assert writer.flush(30), writer.stats
    pair.rejoin(pair.primary, pair.standby)
    assert pair.primary.in_recovery()
    engine.dispose()  # every connection from now on tries the old primary first
    for i in range(10, 15):
        writer.submit(_event(i))
    assert writer.flush(30), writer.stats
    writer.stop()
    promoted = make_engine(pair.standby.url(DB))
    assert sorted(_logged(promoted)) == sorted(f"ctl:{i}" for i in range(15))
    assert writer.stats.quarantined == 0 and _dead_letters(promoted) == 0
    lsn = pair.standby.sql("SELECT pg_current_wal_lsn()")[0][0]
    wait_until(lambda: pair.primary.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")[0][0], 30,
               "the old primary to replay the promoted server's log", detail=pair.primary.tail)
    assert sorted(_logged(make_engine(pair.primary.url(DB)))) == sorted(f"ctl:{i}" for i in range(15))
    report = verify(promoted, pair.standby.url(DB), keys.trusted_public_keys())
    assert report.ok, report.findings[:5]
    promoted.dispose()


def test_the_active_keeps_its_lease_across_a_failover(pair: PgPair) -> None:
    """While the database is away nobody can renew nor take the lease, and it expires on the row. When the
    promoted server answers, the active (alive all along) must get to renew it before a standby that polled
    just as long takes it: a needless takeover would cut a working bridge off its doors."""
    migrate(make_engine(pair.primary.url(DB)))
    engine = make_engine(pair.multi_host_url(DB))
    settings = FailoverSection(lease_s=1.0, renew_s=0.2, poll_s=0.05)
    active, standby = Lease(engine, "p1", "active", settings), Lease(engine, "p1", "standby", settings)
    taken = active.try_acquire()
    assert taken is not None
    stopping, fenced = threading.Event(), threading.Event()
    active.keep(stopping, lambda _exc: fenced.set())
    took: list[object] = []
    watcher = threading.Thread(target=lambda: took.append(standby.acquire(stopping)), daemon=True)
    watcher.start()
    try:
        wait_until(lambda: _lease_row(engine) == ("active", taken.token, True), 10, "the active to hold the lease")
        pair.primary.kill()
        wait_until(lambda: active.db_away, 10, "the active to see the database away")
        gone = time.monotonic()
        wait_until(lambda: time.monotonic() > gone + 2 * settings.lease_s, 10, "the lease to expire on the row")
        pair.promote()
        promoted = time.monotonic()
        wait_until(lambda: time.monotonic() > promoted + 3 * settings.lease_s or fenced.is_set() or took, 30,
                   "three lease lengths on the promoted server")
        assert not fenced.is_set() and not took, "the standby took the lease from a live active"
        assert _lease_row(engine) == ("active", taken.token, True)  # renewed on the promoted server
        assert not active.db_away
    finally:
        stopping.set()
        watcher.join(10)
        engine.dispose()


@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous"])
def test_what_a_failover_loses_with_each_kind_of_replication(synchronous: bool, keys: KeyStore) -> None:
    """The standby stops receiving (its WAL sender frozen), five events are submitted, the primary is killed
    and the standby promoted. Synchronous: the five were never acknowledged (their commits waited for the
    standby); the writer commits them on the promoted server, nothing is lost. Asynchronous: the five were
    acknowledged and are gone with the primary; the writer must not write on over the hole (which would read
    as a deletion) but see its last entries missing, raise the alarm and go on in a new chain."""
    with PgPair(synchronous=synchronous) as pair:
        pair.primary.sql(f"CREATE DATABASE {DB}")
        migrate(make_engine(pair.primary.url(DB)))
        engine = make_engine(pair.multi_host_url(DB))
        writer = AuditWriter(engine, "bridge-1", keys.signer(), retry_max_s=0.2)
        writer.start()
        for i in range(5):
            writer.submit(_event(i))
        assert writer.flush(30)
        wait_until(pair.caught_up, 30, "the standby to replay the first five")
        pair.hold_replication()
        for i in range(5, 10):
            writer.submit(_event(i))
        assert writer.flush(2) is not synchronous  # synchronous commits wait for the standby
        pair.primary.kill()
        pair.promote()
        for i in range(10, 15):
            writer.submit(_event(i))
        assert writer.flush(30), writer.stats
        writer.stop()
        promoted = make_engine(pair.standby.url(DB))
        logged = _logged(promoted)
        held = {f"ctl:{i}" for i in range(5, 10)}
        if synchronous:
            assert sorted(logged) == sorted(f"ctl:{i}" for i in range(15))
            assert _logged(promoted, EventKind.ALARM_RAISED) == []
        else:
            assert not held & set(logged)  # acknowledged, and lost with the primary
            assert {f"ctl:{i}" for i in (*range(5), *range(10, 15))} <= set(logged)
            with promoted.connect() as conn:
                chains = set(conn.scalars(select(AuditEntry.chain_id).where(AuditEntry.event_id.like("ctl:1_"))))
                alarm = conn.scalar(select(AuditEntry.detail).where(AuditEntry.kind == EventKind.ALARM_RAISED))
            assert chains == {"bridge-1~2"} and alarm is not None and "audit.foreign_entry" in alarm
        report = verify(promoted, pair.standby.url(DB), keys.trusted_public_keys())
        assert report.ok, report.findings[:5]  # no hole: the lost entries never existed on this server
        engine.dispose()
        promoted.dispose()


def _lease_row(engine: Engine) -> tuple[str, int, bool]:
    """(holder, token, unexpired) of partition p1."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT holder, token, expires_at > clock_timestamp() FROM partition_lease "
                                "WHERE partition = 'p1'")).one()
    return str(row[0]), int(row[1]), bool(row[2])


@dataclass
class Traffic:
    """Cards presented at a steady rate from simulated controllers, and when each was presented."""

    sims: dict[str, SimController]
    presented: list[tuple[float, str]] = field(default_factory=list)
    """(time.monotonic(), the id of its entry in the log: ``<controller>:<event id>``)."""
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        while not self.stopping.wait(INTERVAL_S):
            controller, reader = LANES[i % len(LANES)]
            event_id = self.sims[controller].present(reader, None, "wiegand26", CARDS[i % len(CARDS)])
            self.presented.append((time.monotonic(), f"{controller}:{event_id}"))
            i += 1

    def answered(self) -> set[str]:
        """The cards the bridge answered (a grant or a deny), by the ids of their entries."""
        return {f"{sim.key}:{cmd.request}" for sim in self.sims.values() for cmd in list(sim.commands)
                if isinstance(cmd, (c.Grant, c.Deny))}

    def since(self, t: float) -> list[str]:
        return [event_id for at, event_id in list(self.presented) if at >= t]


@dataclass
class Figures:
    """What a failover did, for the report and the bench."""

    kill_to_first_commit_s: float = 0.0
    """From the primary's kill to the first commit on the promoted server."""
    kill_to_promoted_s: float = 0.0
    """The outage before the promotion: held for longer than a lease, to show the doors carry on."""
    promoted_to_first_commit_s: float = 0.0
    """What the bridge adds: finding the promoted server through the URL (and the writer's back-off)."""
    cards_presented_meanwhile: int = 0
    cards_answered_meanwhile: int = 0
    events_queued_at_promotion: int = 0
    acknowledged_before_kill: int = 0
    cards_presented: int = 0
    entries_lost: int = 0
    entries_doubled: int = 0


def run_failover(tmp_path: Path, pair: PgPair, broker: Broker, keys: KeyStore) -> Figures:
    """The scenario: a bridge under steady card traffic, the primary killed, the standby promoted after the
    bridge has answered cards for longer than a lease without the database; then every card checked."""
    migrate(make_engine(pair.primary.url(DB)))
    url = pair.multi_host_url(DB)
    site_file = write_site(tmp_path, url, broker_port=broker.port)
    config = load_config(site_file)
    engine = make_engine(url)
    seed(engine, site_file, keys)
    partition = choose_partition(config, None)
    lease = Lease(engine, partition, holder_name("failover-test"), config.failover)
    stopping = threading.Event()
    takeover = lease.acquire(stopping)
    bridge = Bridge(config.partition_view(partition), engine, keys, lease, takeover, stopping)
    commits: list[tuple[float, list[str]]] = []
    sims: dict[str, SimController] = {}
    traffic_thread: threading.Thread | None = None
    traffic = Traffic(sims)
    stopped = False
    try:
        bridge.start()
        assert bridge.mqtt is not None
        # The bridge's broker session stands in for the lease while the database is away (lease.py); the
        # bridge is to wire this hook itself (wt-runtime); here it is its MQTT connection.
        lease.session_intact = bridge.mqtt.connected.is_set
        publish = bridge.writer.on_commit

        def on_commit(events: list[Event]) -> None:
            commits.append((time.monotonic(), [e.id for e in events]))
            if publish is not None:
                publish(events)

        bridge.writer.on_commit = on_commit
        for key in ("ctl-lobby", "ctl-hall-a"):
            readers = {r.key: r.door for r in config.readers if r.controller == key}
            user, password = broker.login(key)
            sims[key] = SimController(key, "127.0.0.1", broker.port, sync_key=keys.sync_key(key), readers=readers,
                                      username=user, password=password, walk_through=False)
            sims[key].wait_connected()
        traffic_thread = threading.Thread(target=traffic.run, name="cards", daemon=True)
        traffic_thread.start()
        wait_until(lambda: len(_committed_cards(commits, traffic)) >= 50, 60, "50 cards committed before the kill")

        # The listener of the other partitions' facts reads the multi-host URL as libpq's host list (it once
        # asked the resolver for a host named "127.0.0.1:5432" and never listened).
        assert bridge.shared_state is not None
        wait_until(bridge.shared_state.listening.is_set, 30, "the site state listener listening")
        killed = time.monotonic()
        pair.primary.kill()
        # The doors carry on from memory for longer than a lease: decisions do not wait for the database.
        wait_until(lambda: not bridge.writer.stats.healthy and lease.db_away, 30, "the bridge to see the database away")
        away = time.monotonic()
        # A commit the primary acknowledged just before the kill may be reported just after it (the callback runs
        # once COMMIT returns): every commit reported before the bridge saw the database away was acknowledged.
        acknowledged = {i for at, ids in list(commits) if at < away for i in ids}
        wait_until(lambda: len(set(traffic.since(killed + config.failover.lease_s)) & traffic.answered()) >= 20, 60,
                   "cards answered by the bridge a lease's length after the kill",
                   detail=lambda: (len(traffic.since(killed)), bridge.writer.stats.last_error))
        assert not [1 for at, _ in list(commits) if at >= away], "nothing can commit with the primary dead"
        presented_meanwhile = traffic.since(killed)
        wait_until(lambda: set(presented_meanwhile) <= traffic.answered(), 10,
                   "an answer to every card presented since the kill, before the promotion")
        queued = bridge.writer.depth()
        pair.promote()
        promoted = time.monotonic()
        wait_until(lambda: any(at >= promoted for at, _ in list(commits)), 60, "the first commit on the promoted server",
                   detail=lambda: bridge.writer.stats.last_error)
        first_commit = min(at for at, _ in commits if at >= promoted)
        wait_until(bridge.shared_state.listening.is_set, 60, "the site state listener back, on the promoted server")
        wait_until(lambda: len(set(traffic.since(first_commit)) & _committed(commits)) >= 50, 60,
                   "50 more cards committed on the promoted server")
        traffic.stopping.set()
        traffic_thread.join(5)
        presented = [event_id for _, event_id in traffic.presented]
        after = make_engine(pair.standby.url(DB))
        wait_until(lambda: set(presented) <= set(_logged(after)), 60, "every card in the log",
                   detail=lambda: len(set(presented) - set(_logged(after))))
        wait_until(lambda: set(presented) <= traffic.answered(), 30, "an answer to every card")
        logged = _logged(after, EventKind.ACCESS_GRANTED, EventKind.ACCESS_DENIED)
        assert acknowledged <= set(_logged(after)), "an entry acknowledged before the kill is missing"
        assert sorted(logged) == sorted(presented)  # every card, exactly once
        assert _logged(after, EventKind.AUDIT_QUARANTINED) == [] and _dead_letters(after) == 0
        assert bridge.writer.fenced is None and lease.may_command()
        with after.connect() as conn:  # the lease crossed the failover: still ours, same token
            holder, token = conn.execute(text("SELECT holder, token FROM partition_lease WHERE partition = :p"),
                                         {"p": partition}).one()
        assert (holder, token) == (lease.holder, takeover.token if takeover else None)
        bridge.stop()
        stopped = True
        report = verify(after, pair.standby.url(DB), keys.trusted_public_keys())
        assert report.ok, report.findings[:5]
        after.dispose()
        return Figures(
            kill_to_first_commit_s=round(first_commit - killed, 3), kill_to_promoted_s=round(promoted - killed, 3),
            promoted_to_first_commit_s=round(first_commit - promoted, 3),
            cards_presented_meanwhile=len(presented_meanwhile), cards_answered_meanwhile=len(presented_meanwhile),
            events_queued_at_promotion=queued,
            acknowledged_before_kill=len(acknowledged), cards_presented=len(presented),
            entries_lost=len(set(presented) - set(logged)), entries_doubled=len(logged) - len(set(logged)))
    finally:
        traffic.stopping.set()
        if traffic_thread is not None:
            traffic_thread.join(5)
        for sim in sims.values():
            sim.close()
        stopping.set()
        if not stopped and bridge.processor is not None:
            bridge.stop()
        engine.dispose()


def _committed(commits: list[tuple[float, list[str]]]) -> set[str]:
    return {i for _, ids in list(commits) for i in ids}


def _committed_cards(commits: list[tuple[float, list[str]]], traffic: Traffic) -> set[str]:
    return _committed(commits) & {event_id for _, event_id in list(traffic.presented)}


@pytest.mark.slow
def test_failover_under_load_loses_nothing_and_the_doors_carry_on(tmp_path: Path, pair: PgPair, broker: Broker,
                                                                    keys: KeyStore) -> None:
    figures = run_failover(tmp_path, pair, broker, keys)
    print(figures)
    assert figures.entries_lost == 0 and figures.entries_doubled == 0
    assert figures.cards_answered_meanwhile == figures.cards_presented_meanwhile > 0
    assert figures.acknowledged_before_kill >= 50


def test_a_multi_host_url_is_for_the_server_that_takes_writes() -> None:
    """Several hosts and no ``target_session_attrs``: the engine asks for read-write, else the writer could
    settle on a standby; the operator's own choice is kept; errors name every host."""
    engine = make_engine("postgresql+psycopg://bridge@/site?host=db1:5432&host=db2:5432", must_exist=False)
    assert engine.url.query["target_session_attrs"] == "read-write"
    assert hosts_of(str(engine.url.render_as_string(hide_password=True))) == ["db1:5432", "db2:5432"]
    chosen = make_engine("postgresql+psycopg://bridge@/site?host=db1&host=db2&target_session_attrs=primary")
    assert chosen.url.query["target_session_attrs"] == "primary"
    assert "db1:5432,db2:5432" in describe(OSError("connection refused"),
                                           "postgresql+psycopg://bridge@/site?host=db1:5432&host=db2:5432")
