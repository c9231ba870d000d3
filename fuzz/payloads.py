"""Structure-aware MQTT payloads: every inbound contract message and every esp-rfid message, valid, then
mutated the way an attacker or a broken device would (docs/fuzz.md lists the mutations).

Values are mutated as a JSON tree, then serialized by ``dump``, which can also write what ``json.dumps``
cannot: 5000-digit integers, NaN, duplicate keys, unbalanced nesting (``Raw`` tokens, ``Pairs``). Some
mutations act on the bytes after that: truncation, flipped bytes, invalid UTF-8, padding past the size limit.
A generated payload never carries the harness's enrolled cards (``site.Cards``), so a grant it causes is a
grant caused by garbage.
"""

from __future__ import annotations

import json
import random
import string
from collections import deque
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from badge_bridge.cards import encode_wiegand
from badge_bridge.controllers.contract import MAX_PAYLOAD

PREFIX = "badge-bridge/v1"
ESP_TOPIC = "esp-noc/send"


@dataclass(frozen=True)
class Raw:
    """JSON text written as is."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object that may repeat a key."""

    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Payload:
    topic: str
    data: bytes
    label: str
    """Which message it started from and what was done to it, e.g. ``credential+swap_type(card)+truncate``."""


def dump(value: Any, ascii_only: bool = True) -> str:
    """JSON text of a tree of dicts, lists, scalars, ``Raw`` and ``Pairs``."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs | dict):
        items = value.items if isinstance(value, Pairs) else value.items()
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=ascii_only)}:{dump(v, ascii_only)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# --- valid messages ----------------------------------------------------------------------------------


class Seeds:
    """Fresh valid messages, one builder per message kind and topic."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"fz{self.rng.getrandbits(32):08x}.{self.n}"

    def _now(self) -> str:
        return iso(datetime.now(UTC))

    def _base(self, kind: str) -> dict[str, Any]:
        return {"v": 1, "id": self._id(), "ts": self._now(), "type": kind}

    def card(self) -> dict[str, Any]:
        """A card no one holds: facility codes below the victim's (50 and up), never the probe's text."""
        fc, number = self.rng.randrange(1, 50), self.rng.randrange(0, 65536)
        kind = self.rng.randrange(3)
        if kind == 0:
            return {"format": "wiegand26", "number": f"{fc}:{number}"}
        if kind == 1:
            data, bits = encode_wiegand("wiegand26", f"{fc}:{number}")
            return {"raw_hex": data.hex(), "bits": bits}
        return {"format": "ascii", "number": f"FZ{self.rng.getrandbits(40):010X}"}

    def credential(self, controller: str = "ctl-lobby", reader: str = "main-in") -> dict[str, Any]:
        msg = {**self._base("credential"), "reader": reader, "card": self.card()}
        if self.rng.random() < 0.3:
            msg["pin"] = "4711"
        if self.rng.random() < 0.2:
            msg["biometric"] = {"match": True, "ref": "ada", "score": 0.93}
        if self.rng.random() < 0.2:
            msg["offline"] = {"granted": self.rng.random() < 0.5, "reason": "sync", "sync_version": "v1"}
        return msg

    def door(self) -> dict[str, Any]:
        return {**self._base("door"), "door": "main-entrance", "state": self.rng.choice(["opened", "closed"])}

    def rex(self) -> dict[str, Any]:
        return {**self._base("rex"), "door": "main-entrance"}

    def tamper(self) -> dict[str, Any]:
        return {**self._base("tamper"), "state": self.rng.choice(["active", "cleared"]), "reader": "main-out"}

    def heartbeat(self) -> dict[str, Any]:
        return {**self._base("heartbeat"), "uptime_s": 3600.5, "sync_version": "v1"}

    def controller_status(self) -> dict[str, Any]:
        return {"v": 1, "online": self.rng.random() < 0.8, "ts": self._now(), "firmware": "2.1.0"}

    def console(self) -> dict[str, Any]:
        kind = self.rng.choice(["unlock", "lock", "lockdown", "lift_lockdown"])
        msg = {**self._base(kind), "user": "fuzz", "reason": "fuzzing the bridge"}
        if kind in ("unlock", "lock"):
            msg["door"] = self.rng.choice(["main-entrance", "noc", "cage-7"])
        elif self.rng.random() < 0.5:
            msg["area"] = "lobby"
        if kind == "unlock":
            msg["duration_s"] = 2.0
        return msg

    def motion(self) -> dict[str, Any]:
        now = self._now()
        return {**self._base("motion"), "zone": "main-entrance", "state": self.rng.choice(["start", "update", "end"]),
                "started": now, "boxes": [[10, 20, 30, 40]], "area": 0.25, "objects": 1, "peak_objects": 1}

    def evidence(self) -> dict[str, Any]:
        now = self._now()
        item = {"kind": "snapshot", "sha256": f"{self.rng.getrandbits(256):064x}", "media_type": "image/jpeg",
                "bytes": 2048, "frames": 1, "start": now, "end": now}
        return {**self._base("evidence"), "event": f"ctl-lobby:{self._id()}", "items": [item], "error": None}

    def faces(self) -> dict[str, Any]:
        face = {"frame": 0, "t": self._now(), "box": [1, 2, 3, 4], "encoding": [0.01] * 128}
        return {**self._base("faces"), "event": f"ctl-lobby:{self._id()}", "frames": 3, "faces": [face]}

    def camera_status(self) -> dict[str, Any]:
        return {"v": 1, "online": True, "ts": self._now(), "state": "online", "reason": "", "fps": 10.0,
                "width": 640, "height": 480}

    # esp-rfid 2.x, as src/mqtt.esp publishes (badge_bridge/controllers/esp_rfid.py)

    def esp_access(self) -> dict[str, Any]:
        return {"cmd": "log", "uid": f"{self.rng.getrandbits(32):08x}", "pincode": "4711", "username": "Fuzz",
                "access": self.rng.choice(["Always", "Denied", "Disabled", "Expired", "Wrong pin code"]),
                "time": self._epoch(), "doorName": "noc", "type": "access",
                "isKnown": self.rng.choice(["true", "false"]), "hostname": "esp-noc"}

    def esp_heartbeat(self) -> dict[str, Any]:
        return {"type": "heartbeat", "time": self._epoch(), "uptime": 3600, "ip": "10.20.0.31", "hostname": "esp-noc"}

    def esp_boot(self) -> dict[str, Any]:
        return {"type": "boot", "time": self._epoch(), "uptime": "0", "ip": "10.20.0.31", "hostname": "esp-noc"}

    def esp_event(self) -> dict[str, Any]:
        src, desc = self.rng.choice([("door", "Door Open"), ("door", "Door Closed"), ("tamper", "Door was tampered!"),
                                     ("doorbell", "Doorbell ringing"), ("rfid", "Unknown rfid tag is scanned")])
        return {"type": "INFO", "src": src, "desc": desc, "data": "", "time": self._epoch(), "cmd": "event",
                "hostname": "esp-noc"}

    def esp_ack(self) -> dict[str, Any]:
        return {"type": self.rng.choice(["adduser", "deletuid", "getconf"]), "ip": "10.20.0.31", "hostname": "esp-noc"}

    def esp_userfile(self) -> dict[str, Any]:
        return {"cmd": "adduser", "doorip": "10.20.0.31", "uid": "04a1b2c3", "user": "Fuzz", "acctype": 1,
                "validsince": 0, "validuntil": 4294967295}

    def _epoch(self) -> int:
        return int(datetime.now(UTC).timestamp()) + self.rng.choice([0, 0, 0, -3600, 86401])


def _controller_events(s: Seeds) -> tuple[str, dict[str, Any]]:
    builder = s.rng.choice([s.credential, s.credential, s.door, s.rex, s.tamper, s.heartbeat])
    return f"{PREFIX}/controllers/ctl-lobby/events", builder()


def _foreign_controller(s: Seeds) -> tuple[str, dict[str, Any]]:
    """Contract messages on the topics of controllers that do not speak the contract over MQTT, or of none."""
    controller, reader = s.rng.choice([("esp-noc", "noc-in"), ("ctl-hall-a", "hall-a-in"), ("ctl-nowhere", "main-in"),
                                       ("Ærø", "main-in"), ("ctl lobby", "main-in"), ("ctl-lobby\u202e", "main-in")])
    return f"{PREFIX}/controllers/{controller}/events", s.credential(controller, reader)


TEMPLATES: list[tuple[str, float, Callable[[Seeds], tuple[str, dict[str, Any]]]]] = [
    ("controller-event", 30, _controller_events),
    ("foreign-controller", 4, _foreign_controller),
    ("controller-status", 4, lambda s: (f"{PREFIX}/controllers/ctl-lobby/status", s.controller_status())),
    ("console", 6, lambda s: (f"{PREFIX}/console/commands", s.console())),
    ("camera-event", 12, lambda s: (f"{PREFIX}/cameras/cam-lobby/events",
                                    s.rng.choice([s.motion, s.motion, s.evidence, s.faces])())),
    ("camera-status", 3, lambda s: (f"{PREFIX}/cameras/{s.rng.choice(['cam-lobby', 'cam-outside'])}/status",
                                    s.camera_status())),
    ("esp-rfid", 30, lambda s: (ESP_TOPIC, s.rng.choice([s.esp_access, s.esp_access, s.esp_heartbeat, s.esp_boot,
                                                          s.esp_event, s.esp_event, s.esp_ack, s.esp_userfile])())),
]


# --- mutations ---------------------------------------------------------------------------------------

HUGE_INT = Raw("9" * 5000)
HUGE = [HUGE_INT, Raw("-" + "1" * 5000), "A" * 20_000, "9" * 5000, Raw("[" * 5000 + "]" * 5000), Raw("[" * 5000),
        Raw('{"a":' * 3000 + "1" + "}" * 3000), ["x"] * 5000]
"""Few of these, or a million payloads would be gigabytes (while dead letters keep whole payloads)."""
SPECIAL_NUMBERS = [Raw("1e999"), Raw("NaN"), Raw("Infinity"), Raw("-0.0"),
                   Raw("1e-400"), Raw("0x10"), Raw("01"), -1, 0, 2**63, 2**64 + 1, 1.5, 1e308, -1e308, 4294967296]
SPECIAL_STRINGS = [
    "", " ", "\ud800", "\udfff", "a\ud800b", "\u0000", "x\u0000y", "\x01\x1b[31m\x7f", "\r\n", "\t",
    "١٢:٣٤٥٦", "１２:３４５６", "१२:३४", "12:3456 ", " 12:3456", "12:3456\n", "+12:3456", "12:3456\u200b",
    "\u202eevil", "😀" * 10, "A" * 300, "9" * 300, "%s%n%x", "'; DROP TABLE audit_entry;--", "../../etc/passwd",
    "ctl-lobby/events", "#", "+", "$SYS", "null", "true", "<redacted>", "pin", "4711",
]
SPECIAL_TS = [
    "2025-01-01T00:00:00", "2025-01-01T00:00:00.123456", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z", "2025-13-45T25:61:61Z", "2025-06-30T23:59:60Z", "2025-01-01", "2025-01-01 00:00:00Z",
    "2025-01-01T00:00:00+14:00", "2025-01-01T00:00:00-23:59", "2025-01-01T00:00:00.1234567890Z", "20250101T000000Z",
    "２０２５-01-01T00:00:00Z", 1718000000, 1718000000.5, "now",
]
SPECIAL_V = [True, 1.0, "1", 2, 0, None, Raw("1e0"), Raw("1.00"), -1, [1], {"v": 1}]
WEIRD_KEYS = ["\ud800", "\u0000", "pin", "PIN", "p\u0069n", "pincode", "password", "template", "encoding", "", " ",
              "v", "id", "ts", "type", "__class__", "constructor", "a" * 10_000, "\u202e", "é"]
NON_JSON_WITH_PIN = [
    b'pin=4711&card=12:3456', b'{"type":"credential","pin":"4711",', b"{'pin': '4711'}", b'"pin":"4711"',
    b'<credential pin="4711"/>', b'{"pin":"4711"} trailing', b'\xff\xfe{"pin":"4711"}', b'{"pin":4711,"card":',
    b'{"card":{"number":"12:3456"},"pin":"4711"', b'PIN: 4711', b'{"PIN" : "4711"}x', b'{"pincode":"4711"',
]
TIME_KEYS = ("ts", "started", "t", "start", "end", "time")


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside dicts and lists (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def _set(value: Any, path: tuple[Any, ...], new: Any) -> None:
    _get(value, path[:-1])[path[-1]] = new


class Mutator:
    """Payloads for the whole contract and esp-rfid, valid or mutated; deterministic for a seed."""

    def __init__(self, seed: int, *, keep_valid: float = 0.08, replay: float = 0.03) -> None:
        self.rng = random.Random(seed)
        self.seeds = Seeds(self.rng)
        self.keep_valid = keep_valid
        self.replay = replay
        self.recent: deque[Payload] = deque(maxlen=512)
        self._weights = [w for _, w, _ in TEMPLATES]
        self._tree_ops: list[tuple[str, Callable[[Any, tuple[Any, ...]], Any]]] = [
            ("swap_type", self._swap_type), ("special_string", lambda m, p: self.rng.choice(SPECIAL_STRINGS)),
            ("special_number", lambda m, p: self.rng.choice(SPECIAL_NUMBERS)), ("delete", self._delete),
        ]

    def next(self) -> Payload:
        if self.recent and self.rng.random() < self.replay:
            old = self.rng.choice(self.recent)
            return Payload(old.topic, old.data, f"replay[{old.label}]")
        name, = self.rng.choices([t[0] for t in TEMPLATES], self._weights)
        topic, msg = next(b for n, _, b in TEMPLATES if n == name)(self.seeds)
        labels = [name + ":" + str(msg.get("type", "status"))]
        mutate = self.rng.random() >= self.keep_valid
        if mutate:
            for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
                msg, label = self._mutate_tree(msg)
                labels += [label] if label else []
        data = dump(msg, ascii_only=self.rng.random() < 0.7).encode("utf-8", "surrogatepass")
        if mutate and self.rng.random() < 0.25:
            data, label = self._mutate_bytes(data)
            labels.append(label)
        payload = Payload(topic, data, "+".join(labels))
        self.recent.append(payload)
        return payload

    # --- on the tree ---

    def _mutate_tree(self, msg: Any) -> tuple[Any, str]:
        if not isinstance(msg, dict):
            return msg, ""
        r = self.rng.random()
        if r < 0.10:
            return {**msg, "v": self.rng.choice(SPECIAL_V)}, "v"
        if r < 0.20:
            key = self.rng.choice([k for k in TIME_KEYS if k in msg] or ["ts"])
            return {**msg, key: self._special_time(msg.get(key))}, f"time({key})"
        if r < 0.26:
            return {k: v for k, v in msg.items() if k != "v"}, "no_v"
        if r < 0.34:
            key = self.rng.choice(WEIRD_KEYS)
            return {**msg, key: self.rng.choice([1, "4711", None, {"pin": "4711"}, "\ud800"])}, f"add_key({key[:8]!r})"
        if r < 0.38 and msg:
            items = tuple(msg.items())
            k, _ = self.rng.choice(items)
            return Pairs(items + ((k, self._swap_type(msg, (k,)),),)), f"duplicate_key({k})"
        if r < 0.44 and isinstance(msg.get("card"), dict):
            return self._card(msg), "card"
        if r < 0.47:
            return self.rng.choice([[], "credential", 1, None, [msg], True]), "not_an_object"
        if r < 0.50:
            key = self.rng.choice(WEIRD_KEYS)
            return {key: self.rng.choice([1, "4711", None, "\ud800"])}, f"weird_object({key[:8]!r})"
        paths = _paths(msg)
        if not paths:
            return msg, ""
        path = self.rng.choice(paths)
        name, op = (self.rng.choice(self._tree_ops) if self.rng.random() < 0.95
                    else ("huge", lambda m, p: self.rng.choice(HUGE)))
        if name == "delete":
            return op(msg, path), f"delete({path[-1]})"
        copy = deepcopy(msg)
        try:
            _set(copy, path, op(copy, path))
        except (KeyError, IndexError, TypeError):
            return msg, ""
        return copy, f"{name}({'.'.join(map(str, path))})"

    def _delete(self, msg: Any, path: tuple[Any, ...]) -> Any:
        copy = deepcopy(msg)
        parent = _get(copy, path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, list) and parent:
            parent.pop(path[-1])
        return copy

    def _swap_type(self, msg: Any, path: tuple[Any, ...]) -> Any:
        old = _get(msg, path)
        choices: list[Any] = [None, True, False, 0, -1, 1.5, "", "x", [], {}, [old], {"value": old}, str(old)]
        return self.rng.choice([c for c in choices if type(c) is not type(old)] or choices)

    def _special_time(self, old: Any) -> Any:
        now = datetime.now(UTC)
        if isinstance(old, int):  # esp-rfid epoch seconds
            return self.rng.choice([0, -1, 999_999_999, 1_000_000_000, 1_514_764_799, int(now.timestamp()) + 86_401,
                                    int(now.timestamp()) * 1000, 2**31, 2**32, HUGE_INT, 1.5, "1718000000", True])
        return self.rng.choice([
            *SPECIAL_TS, iso(now + timedelta(seconds=31)), iso(now + timedelta(minutes=4)),
            iso(now + timedelta(minutes=6)), iso(now + timedelta(days=1)), iso(now - timedelta(days=3650)),
            now.replace(tzinfo=None).isoformat(), now.isoformat().replace("+00:00", "+23:59"),
        ])

    def _card(self, msg: dict[str, Any]) -> dict[str, Any]:
        card = dict(msg["card"])
        choice = self.rng.randrange(8)
        if choice == 0:
            card = {"raw_hex": self.rng.choice(["abc", "a", "0", "zz", "", "0" * 17, "ABCDEF1", "4" * 15]),
                    "bits": self.rng.choice([26, 34, 37, 25, 64, 65, 0])}
        elif choice == 1:
            card = {"format": "wiegand26", "number": self.rng.choice(SPECIAL_STRINGS[10:18])}
        elif choice == 2:
            card = {"format": "ascii",
                    "number": self.rng.choice(["A\n", "A B", "\x7f", "é", "A" * 65, "\u0000", "a\ud800"])}
        elif choice == 3:
            card = {**card, "format": "wiegand26", "number": "12:3456", "raw_hex": "0123", "bits": 26}
        elif choice == 4:
            card = {"format": self.rng.choice(["wiegand34", "wiegand37", "wiegand99", "WIEGAND26"]),
                    "number": f"{self.rng.randrange(1, 50)}:{self.rng.randrange(70000)}"}
        elif choice == 5:
            card = {"raw_hex": f"{self.rng.getrandbits(64):016x}", "bits": self.rng.choice([26, 34, 37])}
        elif choice == 6:
            card = {"format": "wiegand26", "number": f"{self.rng.randrange(1, 50)}:{self.rng.randrange(65536)}",
                    "bits": Raw("26.0")}
        else:
            card = {}
        return {**msg, "card": card}

    # --- on the bytes ---

    def _mutate_bytes(self, data: bytes) -> tuple[bytes, str]:
        r = self.rng.random()
        if r < 0.25 and data:
            return data[: self.rng.randrange(len(data))], "truncate"
        if r < 0.45:
            buf = bytearray(data or b" ")
            for _ in range(self.rng.randint(1, 8)):
                buf[self.rng.randrange(len(buf))] = self.rng.randrange(256)
            return bytes(buf), "flip"
        if r < 0.55:
            at = self.rng.randrange(len(data) + 1)
            return data[:at] + self.rng.randbytes(self.rng.randint(1, 16)) + data[at:], "insert"
        if r < 0.70:
            return self.rng.choice(NON_JSON_WITH_PIN), "non_json_pin"
        if r < 0.72:
            size = self.rng.choice([MAX_PAYLOAD + 1, MAX_PAYLOAD * 2, 64 * 1024]) if self.rng.random() < 0.98 \
                else 1_000_000
            return data + b" " * max(0, size - len(data)), f"oversized({size})"
        if r < 0.80:
            return self.rng.randbytes(self.rng.randint(0, 256)), "random"
        if r < 0.84:
            return b"", "empty"
        if r < 0.88:
            return b"\xef\xbb\xbf" + data, "bom"
        if r < 0.92:
            return data.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass"), "utf16"
        if r < 0.96:
            return data.replace(b'"', b'"\xc0\xa2', 1), "overlong_utf8"
        return data + data, "doubled"


def printable(data: bytes, limit: int = 200) -> str:
    """A short readable form of a payload for reports."""
    text = data[:limit].decode("utf-8", "backslashreplace")
    text = "".join(ch if ch in string.printable and ch not in "\r\x0b\x0c" else repr(ch)[1:-1] for ch in text)
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")
