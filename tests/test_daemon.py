"""The daemon and the demo as real processes: start, stop cleanly, survive SIGKILL, keep the chain whole."""

from __future__ import annotations

import re
import shlex
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from badge_bridge.db import make_engine
from badge_bridge.demo import DEMO_ESCORT, DEMO_PEOPLE, DEMO_VISITOR
from badge_bridge.models import Alarm, AuditEntry, Person
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
    # PostgreSQL: the restart after SIGKILL takes the lease the killed one left behind (a clean stop hands it back)
    took_over = ["bridge.took_over"] if db_url.startswith("postgresql") else []
    assert _kinds(db_url) == ["bridge.started", "bridge.stopped", "bridge.started", "bridge.started", *took_over,
                              "bridge.stopped"]
    verify = subprocess.run([*CLI, "audit", "verify"], env=cli_env(site_file), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "audit log verified" in verify.stdout


@CAMERAS
def test_demo_runs_the_whole_site_and_prints_the_logins_once_the_console_answers(tmp_path: Path) -> None:
    """`make demo`: its own broker, the bridge, simulated controllers and people walking through; the logins
    and the console's real address printed once it answers (and kept in a file only its owner reads); text
    lines only; the closing hint works as printed."""
    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site.toml"
    site.write_text((root / "site.example.toml").read_text())
    log = tmp_path / "demo.log"
    with log.open("wb") as out:  # --port 0: a free port (a test never uses a fixed one)
        proc = subprocess.Popen([sys.executable, "-m", "badge_bridge.demo", "--config", str(site), "--port", "0"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or "people are walking through" in log.read_text(), 180,
                   "the demo's banner", detail=lambda: log.read_text()[-3000:])
        url = re.search(r"^  console:\s+(http://127\.0\.0\.1:(\d+)/)", log.read_text(), re.M)
        assert url is not None and url.group(2) != "0", log.read_text()[-3000:]
        with urllib.request.urlopen(url.group(1) + "login", timeout=10) as answer:  # served when announced
            assert answer.status == 200
        wait_until(lambda: proc.poll() is not None or "granted" in log.read_text(), 180, "a grant in the demo",
                   detail=lambda: log.read_text()[-3000:])
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    text = log.read_text()
    logins = dict(re.findall(r"^\s+(admin|supervisor|guard|auditor)\s+\1 / (\S+)$", text, re.M))
    assert sorted(logins) == ["admin", "auditor", "guard", "supervisor"] and all(len(p) >= 12 for p in logins.values())
    saved = tmp_path / "var" / "demo-logins.txt"
    assert f"saved in {saved}" in text and stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert dict(re.findall(r"^\s+(admin|supervisor|guard|auditor)\s+\1 / (\S+)$", saved.read_text(), re.M)) == logins
    assert text.index("Listening at") < text.index("logins (user / password)")  # not before the console is up
    assert not [line for line in text.splitlines() if line.startswith("{")], "a JSON line among the text"
    assert '"GET /' not in text  # no access log line per request
    # its broker is the generated one: no anonymous clients, and every part of the demo logged in on its account
    conf = (tmp_path / "var" / "demo-mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf and "acl_file" in conf
    assert "refused the connection" not in text, text[-3000:]
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'badge-bridge.db'}")
    with engine.connect() as conn:
        # the demo's people, the escort and the visitor she takes through the mantrap
        assert sorted(conn.scalars(select(Person.name))) == sorted(
            [*(name for name, *_ in DEMO_PEOPLE), DEMO_ESCORT[0], DEMO_VISITOR[0]])
        kinds = conn.scalars(select(AuditEntry.kind).where(AuditEntry.chain_id == "bridge-1")).all()
        sources = conn.scalars(select(AuditEntry.source).where(AuditEntry.kind == "controller.online")).all()
        device_alarms = conn.scalars(select(Alarm.kind).where(Alarm.kind.in_(["controller.offline",
                                                                             "reader.offline"]))).all()
    engine.dispose()
    assert "access.granted" in kinds
    assert {"ctl-lobby", "ctl-hall-a", "esp-noc"} <= set(sources)  # every simulated controller came online
    assert not device_alarms  # ... and none went offline, not even when the demo stopped
    hint = re.search(r"^Check what it logged: (.+)$", text, re.M)
    assert hint is not None
    verify = subprocess.run(shlex.split(hint.group(1)), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "audit log verified" in verify.stdout
