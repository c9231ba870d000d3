"""esp-rfid translation: payloads exactly as the firmware builds them, each mapped; every malformed one refused.

Source references are to github.com/esprfid/esp-rfid: src/mqtt.esp at 6cf70f2a (VERSION "2.0.0") unless
another commit is named; line numbers are that file's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badge_bridge.controllers import contract as c
from badge_bridge.controllers.esp_rfid import (
    UINT32_MAX,
    EspRfidError,
    EspUser,
    encode,
    parse,
    sync_payloads,
    users_version,
)
from badge_bridge.topics import esp_rfid as topics

CTL, DOOR, READER, HOST, IP = "esp-noc", "noc", "noc-in", "esp-noc", "10.0.0.7"
RECEIVED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
T = int(RECEIVED.timestamp()) - 30
"""The device's time: integer epoch seconds (``time_t``)."""


def raw(fields: dict[str, Any]) -> bytes:
    """As ArduinoJson's serializeJson writes it: insertion order, no spaces."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def run(payload: bytes | dict[str, Any], **kw: Any) -> list[Any]:
    data = raw(payload) if isinstance(payload, dict) else payload
    return parse(data, controller=kw.pop("controller", CTL), door=DOOR, reader=READER,
                 received=kw.pop("received", RECEIVED), **kw)


def access(uid: str = "04a1b2c3", access: Any = "Always", username: str = "Ann", known: str = "true",
           time: Any = T, *, log: bool = False, pincode: str | None = "") -> dict[str, Any]:
    """mqtt.esp:316-344 mqttPublishAccess (single relay), in its insertion order."""
    msg: dict[str, Any] = {"cmd": "log"} if log else {}  # :319-322, with "send events over MQTT" on
    msg["uid"] = uid  # :324
    if pincode is not None:  # :325 root["pincode"] = pincode; absent at 88d2199e
        msg["pincode"] = pincode
    msg |= {"username": username, "access": access, "time": time,  # :326-329
            "doorName": "noc",  # :331
            "type": "access", "isKnown": known, "hostname": HOST}  # :335-337 (not in Home Assistant mode)
    return msg


def multi(access_list: list[str]) -> dict[str, Any]:
    """mqtt.esp:346-389, several relays: access and doorName are arrays, one entry per relay."""
    return {"access": access_list, "doorName": ["noc", "cage"][: len(access_list)], "uid": "04a1b2c3",
            "pincode": "", "username": "Ann", "time": T, "type": "access", "isKnown": "true", "hostname": HOST}


def event(level: str, src: str, desc: str, data: str = "") -> dict[str, Any]:
    """log.esp:3-16 at 88d2199e writeEvent, published when "send events over MQTT" is on."""
    return {"type": level, "src": src, "desc": desc, "data": data, "time": T, "cmd": "event", "hostname": HOST}


HEARTBEAT = {"type": "heartbeat", "time": T, "uptime": 3600, "ip": IP, "hostname": HOST}  # :305-313
BOOT = {"type": "boot", "time": T, "uptime": "0", "ip": IP, "hostname": HOST}  # :125-133, uptime a string


# --- device -> bridge --------------------------------------------------------------------------------

# rfid.esp rfidOutsideMessaging (62b1cd79; ac787615 the same values with now()):
#   valid      mqttPublishAccess(epoch, "true", <"Always" at ac787615>, username, uid, pinCode)
#   validAdmin mqttPublishAccess(epoch, "true", "Admin", ...)
#   expired    mqttPublishAccess(epoch, "true", "Expired", username, uid, pinCode)
#   wrong PIN  mqttPublishAccess(epoch, "true", "Wrong pin code", username, uid, pinCode)
#   notValid   mqttPublishAccess(epoch, "true", "Disabled", ...)
#   unknown    mqttPublishAccess(epoch, "false", "Denied", "Unknown", uid, " ")
@pytest.mark.parametrize(("value", "known", "username", "granted"), [
    ("Always", "true", "Ann", True),
    ("Admin", "true", "Ann", True),
    ("Disabled", "true", "Ann", False),
    ("Expired", "true", "Ann", False),
    ("Wrong pin code", "true", "Ann", False),
    ("Denied", "false", "Unknown", False),
])
def test_access_is_the_devices_own_decision(value: str, known: str, username: str, granted: bool) -> None:
    [msg] = run(access(access=value, known=known, username=username))
    assert isinstance(msg, c.CredentialPresented)
    assert (msg.reader, msg.ts, msg.pin) == (READER, datetime.fromtimestamp(T, UTC), None)
    assert msg.card == c.Card(format="ascii", number="04a1b2c3")
    assert msg.offline == c.OfflineDecision(granted=granted, reason=f"esp-rfid:{value}")
    assert msg.id.startswith("esp-acc-")
    c.controller_event.validate_json(msg.model_dump_json())  # a valid contract message as it stands


@pytest.mark.parametrize("shape", [
    access(pincode=None),  # 88d2199e: no pincode field
    access(log=True),  # "cmd":"log" in front when events go over MQTT (:319-322)
    access(pincode="4711"),  # the typed PIN, in clear
    access(uid="04A1B2C3"),  # not what stock readers send ("%02x", String(b, HEX)), but normalized anyway
])
def test_access_variants_map_the_same(shape: dict[str, Any]) -> None:
    [msg] = run(shape)
    assert msg.card.number == "04a1b2c3"
    assert msg.offline.granted is True
    assert "4711" not in msg.model_dump_json()


@pytest.mark.parametrize(("relays", "granted"), [
    (["Always", "Disabled"], True),  # :363, :360: the bridge's door is the first relay
    (["Disabled", "Always"], False),  # the device opened another relay, not this door
    (["Admin", "Admin"], True),  # :366
])
def test_multi_relay_access_follows_the_first_relay(relays: list[str], granted: bool) -> None:
    [msg] = run(multi(relays))
    assert msg.offline == c.OfflineDecision(granted=granted, reason="esp-rfid:" + "/".join(relays))


@pytest.mark.parametrize(("username", "expected"), [
    ("MQTT", None),  # :581 opendoor (and :594 open, :610 close): the echo of the bridge's own command
    ("Button", c.RequestToExit),  # main.cpp loop(): mqttPublishAccess(epoch, "true", "Always", "Button", " ", " ")
])
def test_cardless_access_messages(username: str, expected: type | None) -> None:
    out = run(access(uid=" ", username=username, pincode=" "))
    if expected is None:
        assert out == []
    else:
        [msg] = out
        assert isinstance(msg, expected) and msg.door == DOOR and msg.id.startswith("esp-rex-")


@pytest.mark.parametrize("time", [0, 57, 999_999_999])
def test_a_device_without_a_clock_gets_the_receive_time(time: int) -> None:
    # Before NTP, epoch counts from 0 at boot.
    [msg] = run(access(time=time))
    assert msg.ts == RECEIVED


def test_heartbeat() -> None:
    [msg] = run(HEARTBEAT)
    assert isinstance(msg, c.Heartbeat)
    assert (msg.uptime_s, msg.ts) == (3600.0, datetime.fromtimestamp(T, UTC))


def test_boot_is_online_and_a_zero_uptime() -> None:
    status, beat = run(BOOT)
    assert status == c.ControllerStatus(online=True, ts=datetime.fromtimestamp(T, UTC))
    assert isinstance(beat, c.Heartbeat) and beat.uptime_s == 0 and beat.id.startswith("esp-boot-")


@pytest.mark.parametrize(("desc", "state"), [
    ("Door Open", "opened"),  # door.esp:27 at 88d2199e writeEvent("INFO", "door", "Door Open", "")
    ("Door Closed", "closed"),  # door.esp:15 writeEvent("INFO", "door", "Door Closed", "")
])
def test_door_contact(desc: str, state: str) -> None:
    [msg] = run(event("INFO", "door", desc))
    assert isinstance(msg, c.DoorContact)
    assert (msg.door, msg.state, msg.ts) == (DOOR, state, datetime.fromtimestamp(T, UTC))


@pytest.mark.parametrize("payload", [
    event("INFO", "doorbell", "Doorbell ringing"),  # doorbell.esp:12 at 83b8eb8c: no contract model
    event("WARN", "rfid", "Unknown rfid tag is scanned", "deadbeef MIFARE 1KB"),  # the access message says it
    event("WARN", "mqtt", "Disconnected from MQTT server", "TCP_DISCONNECTED"),  # :71
    event("ERRO", "mqtt", "Dropping MQTT message, out of memory"),  # :527
    event("INFO", "sys", "System setup completed, running"),  # main.cpp setup()
    # :116-122 mqttPublishAck(command) for deletusers (:626), deletuid (:635), adduser (:654), deletlog (:661)
    *({"type": cmd, "ip": IP, "hostname": HOST} for cmd in ("deletusers", "deletuid", "adduser", "deletlog",
                                                             "updateconf")),
    # :679-685 the getconf reply, passwords and all
    {"type": "getconf", "ip": IP, "hostname": HOST, "configfile": {"network": {"pswd": "secret"}}},
    # :412-437 getUserList publishes each user file as stored: an adduser command verbatim (:651) ...
    {"cmd": "adduser", "doorip": IP, "uid": "04a1b2c3", "user": "Ann", "acctype": 1, "validsince": 0,
     "validuntil": UINT32_MAX},
    # ... or what the web UI wrote
    {"command": "userfile", "uid": "04a1b2c3", "user": "Ann", "acctype": 1, "validuntil": 1608336000},
])
def test_messages_that_carry_nothing_for_the_bridge(payload: dict[str, Any]) -> None:
    assert run(payload) == []


def test_a_getconf_reply_is_dropped_even_from_the_wrong_device() -> None:
    # Refusing it would put the device's passwords in a dead letter.
    assert run({"type": "getconf", "hostname": "other", "configfile": {}}, hostname=HOST) == []


def test_another_devices_message_on_this_topic_is_refused() -> None:
    assert run(HEARTBEAT, hostname=HOST)
    with pytest.raises(EspRfidError, match="own base topic"):
        run(HEARTBEAT | {"hostname": "esp-lab"}, hostname=HOST)


def test_received_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run(HEARTBEAT, received=datetime(2026, 3, 2, 12, 0))


@pytest.mark.parametrize(("payload", "match"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"type":"heartbeat","time":NaN,"uptime":1}', "^payload contains NaN, which is not JSON$"),
    (b"[1, 2]", "expected a JSON object, got an array"),
    (b" " * (c.MAX_PAYLOAD + 1), "more than"),
    (raw({"time": T}), "no 'type' field"),
    (raw({"uid": "04a1b2c3", "access": "Always", "time": T}), "Home Assistant"),  # the /tag shape
    (raw({"type": 5}), "type: expected a string"),
    (raw({"type": "hearthbeat", "time": T}), "type 'hearthbeat'"),  # 1.0's spelling
    (raw(access(known=True)), "isKnown: expected a string, got a boolean"),  # a JSON true, not "true"
    (raw(access(known="yes")), "isKnown 'yes'"),
    (raw({k: v for k, v in access().items() if k != "uid"}), "uid: missing"),
    (raw(access() | {"uid": 4711}), "uid: expected a string, got a number"),
    (raw(access(uid="04:a1:b2")), "uid '04:a1:b2'"),
    (raw(access(uid=" ", username="Ann")), "blank"),
    (raw({k: v for k, v in access().items() if k != "username"}), "username: missing"),
    (raw(access(access="Standard")), "role name"),  # roles firmware (rfid.esp at 62b1cd79)
    (raw(access(access=1)), "access: expected a string"),
    (raw({k: v for k, v in access().items() if k != "access"}), "access: expected a string .*got null"),
    (raw(multi([])), "per relay"),
    (raw(multi(["Always", "Open"])), "per relay"),
    (raw(access(access="Always", known="false")), "only cards it knows"),
    (raw({k: v for k, v in access().items() if k != "time"}), "time: missing"),
    (raw(access(time=str(T))), "whole epoch seconds"),
    (raw(access(time=T + 0.5)), "whole epoch seconds"),
    (raw(access(time=True)), "whole epoch seconds"),
    (raw(access(time=None)), "whole epoch seconds"),
    (raw(access(time=-1)), "negative"),
    (raw(access(time=T * 1000)), "milliseconds"),
    (raw(access(time=1_420_070_400)), "before 2018"),
    (raw(access(time=T + 2 * 86_400)), "after it was received"),
    (raw({k: v for k, v in HEARTBEAT.items() if k != "uptime"}), "uptime: missing"),
    (raw(HEARTBEAT | {"uptime": -5}), "uptime -5"),
    (raw(HEARTBEAT | {"uptime": "ten"}), "uptime 'ten'"),
    (raw(HEARTBEAT | {"uptime": 1.5}), "uptime 1.5"),
    (raw(BOOT | {"time": "now"}), "whole epoch seconds"),
    (raw(event("INFO", "door", "Door Ajar")), "desc 'Door Ajar'"),
    (raw({k: v for k, v in event("INFO", "door", "Door Open").items() if k != "src"}), "src: missing"),
    (raw(event("INFO", "door", "Door Open") | {"time": 12.5}), "whole epoch seconds"),
])
def test_malformed_is_refused_with_a_reason(payload: bytes, match: str) -> None:
    with pytest.raises(EspRfidError, match=match):
        run(payload)


def test_errors_do_not_repeat_the_pin() -> None:
    with pytest.raises(EspRfidError) as info:
        run(access(access="Standard", pincode="4711"))
    assert "4711" not in str(info.value)


# --- tamper (issue 12: dropped silently) -----------------------------------------------------------
# door.esp at dev 56c0fb9: the door opening while the relay is off sets the firmware's tamper flag (:27-32),
# so does a door left open past maxOpenDoorTime (:45-58); the next "Door Closed" resets it (:13-20).

FORCED = event("WARN", "tamper", "Door was tampered!")
HELD = event("WARN", "tamper", "Door wasn't closed within max open time!")
CLOSED = event("INFO", "door", "Door Closed")


@pytest.mark.parametrize(("payload", "kind"), [(FORCED, "forced"), (HELD, "held"),
                                               (event("ERRO", "tamper", "Some future wording"), "tamper")])
def test_a_tamper_event_is_a_tamper(payload: dict[str, Any], kind: str) -> None:
    [msg] = run(payload)
    assert isinstance(msg, c.Tamper)
    assert (msg.state, msg.reader, msg.ts) == ("active", READER, datetime.fromtimestamp(T, UTC))
    assert msg.id.startswith(f"esp-tamper-{kind}-" if kind != "tamper" else "esp-tamper-")
    c.controller_event.validate_json(msg.model_dump_json())


def test_the_door_closing_clears_the_tamper_the_device_had_raised() -> None:
    assert [type(m) for m in run(CLOSED)] == [c.DoorContact]  # no tamper was raised: nothing to clear
    door, cleared = run(CLOSED, tampered=True)
    assert isinstance(door, c.DoorContact) and door.state == "closed"
    assert isinstance(cleared, c.Tamper) and (cleared.state, cleared.reader) == ("cleared", READER)
    assert cleared.id != door.id and cleared.ts == door.ts
    assert [type(m) for m in run(event("INFO", "door", "Door Open"), tampered=True)] == [c.DoorContact]


# --- Home Assistant mode (issue 12: silently ignored) --------------------------------------------------
# mqtt.esp at dev 56c0fb9: with "mqttha" the access message goes to <topic>/tag without type, isKnown and
# hostname (:265-290, :292-333); "online" is retained on <topic>/avty at connect (:244-252) and "offline" is
# the device's last will there (:728-736). Boot, heartbeat and events stay on <topic>/send.

def tag(**kw: Any) -> dict[str, Any]:
    msg = access(**kw)
    return {k: v for k, v in msg.items() if k not in ("type", "isKnown", "hostname")}


@pytest.mark.parametrize(("value", "username", "granted"), [
    ("Always", "Ann", True), ("Admin", "Ann", True), ("Disabled", "Ann", False), ("Expired", "Ann", False),
    ("Wrong pin code", "Ann", False), ("Denied", "Unknown", False),
])
def test_home_assistant_access_is_read_from_tag(value: str, username: str, granted: bool) -> None:
    [msg] = run(tag(access=value, username=username, log=True), channel="tag")
    assert isinstance(msg, c.CredentialPresented)
    assert msg.card == c.Card(format="ascii", number="04a1b2c3")
    assert msg.offline == c.OfflineDecision(granted=granted, reason=f"esp-rfid:{value}")


def test_home_assistant_multi_relay_and_cardless_messages() -> None:
    [msg] = run({k: v for k, v in multi(["Admin", "Disabled"]).items() if k not in ("type", "isKnown", "hostname")},
                channel="tag")
    assert msg.offline.granted is True
    assert run(tag(uid=" ", username="MQTT"), channel="tag") == []  # mqtt.esp:523 opendoor echo
    [rex] = run(tag(uid=" ", username="Button"), channel="tag")
    assert isinstance(rex, c.RequestToExit)


@pytest.mark.parametrize(("payload", "online"), [(b"online", True), (b"offline", False)])
def test_home_assistant_availability_is_the_controller_status(payload: bytes, online: bool) -> None:
    assert run(payload, channel="avty") == [c.ControllerStatus(online=online)]


def test_an_empty_retained_availability_is_a_deletion() -> None:
    assert run(b"", channel="avty") == []


@pytest.mark.parametrize(("channel", "payload", "match"), [
    ("avty", b"ONLINE", "online"),
    ("avty", b'{"online":true}', "online"),
    ("tag", raw(tag(uid="04:a1")), "uid"),
    ("tag", raw(tag(access="Standard")), "role name"),
    ("tag", b"[]", "JSON object"),
    ("send", raw(tag()), "Home Assistant"),  # a /tag message on /send
])
def test_home_assistant_malformed(channel: str, payload: bytes, match: str) -> None:
    with pytest.raises(EspRfidError, match=match):
        run(payload, channel=channel)


# --- hostile input (issue 12) -------------------------------------------------------------------------

HOSTILE = [
    (b"[" * 5000, "nested"),  # RecursionError before
    (b"{" + b'"a":{' * 2000 + b"}" * 2001, "nested"),
    (raw(HEARTBEAT | {"x": json.loads("[" * 20 + "]" * 20)}), "nested deeper than 16"),
    (b'{"type":"heartbeat","time":1,"uptime":' + b"9" * 5000 + b"}", "digits"),  # ValueError before
    (b'{"\\ud800":1}', "surrogate"),  # an unencodable str in the reason before
    (b'{"type":"heartbeat","time":1,"uptime":1,"hostname":"\\udfff"}', "surrogate"),
    (b'{"uid":"04a1\\ud800","type":"access"}', "surrogate"),
    (b'{"type":"heartbeat","time":1,"uptime":1,"x":"a\\u0000b"}', "NUL"),
    (b'{"type":"heartbeat","time":1,"uptime":' + b"9" * 400 + b"}", "uptime"),  # OverflowError in float()
    (b'{"type":"heartbeat","time":1,"uptime":1e400}', "uptime"),
    (raw(HEARTBEAT | {"time": 10**300}), "milliseconds"),
    (raw(access(uid="\u0660\u0664\u0661")), "uid"),  # Arabic-Indic digits
    (raw(access(uid="04a1b2c3 ")), "uid"),  # trailing space
    (raw(access(uid="04a1b2c3\n")), "uid"),  # '$' matched before a final newline
    (raw(access(uid="\uff10\uff14")), "uid"),  # fullwidth digits
    (raw(access(uid="\u3000", username="Button")), "uid"),  # not the firmware's " "
]


@pytest.mark.parametrize(("payload", "match"), HOSTILE)
def test_hostile_input_is_refused_with_a_storable_reason(payload: bytes, match: str) -> None:
    with pytest.raises(EspRfidError, match=match) as info:
        run(payload)
    reason = str(info.value)
    reason.encode("utf-8")  # storable as it stands
    assert "\0" not in reason and len(reason) <= 500


def test_many_keys_are_not_all_repeated_in_the_reason() -> None:
    with pytest.raises(EspRfidError) as info:
        run(raw({f"key{i}": i for i in range(1000)}))
    assert len(str(info.value)) <= 500


SEEDS = [raw(m) for m in (access(), multi(["Always", "Disabled"]), HEARTBEAT, BOOT, FORCED, CLOSED,
                          {"type": "getconf", "ip": IP, "hostname": HOST, "configfile": {"a": {"b": [1]}}})]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 400), insert=st.binary(max_size=12),
       channel=st.sampled_from(["send", "tag", "avty"]))
def test_mutated_payloads_raise_nothing_but_esp_rfid_error(seed: bytes, cut: int, insert: bytes, channel: str) -> None:
    payload = seed[:cut] + insert + seed[cut + len(insert):]
    try:
        run(payload, channel=channel)
    except EspRfidError as exc:
        str(exc).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)),
       field=st.sampled_from(["uid", "access", "time", "uptime", "type", "isKnown", "username", "src", "desc",
                              "hostname"]),
       seed=st.sampled_from([access(), HEARTBEAT, BOOT, FORCED, CLOSED]))
def test_any_json_value_in_any_field_raises_nothing_but_esp_rfid_error(value: Any, field: str,
                                                                       seed: dict[str, Any]) -> None:
    payload = json.dumps(seed | {field: value}, ensure_ascii=True).encode()
    try:
        run(payload)
    except EspRfidError as exc:
        str(exc).encode("utf-8")


# --- ids ---------------------------------------------------------------------------------------------

SAMPLES = [access(), multi(["Always", "Disabled"]), access(uid=" ", username="Button"), HEARTBEAT, BOOT,
           event("INFO", "door", "Door Open")]


def ids(payload: bytes | dict[str, Any], **kw: Any) -> list[str]:
    return [m.id for m in run(payload, **kw) if isinstance(m, c.Message)]


@pytest.mark.parametrize("sample", SAMPLES)
def test_a_redelivered_message_keeps_its_id(sample: dict[str, Any]) -> None:
    first = ids(sample)
    assert first and first == ids(sample)
    assert first == ids(json.dumps(dict(reversed(sample.items())), indent=2).encode())  # same content


@pytest.mark.parametrize("change", [
    {"time": T + 1}, {"uid": "04a1b2c4"}, {"access": "Expired"}, {"username": "Bob"}, {"hostname": "esp-lab"},
])
def test_different_content_different_id(change: dict[str, Any]) -> None:
    assert ids(access()) != ids(access() | change)


def test_ids_differ_by_controller_and_kind_but_not_by_pin() -> None:
    assert ids(access()) != ids(access(), controller="esp-lab")
    assert ids(access(pincode="1234")) == ids(access(pincode="9876"))  # a logged id must not give the PIN away
    every = [i for s in SAMPLES for i in ids(s)]
    assert len(set(every)) == len(every)


# --- bridge -> device --------------------------------------------------------------------------------

HANDLED = {"getuserlist", "opendoor", "open", "close", "deletusers", "deletuid", "adduser", "deletlog", "getconf",
           "updateconf"}
"""processMqttMessage's strcmp chain, :568-689."""


def firmware_takes(payload: bytes, own_ip: str = IP) -> dict[str, Any] | None:
    """What onMqttMessage (:469-563) keeps of a command, None where it drops it without a word."""
    assert len(payload) <= 2047  # copied into mqttBuffer[2048] with its NUL (:474)
    msg = json.loads(payload.decode("utf-8"))
    if "doorip" not in msg:  # :504
        return None
    assert isinstance(msg["doorip"], str)  # const char *ipadr (:509): a number would be a NULL pointer
    if msg["doorip"] != own_ip:  # :511 strcmp with WiFi.localIP().toString()
        return None
    for key in ("cmd", "uid", "user", "door"):  # strlcpy from a const char* (:533-546)
        if key in msg:
            assert isinstance(msg[key], str), key
    assert msg["cmd"] in HANDLED and len(msg["cmd"]) < 20  # char command[20]
    assert len(msg.get("uid", "")) <= 19  # char uid[20] (:7): longer is cut and names the wrong file
    return msg


def device_admits(user_file: dict[str, Any], now: int) -> bool:
    """rfid.esp rfidProcess (62b1cd79) for a user file without a role: acctype, then the validity window."""
    acctype, since, until = user_file["acctype"], user_file["validsince"], user_file["validuntil"]
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in (acctype, since, until))
    assert 0 <= since <= UINT32_MAX and 0 <= until <= UINT32_MAX  # unsigned long (32 bits): larger reads as 0
    if acctype == 99:
        return True
    return acctype == 1 and not (until < now or since > now)


def test_topics_are_the_firmwares() -> None:
    # mqttPublishEvent (:79-93) publishes on config.mqttTopic + "/" + "send"; onMqttConnect subscribes to
    # config.mqttTopic + "/cmd" (:742-744). Home Assistant mode (dev 56c0fb9): access on "/tag" (mqtt.esp:288),
    # availability and last will on "/avty" (:246, :732).
    assert topics("rfid/noc") == ("rfid/noc/send", "rfid/noc/tag", "rfid/noc/avty", "rfid/noc/cmd")
    assert topics("/rfid").events == "/rfid/send"  # verbatim: the leading slash is part of it
    assert topics("rfid/noc").inbound() == {"rfid/noc/send": "send", "rfid/noc/tag": "tag", "rfid/noc/avty": "avty"}


@pytest.mark.parametrize("base", ["", "rfid/#", "rfid/+/x", "a\0b", "x" * 201])
def test_bad_base_topic(base: str) -> None:
    with pytest.raises(ValueError, match="base topic"):
        topics(base)


NOW = RECEIVED
GRANT = c.Grant(type="grant", id="g1", ts=NOW, door=DOOR, reader=READER, request="esp-acc-x", open_time_s=5)


@pytest.mark.parametrize("command", [
    GRANT,
    c.Unlock(type="unlock", id="u1", ts=NOW, door=DOOR, duration_s=5, by="alice", reason="delivery"),
    c.Unlock(type="unlock", id="u2", ts=NOW, door=DOOR),  # no "hold unlocked" on esp-rfid: a single release
])
def test_grant_and_unlock_are_opendoor(command: c.Grant | c.Unlock) -> None:
    payload = encode(command, device=IP)
    assert payload is not None
    assert firmware_takes(payload) == {"cmd": "opendoor", "doorip": IP}  # :575-587
    assert firmware_takes(payload, own_ip="10.0.0.8") is None  # another device on the topic ignores it


@pytest.mark.parametrize("command", [
    c.Deny(type="deny", id="d1", ts=NOW, door=DOOR, reader=READER, request="esp-acc-x", reason="expired"),
    c.Lock(type="lock", id="l1", ts=NOW, door=DOOR),
    c.Lockdown(type="lockdown", id="k1", ts=NOW, active=True, doors=[DOOR]),
    c.Lockdown(type="lockdown", id="k2", ts=NOW, active=False, doors=[DOOR]),
])
def test_commands_without_an_equivalent(command: c.Deny | c.Lock | c.Lockdown) -> None:
    assert encode(command, device=IP) is None


@pytest.mark.parametrize("device", ["esp-noc", "esp-noc.local", "10.0.0.07", "10.0.0", "::1", "", " 10.0.0.7"])
def test_device_must_be_the_ip_the_firmware_compares(device: str) -> None:
    with pytest.raises(EspRfidError, match="doorip"):
        encode(GRANT, device=device)
    with pytest.raises(EspRfidError, match="doorip"):
        sync_payloads([], device=device)


ANN = EspUser("04a1b2c3", "Ann Example", valid_until=datetime(2027, 1, 1, tzinfo=UTC))
BOB = EspUser("7731", "Bob", valid_since=datetime(2026, 1, 1, tzinfo=UTC))  # a Wiegand card read as decimal
CAROL = EspUser("0a0b0c0d0e0f11", "Ørsted, Carol", acctype=99)  # a 7-byte UID; admin


def test_full_sync_deletes_then_adds_each_user() -> None:
    payloads = sync_payloads([CAROL, ANN, BOB], device=IP)
    taken = [firmware_takes(p) for p in payloads]
    assert taken[0] == {"cmd": "deletusers", "doorip": IP}  # :620-627
    assert taken[1:] == [  # :637-655: the whole message becomes the file /P/<uid>
        {"cmd": "adduser", "doorip": IP, "uid": "04a1b2c3", "user": "Ann Example", "acctype": 1,
         "validsince": 0, "validuntil": int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())},
        {"cmd": "adduser", "doorip": IP, "uid": "0a0b0c0d0e0f11", "user": "Ørsted, Carol", "acctype": 99,
         "validsince": 0, "validuntil": UINT32_MAX},
        {"cmd": "adduser", "doorip": IP, "uid": "7731", "user": "Bob", "acctype": 1,
         "validsince": int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()), "validuntil": UINT32_MAX},
    ]
    assert "Ørsted".encode() in payloads[2]  # raw UTF-8, not a \u escape ArduinoJson might store literally


@pytest.mark.parametrize(("user", "admitted"), [
    (ANN, True), (BOB, True), (CAROL, True),
    (EspUser("01", "Expired", valid_until=RECEIVED - timedelta(days=1)), False),
    (EspUser("02", "Not yet", valid_since=RECEIVED + timedelta(days=1)), False),
    (EspUser("03", "Disabled", acctype=0), False),
])
def test_synced_users_are_read_back_as_meant(user: EspUser, admitted: bool) -> None:
    [payload] = sync_payloads([user], device=IP)[1:]
    stored = firmware_takes(payload)
    assert stored is not None and device_admits(stored, int(RECEIVED.timestamp())) is admitted
    # The device's access message names the card as the file is named, and the bridge reads it back as such.
    [msg] = run(access(uid=stored["uid"]))
    assert msg.card.number == user.uid


def test_diff_sync_touches_only_what_changed() -> None:
    moved = EspUser(BOB.uid, BOB.name, valid_until=datetime(2026, 6, 1, tzinfo=UTC))
    payloads = sync_payloads([ANN, moved], device=IP, previous=[ANN, BOB, CAROL])
    taken = [firmware_takes(p) for p in payloads]
    assert taken[0] == {"cmd": "deletuid", "doorip": IP, "uid": CAROL.uid}  # :628-636
    assert [(t["cmd"], t["uid"]) for t in taken[1:]] == [("adduser", BOB.uid)]  # adduser overwrites (:647 "w+")
    assert sync_payloads([ANN], device=IP, previous=[ANN]) == []
    assert sync_payloads([], device=IP) == [b'{"cmd":"deletusers","doorip":"10.0.0.7"}']


def test_validity_rounds_towards_less_access() -> None:
    user = EspUser("01", "x", valid_since=datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC),
                   valid_until=datetime(2026, 2, 1, 0, 0, 0, 500_000, tzinfo=UTC))
    stored = firmware_takes(sync_payloads([user], device=IP)[1])
    assert stored is not None
    assert stored["validsince"] == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) + 1
    assert stored["validuntil"] == int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(("fields", "match"), [
    ({"uid": "04A1B2C3"}, "lower-case"),  # the file name must match the device's spelling exactly
    ({"uid": "0" * 20}, "1-19"),  # a 10-byte UID does not fit the firmware's 20-byte uid buffer
    ({"uid": "04a1b2c3\n"}, "1-19"),  # a file name the device would never match
    ({"uid": ""}, "1-19"),
    ({"uid": 4711}, "1-19"),
    ({"name": ""}, "name"),
    ({"name": "a\nb"}, "control"),
    ({"name": "x" * 64}, "name"),
    ({"acctype": 2}, "acctype"),
    ({"acctype": True}, "acctype"),
    ({"valid_until": datetime(2027, 1, 1)}, "timezone-aware"),
    ({"valid_since": datetime(2027, 1, 1, tzinfo=UTC), "valid_until": datetime(2026, 1, 1, tzinfo=UTC)}, "after"),
    ({"valid_until": datetime(2107, 1, 1, tzinfo=UTC)}, "2106"),
    ({"valid_since": datetime(1960, 1, 1, tzinfo=UTC)}, "1970"),
])
def test_bad_users_are_refused(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(EspRfidError, match=match):
        EspUser(**({"uid": "04a1b2c3", "name": "Ann"} | fields))


def test_duplicate_uids_are_refused() -> None:
    with pytest.raises(EspRfidError, match="twice"):
        sync_payloads([ANN, EspUser(ANN.uid, "Ann again")], device=IP)
    with pytest.raises(EspRfidError, match="twice"):
        sync_payloads([ANN], device=IP, previous=[BOB, BOB])


def test_users_version_follows_content_not_order() -> None:
    assert users_version([ANN, BOB]) == users_version([BOB, ANN])
    assert users_version([ANN, BOB]) != users_version([ANN])
    assert users_version([ANN]) != users_version([EspUser(ANN.uid, ANN.name)])
