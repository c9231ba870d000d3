"""Console roles and what each may do, known here so the console (which offers an action) and the bridge
(which checks a signed console command again when it arrives) apply the same rule.

Roles nest: admin can do what a supervisor can, a supervisor what a guard can. The auditor stands apart:
read-only access to the event log and the audit pages (and admin may do what an auditor does). A wall
display stands apart too: a screen on the wall that shows the alarm panel, the plan and the feed and does
nothing else (its session is a long-lived, revocable token, web.wall). A tenant admin stands apart as
well: a customer's administrator, who sees and manages only their own customer's people, cages, events,
visitors and access requests (web.tenant); whatever of another customer they name does not exist for them.
"""

from __future__ import annotations

from typing import Final

ROLES: Final = ("guard", "supervisor", "admin", "auditor", "wall", "tenant_admin")
RANKS: Final = {"guard": 1, "supervisor": 2, "admin": 3}

COMMAND_ROLE: Final = {"unlock": "supervisor", "lock": "supervisor", "lockdown": "supervisor",
                       "lift_lockdown": "supervisor"}
"""The role a console command needs, whichever door or area it names."""


def can(role: str, need: str) -> bool:
    """Whether a user of ``role`` may do what needs ``need``."""
    if need == "auditor":
        return role in ("auditor", "admin")
    if need in ("wall", "tenant_admin"):
        return role == need
    return RANKS.get(role, 0) >= RANKS[need]
