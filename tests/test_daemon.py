"""The daemon and the demo as real processes: start, stop cleanly, survive SIGKILL, keep the chain whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from badge_bridge.db import make_engine
from badge_bridge.models import AuditEntry, Person

CLI = [sys.executable, "-m", "badge_bridge.cli"]


def _env(site_file: Path) -> dict[str, str]:
    return {**os.environ, "BADGE_BRIDGE_CONFIG": str(site_file)}


def _start(site_file: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*CLI, "run"], env=_env(site_file), stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    for line in proc.stderr:
        if "started for site" in line:
            return proc
        assert time.monotonic() < deadline, "bridge did not start"
    raise AssertionError(f"bridge exited with {proc.wait()} before starting")


def _kinds(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        kinds = list(conn.scalars(select(AuditEntry.kind).where(AuditEntry.chain_id == "bridge-1")
                                  .order_by(AuditEntry.seq)))
    engine.dispose()
    return kinds


def test_run_stops_cleanly_and_survives_sigkill(site_file: Path, db_url: str) -> None:
    subprocess.run([*CLI, "init"], env=_env(site_file), check=True, capture_output=True)
    proc = _start(site_file)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert _kinds(db_url) == ["bridge.started", "bridge.stopped"]

    proc = _start(site_file)
    time.sleep(0.5)  # let the start event commit
    proc.kill()
    proc.wait(timeout=10)
    proc = _start(site_file)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert _kinds(db_url) == ["bridge.started", "bridge.stopped", "bridge.started", "bridge.started", "bridge.stopped"]
    verify = subprocess.run([*CLI, "audit", "verify"], env=_env(site_file), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "audit log verified" in verify.stdout


def test_demo_builds_the_site_and_prints_the_admin_login(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site.toml"
    site.write_text((root / "site.example.toml").read_text())
    proc = subprocess.Popen([sys.executable, "-m", "badge_bridge.demo", "--config", str(site)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if "started for site" in line:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    text = "".join(out)
    assert "console admin: admin / " in text
    password = text.split("console admin: admin / ")[1].split()[0]
    assert len(password) >= 12
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'badge-bridge.db'}")
    with engine.connect() as conn:
        assert len(conn.scalars(select(Person.name)).all()) == 5
    engine.dispose()
