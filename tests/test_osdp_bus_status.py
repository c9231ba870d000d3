"""An OSDP bus is its controller: online while its port is open and a reader answers, offline (with its alarm)
when the adapter vanishes or no reader answers. Before, the bridge never heard the bus and reported hall A's
controller offline 30 s after starting, its doors with it, while people were granted there. The fix must not
hide real faults: a reader that stops answering still raises its own alarm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker
from tests.test_osdp_bridge import READERS
from tests.test_osdp_faults import FaultRig
from tests.waiting import wait_until

BUS = "ctl-hall-a"


@pytest.fixture
def rig(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore) -> Iterator[FaultRig]:
    r = FaultRig(tmp_path, sqlite_url, broker, keys)
    yield r
    r.close()


def _statuses(rig: FaultRig) -> list[str]:
    """controller.online / controller.offline of the bus, in order."""
    return [e.kind for e in rig.entries("controller.online", "controller.offline") if e.source == BUS]


def test_a_bus_whose_readers_answer_is_its_controller_online(rig: FaultRig) -> None:
    wait_until(lambda: _statuses(rig) == ["controller.online"], what="the bus reported online")
    assert rig.card_and_pin("hall-a-out") is not None
    assert _statuses(rig) == ["controller.online"]
    assert not [a for a in rig.alarms() if a.kind.startswith(("controller.", "reader."))]


def test_a_reader_that_stops_answering_still_raises_its_alarm_and_the_bus_stays_online(rig: FaultRig) -> None:
    wait_until(lambda: _statuses(rig) == ["controller.online"], what="the bus reported online")
    rig.sims["hall-a-out"].stop()
    wait_until(lambda: "hall-a-out" in rig.open_alarms("reader.offline"), what="the reader's alarm", timeout=30)
    assert rig.card_and_pin("hall-a-in") is not None  # the others still work, so the bus is not offline
    assert _statuses(rig) == ["controller.online"] and not rig.open_alarms("controller.offline")
    assert rig.open_alarms("reader.offline") == {"hall-a-out"}


def test_every_reader_silent_takes_the_bus_offline(rig: FaultRig) -> None:
    wait_until(lambda: _statuses(rig) == ["controller.online"], what="the bus reported online")
    for reader in rig.sims.values():
        reader.stop()
    wait_until(lambda: BUS in rig.open_alarms("controller.offline"), what="the bus's alarm", timeout=30)
    wait_until(lambda: rig.open_alarms("reader.offline") == set(READERS), what="every reader's alarm", timeout=30)
    rig.sims["cage-7-in"].restart()
    wait_until(lambda: not rig.open_alarms("controller.offline"), what="the bus back with one reader", timeout=30)
    assert _statuses(rig) == ["controller.online", "controller.offline", "controller.online"]


def test_a_bus_whose_port_disappears_is_offline_until_it_is_back(rig: FaultRig) -> None:
    wait_until(lambda: _statuses(rig) == ["controller.online"], what="the bus reported online")
    rig.bus.unplug()
    wait_until(lambda: BUS in rig.open_alarms("controller.offline"), what="the bus's alarm", timeout=30)
    assert rig.lobby_grant().door == "main-entrance"  # the rest of the site carries on
    rig.bus.replug()
    wait_until(lambda: not rig.open_alarms("controller.offline"), what="the bus back", timeout=30)
    wait_until(lambda: not rig.open_alarms("reader.offline"), what="its readers back", timeout=30)
    assert _statuses(rig) == ["controller.online", "controller.offline", "controller.online"]
    assert rig.card_and_pin("hall-a-in") is not None


def test_a_reader_that_answers_late_once_stays_on_the_bus(rig: FaultRig) -> None:
    """The demo's flapping readers: a reply later than libosdp's 200 ms makes the control panel ask again;
    the reader answers the repeat with its last reply (as OSDP asks) instead of breaking the secure channel,
    so nothing drops off and nothing is raised."""
    wait_until(lambda: _statuses(rig) == ["controller.online"], what="the bus reported online")
    bus, reader = rig.osdp(BUS), rig.sims["hall-a-in"]
    recoveries = bus.stats.recoveries

    def stalled_until_asked_again() -> bool:
        reader.stall(0.5)
        return reader.repeats > 0

    wait_until(stalled_until_asked_again, what="the control panel asking the late reader again")
    assert rig.card_and_pin("hall-a-in") is not None
    assert bus.stats.recoveries == recoveries  # never dropped, so never brought back
    assert reader.sc_active and not [a for a in rig.alarms() if a.kind.startswith("reader.")]
