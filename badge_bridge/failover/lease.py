"""A partition's lease in PostgreSQL: which of its bridges is active, and the fencing token that keeps a
bridge that lost it from ever writing again.

The active renews its row every ``failover.renew_s``; the row expires ``failover.lease_s`` after the last
renewal, on the database's clock. A standby polls and takes an expired row with the next token. Every audit
commit of the active reads its row ``FOR SHARE`` in the commit's own transaction and refuses to go on if
the token is no longer its own (``fence``): a takeover's UPDATE waits for that transaction, so an entry is
either committed before the takeover or refused after it, never in between. A bridge that was frozen
(SIGSTOP), cut off, or slow therefore commits nothing once another holds the partition.

Door commands leave before the commit (a door cannot wait for a disk), so they are gated on the clock
instead (``may_command``): only while the last renewal is recent enough that no standby can have taken
over yet. While the database itself is away nobody can take over; the active then keeps deciding for as
long as its own broker session is intact (``session_intact``), which a standby would have taken over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from badge_bridge.config import FailoverSection
from badge_bridge.db import describe, server_unavailable

log = logging.getLogger(__name__)

VALID_SHARE = 0.9
"""The share of ``lease_s`` after a renewal's start during which the active may command doors: a margin for
the database's and this machine's clocks running at slightly different rates."""


def unreachable(exc: DBAPIError) -> bool:
    """The database could not be reached (a connection lost or refused, a server restarting or read-only), as
    opposed to a statement it refused: only then may the active go on commanding without a renewal."""
    if exc.connection_invalidated or server_unavailable(exc):
        return True
    state = getattr(exc.orig, "sqlstate", None)
    return isinstance(exc, OperationalError) and (state is None or state.startswith("08"))


class Fenced(Exception):
    """This bridge no longer holds its partition's lease: it must not commit nor command anything."""


@dataclass(frozen=True)
class Takeover:
    """What ``acquire`` found: the token now held, and whom it was taken from."""

    token: int
    previous_holder: str | None
    previous_token: int | None
    previous_expired_at: datetime | None


def holder_name(instance: str) -> str:
    """This process's name in the lease: unique per process, so a restarted bridge is a new holder."""
    return f"{instance}@{socket.gethostname()}:{os.getpid()}"[:128]


class Lease:
    def __init__(self, engine: Engine, partition: str, holder: str, settings: FailoverSection) -> None:
        self.engine = engine
        self.partition = partition
        self.holder = holder
        self.settings = settings
        self.token: int | None = None
        self.db_away = False
        """The last renewal failed because the database could not be reached (not because we lost it)."""
        self.session_intact: Callable[[], bool] = lambda: False
        """Whether this bridge's broker session is still the one it had while it held the lease (set by the
        bridge): while the database is away, it stands in for the renewal."""
        self._valid_until = 0.0

    @staticmethod
    def supported(engine: Engine) -> bool:
        """Leases need PostgreSQL: SQLite is the single-machine default, without failover."""
        return engine.dialect.name == "postgresql"

    # --- standby ------------------------------------------------------------------------------------

    def try_acquire(self) -> Takeover | None:
        """Take the lease if nobody holds it or it expired; None if another bridge holds it."""
        started = time.monotonic()
        lease_s = self.settings.lease_s
        with self.engine.begin() as conn:
            self.bound(conn, waits=True)
            conn.execute(text(
                "INSERT INTO partition_lease (partition, holder, token, acquired_at, expires_at) "
                "VALUES (:p, '', 0, clock_timestamp(), '1970-01-01T00:00:00Z') ON CONFLICT (partition) DO NOTHING"),
                {"p": self.partition})
            row = conn.execute(text(
                "SELECT holder, token, expires_at, expires_at < clock_timestamp() AS expired FROM partition_lease "
                "WHERE partition = :p FOR UPDATE"), {"p": self.partition}).one()
            if not row.expired:
                return None
            token = row.token + 1
            conn.execute(text(
                "UPDATE partition_lease SET holder = :h, token = :t, acquired_at = clock_timestamp(), "
                "expires_at = clock_timestamp() + make_interval(secs => :s) WHERE partition = :p"),
                {"h": self.holder, "t": token, "s": lease_s, "p": self.partition})
        self.token, self.db_away = token, False
        self._valid_until = started + lease_s * VALID_SHARE
        return Takeover(token, row.holder or None, row.token or None,
                        row.expires_at if row.holder else None)

    def acquire(self, stopping: threading.Event) -> Takeover | None:
        """Wait as a standby until the lease is ours (or ``stopping`` is set: None).

        After the database was away (a failover of PostgreSQL), wait one ``lease_s`` before trying again: the
        lease expired on the row meanwhile because nobody could renew it, not because the active died, and
        the active must get to renew it on the promoted server before a standby takes it from a live bridge.
        A dead active costs one ``lease_s`` more then."""
        waiting_logged = away = False
        settled_at = 0.0
        """``time.monotonic()`` from which an expired lease may be taken (set when the database answers again)."""
        while not stopping.is_set():
            taken = None
            try:
                if away or time.monotonic() < settled_at:
                    self._ping()
                    if away:
                        away, settled_at = False, time.monotonic() + self.settings.lease_s
                        log.info("partition %s: the database answers again; the lease is left to its holder for "
                                 "%.1fs", self.partition, self.settings.lease_s)
                else:
                    taken = self.try_acquire()
            except DBAPIError as exc:
                if not away:
                    log.error("partition %s: cannot reach the database to watch the lease: %s", self.partition,
                              describe(exc))
                away = True
            if taken is not None:
                return taken
            if not waiting_logged:
                log.info("partition %s: standby (another bridge holds the lease)", self.partition)
                waiting_logged = True
            stopping.wait(self.settings.poll_s)
        return None

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # --- active -------------------------------------------------------------------------------------

    def renew(self) -> None:
        """Extend the lease; ``Fenced`` if another bridge took it. A database that cannot be reached sets
        ``db_away`` and leaves the lease as it was (nobody else can take it meanwhile)."""
        started = time.monotonic()
        try:
            with self.engine.begin() as conn:
                self.bound(conn, waits=True)
                renewed = conn.execute(text(
                    "UPDATE partition_lease SET expires_at = clock_timestamp() + make_interval(secs => :s) "
                    "WHERE partition = :p AND holder = :h AND token = :t"),
                    {"s": self.settings.lease_s, "p": self.partition, "h": self.holder, "t": self.token}).rowcount
        except DBAPIError as exc:
            if not unreachable(exc):
                raise  # a refusal (a lock held too long, a permission): not an outage, the lease runs out
            if not self.db_away:
                log.error("partition %s: cannot renew the lease, the database is away: %s", self.partition,
                          describe(exc))
            self.db_away = True
            return
        if renewed != 1:
            raise Fenced(f"partition {self.partition}: another bridge took the lease (ours was token {self.token})")
        self.db_away = False
        self._valid_until = started + self.settings.lease_s * VALID_SHARE

    def keep(self, stopping: threading.Event, on_fenced: Callable[[Fenced], None]) -> threading.Thread:
        """Renew every ``renew_s`` in a thread until ``stopping``; ``on_fenced`` when the lease is lost."""

        def run() -> None:
            while not stopping.wait(self.settings.renew_s):
                try:
                    self.renew()
                except Fenced as exc:
                    on_fenced(exc)
                    return
                except Exception:  # a bug must not end the renewals: the doors would go to the standby
                    log.exception("partition %s: renewing the lease failed", self.partition)

        thread = threading.Thread(target=run, name=f"lease-{self.partition}", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Hand the lease back at a clean stop (renewals ended, the last entry committed): a standby takes it
        at its next poll, as a start after a clean stop rather than a takeover. The token stays, so the next
        holder's is still higher."""
        self._valid_until = 0.0
        try:
            with self.engine.begin() as conn:
                self.bound(conn)
                conn.execute(text("UPDATE partition_lease SET holder = '', expires_at = clock_timestamp() "
                                  "WHERE partition = :p AND holder = :h AND token = :t"),
                             {"p": self.partition, "h": self.holder, "t": self.token})
        except DBAPIError as exc:
            log.error("partition %s: could not hand the lease back (a standby takes it once it expires): %s",
                      self.partition, describe(exc))

    def may_command(self) -> bool:
        """Whether a door command may leave now: the lease is surely still ours, or the database is away and
        our broker session was not taken over."""
        return time.monotonic() < self._valid_until or (self.db_away and self.session_intact())

    def bound(self, conn: Connection, *, waits: bool = False) -> None:
        """A bridge frozen (SIGSTOP) or cut off inside a transaction that locks the lease row would keep every
        standby from taking over for as long as it lasts: the server ends the transaction once it has waited
        ``lease_s`` for its client (rolled back: nothing of it is committed). ``waits``: also give up a lock
        wait after ``lease_s`` (a renewal or takeover behind a session someone left open on the row)."""
        ms = round(self.settings.lease_s * 1000)
        conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {ms}"))
        if waits:
            conn.execute(text(f"SET LOCAL lock_timeout = {ms}"))

    def fence(self, conn: Connection) -> None:
        """In the audit commit's transaction: ``Fenced`` unless the lease is still ours. The row stays share-
        locked until the commit, so a takeover waits for it (``bound``: not for ever)."""
        self.bound(conn)
        # KEY SHARE: a takeover's FOR UPDATE waits for this commit, our own renewal (an UPDATE of expires_at,
        # not of the key) does not, so a slow commit never holds the renewals back.
        row = conn.execute(text("SELECT holder, token FROM partition_lease WHERE partition = :p FOR KEY SHARE"),
                           {"p": self.partition}).first()
        if row is None or row.holder != self.holder or row.token != self.token:
            raise Fenced(f"partition {self.partition}: the lease is now {row.holder if row else 'nobody'}'s "
                         f"(token {row.token if row else '-'}, ours {self.token}): nothing more is committed")
