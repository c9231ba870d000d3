"""Visitor commands: register a visit, check the visitor in at the desk, take the badge back, cancel, list,
print the badge, and say who may escort (badge_bridge.visitors)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import visitors
from badge_bridge.cards import FORMATS
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.cli.people import _when
from badge_bridge.models import Person, Tenant, Visit
from badge_bridge.people import AdminError
from badge_bridge.visitor_badge import badge_text, local, render


@click.group("visitor")
def visitor() -> None:
    """Visitors with escorts: visits, temporary badges, escorts."""


@visitor.command("register")
@click.argument("name")
@click.option("--company", default="")
@click.option("--from", "starts", help="Start (ISO date-time, UTC unless it says otherwise); default now.")
@click.option("--until", "ends", required=True, help="End (ISO date-time, UTC unless it says otherwise).")
@click.option("--level", "levels", multiple=True, required=True, help="Access level key (repeatable).")
@click.option("--tenant", help="The customer hosting the visit (tenant key).")
@click.option("--purpose", default="")
@pass_app
@fail_cleanly
def register(app: App, name: str, company: str, starts: str | None, ends: str, levels: tuple[str, ...],
             tenant: str | None, purpose: str) -> None:
    """Register a visitor expected between --from and --until; you are the host."""
    starts_at = _when(starts) or datetime.now(UTC)
    ends_at = _when(ends)
    assert ends_at is not None

    def change(session: Session):
        return visitors.register(session, app.actor, site=app.config, name=name, company=company,
                                 starts_at=starts_at, ends_at=ends_at, levels=list(levels),
                                 tenant_id=_tenant(session, tenant), purpose=purpose)

    visit, _ = app.admin(change)
    click.echo(f"visit {visit.id} registered: {name}, {starts_at.isoformat()} to {ends_at.isoformat()}")


@visitor.command("check-in")
@click.argument("visit_id", type=int)
@click.option("--id-document", required=True, help='What was checked, e.g. "passport, last 4: 1234".')
@click.option("--card", "number", required=True, help="The temporary badge: FACILITY:CARD, or the text for ascii.")
@click.option("--format", "fmt", default="wiegand26", show_default=True, type=click.Choice(FORMATS))
@pass_app
@fail_cleanly
def check_in(app: App, visit_id: int, id_document: str, number: str, fmt: str) -> None:
    """The visitor's ID was checked: issue the temporary badge, valid for the visit's window."""
    pepper = app.keys.pin_pepper()
    visit, _ = app.admin(lambda session: visitors.check_in(session, app.actor, visit_id, id_document=id_document,
                                                           fmt=fmt, number=number, pepper=pepper,
                                                           now=datetime.now(UTC)))
    click.echo(f"visit {visit_id}: badge {fmt} {number} issued until {visit.ends_at.isoformat()}")


@visitor.command("return")
@click.argument("visit_id", type=int)
@pass_app
@fail_cleanly
def return_badge(app: App, visit_id: int) -> None:
    """The badge is back at the desk: revoked, the visit ends."""
    app.admin(lambda session: visitors.return_badge(session, app.actor, visit_id, datetime.now(UTC)))
    click.echo(f"visit {visit_id}: badge returned and revoked")


@visitor.command("cancel")
@click.argument("visit_id", type=int)
@click.option("--reason", required=True)
@pass_app
@fail_cleanly
def cancel(app: App, visit_id: int, reason: str) -> None:
    """Cancel an expected visit."""
    app.admin(lambda session: visitors.cancel(session, app.actor, visit_id, reason))
    click.echo(f"visit {visit_id} cancelled")


@visitor.command("list")
@click.option("--days", default=1, show_default=True, help="Visits ending within this many days before now.")
@pass_app
@fail_cleanly
def list_visits(app: App, days: int) -> None:
    """Visits not yet ended, and those ended in the last --days (overdue marked)."""
    tz = ZoneInfo(app.config.site.timezone)
    since = datetime.now(UTC) - timedelta(days=days)
    with Session(app.engine()) as session:
        for visit, name in session.execute(select(Visit, Person.name).join(Person, Person.id == Visit.person_id)
                                           .where(Visit.ends_at >= since).order_by(Visit.starts_at)):
            overdue = "  OVERDUE" if visit.overdue_at is not None and visit.state == "on_site" else ""
            click.echo(f"{visit.id:>5}  {name:<30} {visit.state:<9} {local(visit.starts_at, tz)} to "
                       f"{local(visit.ends_at, tz)}  host={visit.host}{overdue}")


@visitor.command("badge")
@click.argument("visit_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The PDF to write.")
@pass_app
@fail_cleanly
def badge(app: App, visit_id: int, output: Path) -> None:
    """Write the visitor's printable badge (a card-sized PDF)."""
    with Session(app.engine()) as session:
        text = badge_text(session, visit_id, ZoneInfo(app.config.site.timezone))
    output.write_bytes(render(text))
    click.echo(f"badge of visit {visit_id} written to {output}")


@visitor.command("escort")
@click.argument("person_id", type=int)
@click.option("--off", is_flag=True, help="No longer an escort.")
@pass_app
@fail_cleanly
def escort(app: App, person_id: int, off: bool) -> None:
    """Allow a person to escort visitors (site staff: any visitor; a customer's person: their customer's)."""
    app.admin(lambda session: visitors.set_may_escort(session, app.actor, person_id, not off))
    click.echo(f"person {person_id} {'no longer escorts' if off else 'may escort visitors'}")


def _tenant(session: Session, key: str | None) -> int | None:
    if key is None:
        return None
    found = session.scalar(select(Tenant.id).where(Tenant.key == key))
    if found is None:
        raise AdminError(f"no customer {key!r} (the site file's [[tenants]])")
    return found
