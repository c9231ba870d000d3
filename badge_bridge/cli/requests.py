"""`badge-bridge request`: access requests from the shell (badge_bridge.access_requests), with the rights of an
admin; the four-eyes rule still holds between the unix user who opened a request and who approves it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import access_requests as ar
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.cli.people import _when
from badge_bridge.events import Event
from badge_bridge.models import AccessRequest, ConsoleUser, Person
from badge_bridge.people import AdminError


@click.group()
def request() -> None:
    """Access requests: a level for a time window, approved by site staff (docs/workflows.md)."""


def _who(app: App) -> ar.Who:
    return ar.Who(app.actor, "admin")


def _change(app: App, change: Callable[[Session], tuple[AccessRequest, Event]]) -> AccessRequest:
    row, _ = app.admin(change)
    return row


@request.command("open")
@click.argument("person_id", type=int)
@click.argument("level")
@click.option("--from", "starts", required=True, help="Start, ISO date-time (UTC unless it says otherwise).")
@click.option("--until", "ends", required=True, help="End, ISO date-time: the level is revoked then.")
@click.option("--reason", default="")
@click.option("--ticket", default="", help="Change or ticket number (a reason or a ticket is required).")
@pass_app
@fail_cleanly
def request_open(app: App, person_id: int, level: str, starts: str, ends: str, reason: str, ticket: str) -> None:
    """Ask for LEVEL for PERSON_ID from --from until --until."""
    since, until, config = _when(starts), _when(ends), app.config
    assert since is not None and until is not None
    r = _change(app, lambda s: ar.open_request(s, _who(app), config, person_id, level, since, until, reason=reason,
                                               ticket=ticket, now=datetime.now(UTC)))
    click.echo(f"access request {r.id} opened: {level} for person {person_id}, {since:%Y-%m-%d %H:%M} to "
               f"{until:%Y-%m-%d %H:%M} UTC")


@request.command("endorse")
@click.argument("request_id", type=int)
@click.option("--for-user", "username", required=True,
              help="The tenant admin (console user) whose endorsement this records.")
@pass_app
@fail_cleanly
def request_endorse(app: App, request_id: int, username: str) -> None:
    """Record the person's tenant admin's endorsement, given to you."""
    def change(s: Session) -> tuple[AccessRequest, Event]:
        user = s.scalar(select(ConsoleUser).where(ConsoleUser.username == username))
        if user is None or user.role != "tenant_admin" or not user.active:
            raise AdminError(f"{username!r} is not an active tenant admin")
        return ar.endorse(s, ar.Who(app.actor, "tenant_admin", user.tenant_id), request_id, now=datetime.now(UTC),
                          on_behalf_of=username)

    _change(app, change)
    click.echo(f"access request {request_id} endorsed for {username}")


def _decision(name: str, change: Callable[..., tuple[AccessRequest, Event]], done: str, about: str,
              why_required: bool = False) -> None:
    """``badge-bridge request <name> ID [--comment]``: ``change`` (access_requests.approve, ...) as the CLI."""
    @request.command(name, help=about)
    @click.argument("request_id", type=int)
    @click.option("--comment", required=why_required, default=None if why_required else "",
                  help="Why (required)." if why_required else "A note for the log.")
    @pass_app
    @fail_cleanly
    def command(app: App, request_id: int, comment: str) -> None:
        _change(app, lambda s: change(s, _who(app), request_id, now=datetime.now(UTC), comment=comment))
        click.echo(f"access request {request_id} {done}")


_decision("approve", ar.approve, "approved", "Approve: the level opens to the person inside the window.")
_decision("refuse", ar.refuse, "refused", "Refuse, saying why.", why_required=True)
_decision("cancel", ar.cancel, "cancelled", "Withdraw an open request, or end an approved one now.")


@request.command("list")
@click.option("--state", type=click.Choice(ar.STATES), help="Only requests in this state.")
@pass_app
@fail_cleanly
def request_list(app: App, state: str | None) -> None:
    """Requests, newest first."""
    stmt = select(AccessRequest, Person.name).join(Person, Person.id == AccessRequest.person_id) \
        .order_by(AccessRequest.id.desc())
    with Session(app.engine()) as session:
        for r, name in session.execute(stmt.where(AccessRequest.state == state) if state else stmt):
            why = " / ".join(x for x in (r.ticket, r.reason) if x)
            click.echo(f"{r.id:>5}  {r.state:<9} {name:<24} {r.level.key:<18} {r.starts_at:%Y-%m-%d %H:%M} -> "
                       f"{r.ends_at:%Y-%m-%d %H:%M} UTC  by {r.requested_by}"
                       f"{'  endorsed ' + r.tenant_approved_by if r.tenant_approved_by else ''}"
                       f"{'  decided ' + r.decided_by if r.decided_by else ''}  {why}")
