"""The daemon and the demo as real processes: start, stop cleanly, survive SIGKILL, keep the chain whole."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from badge_bridge.db import make_engine
from badge_bridge.models import AuditEntry, Person
from badge_bridge.sim.broker import Broker
from tests.bridge_proc import BridgeProcess, cli_env
from tests.conftest import CAMERAS, write_site
from tests.waiting import wait_until

CLI = [sys.executable, "-m", "badge_bridge.cli"]


def _kinds(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        kinds = list(conn.scalars(select(AuditEntry.kind).where(AuditEntry.chain_id == "bridge-1")
                                  .order_by(AuditEntry.seq)))
    engine.dispose()
    return kinds


def test_run_stops_cleanly_and_survives_sigkill(tmp_path: Path, db_url: str, broker: Broker,
                                                bridge_process: Callable[[Path], BridgeProcess]) -> None:
    site_file = write_site(tmp_path, db_url, broker_port=broker.port)
    subprocess.run([*CLI, "init"], env=cli_env(site_file), check=True, capture_output=True)
    bridge = bridge_process(site_file)
    bridge.start()
    assert bridge.signal(signal.SIGTERM) == 0
    assert _kinds(db_url) == ["bridge.started", "bridge.stopped"]

    bridge.start()
    wait_until(lambda: _kinds(db_url).count("bridge.started") == 2, 30, "the second start in the log")
    bridge.kill()
    bridge.start()
    assert bridge.signal(signal.SIGINT) == 0
    assert _kinds(db_url) == ["bridge.started", "bridge.stopped", "bridge.started", "bridge.started", "bridge.stopped"]
    verify = subprocess.run([*CLI, "audit", "verify"], env=cli_env(site_file), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "audit log verified" in verify.stdout


@CAMERAS
def test_demo_runs_the_whole_site_and_prints_the_admin_login(tmp_path: Path) -> None:
    """`make demo`: its own broker, the bridge, simulated controllers and people walking through."""
    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site.toml"
    site.write_text((root / "site.example.toml").read_text() + "\n[console]\nport = 0\n")  # a free port
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "badge_bridge.demo", "--config", str(site)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or all(t in log.read_text() for t in ("access.granted", "Listening")),
                   90, "a grant in the demo, and its console served", detail=lambda: log.read_text()[-3000:])
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0
    text = log.read_text()
    assert "access.granted" in text, text[-3000:]
    logins = dict(re.findall(r"^\s+(admin|supervisor|guard|auditor)\s+\1 / (\S+)$", text, re.M))
    assert sorted(logins) == ["admin", "auditor", "guard", "supervisor"] and all(len(p) >= 12 for p in logins.values())
    assert re.search(r"Listening at: http://127\.0\.0\.1:\d+", text)  # the console was served
    # its broker is the generated one: no anonymous clients, and every part of the demo logged in on its account
    conf = (tmp_path / "var" / "demo-mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf and "acl_file" in conf
    assert "refused the connection" not in text, text[-3000:]
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'badge-bridge.db'}")
    with engine.connect() as conn:
        assert len(conn.scalars(select(Person.name)).all()) == 5
        assert "access.granted" in conn.scalars(select(AuditEntry.kind).where(AuditEntry.chain_id == "bridge-1")).all()
    engine.dispose()
    verify = subprocess.run([*CLI, "-c", str(site), "audit", "verify"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
