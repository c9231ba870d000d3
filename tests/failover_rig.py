"""A partition served by several real bridge processes (`run --partition P --instance I`) on one PostgreSQL
database and one Mosquitto, under a steady stream of cards from a simulated controller; what the controller
was answered, what went over the commands topic and what the audit log holds. Used by tests/test_failover.py
and bench/bench_failover.py."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge.config import SiteConfig
from badge_bridge.controllers import contract as c
from badge_bridge.models import AuditEntry
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.topics import Topics
from tests.bridge_proc import CLI, BridgeProcess, cli_env
from tests.waiting import wait_until

STANDBY = "standby (another bridge holds the lease)"
"""What a bridge logs once it waits as a standby (failover/lease.py)."""
ACTIVE = "started for site"


def sim(config: SiteConfig, broker: Broker, key: str, sync_key: bytes) -> SimController:
    """A simulated controller of the site that always asks the bridge (never decides offline, so a card during
    a failover waits in the broker for the next active)."""
    readers = {r.key: r.door for r in config.readers if r.controller == key}
    username, password = broker.login(key)
    controller = SimController(key, "127.0.0.1", broker.port, sync_key=sync_key, readers=readers,
                               walk_through=False, username=username, password=password)
    controller.go_online()
    controller.wait_connected()
    return controller


class Cards:
    """One card presented at a reader every ``every_s`` until stopped: the requests and when each was sent."""

    def __init__(self, controller: SimController, reader: str, number: str, every_s: float = 0.05) -> None:
        self.controller, self.reader, self.number, self.every_s = controller, reader, number, every_s
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cards-{reader}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.requests.append(self.controller.present(self.reader, None, "wiegand26", self.number))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def answered(self) -> set[str]:
        return {cmd.request for cmd in list(self.controller.commands) if isinstance(cmd, (c.Grant, c.Deny))}

    def unanswered(self) -> list[str]:
        answered = self.answered()
        return [r for r in self.requests if r not in answered]

    def wait_answered(self, timeout: float = 60) -> None:
        wait_until(lambda: not self.unanswered(), timeout, f"an answer to every card at {self.reader}",
                   detail=lambda: f"{len(self.unanswered())} of {len(self.requests)} unanswered")


@dataclass(frozen=True)
class Seen:
    """A command as it went over the broker: when the watcher got it, and the command."""

    at: float
    """``time.monotonic()`` on arrival."""
    command: dict[str, object]

    @property
    def decided(self) -> datetime:
        """When the bridge that sent it decided it (the command's own time)."""
        return datetime.fromisoformat(str(self.command["ts"]))


class CommandWatch:
    """Every command published to a controller, seen by the test-only watcher account."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.seen: list[Seen] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(*broker.login("watcher"))
        self.client.on_message = lambda _c, _u, m: self.seen.append(Seen(time.monotonic(), json.loads(m.payload)))
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        wait_until(subscribed.is_set, 10, f"the broker to confirm the subscription to {topic}")

    def first_decided_after(self, moment: datetime) -> Seen | None:
        return next((s for s in list(self.seen) if s.decided > moment), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Partition:
    """The bridges of one partition of a site file, started and killed by instance name."""

    def __init__(self, site_file: Path, partition: str, logs: Path) -> None:
        self.site_file, self.partition, self.logs = site_file, partition, logs
        self.bridges: dict[str, BridgeProcess] = {}

    def bridge(self, instance: str) -> BridgeProcess:
        if instance not in self.bridges:
            self.bridges[instance] = BridgeProcess(self.site_file, self.logs / f"{self.partition}-{instance}.log",
                                                   ["run", "--partition", self.partition, "--instance", instance])
        return self.bridges[instance]

    def active(self, instance: str) -> BridgeProcess:
        bridge = self.bridge(instance)
        bridge.start(ACTIVE)
        return bridge

    def standby(self, instance: str) -> BridgeProcess:
        bridge = self.bridge(instance)
        bridge.start(STANDBY)
        return bridge

    def close(self) -> None:
        for bridge in self.bridges.values():
            bridge.close()


def entries(engine: Engine, chain: str) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.chain_id == chain).order_by(AuditEntry.seq)))


def copies(engine: Engine, event_ids: list[str]) -> dict[str, int]:
    """How many audit entries each event id has (0 for one that is missing)."""
    with Session(engine) as session:
        found: dict[str, int] = {e: n for e, n in session.execute(
            select(AuditEntry.event_id, func.count()).where(AuditEntry.event_id.in_(event_ids)).group_by(AuditEntry.event_id))}
    return {e: found.get(e, 0) for e in event_ids}


def settled(engine: Engine, event_ids: list[str], timeout: float = 60) -> dict[str, int]:
    """``copies`` once every event is in the log (an answer leaves before its entry commits), or at the
    timeout."""
    try:
        wait_until(lambda: 0 not in copies(engine, event_ids).values(), timeout, "every event in the log")
    except AssertionError:
        pass  # the caller reports the missing ones
    return copies(engine, event_ids)


def verify(site_file: Path) -> subprocess.CompletedProcess[str]:
    """`badge-bridge audit verify` over every chain of the site's database."""
    return subprocess.run([*CLI, "audit", "verify"], env=cli_env(site_file), capture_output=True, text=True,
                          timeout=300)


def commands_topic(config: SiteConfig, controller: str) -> str:
    return Topics(config.mqtt.topic_prefix).controller_commands(controller)

