"""`badge-bridge run`: one partition's bridge, active at once on SQLite, or standby until it holds the
partition's lease on PostgreSQL (then active until it stops or loses the lease)."""

from __future__ import annotations

import faulthandler
import logging
import signal
import socket
import threading

from sqlalchemy import Engine

from badge_bridge.bridge import Bridge
from badge_bridge.config import ConfigError, SiteConfig
from badge_bridge.failover.lease import Lease, holder_name
from badge_bridge.instance_status import InstanceStatus
from badge_bridge.keys import KeyStore

log = logging.getLogger(__name__)

STOP_LIMIT_S = 60.0
"""A stop that takes longer than this (a thread that never ends) dumps every thread's stack to the log and
exits with status 1: the service manager restarts a bridge, never waits on a hung one. Unacknowledged
messages are redelivered to the next bridge, so nothing committed or pending is lost."""


def choose_partition(config: SiteConfig, partition: str | None) -> str:
    """The partition to serve: the one asked for, or the site's only one."""
    partitions = config.partitions()
    if partition is None:
        if len(partitions) > 1:
            raise ConfigError(f"this site has {len(partitions)} partitions: name the one to serve with --partition "
                              f"({', '.join(partitions)})")
        return partitions[0]
    if partition not in partitions:
        raise ConfigError(f"partition {partition!r} is not in the site file (expected one of: {', '.join(partitions)})")
    return partition


def run_partition(config: SiteConfig, engine: Engine, keys: KeyStore, partition: str | None = None,
                  instance: str | None = None) -> None:
    """Serve ``partition`` until SIGTERM or Ctrl-C. ``instance``: this bridge's name among the partition's
    bridges (default: the host name)."""
    key = choose_partition(config, partition)
    view = config.partition_view(key)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    lease = None
    status = InstanceStatus(config, key, instance or socket.gethostname())  # standby until it holds the lease
    status.start()
    if Lease.supported(engine):
        lease = Lease(engine, key, holder_name(instance or socket.gethostname()), config.failover)
    elif len(config.partitions()) > 1 or instance is not None:
        log.warning("partition %s on SQLite: no lease and no failover (PostgreSQL is needed for standbys)", key)
    bridge = Bridge(view, engine, keys, lease, stopping=stopping)
    bridge.prepare()  # warm: a takeover then loads only what the active could have changed
    if lease is not None:
        bridge.takeover = lease.acquire(stopping)
        if bridge.takeover is None:
            status.stop()
            return  # stopped while standby
        log.info("partition %s: active (lease token %d, holder %s)", key, bridge.takeover.token, lease.holder)
    bridge.start()
    status.set_role("active")
    try:
        stopping.wait()
    finally:
        log.info("stopping")
        faulthandler.dump_traceback_later(STOP_LIMIT_S, exit=True)
        bridge.stop()
        status.stop()
