"""A site with two customers for the visitor tests, and the audited changes they make (badge_bridge.visitors)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from badge_bridge import people, visitors
from badge_bridge.audit import access_tables as rows
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import commit_change
from badge_bridge.config import SiteConfig, load_config
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import KeyStore
from badge_bridge.models import Tenant
from badge_bridge.site_sync import sync_site

T = TypeVar("T")

TENANTS = ("[[plans]]", """[[tenants]]
key = "visit-co-a"
name = "Customer A"
areas = ["cage-7"]
levels = ["staff"]

[[tenants]]
key = "visit-co-b"
name = "Customer B"
areas = ["cage-7"]
levels = ["staff", "noc-24x7"]

[[plans]]""")
"""Two customers (write_site replacement); both may take visitors through the staff doors."""


def window(minutes: float = 60, start: float = -1) -> dict[str, datetime]:
    now = datetime.now(UTC)
    return {"starts_at": now + timedelta(minutes=start), "ends_at": now + timedelta(minutes=start + minutes)}


def tenant_id(engine: Engine, key: str) -> int:
    with Session(engine) as session:
        found = session.scalar(select(Tenant.id).where(Tenant.key == key))
    assert found is not None
    return found


class Desk:
    """Audited changes on a chain of their own, as the console and the CLI make them."""

    def __init__(self, engine: Engine, config: SiteConfig, keys: KeyStore, chain: str = "bridge-1.console") -> None:
        self.engine, self.config, self.keys = engine, config, keys
        self.writer = AuditWriter(engine, chain, keys.signer())
        self.writer.start()

    def change(self, actor: str, change: Callable[..., tuple[T, Event]], *args: Any, **kw: Any) -> T:
        result, _ = commit_change(self.writer, actor, lambda s: change(s, actor, *args, **kw))
        return result

    def register(self, actor: str = "console:host", **kw: Any) -> int:
        fields: dict[str, Any] = {"name": "Vera Visitor", "company": "Acme", "levels": ["staff"], **window(), **kw}
        return self.change(actor, visitors.register, site=self.config, **fields).id

    def check_in(self, visit: int, card: str, actor: str = "console:desk", **kw: Any) -> Any:
        fields = {"id_document": "passport, last 4: 1234", "now": datetime.now(UTC), **kw}
        return self.change(actor, visitors.check_in, visit, fmt="wiegand26", number=card,
                           pepper=self.keys.pin_pepper(), **fields)

    def staff(self, name: str, card: str, *, escort: bool, levels: tuple[str, ...] = ("staff",),
              tenant: int | None = None) -> int:
        """A person with a card, an escort or not, of a customer or the site's own."""
        def add(session: Session, actor: str) -> tuple[int, Event]:
            person, _ = people.add_person(session, actor, name, levels=levels)
            person.tenant_id, person.may_escort = tenant, escort
            cred, _ = people.add_credential(session, actor, person.id, "wiegand26", card, pepper=self.keys.pin_pepper())
            session.flush()
            return person.id, people.admin_event(EventKind.ADMIN_PERSON_ADDED, actor, {"person": person.id}, {},
                                                 rows.person(person), rows.credential(cred))
        return self.change("cli:test", add)

    def close(self) -> None:
        self.writer.stop()


def synced(engine: Engine, site_file: Path, keys: KeyStore) -> SiteConfig:
    """The site file applied, audited as `badge-bridge init` does it."""
    config = load_config(site_file)
    writer = AuditWriter(engine, "bridge-1.cli", keys.signer())
    writer.start()
    try:
        commit_change(writer, "cli:test", lambda session: (None, sync_site(session, config, "cli:test")))
    finally:
        writer.stop()
    return config
