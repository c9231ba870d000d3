"""The live fuzz run: structure-aware MQTT payloads over a real Mosquitto and an attacker on the pty RS-485
bus, against the real bridge process (``badge-bridge run``) on its own database, with known-good probes.

Payloads go out in rounds at QoS 1, each round closed by a probe (the probe card at the lobby reader) that
must be granted and committed. While a round is open the audit writer's commits are watched on /metrics:
no commit for ``stall_s`` while the probe waits is a *stall*; the bridge process exiting is a *crash*.
After either, the bridge is killed, its MQTT session drained (connecting with its client id: the broker
hands over every message it never acknowledged), the drained messages judged one by one by the oracle
(fuzz/oracle.py) to find the ones that broke it, and the bridge started again. At quiet moments (every
``audit_every`` payloads and at the end) the bridge is stopped cleanly and its session drained the same
way: what is left is what it never acknowledged. The end: a final set of probes on every path, the audit
log (rejections by code, grants, dead-letter sizes and PINs, the chain verified), RSS, one JSON report.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from badge_bridge.audit.verify import verify
from badge_bridge.config import load_config
from badge_bridge.keys import KeyStore
from badge_bridge.models import AuditEntry, DeadLetter
from badge_bridge.sim.broker import Broker
from badge_bridge.sim.osdp_reader import PtyBus, SimReader
from fuzz import store
from fuzz.bus import Attacker, Probe
from fuzz.oracle import PIN_TEXT, STORED_MAX, Judge, signature
from fuzz.payloads import ESP_TOPIC, PREFIX, Mutator, Payload, printable
from fuzz.scratch import Scratch
from fuzz.site import OSDP_READERS, PROBE_PIN, VICTIM_PIN, Cards, prepare, write_site
from tests.bridge_proc import BridgeProcess
from tests.console_commands import command, operator

log = logging.getLogger("fuzz")

UNACKED_KINDS = ("stall", "exception", "unacked")
"""Problems that leave a message unacknowledged (the others are wrong answers to an acknowledged one)."""
TRIAGE_MAX = 5000
"""Suspects judged per drain at most (a deaf bridge can hold 20,000)."""
EXAMPLES = 3


@dataclass
class Settings:
    messages: int
    bus_bytes: int
    max_seconds: float
    out: Path
    db: str = "sqlite"
    seed: int = 1
    round_size: int = 1000
    stall_s: float = 10.0
    round_timeout_s: float = 120.0
    audit_every: int = 100_000
    max_incidents: int = 25
    bus_probe_every_s: float = 5.0
    crashers: Path = store.CRASHERS


@dataclass
class Findings:
    """Problems by signature, with a few inputs each and the crashers kept."""

    by_signature: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, problem: str, topic: str, payload: bytes, source: str, others: int = 0) -> bool:
        """Count ``problem`` (of an input with ``others`` problems of other signatures); True when the input is
        worth keeping: the first of its signature, or one with fewer other problems than the last kept."""
        sig = signature(problem)
        entry = self.by_signature.setdefault(sig, {"count": 0, "source": source, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append({"topic": topic, "payload": printable(payload), "problem": problem[:300]})
        if others < entry.get("kept_with_others", others + 1):
            entry["kept_with_others"] = others
            return True
        return False


class Observer:
    """What the bridge says on MQTT: committed events (``bridge/events``) and commands to controllers."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.committed: set[str] = set()
        """Ids of probe events seen committed."""
        self.kinds: Counter[str] = Counter()
        self.grant_requests: set[str] = set()
        self.commands: Counter[str] = Counter()
        self.garbage_commands = 0
        self.garbage_examples: list[dict[str, Any]] = []
        self.esp_commands: Counter[str] = Counter()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-observer-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe([(f"{PREFIX}/bridge/events", 0),
                                                             (f"{PREFIX}/controllers/+/commands", 1),
                                                             ("esp-noc/cmd", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            if msg.topic.endswith("/bridge/events"):
                for event in body.get("events", []):
                    self.kinds[event["kind"]] += 1
                    if "probe-" in event["id"]:
                        self.committed.add(event["id"])
            elif msg.topic == "esp-noc/cmd":
                self.esp_commands[body.get("cmd", "?")] += 1
            else:
                kind = body.get("type", "?")
                self.commands[kind] += 1
                if kind == "grant":
                    if str(body.get("request", "")).startswith("probe-"):
                        self.grant_requests.add(body["request"])
                    else:
                        self.garbage_commands += 1
                        if len(self.garbage_examples) < EXAMPLES:
                            self.garbage_examples.append(body)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Bridge:
    """The bridge process under test: started on the site file, watched through /metrics and /proc."""

    def __init__(self, site_file: Path, log_dir: Path) -> None:
        self.site_file, self.log_dir = site_file, log_dir
        self.proc: BridgeProcess
        self.metrics_url = ""
        self.lives: list[dict[str, Any]] = []
        self.counted: Counter[str] = Counter()
        """Rejections counted by the bridge's processes so far (``badge_bridge_dead_letters``)."""
        self._last_scrape: dict[str, int] = {}

    def start(self) -> None:
        """A new process, with a log file of its own (a long run's log is hundreds of megabytes)."""
        self.proc = BridgeProcess(self.site_file, self.log_dir / f"bridge-{len(self.lives) + 1}.log")
        self.proc.start(timeout=120)
        port = re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.proc.output())
        self.metrics_url = f"http://127.0.0.1:{port[-1]}"
        assert self.proc.proc is not None
        self.lives.append({"pid": self.proc.proc.pid, "rss_kib": [self.rss()], "ended": None})
        self._last_scrape = {}

    @property
    def alive(self) -> bool:
        return self.proc.proc is not None and self.proc.proc.poll() is None

    def rss(self) -> int | None:
        try:
            status = Path(f"/proc/{self.proc.proc.pid}/status").read_text()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return None
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def sample_rss(self) -> None:
        rss = self.rss()
        if rss is not None:
            self.lives[-1]["rss_kib"].append(rss)

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def committed(self) -> int | None:
        status, text = self._get("/metrics")
        if status != 200:
            return None
        found = re.search(r"^badge_bridge_audit_committed_total (\S+)$", text, re.M)
        self._last_scrape = {m[0]: int(float(m[1])) for m in
                             re.findall(r'^badge_bridge_dead_letters_total\{code="([^"]+)"\} (\S+)$', text, re.M)}
        return int(float(found.group(1))) if found else None

    def health(self) -> str:
        status, body = self._get("/health")
        return f"{status} {body.strip()[:400]}"

    def end(self, how: str) -> None:
        """Close the books on this process: its last counters, then ``how`` it ends (term or kill)."""
        if self.alive:
            self.committed()
            self.sample_rss()
        self.counted.update(self._last_scrape)
        if self.alive:
            try:
                self.proc.signal(signal.SIGTERM if how == "term" else signal.SIGKILL, timeout=90)
            except Exception:
                self.proc.kill()
        assert self.proc.proc is not None
        self.lives[-1]["ended"] = how if how != "crash" else f"crash (exit {self.proc.proc.returncode})"

    def kill(self) -> None:
        """Whatever happened, no bridge process outlives the run."""
        if self.alive:
            self.proc.kill()

    def log_tail(self, lines: int = 12) -> list[str]:
        """The bridge's last log lines worth reading (libosdp's own console spam left out)."""
        with self.proc.log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
        wanted = [line for line in text.splitlines() if not line.startswith("OSDP:")]
        return [line[:400] for line in wanted[-lines:]]


class Harness:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.out = settings.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.deadline = self.started + settings.max_seconds
        self.findings = Findings()
        self.incidents: list[dict[str, Any]] = []
        self.unacked: list[dict[str, Any]] = []
        self.kept: list[str] = []
        self.sent = 0
        self.sent_by_template: Counter[str] = Counter()
        self.probes = 0
        self.rounds = 0
        self.max_commit_gap_s = 0.0
        self.stopped_early: str | None = None
        self.cards = Cards.fresh()

    # --- set up and tear down ------------------------------------------------------------------------

    def _setup(self, stack: ExitStack) -> None:
        """Start everything, each part's stop registered as it starts (so a failure half-way stops the rest)."""
        self.broker = Broker(self.out / "mosquitto")
        self.broker.start()
        stack.callback(self.broker.stop)
        self.bus = PtyBus(len(OSDP_READERS) + 1)
        stack.callback(self.bus.close)
        self.scratch = Scratch(self.s.db, self.out / "scratch")
        """Databases of the oracle's, and on PostgreSQL the bridge's own."""
        stack.callback(self.scratch.close)
        db_url = f"sqlite:///{self.out / 'bridge.db'}" if self.s.db == "sqlite" else self.scratch.new()
        self.site = write_site(self.out, db_url, broker_port=self.broker.port, osdp_port=self.bus.cp_link)
        self.engine, self.enrolled = prepare(self.site, self.cards)
        stack.callback(self.engine.dispose)
        self.config = load_config(self.site)
        keys = KeyStore(self.config.keys_dir())
        self.readers = {}
        for key, (address, kind) in OSDP_READERS.items():
            self.readers[key] = SimReader(address, self.bus, keys.osdp_key(key), kind=kind, walk_through=False,
                                          endpoint=address)
            stack.callback(self.readers[key].stop)
        self.judge = Judge(self.site, self.scratch, stall_s=2.0)
        stack.callback(self.judge.close)
        self.bridge = Bridge(self.site, self.out)
        stack.callback(self.bridge.kill)
        self.bridge.start()
        self.observer = Observer(self.broker.port)
        stack.callback(self.observer.close)
        self.publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-publisher-{os.getpid()}",
                                     protocol=mqtt.MQTTv5)
        self.publisher.max_inflight_messages_set(1000)
        self.publisher.connect("127.0.0.1", self.broker.port)
        self.publisher.loop_start()
        stack.callback(self.publisher.loop_stop)
        self.attacker = Attacker(self.bus, len(OSDP_READERS) + 1, self.cards.victim, VICTIM_PIN, self.s.seed,
                                 self.s.bus_bytes, self.deadline)
        stack.callback(self.attacker.close)
        self.bus_probe = Probe(self.readers, self.cards.probe, PROBE_PIN)

    # --- the run -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        with ExitStack() as stack:
            self._setup(stack)
            self._wait_for_readers()
            self.attacker.start()
            prober = threading.Thread(target=self._probe_bus, name="bus-probe", daemon=True)
            prober.start()
            mutator = Mutator(self.s.seed)
            rss_before = self.bridge.rss()
            next_audit = self.s.audit_every
            while time.monotonic() < self.deadline and (self._mqtt_open() or not self.attacker.done):
                size = min(self.s.round_size, self.s.messages - self.sent) if self._mqtt_open() else 0
                self._round([mutator.next() for _ in range(size)])
                if not size:  # only the bus is still at it: a probe a second keeps watching the bridge
                    time.sleep(1)
                if self.sent >= next_audit and self.sent < self.s.messages:
                    next_audit += self.s.audit_every
                    self._quiet_audit(restart=True)
            if time.monotonic() >= self.deadline:
                self.stopped_early = self.stopped_early or f"time limit ({self.s.max_seconds:.0f}s)"
            self.attacker.stop.set()
            prober.join(30)
            final = self._final_probes()
            rss_after = self.bridge.rss()
            self._quiet_audit(restart=False)
            report = self._report(rss_before, rss_after, final)
        return report

    def _mqtt_open(self) -> bool:
        if len(self.incidents) >= self.s.max_incidents:
            self.stopped_early = f"MQTT payloads stopped after {len(self.incidents)} incidents (--max-incidents)"
        return self.sent < self.s.messages and self.stopped_early is None

    def _wait_for_readers(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not all(r.sc_active for r in self.readers.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the genuine OSDP readers did not come online with the bridge")
            time.sleep(0.1)

    def _probe_bus(self) -> None:
        while not self.attacker.done and time.monotonic() < self.deadline:
            self.bus_probe.once()
            self.attacker.stop.wait(self.s.bus_probe_every_s)

    # --- rounds --------------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.publisher.publish(topic, payload, qos=1)

    def _probe_message(self) -> str:
        self.probes += 1
        pid = f"probe-{self.cards.probe[-6:]}-{self.probes}"
        body = {"v": 1, "id": pid, "ts": datetime.now(UTC).isoformat(), "type": "credential", "reader": "main-in",
                "card": {"format": "ascii", "number": self.cards.probe}}
        self._publish(f"{PREFIX}/controllers/ctl-lobby/events", json.dumps(body).encode())
        return pid

    def _round(self, payloads: list[Payload]) -> None:
        self.rounds += 1
        for p in payloads:
            self._publish(p.topic, p.data)
            self.sent_by_template[p.label.split(":", 1)[0].removeprefix("replay[")] += 1
        self.sent += len(payloads)
        pid = self._probe_message()
        outcome = self._wait_probe(pid)
        self.bridge.sample_rss()
        if outcome != "answered":
            self._incident(outcome, pid)

    def _wait_probe(self, pid: str) -> str:
        """``answered``, or why not: ``crash``, ``stall`` (no commit for stall_s), ``unanswered``."""
        started = last_change = time.monotonic()
        last = self.bridge.committed()
        while True:
            with self.observer.lock:
                if f"ctl-lobby:{pid}" in self.observer.committed and pid in self.observer.grant_requests:
                    return "answered"
            if not self.bridge.alive:
                return "crash"
            now = time.monotonic()
            committed = self.bridge.committed()
            if committed != last:
                self.max_commit_gap_s = max(self.max_commit_gap_s, now - last_change)
                last, last_change = committed, now
            elif now - last_change > self.s.stall_s:
                self.max_commit_gap_s = max(self.max_commit_gap_s, now - last_change)
                return "stall"
            if now - started > self.s.round_timeout_s:
                return "unanswered"
            time.sleep(0.1)

    # --- incidents and drains ------------------------------------------------------------------------

    def _incident(self, kind: str, pid: str) -> None:
        incident: dict[str, Any] = {"kind": kind, "round": self.rounds, "after_payloads": self.sent,
                                    "at_s": round(time.monotonic() - self.started, 1)}
        if self.bridge.alive:
            incident["health"] = self.bridge.health()
        incident["log"] = self.bridge.log_tail()
        self.bridge.end("crash" if kind == "crash" else "kill")
        drained = self._drain()
        incident["held_messages"] = len(drained)
        incident["culprits"] = self._triage(drained, "incident")
        self.incidents.append(incident)
        log.warning("incident %d (%s) after %d payloads: %d messages held, culprits %s", len(self.incidents), kind,
                    self.sent, len(drained), incident["culprits"])
        self.bridge.start()

    def _quiet_audit(self, *, restart: bool) -> None:
        """Stop the bridge cleanly when nothing is outstanding: what its session still holds, it never
        acknowledged."""
        self.bridge.end("term")
        drained = self._drain()
        culprits = self._triage(drained, "quiet audit")
        self.unacked.append({"after_payloads": self.sent, "messages": len(drained), "culprits": culprits})
        if restart:
            self.bridge.start()

    def _drain(self, quiet_s: float = 2.0, limit_s: float = 120.0) -> list[tuple[str, bytes]]:
        """Connect with the bridge's client id and session: the broker delivers every message the bridge
        did not acknowledge, and whatever is still queued for it. Probes are left out."""
        messages: list[tuple[str, bytes]] = []
        last = [time.monotonic()]
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=self.config.mqtt.client_id or f"badge-bridge-{self.config.site.instance}",
                             protocol=mqtt.MQTTv5, manual_ack=True)

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if b'"probe-' not in msg.payload[:200]:
                messages.append((msg.topic, msg.payload))
            c.ack(msg.mid, msg.qos)
            last[0] = time.monotonic()

        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.mqtt.session_expiry_s
        props.ReceiveMaximum = 65535
        client.connect("127.0.0.1", self.broker.port, clean_start=False, properties=props)
        client.loop_start()
        started = time.monotonic()
        while time.monotonic() - last[0] < quiet_s and time.monotonic() - started < limit_s:
            time.sleep(0.1)
        client.disconnect()
        client.loop_stop()
        return messages

    def _triage(self, messages: list[tuple[str, bytes]], source: str) -> dict[str, int]:
        """Judge held messages one by one; returns the count of each problem that leaves a message
        unacknowledged. Every problem becomes a finding, and a new one a crasher."""
        culprits: Counter[str] = Counter()
        for topic, payload in messages[:TRIAGE_MAX]:
            problems = self.judge.check(topic, payload).problems
            others = len({signature(p) for p in problems}) - 1
            for problem in problems:
                if problem.split(":", 1)[0] in UNACKED_KINDS:
                    culprits[signature(problem)] += 1
                if self.findings.add(problem, topic, payload, source, others):
                    self._keep(topic, payload, problem)
        return dict(culprits)

    def _keep(self, topic: str, payload: bytes, problem: str) -> None:
        found = f"make fuzz (live, {self.s.db}, seed {self.s.seed}) {datetime.now(UTC):%Y-%m-%d}"
        crasher = store.keep("message", payload, signature(problem), lambda p: self.judge.alone(topic, p),
                             topic=topic, databases=[self.s.db], found=found, directory=self.s.crashers)
        if crasher is not None:
            self.kept.append(crasher.id)

    # --- the end -------------------------------------------------------------------------------------

    def _final_probes(self) -> dict[str, bool]:
        """Every path answers once the fuzzing is over: a card at an MQTT reader, a console command (signed, by
        an operator in session), an esp-rfid door report, camera motion, the probe card and PIN on the OSDP bus."""
        now = datetime.now(UTC)
        n = self.probes = self.probes + 1
        messages = {
            "mqtt_credential": (f"ctl-lobby:probe-final-{n}", f"{PREFIX}/controllers/ctl-lobby/events",
                                {"v": 1, "id": f"probe-final-{n}", "ts": now.isoformat(), "type": "credential",
                                 "reader": "main-in", "card": {"format": "ascii", "number": self.cards.probe}}),
            "console_command": (f"console:probe-final-lock-{n}", f"{PREFIX}/console/commands",
                                json.loads(command(KeyStore(self.config.keys_dir()), operator(self.engine, "fuzz"),
                                                   id=f"probe-final-lock-{n}", ts=now, type="lock", user="fuzz",
                                                   reason="final probe").model_dump_json())),
            "camera_motion": (f"cam-outside:probe-final-motion-{n}", f"{PREFIX}/cameras/cam-outside/events",
                              {"v": 1, "id": f"probe-final-motion-{n}", "ts": now.isoformat(), "type": "motion",
                               "zone": "frame", "state": "start", "started": now.isoformat(), "boxes": [],
                               "area": 0.1, "objects": 1, "peak_objects": 1}),
        }
        for _, topic, body in messages.values():
            self._publish(topic, json.dumps(body).encode())
        esp = {"type": "INFO", "src": "door", "desc": "Door Closed", "data": "probe", "time": int(now.timestamp()),
               "cmd": "event", "hostname": "esp-noc"}
        self._publish(ESP_TOPIC, json.dumps(esp).encode())
        answered = {"osdp_card_and_pin": self.bus_probe.once(timeout=30)}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.observer.lock:
                answered.update({name: eid in self.observer.committed for name, (eid, _, _) in messages.items()})
                answered["esp_rfid_door"] = self.observer.kinds["door.closed"] > 0
            if all(answered.values()):
                break
            time.sleep(0.2)
        return answered

    def _audit_log(self) -> dict[str, Any]:
        """What the bridge's database holds after the run."""
        with Session(self.engine) as session:
            kinds = dict(session.execute(select(AuditEntry.kind, func.count()).group_by(AuditEntry.kind)).all())
            rejected: Counter[str] = Counter()
            rejections = select(AuditEntry.detail).where(AuditEntry.kind == "input.rejected")
            for detail, in session.execute(rejections.execution_options(yield_per=5000)):
                rejected[json.loads(detail).get("code", "?")] += 1
            grants: Counter[str] = Counter()
            garbage, examples = 0, []
            for source, subject, detail in session.execute(
                    select(AuditEntry.source, AuditEntry.subject, AuditEntry.detail)
                    .where(AuditEntry.kind == "access.granted")):
                who = self.enrolled.get(json.loads(subject).get("person"), "unknown card")
                offline = bool(json.loads(detail).get("offline"))
                grants[f"{who}{' (offline, recorded)' if offline else ''} via {source}"] += 1
                if who != "probe" and not offline:
                    garbage += 1
                    if len(examples) < EXAMPLES:
                        examples.append({"source": source, "subject": json.loads(subject),
                                         "detail": json.loads(detail)})
            stored = Counter[str]()
            kept: dict[str, list[tuple[str, bytes]]] = {"secret_stored:dead_letter": [], "unbounded_dead_letter": []}
            rows = select(DeadLetter.source, DeadLetter.payload).execution_options(yield_per=1000)
            for topic, payload in session.execute(rows):
                stored.update(rows=1, bytes=len(payload))
                stored["max_row_bytes"] = max(stored["max_row_bytes"], len(payload))
                for problem, broken in (("secret_stored:dead_letter", PIN_TEXT.search(payload)),
                                        ("unbounded_dead_letter", len(payload) > STORED_MAX)):
                    if broken:
                        stored[problem] += 1
                        if len(kept[problem]) < EXAMPLES:
                            kept[problem].append((topic, payload))
        for problem, found in kept.items():
            for topic, payload in found:  # stored whole: the stored payload is the input
                if self.findings.add(problem, topic, payload, "audit log"):
                    self._keep(topic, payload, problem)
        return {
            "entries_by_kind": kinds,
            "rejections_audited_by_code": dict(rejected),
            "grants": dict(grants),
            "garbage_grants": garbage,
            "garbage_grant_examples": examples,
            "dead_letters": {"rows": stored["rows"], "bytes": stored["bytes"], "max_row_bytes": stored["max_row_bytes"],
                             f"rows_over_{STORED_MAX}_bytes": stored["unbounded_dead_letter"],
                             "rows_with_a_pin": stored["secret_stored:dead_letter"]},
        }

    def _report(self, rss_before: int | None, rss_after: int | None, final: dict[str, bool]) -> dict[str, Any]:
        audit = self._audit_log()
        trusted = KeyStore(self.config.keys_dir()).trusted_public_keys()
        report_ = verify(self.engine, self.config.database_url(), trusted)
        counted = dict(self.bridge.counted)
        uncounted = {code: n - counted.get(code, 0) for code, n in audit["rejections_audited_by_code"].items()
                     if n > counted.get(code, 0)}
        garbage_grants = audit["garbage_grants"] + self.observer.garbage_commands
        unacked = sum(sum(a["culprits"].values()) for a in self.unacked) + sum(
            sum(i["culprits"].values()) for i in self.incidents)
        crashes = sum(1 for i in self.incidents if i["kind"] == "crash")
        stalls = len(self.incidents) - crashes
        rss = [{"pid": life["pid"], "ended": life["ended"], "first": life["rss_kib"][0], "last": life["rss_kib"][-1],
                "max": max(filter(None, life["rss_kib"]), default=None)} for life in self.bridge.lives]
        summary = {
            "crashes": crashes, "stalls": stalls, "unacked": unacked, "garbage_grants": garbage_grants,
            "rejections_uncounted": sum(uncounted.values()), "final_probes_answered": all(final.values()),
            "chain_verified": report_.ok, "rss_kib_before": rss_before, "rss_kib_after": rss_after,
        }
        return {
            "summary": summary,
            "targets_met": (crashes == stalls == unacked == garbage_grants == 0 and not uncounted
                            and all(final.values()) and report_.ok),
            "stopped_early": self.stopped_early,
            "seconds": round(time.monotonic() - self.started, 1),
            "settings": {"messages": self.s.messages, "bus_bytes": self.s.bus_bytes, "db": self.s.db,
                         "seed": self.s.seed, "round_size": self.s.round_size, "stall_s": self.s.stall_s,
                         "max_seconds": self.s.max_seconds},
            "mqtt": {"payloads_sent": self.sent, "by_template": dict(self.sent_by_template), "rounds": self.rounds,
                     "probes": self.probes, "max_commit_gap_s": round(self.max_commit_gap_s, 1),
                     "commands_seen": dict(self.observer.commands),
                     "esp_commands_seen": dict(self.observer.esp_commands),
                     "garbage_grant_commands": self.observer.garbage_commands,
                     "garbage_grant_command_examples": self.observer.garbage_examples},
            "bus": {"bytes_sent": self.attacker.bytes, "frames_heard": self.attacker.heard,
                    "sent_by_kind": dict(self.attacker.sent), "probe_grants": self.bus_probe.ok,
                    "probe_failures": self.bus_probe.failed,
                    "probe_latency_s_max": round(max(self.bus_probe.latencies, default=0), 3)},
            "incidents": self.incidents,
            "quiet_audits": self.unacked,
            "rejections_counted_by_code": counted,
            "rejections_uncounted_by_code": uncounted,
            "audit_log": {**audit, "chain_findings": [str(f) for f in report_.findings[:5]]},
            "final_probes": final,
            "rss_kib": {"before": rss_before, "after": rss_after, "by_process": rss},
            "findings": self.findings.by_signature,
            "crashers_kept": sorted(set(self.kept)),
        }
