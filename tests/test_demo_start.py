"""What `make demo` does before anyone looks at the console: the port it serves on (a free one when the site
file's is taken, an error when the one asked for is), the logins file only its owner can read, the log a
person reads (text in every process, one summary line a minute)."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from badge_bridge import logs
from badge_bridge.demo import free_console_port, wait_listening, write_private

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_asked_for_that_is_taken_is_a_clear_error(taken: int) -> None:
    with pytest.raises(click.ClickException, match=f"port {taken} on 127.0.0.1 is taken.*PORT=0"):
        free_console_port("127.0.0.1", taken, explicit=True)


def test_the_site_files_port_taken_is_replaced_by_a_free_one_and_said(taken: int,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    port = free_console_port("127.0.0.1", taken, explicit=False)
    assert port not in (taken, 0)
    assert f"port {taken} on 127.0.0.1 is taken" in caplog.text and f"listens on {port} instead" in caplog.text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # it is free


def test_port_zero_is_any_free_port_and_a_free_port_is_kept() -> None:
    port = free_console_port("127.0.0.1", 0, explicit=True)
    assert port > 0
    assert free_console_port("127.0.0.1", port, explicit=True) == port


def test_the_demo_refuses_a_taken_port_before_starting_anything(taken: int, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text((ROOT / "site.example.toml").read_text())
    demo = subprocess.run([sys.executable, "-m", "badge_bridge.demo", "--config", str(site), "--port", str(taken)],
                          capture_output=True, text=True, timeout=60)
    assert demo.returncode != 0
    assert f"port {taken} on 127.0.0.1 is taken" in demo.stderr
    assert not (tmp_path / "var").exists()  # nothing built, no broker started


def test_a_console_that_exits_is_not_waited_for() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert not wait_listening(process, "http://127.0.0.1:9/", threading.Event(), timeout=60)
    assert process.returncode == 3


def test_the_logins_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "var" / "demo-logins.txt"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)  # a file left from before, readable by all: tightened
    old_umask = os.umask(0)
    try:
        assert write_private(path, "admin / secret") == path
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "admin / secret\n"


def test_the_minute_summary_counts_decisions_and_alarms_by_kind() -> None:
    summary = logs.MinuteSummary(logging.getLogger("test"))
    for kind, detail in [("access.granted", {}), ("access.granted", {}), ("access.denied", {}),
                         ("alarm.raised", {"alarm": "door.unauthorized_entry"}), ("motion.start", {}),
                         ("alarm.raised", {"alarm": "door.unauthorized_entry"})]:
        summary.count(kind, detail)
    assert summary.line() == "2 granted, 1 denied, 2 alarms (door.unauthorized_entry x2)"
    assert summary.line() == "0 granted, 0 denied, 0 alarms"  # counted afresh


def test_the_log_format_a_parent_sets_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        monkeypatch.setenv(logs.LOG_FORMAT_ENV, "text")
        logs.setup("json", logging.INFO)
        assert not isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        monkeypatch.setenv(logs.LOG_FORMAT_ENV, "yaml")
        with pytest.raises(ValueError, match="expected json or text"):
            logs.setup("json", logging.INFO)
    finally:
        root.handlers[:], root.level = handlers, level
