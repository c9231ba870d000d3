"""Serving the console in production: gunicorn with threaded workers (every open live feed holds a thread),
HTTPS when the site file names a certificate and key."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from badge_bridge.config import SiteConfig
from badge_bridge.logs import ACCESS_LOG_ENV


class ConsoleLog(glogging.Logger):
    """gunicorn's own lines (started, listening, a worker's exit) in the text format of badge-bridge's other
    processes instead of gunicorn's bracketed one, so one log does not mix two kinds of line."""

    error_fmt = "%(asctime)s %(levelname)s gunicorn %(message)s"
    datefmt = None


class ConsoleServer(BaseApplication):
    """``factory`` builds the app inside the worker: the app's threads (MQTT link, audit writer) would not
    survive gunicorn's fork if the app were built in the master."""

    def __init__(self, factory: Callable[[], Flask], config: SiteConfig) -> None:
        self.factory = factory
        self.site = config
        super().__init__()

    def load_config(self) -> None:
        console = self.site.console
        options: dict[str, Any] = {
            "bind": f"{console.host}:{console.port}",
            "workers": 1,  # one process: the live hub and the console's audit chain live in it
            "worker_class": "gthread",
            "threads": console.workers_threads,
            "timeout": 0,  # live feeds are long requests by design
            "graceful_timeout": 10,
            "accesslog": None if os.environ.get(ACCESS_LOG_ENV) == "off" else "-",  # one line per request
            "logger_class": ConsoleLog,
            "forwarded_allow_ips": "127.0.0.1",
        }
        if console.tls_cert and console.tls_key:
            options["certfile"] = str(self.site.path(console.tls_cert))
            options["keyfile"] = str(self.site.path(console.tls_key))
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        app = self.factory()
        freeze_startup_objects()
        return app


def freeze_startup_objects() -> None:
    """For the process serving the console, once its app is built: everything built so far lives as long as
    the process, so keep the collector from walking it again and again (full collections over it paused page
    requests by ~70 ms, bench/bench_console.py). Not in the app factory: a process that builds many apps (the
    tests) would make all its garbage immortal."""
    gc.collect()
    gc.freeze()
