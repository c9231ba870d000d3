"""Failover along ``mqtt.brokers``: two independent Mosquittos, the first killed with SIGKILL under load; the
bridge, its status connection, the simulated controllers and the console's client all move to the second,
traffic goes on, and the receipts make good what the dead broker held: nothing lost, nothing doubled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from badge_bridge.config import load_config
from badge_bridge.controllers import contract as c
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_client import Failover, site_client
from badge_bridge.sim.broker import Broker, for_site
from badge_bridge.topics import CAMERA, CONSOLE
from tests.conftest import TEST_ACL, TEST_USERS, example_site, require_mosquitto, write_site
from tests.test_mqtt_bridge import READERS, Site, assert_exactly_once, publish_stream, stream_ids_in_log
from tests.waiting import wait_until
from web.services import BridgeLink, LiveHub


def test_every_site_client_walks_the_brokers_in_turn(tmp_path: Path) -> None:
    """The one builder of clients gives every role the site's list (the camera worker, console and firmware
    tool build theirs with it); paho is pointed at the next broker before each attempt."""
    site_file = write_site(tmp_path, "sqlite://", ("port = 1883", 'port = 1883\nbrokers = ["10.0.0.2:1884", "[::1]:1885"]'))
    config = load_config(site_file)
    client = site_client(config, "cam", role=CAMERA, key="cam-lobby")
    failover = client.on_pre_connect
    assert isinstance(failover, Failover)
    assert failover.endpoints == [("127.0.0.1", 1883), ("10.0.0.2", 1884), ("::1", 1885)]
    tried = []
    for _ in range(4):
        failover(client, None)
        tried.append((client.host, client.port))
    assert tried == [("127.0.0.1", 1883), ("10.0.0.2", 1884), ("::1", 1885), ("127.0.0.1", 1883)]
    assert isinstance(site_client(config, "console", role=CONSOLE).on_pre_connect, Failover)


@pytest.fixture
def second_broker(tmp_path: Path, keys: KeyStore) -> Iterator[Broker]:
    """An independent Mosquitto for the same site (same accounts and ACL), sharing nothing with the first."""
    require_mosquitto()
    b = for_site(tmp_path / "mosquitto-2", example_site(tmp_path), test_users=TEST_USERS, test_acl=TEST_ACL)
    b.start()
    yield b
    b.stop()


@pytest.mark.slow
def test_the_first_broker_dies_and_every_client_moves_to_the_second(
    tmp_path: Path, db_url: str, broker: Broker, second_broker: Broker, keys: KeyStore
) -> None:
    site = Site(tmp_path, db_url, broker, keys,
                ("reconnect_max_s = 1", f'reconnect_max_s = 1\nbrokers = ["127.0.0.1:{second_broker.port}"]'))
    try:
        bridge = site.start_bridge()
        assert bridge.mqtt is not None and site.status is not None
        endpoints = site.config.mqtt.endpoints()
        sims = [site.sim(k, walk_through=False, receipt_timeout_s=2.0, brokers=endpoints) for k in READERS]
        console = BridgeLink(site.config, LiveHub())
        console.start()
        assert console.connected.wait(10)
        result: list[str] = []
        publisher = threading.Thread(target=lambda: result.extend(publish_stream(sims, 2_000, 400)))
        publisher.start()
        wait_until(lambda: len(stream_ids_in_log(site.engine)) >= 300, timeout=60, what="a first part of the stream")
        broker.kill()
        assert len(stream_ids_in_log(site.engine)) < 2_000, "the kill came too late to test anything"

        moved = [bridge.mqtt.client, site.status.client, console.client, *(sim.client for sim in sims)]
        wait_until(lambda: all(cl.is_connected() and cl.port == second_broker.port for cl in moved), timeout=30,
                   what="every client on the second broker",
                   detail=lambda: str([(cl._client_id, cl.port, cl.is_connected()) for cl in moved]))
        publisher.join()
        for sim in sims:
            sim.wait_receipted(timeout=120)
        assert_exactly_once(site.engine, db_url, keys, result)

        # Traffic goes on through the second broker: a card is decided by the bridge and answered there.
        lobby = sims[0]
        assert not lobby.offline
        eid = lobby.present(READERS[lobby.key][0], None, "wiegand26", "12:1001")
        lobby.wait_for_command(lambda cmd: isinstance(cmd, c.Grant) and cmd.request == eid)
        console.stop()
    finally:
        site.close()
