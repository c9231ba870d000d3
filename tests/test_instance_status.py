"""Per-instance bridge status (docs/mqtt.md, "Bridge → consoles"): two real `badge-bridge run` processes of one
partition on PostgreSQL, one active, one standby, each with its own retained status and last will. A dead
standby leaves the controllers online; the active's death with no other instance alive sends them offline."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from badge_bridge.config import load_config
from badge_bridge.controllers import contract as c
from badge_bridge.db import make_engine
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import SimController
from badge_bridge.topics import Topics
from tests.bridge_proc import CLI, cli_env
from tests.test_mqtt_bridge import listen, seed
from tests.waiting import wait_until


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """`badge-bridge run --instance NAME` processes by name, killed at the end if still running."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_dead_standby_leaves_the_partition_online_and_a_dead_active_with_none_left_does_not(
    tmp_path: Path, pg_url: str, broker: Broker, keys: KeyStore, instances: dict[str, subprocess.Popen[bytes]]
) -> None:
    from tests.conftest import write_site

    site_file = write_site(tmp_path, pg_url, broker_port=broker.port)
    config = load_config(site_file)
    engine = make_engine(pg_url)
    seed(engine, site_file, keys)
    partition = config.site.instance
    _, statuses = listen(broker, Topics(config.mqtt.topic_prefix).bridge_status(partition))

    def latest(instance: str) -> dict[str, object] | None:
        return next((s for s in reversed(statuses) if s["instance"] == instance), None)

    def run(instance: str) -> None:
        with (tmp_path / f"{instance}.log").open("ab") as out:
            instances[instance] = subprocess.Popen([*CLI, "run", "--instance", instance], env=cli_env(site_file),
                                                   stdout=out, stderr=out)

    run("alpha")
    wait_until(lambda: (latest("alpha") or {}).get("role") == "active", timeout=60, what="alpha active")
    run("beta")
    wait_until(lambda: (latest("beta") or {}).get("role") == "standby", timeout=60, what="beta standby")
    assert latest("beta") == {**latest("beta"), "online": True, "partition": partition}  # type: ignore[dict-item]

    lobby = SimController("ctl-lobby", "127.0.0.1", broker.port, sync_key=keys.sync_key("ctl-lobby"),
                          username="ctl-lobby", password=broker.passwords["ctl-lobby"], partition=partition,
                          readers={r.key: r.door for r in config.readers if r.controller == "ctl-lobby"},
                          walk_through=False)
    try:
        lobby.wait_connected()
        lobby.wait_for(lambda: len(lobby.bridges) == 2)
        assert not lobby.offline

        instances["beta"].send_signal(signal.SIGKILL)  # the standby dies: its last will speaks for it alone
        instances["beta"].wait(10)
        lobby.wait_for(lambda: lobby.bridges.get((partition, "beta")) is False)
        assert not lobby.offline
        eid = lobby.present("main-in", None, "wiegand26", "12:1001")
        grant = lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant) and cmd.request == eid, timeout=20)
        assert grant.door == "main-entrance"  # decided by the active bridge, not offline

        instances["alpha"].send_signal(signal.SIGKILL)  # the active dies, no instance left
        instances["alpha"].wait(10)
        lobby.wait_for(lambda: lobby.offline)
        assert lobby.bridges == {(partition, "alpha"): False, (partition, "beta"): False}
        assert latest("alpha") == {"v": 1, "online": False, "instance": "alpha",
                                                             "partition": partition}  # the last will: no role
    finally:
        lobby.close()
        engine.dispose()
