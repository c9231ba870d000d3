"""The demo's simulated esp-rfid (badge_bridge/sim/esp_rfid.py) against the bridge's esp-rfid driver on a real
Mosquitto: online from its boot message and heartbeats (esp-noc stayed offline for good in the demo, which
had no simulator for it), the user list the bridge syncs, its own decisions reported and re-checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge.keys import KeyStore
from badge_bridge.models import Alarm
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.esp_rfid import SimEspRfid
from tests.test_esp_broker import CARD, IP, dead_letters, secured, seed_noc_operator, site_broker  # noqa: F401
from tests.test_mqtt_bridge import Site, entries
from tests.waiting import wait_until

GRACE_S = 1


def _device(site: Site) -> SimEspRfid:
    device = SimEspRfid("esp-noc", IP, "127.0.0.1", site.broker.port, username="esp-noc",
                        password=site.broker.passwords["esp-noc"], heartbeat_s=0.2)
    assert device.connected.wait(10)
    return device


def _online_at(site: Site) -> datetime:
    wait_until(lambda: any(e.kind == "controller.online" and e.source == "esp-noc" for e in entries(site.engine)),
               what="esp-noc online")
    entry = next(e for e in entries(site.engine) if e.kind == "controller.online" and e.source == "esp-noc")
    return datetime.fromtimestamp(entry.received_us / 1e6, UTC)


def test_the_simulated_esp_rfid_is_online_and_decides_from_the_synced_list(secured: Site) -> None:  # noqa: F811
    device = _device(secured)
    try:
        secured.start_bridge()
        wait_until(lambda: CARD in device.users, what="the bridge's user list on the device")
        _online_at(secured)
        assert device.present(CARD) and not device.present("deadbeef")
        wait_until(lambda: {"access.granted", "access.denied"} <= {e.kind for e in entries(secured.engine)},
                   what="both decisions recorded")
        granted = next(e for e in entries(secured.engine) if e.kind == "access.granted")
        detail = json.loads(granted.detail)
        assert granted.door == "noc" and detail["offline"] is True and detail["bridge_reason"] == "granted"
        assert "flagged" not in detail  # enrolled in upper case, synced and reported in lower case: the same card
        with Session(secured.engine) as session:
            assert not list(session.scalars(select(Alarm).where(Alarm.source == "esp-noc")))
    finally:
        device.close()


@pytest.fixture
def short_grace(tmp_path: Path, sqlite_url: str, site_broker: Broker, keys: KeyStore) -> Iterator[Site]:  # noqa: F811
    """``secured`` with ``ingest.offline_grace_s`` of 1 s, so the grace after coming online passes quickly."""
    s = Site(tmp_path, sqlite_url, site_broker, keys,
             ('topic_prefix = "badge-bridge/v1"', 'topic_prefix = "badge-bridge/v1"\nusername = "bridge-1"\n'
                                                  f'password = "{site_broker.passwords["bridge-1"]}"'),
             ("offline_grace_s = 10", f"offline_grace_s = {GRACE_S}"))
    seed_noc_operator(s)
    yield s
    s.close()


def test_a_card_at_an_esp_rfid_the_bridge_hears_online_is_recorded(short_grace: Site) -> None:
    """A stock esp-rfid decides every card itself: its report is recorded while the bridge hears it online (it
    used to be refused as a forged offline decision, offline_while_online, once the grace had passed)."""
    device = _device(short_grace)
    try:
        short_grace.start_bridge()
        wait_until(lambda: CARD in device.users, what="the bridge's user list on the device")
        online = _online_at(short_grace)
        wait_until(lambda: datetime.now(UTC) > online + timedelta(seconds=3 * GRACE_S), what="past the grace")
        device.present(CARD)
        wait_until(lambda: dead_letters(short_grace) or any(e.kind == "access.granted"
                                                            for e in entries(short_grace.engine)),
                   what="the card recorded or refused")
        assert not [d.reason for d in dead_letters(short_grace)]
        assert [e.kind for e in entries(short_grace.engine) if e.kind.startswith("access.")] == ["access.granted"]
    finally:
        device.close()


def test_a_forged_grant_on_an_esp_rfid_topic_is_flagged_and_raises_an_alarm(short_grace: Site) -> None:
    """Whoever can publish on the device's topic claims a grant for a card the bridge does not know, dated as far
    ahead as ingest lets through (a day ahead is a dead letter): recorded as the device's claim, flagged, and
    the access.device_disagrees alarm goes to the desk."""
    device = _device(short_grace)
    try:
        short_grace.start_bridge()
        wait_until(lambda: CARD in device.users, what="the bridge's user list on the device")
        _online_at(short_grace)
        forged = {"uid": "0badc0de", "pincode": "", "username": "Mallory", "access": "Always", "isKnown": "true",
                  "time": int(datetime.now(UTC).timestamp()) + 20, "doorName": "noc", "type": "access",
                  "hostname": "esp-noc"}
        device.client.publish("esp-noc/send", json.dumps(forged), qos=1).wait_for_publish(5)

        def alarm() -> Alarm | None:
            with Session(short_grace.engine) as session:
                return session.scalar(select(Alarm).where(Alarm.kind == "access.device_disagrees"))

        raised = wait_until(alarm, what="the access.device_disagrees alarm",
                            detail=lambda: [d.reason for d in dead_letters(short_grace)])
        assert raised.door == "noc" and raised.source == "esp-noc"
        granted = next(e for e in entries(short_grace.engine) if e.kind == "access.granted")
        detail = json.loads(granted.detail)
        assert detail["flagged"] is True and detail["offline"] is True and detail["bridge_reason"] != "granted"
    finally:
        device.close()
