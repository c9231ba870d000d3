"""The site's facts shared by every partition on PostgreSQL (``site_state``, see ``ingest.persist``): each
audit commit that changed facts announces their keys with one ``pg_notify``, and each bridge keeps an
in-memory copy of the others' facts current by listening, so decisions never wait for the database.

**Announced in the commit.** ``persist.effect`` notes the keys it wrote on the connection (``announce``);
just before that transaction commits, one notification carries them all: ``{"from": partition, "keys":
[...]}``, or ``{"from": partition, "all": true}`` when the keys would not fit PostgreSQL's 8000-byte
payload. PostgreSQL delivers it only if the transaction commits, so a listener never sees a fact that
was rolled back.

**Listened to on its own connection** (``SharedStateListener``, one thread per bridge): notifications of
our own partition are ignored (our memory is the newer copy); the others' keys are read back and handed to
``Processor.apply_shared``, which puts them into the state without journaling them (they are committed
already; writing them again as ours would be wrong). A burst is read in one query.

**A lost connection** (the database restarted, failed over, or our backend was terminated) may have lost
notifications: the listener connects again and reloads every fact another partition wrote. So does its
first connection: facts committed between the bridge's load and the ``LISTEN`` would otherwise be missed.
A reload applies rows, it never removes a fact because its row is absent: positions are never deleted,
the door facts are the partition's own, and a site lockdown is lifted by the console command itself, which
every partition receives in its own MQTT session (a row that is missing cannot lift a lockdown).

SQLite has no notifications and one bridge: nothing here runs there.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection

from badge_bridge.backoff import Backoff
from badge_bridge.db import describe, libpq_params

log = logging.getLogger(__name__)

CHANNEL = "badge_bridge_site_state"
PAYLOAD_MAX = 7900
"""PostgreSQL refuses a payload of 8000 bytes or more; above this, a "reload everything" marker is sent."""
POLL_S = 0.5
"""How often the listener looks up from waiting to see whether the bridge is stopping."""
BURST_KEYS = 10_000
"""More changed keys than this in one burst: one full reload reads them cheaper than a key list."""
_PENDING = "badge_bridge.site_state_announce"

Fact = tuple[str, str | None, datetime | None]
"""A fact's key, its committed JSON (None: the row is gone) and when its writer decided it."""
"""A key and its committed JSON, or None: no row (the fact is back to its default)."""
Apply = Callable[[list[Fact], str], None]
"""``Processor.apply_shared``: the facts and the partition (or reason) they came from."""

_hook_lock = threading.Lock()


# --- the writing side: one notification per commit -------------------------------------------------


def announce(conn: Connection, partition: str, keys: Iterable[str]) -> None:
    """Note ``keys`` as changed by ``partition`` in ``conn``'s transaction; announced when it commits."""
    if conn.dialect.name != "postgresql":
        return
    pending: tuple[str, set[str]] | None = conn.info.get(_PENDING)
    if pending is None:
        _hook(conn.engine)
        pending = conn.info[_PENDING] = (partition, set())
    pending[1].update(keys)


def _hook(engine: Engine) -> None:
    with _hook_lock:
        if not event.contains(engine, "commit", _notify):
            event.listen(engine, "commit", _notify)
            event.listen(engine, "rollback", _forget)


def payload(partition: str, keys: Iterable[str]) -> str:
    """The notification's text: the keys, or the marker to reload everything when they do not fit."""
    text = json.dumps({"from": partition, "keys": sorted(keys)}, separators=(",", ":"))
    if len(text.encode()) > PAYLOAD_MAX:
        text = json.dumps({"from": partition, "all": True}, separators=(",", ":"))
    return text


def _notify(conn: Connection) -> None:
    """Runs just before the commit, on the transaction's own DBAPI connection."""
    pending = conn.info.pop(_PENDING, None)
    if pending is None:
        return
    cursor = conn.connection.cursor()
    try:
        cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload(*pending)))
    finally:
        cursor.close()


def _forget(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


# --- the reading side: a listener per bridge -----------------------------------------------------------


def parse(text: str) -> tuple[str, list[str] | None]:
    """A notification's origin and keys (None: reload everything, the marker); a payload we cannot read is
    nobody's but a DBA's or an attacker's: its origin is "", which the listener ignores."""
    try:
        body: Any = json.loads(text)
        origin = body["from"]
        if not isinstance(origin, str):
            raise TypeError("from")
        if body.get("all") is True:
            return origin, None
        keys = body["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise TypeError("keys")
        return origin, keys
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.error("site state notification cannot be read (%s: %.80r): ignored", exc, text)
        return "", None


class SharedStateListener:
    """``LISTEN`` on its own psycopg connection; hands the other partitions' changes to ``apply``."""

    def __init__(self, engine: Engine, partition: str, apply: Apply, stopping: threading.Event,
                 partitions: Collection[str] = ()) -> None:
        """``partitions``: the site's; a notification naming another origin is ignored."""
        self.params = libpq_params(engine)
        self.partition = partition
        self.partitions = frozenset(partitions) | {partition}
        self.apply = apply
        self.stopping = stopping
        self.listening = threading.Event()
        """Set while the ``LISTEN`` is in place and the reload after it is done."""
        self.reloads = 0
        """Full reloads done: one per (re)connection, and one per marker or unreadable notification."""
        self.applied = 0
        """Facts of other partitions applied."""
        self.on_applied: Callable[[list[str]], None] | None = None
        """Called with each batch's keys once applied (the bench's lag, the tests' wait)."""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shared-state", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self.stopping.is_set():
            try:
                with psycopg.connect(**{**self.params, "autocommit": True,  # the URL may name its own
                                                 "application_name": f"badge-bridge-state-{self.partition}"[:63]}) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._reload(conn, "connected")
                    self.listening.set()
                    backoff = Backoff(0.1, 5.0)
                    self._listen(conn)
            except Exception as exc:  # the database away, or a bug: never leave the bridge without the others' facts
                self.listening.clear()
                if self.stopping.is_set():
                    return
                delay = backoff.next()
                log.error("site state listener lost its connection, reconnecting in %.1fs and reloading every fact: %s",
                          delay, describe(exc), exc_info=not isinstance(exc, psycopg.Error))
                self.stopping.wait(delay)
        self.listening.clear()

    def _listen(self, conn: psycopg.Connection) -> None:
        while not self.stopping.is_set():
            burst = list(conn.notifies(timeout=POLL_S, stop_after=1))
            if not burst:
                continue
            burst += conn.notifies(timeout=0)  # what else already arrived: one read for the lot
            keys: set[str] = set()
            full = False
            for note in burst:
                origin, changed = parse(note.payload)
                if origin == self.partition:
                    continue
                if origin not in self.partitions:  # not from a bridge of this site: a DBA's, a forger's
                    log.warning("site state notification from %.64r ignored: not a partition of this site", origin)
                    continue
                if changed is None:
                    full = True
                else:
                    keys.update(changed)
            if full or len(keys) > BURST_KEYS:
                self._reload(conn, "a burst too large to list" if not full else "a reload marker")
            elif keys:
                self._read(conn, sorted(keys))

    def _read(self, conn: psycopg.Connection, keys: list[str]) -> None:
        rows = conn.execute('SELECT "key", value, "partition", updated_at FROM site_state WHERE "key" = ANY(%s)',
                            (keys,)).fetchall()
        found = {key: (value, partition, at) for key, value, partition, at in rows}
        facts: list[Fact] = []
        for key in keys:
            value, partition, at = found.get(key, (None, None, None))
            if partition != self.partition:  # ours is newer in memory than in the database
                facts.append((key, value, at))
        self._hand_over(facts, "another partition")

    def _reload(self, conn: psycopg.Connection, why: str) -> None:
        rows = conn.execute('SELECT "key", value, updated_at FROM site_state WHERE "partition" <> %s ORDER BY "key"',
                            (self.partition,)).fetchall()
        self.reloads += 1
        log.info("site state: %d facts of other partitions reloaded (%s)", len(rows), why)
        self._hand_over([(key, value, at) for key, value, at in rows], f"reload ({why})")

    def _hand_over(self, facts: list[Fact], origin: str) -> None:
        if facts:
            self.apply(facts, origin)
            self.applied += len(facts)
        if self.on_applied is not None:
            self.on_applied([key for key, _, _ in facts])
