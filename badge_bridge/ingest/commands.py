"""Commands to controllers, from decisions and from operators: the driver's entry point and how a
command's id is derived from its cause."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from badge_bridge.controllers import contract as c

SendCommand = Callable[[str, c.Grant | c.Deny | c.Unlock | c.Lock | c.Lockdown], None]
"""Sends a command to a controller by key, over whichever driver serves it."""


def command_id(kind: str, cause: str) -> str:
    """A command's id, derived from what caused it (so a retry repeats it) and short enough for the contract."""
    return f"{kind[:20]}-{hashlib.sha256(cause.encode()).hexdigest()[:32]}"
