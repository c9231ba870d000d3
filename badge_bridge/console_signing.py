"""Console door commands signed by the console and checked by the bridge (docs/mqtt.md, "Console command
signatures"): only the console holds the private key, so an account that can publish on the console's topic
still cannot make the bridge move a door.

The signed bytes are the RFC 8785 form (``canonical``) of the command's fields as the contract model dumps
them, without ``signature`` and without null fields, with ``ts`` rewritten as UTC to the microsecond
(``2026-03-01T12:00:00.000000Z``): the bridge re-parses what it received, and a time must sign the same
whether it arrived as ``+01:00`` or ``Z``, with or without a fraction.
"""

from __future__ import annotations

import re
from datetime import UTC

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from badge_bridge.canonical import canonical
from badge_bridge.controllers.contract import ConsoleCommand
from badge_bridge.keys import verify_signature

SIGNATURE = re.compile(r"[0-9a-f]{128}")
"""Lower-case hex only: ``bytes.fromhex`` would also take spaces, one signature written several ways."""


def signed_bytes(cmd: ConsoleCommand) -> bytes:
    """Exactly what the signature covers."""
    body = cmd.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    body["ts"] = cmd.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return canonical(body)


def sign(cmd: ConsoleCommand, private: Ed25519PrivateKey) -> ConsoleCommand:
    """``cmd`` with its signature (any signature it had is replaced)."""
    return cmd.model_copy(update={"signature": private.sign(signed_bytes(cmd)).hex()})


def verify(cmd: ConsoleCommand, public: Ed25519PublicKey) -> bool:
    """Whether ``cmd`` carries a valid signature under ``public`` (False when it has none)."""
    return (cmd.signature is not None and SIGNATURE.fullmatch(cmd.signature) is not None
            and verify_signature(public, cmd.signature, signed_bytes(cmd)))
