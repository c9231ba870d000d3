"""People commands: console users, people and their credentials (their faces: camera/cli.py)."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.cli.plugins import PluginGroup
from badge_bridge.events import Event
from badge_bridge.models import Person


@click.group()
def user() -> None:
    """Console users."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(people.LOGIN_ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_app
@fail_cleanly
def user_add(app: App, username: str, role: str, password_stdin: bool) -> None:
    """Add a console user. Without --password-stdin a strong password is generated and printed once."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(15)
    app.admin(lambda session: people.add_user(session, app.actor, username, role, password))
    click.echo(f"console user {username} ({role}) added")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@pass_app
@fail_cleanly
def user_password(app: App, username: str, password_stdin: bool) -> None:
    """Set a new password (generated and printed once without --password-stdin); ends the user's sessions."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(15)
    event = _change_user(app, username, people.reset_password, password)
    click.echo(f"password of {username} changed; {event.detail['sessions_ended']} session(s) ended")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("disable")
@click.argument("username")
@pass_app
@fail_cleanly
def user_disable(app: App, username: str) -> None:
    """Disable a console user; ends their sessions."""
    event = _change_user(app, username, people.set_user_active, False)
    click.echo(f"console user {username} disabled; {event.detail['sessions_ended']} session(s) ended")


@user.command("enable")
@click.argument("username")
@pass_app
@fail_cleanly
def user_enable(app: App, username: str) -> None:
    """Enable a console user again."""
    _change_user(app, username, people.set_user_active, True)
    click.echo(f"console user {username} enabled")


def _change_user(app: App, username: str, change: Callable[..., tuple[object, Event]], *args: object) -> Event:
    """``change`` (from badge_bridge.people) applied to the console user ``username``, audited; its event."""
    _, event = app.admin(lambda session: change(session, app.actor, people.user_id(session, username), *args))
    return event


@user.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(people.LOGIN_ROLES))
@pass_app
@fail_cleanly
def user_role(app: App, username: str, role: str) -> None:
    """Change a console user's role; ends their sessions."""
    event = _change_user(app, username, people.set_role, role)
    click.echo(f"console user {username} is now {role}; {event.detail['sessions_ended']} session(s) ended")


# --- people ----------------------------------------------------------------------------------------


@click.group(cls=PluginGroup, plugin_path="person")
def person() -> None:
    """People who may hold credentials."""


@person.command("add")
@click.argument("name")
@click.option("--employee-no")
@click.option("--company", default="")
@click.option("--level", "levels", multiple=True, help="Access level key (repeatable).")
@click.option("--lockdown-exempt", is_flag=True, help="Responder who may pass during a lockdown.")
@pass_app
@fail_cleanly
def person_add(app: App, name: str, employee_no: str | None, company: str, levels: tuple[str, ...],
               lockdown_exempt: bool) -> None:
    """Add a person."""
    p, _ = app.admin(lambda session: people.add_person(session, app.actor, name, employee_no=employee_no,
                                                        company=company, levels=list(levels),
                                                        lockdown_exempt=lockdown_exempt))
    click.echo(f"person {p.id} added: {name}")


@person.command("list")
@pass_app
@fail_cleanly
def person_list(app: App) -> None:
    """List people with their levels and credentials."""
    with Session(app.engine()) as session:
        for p in session.scalars(select(Person).order_by(Person.id)):
            levels = ",".join(lvl.key for lvl in p.levels) or "-"
            creds = ", ".join(f"{c.id}:{c.format}:{c.number}[{c.status}]" for c in p.credentials) or "-"
            click.echo(f"{p.id:>5}  {p.name:<30} {p.status:<7} levels={levels}  credentials={creds}")


# --- credentials -----------------------------------------------------------------------------------


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected an ISO date or date-time, e.g. 2026-12-31T18:00") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@click.group()
def credential() -> None:
    """Cards, PINs and biometric references."""


@credential.command("add")
@click.argument("person_id", type=int)
@click.option("--card", "number", required=True, help="FACILITY:CARD for Wiegand formats, the text for ascii.")
@click.option("--format", "fmt", default="wiegand26", show_default=True,
              type=click.Choice(["wiegand26", "wiegand34", "wiegand37", "ascii"]))
@click.option("--pin", is_flag=True, help="Prompt for a PIN (stored only as a keyed hash).")
@click.option("--biometric-ref", help="Identity enrolled on a biometric reader.")
@click.option("--valid-from")
@click.option("--valid-until")
@pass_app
@fail_cleanly
def credential_add(app: App, person_id: int, number: str, fmt: str, pin: bool, biometric_ref: str | None,
                   valid_from: str | None, valid_until: str | None) -> None:
    """Issue a credential to a person."""
    pin_value = click.prompt("PIN", hide_input=True, confirmation_prompt=True) if pin else None
    pepper, since, until = app.keys.pin_pepper(), _when(valid_from), _when(valid_until)
    cred, _ = app.admin(lambda session: people.add_credential(
        session, app.actor, person_id, fmt, number, pepper=pepper, pin=pin_value,
        biometric_ref=biometric_ref, valid_from=since, valid_until=until,
    ))
    click.echo(f"credential {cred.id} issued to person {person_id}: {fmt} {number}")


@credential.command("revoke")
@click.argument("credential_id", type=int)
@click.option("--reason", required=True)
@pass_app
@fail_cleanly
def credential_revoke(app: App, credential_id: int, reason: str) -> None:
    """Revoke a credential (final: issue a new one to restore access)."""
    app.admin(lambda session: people.set_credential_status(session, app.actor, credential_id, "revoked", reason))
    click.echo(f"credential {credential_id} revoked")
