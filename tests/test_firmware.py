"""The firmware file (badge_bridge/firmware) and firmware_config: schemas in sync, the example valid, unsafe
files refused with file and field, diff and push against simulated devices on a real Mosquitto, audited;
esp-rfid's updateconf format; OSDP COMSET and LED to real libosdp peripheral devices on a pty bus."""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from sqlalchemy import select

from badge_bridge.cli import main
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.controllers import esp_rfid
from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns
from badge_bridge.db import make_engine
from badge_bridge.demo import OSDP_READERS, on_osdp_bus
from badge_bridge.firmware import profiles
from badge_bridge.firmware.profiles import OsdpProfile
from badge_bridge.firmware.validate import FirmwareError, load_firmware, osdp_feedback
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from badge_bridge.sim.broker import Broker
from firmware_config import devices
from firmware_config.devices import ControllerSettings
from firmware_config.sim import SimConfigController, SimEspRfid
from tests.conftest import ROOT, write_site
from tests.test_osdp_bridge import OFF_THE_BUS

EXAMPLE = ROOT / "firmware.example.toml"
ESP_IP = "10.20.0.31"


def demo_site() -> SiteConfig:
    """The example site as the demo runs it: ctl-hall-a is an OSDP bus (what firmware.example.toml says)."""
    return on_osdp_bus(load_config(ROOT / "site.example.toml"), "/dev/null")


def firmware_file(tmp_path: Path, *replacements: tuple[str, str], text: str | None = None) -> Path:
    text = EXAMPLE.read_text() if text is None else text
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "firmware.toml"
    path.write_text(text)
    return path


# --- schemas and the example -----------------------------------------------------------------------------


def test_schema_files_are_current() -> None:
    on_disk = {p.name: p.read_text() for p in profiles.SCHEMA_DIR.glob(f"*{profiles.SUFFIX}")}
    assert on_disk == profiles.render_schemas(), ("badge_bridge/firmware/schemas/ is stale: "
                                                  "python -m badge_bridge.firmware.profiles")


@pytest.mark.parametrize("name", sorted(profiles.json_schemas()))
def test_schemas_are_json_schemas(name: str) -> None:
    Draft202012Validator.check_schema(profiles.json_schemas()[name])


def test_example_validates() -> None:
    fw = load_firmware(EXAMPLE, demo_site())
    assert [(c.key, c.profile) for c in fw.controllers] == [("ctl-lobby", "mqtt"), ("ctl-hall-a", "osdp"),
                                                             ("esp-noc", "esp-rfid")]
    osdp = fw.controllers[1]
    assert isinstance(osdp, OsdpProfile)
    assert {r.key: r.address for r in osdp.readers} == {k: a for k, (a, _) in OSDP_READERS.items()}
    assert fw.controllers[0].open_time_s == 5 and fw.controllers[0].offline_policy == "cached_list"  # defaults


def test_the_bridge_takes_osdp_patterns_from_the_firmware_file(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """OSDP readers keep no patterns: the bridge sends them with each decision, read from firmware.toml next to
    the site file. No file, or one that is refused, leaves the defaults (and the refusal in the log)."""
    site = demo_site().model_copy(update={"base_dir": tmp_path})
    defaults = {"ctl-hall-a": (LedPatterns(), BuzzerPatterns())}
    assert osdp_feedback(site) == defaults
    firmware_file(tmp_path, ('led.idle = { color = "red", on_ms = 1000 }',
                             'led.idle = { color = "blue" }\n'
                             'led.denied = { color = "magenta", on_ms = 200, off_ms = 200, repeat = 4 }\n'
                             'buzzer.granted = { repeat = 0 }'))
    led, buzzer = osdp_feedback(site)["ctl-hall-a"]
    assert (led.idle.color, led.denied.color, led.denied.repeat, led.granted) == ("blue", "magenta", 4,
                                                                                   LedPatterns().granted)
    assert buzzer.granted.repeat == 0 and buzzer.denied == BuzzerPatterns().denied
    firmware_file(tmp_path, ("open_time_s = 4", "open_time_s = 120"))
    with caplog.at_level(logging.ERROR, logger="badge_bridge.firmware.validate"):
        assert osdp_feedback(site) == defaults
    assert "controllers[1].open_time_s: 120 is above the safe maximum" in caplog.text


def test_example_matches_the_json_schemas() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    schemas = profiles.json_schemas()
    for ctl in raw["controllers"]:
        merged = {**raw["defaults"].get(ctl["profile"], {}), **ctl}
        errors = list(Draft202012Validator(schemas[ctl["profile"]]).iter_errors(merged))
        assert not errors, (ctl["key"], [e.message for e in errors])


def test_profile_kind_must_match_the_site_file() -> None:
    with pytest.raises(FirmwareError, match=r"controllers\[1\]\.profile: 'osdp', but the site file makes "
                                            r"'ctl-hall-a' a 'mqtt' controller"):
        load_firmware(EXAMPLE, load_config(ROOT / "site.example.toml"))


# --- refusals name the file and the field ----------------------------------------------------------------

LOBBY = ('key = "ctl-lobby"\nprofile = "mqtt"\n', 'key = "ctl-lobby"\nprofile = "mqtt"\n{}\n')


def lobby(setting: str) -> tuple[str, str]:
    return LOBBY[0], LOBBY[1].format(setting)


UNSAFE = {
    "open time too long": ([lobby("open_time_s = 120")],
                           "controllers[0].open_time_s: 120 is above the safe maximum of 30 s (a door left unlocked"),
    "open time too short": ([lobby("open_time_s = 0.5")], "controllers[0].open_time_s: 0.5 is below the safe minimum"),
    "held open below open time": ([lobby("held_open_limit_s = 3")],
                                  "controllers[0].held_open_limit_s: 3 s is shorter than open_time_s (5 s)"),
    "everyone locked out": ([lobby('offline_policy = "deny_all"'), ('reader_mode = "card"\nled.granted',
                                                                    'reader_mode = "locked"\nled.granted')],
                            ("controllers[0].reader_mode: 'locked' on every reader of door 'main-entrance', with "
                             "offline_policy 'deny_all' and no exit reader or request-to-exit button: this locks "
                             "everyone out")),
    "unlocked critical door": ([('key = "hall-a-out"\naddress = 2\n',
                                 'key = "hall-a-out"\naddress = 2\nreader_mode = "unlocked"\n')],
                               "controllers[1].readers[1].reader_mode: 'unlocked' on door 'hall-a' into a critical area"),
    "osdp in clear": ([("secure_channel = true", "secure_channel = false")],
                      "controllers[1].secure_channel: false outside install_mode"),
    "osdp address taken": ([('key = "cage-7-in"\naddress = 3', 'key = "cage-7-in"\naddress = 2\nfrom_address = 3')],
                           "controllers[1].readers[2].address: 2 is also 'hall-a-out''s on bus 'ctl-hall-a'"),
    "osdp address changed by accident": ([('key = "cage-7-in"\naddress = 3', 'key = "cage-7-in"\naddress = 9')],
                                         ("controllers[1].readers[2].address: 9, but the site file has 'cage-7-in' "
                                          "at 3; to change it deliberately set from_address = 3")),
    "unknown controller": ([('key = "esp-noc"', 'key = "esp-nope"')],
                           "controllers[2].key: unknown controller 'esp-nope'"),
    "reader of another controller": ([('key = "hall-a-out"', 'key = "main-in"')],
                                     "controllers[1].readers[1].key: 'main-in' is not a reader of 'ctl-hall-a'"),
    "esp-rfid cannot do card+pin": ([('held_open_limit_s = 30\nreader_mode = "card"\n',
                                       'held_open_limit_s = 30\nreader_mode = "card+pin"\n')],
                                     "controllers[2].reader_mode: Input should be 'card' or 'locked'"),
    "no such mode": ([('reader_mode = "card"\nled.granted', 'reader_mode = "open"\nled.granted')], "controllers[0].reader_mode: Input should be 'card', 'card+pin'"),
}


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_unsafe_or_wrong_files_are_refused_naming_file_and_field(tmp_path: Path, name: str) -> None:
    replacements, message = UNSAFE[name]
    path = firmware_file(tmp_path, *replacements)
    with pytest.raises(FirmwareError) as raised:
        load_firmware(path, demo_site())
    assert f"{path}: {message}" in str(raised.value), str(raised.value)


ALLOWED = {
    "unlocked with allow_unlocked": [('key = "hall-a-out"\naddress = 2\n',
                                      'key = "hall-a-out"\naddress = 2\nreader_mode = "unlocked"\n'),
                                     ('key = "ctl-hall-a"\nprofile = "osdp"\n',
                                      'key = "ctl-hall-a"\nprofile = "osdp"\nallow_unlocked = true\n')],
    "unlocked on an ordinary door": [('reader_mode = "card"\nled.granted', 'reader_mode = "unlocked"\nled.granted')],
    "locked with an exit button": [('held_open_limit_s = 20\nreader_mode = "card"',
                                    'held_open_limit_s = 20\nreader_mode = "locked"'),
                                   ('reader_mode = "card+pin"', 'reader_mode = "locked"')],
    "deliberate address change": [('key = "cage-7-in"\naddress = 3', 'key = "cage-7-in"\naddress = 4\nfrom_address = 3')],
    "clear text in install mode": [("secure_channel = true", "secure_channel = false\ninstall_mode = true")],
}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_deliberate_exceptions_are_accepted(tmp_path: Path, name: str) -> None:
    load_firmware(firmware_file(tmp_path, *ALLOWED[name]), demo_site())


# --- MQTT: diff and push over a real broker --------------------------------------------------------------

MQTT_ONLY = """
[[controllers]]
key = "ctl-lobby"
profile = "mqtt"
open_time_s = 5
held_open_limit_s = 30
led.idle = { color = "blue" }

[[controllers]]
key = "esp-noc"
profile = "esp-rfid"
open_time_s = 4
held_open_limit_s = 25
"""

ESP_CONFIG = {
    "command": "configfile",
    "network": {"ssid": "dc1", "pswd": "wifi-secret", "dhcp": 0, "ip": ESP_IP},
    "hardware": {"readertype": 1, "wgd0pin": 5, "wgd1pin": 4, "rtype": 1, "ltype": 0, "rpin": 13, "rtime": 400,
                 "doorstatpin": 255, "maxOpenDoorTime": 0, "pincoderequested": False},
    "general": {"hostnm": "esp-noc", "pswd": "admin-secret", "restart": 0},
    "mqtt": {"enabled": 1, "host": "10.20.0.2", "port": 1883, "topic": "esp-noc", "user": "esp", "pswd": "mqtt-secret"},
    "ntp": {"server": "pool.ntp.org", "interval": 30, "timezone": 0},
}


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, broker: Broker, keys: KeyStore):
    site = write_site(tmp_path, sqlite_url, broker_port=broker.port)
    (tmp_path / "firmware.toml").write_text(MQTT_ONLY)
    start = ControllerSettings(open_time_s=7.0, held_open_limit_s=30.0, reader_mode="card", offline_policy="cached_list",
                               led=LedPatterns(), buzzer=BuzzerPatterns())
    lobby_sim = SimConfigController(broker.port, "ctl-lobby", start, login=broker.login("ctl-lobby"))
    esp_sim = SimEspRfid(broker.port, "esp-noc", ESP_IP, json.loads(json.dumps(ESP_CONFIG)), login=broker.login("esp-noc"))
    yield site, sqlite_url, lobby_sim, esp_sim
    lobby_sim.close()
    esp_sim.close()


def run(site: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(main, ["-c", str(site), "firmware", *args], input=input, catch_exceptions=False)


def pushed_events(url: str) -> list[AuditEntry]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(AuditEntry).where(AuditEntry.kind == "firmware.pushed")
                                     .order_by(AuditEntry.seq)))
    finally:
        engine.dispose()


def test_diff_shows_desired_against_reported(env) -> None:
    site, _url, _lobby, _esp = env
    result = run(site, "diff")
    assert result.exit_code == 0, result.output
    assert "ctl-lobby (mqtt): 2 to change" in result.output
    assert "  open_time_s: 7.0 -> 5.0" in result.output
    assert '  led.idle.color: "red" -> "blue"' in result.output
    assert "esp-noc (esp-rfid): 3 to change" in result.output
    assert "  hardware.rtime: 400 -> 4000" in result.output
    assert "  hardware.maxOpenDoorTime: 0 -> 25" in result.output
    assert "secret" not in result.output  # the device's config.json carries its passwords


def test_push_asks_and_sends_nothing_on_no(env) -> None:
    site, url, lobby_sim, esp_sim = env
    result = run(site, "push", input="n\n")
    assert result.exit_code == 1
    assert "push to ctl-lobby, esp-noc? [y/N]" in result.output and "nothing pushed" in result.output
    assert lobby_sim.applied == []
    assert [m["cmd"] for m in esp_sim.received] == ["getconf"]  # read for the diff, nothing written
    assert pushed_events(url) == []


def test_push_then_diff_shows_no_difference_and_is_audited(env) -> None:
    site, url, lobby_sim, _esp = env
    result = run(site, "push", input="y\n")
    assert result.exit_code == 0, result.output
    assert "ctl-lobby: pushed" in result.output and "esp-noc: pushed" in result.output
    assert lobby_sim.settings.open_time_s == 5.0 and lobby_sim.settings.led.idle.color == "blue"
    again = run(site, "diff")
    assert "ctl-lobby (mqtt): no difference" in again.output
    assert "esp-noc (esp-rfid): no difference" in again.output
    events = pushed_events(url)
    assert [e.chain_id for e in events] == ["bridge-1.cli", "bridge-1.cli"]
    lobby_event, esp_event = (json.loads(e.detail) for e in events)
    assert json.loads(events[0].subject) == {"controller": "ctl-lobby"}
    assert lobby_event["changes"]["open_time_s"] == {"from": 7.0, "to": 5.0}
    assert esp_event["changes"]["hardware.rtime"] == {"from": 400, "to": 4000}
    assert "secret" not in events[1].detail
    assert run(site, "push", "--yes").output.endswith("nothing to push\n")


def test_push_only_one_controller_with_yes(env) -> None:
    site, url, lobby_sim, esp_sim = env
    result = run(site, "push", "--controller", "ctl-lobby", "--yes")
    assert result.exit_code == 0, result.output
    assert len(lobby_sim.applied) == 1 and esp_sim.received == []
    assert [json.loads(e.subject) for e in pushed_events(url)] == [{"controller": "ctl-lobby"}]


def test_esp_rfid_updateconf_is_what_the_firmware_reads(env) -> None:
    """mqtt.esp (88d2199e): doorip must equal the device's IP as a string, cmd a string, and updateconf writes
    ``configfile`` as the whole /config.json; the web UI writes hardware.rtime (ms), ltype, maxOpenDoorTime
    (s), pincoderequested (bool) and general.openinghours (7 x 24 flags) as these types."""
    site, _url, _lobby, esp_sim = env
    assert run(site, "push", "--controller", "esp-noc", "--yes").exit_code == 0
    # Read for the diff, read again just before writing (the file is replaced whole), then write.
    assert [m["cmd"] for m in esp_sim.received] == ["getconf", "getconf", "updateconf"]
    getconf, update = esp_sim.received[1:]
    assert getconf == {"cmd": "getconf", "doorip": ESP_IP}
    assert update["cmd"] == "updateconf" and update["doorip"] == ESP_IP and set(update) == {"cmd", "doorip", "configfile"}
    hw = update["configfile"]["hardware"]
    assert (hw["rtime"], hw["ltype"], hw["maxOpenDoorTime"], hw["pincoderequested"]) == (4000, 0, 25, False)
    assert all(type(hw[k]) is int for k in ("rtime", "ltype", "maxOpenDoorTime"))
    assert update["configfile"]["general"]["openinghours"] == ["1" * 24] * 7
    # Everything the bridge does not manage goes back exactly as the device had it.
    for section in ("network", "mqtt", "ntp"):
        assert update["configfile"][section] == ESP_CONFIG[section]
    changed = ("rtime", "maxOpenDoorTime")
    assert {k: v for k, v in hw.items() if k not in changed} == \
        {k: v for k, v in ESP_CONFIG["hardware"].items() if k not in changed}
    payload = devices.esp_update_payload(ESP_CONFIG, devices.esp_desired(load_firmware(
        site.parent / "firmware.toml", load_config(site)).controller("esp-noc")), device=ESP_IP)  # type: ignore[arg-type]
    assert len(payload) <= esp_rfid.MAX_COMMAND and b"\\u" not in payload


def test_unreachable_device_is_an_error_not_a_traceback(tmp_path: Path, sqlite_url: str, broker: Broker,
                                                        keys: KeyStore) -> None:
    site = write_site(tmp_path, sqlite_url, broker_port=broker.port)
    (tmp_path / "firmware.toml").write_text(MQTT_ONLY)
    result = run(site, "diff", "--controller", "esp-noc")
    assert result.exit_code == 1
    assert f"esp-rfid esp-noc ({ESP_IP}): no getconf reply on esp-noc/send" in result.output


# --- OSDP: COMSET and the LED default to real libosdp PDs on a pty bus ----------------------------------


def test_osdp_push_moves_a_reader_and_changes_the_bus_speed(tmp_path: Path, keys: KeyStore) -> None:
    from osdp import Command, ControlPanel, LibFlag, LogLevel, PDInfo

    from badge_bridge.controllers.osdp import SerialChannel
    from badge_bridge.sim.osdp_reader import PtyBus, SimReader

    bus = PtyBus(3)
    site = on_osdp_bus(load_config(ROOT / "site.example.toml"), bus.cp_link)
    scbk = {key: keys.new_osdp_key(key, replace=False) for key in OSDP_READERS}
    readers = {key: SimReader(address, bus, scbk[key]) for key, (address, _) in OSDP_READERS.items()}
    try:
        move = ('key = "cage-7-in"\naddress = 3', 'key = "cage-7-in"\naddress = 4\nfrom_address = 3')
        path = firmware_file(tmp_path, move, ("baud = 115200", "baud = 57600"))
        ctl = load_firmware(path, site).controller("ctl-hall-a")
        assert isinstance(ctl, OsdpProfile)
        site_ctl = next(c for c in site.controllers if c.key == "ctl-hall-a")
        with devices.osdp_session(site, site_ctl, ctl, keys) as session:
            reported, about = session.read()
            assert reported == {"baud": 115200, "secure_channel": True, "readers.hall-a-in.address": 1,
                                "readers.hall-a-out.address": 2, "readers.cage-7-in.address": 3}
            assert about["cage-7-in"]["serial_number"] == 0x5100 + 3 and about["cage-7-in"]["vendor_code"] == "0b0b1e"
            assert devices.diff(reported, devices.osdp_desired(ctl)) == {
                "baud": (115200, 57600), "readers.cage-7-in.address": (3, 4)}
            session.push()
        for key, reader in readers.items():
            kinds = [c["command"] for c in reader.commands]
            assert Command.LED in kinds and reader.led is not None and reader.led["temporary"] is False
            comset = next(c for c in reader.commands if c["command"] == Command.Comset)
            assert comset == {"command": Command.Comset, "address": 4 if key == "cage-7-in" else OSDP_READERS[key][0],
                              "baud_rate": 57600}
            # libosdp's PD hands the application COMSET_DONE once it has switched: the reader accepted it.
            assert reader.wait_for_command(lambda c: c["command"] == Command.ComsetDone, timeout=3) is not None
        # The reader now answers at its new address (a pty has no speed, so only the address can be seen).
        channel = SerialChannel(bus.cp_link, 57600)
        cp = ControlPanel([PDInfo(4, channel, scbk=scbk["cage-7-in"], flags=[LibFlag.EnforceSecure])],
                          log_level=LogLevel.Error)
        cp.start()
        try:
            assert cp.online_wait(4, timeout=8)
        finally:
            cp.teardown()
            channel.close()
    finally:
        for reader in readers.values():
            reader.stop()
        bus.close()


def osdp_site(tmp_path: Path, url: str, port: int, cp_link: str) -> Path:
    """The example site with ctl-hall-a an OSDP bus on ``cp_link``, readers at the demo's addresses."""
    ctl = ('key = "ctl-hall-a"\nname = "Hall A controller"\nkind = "mqtt"',
           f'key = "ctl-hall-a"\nname = "Hall A controller"\nkind = "osdp"\nport = "{cp_link}"')
    readers = [(f'key = "{key}"\ncontroller = "ctl-hall-a"',
                f'key = "{key}"\nosdp_address = {address}\ncontroller = "ctl-hall-a"')
               for key, (address, _) in OSDP_READERS.items()]
    return write_site(tmp_path, url, ctl, *readers, *OFF_THE_BUS, broker_port=port)


def test_cli_validate_reports_every_problem(tmp_path: Path, sqlite_url: str, broker: Broker) -> None:
    site = osdp_site(tmp_path, sqlite_url, broker.port, "/dev/null")
    firmware_file(tmp_path, ("secure_channel = true", "secure_channel = false"), lobby("open_time_s = 45"))
    result = run(site, "validate")
    assert result.exit_code == 1
    fw = tmp_path / "firmware.toml"
    assert f"{fw}: controllers[0].open_time_s: 45 is above the safe maximum of 30 s" in result.output
    assert f"{fw}: controllers[1].secure_channel: false outside install_mode" in result.output
    firmware_file(tmp_path)
    assert run(site, "validate").output == f"{fw}: 3 controller(s), valid\n"


def test_cli_push_to_an_osdp_bus_is_audited(tmp_path: Path, sqlite_url: str, broker: Broker,
                                            keys: KeyStore) -> None:
    from osdp import Command

    from badge_bridge.sim.osdp_reader import PtyBus, SimReader

    bus = PtyBus(3)
    readers = [SimReader(address, bus, keys.new_osdp_key(key, replace=False)) for key, (address, _) in
               OSDP_READERS.items()]
    try:
        site = osdp_site(tmp_path, sqlite_url, broker.port, bus.cp_link)
        text = EXAMPLE.read_text().split("# --- NOC")[0]  # the lobby and the OSDP bus, not the esp-rfid
        firmware_file(tmp_path, ('key = "cage-7-in"\naddress = 3', 'key = "cage-7-in"\naddress = 5\nfrom_address = 3'),
                      text=text)
        result = run(site, "push", "--controller", "ctl-hall-a", input="y\n")
        assert result.exit_code == 0, result.output
        assert "ctl-hall-a (osdp): 1 to change" in result.output
        assert "  readers.cage-7-in.address: 3 -> 5" in result.output
        assert '  led.idle: (not readable) -> {"color": "red"' in result.output
        assert 'reader cage-7-in: {"capabilities"' in result.output and '"serial_number": 20739' in result.output
        assert readers[2].wait_for_command(lambda c: c["command"] == Command.ComsetDone, timeout=3) is not None
        assert all(r.led is not None and r.led["on_color"] == 1 for r in readers)  # red, permanent
        (event,) = pushed_events(sqlite_url)
        detail = json.loads(event.detail)
        assert detail["changes"]["readers.cage-7-in.address"] == {"from": 3, "to": 5}
        assert detail["changes"]["led.idle"]["to"]["color"] == "red"
    finally:
        for reader in readers:
            reader.stop()
        bus.close()
