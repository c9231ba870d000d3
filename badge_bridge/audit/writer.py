"""The audit writer: the only code that appends to the audit log.

One thread, one hash chain per bridge instance. Events arrive on a bounded queue; the writer takes up to
``batch_max`` at a time, appends them in one transaction with the chain computed, commits, and only then
calls each event's acknowledgement, so a source (an MQTT message, a spool entry) is released only once its
event is on disk. A replayed event id makes no second row: it is acknowledged as a duplicate. How an entry
is hashed is in ``badge_bridge.audit.chain``.

Every batch commits with a checkpoint signed over its last entry, in the same transaction: no entry is ever
unsigned, even when the process is killed. The writer extends only rows a valid signature covers; on a
foreign row it raises an alarm and moves to a new chain (``badge_bridge.audit.ownership``), so ``chain_id``
is the chain it writes now and ``base`` the one it was created with.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import Histogram
from sqlalchemy import Engine, event, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from badge_bridge.audit import ownership
from badge_bridge.audit.chain import GENESIS, checkpoint_message, entry_body, entry_hash
from badge_bridge.backoff import Backoff
from badge_bridge.db import describe, server_unavailable
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event, storable
from badge_bridge.keys import Signer, public_hex
from badge_bridge.models import DeadLetter, SigningKey

log = logging.getLogger(__name__)

Ack = Callable[[Event, bool], None]
"""Called after commit with (event, duplicate)."""
Effect = Callable[[Connection], "Event | None"]
"""A change to operational tables (an alarm row, a dead letter, a controller's state) made in the same
transaction as its event, so the two are committed together or not at all; skipped for a duplicate. An
effect that returns an event has it recorded in place of the submitted one: an administrative change, whose
entry carries the rows' state as the change left them (badge_bridge.audited)."""
Item = tuple[Event, Ack | None, Effect | None]


class NoEntry(Exception):
    """Raised by an effect whose change needs no entry after all (an administrative change refused before it
    wrote anything, a site sync that changed no recorded row): nothing is appended for it, what it wrote
    commits with the batch, and its acknowledgement says duplicate."""


COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: a batch commits in under a millisecond on a quiet SQLite, in seconds when the disk or the server
struggles (the retries while the database is away are not commits)."""

HEAD_POLL_S = 0.5
"""How often the writer compares the database's head of its chain with its own (one indexed read), so a
foreign row is alarmed within a second even when nothing is written."""
RESYNC_MAX = 3
"""Conflicts on one batch answered by re-reading the chain, before the batch is searched for a refused row."""

ENTRY_COLUMNS = ("chain_id", "seq", "event_id", "ts_us", "received_us", "source", "door", "kind", "subject",
                 "detail", "prev_hash", "hash", "person_id")


def _insert_sql(conn: Connection) -> str:
    """A plain driver-level INSERT: the ORM's per-row parameter handling costs as much as the hashing, and
    the writer is on the bridge's critical path."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO audit_entry ({', '.join(ENTRY_COLUMNS)}) VALUES ({', '.join([mark] * len(ENTRY_COLUMNS))})"


def register_key(conn: Connection, signer: Signer) -> None:
    if conn.execute(select(SigningKey.key_id).where(SigningKey.key_id == signer.key_id)).first() is None:
        conn.execute(insert(SigningKey).values(key_id=signer.key_id, public_key=public_hex(signer.public)))


def write_checkpoint(conn: Connection, signer: Signer, chain_id: str, seq: int, head: str) -> None:
    """The batch's signature over its last entry, in its transaction (a driver-level INSERT too: it runs once
    per commit, and at one event per commit as often as the entry insert)."""
    signed_us = to_us_now()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO checkpoint (chain_id, seq, hash, signed_us, key_id, signature) VALUES ({', '.join([mark] * 6)})",
        (chain_id, seq, head, signed_us, signer.key_id, signer.sign(checkpoint_message(chain_id, seq, head, signed_us))))


def to_us_now() -> int:
    return time.time_ns() // 1000


@dataclass
class WriterStats:
    committed: int = 0
    duplicates: int = 0
    batches: int = 0
    retries: int = 0
    checkpoints: int = 0
    quarantined: int = 0
    last_commit_s: float = 0.0
    last_progress: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` of the last commit (or of the start): with events waiting, its age is a stall."""
    last_error: str | None = None
    healthy: bool = True
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(
        "badge_bridge_audit_commit_seconds", "Time to commit one batch of audit entries", buckets=COMMIT_BUCKETS,
        registry=None))
    """Every batch's commit time since the start, for the metrics endpoint (where ``rate()`` of its count and
    sum is right, unlike a window of recent batches)."""


class QueueFull(Exception):
    """The writer is behind (database away too long); the caller must not acknowledge its source."""


class AuditWriter:
    """Appends events to one chain. Use ``start()``, ``submit()``, and ``stop()`` (which flushes)."""

    def __init__(
        self,
        engine: Engine,
        chain_id: str,
        signer: Signer,
        *,
        batch_max: int = 1000,
        queue_max: int = 100_000,
        retry_max_s: float = 5.0,
        on_commit: Callable[[list[Event]], None] | None = None,
        fence: Callable[[Connection], None] | None = None,
        on_fenced: Callable[[Exception], None] | None = None,
    ) -> None:
        """``on_commit`` gets the new (not duplicate) events of each committed batch, in log order. Rows signed
        by the signer's key or one its key store trusts (``Signer.trusted``) are adopted as ours. ``fence``
        runs first in every commit's transaction and raises (``failover.lease.Fenced``) when this writer may
        no longer write: the writer then stops for good, commits nothing more, and calls ``on_fenced``."""
        self.engine = engine
        self.base = ownership.base_of(chain_id)
        self.chain_id = chain_id
        """The chain written now: ``base`` or, after a foreign row, ``<base>~k``."""
        self.signer = signer
        self.trusted = {**signer.trusted, signer.key_id: signer.public}
        self.batch_max = batch_max
        self.retry_max_s = retry_max_s
        self.on_commit = on_commit
        self.fence = fence
        self.on_fenced = on_fenced
        self.fenced: Exception | None = None
        self.stats = WriterStats()
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=queue_max)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._seq, self._head = 0, GENESIS
        self._stale_head = False
        event.listen(engine, "connect", self._connected)
        self._front: list[Item] = []
        """Entries that must precede anything else in the chain: a continuation and its alarm."""
        self._polled = time.monotonic()

    # --- producer side -------------------------------------------------------------------------

    def submit(self, event: Event, ack: Ack | None = None, timeout: float | None = 5.0, effect: Effect | None = None) -> None:
        """Queue an event; ``ack`` runs on the writer thread after commit. Raises QueueFull when full."""
        with self._idle:
            self._pending += 1
        try:
            self._queue.put((event, ack, effect), timeout=timeout)
        except queue.Full:
            self._done(1)
            raise QueueFull(f"audit queue full ({self._queue.maxsize} events waiting): {self.stats.last_error}") from None

    def depth(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is committed."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread. It reads the chain head itself, so a database that is away or locked at
        start-up delays the first commit instead of failing the bridge."""
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{self.chain_id}", daemon=True)
        self._thread.start()

    def _load_head(self) -> None:
        """Take up the base's newest chain from its newest signed entry; what follows it is checked before the
        first write (``_resync``)."""
        with self.engine.begin() as conn:
            register_key(conn, self.signer)
            self.chain_id = ownership.latest_chain(conn, self.base)
            self._seq, self._head = ownership.covered_head(conn, self.chain_id, self.trusted)
        self._stale_head = True

    def _resync(self) -> None:
        """Adopt what another process of ours appended after our head; on a foreign row move to a new chain,
        whose continuation entry and alarm are written before anything else."""
        with self.engine.connect() as conn:
            found = ownership.reconcile(conn, self.chain_id, (self._seq, self._head), self.trusted)
            if found.clean:
                self._seq, self._head = found.head
                return
            left, new = self.chain_id, ownership.next_free_chain(conn, self.base, self.chain_id)
        log.critical("audit chain %s: rows %s are not ours (no valid signature covers them, or they do not link)%s;"
                     " continuing in chain %s", left, found.foreign[:ownership.FOREIGN_LISTED],
                     " and our last entry is gone" if found.own_missing else "", new)
        items: list[Item] = [(event, None, effect) for event, effect in ownership.continuation(self.base, left, new, found)]
        with self._idle:
            self._pending += len(items)
        self._front = items + self._front
        self.chain_id, self._seq, self._head = new, 0, GENESIS

    def _connected(self, _dbapi_conn: object, _record: object) -> None:
        """A new connection may reach another server than the last one (a failover, on a multi-host URL, or
        even within one pre-ping): re-read our chain there before extending it. After an asynchronous
        failover our last entries are gone, and writing on would leave a gap that reads as a deletion; the
        re-read moves to a new chain with an alarm that names what is missing (``_resync``)."""
        self._stale_head = True

    def _check_head(self) -> None:
        """The cheap poll: is the database's head of our chain still our own?"""
        self._polled = time.monotonic()
        with self.engine.connect() as conn:
            if ownership.db_head(conn, self.chain_id) != (self._seq, self._head):
                self._stale_head = True

    def stop(self, timeout: float = 30.0) -> bool:
        """Flush and stop (every batch is already signed). Returns False if events were left uncommitted."""
        flushed = self.flush(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return flushed

    # --- writer thread ---------------------------------------------------------------------------

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            if self._pending <= 0:
                self._idle.notify_all()

    def _take_batch(self) -> list[Item]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        try:
            self._retrying(self._load_head, "reading the chain head")
            self._write_until_done([])
            while not self._stop.is_set():
                batch = self._take_batch()
                if time.monotonic() - self._polled >= HEAD_POLL_S:
                    self._retrying(self._check_head, "checking the chain head")
                if batch or self._stale_head:
                    self._write_until_done(batch)
        except _Fenced as exc:
            self.fenced = exc.cause
            log.critical("audit writer stopped: %s", exc.cause)
            if self.on_fenced is not None:
                self.on_fenced(exc.cause)

    def _write_until_done(self, batch: list[Item]) -> None:
        """Retry until the batch is committed: an accepted event is never dropped. While the database is
        away everything waits; a row the database refuses is found and quarantined, and the rest commits."""
        left = list(batch)
        self._retrying(lambda: self._write_isolating(left), f"writing {len(batch)} events")

    def _write_isolating(self, left: list[Item]) -> None:
        """Commit ``left`` front to back, emptying it as it goes (so a retry after the database went away
        never writes a part twice). A refused chunk is halved until the first refused event stands alone;
        that one is quarantined. A conflict (another writer on our chain, a duplicate racing in, a foreign
        row) re-reads the chain first."""
        while True:
            if self._stale_head:
                self._stale_head = False  # before the read: a connection made during it marks it again
                self._resync()
            left[:0], self._front = self._front, []
            if not left:
                return
            n, resyncs = len(left), 0
            while True:
                try:
                    self._write(left[:n])
                    break
                except (_Fenced, _StaleHead):
                    raise
                except Exception as exc:
                    if isinstance(exc, IntegrityError) and resyncs < RESYNC_MAX:
                        self.stats.retries += 1
                        resyncs += 1
                        log.warning("audit conflict, re-reading the chain: %s", describe(exc))
                        self._resync()
                        if self._front:  # moved to a new chain: its first entries go first
                            n = 0
                            break
                        continue
                    if _database_away(exc):
                        raise
                    if n > 1:
                        n //= 2
                        continue
                    self._quarantine(left[0], exc)
                    break
            del left[:n]

    def _quarantine(self, item: Item, exc: Exception) -> None:
        """Replace an event the database refused by an ``audit.quarantined`` entry and a dead letter that
        carry its fields as escaped text; the source is acknowledged, so the value is never retried."""
        event, ack, _effect = item
        error = storable(f"{type(exc).__name__}: {describe(exc)}")[:500]
        body = "\n".join(storable(t) for t in (event.subject_json, event.detail_json))
        log.error("audit log refused event %s (%s): quarantined", event.id, error)
        quarantined = Event(id=event.id, kind=EventKind.AUDIT_QUARANTINED, source=event.source, ts=event.ts,
                            door=event.door, detail={"kind": event.kind, "error": error, "fields": body[:2000]},
                            received_ts=event.received_ts)

        def effect(conn: Connection) -> None:
            conn.execute(insert(DeadLetter).values(
                received_at=event.received_ts, source=event.source, reason=f"quarantined: {error}",
                payload=body.encode()[:4096], payload_size=len(body), payload_sha256=None))

        self._write([(quarantined, ack, effect)])
        self.stats.quarantined += 1

    def _retrying(self, step: Callable[[], None], what: str) -> None:
        backoff = Backoff(0.05, self.retry_max_s)
        while True:
            try:
                step()
                self.stats.healthy, self.stats.last_error = True, None
                return
            except _Fenced:
                raise
            except _StaleHead:  # the step runs again, and re-reads the chain first
                continue
            except IntegrityError as exc:
                # Another writer on our chain id, or a duplicate racing in: re-read the head and retry.
                self.stats.retries += 1
                self.stats.last_error = describe(exc)
                log.warning("audit conflict while %s, re-reading chain head: %s", what, self.stats.last_error)
                self._stale_head = True
            except Exception as exc:  # database away, or a bug: hold the events, never drop them
                self.stats.retries += 1
                self.stats.healthy = False
                self.stats.last_error = describe(exc, self.engine.url.render_as_string(hide_password=True))
                delay = backoff.next()
                log.error("audit log unavailable while %s, retrying in %.2fs: %s", what, delay, self.stats.last_error)
                time.sleep(delay)

    def _write(self, batch: list[Item]) -> None:
        started = time.perf_counter()
        seq, head = self._seq, self._head
        rows: list[tuple[object, ...]] = []
        written: list[Event | None] = []
        """The events recorded, in batch order; None for a duplicate."""
        with self.engine.begin() as conn:
            if self._stale_head:  # this transaction's connection is new: maybe another server
                raise _StaleHead
            if self.fence is not None:
                try:
                    self.fence(conn)
                except DBAPIError:
                    raise
                except Exception as exc:
                    raise _Fenced(exc) from exc
            known = self._known_ids(conn, (e.id for e, _, _ in batch))
            for event, _, effect in batch:
                if event.id in known:
                    written.append(None)
                    continue
                known.add(event.id)
                if effect is not None:
                    try:
                        event = effect(conn) or event
                    except NoEntry:
                        written.append(None)
                        continue
                written.append(event)
                record = event.record(self.chain_id)
                seq += 1
                prev, head = head, entry_hash(head, entry_body(*record))
                person = event.subject.get("person")
                rows.append((record[0], seq, *record[1:], prev, head, person if type(person) is int else None))
            if rows:
                conn.exec_driver_sql(_insert_sql(conn), rows)
                write_checkpoint(conn, self.signer, self.chain_id, seq, head)
        self._seq, self._head = seq, head
        self.stats.checkpoints += bool(rows)
        elapsed = time.perf_counter() - started
        self.stats.committed += len(rows)
        self.stats.duplicates += len(batch) - len(rows)
        self.stats.batches += 1
        self.stats.commit_seconds.observe(elapsed)
        self.stats.last_commit_s = elapsed
        self.stats.last_progress = time.monotonic()
        if self.on_commit is not None and rows:
            try:
                self.on_commit([event for event in written if event is not None])
            except Exception:  # a listener failing must not stop the log
                log.exception("commit listener failed")
        for (event, ack, _), recorded in zip(batch, written, strict=True):
            if ack is not None:
                try:
                    ack(recorded or event, recorded is None)
                except Exception:  # an acknowledgement failing must not stop the log
                    log.exception("acknowledgement of %s failed", event.id)
        self._done(len(batch))

    def stalled_s(self) -> float:
        """How long events have been waiting with no commit (0 when nothing waits)."""
        with self._idle:
            waiting = self._pending > 0
        return time.monotonic() - self.stats.last_progress if waiting else 0.0

    @staticmethod
    def _known_ids(conn: Connection, ids: Iterable[str]) -> set[str]:
        """The ids already in the log, in chunks of 500; a driver-level SELECT, as the insert (building the
        Core statement anew for every batch cost more than running it)."""
        wanted = list(set(ids))
        found: set[str] = set()
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            sql = f"SELECT event_id FROM audit_entry WHERE event_id IN ({', '.join([mark] * len(chunk))})"
            found.update(row[0] for row in conn.exec_driver_sql(sql, tuple(chunk)))
        return found


class _Fenced(Exception):
    """The fence refused a commit: carried past the retries to the writer's loop, which stops."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _StaleHead(Exception):
    """The commit's connection is new since the chain was last read: read it again first."""


def _database_away(exc: BaseException) -> bool:
    """The database cannot be reached or is busy (retry everything later), as opposed to refusing one value
    (find it and quarantine it). A read-only server is away too: in a failover the writer can land on a
    standby, or keep a connection to a demoted primary, and every row is refused there; quarantining them
    would empty the queue into dead letters while the promoted server waits on the next host."""
    if isinstance(exc, (OperationalError, InterfaceError)) or server_unavailable(exc):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
