"""Log lines: one JSON object per line for journald, Loki or whatever the site collects, or plain text for a
person at a terminal (the demo); and a traffic summary, one line a minute, for a log a person reads.

``BADGE_BRIDGE_LOG_FORMAT`` (``json`` or ``text``) overrides the format every badge-bridge process was going
to use, so a parent (the demo) can make the processes it starts (console, cameras, camera workers) write
the same kind of lines as its own. ``BADGE_BRIDGE_ACCESS_LOG=off`` leaves out the console's line per
request (web/serve.py)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from datetime import UTC, datetime

LOG_FORMAT_ENV = "BADGE_BRIDGE_LOG_FORMAT"
ACCESS_LOG_ENV = "BADGE_BRIDGE_ACCESS_LOG"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(fmt: str, level: int) -> None:
    """``fmt``: "json" or "text"; ``BADGE_BRIDGE_LOG_FORMAT`` overrides it."""
    fmt = os.environ.get(LOG_FORMAT_ENV) or fmt
    if fmt not in ("json", "text"):
        raise ValueError(f"{LOG_FORMAT_ENV}={fmt!r}: expected json or text")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING if level > logging.DEBUG else logging.DEBUG)


class MinuteSummary:
    """Counts the bridge's decisions and alarms and logs them once a ``period_s``: one line a minute instead
    of one a badge, so what matters (an alarm's own line, the logins) does not scroll away."""

    def __init__(self, logger: logging.Logger, period_s: float = 60.0) -> None:
        self.log, self.period_s = logger, period_s
        self._lock = threading.Lock()
        self._decisions: Counter[str] = Counter()
        self._alarms: Counter[str] = Counter()

    def count(self, kind: str, detail: dict[str, object]) -> None:
        """One published event (``PublishedEvent.kind`` and ``detail``)."""
        with self._lock:
            if kind in ("access.granted", "access.denied"):
                self._decisions[kind.removeprefix("access.")] += 1
            elif kind == "alarm.raised":
                self._alarms[str(detail.get("alarm", "?"))] += 1

    def line(self) -> str:
        """The summary since the last one, and start counting again."""
        with self._lock:
            decisions, alarms = self._decisions, self._alarms
            self._decisions, self._alarms = Counter(), Counter()
        raised = sum(alarms.values())
        text = f"{decisions['granted']} granted, {decisions['denied']} denied, {raised} alarm{'' if raised == 1 else 's'}"
        if alarms:
            text += " (" + ", ".join(f"{kind} x{n}" for kind, n in sorted(alarms.items())) + ")"
        return text

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.period_s):
            self.log.info("last %s: %s", "minute" if self.period_s == 60 else f"{self.period_s:g} s", self.line())
