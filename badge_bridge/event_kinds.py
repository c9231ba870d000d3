"""Every kind of event the system records, in one place.

A kind is stored as its dotted lower-case string (``door.forced``) in the audit log, exports, alarms and
the messages consoles receive. ``EventKind`` is a ``StrEnum``, so a member is that string: it compares
and hashes equal to it and is written as it, and rows stored before the enum existed read the same. An
alarm's kind is the kind of the event that raised it. ``Event`` still accepts any well-formed kind (logs
from older versions, tests); new code names a member here.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class EventKind(StrEnum):
    # --- access decisions ----------------------------------------------------------------------------
    ACCESS_GRANTED = "access.granted"
    ACCESS_DENIED = "access.denied"
    ACCESS_FACE_CHECK = "access.face_check"
    """Allowed but for the face factor: the decision waits for the door's camera to see the holder."""
    ACCESS_UNUSED = "access.unused"
    """Granted, nobody passed (a lent badge, a test swipe); found by the correlator."""
    ACCESS_BLIND = "access.blind"
    """Granted while every camera of the door was blind (offline or tampered): whether anyone passed, and
    how many, is unknown (instead of ``access.unused``)."""
    ACCESS_DEVICE_DISAGREES = "access.device_disagrees"
    """A device that decides alone (a stock esp-rfid) granted someone the bridge refuses: a stale user list on
    it, or a forged report on its topic (an alarm)."""

    # --- doors ---------------------------------------------------------------------------------------
    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    DOOR_EXIT_REQUEST = "door.exit_request"
    DOOR_FORCED = "door.forced"
    """Opened with no grant, exit request or remote unlock in force (an alarm)."""
    DOOR_HELD_OPEN = "door.held_open"
    """Open past its limit (an alarm)."""
    DOOR_RELOCKED = "door.relocked"
    """An operator's timed unlock ended (dated at its end, also when the bridge was down then)."""
    DOOR_FORCED_CONFIRMED = "door.forced_confirmed"
    """A forced opening the door's camera saw motion for."""
    DOOR_FORCED_UNCONFIRMED = "door.forced_unconfirmed"
    """A forced opening with no motion on camera (sensor fault? check it)."""
    DOOR_UNAUTHORIZED_ENTRY = "door.unauthorized_entry"
    """Motion in a door zone with no grant and no exit request (an alarm)."""
    DOOR_TAILGATING = "door.tailgating"
    """More people than grants passing (an alarm)."""
    DOOR_LOITERING = "door.loitering"
    """Someone has stood in a door zone longer than the door allows (an alarm)."""
    MANTRAP_OCCUPANCY = "mantrap.occupancy"
    """A single-occupancy mantrap's camera counted other than the people badged through: the inner door stays
    shut (an alarm)."""

    # --- visitors ------------------------------------------------------------------------------------
    VISITOR_OVERDUE = "visitor.overdue"
    """A visitor's badge not returned by the end of the visit (an alarm; cleared when it comes back)."""

    # --- readers -------------------------------------------------------------------------------------
    READER_TAMPER = "reader.tamper"
    READER_TAMPER_CLEARED = "reader.tamper_cleared"
    READER_OFFLINE = "reader.offline"
    READER_ONLINE = "reader.online"
    READER_SECURE_CHANNEL_FAILED = "reader.secure_channel_failed"
    """An OSDP reader refused or broke the secure channel handshake (an alarm)."""
    READER_SECURE_CHANNEL_OK = "reader.secure_channel_ok"
    READER_PLAINTEXT = "reader.plaintext"
    """An OSDP reader answering without the secure channel (an alarm)."""
    READER_PLAINTEXT_ENDED = "reader.plaintext_ended"

    # --- controllers and cameras ---------------------------------------------------------------------
    CONTROLLER_ONLINE = "controller.online"
    CONTROLLER_OFFLINE = "controller.offline"
    CAMERA_ONLINE = "camera.online"
    CAMERA_OFFLINE = "camera.offline"
    CAMERA_TAMPER = "camera.tamper"
    """The picture is covered, defocused, turned away, frozen or dark (an alarm; the camera's doors are blind)."""
    CAMERA_TAMPER_CLEARED = "camera.tamper_cleared"
    MOTION_START = "motion.start"
    MOTION_UPDATE = "motion.update"
    MOTION_END = "motion.end"
    EVIDENCE_SAVED = "evidence.saved"
    """A camera's answer to an evidence request: the content hashes of what it stored."""
    EVIDENCE_FAILED = "evidence.failed"

    # --- face checks (``face.<outcome>`` of camera.faces.verify, and the time limit) -----------------
    FACE_VERIFIED = "face.verified"
    FACE_MISMATCH = "face.mismatch"
    FACE_ABSENT = "face.absent"
    """Nobody facing the camera."""
    FACE_SEVERAL = "face.several"
    """More faces (or people) than badges."""
    FACE_SPOOF = "face.spoof"
    """A presentation attack: a photo, print or screen held to the camera instead of a face (an alarm)."""
    FACE_UNVERIFIED = "face.unverified"
    """No answer from the door's cameras in time."""

    # --- alarms (``detail.alarm`` names the kind that raised it) -------------------------------------
    ALARM_RAISED = "alarm.raised"
    ALARM_CLEARED = "alarm.cleared"
    """The condition ended; the alarm stays on the desk's queue until acknowledged."""
    ALARM_ACKNOWLEDGED = "alarm.acknowledged"
    ALARM_ASSIGNED = "alarm.assigned"
    ALARM_RESOLVED = "alarm.resolved"

    # --- console (``console.<command>`` for an operator's door command) ------------------------------
    CONSOLE_LOGIN = "console.login"
    CONSOLE_LOGIN_FAILED = "console.login_failed"
    CONSOLE_LOGOUT = "console.logout"
    CONSOLE_SESSION_ENDED = "console.session_ended"
    """A session refused for being idle, past its absolute end or of a user found disabled (``detail.reason``
    ``idle``, ``expired``, ``user_disabled``). Other endings are recorded by the event that caused them:
    ``console.logout``, ``admin.password_reset``, ``admin.user_disabled``, ``admin.role_changed``
    (``detail.sessions_ended``)."""
    CONSOLE_UNLOCK = "console.unlock"
    CONSOLE_LOCK = "console.lock"
    CONSOLE_LOCKDOWN = "console.lockdown"
    CONSOLE_LIFT_LOCKDOWN = "console.lift_lockdown"
    CONSOLE_FORGED_COMMAND = "console.forged_command"
    """A console command the bridge refused: bad or no signature, stale or replayed, or a user, role or session
    that does not allow it (an alarm; the dead letter says which)."""
    CONSOLE_EVIDENCE_VIEWED = "console.evidence_viewed"
    CONSOLE_EVIDENCE_UNREADABLE = "console.evidence_unreadable"
    """Evidence that failed its integrity check when an operator asked for it."""
    CONSOLE_EXPORT_DOWNLOADED = "console.export_downloaded"
    CONSOLE_WALL_CONNECTED = "console.wall_connected"
    """A wall display's one-time link exchanged for the screen's session (``detail.address``)."""
    CONSOLE_WALL_REFUSED = "console.wall_refused"
    """A wall link that is wrong, used already, expired or revoked (``detail.reason``, ``detail.address``)."""

    # --- administration (people, credentials, users, faces, keys; ``admin.credential_<status>``) -----
    ADMIN_PERSON_ADDED = "admin.person_added"
    ADMIN_PERSON_CHANGED = "admin.person_changed"
    ADMIN_PERSON_LEFT = "admin.person_left"
    ADMIN_CREDENTIAL_ADDED = "admin.credential_added"
    ADMIN_CREDENTIAL_VALIDITY = "admin.credential_validity"
    """A credential's valid-from or valid-until changed."""
    ADMIN_CREDENTIAL_ACTIVE = "admin.credential_active"
    ADMIN_CREDENTIAL_SUSPENDED = "admin.credential_suspended"
    ADMIN_CREDENTIAL_LOST = "admin.credential_lost"
    ADMIN_CREDENTIAL_REVOKED = "admin.credential_revoked"
    ADMIN_USER_ADDED = "admin.user_added"
    ADMIN_USER_ENABLED = "admin.user_enabled"
    ADMIN_USER_DISABLED = "admin.user_disabled"
    ADMIN_PASSWORD_RESET = "admin.password_reset"
    ADMIN_ROLE_CHANGED = "admin.role_changed"
    ADMIN_WALL_ADDED = "admin.wall_added"
    """A wall display (a console user of role wall) and its one-time link (``detail.link_expires``)."""
    ADMIN_WALL_REVOKED = "admin.wall_revoked"
    """A wall display revoked for good: its screen closes (``detail.sessions_ended``)."""
    ADMIN_PERSON_APPROVED = "admin.person_approved"
    """A customer's new person approved by site staff: their credentials work from now."""
    ADMIN_PERSON_REFUSED = "admin.person_refused"
    ADMIN_VISIT_REGISTERED = "admin.visit_registered"
    """A host registered a visitor for a time window (``detail.state``: the visitor and the visit)."""
    ADMIN_VISIT_CHECKED_IN = "admin.visit_checked_in"
    """The desk checked the visitor's ID and issued the temporary badge."""
    ADMIN_VISIT_BADGE_RETURNED = "admin.visit_badge_returned"
    ADMIN_VISIT_CANCELLED = "admin.visit_cancelled"
    ADMIN_REQUEST_OPENED = "admin.request_opened"
    """An access request: a level for a time window, with a reason (``detail.state``: the request)."""
    ADMIN_REQUEST_ENDORSED = "admin.request_endorsed"
    """A tenant admin approved their person's request; site staff decide next."""
    ADMIN_REQUEST_APPROVED = "admin.request_approved"
    """Approved by site staff: the level opens to the person inside the window."""
    ADMIN_REQUEST_REFUSED = "admin.request_refused"
    ADMIN_REQUEST_EXPIRED = "admin.request_expired"
    """An approved request's window ended: its level is revoked (recorded by the bridge at the end)."""
    ADMIN_REQUEST_CANCELLED = "admin.request_cancelled"
    ADMIN_FACE_ENROLLED = "admin.face_enrolled"
    ADMIN_FACE_REMOVED = "admin.face_removed"
    ADMIN_KEY_ROTATED = "admin.key_rotated"
    ADMIN_OSDP_KEY_SET = "admin.osdp_key_set"
    ADMIN_SITE_SYNCED = "admin.site_synced"
    """The site file's schedules and access levels written to the database (``detail.state``)."""
    ADMIN_CHANGE = "admin.change"
    """An administrative change waiting for the writer (badge_bridge.audited); recorded only as the kind an
    ``audit.quarantined`` entry names, when the change failed in the database."""
    ADMIN_STATE_BASELINE = "admin.state_baseline"
    """Every access table as it stood when its binding to the log began (an upgrade): ``detail.state``."""

    # --- the bridge and its log ----------------------------------------------------------------------
    BRIDGE_STARTED = "bridge.started"
    BRIDGE_STOPPED = "bridge.stopped"
    BRIDGE_TOOK_OVER = "bridge.took_over"
    """A standby took its partition's lease (the active died, hung or was cut off): ``detail`` names the
    holder it took it from and both fencing tokens."""
    STATE_APPLIED = "state.applied"
    """Shared state another partition changed and this one acted on (a site lockdown reaching its doors)."""
    AUDIT_QUARANTINED = "audit.quarantined"
    """Stands in for an event the database refused; its fields are kept as escaped text."""
    AUDIT_PRUNED = "audit.pruned"
    AUDIT_FOREIGN_ENTRY = "audit.foreign_entry"
    """A row in the writer's chain that no signature of ours covers (an alarm, critical): the writer goes on
    in a new chain and never extends or signs over it."""
    AUDIT_CHAIN_CONTINUED = "audit.chain_continued"
    """First entry of a chain a writer started after finding a foreign row: names the chain and the last
    entry it wrote there."""
    AUDIT_FORK_DETECTED = "audit.fork_detected"
    """A witness holds a head this log contradicts: rewritten, rolled back or cut (an alarm)."""
    AUDIT_WITNESS_UNREACHABLE = "audit.witness_unreachable"
    """A witness has not countersigned for a while; heads queue, doors keep working (an alarm)."""
    AUDIT_STATE_MISMATCH = "audit.state_mismatch"
    """People, credentials, levels, schedules or console users differ from what the log's admin entries
    produce (an alarm; ``detail.rows`` names them)."""
    AUDIT_VERIFIED = "audit.verified"
    BACKUP_MADE = "backup.made"
    BACKUP_RESTORED = "backup.restored"
    FIRMWARE_PUSHED = "firmware.pushed"
    INPUT_REJECTED = "input.rejected"
    """Input refused and kept in the dead letters for the operator."""
