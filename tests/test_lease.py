"""The partition lease: one active bridge per partition, and a bridge that lost the lease commits nothing.

Against a real PostgreSQL: two Lease objects stand for two machines; time passes for real (the lease is
made short), and waits are on conditions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from badge_bridge.audit.writer import AuditWriter
from badge_bridge.config import FailoverSection
from badge_bridge.db import make_engine, migrate
from badge_bridge.events import Event
from badge_bridge.failover.lease import Fenced, Lease
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry
from tests.waiting import wait_until

SHORT = FailoverSection(lease_s=0.6, renew_s=0.2, poll_s=0.05)


@pytest.fixture
def pg(pg_url: str) -> Engine:
    engine = make_engine(pg_url)
    migrate(engine)
    return engine


def _event(i: int) -> Event:
    now = datetime.now(UTC)
    return Event(id=f"ctl:{i}", kind="door.opened", source="ctl", ts=now, received_ts=now, door="lobby")


def test_one_holder_at_a_time_and_a_standby_takes_an_expired_lease(pg: Engine) -> None:
    a, b = Lease(pg, "p1", "a", SHORT), Lease(pg, "p1", "b", SHORT)
    first = a.try_acquire()
    assert first is not None and first.previous_holder is None
    assert b.try_acquire() is None  # a holds it
    assert a.may_command()
    a.renew()
    wait_until(lambda: b.try_acquire() is not None, timeout=5)  # a stopped renewing
    assert b.token == first.token + 1
    with pytest.raises(Fenced):
        a.renew()
    wait_until(lambda: not a.may_command(), timeout=5)
    assert b.may_command()


def test_a_lease_handed_back_is_taken_at_once_as_after_a_clean_stop(pg: Engine) -> None:
    long = FailoverSection(lease_s=30, renew_s=1, poll_s=0.05)
    a, b = Lease(pg, "p1", "a", long), Lease(pg, "p1", "b", long)
    assert a.try_acquire() is not None and b.try_acquire() is None
    a.release()
    assert not a.may_command()
    taken = b.try_acquire()
    assert taken is not None and taken.previous_holder is None and b.token == (a.token or 0) + 1
    with pg.connect() as conn, pytest.raises(Fenced):
        a.fence(conn)


def test_a_lease_of_another_partition_is_not_in_the_way(pg: Engine) -> None:
    assert Lease(pg, "p1", "a", SHORT).try_acquire() is not None
    assert Lease(pg, "p2", "b", SHORT).try_acquire() is not None


def test_the_old_active_commits_nothing_after_a_takeover(pg: Engine, keys: KeyStore) -> None:
    old, new = Lease(pg, "p1", "old", SHORT), Lease(pg, "p1", "new", SHORT)
    assert old.try_acquire() is not None
    fenced = threading.Event()
    writer = AuditWriter(pg, "p1", keys.signer(), fence=old.fence, on_fenced=lambda exc: fenced.set())
    writer.start()
    writer.submit(_event(1))
    assert writer.flush(10)
    wait_until(lambda: new.try_acquire() is not None, timeout=5)  # old froze: no renewals
    writer.submit(_event(2))
    wait_until(fenced.is_set, timeout=10)
    with pg.connect() as conn:
        ids = set(conn.scalars(select(AuditEntry.event_id).where(AuditEntry.chain_id == "p1")))
    assert "ctl:1" in ids and "ctl:2" not in ids
    assert isinstance(writer.fenced, Fenced)


def test_a_takeover_waits_for_the_commit_that_checked_the_token(pg: Engine) -> None:
    """The fence holds the lease row share-locked until the commit: the standby's takeover cannot slip in
    between the check and the commit."""
    old, new = Lease(pg, "p1", "old", SHORT), Lease(pg, "p1", "new", SHORT)
    assert old.try_acquire() is not None
    old.settings = FailoverSection(lease_s=10, renew_s=0.2, poll_s=0.05)  # its commit outlasts the waits below
    with pg.connect() as conn:
        conn.execute(text("SELECT pg_sleep(0.7)"))  # the old lease expires
        conn.commit()
        trans = conn.begin()
        old.fence(conn)
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(new.try_acquire()))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the takeover must wait for the fenced transaction"
        trans.commit()
    thread.join(5)
    assert result and result[0] is not None
    with pg.connect() as conn, pytest.raises(Fenced):
        old.fence(conn)


def test_a_bridge_frozen_inside_its_commit_holds_off_the_takeover_only_lease_s(pg: Engine) -> None:
    """SIGSTOP between the fence and the commit: the lease row stays share-locked while the process sleeps.
    The server ends that transaction after lease_s idle, the standby takes over and the commit fails."""
    old, new = Lease(pg, "p1", "old", SHORT), Lease(pg, "p1", "new", SHORT)
    assert old.try_acquire() is not None
    with pg.connect() as conn:
        trans = conn.begin()
        old.fence(conn)  # ... and the process is frozen here
        wait_until(lambda: new.try_acquire() is not None, timeout=10)
        with pytest.raises(DBAPIError):
            trans.commit()
    with pg.connect() as conn, pytest.raises(Fenced):
        old.fence(conn)


def test_commands_wait_out_a_database_outage_only_while_the_session_is_ours(pg: Engine) -> None:
    lease = Lease(pg, "p1", "a", SHORT)
    assert lease.try_acquire() is not None
    lease.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # the database is away
    lease.renew()
    assert lease.db_away
    wait_until(lambda: not lease.may_command(), timeout=5)
    lease.session_intact = lambda: True
    assert lease.may_command()


def test_sqlite_has_no_lease(sqlite_url: str) -> None:
    assert not Lease.supported(make_engine(sqlite_url))
    assert Lease.supported(make_engine("postgresql+psycopg://x@127.0.0.1/x", must_exist=False))


def test_takeover_counts(pg: Engine) -> None:
    leases = [Lease(pg, "p1", f"b{i}", SHORT) for i in range(3)]
    tokens = []
    for lease in leases:
        wait_until(lambda lease=lease: lease.try_acquire() is not None, timeout=5)
        tokens.append(lease.token)
    assert tokens == sorted(set(tokens)) and len(tokens) == 3
    with pg.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(text("partition_lease"))) == 1


def test_a_slow_commit_never_holds_the_renewals_back(pg: Engine) -> None:
    """The fence locks the lease row for the takeover only (KEY SHARE): the active's own renewal goes on while
    a commit is slow (a big batch, a synchronous standby that lags), so a healthy active keeps its doors."""
    lease = Lease(pg, "p1", "a", SHORT)
    assert lease.try_acquire() is not None
    with pg.connect() as conn:
        trans = conn.begin()
        lease.fence(conn)
        renewed = threading.Thread(target=lease.renew)
        renewed.start()
        renewed.join(5)
        assert not renewed.is_alive(), "the renewal waited for the commit"
        trans.commit()


def test_only_an_unreachable_database_lets_the_active_go_on_without_renewing(pg: Engine) -> None:
    """A refusal is not an outage: a renewal stuck behind a lock someone holds on the row times out and the
    lease runs out (the doors stop), rather than counting as 'the database is away' for ever."""
    lease = Lease(pg, "p1", "a", SHORT)
    assert lease.try_acquire() is not None
    with pg.connect() as conn:
        trans = conn.begin()
        conn.execute(text("SELECT * FROM partition_lease WHERE partition = 'p1' FOR UPDATE"))  # an open psql
        with pytest.raises(DBAPIError):
            lease.renew()
        trans.rollback()
    assert not lease.db_away
