"""Shared fixtures: a migrated database on SQLite and on a throw-away PostgreSQL database, keys, a site.

PostgreSQL: the suite connects to BADGE_BRIDGE_TEST_PG (default: the local server, trust auth), creates
one migrated template database per run and clones it per test. Where no server answers, PostgreSQL tests
are skipped with the reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from badge_bridge.config import SiteConfig, load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SITE = ROOT / "site.example.toml"
PG_ADMIN = os.environ.get("BADGE_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test clones (CREATE DATABASE ... TEMPLATE is fast)."""
    try:
        admin = _pg_admin()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_ADMIN}: {str(exc).strip().splitlines()[0]}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
        pytest.skip(reason)
    name = f"bb_tmpl_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(_pg_url(name))
    migrate(engine)
    engine.dispose()
    yield name
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = f"bb_test_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _pg_url(name)
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tmpl") / "template.db"
    engine = make_engine(f"sqlite:///{path}", must_exist=False)
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "bridge.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A freshly migrated database; every test using it runs on both databases."""
    return request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "pg_url"}[request.param])


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's own folder under test-artifacts/ (screenshots, rendered pages) for a person to look at after
    the run, emptied when the test starts; no other test writes there, so tests can run in parallel."""
    path = ROOT / "test-artifacts" / request.node.path.stem / re.sub(r"[^\w.\[\]-]", "_", request.node.name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path / "keys")
    store.ensure()
    return store


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    """The example site, with camera evidence kept in this test's own folder."""
    config = load_config(EXAMPLE_SITE)
    return config.model_copy(update={"evidence": config.evidence.model_copy(update={"dir": str(tmp_path / "evidence")})})


def write_site(tmp_path: Path, db_url: str, *replacements: tuple[str, str], broker_port: int | None = None) -> Path:
    """The example site with this test's database and keys folder (and broker), and any text replaced."""
    text = EXAMPLE_SITE.read_text()
    text = text.replace('url = "sqlite:///var/badge-bridge.db"', f'url = "{db_url}"')
    text = text.replace('dir = "var/keys"', f'dir = "{tmp_path / "keys"}"')
    text = text.replace('url = "file:tests/data/', f'url = "file:{ROOT / "tests" / "data"}/')
    if broker_port is not None:
        text = text.replace("port = 1883", f"port = {broker_port}\nkeepalive_s = 5\nreconnect_max_s = 1")
        text += "\n[metrics]\nport = 0\n"
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


@pytest.fixture
def site_file(tmp_path: Path, db_url: str) -> Path:
    """The example site rewritten to use this test's database and keys folder."""
    return write_site(tmp_path, db_url)


# --- a real Mosquitto on a free port ----------------------------------------------------------------


def require_mosquitto() -> None:
    """Skip the test without a mosquitto binary; under CI=true, fail it."""
    if shutil.which("mosquitto") is None:
        if IN_CI:
            pytest.fail("mosquitto is not installed (CI=true: a missing service is a failure)")
        pytest.skip("mosquitto is not installed")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of the test's own, with persistence, so it can be restarted mid-test. A missing
    mosquitto binary skips (fails under CI=true)."""
    require_mosquitto()
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()
