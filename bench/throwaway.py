"""A throw-away PostgreSQL database for a benchmark: created on the local server, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN = os.environ.get("BADGE_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class NoPostgres(Exception):
    """No server answered; the message says why, for the benchmark's JSON."""


@contextmanager
def postgres_database() -> Iterator[str]:
    """Yields a SQLAlchemy URL of a new, empty database; raises NoPostgres when none can be made."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise NoPostgres(f"PostgreSQL not reachable: {str(exc).strip().splitlines()[0]}") from None
    name = f"bb_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
