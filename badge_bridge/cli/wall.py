"""Wall display commands: add a wall (its one-time link printed once), list them, revoke one (web.wall)."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from badge_bridge import console_sessions, people
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.config import ConsoleSection
from badge_bridge.models import ConsoleSession, ConsoleUser

LINK_PATH = "/wall/connect#"
"""The token rides in the fragment: a browser never sends it to the server, so no access log holds it; the
connect page posts it once and drops it from the address bar (web.wall)."""


def console_url(console: ConsoleSection) -> str:
    """The console's address as the site file gives it (behind a proxy, use the address the screen knows)."""
    return f"{'https' if console.tls_cert else 'http'}://{console.host}:{console.port}"


@click.group()
def wall() -> None:
    """Wall displays: read-only screens of alarms, plan and feed, each with its own revocable link."""


@wall.command("add")
@click.argument("name")
@pass_app
@fail_cleanly
def wall_add(app: App, name: str) -> None:
    """Add a wall display NAME (e.g. "NOC wall") and print its one-time link; open it on the screen within
    24 hours. The link works once; only its hash is stored."""
    (user, token), _ = app.admin(lambda s: people.add_wall(s, app.actor, name, now=datetime.now(UTC)))
    click.echo(f"wall display {user.username} added; open this link on the screen (once, within 24 hours):")
    click.echo(f"{console_url(app.config.console)}{LINK_PATH}{token}")


@wall.command("list")
@pass_app
@fail_cleanly
def wall_list(app: App) -> None:
    """Every wall display: active or revoked, and whether its screen is connected."""
    with Session(app.engine()) as s:
        rows = s.execute(select(ConsoleUser.username, ConsoleUser.active, ConsoleUser.created_at,
                                func.max(ConsoleSession.last_seen_at).filter(ConsoleSession.ended_at.is_(None)))
                         .outerjoin(ConsoleSession, (ConsoleSession.user_id == ConsoleUser.id)
                                    & (ConsoleSession.user_agent != console_sessions.WALL_LINK_AGENT))
                         .where(ConsoleUser.role == "wall").group_by(ConsoleUser.id)
                         .order_by(ConsoleUser.username)).all()
    if not rows:
        click.echo("no wall displays")
    for username, active, created, seen in rows:
        state = "revoked" if not active else f"seen {seen:%Y-%m-%d %H:%M} UTC" if seen else "not connected"
        click.echo(f"{username}\t{state}\tadded {created:%Y-%m-%d}")


@wall.command("revoke")
@click.argument("name")
@pass_app
@fail_cleanly
def wall_revoke(app: App, name: str) -> None:
    """Revoke the wall display NAME for good: its screen closes within seconds and says so."""
    username = people.wall_username(name)
    _, event = app.admin(lambda s: people.revoke_wall(s, app.actor, people.user_id(s, username)))
    click.echo(f"wall display {username} revoked; {event.detail['sessions_ended']} session(s) ended")
