"""Door events and camera motion joined per door, in time windows, into alarms and records.

Pure logic over a stream, like ``doors.DoorMonitor``: the bridge feeds door events (controller clock) and
motion episodes (camera clock) as they arrive, in any order, and calls ``advance(now)`` a few times a
second with its own clock; that returns what can now be decided. No I/O, no threads: the caller holds a
lock.

Why it waits: a grant may arrive after the motion it authorizes (the person walks up, then badges; the
messages take different paths), so each decision waits until every input that could change it has had
time to arrive: the window's end, plus ``skew_s`` (a camera clock may be that far off the controllers'),
plus ``settle_s`` (delivery delay). The contract that makes results independent of arrival order: every
input arrives within ``settle_s`` of when it happened, and camera clocks are within ``skew_s`` of the
controllers'. An input older than the door's horizon (what no pending decision or timely input can need,
``Correlator._collect``) is dropped when it arrives: the data it would be joined with may be gone, and a
finding made from half the picture is worse than none.

Decisions and why they are shaped so:

- Unauthorized entry: a motion episode starting at ``s`` with no grant, exit request or forced-door event
  in ``[s - grant_window - skew, s + approach + skew]``, decided at ``s + approach + skew + settle`` without
  waiting for the end (latency under 2 s with the defaults). Not from an episode whose camera was
  offline just before it started (``approach + skew``): a camera coming back starts with motion that is
  its detector settling, or a person it did not see arrive.
- Tailgating, by count: a start, update or end reporting more objects than the authorizations covering
  the episode. An update carries the episode's start time, not its own, so the time it was seen is the
  bridge's clock at the first ``advance`` after it arrived; the check then waits ``approach + skew +
  settle`` more, the time a second person who walked up has to badge.
- Tailgating, by duration: an episode covered by N >= 1 authorizations that lasts past ``s + N * passage
  + approach + skew``; each authorization made before that limit raises N. Decided while the episode is
  still going, ``skew + settle`` after the limit. Time the camera reported everyone in the zone standing
  still (an update with ``still``, until one saying they move again) does not count: a person waiting at
  the door after badging is one person present, not a second one passing (that is loitering, below).
  While they stand still at the limit the decision waits for them to move or leave.
- Loitering: an episode (someone present in the zone, moving or still) lasting past ``s + loitering``,
  decided ``skew + settle`` after that, whether or not it was authorized; once per stay, and cleared
  (a second, ``ended`` finding) when the episode ends.
- Unused grant, forced confirmed or unconfirmed: motion overlapping the event's window ``[t - approach -
  skew, t + grant_window + skew]``, or its absence at the window's end plus ``skew + settle``: a motion
  start stamped at the window's end by a camera running ``skew`` behind happened ``skew`` later still, so
  the wait is ``t + grant_window + 2 skew + settle``. A forced door is confirmed as soon as the earliest
  overlapping episode has had ``skew + settle`` to be contradicted by an earlier one.
- A door is blind while no camera covering it is online (status intervals widened by ``skew``; a tampered
  camera is reported offline here); no finding is made from absence of motion over a window touching blind
  time, except that such a grant is recorded ``access.blind``: whether anyone passed is unknown, which the
  desk must see rather than a false "nobody passed" or nothing. Cameras that cover a door are the
  ``cameras`` mapping plus any camera that reported motion there; a camera with no status yet is online.
- Cameras covering one door see the same people: an episode overlapping (within ``2 * skew``, both clocks
  may be off) an episode already alarmed for the same kind adds nothing. The earliest start alarms.

Known limits: an episode whose end message is lost stays open (overlapping everything after it on that
door) until its camera starts another episode or goes offline; a grant is not consumed by the episode it
covers, so two separate episodes within one grant window share it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal

from badge_bridge.doors import FORCED
from badge_bridge.event_kinds import EventKind

GRANTED = EventKind.ACCESS_GRANTED
EXIT_REQUEST = EventKind.DOOR_EXIT_REQUEST

UNAUTHORIZED = EventKind.DOOR_UNAUTHORIZED_ENTRY
"""Alarm: motion in a door zone with no grant and no exit request."""
TAILGATING = EventKind.DOOR_TAILGATING
"""Alarm: more people than grants passing."""
UNUSED = EventKind.ACCESS_UNUSED
"""Record: granted, nobody passed (a lent badge, a test swipe)."""
FORCED_CONFIRMED = EventKind.DOOR_FORCED_CONFIRMED
"""Record: the controller's door.forced seen by the camera."""
FORCED_UNCONFIRMED = EventKind.DOOR_FORCED_UNCONFIRMED
"""Record: door.forced with no motion on camera (sensor fault? check it)."""
BLIND = EventKind.ACCESS_BLIND
"""Record: granted while the door's cameras were all blind, no motion seen: who passed is unknown."""
LOITERING = EventKind.DOOR_LOITERING
"""Alarm: someone present in a door zone longer than the door's ``loitering_s``."""
KINDS = frozenset({UNAUTHORIZED, TAILGATING, UNUSED, BLIND, FORCED_CONFIRMED, FORCED_UNCONFIRMED, LOITERING})
ALARMS = frozenset({UNAUTHORIZED, TAILGATING, LOITERING})
_NEVER = datetime.max.replace(tzinfo=UTC)
"""The decision time of one that waits for an input with no deadline (a still person moving again)."""


@dataclass(frozen=True)
class DoorWindows:
    """Per-door correlation windows, seconds. Defaults chosen so passage-to-alarm stays under 2 s."""

    grant_window_s: float = 8.0
    """After a grant or exit request, motion in the zone up to this long counts as that authorized passage."""
    approach_s: float = 1.0
    """Motion may begin this long before the grant or exit request (the person walks up and badges) and
    still belong to it; also how long motion with no authorization is tolerated before the alarm."""
    passage_s: float = 4.0
    """Expected time for one person to pass; an episode lasting longer than grants * passage_s + approach_s
    (with no new grant) is tailgating."""
    skew_s: float = 0.5
    """Camera-to-controller clock tolerance, widening every window on both sides."""
    settle_s: float = 0.3
    """Extra wait for late (out-of-order) inputs before deciding."""
    loitering_s: float = 60.0
    """Someone present in the zone (moving or standing still) this long is loitering; 0 turns it off."""


@dataclass(frozen=True)
class Finding:
    kind: str
    """One of ``KINDS``."""
    door: str
    ts: datetime
    """When it happened (event time, aware UTC): the motion start, the grant, the forced opening."""
    camera: str | None
    causes: tuple[str, ...]
    """Ids of the door and motion events that prove it."""
    detail: dict[str, object]
    """JSON-serializable."""
    ended: bool = False
    """For an alarm with a duration (loitering): the condition ended; ``ts`` is when."""


@dataclass
class _Auth:
    id: str
    ts: datetime
    grant: bool
    """A grant (its absence of motion is recorded) rather than an exit request (not worth a record)."""
    pending: bool
    """The unused-grant decision is still to be made."""


@dataclass
class _Forced:
    id: str
    ts: datetime
    pending: bool = True


@dataclass
class _Update:
    id: str
    peak: int
    seen: datetime | None = None
    """The bridge's clock at the first advance() after it arrived."""
    at: datetime | None = None
    """The update's own time (camera clock), for the still <-> moving reports."""
    still: int = 0
    """Objects reported standing still from ``at`` on; 0: moving from ``at`` on."""


@dataclass
class _End:
    id: str
    ts: datetime
    peak: int
    absorbed: bool = False


@dataclass
class _Episode:
    """One camera's motion at one door, from start to end; built from whichever message comes first."""

    camera: str
    start: datetime
    start_id: str | None = None
    start_peak: int = 0
    updates: dict[str, _Update] = field(default_factory=dict)
    end_msg: _End | None = None
    end: datetime | None = None
    """Effective end: the end message, the camera's next start or the camera going offline; None = ongoing."""
    unauthorized_decided: bool = False
    unauthorized_alarm: bool = False
    """Alarmed, by its own finding or by an overlapping episode's."""
    tailgating_alarm: bool = False
    checked: set[str] = field(default_factory=set)
    """Messages whose object count has been checked against the authorizations."""
    duration_checked: bool = False
    """Checked once, when all it depends on is in: the authorizations it counted may be forgotten after."""
    loitering_decided: bool = False
    loitering_alarm: bool = False
    loitering_cleared: bool = False

    def still_spans(self) -> list[tuple[datetime, datetime | None]]:
        """When everyone in the zone stood still, from the updates: (from, to), to None = still now."""
        spans: list[tuple[datetime, datetime | None]] = []
        for u in sorted((u for u in self.updates.values() if u.at is not None), key=lambda u: (u.at, u.id)):
            assert u.at is not None
            if u.still and (not spans or spans[-1][1] is not None):
                spans.append((max(u.at, self.start), None))
            elif not u.still and spans and spans[-1][1] is None:
                spans[-1] = (spans[-1][0], u.at)
        if spans and spans[-1][1] is None and self.end is not None:
            spans[-1] = (spans[-1][0], max(self.end, spans[-1][0]))
        return spans

    @property
    def key_id(self) -> str:
        return self.start_id or min(self.updates)

    def count_checks(self) -> Iterator[tuple[datetime, int, str]]:
        """(seen, objects, message id) of every message reporting two or more objects."""
        if self.start_id is not None and self.start_peak >= 2:
            yield self.start, self.start_peak, self.start_id
        for u in self.updates.values():
            if u.seen is not None and u.peak >= 2:
                yield max(u.seen, self.start), u.peak, u.id
        if self.end_msg is not None and self.end_msg.peak >= 2:
            yield self.end_msg.ts, self.end_msg.peak, self.end_msg.id


@dataclass
class _Track:
    """One camera at one door: its episodes never overlap, so an end belongs to the latest start before it."""

    camera: str
    episodes: list[_Episode] = field(default_factory=list)
    ends: list[_End] = field(default_factory=list)


def _seconds(s: float) -> timedelta:
    return timedelta(seconds=s)


class _Door:
    def __init__(self, key: str, w: DoorWindows) -> None:
        self.key = key
        self.gw, self.approach, self.passage = _seconds(w.grant_window_s), _seconds(w.approach_s), _seconds(w.passage_s)
        self.skew, self.settle = _seconds(w.skew_s), _seconds(w.settle_s)
        self.loitering = _seconds(w.loitering_s)
        self.margin = self.gw + self.approach + 3 * self.skew + self.settle
        """How far back an undecided item or a new input may need other inputs (see ``_collect``)."""
        self.auths: list[_Auth] = []
        self.forced: list[_Forced] = []
        self.tracks: dict[str, _Track] = {}
        self.cameras: set[str] = set()
        self.horizon: datetime | None = None
        """Everything settled before this is forgotten; inputs older than this are dropped."""

    def episodes(self) -> Iterator[_Episode]:
        for track in self.tracks.values():
            yield from track.episodes

    def covering(self, ep: _Episode, until: datetime | None = None) -> list[_Auth]:
        """Authorizations whose window overlaps the episode, made at or before ``until``, by time."""
        lo = ep.start - self.gw - self.skew
        hi = ep.end + self.approach + self.skew if ep.end is not None else None
        if until is not None:
            hi = until if hi is None else min(hi, until)
        return [a for a in self.auths if lo <= a.ts and (hi is None or a.ts <= hi)]

    def allowance(self, ep: _Episode) -> tuple[list[_Auth], datetime | None]:
        """The authorizations counted for the episode's duration and the limit they allow it: each one made
        before the current limit extends it by one passage. Time standing still is not passage time and
        extends it too; None: they still stand there at the limit (undecided)."""
        counted: list[_Auth] = []
        spans = ep.still_spans()
        limit = _moving_limit(ep.start + self.approach + self.skew, spans)
        for a in self.covering(ep):
            if limit is not None and a.ts > limit:
                break
            counted.append(a)
            limit = _moving_limit(ep.start + len(counted) * self.passage + self.approach + self.skew, spans)
        return counted, limit

    def overlapping(self, lo: datetime, hi: datetime) -> list[_Episode]:
        """Episodes on any camera overlapping ``[lo, hi]``, earliest first."""
        found = [ep for ep in self.episodes() if ep.start <= hi and (ep.end is None or ep.end >= lo)]
        return sorted(found, key=lambda ep: (ep.start, ep.camera))

    def near(self, ep: _Episode, other: _Episode) -> bool:
        """The same door-level episode: overlapping, with both cameras' clocks possibly ``skew`` off."""
        tol = 2 * self.skew
        return other is not ep and (other.end is None or ep.start <= other.end + tol) and (
            ep.end is None or other.start <= ep.end + tol)


def _moving_limit(limit: datetime, spans: list[tuple[datetime, datetime | None]]) -> datetime | None:
    """``limit`` pushed back by the still spans that begin before it (each one's whole length)."""
    for a, b in spans:
        if a >= limit:
            break
        if b is None:
            return None
        limit += b - a
    return limit


def _aware(ts: datetime) -> None:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts.isoformat()}: correlation needs aware (UTC) times")


_Due = tuple[tuple[datetime, int, datetime, str, str], Callable[[], Finding | None]]
"""((decision time, priority, event time, camera, id), decide): sorted so that results do not depend on how
many decisions one advance() makes; the unauthorized-entry decision of an episode comes before its
tailgating checks."""


class Correlator:
    def __init__(self, doors: Mapping[str, DoorWindows], cameras: Mapping[str, Iterable[str]] | None = None) -> None:
        """``doors``: only doors with camera coverage. ``cameras``: camera -> the doors it watches (the site
        file's ``cameras[].doors``), so a door is known blind before its camera ever reported motion."""
        self._doors = {key: _Door(key, w) for key, w in doors.items()}
        for camera, watched in (cameras or {}).items():
            for door in watched:
                if door in self._doors:
                    self._doors[door].cameras.add(camera)
        self._status: dict[str, list[tuple[datetime, bool]]] = {}
        """Camera -> (time, online) by time."""
        self._ids: dict[str, datetime] = {}
        """Event ids seen -> the event time, forgotten with the events (a later copy is too late anyway)."""
        self._unseen: list[_Update] = []
        self._clock: datetime | None = None

    # --- inputs ------------------------------------------------------------------------------------------

    def _too_late(self, door: _Door, ts: datetime) -> bool:
        return door.horizon is not None and ts < door.horizon

    def door_event(self, door: str, kind: str, ts: datetime, event_id: str) -> None:
        """Grants and exit requests authorize motion; door.forced asks for a camera's confirmation; other
        kinds and doors without a camera are not correlated."""
        _aware(ts)
        d = self._doors.get(door)
        if d is None or kind not in (GRANTED, EXIT_REQUEST, FORCED) or self._too_late(d, ts) or event_id in self._ids:
            return
        self._ids[event_id] = ts
        if kind == FORCED:
            bisect.insort(d.forced, _Forced(event_id, ts), key=lambda f: (f.ts, f.id))
        else:
            grant = kind == GRANTED
            bisect.insort(d.auths, _Auth(event_id, ts, grant, pending=grant), key=lambda a: (a.ts, a.id))

    def motion(self, door: str, camera: str, state: Literal["start", "update", "end"], ts: datetime, event_id: str,
               objects: int = 1, peak_objects: int = 1, *, at: datetime | None = None, still: int = 0,
               absorbed: bool = False) -> None:
        """``ts``: the episode's start for start and update, its end for end (camera clock). For an update,
        ``at`` is its own time and ``still`` how many stand still from then (0: moving again); for an end,
        ``absorbed`` says it ended by the camera learning a still object into its background."""
        _aware(ts)
        if state not in ("start", "update", "end"):
            raise ValueError(f"motion state {state!r}: expected start, update or end")
        d = self._doors.get(door)
        if d is None or event_id in self._ids:
            return
        d.cameras.add(camera)
        track = d.tracks.setdefault(camera, _Track(camera))
        peak = max(objects, peak_objects)
        if state == "end":
            if any(e.id == event_id for e in track.ends) or (self._too_late(d, ts) and not track.episodes):
                return
            bisect.insort(track.ends, _End(event_id, ts, peak, absorbed), key=lambda e: (e.ts, e.id))
        else:
            ep = next((e for e in track.episodes if e.start == ts), None)
            if ep is None:
                if self._too_late(d, ts):
                    return
                ep = _Episode(camera, ts)
                bisect.insort(track.episodes, ep, key=lambda e: e.start)
            if state == "start":
                if ep.start_id is not None:
                    return
                ep.start_id, ep.start_peak = event_id, peak
            else:
                if event_id in ep.updates:
                    return
                if at is not None:
                    _aware(at)
                ep.updates[event_id] = update = _Update(event_id, peak, at=at, still=still)
                self._unseen.append(update)
        self._ids[event_id] = ts
        self._pair(track)

    def camera_status(self, camera: str, online: bool, ts: datetime) -> None:
        """Offline ends the camera's ongoing episodes (their end message may never come) and blinds the
        doors it alone covers."""
        _aware(ts)
        bisect.insort(self._status.setdefault(camera, []), (ts, online), key=lambda s: s[0])
        for d in self._doors.values():
            if camera in d.tracks:
                self._pair(d.tracks[camera])

    def _pair(self, track: _Track) -> None:
        """Give each episode its end message, in arrival order or not, and its effective end."""
        offline = [ts for ts, online in self._status.get(track.camera, ()) if not online]
        ends, j = track.ends, 0
        for i, ep in enumerate(track.episodes):
            nxt = track.episodes[i + 1].start if i + 1 < len(track.episodes) else None
            while j < len(ends) and ends[j].ts < ep.start:
                j += 1
            ep.end_msg = None
            if j < len(ends) and (nxt is None or ends[j].ts <= nxt):
                ep.end_msg = ends[j]
                j += 1
            off = next((ts for ts in offline if ts >= ep.start), None)
            known = [t for t in (ep.end_msg.ts if ep.end_msg else None, nxt, off) if t is not None]
            ep.end = min(known) if known else None

    # --- blindness ---------------------------------------------------------------------------------------

    def _offline_spans(self, camera: str, skew: timedelta) -> list[tuple[datetime, datetime | None]]:
        spans: list[tuple[datetime, datetime | None]] = []
        off: datetime | None = None
        for ts, online in self._status.get(camera, ()):
            if not online and off is None:
                off = ts
            elif online and off is not None:
                spans.append((off - skew, ts + skew))
                off = None
        if off is not None:
            spans.append((off - skew, None))
        return spans

    @staticmethod
    def _touches(spans: list[tuple[datetime, datetime | None]], lo: datetime, hi: datetime) -> bool:
        return any(a <= hi and (b is None or b >= lo) for a, b in spans)

    def _blind(self, d: _Door, lo: datetime, hi: datetime) -> bool:
        """Was every camera covering the door offline at some moment of ``[lo, hi]``?"""
        if not d.cameras:
            return False
        common: list[tuple[datetime, datetime | None]] | None = None
        for camera in sorted(d.cameras):
            spans = self._offline_spans(camera, d.skew)
            if common is None:
                common = spans
                continue
            both = []
            for a1, b1 in common:
                for a2, b2 in spans:
                    a = max(a1, a2)
                    b = b2 if b1 is None else b1 if b2 is None else min(b1, b2)
                    if b is None or a <= b:
                        both.append((a, b))
            common = both
        return self._touches(common or [], lo, hi)

    # --- decisions ---------------------------------------------------------------------------------------

    def advance(self, now: datetime) -> list[Finding]:
        """Findings whose windows have closed by ``now`` (the bridge's clock), each once; then forget what
        no decision can need any more."""
        _aware(now)
        clock = self._clock = now if self._clock is None else max(self._clock, now)
        for update in self._unseen:
            update.seen = clock
        self._unseen.clear()
        findings = []
        for d in self._doors.values():
            dues = sorted(self._dues(d), key=lambda due: due[0])
            for (at, *_), decide in dues:
                if at <= clock and (finding := decide()) is not None:
                    findings.append(finding)
            self._collect(d, clock, dues)
        self._forget()
        return findings

    def _dues(self, d: _Door) -> Iterator[_Due]:
        tail = d.skew + d.settle
        for a in d.auths:
            if a.pending:
                yield (a.ts + d.gw + d.skew + tail, 3, a.ts, "", a.id), partial(self._unused, d, a)
        for f in d.forced:
            if f.pending:
                yield self._forced_due(d, f), partial(self._forced, d, f)
        for ep in d.episodes():
            if d.loitering and not ep.loitering_decided:
                # an episode that ended sooner is settled at its end: nothing held for a minute per passage
                at = ep.start + d.loitering if ep.end is None else min(ep.start + d.loitering, ep.end)
                yield ((at + tail, 4, ep.start, ep.camera, ep.key_id + "#loitering"),
                       partial(self._loitering, d, ep))
            if ep.loitering_alarm and not ep.loitering_cleared and ep.end is not None:
                yield ((ep.end + tail, 4, ep.start, ep.camera, ep.key_id + "#left"), partial(self._left, d, ep))
            if not ep.unauthorized_decided:
                yield ((ep.start + d.approach + tail, 0, ep.start, ep.camera, ep.key_id),
                       partial(self._unauthorized, d, ep))
            if ep.tailgating_alarm or ep.unauthorized_alarm:
                continue
            for seen, peak, msg in ep.count_checks():
                if msg not in ep.checked:
                    yield ((seen + d.approach + tail, 1, ep.start, ep.camera, msg),
                           partial(self._count, d, ep, seen, peak, msg))
            counted, limit = d.allowance(ep)
            if counted and not ep.duration_checked:
                yield ((_NEVER if limit is None else limit + tail, 2, ep.start, ep.camera, ep.key_id + "#duration"),
                       partial(self._duration, d, ep, counted, limit))

    def _forced_due(self, d: _Door, f: _Forced) -> tuple[datetime, int, datetime, str, str]:
        lo = f.ts - d.approach - d.skew
        seen = d.overlapping(lo, f.ts + d.gw + d.skew)
        at = max(seen[0].start, lo) if seen else f.ts + d.gw + d.skew
        return at + d.skew + d.settle, 3, f.ts, "", f.id

    def _unused(self, d: _Door, a: _Auth) -> Finding | None:
        a.pending = False
        lo, hi = a.ts - d.approach - d.skew, a.ts + d.gw + d.skew
        if d.overlapping(lo, hi):
            return None
        window = {"window_s": [-_s(d.approach + d.skew), _s(d.gw + d.skew)]}
        if self._blind(d, lo, hi):
            return Finding(BLIND, d.key, a.ts, None, (a.id,),
                           {"reason": "granted while every camera of the door was blind (offline or tampered): "
                                      "whether anyone passed is unknown", **window})
        return Finding(UNUSED, d.key, a.ts, None, (a.id,), {"reason": "granted, nobody passed", **window})

    def _forced(self, d: _Door, f: _Forced) -> Finding | None:
        f.pending = False
        lo, hi = f.ts - d.approach - d.skew, f.ts + d.gw + d.skew
        seen = d.overlapping(lo, hi)
        if seen:
            ep = seen[0]
            return Finding(FORCED_CONFIRMED, d.key, f.ts, ep.camera, (f.id, ep.key_id),
                           {"motion_offset_s": _s(ep.start - f.ts)})
        if self._blind(d, lo, hi):
            return None
        return Finding(FORCED_UNCONFIRMED, d.key, f.ts, None, (f.id,),
                       {"reason": "no motion on camera: check the door contact"})

    def _unauthorized(self, d: _Door, ep: _Episode) -> Finding | None:
        ep.unauthorized_decided = True
        lo, hi = ep.start - d.gw - d.skew, ep.start + d.approach + d.skew
        if any(lo <= x.ts <= hi for x in d.auths) or any(lo <= x.ts <= hi for x in d.forced):
            return None
        if self._touches(self._offline_spans(ep.camera, d.skew), ep.start - d.approach - d.skew, ep.start):
            return None
        ep.unauthorized_alarm = True
        if any(o.unauthorized_alarm and d.near(ep, o) for o in d.episodes()):
            return None
        return Finding(UNAUTHORIZED, d.key, ep.start, ep.camera, (ep.key_id,),
                       {"reason": "motion with no grant or exit request"})

    def _tailgating(self, d: _Door, ep: _Episode, counted: list[_Auth], causes: tuple[str, ...],
                    detail: dict[str, object]) -> Finding | None:
        if ep.tailgating_alarm or ep.unauthorized_alarm:
            return None
        ep.tailgating_alarm = True
        if any(o.tailgating_alarm and d.near(ep, o) for o in d.episodes()):
            return None
        grants = sum(a.grant for a in counted)
        detail = {"grants": grants, "exit_requests": len(counted) - grants, **detail}
        return Finding(TAILGATING, d.key, ep.start, ep.camera, tuple(a.id for a in counted) + causes, detail)

    def _count(self, d: _Door, ep: _Episode, seen: datetime, peak: int, msg: str) -> Finding | None:
        ep.checked.add(msg)
        counted = d.covering(ep, until=seen + d.approach + d.skew)
        if not counted or peak <= len(counted):
            return None
        causes = (ep.key_id,) if msg == ep.key_id else (ep.key_id, msg)
        return self._tailgating(d, ep, counted, causes, {"reason": "more people than authorizations",
                                                         "peak_objects": peak})

    def _duration(self, d: _Door, ep: _Episode, counted: list[_Auth], limit: datetime | None) -> Finding | None:
        ep.duration_checked = True
        if limit is None or (ep.end is not None and ep.end <= limit):
            return None
        still = sum((b - a for a, b in ep.still_spans() if a < limit and b is not None), timedelta())
        return self._tailgating(d, ep, counted, (ep.key_id,), {"reason": "in the zone longer than the passages "
                                                               "authorized", "limit_s": _s(limit - ep.start),
                                                               "still_s": _s(still)})

    def _loitering(self, d: _Door, ep: _Episode) -> Finding | None:
        ep.loitering_decided = True
        if ep.end is not None and ep.end < ep.start + d.loitering:
            return None
        ep.loitering_alarm = True
        if any(o.loitering_alarm and d.near(ep, o) and o.start < ep.start for o in d.episodes()):
            ep.loitering_cleared = True  # the other camera's episode carries the alarm and its end
            return None
        return Finding(LOITERING, d.key, ep.start + d.loitering, ep.camera, (ep.key_id,),
                       {"reason": "someone present in the door zone longer than allowed",
                        "loitering_s": _s(d.loitering), "started": ep.start.isoformat()})

    def _left(self, d: _Door, ep: _Episode) -> Finding | None:
        ep.loitering_cleared = True
        assert ep.end is not None
        absorbed = ep.end_msg is not None and ep.end_msg.absorbed and ep.end_msg.ts == ep.end
        detail: dict[str, object] = {"present_s": _s(ep.end - ep.start), "started": ep.start.isoformat(),
                                     "reason": "still so long the camera took it for scenery (left behind?)"
                                     if absorbed else "nobody present any more"}
        return Finding(LOITERING, d.key, ep.end, ep.camera, (ep.key_id,), {**detail, "absorbed": absorbed}, ended=True)

    # --- memory ------------------------------------------------------------------------------------------

    def _collect(self, d: _Door, clock: datetime, dues: list[_Due]) -> None:
        """Forget what is settled and older than any undecided item or future input can look back.

        An undecided item at t needs inputs back to t - grant_window - approach - 2 skew; a future input
        happens after clock - skew - settle; ``margin`` covers both.
        """
        pending = [key[2] for key, _ in dues if key[0] > clock]
        horizon = min([clock, *pending]) - d.margin
        d.horizon = horizon if d.horizon is None else max(d.horizon, horizon)
        d.auths = [a for a in d.auths if a.pending or a.ts >= d.horizon]
        d.forced = [f for f in d.forced if f.pending or f.ts >= d.horizon]
        for track in d.tracks.values():
            track.episodes = [ep for ep in track.episodes if ep.end is None or ep.end >= d.horizon
                              or not ep.unauthorized_decided]
            track.ends = [e for e in track.ends if e.ts >= d.horizon]
            self._pair(track)

    def _forget(self) -> None:
        """Event ids and camera status older than every door's horizon (the last status before it stays:
        it says whether the camera was online then)."""
        horizons = [d.horizon for d in self._doors.values() if d.horizon is not None]
        if not horizons:
            return
        oldest = min(horizons) - max(d.skew for d in self._doors.values())
        self._ids = {i: ts for i, ts in self._ids.items() if ts >= oldest}
        for camera, statuses in self._status.items():
            before = [s for s in statuses if s[0] < oldest]
            self._status[camera] = before[-1:] + [s for s in statuses if s[0] >= oldest]

    def held(self) -> int:
        """Items kept in memory (inputs and event ids): a gauge, flat over days of events if all is well."""
        episodes = sum(len(t.episodes) + len(t.ends) for d in self._doors.values() for t in d.tracks.values())
        doors = sum(len(d.auths) + len(d.forced) for d in self._doors.values())
        return episodes + doors + len(self._ids) + sum(len(s) for s in self._status.values()) + len(self._unseen)


def _s(td: timedelta) -> float:
    return round(td.total_seconds(), 6)
