"""What every `badge-bridge` command needs: the site, its database and keys, built on first use, and the
rule that a user mistake is one clear line and a non-zero exit, never a traceback. The command groups of
this package and the plugins' commands (camera/cli.py, web/cli.py, firmware_config/cli.py) import these."""

from __future__ import annotations

import functools
import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from badge_bridge import db, grants, people
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.audited import AuditUnavailable, Change, E, commit_change
from badge_bridge.config import ConfigError, SiteConfig, load_config
from badge_bridge.events import Event, InvalidEvent
from badge_bridge.keys import KeyMaterialError, KeyStore

USER_ERRORS = (ConfigError, db.DatabaseError, KeyMaterialError, people.AdminError, InvalidEvent, grants.GrantError,
               AuditUnavailable)
T = TypeVar("T")


class App:
    """What every command needs, built on first use so `--help` works without a site file."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path

    @functools.cached_property
    def config(self) -> SiteConfig:
        return load_config(self.config_path)

    @functools.cached_property
    def url(self) -> str:
        return self.config.database_url()

    def engine(self, must_exist: bool = True):
        engine = db.make_engine(self.url, must_exist=must_exist)
        if must_exist and not db.schema_is_current(engine):
            raise db.DatabaseError("the database schema is not current; run `badge-bridge init` to migrate it")
        return engine

    def owner_engine(self, must_exist: bool = True):
        """The owner role's engine (``database.owner_url``), for migrations, grants and pruning."""
        return db.make_engine(self.config.database_owner_url(), must_exist=must_exist)

    @functools.cached_property
    def keys(self) -> KeyStore:
        return KeyStore(self.config.keys_dir())

    @property
    def actor(self) -> str:
        return f"cli:{getpass.getuser()}"

    @contextmanager
    def change(self) -> Iterator[tuple[Session, list[Event]]]:
        """A transaction for a change outside the access tables (keys, pruning); the events it collects are
        audited after commit. People, credentials, faces and users change through ``admin``."""
        engine = self.engine()
        audited: list[Event] = []
        with Session(engine) as session, session.begin():
            yield session, audited
        with self._writer(engine) as writer:
            for event in audited:
                writer.submit(event)

    def admin(self, change: Change[T, E], engine: Engine | None = None) -> tuple[T, E]:
        """An administrative change committed with its audit entry in one transaction (badge_bridge.audited);
        ``init`` makes its changes as the owner, before the bridge's role has its grants."""
        with self._writer(engine or self.engine()) as writer:
            return commit_change(writer, self.actor, change)

    @contextmanager
    def _writer(self, engine: Engine) -> Iterator[AuditWriter]:
        """The CLI's chain ``<instance>.cli``, flushed and checkpointed at the end."""
        writer = AuditWriter(engine, f"{self.config.site.instance}.cli", self.keys.signer())
        writer.start()
        try:
            yield writer
        finally:
            if not writer.stop(timeout=30):
                raise db.DatabaseError(f"the audit event could not be written: {writer.stats.last_error}")


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None
        except SQLAlchemyError as exc:
            raise click.ClickException(db.describe(exc)) from None

    return wrapper


pass_app = click.make_pass_decorator(App)
