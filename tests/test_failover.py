"""A partition's bridges as real processes (`run --partition P --instance I`) on PostgreSQL and Mosquitto:
the active killed (SIGKILL) or frozen (SIGSTOP) under a steady stream of cards, the standby taking over the
lease and the MQTT session; nothing lost, nothing doubled, and an old active that wakes up sends and commits
nothing. Then two partitions side by side, each serving only its own controllers."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from badge_bridge.bridge import EXIT_FENCED, Bridge
from badge_bridge.config import FailoverSection, SiteConfig, load_config
from badge_bridge.db import make_engine
from badge_bridge.event_kinds import EventKind
from badge_bridge.failover.lease import Lease
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from tests.conftest import write_site
from tests.failover_rig import Cards, CommandWatch, Partition, commands_topic, entries, settled, sim, verify
from tests.test_mqtt_bridge import seed
from tests.waiting import wait_until

PARTITION = "bridge-1"
"""The example site's only partition (its ``site.instance``)."""
ALAN = "12:1003"
"""May pass the main entrance (staff), any number of times: every card is granted."""
ADA = "12:1001"


class Site:
    def __init__(self, tmp_path: Path, pg_url: str, broker: Broker, keys: KeyStore, *changes: tuple[str, str]) -> None:
        self.site_file = write_site(tmp_path, pg_url, *changes, broker_port=broker.port)
        self.config: SiteConfig = load_config(self.site_file)
        self.engine: Engine = make_engine(pg_url)
        self.broker, self.keys, self.tmp_path = broker, keys, tmp_path
        seed(self.engine, self.site_file, keys)
        self.partitions: list[Partition] = []
        self.closers: list[Callable[[], None]] = []

    def partition(self, key: str) -> Partition:
        self.partitions.append(Partition(self.site_file, key, self.tmp_path))
        return self.partitions[-1]

    def controller(self, key: str) -> SimController:
        controller = sim(self.config, self.broker, key, self.keys.sync_key(key))
        self.closers.append(controller.close)
        return controller

    def watch(self, controller: str) -> CommandWatch:
        watch = CommandWatch(self.broker, commands_topic(self.config, controller))
        self.closers.append(watch.close)
        return watch

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        for partition in self.partitions:
            partition.close()
        self.engine.dispose()


@pytest.fixture
def site(tmp_path: Path, pg_url: str, broker: Broker, keys: KeyStore) -> Iterator[Site]:
    s = Site(tmp_path, pg_url, broker, keys)
    yield s
    s.close()


def card_ids(controller: str, cards: Cards) -> list[str]:
    return [f"{controller}:{r}" for r in cards.requests]


def took_over(site: Site, chain: str) -> list[AuditEntry]:
    return [e for e in entries(site.engine, chain) if e.kind == EventKind.BRIDGE_TOOK_OVER]


def test_sigkill_of_the_active_under_load_loses_and_doubles_nothing(site: Site) -> None:
    part = site.partition(PARTITION)
    a = part.active("a")
    b = part.standby("b")
    lobby = site.controller("ctl-lobby")
    watch = site.watch("ctl-lobby")
    cards = Cards(lobby, "main-in", ALAN)
    wait_until(lambda: len(cards.answered()) >= 20, 30, "the active to answer cards")
    killed_at = datetime.now(UTC)
    a.kill()
    b.wait_for(" started for site", 30)
    wait_until(lambda: watch.first_decided_after(killed_at) is not None, 30, "a command from the new active")
    wait_until(lambda: len(cards.answered()) >= len(cards.requests) - 5 and len(cards.requests) > 80, 60,
               "the new active to answer cards")
    cards.stop()
    cards.wait_answered()
    counts = settled(site.engine, card_ids("ctl-lobby", cards))
    assert [e for e, n in counts.items() if n != 1] == [], "every card exactly once in the log"
    assert "bridge.took_over" in b.output()
    (entry,) = took_over(site, PARTITION)
    detail = json.loads(entry.detail)
    assert detail["previous_holder"].startswith("a@") and detail["holder"].startswith("b@")
    result = verify(site.site_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_old_active_woken_after_a_takeover_sends_and_commits_nothing(site: Site) -> None:
    """SIGSTOP of the active mid-stream (messages in flight, commands and entries queued in it), the standby
    takes over, then SIGCONT: the old process exits with 75; every command on the wire after it woke was
    decided by the new active, and no entry after the takeover was received by the old one."""
    part = site.partition(PARTITION)
    a = part.active("a")
    b = part.standby("b")
    lobby = site.controller("ctl-lobby")
    watch = site.watch("ctl-lobby")
    cards = Cards(lobby, "main-in", ALAN, every_s=0.02)
    wait_until(lambda: len(cards.answered()) >= 20, 30, "the active to answer cards")
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    try:
        b.wait_for(" started for site", 30)
        (entry,) = wait_until(lambda: took_over(site, PARTITION), 30, "bridge.took_over in the log")
        taken = datetime.fromtimestamp(entry.ts_us / 1e6, UTC)
        wait_until(lambda: watch.first_decided_after(taken) is not None, 30, "a command from the new active")
        woke = time.monotonic()
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert a.proc.wait(30) == EXIT_FENCED
    assert "nothing more is committed" in a.output() or "took over the MQTT session" in a.output() \
        or "another bridge took the lease" in a.output(), a.output()[-2000:]
    cards.stop()
    cards.wait_answered()
    assert "MQTT disconnected" not in b.output(), "the old active took the MQTT session back"
    stale = [s.command for s in watch.seen if s.at >= woke and s.decided < taken]
    assert stale == [], "commands the old active decided reached the controller after it woke"
    log = entries(site.engine, PARTITION)
    mark = next(e for e in log if e.kind == EventKind.BRIDGE_TOOK_OVER)
    late = [(e.seq, e.kind, e.event_id) for e in log if e.seq > mark.seq and e.received_us < mark.received_us]
    assert late == [], "entries the old active received, committed after the takeover"
    counts = settled(site.engine, card_ids("ctl-lobby", cards))
    assert [e for e, n in counts.items() if n != 1] == [], "every card exactly once in the log"
    result = verify(site.site_file)
    assert result.returncode == 0, result.stdout + result.stderr


PARTITIONED = (('name = "Hall A controller"\nkind = "mqtt"', 'name = "Hall A controller"\nkind = "mqtt"\npartition = "p2"'),
               ('topic_prefix = "badge-bridge/v1"', 'topic_prefix = "badge-bridge/v1"\nusername = "bridge-1"'))
"""Hall A's controller (doors hall-a and cage-7) in a partition of its own; both partitions' bridges log in
on the site's one bridge account."""


def test_two_partitions_serve_their_own_controllers_and_one_failing_leaves_the_other_answered(
        tmp_path: Path, pg_url: str, broker: Broker, keys: KeyStore) -> None:
    site = Site(tmp_path, pg_url, broker, keys, *PARTITIONED)
    try:
        first, second = site.partition(PARTITION), site.partition("p2")
        first.active("a")
        hall_bridge = second.active("a")
        lobby, hall = site.controller("ctl-lobby"), site.controller("ctl-hall-a")
        lobby_cards, hall_cards = Cards(lobby, "main-in", ALAN, 0.1), Cards(hall, "hall-a-out", ADA, 0.1)
        wait_until(lambda: len(lobby_cards.answered()) >= 10 and len(hall_cards.answered()) >= 10, 30,
                   "both partitions to answer their cards")
        hall_bridge.kill()
        answered = len(lobby_cards.answered())
        wait_until(lambda: len(lobby_cards.answered()) >= answered + 20, 30, "the lobby answered on")
        assert len(lobby_cards.unanswered()) <= 2  # the last ones on their way
        stranded = len(hall_cards.unanswered())
        wait_until(lambda: len(hall_cards.unanswered()) > stranded, 10, "hall A's cards waiting in the broker")
        second.active("b")  # the lease of the killed one expires: b takes over and drains the session
        lobby_cards.stop()
        hall_cards.stop()
        lobby_cards.wait_answered()
        hall_cards.wait_answered()
        for chain, controller, cards in ((PARTITION, "ctl-lobby", lobby_cards), ("p2", "ctl-hall-a", hall_cards)):
            mine = card_ids(controller, cards)
            assert [e for e, n in settled(site.engine, mine).items() if n != 1] == []
            assert {e.event_id for e in entries(site.engine, chain)} >= set(mine)
            sources = {e.source for e in entries(site.engine, chain) if e.kind.startswith("access.")}
            assert sources == {controller}, f"chain {chain} decided for {sources}"
        result = verify(site.site_file)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        site.close()



def test_no_reconnection_to_the_broker_unless_the_lease_is_surely_ours(tmp_path: Path, pg_url: str, keys: KeyStore,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """paho asks before every (re)connection: a bridge whose lease is not surely its own would take the MQTT
    session back from the standby that took over, and flush the commands paho kept while it was frozen."""
    config = load_config(write_site(tmp_path, pg_url)).partition_view(PARTITION)
    engine = make_engine(pg_url)
    lease = Lease(engine, PARTITION, "a", FailoverSection(lease_s=0.6, renew_s=0.2, poll_s=0.05))
    stopping = threading.Event()
    bridge = Bridge(config, engine, keys, lease, stopping=stopping)
    waiting = "not reconnecting to the broker until the lease is surely ours"

    def connect() -> list[str]:
        outcome: list[str] = []

        def attempt() -> None:
            try:
                bridge._before_connect()
                outcome.append("connects")
            except OSError:
                outcome.append("gives up")

        threading.Thread(target=attempt, daemon=True).start()
        return outcome

    never_held = connect()
    wait_until(lambda: caplog.text.count(waiting) == 1, 10, "the attempt to wait")
    assert never_held == []
    assert lease.try_acquire() is not None
    wait_until(lambda: never_held == ["connects"], 10, "the connection once the lease is ours")
    wait_until(lambda: not lease.may_command(), 10, "the lease to lapse (no renewals)")
    lapsed = connect()
    wait_until(lambda: caplog.text.count(waiting) == 2, 10, "the attempt to wait")
    assert lapsed == []
    stopping.set()
    wait_until(lambda: lapsed == ["gives up"], 10, "the attempt to end when the bridge stops")
    engine.dispose()
