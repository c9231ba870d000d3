"""A Mosquitto of our own, for the tests and `make demo`: free port, own persistence folder, restartable.

By default an open broker on 127.0.0.1; given ``settings`` (for example the configuration in docs/mqtt.md),
``users`` and an ``acl``, the broker a site would run, so the tests check what the documentation says. The
site's own listener, TLS files, paths and user in ``settings`` are replaced by this broker's; with ``tls`` it
has a second listener, on ``tls_port``, for TLS clients.
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
                 users: Mapping[str, str] | None = None, acl: str | None = None, tls: TlsFiles | None = None) -> None:
        """``users``: username -> password, hashed into a password file; ``acl``: the ACL file's text."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.dir / "mosquitto.conf"
        # Started as root, Mosquitto drops to the 'mosquitto' user, which cannot write its persistence into a
        # test's private folder: run it as whoever runs the tests.
        lines = [line for line in settings.splitlines() if _option(line) not in SITE_SPECIFIC]
        text = LOCAL.format(dir=self.dir, user=getpass.getuser()) + "\n".join(lines) + "\n"
        if users is not None:
            passwd = self.dir / "passwd"
            passwd.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
            passwd.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
            text += f"password_file {passwd}\n"
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            text += f"acl_file {self.dir / 'acl'}\n"
        text += f"listener {self.port} 127.0.0.1\n"
        self.tls_port = free_port() if tls is not None else None
        if tls is not None:
            text += f"listener {self.tls_port} 127.0.0.1\ncafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
        self.conf.write_text(text)

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

    def restart(self, down_s: float = 0.5) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
