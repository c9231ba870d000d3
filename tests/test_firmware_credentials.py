"""`firmware push` on a site set up as the README advises: the broker account's password only in the
environment (BADGE_BRIDGE_MQTT_PASSWORD), TLS with the CA file named relative to the site file (issue 13)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from badge_bridge.controllers.feedback import BuzzerPatterns, LedPatterns
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_client import PASSWORD_ENV
from badge_bridge.sim.broker import Broker, TlsFiles
from firmware_config.devices import ControllerSettings
from firmware_config.sim import SimConfigController
from tests.conftest import require_mosquitto, write_site
from tests.test_firmware import pushed_events, run

PASSWORD = "bridge-pw"
LOBBY_ONLY = """
[[controllers]]
key = "ctl-lobby"
profile = "mqtt"
open_time_s = 5
held_open_limit_s = 30
"""


def certificates(directory: Path) -> TlsFiles:
    """A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in ``directory``."""
    directory.mkdir()
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "badge-bridge test CA")])

    def signed(subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
               extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    ca = signed(ca_name, ca_key.public_key(), [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                       encipher_only=False, decipher_only=False), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)])
    server = signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key.public_key(), [
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)])
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(Encoding.PEM))
    files.key.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()))
    return files


@pytest.fixture
def secured(tmp_path: Path, sqlite_url: str, keys: KeyStore,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, SimConfigController]]:
    """The site file naming its broker account without a password and its CA as ``tls/ca.crt`` (next to it),
    run from another directory; the lobby controller (anonymous, on the broker's plain listener) ready."""
    require_mosquitto()
    broker = Broker(tmp_path / "mosquitto", users={"bridge-1": PASSWORD}, tls=certificates(tmp_path / "tls"))
    broker.start()
    assert broker.tls_port is not None
    site = write_site(tmp_path, sqlite_url, ('topic_prefix = "badge-bridge/v1"',
                                             'topic_prefix = "badge-bridge/v1"\nusername = "bridge-1"\ntls = true\n'
                                             'ca_file = "tls/ca.crt"'), broker_port=broker.tls_port)
    (tmp_path / "firmware.toml").write_text(LOBBY_ONLY)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    lobby = SimConfigController(broker.port, "ctl-lobby", ControllerSettings(
        open_time_s=7.0, held_open_limit_s=30.0, reader_mode="card", offline_policy="cached_list",
        led=LedPatterns(), buzzer=BuzzerPatterns()))
    yield site, lobby
    lobby.close()
    broker.stop()


def test_push_with_the_password_in_the_environment(secured: tuple[Path, SimConfigController], sqlite_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    site, lobby = secured
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    result = run(site, "push", "--yes")
    assert result.exit_code == 0, result.output
    assert "ctl-lobby: pushed" in result.output
    assert [m.config.open_time_s for m in lobby.applied] == [5.0]
    assert len(pushed_events(sqlite_url)) == 1


def test_push_without_the_password_says_what_is_missing(secured: tuple[Path, SimConfigController], sqlite_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    site, lobby = secured
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    result = run(site, "push", "--yes")
    assert result.exit_code == 1
    assert "refused the connection" in result.output
    assert f"user 'bridge-1' has no password: set {PASSWORD_ENV} or mqtt.password" in result.output
    assert "Traceback" not in result.output
    assert lobby.applied == [] and pushed_events(sqlite_url) == []
