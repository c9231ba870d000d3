"""Throw-away migrated databases for the oracle: SQLite files copied from a migrated template, or PostgreSQL
databases cloned from one (``CREATE DATABASE ... TEMPLATE``), on the local server the tests use."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg

from badge_bridge.db import make_engine, migrate

PG_ADMIN = os.environ.get("BADGE_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
KINDS = ("sqlite", "postgresql")


def _pg_url(name: str) -> str:
    return f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def _pg(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql)


class Scratch:
    """Makes and drops migrated databases of one kind; ``close()`` drops what is left."""

    def __init__(self, kind: str, directory: Path) -> None:
        if kind not in KINDS:
            raise ValueError(f"database kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.kind, self.dir = kind, directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.made: list[str] = []
        self.template = self._create(f"fuzz_tmpl_{uuid.uuid4().hex[:10]}", template=None)
        engine = make_engine(self.template, must_exist=False)
        migrate(engine)
        engine.dispose()

    def _create(self, name: str, template: str | None) -> str:
        if self.kind == "sqlite":
            path = self.dir / f"{name}.db"
            if template is not None:
                shutil.copy(template.removeprefix("sqlite:///"), path)
            url = f"sqlite:///{path}"
        else:
            _pg(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""))
            url = _pg_url(name)
        self.made.append(url)
        return url

    def new(self) -> str:
        """A fresh migrated, empty database."""
        return self._create(f"fuzz_{uuid.uuid4().hex[:10]}", self.template)

    def drop(self, url: str) -> None:
        if self.kind == "sqlite":
            path = url.removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
        else:
            _pg(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        if url in self.made:
            self.made.remove(url)

    def close(self) -> None:
        for url in list(self.made):
            self.drop(url)
