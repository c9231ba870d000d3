"""`badge-bridge mqtt broker-config`: the site's Mosquitto configuration, generated from the site file and the
topic tree (topics.tree), so the broker enforces who may say what.

It writes into one folder: ``passwd`` (Mosquitto's own PBKDF2-SHA512 ``$7$`` format, hashed here so the bridge
host needs no mosquitto_passwd), ``acl`` (one ``user`` block per account, only its own topics, no ``pattern``
lines), the TLS files (``ca.crt``, ``server.crt``, ``server.key``) and ``mosquitto.conf``. Passwords are made
once in the keys folder (mqtt_accounts names the accounts) and kept on every run, so running it again changes
nothing but what the site file changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from badge_bridge.config import ConfigError, SiteConfig
from badge_bridge.keys import KeyStore
from badge_bridge.mqtt_accounts import Account, accounts
from badge_bridge.topics import ANY, BRIDGE, CAMERA, CONTROLLER, ESP_RFID, FIRMWARE, Topic, tree

PBKDF2_ITERATIONS, SALT_BYTES, HASH_BYTES = 101, 12, 64
"""What mosquitto_passwd 2.0 writes (src/password_mosq.c: PW_DEFAULT_ITERATIONS, SALT_LEN, the SHA-512 size)."""

TLS_PORT = 8883
FILES = ("mosquitto.conf", "passwd", "acl", "ca.crt", "server.crt", "server.key")

SETTINGS = """\
persistence true
persistence_location /var/lib/mosquitto/
autosave_interval 1
max_queued_messages 1000000
max_queued_bytes 0
queue_qos0_messages true
upgrade_outgoing_qos true
max_inflight_messages 0
max_packet_size 4194304
set_tcp_nodelay true
persistent_client_expiration 14d
"""
"""What docs/mqtt.md "Broker requirements" explains line by line: persistence, queues that keep esp-rfid's QoS 0
messages for the bridge, never ``max_queued_messages 0`` (eclipse-mosquitto/mosquitto#3244), no Nagle delay."""


# --- passwords -------------------------------------------------------------------------------------


def password_hash(password: str, salt: bytes | None = None) -> str:
    """``password`` as Mosquitto 2 stores it: ``$7$<iterations>$<salt>$<PBKDF2-SHA512>``, base64."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, HASH_BYTES)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def hash_matches(password: str, stored: str) -> bool:
    """Whether ``stored`` (a ``$7$`` hash) is ``password``'s, so a re-run keeps the line it wrote before."""
    try:
        _, seven, iterations, salt, digest = stored.split("$")
        computed = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations),
                                       HASH_BYTES)
        return seven == "7" and hmac.compare_digest(computed, base64.b64decode(digest))
    except ValueError:
        return False


def _password_file(keys: KeyStore, site_accounts: list[Account], previous: Path) -> tuple[str, list[str]]:
    """The password file's text, and the accounts whose password was made just now."""
    old = {}
    if previous.exists():
        old = dict(line.split(":", 1) for line in previous.read_text().splitlines() if ":" in line)
    made, lines = [], []
    for account in site_accounts:
        if keys.ensure_mqtt_password(account.name):
            made.append(account.name)
        password = keys.mqtt_password(account.name)
        assert password is not None
        kept = old.get(account.name)
        lines.append(f"{account.name}:{kept if kept and hash_matches(password, kept) else password_hash(password)}")
    return "".join(f"{line}\n" for line in lines), made


# --- the ACL ---------------------------------------------------------------------------------------


def _levels(config: SiteConfig, topic: Topic, account: Account) -> list[dict[str, str]]:
    """Every value of the pattern's variable levels this account uses: its own key only, but for the bridge
    and the firmware tool, who serve every controller, device and camera of the site."""
    own = account.role not in (BRIDGE, FIRMWARE)
    if "{controller}" in topic.pattern:
        keys = [account.key] if own else [c.key for c in config.controllers if c.kind == "mqtt"]
        return [{"controller": k} for k in keys if k]
    if "{camera}" in topic.pattern:
        keys = [account.key] if own else [c.key for c in config.cameras]
        return [{"camera": k} for k in keys if k]
    if "{base}" in topic.pattern or "{hostname}" in topic.pattern:
        esp = [c for c in config.controllers if c.kind == "esp-rfid" and (not own or c.key == account.key)]
        return [{"base": c.topic or c.key, "hostname": c.key} for c in esp]
    if "{partition}" in topic.pattern:  # bridge status: a controller hears its own partition's bridges
        partitions = [ANY] if account.role != CONTROLLER else [
            config.partition_of(c) for c in config.controllers if c.key == account.key]
        return [{"partition": p, "instance": ANY} for p in partitions]
    return [{"door": ANY}] if "{door}" in topic.pattern else [{}]


def acl_lines(config: SiteConfig, account: Account) -> list[str]:
    """The account's ``topic`` lines, from what topics.tree() says its role publishes and subscribes to."""
    out: dict[str, set[str]] = {}
    for topic in tree(account.role):
        access = {a for a, role_in in (("write", topic.publishers), ("read", topic.subscribers))
                  if account.role in role_in}
        for levels in _levels(config, topic, account):
            out.setdefault(topic.at(config.mqtt.topic_prefix, **levels), set()).update(access)
    return [f"topic {'readwrite' if len(access) == 2 else access.pop()} {t}" for t, access in out.items()]


_WHO = {BRIDGE: "the bridge", "console": "the console", FIRMWARE: "badge-bridge firmware diff | push",
        CONTROLLER: "controller", ESP_RFID: "esp-rfid device", CAMERA: "camera worker"}


def acl(config: SiteConfig, site_accounts: list[Account] | None = None) -> str:
    """The ACL file: one ``user`` block per account (``site_accounts``, default all of the site's), nothing
    for anyone else (anonymous clients are refused)."""
    blocks = []
    for account in site_accounts if site_accounts is not None else accounts(config):
        who = _WHO[account.role] + (f" {account.key}" if account.key else "")
        blocks.append("\n".join([f"# {who}", f"user {account.name}", *acl_lines(config, account)]))
    return "\n\n".join(blocks) + "\n"


# --- TLS -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnTls:
    """The operator's own PEM files, copied into the output folder instead of a CA made for the site."""

    ca: Path
    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _site_ca(config: SiteConfig, keys: KeyStore) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The site's broker CA from the keys folder, made there on first use (True when made now)."""
    folder = keys.dir / "mqtt"
    key_path, cert_path = folder / "ca.key", folder / "ca.crt"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not the EC key broker-config made")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key, False
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"badge-bridge broker CA, {config.site.name}")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(key_path, _pem_key(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, True


def _names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _server_cert_current(path: Path, ca: x509.Certificate, names: list[x509.GeneralName]) -> bool:
    """Whether the certificate already in the output folder is the CA's, still valid for a year, and names
    exactly these hosts: then a re-run keeps it."""
    if not path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return set(sans) == set(names) and cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=365)


def _server_cert(out: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str]) -> bool:
    """The broker's certificate and key, signed by the site's CA; True when made now."""
    names = _names(hosts)
    if _server_cert_current(out / "server.crt", ca, names) and (out / "server.key").exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(out / "server.key", _pem_key(key), 0o600)
    _write(out / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    return True


# --- the listener configuration --------------------------------------------------------------------


def mosquitto_conf(config: SiteConfig, install_dir: str, *, tls_port: int = TLS_PORT,
                   plain_port: int | None = None) -> str:
    """The broker's configuration; ``install_dir`` is where the other files will be on the broker host."""
    d = install_dir.rstrip("/")
    plain = (f"# plain MQTT for clients on this host only\nlistener {plain_port} 127.0.0.1\n"
             if plain_port is not None else "")
    return (f"# Generated by `badge-bridge mqtt broker-config` for {config.site.name}: edit the site file and run it\n"
            "# again instead. Comments stand on lines of their own: Mosquitto takes the rest of a line as the value.\n"
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"password_file {d}/passwd\n"
            f"acl_file {d}/acl\n\n"
            f"listener {tls_port}\n"
            f"cafile {d}/ca.crt\n"
            f"certfile {d}/server.crt\n"
            f"keyfile {d}/server.key\n"
            "tls_version tlsv1.2\n"
            f"{plain}\n"
            f"{SETTINGS}")


# --- all of it -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """What a run did, for the operator."""

    accounts: tuple[str, ...]
    passwords_made: tuple[str, ...]
    ca_made: bool
    server_cert_made: bool


def default_hosts(config: SiteConfig) -> list[str]:
    return list(dict.fromkeys([config.mqtt.host, "localhost", "127.0.0.1"]))


def generate(config: SiteConfig, keys: KeyStore, out: Path, *, hosts: list[str] | None = None,
             own_tls: OwnTls | None = None, install_dir: str | None = None, tls_port: int = TLS_PORT,
             plain_port: int | None = None) -> Written:
    """Write the broker's files into ``out`` (see the module docstring). ``hosts``: the names clients reach
    the broker by, in the server certificate (default: the site's ``mqtt.host``, localhost, 127.0.0.1);
    ``install_dir``: where ``mosquitto.conf`` finds the other files (default: ``out``)."""
    site_accounts = accounts(config)
    out.mkdir(parents=True, exist_ok=True)
    passwd, made = _password_file(keys, site_accounts, out / "passwd")
    _write(out / "passwd", passwd.encode(), 0o600)
    _write(out / "acl", acl(config, site_accounts).encode())
    ca_made = cert_made = False
    if own_tls is not None:
        for src, name in ((own_tls.ca, "ca.crt"), (own_tls.cert, "server.crt"), (own_tls.key, "server.key")):
            try:
                data = src.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{src}: {exc.strerror}") from None
            if b"-----BEGIN " not in data:
                raise ConfigError(f"{src} is not a PEM file")
            _write(out / name, data, 0o600 if name == "server.key" else 0o644)
    else:
        ca, ca_key, ca_made = _site_ca(config, keys)
        _write(out / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
        cert_made = _server_cert(out, ca, ca_key, hosts or default_hosts(config))
    conf = mosquitto_conf(config, install_dir or str(out.resolve()), tls_port=tls_port, plain_port=plain_port)
    _write(out / "mosquitto.conf", conf.encode())
    return Written(tuple(a.name for a in site_accounts), tuple(made), ca_made, cert_made)
