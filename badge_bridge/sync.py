"""Each contract controller's offline credential list, built from the snapshot the bridge decides from (an
esp-rfid device's is ``esp_rfid.esp_users``).

Only what the controller's own doors need is sent, cards only as keyed digests (see keys.card_digest),
and only credentials that are active and held by active people: a revoked card vanishes from every list at
the next sync. The version is a digest of the content, so an unchanged list is not sent again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from badge_bridge.config import SiteConfig
from badge_bridge.controllers.contract import CredentialSync, SyncDoor, SyncEntry, SyncSchedule
from badge_bridge.keys import card_digest
from badge_bridge.policy import Credential
from badge_bridge.snapshot import Snapshot


def offline_listed(view: Credential) -> bool:
    """Whether a controller may hold the credential to decide alone: an active one of an active, approved
    person, never a visitor's (a controller cannot see the escort: offline a visitor's badge opens nothing)."""
    return view.status == "active" and view.person_active and view.person_approved and not view.visitor


def controller_doors(config: SiteConfig, controller: str) -> set[str]:
    return {r.door for r in config.readers if r.controller == controller}


def build_sync(config: SiteConfig, snapshot: Snapshot, controller: str, sync_key: bytes, key_id: str) -> CredentialSync:
    doors = controller_doors(config, controller)
    door_cfg = {d.key: d for d in config.doors if d.key in doors}
    schedules: dict[str, SyncSchedule] = {}
    entries = []
    for (fmt, number), record in sorted(snapshot.credentials.items()):
        view = record.view
        if not offline_listed(view):
            continue
        # a mantrap door is decided online only: a controller alone cannot see its other doors (they may hang on
        # another controller), so offline both could be released together (fail secure: it stays shut)
        mine = {door: scheds for door, scheds in view.standing_doors().items()
                if door in doors and not snapshot.doors[door].interlock}
        if not mine:
            continue
        for scheds in mine.values():
            for s in scheds:
                schedules.setdefault(s.key, SyncSchedule(tz=s.tz.key, intervals=list(s.intervals),
                                                         holidays=sorted(s.holidays)))
        entries.append(SyncEntry(
            card=card_digest(sync_key, fmt, number), doors={d: sorted({s.key for s in sc}) for d, sc in mine.items()},
            biometric_ref=record.biometric_ref, valid_from=view.valid_from, valid_until=view.valid_until,
            lockdown_exempt=view.lockdown_exempt,
        ))
    sync_doors = {
        key: SyncDoor(factors=list(d.factors), two_person=d.two_person, two_person_window_s=d.two_person_window_s,
                      open_time_s=d.open_time_s)
        for key, d in sorted(door_cfg.items())
    }
    content = json.dumps([key_id, {k: v.model_dump(mode="json") for k, v in sync_doors.items()},
                          {k: v.model_dump(mode="json") for k, v in sorted(schedules.items())},
                          [e.model_dump(mode="json") for e in entries]], sort_keys=True)
    version = hashlib.sha256(content.encode()).hexdigest()[:16]
    return CredentialSync(type="sync", id=f"sync-{version}", ts=datetime.now(UTC), version=version, key_id=key_id,
                          doors=sync_doors, schedules=dict(sorted(schedules.items())), entries=entries)


def sync_key_id(sync_key: bytes) -> str:
    """Names the key without revealing it, so an installer can check a controller has the right one."""
    return hashlib.sha256(b"badge-bridge-sync-key-id\0" + sync_key).hexdigest()[:16]
