"""`badge-bridge tenant ...`: customer cages from the operator's side: the tenants of the site file, their
admins, their people (``--tenant KEY`` scopes a command as the tenant's own admin would be scoped) and site
staff's approval of the people a customer adds (badge_bridge.tenants)."""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from badge_bridge import tenants
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.models import ConsoleUser, Person, Tenant

TENANT = click.option("--tenant", "key", required=True, help="The tenant's key ([[tenants]] in the site file).")


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@click.group("tenant")
def tenant() -> None:
    """Customer cages: tenants, their admins and people, approval of their new people."""


@tenant.command("list")
@pass_app
@fail_cleanly
def tenant_list(app: App) -> None:
    """The site file's tenants with their limits and head counts."""
    with Session(app.engine()) as s:
        ids = dict(s.execute(select(Tenant.key, Tenant.id)).all())
        counts = dict(s.execute(select(Person.tenant_id, func.count()).where(Person.status != "left")
                                .group_by(Person.tenant_id)).all())
        waiting = dict(s.execute(select(Person.tenant_id, func.count()).where(Person.status == "pending")
                                 .group_by(Person.tenant_id)).all())
    for t in app.config.tenants:
        tid = ids.get(t.key)
        state = "" if tid is not None else " (not in the database: run `badge-bridge init`)"
        click.echo(f"{t.key}\t{t.name}\tareas {', '.join(t.areas)}\tlevels {', '.join(t.levels)}\t"
                   f"max {t.max_validity_days} days\t{counts.get(tid, 0)} people, {waiting.get(tid, 0)} pending{state}")


@tenant.command("admin-add")
@TENANT
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_app
@fail_cleanly
def admin_add(app: App, key: str, username: str, password_stdin: bool) -> None:
    """Add a console user of role tenant_admin for the tenant. Without --password-stdin a strong password
    is generated and printed once."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(15)
    app.admin(lambda s: tenants.add_admin(s, app.actor, tenants.scope(s, app.config, key), username, password))
    click.echo(f"tenant admin {username} of {key} added")
    if not password_stdin:
        click.echo(f"password: {password}")


@tenant.command("admins")
@TENANT
@pass_app
@fail_cleanly
def admins(app: App, key: str) -> None:
    """The tenant's admins."""
    with Session(app.engine()) as s:
        sc = tenants.scope(s, app.config, key)
        for name, active in s.execute(select(ConsoleUser.username, ConsoleUser.active)
                                      .where(ConsoleUser.tenant_id == sc.tenant_id).order_by(ConsoleUser.username)):
            click.echo(f"{name}\t{'active' if active else 'disabled'}")


@tenant.command("people")
@TENANT
@pass_app
@fail_cleanly
def people_list(app: App, key: str) -> None:
    """The tenant's people: id, name, status, levels, cards."""
    with Session(app.engine()) as s:
        sc = tenants.scope(s, app.config, key)
        for p in s.scalars(select(Person).where(Person.tenant_id == sc.tenant_id).order_by(Person.name, Person.id)
                           .options(selectinload(Person.levels), selectinload(Person.credentials))):
            cards = ", ".join(f"{c.number} ({c.status}, until {c.valid_until:%Y-%m-%d})" if c.valid_until
                              else f"{c.number} ({c.status})" for c in p.credentials)
            click.echo(f"{p.id}\t{p.name}\t{p.status}\t{', '.join(sorted(lvl.key for lvl in p.levels))}\t{cards}")


@tenant.command("person-add")
@TENANT
@click.argument("name")
@click.option("--level", "levels", multiple=True, help="One of the tenant's levels; repeatable.")
@pass_app
@fail_cleanly
def person_add(app: App, key: str, name: str, levels: tuple[str, ...]) -> None:
    """Add a person of the tenant, as their admin would: pending until site staff approve them."""
    person, _ = app.admin(lambda s: tenants.add_person(s, app.actor, tenants.scope(s, app.config, key), name,
                                                       levels=levels))
    click.echo(f"person {person.id} {person.name} added to {key}, awaiting approval "
               f"(badge-bridge tenant approve {person.id})")


@tenant.command("card-add")
@TENANT
@click.argument("person_id", type=int)
@click.option("--card", required=True, help="The card number, as printed (facility:number for Wiegand 26).")
@click.option("--format", "fmt", default="wiegand26", show_default=True)
@click.option("--valid-until", required=True, type=click.DateTime(), help="UTC; within the tenant's maximum.")
@pass_app
@fail_cleanly
def card_add(app: App, key: str, person_id: int, card: str, fmt: str, valid_until: datetime) -> None:
    """Issue a card to the tenant's person, valid at most the tenant's max_validity_days."""
    cred, _ = app.admin(lambda s: tenants.add_credential(
        s, app.actor, tenants.scope(s, app.config, key), person_id, fmt, card, pepper=app.keys.pin_pepper(),
        valid_until=_utc(valid_until), now=datetime.now(UTC)))
    click.echo(f"credential {cred.id} ({fmt} {cred.number}) issued to person {person_id}")


@tenant.command("levels")
@TENANT
@click.argument("person_id", type=int)
@click.option("--level", "levels", multiple=True, help="The tenant's levels the person holds; none: all removed.")
@pass_app
@fail_cleanly
def set_levels(app: App, key: str, person_id: int, levels: tuple[str, ...]) -> None:
    """Set which of the tenant's levels the person holds (levels given by site staff stay)."""
    app.admin(lambda s: tenants.set_levels(s, app.actor, tenants.scope(s, app.config, key), person_id,
                                           levels))
    click.echo(f"person {person_id}: levels of {key} now {', '.join(levels) or 'none'}")


@tenant.command("pending")
@click.option("--tenant", "key", help="Only this tenant's people.")
@pass_app
@fail_cleanly
def pending_list(app: App, key: str | None) -> None:
    """People awaiting site approval."""
    with Session(app.engine()) as s:
        tenant_id = tenants.scope(s, app.config, key).tenant_id if key else None
        names = dict(s.execute(select(Tenant.id, Tenant.key)).all())
        for p in tenants.pending(s, tenant_id):
            click.echo(f"{p.id}\t{p.name}\t{names.get(p.tenant_id or 0, '')}\tadded {p.created_at:%Y-%m-%d %H:%M}")


@tenant.command("approve")
@click.argument("person_id", type=int)
@pass_app
@fail_cleanly
def approve(app: App, person_id: int) -> None:
    """Approve a customer's pending person (site staff): their cards work from now on."""
    person, _ = app.admin(lambda s: tenants.approve(s, app.actor, person_id))
    click.echo(f"person {person_id} {person.name} approved")


@tenant.command("refuse")
@click.argument("person_id", type=int)
@click.option("--reason", required=True)
@pass_app
@fail_cleanly
def refuse(app: App, person_id: int, reason: str) -> None:
    """Refuse a customer's pending person (site staff): any card issued to them is revoked."""
    _, event = app.admin(lambda s: tenants.refuse(s, app.actor, person_id, reason))
    click.echo(f"person {person_id} refused; {len(event.detail['credentials_revoked'])} credential(s) revoked")
