"""Shared fixtures: a migrated database on SQLite and on a throw-away PostgreSQL database, keys, a site.

PostgreSQL: the suite connects to BADGE_BRIDGE_TEST_PG (default: the local server, trust auth), creates
one migrated template database per run (per xdist worker) and gives each test a clone of it. Where no server
answers, PostgreSQL tests are skipped with the reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from badge_bridge.config import SiteConfig, load_config
from badge_bridge.db import make_engine, migrate
from badge_bridge.keys import KeyStore
from badge_bridge.sim.broker import Broker, for_site
from tests.bridge_proc import BridgeProcess
from tests.witness_proc import WitnessProcess

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SITE = ROOT / "site.example.toml"
PG_ADMIN = os.environ.get("BADGE_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CAMERAS = pytest.mark.xdist_group("cameras")
"""For tests that run camera worker processes: they play video in real time, and one such test at a time (on
one xdist worker, `make test` runs --dist loadgroup) keeps them from starving each other on a small machine."""


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


class _Clones:
    """Clones of the template made ahead of need and dropped after use, off the tests' path: each DROP
    DATABASE waits for a checkpoint of the whole server (seconds when it is busy; half the time of the
    PostgreSQL tests went there). Clones given back meanwhile are dropped together, so they share checkpoints
    (drops waiting at the same time are served by the same one)."""

    SPARE, CREATORS, DROPS_AT_ONCE = 2, 2, 8

    def __init__(self, template: str) -> None:
        self.template = template
        self.ready: queue.Queue[str | Exception] = queue.Queue(maxsize=self.SPARE)
        self.used: queue.Queue[str | None] = queue.Queue()
        self.closing = threading.Event()
        self.creators = [threading.Thread(target=self._create, name="pg-clone-create", daemon=True)
                         for _ in range(self.CREATORS)]
        self.dropper = threading.Thread(target=self._drop, name="pg-clone-drop", daemon=True)
        for thread in [*self.creators, self.dropper]:
            thread.start()

    def _create(self) -> None:
        try:
            with _pg_admin() as admin:
                while not self.closing.is_set():
                    name = f"bb_test_{uuid.uuid4().hex[:10]}"
                    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                    self.ready.put(name)  # waits while SPARE clones wait
        except Exception as exc:  # handed to the test that asks next
            self.ready.put(exc)

    def _drop(self) -> None:
        with ThreadPoolExecutor(self.DROPS_AT_ONCE, thread_name_prefix="pg-clone-drop") as pool:
            while (name := self.used.get()) is not None:
                batch = [name]
                while None not in batch and not self.used.empty():
                    batch.append(self.used.get())
                list(pool.map(_drop_database, [n for n in batch if n is not None]))
                if None in batch:
                    return

    def take(self) -> str:
        item = self.ready.get(timeout=120)
        if isinstance(item, Exception):
            self.ready.put(item)  # for every test after this one too
            raise item
        return item

    def give_back(self, name: str) -> None:
        self.used.put(name)

    def close(self) -> None:
        """Drop the spare clones and wait for every drop."""
        self.closing.set()
        while any(t.is_alive() for t in self.creators) or not self.ready.empty():
            try:
                item = self.ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, str):
                self.used.put(item)
        self.used.put(None)
        self.dropper.join()


def _drop_database(name: str) -> None:
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_clones() -> Iterator[_Clones]:
    """A migrated PostgreSQL template database and its clones for the tests."""
    try:
        admin = _pg_admin()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_ADMIN}: {str(exc).strip().splitlines()[0]}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
        pytest.skip(reason)
    template = f"bb_tmpl_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{template}"')
    engine = make_engine(_pg_url(template))
    migrate(engine)
    engine.dispose()
    clones = _Clones(template)
    yield clones
    clones.close()
    admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def pg_url(pg_clones: _Clones) -> Iterator[str]:
    """A freshly migrated PostgreSQL database of the test's own, dropped after it."""
    name = pg_clones.take()
    yield _pg_url(name)
    pg_clones.give_back(name)


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
    shutil.copytree(ROOT / "plans", tmp_path / "plans", dirs_exist_ok=True)  # the [[plans]] drawings, beside it
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
def bridge_process(tmp_path: Path) -> Iterator[Callable[[Path], BridgeProcess]]:
    """`badge-bridge run` as a process on a site file, logging to the test's folder; killed at the end if the
    test left it running."""
    made: list[BridgeProcess] = []

    def make(site_file: Path) -> BridgeProcess:
        made.append(BridgeProcess(site_file, tmp_path / f"bridge-{len(made) + 1}.log"))
        return made[-1]

    yield make
    for process in made:
        process.close()


TEST_USERS = {"watcher": "watcher-test-password", "anyone": "anyone-test-password"}
"""Accounts only the tests add to a site's broker (``Broker.login``)."""
TEST_ACL = """
# test-only: sees everything, to prove what did not arrive
user watcher
topic read #

# test-only: may write anywhere, as a stolen account on a mis-configured broker would, so the tests of the
# bridge's own checks (poison, forgeries) still reach it behind the ACL
user anyone
topic readwrite #
"""


def example_site(tmp_path: Path) -> SiteConfig:
    """The example site with its keys in the test's folder (where ``keys`` and ``write_site`` put them)."""
    config = load_config(EXAMPLE_SITE)
    return config.model_copy(update={"keys": config.keys.model_copy(update={"dir": str(tmp_path / "keys")})})


def secured_broker(tmp_path: Path, config: SiteConfig | None = None) -> Broker:
    """A Mosquitto configured by `badge-bridge mqtt broker-config` for ``config`` (default: the example site
    with the test's keys folder), plus the test-only accounts; not yet started."""
    return for_site(tmp_path / "mosquitto", config or example_site(tmp_path), test_users=TEST_USERS,
                    test_acl=TEST_ACL)


def let_the_bridge_read(broker: Broker, *topic_filters: str) -> None:
    """Widen the bridge's ACL (restarting the broker), for a test of what the bridge itself does with a message
    the generated ACL keeps from it: a broker configured by hand might let it through."""
    with (broker.dir / "acl").open("a") as acl:
        acl.write("\nuser bridge-1\n" + "".join(f"topic read {f}\n" for f in topic_filters))
    broker.restart(down_s=0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of the test's own, run as `badge-bridge mqtt broker-config` configures it for the example
    site (no anonymous clients, each account its own topics; passwords in the test's keys folder) plus the
    test-only accounts, with persistence, so it can be restarted mid-test. A missing mosquitto binary skips
    (fails under CI=true)."""
    require_mosquitto()
    b = secured_broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def witness(tmp_path: Path, keys: KeyStore) -> Iterator[WitnessProcess]:
    """A real `badge-bridge witness serve` trusting the test keys (the witness's and the publisher's tests)."""
    w = WitnessProcess(tmp_path / "witness", *sorted(keys.signing_dir.glob("*.pub")))
    w.start()
    yield w
    w.close()


# The console-in-a-browser fixtures (console, camera_console, browser) for every browser test; imported last:
# tests.console_site reads this module's helpers.
from tests.console_site import browser, camera_console, console  # noqa: E402, F401
