"""A PostgreSQL primary and a synchronous streaming standby of the test's own, on free ports.

The tests of a database failover need what the machine's shared server cannot give: a server to kill -9 and
a standby to promote. ``PgPair`` creates both with the PostgreSQL 15 binaries (``initdb``, then
``pg_basebackup`` from the running primary), makes the standby synchronous (``synchronous_standby_names`` on
the primary only, ``synchronous_commit = on``: a commit returns once the standby has flushed it), and
removes everything on exit, also when the test failed half-way.

initdb refuses to run as root: as root the servers run as the ``postgres`` user in a folder it owns.
Each server is the leader of its own process group, so ``kill`` takes its backends with it, as a machine
that dies would. Without the binaries the test is skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
import pytest

from tests.waiting import wait_until

BIN = Path(os.environ.get("BADGE_BRIDGE_PG_BIN", "/usr/lib/postgresql/15/bin"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SYSTEM_USER = "postgres"
"""Who runs the servers when the tests run as root."""
STANDBY_NAME = "standby1"
"""The standby's ``application_name``, which the primary's ``synchronous_standby_names`` waits for."""
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "16MB",
    "max_connections": "40",
    "synchronous_commit": "on",
    "wal_keep_size": "64MB",
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "200ms",  # a standby (re)joining streams at once, not after 5 s
    "hot_standby_feedback": "on",
    "log_min_messages": "warning",
    "wal_log_hints": "on",  # lets pg_rewind turn an old primary into a standby of the promoted one
}
"""Every server's, in its postgresql.conf; what differs per server (port, role) is given on the command line."""


def require_binaries() -> None:
    """Skip the test without the PostgreSQL server binaries (or, as root, the postgres user); fail it under
    CI=true."""
    missing = [name for name in ("initdb", "postgres", "pg_basebackup", "pg_rewind") if not (BIN / name).exists()]
    reason = f"PostgreSQL binaries missing in {BIN}: {', '.join(missing)}" if missing else None
    if reason is None and os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            reason = f"running as root and there is no {SYSTEM_USER!r} user to run initdb as"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One server: its data folder, its port, its process (a process-group leader)."""

    def __init__(self, pair: PgPair, name: str) -> None:
        self.pair = pair
        self.name = name
        self.data = pair.root / name
        self.log = pair.root / f"{name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings: dict[str, str] = {}

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=5"

    def url(self, dbname: str) -> str:
        """A SQLAlchemy URL to this server alone."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self, **settings: str) -> None:
        """Start with ``settings`` on the command line (so a standby cloned from the primary's folder does not
        inherit the primary's), and wait until it answers."""
        self.settings = {"port": str(self.port), "unix_socket_directories": str(self.pair.root), **settings}
        args = [str(BIN / "postgres"), "-D", str(self.data)]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as out:
            self.proc = self.pair.popen(args, stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._answers, 60, f"PostgreSQL {self.name} on port {self.port} to answer",
                   detail=self.tail)

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"PostgreSQL {self.name} exited with {self.proc.returncode}: {self.tail()}")
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        """kill -9 of the server and every backend (its process group): the machine died."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._reap_group()

    def stop(self) -> None:
        """A fast shutdown (SIGINT: active transactions are rolled back, then a checkpoint)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()

    def _reap_group(self) -> None:
        """Backends outlive a killed postmaster for a moment; wait until the group is gone (its lock on the data
        folder and shared memory with it)."""
        if self.proc is None:
            return
        pgid = self.proc.pid

        def gone() -> bool:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return True
            return False

        wait_until(gone, 10, f"the processes of PostgreSQL {self.name} to end")

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement in autocommit and return its rows (none for a command)."""
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            cur = conn.execute(statement)  # test-made statements only
            return cur.fetchall() if cur.description else []

    def in_recovery(self) -> bool:
        return bool(self.sql("SELECT pg_is_in_recovery()")[0][0])


class PgPair:
    """A primary and its synchronous standby (``synchronous=False``: asynchronous, to show what that loses).
    Use as a context manager: everything is stopped and removed on exit."""

    def __init__(self, synchronous: bool = True) -> None:
        require_binaries()
        self.synchronous = synchronous
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="bb-pgpair-"))
        if self.as_root:  # the servers' user must own their folders; pytest's tmp_path is root's alone
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.primary = PgServer(self, "primary")
        self.standby = PgServer(self, "standby")

    def popen(self, args: list[str], **kw: object) -> subprocess.Popen[bytes]:
        """Run a PostgreSQL binary as the servers' user, leader of its own process group."""
        if self.as_root:
            kw.update(user=SYSTEM_USER, group=SYSTEM_USER, extra_groups=[])
        return subprocess.Popen(args, cwd=self.root, start_new_session=True, **kw)  # type: ignore[call-overload]

    def run(self, args: list[str]) -> None:
        proc = self.popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise AssertionError(f"{Path(args[0]).name} failed ({proc.returncode}): {out.decode(errors='replace')}")

    def create(self) -> PgPair:
        """initdb the primary, start it, clone the standby from it with pg_basebackup, start that, and wait
        until the primary reports it as its synchronous standby."""
        self.run([str(BIN / "initdb"), "-D", str(self.primary.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "--encoding=UTF8", "--locale=C"])
        with (self.primary.data / "postgresql.conf").open("a") as conf:
            # In the file, which pg_basebackup copies and pg_rewind's recovery run reads too (``rejoin``).
            conf.writelines(f"{key} = '{value}'\n" for key, value in SETTINGS.items())
        self.primary.start(synchronous_standby_names=STANDBY_NAME if self.synchronous else "")
        self.run([str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                  "-D", str(self.standby.data), "-X", "stream", "-c", "fast"])
        self.start_standby(self.standby, self.primary)
        wanted = "sync" if self.synchronous else "async"
        wait_until(lambda: self.sync_state() == wanted, 60, f"the standby to stream ({wanted})",
                   detail=lambda: (self.sync_state(), self.standby.tail()))
        return self

    def start_standby(self, server: PgServer, upstream: PgServer) -> None:
        (server.data / "standby.signal").touch()
        if self.as_root:
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(server.data / "standby.signal", user.pw_uid, user.pw_gid)
        server.start(primary_conninfo=f"host=127.0.0.1 port={upstream.port} user=postgres "
                                      f"application_name={STANDBY_NAME}")

    def sync_state(self) -> str | None:
        rows = self.primary.sql(f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'")
        return str(rows[0][0]) if rows else None

    def hold_replication(self) -> None:
        """Freeze the primary's WAL sender (SIGSTOP): from now on the standby receives nothing. Synchronous
        commits wait; asynchronous ones return, and are on the primary alone."""
        pid = self.primary.sql(f"SELECT pid FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'")[0][0]
        os.kill(int(str(pid)), signal.SIGSTOP)

    def caught_up(self) -> bool:
        """The standby has replayed everything the primary has written so far."""
        lsn = self.primary.sql("SELECT pg_current_wal_lsn()")[0][0]
        return bool(self.standby.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")[0][0])

    def promote(self) -> float:
        """Promote the standby (``pg_promote``, waiting until it accepts writes); returns when it was asked,
        ``time.monotonic()``."""
        asked = time.monotonic()
        assert self.standby.sql("SELECT pg_promote(true, 60)")[0][0] is True
        wait_until(lambda: not self.standby.in_recovery(), 60, "the promoted standby to leave recovery")
        return asked

    def rejoin(self, old: PgServer, promoted: PgServer) -> None:
        """Bring a killed old primary back as a standby of the promoted one: ``pg_rewind`` (which first runs
        the crash recovery the kill left owing) throws away what only it had, then it streams again."""
        promoted.sql("CHECKPOINT")  # a fresh promotion's control file names the new timeline only after one
        self.run([str(BIN / "pg_rewind"), "--target-pgdata", str(old.data),
                  "--source-server", f"host=127.0.0.1 port={promoted.port} user=postgres dbname=postgres"])
        self.start_standby(old, promoted)

    def multi_host_url(self, dbname: str) -> str:
        """The URL a bridge uses: both servers, and only the one that accepts writes will do."""
        return (f"postgresql+psycopg://postgres@/{dbname}?host=127.0.0.1:{self.primary.port}"
                f"&host=127.0.0.1:{self.standby.port}&target_session_attrs=read-write")

    def close(self) -> None:
        for server in (self.primary, self.standby):
            try:
                server.kill()
            except Exception:  # cleaning up: remove what can be removed
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgPair:
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
