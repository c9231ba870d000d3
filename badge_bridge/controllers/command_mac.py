"""The MAC on the bridge's commands and offline lists to controllers (docs/mqtt.md, "Command MAC"): whoever
can publish on a controller's command or sync topic still cannot make it act, or add a card to its offline
list, without the controller's sync key.

``mac`` is HMAC-SHA256 under the controller's sync key (``KeyStore.sync_key``) of the RFC 8785 bytes of
the command's JSON object without the ``mac`` member, lower-case hex. It is defined over the JSON as
received, not over a schema, so firmware checks it with a JSON parser, a JCS serializer and HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from badge_bridge.canonical import NotCanonical, canonical
from badge_bridge.controllers import contract as c


def mac_of(body: object, key: bytes) -> str:
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def sealed(command: c.ControllerCommand | c.CredentialSync | c.Receipt, key: bytes) -> str:
    """The command's (or offline list's) JSON with its MAC, ready to publish."""
    mac = mac_of(command.model_dump(mode="json", exclude={"mac"}), key)
    body = command.model_dump_json(exclude={"mac"})  # then ``mac`` last: a copy and a second dump cost a third
    return f'{body[:-1]},"mac":"{mac}"}}'


def problem(payload: bytes, key: bytes) -> str | None:
    """Why a received command must not be acted on (no MAC, a wrong one, JSON it cannot be checked over), or
    None. A member given twice is refused: parsers disagree about which one counts."""
    try:
        body = json.loads(payload, object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:
        return f"not a JSON object the MAC can be checked over: {exc}"
    if not isinstance(body, dict):
        return "not a JSON object"
    mac = body.pop("mac", None)
    if not isinstance(mac, str):
        return "no MAC"
    try:
        expected = mac_of(body, key)
    except NotCanonical as exc:
        return f"not a JSON object the MAC can be checked over: {exc}"
    return None if hmac.compare_digest(expected, mac) else "wrong MAC"


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("a member is given twice")
    return body
