"""`badge-bridge visitor` as the desk runs it: mistakes are one line and change nothing; a visit from
registration to the returned badge verifies clean; the printed badge renders and says what it must."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge.models import Visit
from tests.test_state_binding import cli, ok


def refused(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert fragment in result.stderr.strip().splitlines()[-1], result.stderr  # the error line, after any usage


def test_a_visit_through_the_cli(site_file: Path, engine: Engine, artifacts: Path) -> None:
    ok(cli(site_file, "init"))
    ok(cli(site_file, "person", "add", "Esther Escort", "--level", "staff"))
    assert "may escort visitors" in ok(cli(site_file, "visitor", "escort", "1"))
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    refused(cli(site_file, "visitor", "register", "Vera", "--until", until, "--level", "noc-24x7"),
            "may not be given level noc-24x7")
    refused(cli(site_file, "visitor", "register", "Vera", "--until", until, "--level", "staff", "--tenant", "nope"),
            "no customer 'nope'")
    refused(cli(site_file, "visitor", "register", "Vera", "--until", "tomorrow", "--level", "staff"),
            "expected an ISO date")
    out = ok(cli(site_file, "visitor", "register", "Vera Visitor", "--company", "Acme", "--until", until,
                 "--level", "staff", "--purpose", "rack survey"))
    assert out.startswith("visit 1 registered")
    refused(cli(site_file, "visitor", "badge", "1", "-o", str(artifacts / "badge.pdf")), "check them in first")
    refused(cli(site_file, "visitor", "check-in", "1", "--id-document", "passport 123456789", "--card", "77:1"),
            "never the whole number")
    ok(cli(site_file, "visitor", "check-in", "1", "--id-document", "passport, last 4: 6789", "--card", "77:1"))
    listed = ok(cli(site_file, "visitor", "list"))
    assert "Vera Visitor" in listed and "on_site" in listed and "host=" in listed
    ok(cli(site_file, "visitor", "badge", "1", "-o", str(artifacts / "badge.pdf")))
    subprocess.run(["pdftoppm", "-png", "-r", "150", str(artifacts / "badge.pdf"), str(artifacts / "badge")],
                   check=True)
    assert (artifacts / "badge-1.png").stat().st_size > 5000
    text = subprocess.run(["pdftotext", str(artifacts / "badge.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    for expected in ("VISITOR — ESCORT REQUIRED", "Vera Visitor", "Acme", "Host: ", "Valid until", "Visit 1"):
        assert expected in text, text
    refused(cli(site_file, "visitor", "cancel", "1", "--reason", "x"), "return the badge instead")
    ok(cli(site_file, "visitor", "return", "1"))
    refused(cli(site_file, "visitor", "return", "1"), "no badge is out")
    with Session(engine) as session:
        assert session.scalars(select(Visit.state)).all() == ["returned"]
    assert "access tables match the log" in ok(cli(site_file, "audit", "verify"))
