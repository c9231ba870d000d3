"""Whether a console command may move anything: signed by the console, fresh, and, at the moment it arrives,
naming a user who exists, is enabled and has the role for it, in an open session of that user's.

The broker's ACL decides who may publish on the console's topic; this decides whether what was published
is an operator's command at all. A refusal is ``Forged``: the processor dead-letters it and raises one
``console.forged_command`` alarm per message, and no door moves.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from badge_bridge import console_signing, roles
from badge_bridge.audit.writer import Effect
from badge_bridge.canonical import canonical
from badge_bridge.controllers import contract as c
from badge_bridge.db import describe
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.ingest.admission import Rejected
from badge_bridge.models import ConsoleSession, ConsoleUser
from badge_bridge.records import alarm_raised

log = logging.getLogger(__name__)

FORGED = "forged_command"
"""The dead letter code of every refused console command."""


class Forged(Rejected):
    """A console command the bridge will not act on; ``alarm`` is the one alarm it raises."""

    def __init__(self, cmd: c.ConsoleCommand, reason: str) -> None:
        super().__init__(FORGED, reason)
        self.cmd = cmd

    def alarm(self, now: datetime) -> tuple[Event, Effect]:
        """Its id comes from the message itself, so a redelivery raises no second alarm."""
        cause = hashlib.sha256(canonical(self.cmd.model_dump(mode="json"))).hexdigest()[:40]
        cmd = self.cmd
        return alarm_raised(EventKind.CONSOLE_FORGED_COMMAND, door=None, source="console", cause=cause, ts=now,
                            detail={"reason": str(self)[:500], "command": cmd.type, "claimed_user": cmd.user,
                                    "door": cmd.door, "area": cmd.area})


class ConsoleAuthority:
    """Built by the bridge with the console's public key (None: none installed, every command refused) and the
    database; one query per command, which is rare, made outside the processor's lock."""

    def __init__(self, public: Ed25519PublicKey | None, engine: Engine, max_age: timedelta) -> None:
        self.public = public
        self.engine = engine
        self.max_age = max_age

    def check(self, cmd: c.ConsoleCommand, now: datetime) -> None:
        """Raises ``Forged`` saying what failed; ``Rejected`` when the database cannot be asked (not forged, but
        not acted on: a command that cannot be checked is not obeyed). The id and the future bound are the
        processor's ``Admission``, shared with every sender."""
        if self.public is None:
            raise Forged(cmd, "bad signature: this bridge has no console public key (keys/console/command.pub)")
        if cmd.signature is None:
            raise Forged(cmd, "bad signature: the command is not signed")
        if not console_signing.verify(cmd, self.public):
            raise Forged(cmd, "bad signature: not signed by this site's console key, or altered after signing")
        if cmd.ts < now - self.max_age:
            raise Forged(cmd, f"stale: sent at {cmd.ts.isoformat()}, more than {self.max_age.total_seconds():.0f} s "
                              f"before the bridge's clock ({now.isoformat()}; ingest.console_max_age_s)")
        try:
            self._may(cmd, now)
        except SQLAlchemyError as exc:
            raise Rejected("unverified_command", f"the database could not confirm the user: {describe(exc)}") from None

    def _may(self, cmd: c.ConsoleCommand, now: datetime) -> None:
        with Session(self.engine) as session:
            user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == cmd.user))
            if user is None:
                raise Forged(cmd, f"unknown user: no console user {cmd.user!r}")
            if not user.active:
                raise Forged(cmd, f"disabled: console user {cmd.user!r} is disabled")
            need = roles.COMMAND_ROLE[cmd.type]
            if not roles.can(user.role, need):
                raise Forged(cmd, f"role: {cmd.user!r} is a {user.role}; {cmd.type} needs {need}")
            row = session.get(ConsoleSession, cmd.session) if cmd.session else None
            if row is None or row.user_id != user.id:
                raise Forged(cmd, f"session ended: the command names no session of {cmd.user!r}")
            if row.ended_at is not None:
                raise Forged(cmd, f"session ended: {cmd.user!r}'s session ended at {row.ended_at.isoformat()} "
                                  f"({row.ended_reason or 'no reason given'})")
            if row.expires_at <= now:
                raise Forged(cmd, f"session ended: {cmd.user!r}'s session expired at {row.expires_at.isoformat()}")
