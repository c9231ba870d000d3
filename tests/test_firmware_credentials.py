"""`firmware push` on a site set up as the README advises: the firmware tool on its own broker account (its
password in the keys folder, made by `badge-bridge mqtt broker-config`), TLS with the site's CA file named
relative to the site file (issue 13, issue 14)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_client import PASSWORD_ENV
from firmware_config.devices import ControllerSettings
from firmware_config.sim import SimConfigController
from tests.conftest import require_mosquitto, secured_broker, write_site
from tests.test_firmware import pushed_events, run

LOBBY_ONLY = """
[[controllers]]
key = "ctl-lobby"
profile = "mqtt"
open_time_s = 5
held_open_limit_s = 30
"""


@pytest.fixture
def secured(tmp_path: Path, sqlite_url: str, keys: KeyStore,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, SimConfigController]]:
    """The generated broker; the site file over TLS with the site's CA as ``tls/ca.crt`` (next to it), run
    from another directory; the lobby controller (on its own account, the broker's plain listener) ready."""
    require_mosquitto()
    broker = secured_broker(tmp_path)
    broker.start()
    assert broker.tls_port is not None
    (tmp_path / "tls").mkdir()
    shutil.copy(tmp_path / "mosquitto" / "config" / "ca.crt", tmp_path / "tls" / "ca.crt")
    site = write_site(tmp_path, sqlite_url, ('topic_prefix = "badge-bridge/v1"',
                                             'topic_prefix = "badge-bridge/v1"\ntls = true\nca_file = "tls/ca.crt"'),
                      broker_port=broker.tls_port)
    (tmp_path / "firmware.toml").write_text(LOBBY_ONLY)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    lobby = SimConfigController(broker.port, "ctl-lobby", ControllerSettings(
        open_time_s=7.0, held_open_limit_s=30.0, reader_mode="card", offline_policy="cached_list",
        led=LedPatterns(), buzzer=BuzzerPatterns()), login=broker.login("ctl-lobby"))
    yield site, lobby
    lobby.close()
    broker.stop()


def test_push_on_the_firmware_account_over_tls(secured: tuple[Path, SimConfigController], sqlite_url: str) -> None:
    site, lobby = secured
    result = run(site, "push", "--yes")
    assert result.exit_code == 0, result.output
    assert "ctl-lobby: pushed" in result.output
    assert [m.config.open_time_s for m in lobby.applied] == [5.0]
    assert len(pushed_events(sqlite_url)) == 1


def test_the_bridges_password_does_not_let_the_firmware_tool_in(secured: tuple[Path, SimConfigController],
                                                                sqlite_url: str, keys: KeyStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its own password the tool says what to run; the bridge's (in the environment) is no key to it."""
    site, lobby = secured
    (keys.dir / "mqtt" / "firmware.password").unlink()
    monkeypatch.setenv(PASSWORD_ENV, keys.mqtt_password("bridge-1") or "")
    result = run(site, "push", "--yes")
    assert result.exit_code == 1
    assert "refused the connection of 'firmware'" in result.output
    assert "'firmware' has no password: run `badge-bridge mqtt broker-config`" in result.output
    assert "Traceback" not in result.output
    assert lobby.applied == [] and pushed_events(sqlite_url) == []
