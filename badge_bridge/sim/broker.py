"""A Mosquitto of our own, for the tests and `make demo`: free port, own persistence folder, restartable.

``for_site`` runs what `badge-bridge mqtt broker-config` wrote for a site (no anonymous clients, the
generated ACL, the site's CA), so the tests and `make demo` check what a site runs. Otherwise an open broker on
127.0.0.1, or, given ``settings``, ``users`` and an ``acl``, a broker configured by hand. The site's own
listener, TLS files, paths and user in ``settings`` are replaced by this broker's: a plain listener on
127.0.0.1 (``port``) and, with ``tls``, a TLS one (``tls_port``).
"""

from __future__ import annotations

import getpass
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from badge_bridge.broker_config import generate, password_hash
from badge_bridge.config import SiteConfig
from badge_bridge.keys import KeyStore

SETTINGS = """\
allow_anonymous true
persistence true
autosave_interval 1
max_queued_messages 1000000
max_inflight_messages 0
max_packet_size 1048576
set_tcp_nodelay true
"""
"""The default: anyone may connect. ``max_queued_messages`` is not 0: Mosquitto 2.0.x before 2.0.22 then
disconnects a client at its first publish the ACL refuses (eclipse-mosquitto/mosquitto#3244)."""

LOCAL = """\
user {user}
persistence_location {dir}/
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""

SITE_SPECIFIC = frozenset({"listener", "cafile", "capath", "certfile", "keyfile", "tls_version", "require_certificate",
                           "use_identity_as_username", "password_file", "acl_file", "persistence_location",
                           "log_dest", "user"})
"""Options in a site's configuration that name its own ports, files or system user."""


def _option(line: str) -> str:
    words = line.split("#", 1)[0].split()
    return words[0] if words else ""


class TlsFiles(NamedTuple):
    """PEM files: the CA that signed the broker's certificate, the certificate, its key."""

    ca: Path
    cert: Path
    key: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, directory: Path, port: int | None = None, *, settings: str = SETTINGS,
                 users: Mapping[str, str] | None = None, acl: str | None = None, tls: TlsFiles | None = None,
                 password_file: Path | None = None) -> None:
        """``users``: username -> password, hashed into the password file (after the lines of ``password_file``,
        one Mosquitto made or broker-config wrote); ``acl``: the ACL file's text."""
        self.passwords = dict(users or {})
        """The password of each account the broker knows, for the test clients that log in."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.dir / "mosquitto.conf"
        # Started as root, Mosquitto drops to the 'mosquitto' user, which cannot write its persistence into a
        # test's private folder: run it as whoever runs the tests.
        lines = [line for line in settings.splitlines() if _option(line) not in SITE_SPECIFIC]
        text = LOCAL.format(dir=self.dir, user=getpass.getuser()) + "\n".join(lines) + "\n"
        if users is not None or password_file is not None:
            passwd = self.dir / "passwd"
            hashed = password_file.read_text() if password_file is not None else ""
            hashed += "".join(f"{name}:{password_hash(password)}\n" for name, password in (users or {}).items())
            passwd.write_text(hashed)
            passwd.chmod(0o600)
            text += f"password_file {passwd}\n"
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            text += f"acl_file {self.dir / 'acl'}\n"
        text += f"listener {self.port} 127.0.0.1\n"
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        if tls is not None:
            text += f"listener {self.tls_port} 127.0.0.1\ncafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
        self.conf.write_text(text)

    def login(self, account: str) -> tuple[str, str]:
        """The username and password of an account of this broker."""
        return account, self.passwords[account]

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {(self.dir / 'mosquitto.log').read_text()[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        """Graceful stop: Mosquitto writes its persistence file (queued QoS 1 messages, sessions)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self, *, keep_persistence: bool = True) -> None:
        """``kill -9``: nothing is saved beyond the last autosave. ``keep_persistence=False`` also deletes what
        it had saved, as a broker that restarts empty (persistence off, or a lost disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        if not keep_persistence:
            (self.dir / "mosquitto.db").unlink(missing_ok=True)

    def restart(self, down_s: float = 0.5) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


def for_site(directory: Path, config: SiteConfig, *, test_users: Mapping[str, str] | None = None, test_acl: str = "",
             port: int | None = None) -> Broker:
    """A broker run as `badge-bridge mqtt broker-config` configures it for ``config`` (generated into
    ``directory``/config: its settings, password file, ACL and TLS files; passwords in the site's keys
    folder), not yet started. ``test_users`` and ``test_acl``: accounts only a test adds, with their ACL lines."""
    keys = KeyStore(config.keys_dir())
    cfg = directory / "config"
    written = generate(config, keys, cfg, hosts=["127.0.0.1", "localhost"])
    broker = Broker(directory, port, settings=(cfg / "mosquitto.conf").read_text(), password_file=cfg / "passwd",
                    users=test_users, acl=(cfg / "acl").read_text() + test_acl,
                    tls=TlsFiles(cfg / "ca.crt", cfg / "server.crt", cfg / "server.key"))
    broker.passwords.update({name: keys.mqtt_password(name) or "" for name in written.accounts})
    return broker
