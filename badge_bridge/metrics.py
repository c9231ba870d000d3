"""Prometheus metrics at /metrics and a health check at /health, on a small HTTP server of the bridge's own.

The figures are read at scrape time from the processor's counters and the audit writer's statistics, so
the hot path only increments integers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from badge_bridge.audit.writer import AuditWriter
from badge_bridge.ingest import Processor

log = logging.getLogger(__name__)


class BridgeCollector:
    def __init__(self, processor: Processor, writer: AuditWriter, mqtt_connected: Callable[[], bool],
                 oldest_unanswered_s: Callable[[], float]) -> None:
        self.processor = processor
        self.writer = writer
        self.mqtt_connected = mqtt_connected
        self.oldest_unanswered_s = oldest_unanswered_s
        self.stall_s = processor.config.ingest.stall_s

    def collect(self) -> Iterator[Any]:
        counts = self.processor.counts()
        events, decisions, dead = counts.events_in, counts.decisions, counts.dead_letters
        online = self.processor.controllers_online()
        family = CounterMetricFamily("badge_bridge_events_in", "Device messages accepted", labels=["type"])
        for kind, n in sorted(events.items()):
            family.add_metric([kind], n)
        yield family
        family = CounterMetricFamily("badge_bridge_decisions", "Access decisions", labels=["result", "reason"])
        for (result, reason), n in sorted(decisions.items()):
            family.add_metric([result, reason], n)
        yield family
        family = CounterMetricFamily("badge_bridge_dead_letters", "Input refused into the dead letters",
                                     labels=["code"])
        for code, n in sorted(dead.items()):
            family.add_metric([code], n)
        yield family
        family = CounterMetricFamily("badge_bridge_retransmissions", "Controller events sent again for want of a "
                                     "receipt: not decided again, their receipt sent again", labels=["controller"])
        for controller, n in sorted(counts.retransmitted.items()):
            family.add_metric([controller], n)
        yield family
        stats = self.writer.stats
        yield CounterMetricFamily("badge_bridge_audit_committed", "Audit entries committed", value=stats.committed)
        yield CounterMetricFamily("badge_bridge_audit_duplicates", "Replayed events refused by id",
                                  value=stats.duplicates)
        yield GaugeMetricFamily("badge_bridge_audit_queue_depth", "Events waiting for the database",
                                value=self.writer.depth())
        yield GaugeMetricFamily("badge_bridge_audit_healthy", "1 while the database accepts writes",
                                value=int(stats.healthy))
        yield CounterMetricFamily("badge_bridge_audit_quarantined", "Events the database refused, kept as dead letters",
                                  value=stats.quarantined)
        yield GaugeMetricFamily("badge_bridge_audit_stalled_seconds", "How long events have waited with no commit",
                                value=self.writer.stalled_s())
        yield GaugeMetricFamily("badge_bridge_mqtt_oldest_unanswered_seconds",
                                "Age of the oldest inbound message not yet acknowledged", value=self.oldest_unanswered_s())
        yield from stats.commit_seconds.collect()
        yield GaugeMetricFamily("badge_bridge_controllers_online", "Controllers reporting online",
                                value=sum(online.values()))
        yield GaugeMetricFamily("badge_bridge_mqtt_connected", "1 while connected to the broker",
                                value=int(self.mqtt_connected()))

    def health(self) -> tuple[bool, dict[str, object]]:
        """Degraded while the database fails, the broker is away, commits have stopped with events waiting,
        or a message has gone unanswered too long; ``problems`` says which, in words an operator acts on."""
        stats = self.writer.stats
        stalled, unanswered = self.writer.stalled_s(), self.oldest_unanswered_s()
        problems = []
        if not stats.healthy:
            problems.append(f"database failing: {stats.last_error}")
        if not self.mqtt_connected():
            problems.append("MQTT broker disconnected")
        if stalled > self.stall_s:
            problems.append(f"no audit commit for {stalled:.0f} s while {self.writer.depth()} events wait")
        if unanswered > self.stall_s:
            problems.append(f"an MQTT message has waited {unanswered:.0f} s for its acknowledgement")
        body: dict[str, object] = {
            "database": "ok" if stats.healthy else f"failing: {stats.last_error}",
            "mqtt": "connected" if self.mqtt_connected() else "disconnected",
            "queue_depth": self.writer.depth(), "committed": stats.committed,
            "stalled_s": round(stalled, 1), "oldest_unanswered_s": round(unanswered, 1), "problems": problems}
        return not problems, body


def serve(collector: BridgeCollector, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``server_address`` has the bound port)."""
    registry = CollectorRegistry()
    registry.register(collector)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path == "/health":
                ok, body = collector.health()
                self._send(200 if ok else 503, json.dumps({"status": "ok" if ok else "degraded", **body}).encode(),
                           "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%s/metrics, health on /health", *server.server_address[:2])
    return server
