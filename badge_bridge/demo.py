"""`make demo`: build the demo site's database from the example site file and run the bridge on it.

Idempotent: a second run keeps the people and credentials it made the first time, and gives the console
admin a fresh password (only a hash is stored, so the old one cannot be printed again).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import db, people
from badge_bridge.audit import AuditWriter
from badge_bridge.bridge import Bridge
from badge_bridge.config import load_config
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import ConsoleUser, Person
from badge_bridge.site_sync import sync_site

ACTOR = "demo"
DEMO_PEOPLE = [
    # name, levels, card (wiegand26 FC:CARD), PIN
    ("Ada Lovelace", ["staff", "hall-a-engineers"], "12:1001", "4711"),
    ("Grace Hopper", ["staff", "hall-a-engineers", "noc-24x7"], "12:1002", "2025"),
    ("Alan Turing", ["staff", "noc-24x7"], "12:1003", None),
    ("Katherine Johnson", ["staff"], "12:1004", None),
    ("Contractor Bob", ["staff"], "12:1005", None),
]


def seed(session: Session, pepper: bytes) -> list[Event]:
    """Demo people with cards, PINs and levels; one credential that expired yesterday."""
    if session.scalar(select(Person.id).limit(1)) is not None:
        return []
    audited = []
    for name, levels, card, pin in DEMO_PEOPLE:
        person, event = people.add_person(session, ACTOR, name, levels=levels)
        audited.append(event)
        until = datetime.now(UTC) - timedelta(days=1) if name == "Contractor Bob" else None
        _, event = people.add_credential(session, ACTOR, person.id, "wiegand26", card, pepper=pepper, pin=pin,
                                         valid_until=until)
        audited.append(event)
    return audited


def reset_admin(session: Session) -> tuple[str, list[Event]]:
    password = secrets.token_urlsafe(12)
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == "admin"))
    if user is None:
        _, event = people.add_user(session, ACTOR, "admin", "admin", password)
        return password, [event]
    user.password_hash = people.hasher.hash(password)
    now = datetime.now(UTC)
    return password, [Event(id=Event.new_id("admin.password_reset"), kind="admin.password_reset", source=ACTOR,
                            ts=now, received_ts=now, subject={"user": "admin"}, detail={"by": "make demo"})]


@click.command()
@click.option("-c", "--config", "config_path", default="site.example.toml", show_default=True)
def main(config_path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = load_config(config_path)
    keys = KeyStore(config.keys_dir())
    keys.ensure()
    db_path = db.sqlite_path(config.database_url())
    if db_path is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(config.database_url(), must_exist=False)
    db.migrate(engine)
    with Session(engine) as session, session.begin():
        sync_site(session, config)
        audited = seed(session, keys.pin_pepper())
        password, more = reset_admin(session)
        audited += more
    writer = AuditWriter(engine, f"{config.site.instance}.demo", keys.signer())
    writer.start()
    for event in audited:
        writer.submit(event)
    writer.stop()

    click.echo(f"\nbadge-bridge demo: site {config.site.name!r}, database {engine.url.render_as_string()}")
    click.echo(f"console admin: admin / {password}")
    click.echo("demo people (wiegand26 cards):")
    for name, levels, card, pin in DEMO_PEOPLE:
        click.echo(f"  {name:<18} card {card}  PIN {pin or '-':<5} levels {', '.join(levels)}")
    click.echo("running the bridge; Ctrl-C to stop\n")
    Bridge(config, engine, keys).run_forever()


if __name__ == "__main__":
    main()
