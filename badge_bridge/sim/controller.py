"""A simulated IP door controller speaking the MQTT contract (docs/mqtt.md) over a real broker.

Used by the tests and by ``make demo``. It behaves like a real controller would:

- connects with a last will (retained ``{"v":1,"online":false}`` on its status topic) and publishes a
  retained ``online: true`` status on every connect;
- publishes its events at QoS 1 with ids unique per run (``<run nonce>.<sequence>``) and device times in
  UTC, and keeps each (but heartbeats) in its outbox (outbox.py) until the bridge's receipt names it (checked
  like a command), publishing it again, same id, same bytes, after ``receipt_timeout_s`` and after every
  reconnection: events survive a broker killed before its disk had them;
- fails over along ``brokers`` (mqtt_client.Failover) when its broker goes;
- acts only on commands with a valid MAC under its sync key and an id it has not acted on, and takes only
  a newer credential sync with a valid MAC (command_mac.py);
  anything else it refuses, logs, lists in ``refused`` and reports to the bridge as a tamper;
- obeys commands: a grant lets a "person" walk through (door contact opens shortly after and closes after a
  fraction of the open time), unlock / lock / lockdown change ``lock_state``;
- keeps the last credential sync and decides alone while the bridge is away (no bridge instance of its
  partition says online on ``bridge/status/<partition>/<instance>``, its own broker connection is down, or
  ``go_offline()``), reporting the decision in the event's ``offline`` field, with the same checks and reason
  codes as ``policy.decide`` where they apply.

Everything that goes on the wire is built from the contract models, so it is valid by construction;
``publish_raw`` sends anything, for tests of bad input.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from badge_bridge import policy
from badge_bridge.controllers import contract
from badge_bridge.controllers.command_mac import problem
from badge_bridge.keys import card_digest
from badge_bridge.mqtt_client import Will, build_client, credentials
from badge_bridge.sim.outbox import Outbox
from badge_bridge.topics import ANY, CONTROLLER, Topics

if TYPE_CHECKING:
    from badge_bridge.config import SiteConfig
    from badge_bridge.keys import KeyStore

log = logging.getLogger(__name__)

PIN_UNVERIFIABLE_OFFLINE = "pin_unverifiable_offline"
"""Offline reason at a door that needs a PIN: only the bridge holds the PIN key."""
NO_SYNC = "no_sync"
"""Offline reason when no credential sync (or no sync key) is available."""
UNKNOWN_DOOR = "unknown_door"
"""Offline reason for a door the sync does not describe."""

SESSION_EXPIRY_S = 300
"""The broker keeps the sim's subscriptions and queued commands this long across a lost connection."""


@dataclass(frozen=True)
class Reader:
    """A reader wired to the simulated controller."""

    key: str
    door: str
    kind: Literal["card", "keypad", "biometric"] = "card"


@dataclass(frozen=True)
class DemoPerson:
    """A card holder for ``run_demo_traffic``."""

    name: str
    number: str
    fmt: str = "wiegand26"
    pin: str | None = None
    biometric_ref: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SimController:
    """One simulated controller. Construct it, then it connects in the background (``wait_connected``).

    ``readers`` maps reader key -> door key (or lists ``Reader``s); it is only needed by ``present`` calls
    that pass ``door=None`` and by ``run_demo_traffic``. ``clock`` gives device time (tests pass a fixed
    one to check schedules offline). ``heartbeat_s`` starts periodic heartbeats. ``partition``: whose bridge
    instances it follows (None: any bridge of the site); ``brokers``: every broker to try in turn (default:
    ``host``:``port`` alone); ``receipt_timeout_s`` and ``outbox_max``: its outbox's (outbox.py).
    """

    def __init__(
        self,
        key: str,
        host: str,
        port: int,
        prefix: str = "badge-bridge/v1",
        sync_key: bytes | None = None,
        walk_through: bool = True,
        *,
        readers: Mapping[str, str] | Iterable[Reader] | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
        keepalive: int = 10,
        firmware: str = "badge-bridge-sim 1",
        walk_delay_s: float = 0.2,
        walk_fraction: float = 0.4,
        grant_max_age_s: float = 10.0,
        heartbeat_s: float | None = None,
        clock: Callable[[], datetime] = _utcnow,
        partition: str | None = None,
        brokers: Sequence[tuple[str, int]] | None = None,
        receipt_timeout_s: float = 5.0,
        outbox_max: int = 10_000,
    ) -> None:
        self.key = key
        self.sync_key = sync_key
        self.walk_through = walk_through
        self.walk_delay_s = walk_delay_s
        self.walk_fraction = walk_fraction
        self.grant_max_age_s = grant_max_age_s
        self.firmware = firmware
        self.clock = clock
        if readers is None:
            self.readers: dict[str, Reader] = {}
        elif isinstance(readers, Mapping):
            self.readers = {r: Reader(r, d) for r, d in readers.items()}
        else:
            self.readers = {r.key: r for r in readers}

        topics = Topics(prefix)
        self.topic_events = topics.controller_events(key)
        self.topic_status = topics.controller_status(key)
        self.topic_commands = topics.controller_commands(key)
        self.topic_sync = topics.controller_sync(key)
        self.topic_receipts = topics.controller_receipts(key)
        self.topic_bridge_status = topics.bridge_status(partition or ANY)
        self._topics = topics

        self.nonce = secrets.token_hex(4)
        self._seq = itertools.count(1)
        self._started = time.monotonic()
        self._cond = threading.Condition()
        self._closed = False

        # What it has received and what it did; read these from tests (under no lock: lists only grow).
        self.commands: list[contract.Command] = []
        """Every valid command received, in order (a redelivered id is listed once)."""
        self.rejected: list[tuple[str, bytes, str]] = []
        """(topic, payload, error) of messages it could not parse."""
        self.refused: list[tuple[bytes, str]] = []
        """(payload, why) of commands it would not act on: no MAC, a wrong one, a replayed id."""
        self.sent: list[contract.ControllerEvent] = []
        """Every event it published, in order."""
        self.lock_state: dict[str, Literal["locked", "unlocked", "lockdown"]] = {}
        self.contact: dict[str, Literal["opened", "closed"]] = {}
        self.sync: contract.CredentialSync | None = None
        self.bridges: dict[tuple[str, str], bool] = {}
        """(partition, instance) -> online, from their retained status."""
        self.outbox = Outbox(outbox_max, receipt_timeout_s)
        """Events published and not yet receipted."""
        self.connected = False
        self._subscribed = False
        self._sub_mid: int | None = None
        self._forced_offline: bool | None = None
        self._seen_commands: dict[str, bytes] = {}
        """Command id -> a digest of the payload first acted on: a command is acted on once."""
        self._walkers: dict[str, int] = {}
        self._timers: set[threading.Timer] = set()
        self._state = policy.AccessState()
        """Offline only: lockdown and two-person waits (person ids are indexes into the sync entries)."""
        self._pending: set[int] = set()
        self._early_acks: set[int] = set()

        will = Will(self.topic_status, contract.ControllerStatus(online=False).model_dump_json(exclude_none=True))
        self.client = build_client(client_id or key, username=username, password=password, tls=tls_ca is not None,
                                   ca_file=tls_ca, will=will, backoff=(0.2, 2), brokers=brokers or [(host, port)])
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(host, port, keepalive=keepalive,
                                  clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props)
        self.client.loop_start()
        threading.Thread(target=self._republish_forever, name=f"sim-{key}-outbox", daemon=True).start()
        self._heartbeat_thread: threading.Thread | None = None
        if heartbeat_s:
            self._heartbeat_thread = threading.Thread(target=self._heartbeats, args=(heartbeat_s,),
                                                      name=f"sim-{key}-heartbeat", daemon=True)
            self._heartbeat_thread.start()

    # --- lifecycle ---------------------------------------------------------------------------------

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Until connected and subscribed (so a command published from now on reaches it)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.connected and self._subscribed, timeout):
                raise TimeoutError(f"controller {self.key} did not connect within {timeout}s")

    def wait_published(self, timeout: float = 10.0) -> None:
        """Until every publish so far is acknowledged by the broker."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._pending, timeout):
                raise TimeoutError(f"controller {self.key}: {len(self._pending)} publishes not acknowledged")

    def close(self, timeout: float = 5.0) -> None:
        """Orderly shutdown: retained offline status, then DISCONNECT (no last will)."""
        self._closed = True
        self._cancel_timers()
        if self.connected:
            status = contract.ControllerStatus(online=False, ts=self.clock(), firmware=self.firmware)
            self._publish(self.topic_status, status.model_dump_json(exclude_none=True), retain=True)
            try:
                self.wait_published(timeout)
            except TimeoutError:
                log.warning("controller %s: closing with unacknowledged publishes", self.key)
        self.client.disconnect()
        self.client.loop_stop()

    def crash(self) -> None:
        """A power cut: the connection drops without DISCONNECT, so the broker publishes the last will."""
        self._closed = True
        self._cancel_timers()
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        with self._cond:
            self.connected = False
            self._cond.notify_all()

    def __enter__(self) -> SimController:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.close()

    # --- events ------------------------------------------------------------------------------------

    def next_id(self) -> str:
        return f"{self.nonce}.{next(self._seq)}"

    def present(
        self,
        reader: str,
        door: str | None,
        fmt: contract.CardFormat,
        number: str,
        pin: str | None = None,
        biometric: contract.Biometric | Mapping[str, Any] | None = None,
    ) -> str:
        """A card (and maybe a PIN, a biometric match) at a reader. Offline, decides locally first.

        ``door`` is where the reader is (the wire message carries only the reader; the bridge knows the
        wiring); None looks it up in ``readers``."""
        if door is None:
            door = self.readers[reader].door
        if biometric is not None and not isinstance(biometric, contract.Biometric):
            biometric = contract.Biometric.model_validate(biometric)
        now = self.clock()
        offline = None
        if self.offline:
            offline = self.decide_offline(door, fmt, number, biometric, now)
        event = contract.CredentialPresented(
            id=self.next_id(), ts=now, type="credential", reader=reader,
            card=contract.Card(format=fmt, number=number), pin=pin, biometric=biometric, offline=offline)
        self._send(event)
        if offline is not None:
            log.info("controller %s offline: %s at %s -> %s", self.key, reader, door, offline.reason)
            if offline.granted and self.walk_through:
                sync_door = self.sync.doors.get(door) if self.sync else None
                self._walk(door, sync_door.open_time_s if sync_door else 5.0)
        return event.id

    def open_door(self, door: str) -> str:
        self.contact[door] = "opened"
        return self._send(contract.DoorContact(id=self.next_id(), ts=self.clock(), type="door", door=door,
                                               state="opened")).id

    def close_door(self, door: str) -> str:
        self.contact[door] = "closed"
        return self._send(contract.DoorContact(id=self.next_id(), ts=self.clock(), type="door", door=door,
                                               state="closed")).id

    def rex(self, door: str) -> str:
        """Request to exit (the button inside)."""
        return self._send(contract.RequestToExit(id=self.next_id(), ts=self.clock(), type="rex", door=door)).id

    def tamper(self, active: bool, reader: str | None = None) -> str:
        return self._send(contract.Tamper(id=self.next_id(), ts=self.clock(), type="tamper",
                                          state="active" if active else "cleared", reader=reader)).id

    def heartbeat(self) -> str:
        return self._send(contract.Heartbeat(
            id=self.next_id(), ts=self.clock(), type="heartbeat", uptime_s=time.monotonic() - self._started,
            sync_version=self.sync.version if self.sync else None)).id

    def publish_raw(self, payload: bytes | str, topic: str | None = None, qos: int = 1) -> int:
        """Anything at all on the events topic (or ``topic``); returns paho's message id."""
        return self._publish(topic or self.topic_events, payload, qos=qos)

    def _send(self, event: Any) -> Any:
        payload = event.model_dump_json(exclude_none=True)
        if event.type != "heartbeat":
            self.outbox.keep(event.id, payload)
        self._publish(self.topic_events, payload)
        self.sent.append(event)
        return event

    def wait_receipted(self, timeout: float = 30.0) -> None:
        """Until the bridge has receipted every event published so far."""
        try:
            self.wait_for(lambda: not len(self.outbox), timeout)
        except TimeoutError:
            raise TimeoutError(f"controller {self.key}: {len(self.outbox)} events without a receipt") from None

    def _republish(self, everything: bool = False) -> None:
        for payload in self.outbox.due(everything, busy=bool(self._pending)):
            self._publish(self.topic_events, payload)

    def _republish_forever(self) -> None:
        every = min(1.0, self.outbox.timeout_s / 4)
        while not self._closed:
            time.sleep(every)
            if self.connected and not self._closed:
                self._republish()

    def _publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0:
            with self._cond:
                # on_publish may run before publish() returns (paho calls it under its own lock, which is
                # why this lock is not held across publish()).
                if info.mid in self._early_acks:
                    self._early_acks.discard(info.mid)
                else:
                    self._pending.add(info.mid)
        return info.mid

    # --- commands ----------------------------------------------------------------------------------

    def wait_for_command(self, predicate: Callable[[contract.Command], bool] | None = None,
                         timeout: float = 10.0) -> contract.Command:
        """The first command received (so far or within ``timeout``) that satisfies ``predicate``."""
        def find() -> contract.Command | None:
            return next((c for c in self.commands if predicate is None or predicate(c)), None)

        with self._cond:
            found = self._cond.wait_for(find, timeout)
        if found is None:
            raise TimeoutError(f"controller {self.key}: no matching command within {timeout}s "
                               f"(received: {[c.type for c in self.commands]})")
        return found

    def wait_for_sync(self, predicate: Callable[[contract.CredentialSync], bool] | None = None,
                      timeout: float = 10.0) -> contract.CredentialSync:
        def ok() -> bool:
            return self.sync is not None and (predicate is None or predicate(self.sync))

        with self._cond:
            if not self._cond.wait_for(ok, timeout):
                raise TimeoutError(f"controller {self.key}: no credential sync within {timeout}s")
            assert self.sync is not None
            return self.sync

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Until ``condition()`` (checked on every state change) holds."""
        with self._cond:
            if not self._cond.wait_for(condition, timeout):
                raise TimeoutError(f"controller {self.key}: condition not met within {timeout}s")

    def _apply(self, cmd: contract.Command) -> None:
        age = (_utcnow() - cmd.ts).total_seconds()  # real time: a test clock must not void grants
        if isinstance(cmd, (contract.Grant, contract.Unlock)) and age > self.grant_max_age_s:
            # an opening that waited in the broker, or one replayed after a reboot emptied the id memory
            log.warning("controller %s: %s %s is %.0fs old, ignored", self.key, cmd.type, cmd.id, age)
        elif isinstance(cmd, contract.Grant):
            if self.walk_through and not self.offline:
                self._walk(cmd.door, cmd.open_time_s)
        elif isinstance(cmd, contract.Unlock):
            self.lock_state[cmd.door] = "unlocked"
            if cmd.duration_s is not None:
                self._later(cmd.duration_s, self._relock, cmd.door)
        elif isinstance(cmd, contract.Lock):
            if self.lock_state.get(cmd.door) != "lockdown":
                self.lock_state[cmd.door] = "locked"
        elif isinstance(cmd, contract.Lockdown):
            for door in cmd.doors:
                self.lock_state[door] = "lockdown" if cmd.active else "locked"
                if cmd.active:
                    self._state.lockdown_doors.add(door)
                else:
                    self._state.lockdown_doors.discard(door)

    def _relock(self, door: str) -> None:
        with self._cond:
            if self.lock_state.get(door) == "unlocked":
                self.lock_state[door] = "locked"
            self._cond.notify_all()

    # --- walking through ---------------------------------------------------------------------------

    def _walk(self, door: str, open_time_s: float) -> None:
        """Someone pushes the door open shortly after the release and it closes behind them."""
        self._later(self.walk_delay_s, self._walk_in, door, open_time_s)

    def _walk_in(self, door: str, open_time_s: float) -> None:
        with self._cond:
            self._walkers[door] = self._walkers.get(door, 0) + 1
            first = self._walkers[door] == 1 and self.contact.get(door) != "opened"
        if first:
            self.open_door(door)
        self._later(max(0.05, open_time_s * self.walk_fraction), self._walk_out, door)

    def _walk_out(self, door: str) -> None:
        with self._cond:
            self._walkers[door] -= 1
            last = self._walkers[door] == 0
        if last:
            self.close_door(door)
        with self._cond:
            self._cond.notify_all()

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        if self._closed:
            return

        def run() -> None:
            with self._cond:
                self._timers.discard(timer)
            if not self._closed:
                fn(*args)

        timer = threading.Timer(delay, run)
        timer.daemon = True
        with self._cond:
            self._timers.add(timer)
        timer.start()

    def _cancel_timers(self) -> None:
        with self._cond:
            timers, self._timers = list(self._timers), set()
        for t in timers:
            t.cancel()

    # --- offline decisions -------------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """Deciding alone: forced by ``go_offline()``, else when the broker connection is down or the
        retained bridge status says the bridge is offline."""
        if self._forced_offline is not None:
            return self._forced_offline
        return not self.connected or self.bridge_online is False

    @property
    def bridge_online(self) -> bool | None:
        """Whether any bridge instance it follows says it is online and active; None until one has said
        anything."""
        with self._cond:
            return any(self.bridges.values()) if self.bridges else None

    def go_offline(self) -> None:
        """Decide locally from now on, whatever the bridge status says."""
        self._forced_offline = True

    def go_online(self) -> None:
        """Leave decisions to the bridge, whatever the bridge status says."""
        self._forced_offline = False

    def follow_bridge(self) -> None:
        """Back to the default: offline exactly when the bridge or the broker is away."""
        self._forced_offline = None

    def decide_offline(self, door: str, fmt: str, number: str, biometric: contract.Biometric | None,
                       now: datetime) -> contract.OfflineDecision:
        """What the controller decides alone, from the last credential sync (see CredentialSync)."""
        sync = self.sync
        if sync is None or self.sync_key is None:
            return contract.OfflineDecision(granted=False, reason=NO_SYNC)

        def result(granted: bool, reason: str) -> contract.OfflineDecision:
            return contract.OfflineDecision(granted=granted, reason=reason, sync_version=sync.version)

        sync_door = sync.doors.get(door)
        if sync_door is None:
            return result(False, UNKNOWN_DOOR)
        digest = card_digest(self.sync_key, fmt, number)
        index, entry = next(((i, e) for i, e in enumerate(sync.entries) if e.card == digest), (-1, None))
        credential = None
        if entry is not None:
            credential = policy.Credential(
                id=index, person_id=index, valid_from=entry.valid_from, valid_until=entry.valid_until,
                lockdown_exempt=entry.lockdown_exempt,
                doors={d: tuple(_schedule(k, sync.schedules[k]) for k in keys if k in sync.schedules)
                       for d, keys in entry.doors.items()})
        verified = {policy.Factor.CARD}
        failed: set[policy.Factor] = set()
        if biometric is not None:
            ok = (biometric.match and entry is not None and entry.biometric_ref is not None
                  and biometric.ref == entry.biometric_ref)
            (verified if ok else failed).add(policy.Factor.BIOMETRIC)
        request = policy.Request(
            door=policy.Door(key=door, factors=frozenset(policy.Factor(f) for f in sync_door.factors),
                             two_person=sync_door.two_person, two_person_window_s=sync_door.two_person_window_s),
            now=now, factors=frozenset(verified), failed=frozenset(failed))
        with self._cond:
            decision = policy.decide(credential, request, self._state)
            self._state.record(credential, request, decision)
        reason = str(decision.reason)
        if decision.reason in (policy.Reason.PIN_REQUIRED, policy.Reason.PIN_WRONG):
            reason = PIN_UNVERIFIABLE_OFFLINE
        return result(decision.granted, reason)

    # --- paho callbacks (the network thread) --------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("controller %s: connect refused: %s", self.key, reason)
            return
        # The SUBACK is handled on this same thread, after this callback returns: no race on _sub_mid.
        _, mid = client.subscribe([(self.topic_commands, 1), (self.topic_sync, 1), (self.topic_bridge_status, 1),
                                   (self.topic_receipts, 1)])
        with self._cond:
            self._subscribed, self._sub_mid = False, mid
        status = contract.ControllerStatus(online=True, ts=self.clock(), firmware=self.firmware)
        self._publish(self.topic_status, status.model_dump_json(exclude_none=True), retain=True)
        with self._cond:
            self.connected = True
            self._cond.notify_all()
        self._republish(everything=True)  # what the broker may have lost, or what the last one still holds
        log.info("controller %s connected to %s:%s (session present: %s)", self.key, client.host, client.port,
                 flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.warning("controller %s: subscription refused: %s", self.key, reasons)
            return
        with self._cond:
            if mid == self._sub_mid:
                self._subscribed = True
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            self.connected = False
            self._subscribed = False
            self._cond.notify_all()
        if not self._closed:
            log.info("controller %s disconnected (%s); reconnecting", self.key, reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._early_acks.add(mid)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == self.topic_commands:
                self._on_command(bytes(msg.payload), redelivered=bool(msg.dup))
            elif msg.topic == self.topic_sync:
                self._on_sync(bytes(msg.payload))
            elif msg.topic == self.topic_receipts:
                self._on_receipt(bytes(msg.payload))
            elif (instance := self._topics.bridge_status_of(msg.topic)) is not None:
                status = contract.BridgeStatus.model_validate_json(msg.payload) if msg.payload else None
                # a standby decides nothing: only an active bridge (or one that names no role) answers cards
                online = status is not None and status.online and status.role != "standby"
                with self._cond:
                    self.bridges[instance] = online
                    self._cond.notify_all()
        except (ValidationError, ValueError) as exc:
            log.warning("controller %s: bad message on %s: %s", self.key, msg.topic, exc)
            with self._cond:
                self.rejected.append((msg.topic, bytes(msg.payload), str(exc)))
                self._cond.notify_all()

    def _on_command(self, payload: bytes, redelivered: bool) -> None:
        if len(payload) > contract.MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {contract.MAX_PAYLOAD}")
        cmd = contract.command.validate_json(payload)
        why = problem(payload, self.sync_key) if self.sync_key else "no sync key provisioned to check MACs with"
        with self._cond:
            digest = hashlib.blake2b(payload, digest_size=8).digest()
            if why is None and cmd.id in self._seen_commands:
                if redelivered or self._seen_commands[cmd.id] != digest:
                    # the broker's redelivery, or the bridge deciding the same request again after a
                    # failover (same id, a new MAC'd message): acted on once already
                    return
                why = f"replayed id {cmd.id}"  # the very bytes again, not from the broker's session: captured
            if why is None:
                self._seen_commands[cmd.id] = digest
        if why is not None:
            self._refuse(payload, why)
            return
        self._apply(cmd)
        with self._cond:
            self.commands.append(cmd)
            self._cond.notify_all()

    def _on_receipt(self, payload: bytes) -> None:
        """Forgets the events a receipt names, if the bridge sealed it: a forged one would lose them."""
        receipt = contract.Receipt.model_validate_json(payload)
        why = problem(payload, self.sync_key) if self.sync_key else "no sync key provisioned to check MACs with"
        if why is not None:
            self._refuse(payload, f"receipt: {why}")
            return
        self.outbox.receipted(receipt.ids)
        with self._cond:
            self._cond.notify_all()

    def _on_sync(self, payload: bytes) -> None:
        """Keeps the list it has unless the new one carries a valid MAC and is newer: a forged list, an unsigned
        clear or an older list brought back (with its revoked cards) is refused like a forged command."""
        sync = contract.CredentialSync.model_validate_json(payload) if payload else None
        why = (("no sync key provisioned to check MACs with" if not self.sync_key else problem(payload, self.sync_key))
               if payload else "an empty retained message: nothing proves the bridge cleared the list")
        with self._cond:
            if why is None and sync is not None and self.sync is not None and sync.ts < self.sync.ts:
                why = f"an older credential sync ({sync.ts.isoformat()}) than the one in use"
            if why is None:
                self.sync = sync
                self._cond.notify_all()
        if why is not None:
            self._refuse(payload, f"sync: {why}")
            return
        log.info("controller %s: credential sync %s", self.key, sync.version if sync else "cleared")

    def _refuse(self, payload: bytes, why: str) -> None:
        """Not acted on; reported to the bridge as a tamper (someone else speaks on this controller's topic)."""
        log.warning("controller %s: command refused (%s)", self.key, why)
        with self._cond:
            self.refused.append((payload, why))
            self._cond.notify_all()
        if self.connected:
            self.tamper(True)

    def _heartbeats(self, every: float) -> None:
        while not self._closed:
            time.sleep(every)
            if self.connected and not self._closed:
                self.heartbeat()


def _schedule(key: str, s: contract.SyncSchedule) -> policy.Schedule:
    return policy.Schedule(key=key, tz=ZoneInfo(s.tz), intervals=tuple((day, start, end) for day, start, end in s.intervals),
                           holidays=frozenset(s.holidays))


# --- the demo ----------------------------------------------------------------------------------------


def controllers_from_site(config: SiteConfig, keys: KeyStore | None = None, host: str | None = None,
                          port: int | None = None, **kwargs: Any) -> dict[str, SimController]:
    """One SimController per ``kind = "mqtt"`` controller of the site, wired to its readers, with its sync
    key from the key store, on its own broker account (over TLS when the site's is). Connects to the site's
    broker unless ``host``/``port`` say otherwise."""
    out = {}
    tls_ca = str(config.path(config.mqtt.ca_file)) if config.mqtt.tls and config.mqtt.ca_file else None
    for c in config.controllers:
        if c.kind != "mqtt":
            continue
        readers = [Reader(r.key, r.door, r.kind) for r in config.readers if r.controller == c.key]
        username, password = credentials(config, CONTROLLER, c.key)
        out[c.key] = SimController(
            c.key, host or config.mqtt.host, port or config.mqtt.port, config.mqtt.topic_prefix,
            sync_key=keys.sync_key(c.key) if keys is not None else None, readers=readers, username=username,
            password=password, tls_ca=tls_ca, partition=config.partition_of(c),
            brokers=None if host or port else config.mqtt.endpoints(), **kwargs)
    return out


def _person(p: DemoPerson | Sequence[Any]) -> DemoPerson:
    """Accepts ``demo.DEMO_PEOPLE`` rows: (name, levels, card, pin)."""
    if isinstance(p, DemoPerson):
        return p
    name, _levels, card, pin = p
    return DemoPerson(name=name, number=card, pin=pin)


def run_demo_traffic(controllers: Mapping[str, SimController] | Iterable[SimController],
                     people: Iterable[DemoPerson | Sequence[Any]], stop_event: threading.Event, *,
                     interval: tuple[float, float] = (2.0, 6.0), rng: random.Random | None = None) -> int:
    """Until ``stop_event`` is set: every few seconds a random person presents their card at a random
    reader (with their PIN at keypads, their biometric at biometric readers); now and then a stranger's
    card, a wrong PIN or someone leaving by the exit button. Returns how many actions it made."""
    rng = rng or random.Random()
    sims = list(controllers.values()) if isinstance(controllers, Mapping) else list(controllers)
    spots = [(sim, reader) for sim in sims for reader in sim.readers.values()]
    crowd = [_person(p) for p in people]
    if not spots or not crowd:
        raise ValueError("run_demo_traffic needs controllers with readers and at least one person")
    count = 0
    while not stop_event.wait(rng.uniform(*interval)):
        sim, reader = rng.choice(spots)
        person = rng.choice(crowd)
        roll = rng.random()
        try:
            if roll < 0.08:
                sim.rex(reader.door)
            elif roll < 0.15:
                sim.present(reader.key, reader.door, "wiegand26", f"99:{rng.randint(1000, 9999)}")
            else:
                pin = None
                if reader.kind == "keypad":
                    pin = person.pin or "0000"
                    if roll > 0.95:
                        pin = "0000" if pin != "0000" else "1111"  # a typo
                biometric = None
                if reader.kind == "biometric":
                    biometric = contract.Biometric(match=True, ref=person.biometric_ref or person.name, score=0.93)
                sim.present(reader.key, reader.door, person.fmt, person.number, pin=pin,  # type: ignore[arg-type]
                            biometric=biometric)
            count += 1
        except Exception:  # the demo goes on
            log.exception("demo traffic at %s", reader.key)
    return count
