"""`badge-bridge mqtt broker-config` (issue 14, part 1): the generated files, and on the real Mosquitto run with
them, that no account can speak for another: every forgery below is published and acknowledged, and a watcher
that reads everything proves it never arrived (its own account's marker, published after, did)."""

from __future__ import annotations

import json
import ssl
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from badge_bridge.bridge import Bridge
from badge_bridge.broker_config import OwnTls, acl, generate, hash_matches, mosquitto_conf, password_hash
from badge_bridge.cli import main as cli
from badge_bridge.config import ConfigError, ControllerConfig, load_config
from badge_bridge.controllers import contract as c
from badge_bridge.db import make_engine
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_accounts import accounts
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.controller import controllers_from_site
from tests.conftest import EXAMPLE_SITE, ROOT, example_site, write_site
from tests.mqtt_clients import Client
from tests.test_mqtt_bridge import seed
from tests.waiting import wait_until

P = "badge-bridge/v1"
NOW = datetime.now(UTC).isoformat()
ACCOUNTS = ["bridge-1", "console", "firmware", "ctl-lobby", "ctl-hall-a", "esp-noc", "camera@cam-lobby",
            "camera@cam-outside"]


def generated(tmp_path: Path, **kw: object) -> tuple[Path, KeyStore]:
    config = example_site(tmp_path)
    keys = KeyStore(config.keys_dir())
    generate(config, keys, tmp_path / "out", **kw)  # type: ignore[arg-type]
    return tmp_path / "out", keys


# --- the generator -----------------------------------------------------------------------------------


def test_every_account_gets_a_password_once_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    out, keys = generated(tmp_path)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    passwords = {a: keys.mqtt_password(a) for a in ACCOUNTS}
    generated(tmp_path)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert {a: keys.mqtt_password(a) for a in ACCOUNTS} == passwords
    assert [line.split(":")[0] for line in first["passwd"].decode().splitlines()] == ACCOUNTS
    assert len(set(passwords.values())) == len(ACCOUNTS) and all(len(p or "") >= 32 for p in passwords.values())


def test_secrets_are_0600_and_the_ca_key_never_leaves_the_keys_folder(tmp_path: Path) -> None:
    out, keys = generated(tmp_path)
    for path in [*(keys.dir / "mqtt").glob("*.password"), keys.dir / "mqtt" / "ca.key", out / "passwd",
                 out / "server.key"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ca_key = (keys.dir / "mqtt" / "ca.key").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["acl", "ca.crt", "mosquitto.conf", "passwd", "server.crt",
                                                      "server.key"]
    assert all(ca_key not in p.read_bytes() for p in out.iterdir())
    passwords = [keys.mqtt_password(a) or "" for a in ACCOUNTS]
    assert all(pw.encode() not in p.read_bytes() for p in out.iterdir() for pw in passwords)


def test_rotating_an_account_is_deleting_its_password_and_running_again(tmp_path: Path) -> None:
    out, keys = generated(tmp_path)
    before = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    old = keys.mqtt_password("ctl-lobby")
    (keys.dir / "mqtt" / "ctl-lobby.password").unlink()
    generated(tmp_path)
    after = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert keys.mqtt_password("ctl-lobby") != old
    assert {k for k in after if after[k] != before[k]} == {"ctl-lobby"}


def test_the_password_file_is_mosquittos_own_format() -> None:
    # what mosquitto_passwd 2.0 wrote for "secretpw": our check accepts it, and our hash has its shape
    theirs = ("$7$101$0H5FIycjU9S4OTVN$B5kjFspyfISxBCdpxXUslnia+ySxTpxnzWDz5h0Z8ec6hpdR1A9BnvOTLX4sOFIS8Bqlw0BppP1MBr+"
              "MGcq+Ag==")
    assert hash_matches("secretpw", theirs) and not hash_matches("secretpw2", theirs)
    ours = password_hash("secretpw")
    assert ours.startswith("$7$101$") and hash_matches("secretpw", ours) and ours != password_hash("secretpw")


def block(acl: str, user: str) -> list[str]:
    lines = acl.split(f"\nuser {user}\n", 1)[1].split("\n\n", 1)[0]
    return lines.splitlines()


def test_each_account_gets_only_its_own_topics(tmp_path: Path) -> None:
    out, _ = generated(tmp_path)
    acl = (out / "acl").read_text()
    assert "pattern" not in acl and "%u" not in acl
    assert block(acl, "ctl-lobby") == [
        f"topic write {P}/controllers/ctl-lobby/events", f"topic write {P}/controllers/ctl-lobby/status",
        f"topic read {P}/controllers/ctl-lobby/commands", f"topic read {P}/controllers/ctl-lobby/sync",
        f"topic read {P}/controllers/ctl-lobby/receipts",
        f"topic write {P}/controllers/ctl-lobby/config", f"topic read {P}/controllers/ctl-lobby/config/set",
        f"topic read {P}/bridge/status/bridge-1/+"]  # its own partition's bridges only
    assert block(acl, "esp-noc") == ["topic write esp-noc/send", "topic write esp-noc/tag", "topic write esp-noc/avty",
                                     "topic read esp-noc/cmd", "topic write esp-noc/io/#",
                                     "topic write homeassistant/+/esp-noc/#"]
    assert block(acl, "camera@cam-lobby") == [
        f"topic write {P}/cameras/cam-lobby/events", f"topic write {P}/cameras/cam-lobby/status",
        f"topic read {P}/cameras/cam-lobby/requests"]
    assert block(acl, "console") == [f"topic read {P}/bridge/status/+/+", f"topic read {P}/bridge/events",
                                     f"topic read {P}/bridge/doors/+", f"topic write {P}/console/commands"]
    bridge = block(acl, "bridge-1")
    assert f"topic write {P}/controllers/ctl-hall-a/commands" in bridge and "topic write esp-noc/cmd" in bridge
    assert f"topic write {P}/controllers/ctl-hall-a/receipts" in bridge
    assert not any("#" in line for line in bridge)  # the site's own controllers, cameras and devices only
    firmware = block(acl, "firmware")
    assert f"topic write {P}/controllers/ctl-lobby/config/set" in firmware
    assert not any(line.endswith(("/commands", "/sync", "/console/commands")) for line in firmware)


def test_an_account_two_roles_would_share_is_refused(tmp_path: Path) -> None:
    config = example_site(tmp_path)
    config = config.model_copy(update={"controllers": [*config.controllers, ControllerConfig(key="console",
                                                                                            kind="mqtt")]})
    with pytest.raises(ConfigError, match="'console' would serve both"):
        accounts(config)


def test_the_listener_configuration(tmp_path: Path) -> None:
    out, _ = generated(tmp_path, plain_port=1883, install_dir="/etc/mosquitto/badge-bridge")
    conf = (out / "mosquitto.conf").read_text().splitlines()
    for line in ("allow_anonymous false", "password_file /etc/mosquitto/badge-bridge/passwd",
                 "acl_file /etc/mosquitto/badge-bridge/acl", "listener 8883", "listener 1883 127.0.0.1",
                 "keyfile /etc/mosquitto/badge-bridge/server.key", "max_queued_messages 1000000",
                 "queue_qos0_messages true", "upgrade_outgoing_qos true"):
        assert line in conf
    assert not any(line.startswith("listener") and "127.0.0.1" not in line and "8883" not in line for line in conf)
    assert all(line.startswith("#") or "#" not in line for line in conf)  # Mosquitto reads a comment as the value


def test_the_command_says_what_it_wrote(tmp_path: Path, sqlite_url: str) -> None:
    site = write_site(tmp_path, sqlite_url)
    run = CliRunner().invoke(cli, ["-c", str(site), "mqtt", "broker-config", "--out", str(tmp_path / "out"),
                                   "--host", "mqtt.dc1.example"])
    assert run.exit_code == 0, run.output
    assert f"wrote {tmp_path / 'out' / 'acl'}" in run.output and "new broker CA" in run.output
    assert "accounts: bridge-1, console, firmware, ctl-lobby" in run.output
    again = CliRunner().invoke(cli, ["-c", str(site), "mqtt", "broker-config", "--out", str(tmp_path / "out"),
                                     "--host", "mqtt.dc1.example"])
    assert again.exit_code == 0 and "new" not in again.output
    half = CliRunner().invoke(cli, ["-c", str(site), "mqtt", "broker-config", "--out", str(tmp_path / "o2"),
                                    "--ca", str(tmp_path / "out" / "ca.crt")])
    assert half.exit_code != 0 and "--ca, --cert and --key go together" in half.output


def test_the_operators_own_certificates_are_used(tmp_path: Path) -> None:
    theirs, _ = generated(tmp_path / "theirs")
    out, keys = generated(tmp_path, own_tls=OwnTls(theirs / "ca.crt", theirs / "server.crt", theirs / "server.key"))
    assert (out / "server.crt").read_bytes() == (theirs / "server.crt").read_bytes()
    assert not (keys.dir / "mqtt" / "ca.key").exists()


# --- on the real broker --------------------------------------------------------------------------------


def prove_nothing_arrived(broker: Broker, attacker: Client, forgeries: list[tuple[str, str]], marker: str) -> None:
    """Publish every forgery as ``attacker``, then ``marker`` (a topic of its own): once the watcher has the
    marker, it would have had the forgeries (one connection, in order)."""
    watcher = Client(broker, "watcher")
    watcher.subscribe("#")
    for topic, payload in forgeries:
        attacker.publish(topic, payload)
    attacker.publish(marker, json.dumps({"marker": True}))
    wait_until(lambda: watcher.payloads(marker), what="the attacker's own message")
    assert not [t for t, _, _ in watcher.received if t != marker]
    watcher.close()


def forged(kind: str = "unlock") -> str:
    return json.dumps({"v": 1, "id": f"forged-{kind}", "ts": NOW, "type": kind, "door": "main-entrance",
                       "user": "supervisor", "reason": "forged"})


def test_a_controller_cannot_speak_for_another_controller_the_bridge_or_the_console(broker: Broker) -> None:
    hall = Client(broker, "ctl-hall-a")
    prove_nothing_arrived(broker, hall, [
        (f"{P}/controllers/ctl-lobby/events", json.dumps({"v": 1, "id": "e1", "ts": NOW, "type": "rex",
                                                          "door": "main-entrance"})),
        (f"{P}/controllers/ctl-lobby/status", json.dumps({"v": 1, "online": False})),
        (f"{P}/controllers/ctl-lobby/commands", forged()),
        (f"{P}/controllers/ctl-lobby/receipts", forged("receipt")),
        (f"{P}/controllers/ctl-hall-a/receipts", forged("receipt")),
        (f"{P}/console/commands", forged()),
        (f"{P}/bridge/status/bridge-1/b1", json.dumps({"v": 1, "online": False, "instance": "b1"})),
        ("esp-noc/cmd", json.dumps({"cmd": "opendoor", "doorip": "10.20.0.31"})),
    ], f"{P}/controllers/ctl-hall-a/events")
    assert hall.disconnects == 0
    hall.close()


def test_a_controller_cannot_read_another_controllers_commands_or_sync(broker: Broker) -> None:
    lobby, hall, bridge = Client(broker, "ctl-lobby"), Client(broker, "ctl-hall-a"), Client(broker, "bridge-1")
    for topic in (f"{P}/controllers/ctl-lobby/commands", f"{P}/controllers/ctl-lobby/sync", f"{P}/controllers/+/+",
                  "#"):
        hall.subscribe(topic)
    lobby.subscribe(f"{P}/controllers/ctl-lobby/#")
    hall.subscribe(f"{P}/controllers/ctl-hall-a/commands")
    bridge.publish(f"{P}/controllers/ctl-lobby/sync", b'{"v": 1}', retain=True)
    bridge.publish(f"{P}/controllers/ctl-lobby/commands", forged("lock"))
    bridge.publish(f"{P}/controllers/ctl-lobby/receipts", forged("receipt"))
    bridge.publish(f"{P}/controllers/ctl-hall-a/commands", forged("lock"))
    wait_until(lambda: hall.payloads(f"{P}/controllers/ctl-hall-a/commands"), what="hall's own command")
    wait_until(lambda: len(lobby.received) == 3, what="lobby's command, sync and receipt")
    assert {t for t, _, _ in hall.received} == {f"{P}/controllers/ctl-hall-a/commands"}
    late = Client(broker, "ctl-hall-a", client_id="late")  # nor the retained sync, subscribing afterwards
    late.subscribe(f"{P}/controllers/ctl-lobby/sync")
    late.subscribe(f"{P}/bridge/status/+/+")
    bridge.publish(f"{P}/bridge/status/other/b9", json.dumps({"v": 1, "online": True, "instance": "b9"}))
    bridge.publish(f"{P}/bridge/status/bridge-1/b1", json.dumps({"v": 1, "online": True, "instance": "b1"}))
    wait_until(lambda: late.received, what="the bridge status it may read")
    assert [t for t, _, _ in late.received] == [f"{P}/bridge/status/bridge-1/b1"]  # not another partition's
    for client in (lobby, hall, bridge, late):
        client.close()


def test_an_esp_rfid_device_cannot_publish_outside_its_base_topic(broker: Broker) -> None:
    noc = Client(broker, "esp-noc")
    prove_nothing_arrived(broker, noc, [
        ("esp-lab/send", json.dumps({"type": "access", "uid": "deadbeef"})),
        ("esp-lab/cmd", json.dumps({"cmd": "opendoor", "doorip": "10.20.0.32"})),
        ("esp-noc/cmd", json.dumps({"cmd": "opendoor", "doorip": "10.20.0.31"})),  # its own commands: read only
        (f"{P}/controllers/esp-noc/events", json.dumps({"v": 1, "id": "e1", "ts": NOW, "type": "rex", "door": "noc"})),
        (f"{P}/console/commands", forged()),
        ("homeassistant/lock/esp-lab/lock0/config", "{}"),
    ], "esp-noc/send")
    noc.close()


def test_a_camera_cannot_publish_another_cameras_events_nor_commands(broker: Broker) -> None:
    camera = Client(broker, "camera@cam-lobby")
    prove_nothing_arrived(broker, camera, [
        (f"{P}/cameras/cam-outside/events", json.dumps({"v": 1, "id": "m1", "type": "motion"})),
        (f"{P}/cameras/cam-outside/status", json.dumps({"v": 1, "online": False})),
        (f"{P}/console/commands", forged()),
        (f"{P}/controllers/ctl-lobby/commands", forged()),
        (f"{P}/cameras/cam-lobby/requests", "{}"),
    ], f"{P}/cameras/cam-lobby/events")
    camera.close()


def test_the_console_cannot_command_a_controller(broker: Broker) -> None:
    console = Client(broker, "console")
    prove_nothing_arrived(broker, console, [
        (f"{P}/controllers/ctl-lobby/commands", forged()),
        (f"{P}/controllers/ctl-lobby/sync", "{}"),
        (f"{P}/controllers/ctl-lobby/receipts", "{}"),
        (f"{P}/bridge/status/bridge-1/b1", json.dumps({"v": 1, "online": False, "instance": "b1"})),
        ("esp-noc/cmd", json.dumps({"cmd": "opendoor", "doorip": "10.20.0.31"})),
    ], f"{P}/console/commands")
    console.close()


@pytest.mark.parametrize("account, password", [(None, None), ("ctl-lobby", "wrong"), ("nobody", "x")],
                         ids=["anonymous", "wrong-password", "unknown-user"])
def test_a_client_without_an_account_is_refused(broker: Broker, account: str | None, password: str | None) -> None:
    client = Client(broker, account, password=password)
    assert client.reason is not None and client.reason.is_failure, client.reason
    assert client.reason.getName() in ("Not authorized", "Bad user name or password")
    client.close()


def test_tls_with_a_certificate_from_another_ca_is_refused_by_the_client(broker: Broker, tmp_path: Path) -> None:
    other, _ = generated(tmp_path / "elsewhere")  # another site's CA
    with pytest.raises(ssl.SSLCertVerificationError):
        Client(broker, "ctl-lobby", tls_ca=other / "ca.crt")
    right = Client(broker, "ctl-lobby", tls_ca=tmp_path / "mosquitto" / "config" / "ca.crt")
    assert right.connected.is_set()
    right.close()


def test_the_bridge_and_a_controller_over_tls_with_the_sites_ca(broker: Broker, tmp_path: Path, sqlite_url: str,
                                                                 keys: KeyStore) -> None:
    ca = tmp_path / "mosquitto" / "config" / "ca.crt"
    assert broker.tls_port is not None
    site_file = write_site(tmp_path, sqlite_url, ('host = "127.0.0.1"', f'host = "127.0.0.1"\ntls = true\nca_file = "{ca}"'),
                           broker_port=broker.tls_port)
    engine = make_engine(sqlite_url)
    seed(engine, site_file, keys)
    config = load_config(site_file)
    bridge = Bridge(config, engine, keys)
    bridge.start()
    sims = controllers_from_site(config, keys, walk_through=False)
    try:
        sims["ctl-lobby"].wait_connected()
        sims["ctl-lobby"].present("main-in", None, "wiegand26", "12:1001")
        grant = sims["ctl-lobby"].wait_for_command(lambda cmd: cmd.type == "grant")
        assert isinstance(grant, c.Grant) and grant.door == "main-entrance"
    finally:
        for sim in sims.values():
            sim.close()
        bridge.stop()
        engine.dispose()


def test_mosquitto_passwd_reads_the_generated_file(tmp_path: Path) -> None:
    """The generated file is one Mosquitto's own tool can work with (here: add a user beside ours)."""
    out, keys = generated(tmp_path)
    result = subprocess.run(["mosquitto_passwd", "-b", str(out / "passwd"), "extra", "pw"], capture_output=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert hash_matches(keys.mqtt_password("ctl-lobby") or "", lines["ctl-lobby"]) and hash_matches("pw", lines["extra"])


# --- the documentation ---------------------------------------------------------------------------------


def doc_block(first_line: str) -> str:
    """The ```conf block of docs/mqtt.md that starts with ``first_line``."""
    blocks = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8").split("```conf\n")[1:]
    found = [b.split("```", 1)[0] for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"docs/mqtt.md: one ```conf block starting with {first_line!r}"
    return found[0]


def test_the_documented_configuration_is_what_the_generator_writes_for_the_example_site() -> None:
    config = load_config(EXAMPLE_SITE)
    assert doc_block("# Generated by") == mosquitto_conf(config, "/etc/mosquitto/badge-bridge")
    assert doc_block("# the bridge") == acl(config)


def test_each_partition_s_bridge_has_its_own_account(tmp_path: Path) -> None:
    """A partition's bridge logs in as the partition (its view's ``site.instance``): the broker must know it."""
    site = example_site(tmp_path)
    split = site.model_copy(update={"controllers": [
        ctl.model_copy(update={"partition": "halls"}) if ctl.key == "ctl-hall-a" else ctl for ctl in site.controllers]})
    bridges = [a.name for a in accounts(split) if a.role == "bridge"]
    assert bridges == ["bridge-1", "halls"]
    assert [a.name for a in accounts(site) if a.role == "bridge"] == ["bridge-1"]
