"""The detections, as one pass over audit events with the state they need: sliding windows,
today's distinct subjects per principal, day baselines (own and peers'), API keys' origins.
Each finding names its principal, subjects by id and the events behind it; its reason text
names no customer value. See ``default_detections.yaml`` for the thresholds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fiduciary.monitoring.alerts import Finding
from fiduciary.monitoring.pack import DetectionPack, Severity
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    audit_events,
    audit_subjects,
    blind_index,
    monitor_days,
    records,
    subjects,
    system_state,
)

#: Accesses to a customer: each names the subjects it touched.
TOUCHES = frozenset({"record.read", "subject.read", "subject.records", "record.search",
                     "records.export", "record.update", "record.verify"})
#: Every action some detection reads; any other event matters only when it is a refusal
#: (``DENIED`` in its canonical JSON), or when its actor is not a known staff user (an API
#: key's every use counts): the monitor parses no other.
OBSERVED = TOUCHES | {"auth.login", "auth.login_failed", "auth.break_glass",
                      "break_glass.review"}
DENIED = '"decision":"deny"'
_CHUNK = 500
_NO_HOURS = (0,) * 24
_KEY_STATE = "monitor.key:"


@dataclass(frozen=True)
class Suppression:
    detection: str
    principal: str | None
    subject_id: str | None
    #: Who made it: never covers findings about its author (an analyst who suppressed a
    #: whole detection would otherwise have hidden their own snooping too).
    created_by: str = ""

    def covers(self, f: Finding) -> bool:
        return (self.detection == f.detection
                and f.principal_name != self.created_by
                and (self.principal is None or self.principal == f.principal_name)
                and (self.subject_id is None or self.subject_id in f.subject_ids))


@dataclass
class Profiles:
    """What the monitor knows of staff and watched subjects, read at the start of a run."""

    #: user id -> (username, own subject id, surname digest, created_at)
    staff: dict[str, tuple[str, str | None, bytes | None, datetime]]
    #: subject id -> (category, handlers' usernames)
    watchlist: dict[str, tuple[str, set[str]]]
    suppressions: list[Suppression]
    #: subject id -> id of the staff user who is that customer
    linked: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.linked = {s[1]: uid for uid, s in self.staff.items() if s[1]}


class _Window:
    """Timestamps (and payloads) within the last ``span``, with the running sum of the
    counts added with them (records read or exported: no re-summing per event)."""

    __slots__ = ("items", "span", "total")

    def __init__(self, span: timedelta) -> None:
        self.span = span
        self.items: deque[tuple[datetime, Any, int]] = deque()
        self.total = 0

    def add(self, at: datetime, item: Any, count: int = 0) -> None:
        self.items.append((at, item, count))
        self.total += count
        edge = at - self.span
        while self.items and self.items[0][0] < edge:
            self.total -= self.items.popleft()[2]


@dataclass
class _Principal:
    kind: str
    id: str
    name: str | None
    role: str


@dataclass
class _KeyState:
    origins: set[str]
    events: int
    max_hour: int
    hour: str = ""
    in_hour: int = 0
    dirty: bool = False


def _opens(action: str, subject_ids: Sequence[str]) -> bool:
    """Whether an access opened a customer's record: a search's list of several matches
    shows who bears a name, not one customer's file."""
    return action != "record.search" or len(subject_ids) == 1


def _percentile(values: list[int], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Detectors:
    def __init__(self, db: Database, pack: DetectionPack, profiles: Profiles,
                 pseudonymised: Iterable[str] = ()) -> None:
        self.db = db
        self._pseudonymised = frozenset(pseudonymised)
        self.pack = pack
        self.d = pack.detections
        self.zone = pack.zone
        self.on = set(pack.enabled())
        self.profiles = profiles
        #: While rebuilding state from events already processed: find nothing.
        self.warming = False
        # per principal and local day, as it happens: distinct subjects, accesses by hour
        self._live: dict[str, dict[str, set[str]]] = defaultdict(dict)
        self._live_hours: dict[str, dict[str, list[int]]] = defaultdict(dict)
        self._role_of: dict[str, str] = {}
        self._principals: dict[str, _Principal] = {}
        self._dirty: set[tuple[str, str]] = set()
        # past days from monitor_days: principal -> day -> (subjects, hours)
        self._days: dict[str, dict[str, tuple[int, list[int]]]] = defaultdict(dict)
        self._roles_loaded: set[str] = set()
        self._role_members: dict[str, set[str]] = defaultdict(set)
        self._thresholds: dict[tuple[str, str], tuple[float, float] | None] = {}
        self._peer_week: dict[tuple[str, str], float | None] = {}
        self._peer_day: dict[tuple[str, str], float] = {}
        self._usual: dict[tuple[str, str], tuple[list[bool], str, int]] = {}
        self._week_before: dict[tuple[str, str], int] = {}
        #: principal id -> their latest sign-in seen, None for none (dormant_account)
        self._last_login: dict[str, datetime | None] = {}
        #: UTC hour of an event's time -> its local (day, hour, weekday) in the pack's zone
        self._local: dict[str, tuple[str, int, int] | None] = {}
        #: surname digest -> share of persons with it (same_surname keeps to rare ones)
        self._surname_share: dict[bytes, float] = {}
        self._fired: set[str] = set()
        self._latest: datetime | None = None
        self._windows: dict[tuple[str, str], _Window] = {}
        self._keys: dict[str, _KeyState] = {}
        # per run caches of subject facts
        #: subject id -> category, of subjects a watch attribute puts on the watch list
        self._watched: dict[str, str] | None = None
        self._persons: int | None = None
        self._surnames: dict[str, set[bytes]] = {}
        self._handlers: dict[str, set[str]] = {}

    def refresh(self, profiles: Profiles) -> None:
        """A new run: staff, watch list and suppressions as they are now; subject facts
        re-read."""
        self.profiles = profiles
        self._watched = None
        self._persons = None
        self._surname_share.clear()
        self._surnames.clear()
        self._handlers.clear()

    # -- prefetch --------------------------------------------------------------------------
    def prefetch(self, events: list[dict[str, Any]], first_leaf: int | None = None) -> None:
        """Subject attributes (watch list) and surname digests for the subjects staff touch
        in this batch, and the sign-in before the batch of those signing in for the first
        time this monitor sees: a few queries rather than one per event."""
        surnamed: set[str] = set()
        signing_in: set[str] = set()
        staff = self.profiles.staff
        for ev in events:
            action = ev["action"]
            if action in TOUCHES and ev["actor"]["kind"] == "user":
                s = staff.get(ev["actor"]["id"])
                if s is not None and s[2] is not None:
                    surnamed.update(ev["subject_ids"])
            elif action == "auth.login" and ev["actor"]["kind"] == "user" \
                    and ev["actor"]["id"] not in self._last_login:
                signing_in.add(ev["actor"]["id"])
        with self.db.read() as conn:
            if signing_in and first_leaf is not None and not self.warming \
                    and "dormant_account" in self.on:
                ids = sorted(signing_in)
                for i in range(0, len(ids), _CHUNK):
                    part = ids[i:i + _CHUNK]
                    for pid in part:
                        self._last_login[pid] = None
                    for r in conn.execute(
                            sa.select(audit_events.c.actor, sa.func.max(audit_events.c.at))
                            .where(audit_events.c.actor.in_(part),
                                   audit_events.c.leaf_index < first_leaf,
                                   audit_events.c.action == "auth.login")
                            .group_by(audit_events.c.actor)):
                        self._last_login[r[0]] = r[1]
            if self._watched is None:
                self._watched = self._watched_by_attribute(conn)
            need = [s for s in surnamed if s not in self._surnames]
            for i in range(0, len(need), _CHUNK):
                part = need[i:i + _CHUNK]
                for sid in part:
                    self._surnames[sid] = set()
                for r in conn.execute(sa.select(blind_index.c.subject_id, blind_index.c.digest)
                                      .where(blind_index.c.subject_id.in_(part),
                                             blind_index.c.collection == "persons",
                                             blind_index.c.field == "last_name")):
                    self._surnames[r.subject_id].add(bytes(r.digest))

    def _watched_by_attribute(self, conn: Any) -> dict[str, str]:
        """Subjects a watch attribute (vip, employee) puts on the watch list, once a run: a
        text match narrows the scan, the JSON decides."""
        names = self.pack.settings.watch_attributes
        if not names:
            return {}
        out: dict[str, str] = {}
        q = sa.select(subjects.c.id, subjects.c.attributes).where(sa.or_(
            *(subjects.c.attributes.contains(f'"{n}"', autoescape=True) for n in names)))
        for r in conn.execute(q):
            attrs = json.loads(r.attributes)
            category = next((n for n in names if attrs.get(n)), None)
            if category is not None:
                out[r.id] = category
        return out

    def _rare(self, digest: bytes) -> bool:
        """A surname few customers share: a common one (Smith) says nothing of kinship."""
        share = self._surname_share.get(digest)
        if share is None:
            with self.db.read() as conn:
                if self._persons is None:
                    self._persons = int(conn.execute(
                        sa.select(sa.func.count()).select_from(blind_index).where(
                            blind_index.c.collection == "persons",
                            blind_index.c.field == "last_name")).scalar_one())
                total = self._persons
                same = int(conn.execute(sa.select(sa.func.count()).select_from(blind_index)
                                        .where(blind_index.c.digest == digest,
                                               blind_index.c.field == "last_name"))
                           .scalar_one())
            # Few enough people by count or by share: a small book makes every name rare.
            share = self._surname_share[digest] = 0.0 if same <= self.d.same_surname.rare_count \
                else same / total
        return share <= self.d.same_surname.max_share

    def _handlers_of(self, sid: str) -> set[str]:
        """Usernames whose work involves the subject: the watch list's handlers and whoever
        the pack's handler fields name on the subject's records (an assigned adjuster)."""
        got = self._handlers.get(sid)
        if got is not None:
            return got
        out = set(self.profiles.watchlist.get(sid, ("", set()))[1])
        fields = self.pack.settings.handler_fields
        if fields:
            with self.db.read() as conn:
                for r in conn.execute(sa.select(records.c.collection, records.c.clear).where(
                        records.c.subject_id == sid, records.c.collection.in_(list(fields)))):
                    clear = json.loads(r.clear)
                    out.update(str(clear[f]) for f in fields[r.collection] if clear.get(f))
        self._handlers[sid] = out
        return out

    # -- the pass --------------------------------------------------------------------------
    def observe(self, ev: dict[str, Any]) -> list[Finding]:
        actor = ev["actor"]
        kind = actor["kind"]
        action = ev["action"]
        at = datetime.fromisoformat(ev["time"])
        if self._latest is None or at > self._latest:
            self._latest = at
        out: list[Finding] = []
        if action == "auth.login_failed":
            self._failed_login(ev, at, out)
            return self._keep(out)
        if kind not in ("user", "api_key") or not actor["id"]:
            return []
        role = actor["roles"][0] if actor["roles"] else kind
        p = self._principals.get(actor["id"])
        if p is None or p.name != actor["name"] or p.role != role or p.kind != kind:
            p = self._principals[actor["id"]] = _Principal(kind, actor["id"], actor["name"],
                                                           role)
            self._role_of[p.id] = role
        hour, weekday, day = self._local_time(ev["time"], at)
        decision = ev["decision"]
        if kind == "api_key":
            self._api_key(p, ev, at, out)
        if decision == "deny" and not action.startswith("auth.") \
                and action != "break_glass.review":
            self._denied(p, ev, at, out)
        if action in ("record.search", "record.verify", "record.search.attempt"):
            self._search(p, ev, at, out)
        if action == "auth.login" and kind == "user":
            self._hour(p, ev, hour, weekday, day, out)
            self._dormant(p, ev, at, out)
        elif action == "auth.break_glass":
            self._break_glass(p, ev, at, out)
        elif action == "break_glass.review":
            self._break_glass_review(p, ev, out)
        if action in TOUCHES and decision != "deny" and ev["subject_ids"]:
            if kind == "user":
                self._hour(p, ev, hour, weekday, day, out)
                # Pseudonymised data (analytics) shows nobody who the customer is.
                if ev.get("purpose") not in self._pseudonymised:
                    self._subjects(p, ev, day, out)
                self._volume(p, ev, day, at, out)
            self._bulk(p, ev, at, out)
        return self._keep(out) if out else out

    def _local_time(self, text: str, at: datetime) -> tuple[int, int, str]:
        """(local hour, weekday, local day) of an event, from a cache per UTC hour when the
        zone's offset is whole hours and does not change within that hour."""
        key = text[:13] if text.endswith("Z") else ""
        got = self._local.get(key)
        if got is None and key and key not in self._local:
            start = at.replace(minute=0, second=0, microsecond=0)
            first = start.astimezone(self.zone)
            offset = first.utcoffset()
            if offset is not None and offset.total_seconds() % 3600 == 0 and offset == (
                    start + timedelta(minutes=59, seconds=59)).astimezone(self.zone).utcoffset():
                got = (first.date().isoformat(), first.hour, first.weekday())
            if len(self._local) > 10_000:
                self._local.clear()
            self._local[key] = got
        if got is None:
            local = at.astimezone(self.zone)
            return local.hour, local.weekday(), local.date().isoformat()
        return got[1], got[2], got[0]

    def _keep(self, out: list[Finding]) -> list[Finding]:
        if self.warming or not out:
            return []
        kept = []
        for f in out:
            if f.dedup_key not in self._fired:
                self._fired.add(f.dedup_key)
                kept.append(f)
        return kept

    def _may_fire(self, detection: str, key: str) -> bool:
        """Whether a finding with this key could still be kept (see :meth:`_keep`): a burst
        past its threshold would otherwise build, on every further read, a finding listing
        the whole window's events only to drop it as already raised."""
        return not self.warming and f"{detection}:{key}" not in self._fired

    def suppressed(self, f: Finding) -> bool:
        return any(s.covers(f) for s in self.profiles.suppressions)

    def _finding(self, name: str, p: _Principal, key: str, reason: str,
                 event_ids: Iterable[str], subject_ids: Iterable[str] = (),
                 severity: Severity | None = None, score: float | None = None,
                 **details: Any) -> Finding:
        spec = self.pack.detection(name)
        return Finding(detection=name, severity=severity or spec.severity,
                       score=spec.score if score is None else score,
                       principal_kind=p.kind, principal_id=p.id, principal_name=p.name,
                       reason=reason, dedup_key=f"{name}:{key}",
                       event_ids=list(dict.fromkeys(event_ids)),
                       subject_ids=sorted(set(subject_ids)), details=details)

    def _window(self, name: str, who: str, minutes: int) -> _Window:
        w = self._windows.get((name, who))
        if w is None:
            w = self._windows[(name, who)] = _Window(timedelta(minutes=minutes))
        return w

    @staticmethod
    def _bucket(at: datetime, minutes: int) -> int:
        return int(at.timestamp()) // (minutes * 60)

    # -- who the subject is ----------------------------------------------------------------
    def _subjects(self, p: _Principal, ev: dict[str, Any], day: str,
                  out: list[Finding]) -> None:
        me = self.profiles.staff.get(p.id)
        own = me[1] if me else None
        surname = me[2] if me else None
        for sid in ev["subject_ids"]:
            if "self_access" in self.on and sid == own:
                out.append(self._finding(
                    "self_access", p, f"{p.id}:{sid}:{day}",
                    "a staff member accessed the customer record that is themselves",
                    [ev["id"]], [sid], action=ev["action"]))
                continue
            other = self.profiles.linked.get(sid)
            if "coworker_access" in self.on and other is not None and other != p.id \
                    and p.name not in self._handlers_of(sid):
                out.append(self._finding(
                    "coworker_access", p, f"{p.id}:{sid}:{day}",
                    "a staff member accessed the customer record of a co-worker",
                    [ev["id"]], [sid], action=ev["action"], coworker_user_id=other))
            watched = self.profiles.watchlist.get(sid)
            category = watched[0] if watched else (self._watched or {}).get(sid)
            if "watchlist_subject" in self.on and category is not None \
                    and p.name not in self._handlers_of(sid):
                out.append(self._finding(
                    "watchlist_subject", p, f"{p.id}:{sid}:{day}",
                    f"a watched customer ({category}) was accessed by someone who is not "
                    "one of its handlers", [ev["id"]], [sid], category=category,
                    action=ev["action"]))
            if "same_surname" in self.on and surname is not None \
                    and surname in self._surnames.get(sid, ()):
                self._same_surname(p, ev, sid, surname, day, out)

    def _same_surname(self, p: _Principal, ev: dict[str, Any], sid: str, surname: bytes,
                      day: str, out: list[Finding]) -> None:
        """A rare shared surname is enough; a common one (Smith) is a coincidence until the
        customer's record is opened again on another day (a relative checked on, not a
        caller served), within the pack's window."""
        key = f"{p.id}:{sid}"
        if f"same_surname:{key}" in self._fired:
            return
        rare = self._rare(surname)
        if not rare and (self.warming or not _opens(ev["action"], ev["subject_ids"])):
            return
        if p.name in self._handlers_of(sid):
            return
        if rare:
            out.append(self._finding(
                "same_surname", p, key,
                "a staff member accessed a customer who shares their surname, without "
                "handling their file", [ev["id"]], [sid], action=ev["action"]))
            return
        spec = self.d.same_surname
        days = self._days_opened(p.id, sid, ev, spec.common_window_days)
        days.pop(day, None)  # today counts once, with this event
        if len(days) + 1 >= spec.common_repeat_days:
            out.append(self._finding(
                "same_surname", p, key,
                f"a staff member opened the record of a customer who shares their (common) "
                f"surname on {len(days) + 1} days within {spec.common_window_days} days, "
                "without handling their file", [*days.values(), ev["id"]], [sid],
                action=ev["action"], days=len(days) + 1, common_surname=True))

    def _days_opened(self, pid: str, sid: str, ev: dict[str, Any], window: int
                     ) -> dict[str, str]:
        """Local day -> first event id, of the days before ``ev`` (within ``window`` days) on
        which the principal opened the customer's record, from the trail (a restart or a
        second monitor knows them too)."""
        at = datetime.fromisoformat(ev["time"])
        out: dict[str, str] = {}
        rows: list[Any] = []
        with self.db.read() as conn:
            # The customer's events (by their key), then the principal's among them: a filter
            # on the actor would make the planner walk all of the principal's events.
            ids = [e for e in conn.execute(sa.select(audit_subjects.c.event_id).where(
                audit_subjects.c.subject_id == sid)).scalars() if e != ev["id"]]
            for i in range(0, len(ids), _CHUNK):
                rows += [r for r in conn.execute(
                    sa.select(audit_events.c.event_id, audit_events.c.at, audit_events.c.actor,
                              audit_events.c.action, audit_events.c.subject_ids,
                              audit_events.c.event)
                    .where(audit_events.c.event_id.in_(ids[i:i + _CHUNK])))
                    if r.actor == pid and r.action in TOUCHES
                    and at - timedelta(days=window) <= r.at <= at]
        rows.sort(key=lambda r: r.at)
        for r in rows:
            if r.event is None or DENIED in r.event \
                    or not _opens(r.action, r.subject_ids.split()) \
                    or json.loads(r.event).get("purpose") in self._pseudonymised:
                continue
            out.setdefault(r.at.astimezone(self.zone).date().isoformat(), r.event_id)
        return out

    # -- volume ----------------------------------------------------------------------------
    def _hour(self, p: _Principal, ev: dict[str, Any], hour: int, weekday: int, day: str,
              out: list[Finding]) -> None:
        hours = self._live_hours[p.id].get(day)
        if hours is None:
            hours = self._live_hours[p.id][day] = [0] * 24
            self._live[p.id].setdefault(day, set())
        hours[hour] += 1
        if not self.warming:
            self._dirty.add((p.id, day))
            if "off_hours" in self.on:
                self._off_hours(p, ev, hour, weekday, day, out)

    def _history(self, pid: str, role: str, day: str, span: int
                 ) -> dict[str, tuple[int, Sequence[int]]]:
        """The principal's past days within ``span`` days before ``day``."""
        self._load_role(role)
        first = (date.fromisoformat(day) - timedelta(days=span)).isoformat()
        out: dict[str, tuple[int, Sequence[int]]] = {
            d: v for d, v in self._days.get(pid, {}).items() if first <= d < day}
        hours = self._live_hours.get(pid, {})
        for d, seen in self._live.get(pid, {}).items():
            if first <= d < day:
                stored = out.get(d)
                live_hours = hours.get(d, _NO_HOURS)
                if stored is None:
                    out[d] = (len(seen), live_hours)
                    continue
                # A day rebuilt at start may cover only its tail: the larger count is right.
                out[d] = (max(stored[0], len(seen)),
                          [max(a, b) for a, b in zip(stored[1], live_hours, strict=True)])
        return out

    def _load_role(self, role: str) -> None:
        if role in self._roles_loaded:
            return
        self._roles_loaded.add(role)
        with self.db.read() as conn:
            for r in conn.execute(sa.select(monitor_days).where(monitor_days.c.role == role)):
                self._days[r.principal_id].setdefault(r.day, (r.subjects, json.loads(r.hours)))
                self._role_members[role].add(r.principal_id)

    def _off_hours(self, p: _Principal, ev: dict[str, Any], h: int, weekday: int, day: str,
                   out: list[Finding]) -> None:
        key = (p.id, day)
        usual = self._usual.get(key)
        if usual is None:
            usual = self._usual[key] = self._usual_hours(p, day, weekday)
        hours, basis, known = usual
        if not hours[h]:
            out.append(self._finding(
                "off_hours", p, f"{p.id}:{day}", f"access at {h:02d}:00 local time, outside "
                f"{basis}", [ev["id"]], ev["subject_ids"], local_hour=h, history_days=known))

    def _usual_hours(self, p: _Principal, day: str, weekday: int
                     ) -> tuple[list[bool], str, int]:
        """Which local hours of ``day`` are usual for the principal, from the days before it
        (once per principal and day: the past does not change during the day)."""
        spec = self.d.off_hours
        past = self._history(p.id, p.role, day, spec.history_days)
        columns = list(zip(*(hours for _, hours in past.values()), strict=True)) or [()] * 24
        total = [sum(c) for c in columns]
        days_at = [len(c) - c.count(0) for c in columns]  # past days each hour saw them
        n_all = sum(total)
        learned = len(past) >= spec.min_history_days and n_all > 0
        wh = self.pack.settings.working_hours
        # Hours they have worked on two days or more are theirs, however new they are.
        seen = [days_at[h - 1] + days_at[h] + days_at[(h + 1) % 24] >= 2 for h in range(24)]
        if learned:
            common = [t / n_all >= spec.min_hour_share for t in total]
            out = [seen[h] or common[h - 1] or common[h] or common[(h + 1) % 24]
                   for h in range(24)]
        else:
            workday = weekday in wh.weekdays
            out = [seen[h] or (wh.start <= h < wh.end and workday) for h in range(24)]
        basis = "their usual hours" if learned else \
            "working hours (too little history to learn theirs)"
        return out, basis, len(past)

    def _volume(self, p: _Principal, ev: dict[str, Any], day: str, at: datetime,
                out: list[Finding]) -> None:
        seen = self._live[p.id].setdefault(day, set())
        before = len(seen)
        # A search's list of matches is not a day's work through customers: it counts when
        # it opens one (search_sweep watches the searching itself).
        if ev["action"] != "record.search" or len(ev["subject_ids"]) == 1:
            seen.update(ev["subject_ids"])
        if self.warming:
            return
        self._dirty.add((p.id, day))
        if len(seen) == before:
            return
        self._role_members[p.role].add(p.id)
        count = len(seen)
        spec = self.d.volume_spike
        if "volume_spike" in self.on and count >= spec.min_subjects:
            limits = self._volume_limits(p, day)
            if limits is not None and count > limits[0] and count > limits[1]:
                out.append(self._finding(
                    "volume_spike", p, f"{p.id}:{day}",
                    f"{count} distinct customers in a day, above their own baseline "
                    f"({limits[0]:.0f}) and their peers' ({limits[1]:.0f})",
                    [ev["id"]], [], subjects=count, own_limit=round(limits[0], 1),
                    peer_limit=round(limits[1], 1)))
        drip = self.d.slow_drip
        if "slow_drip" in self.on:
            key = (p.id, day)
            earlier = self._week_before.get(key)
            if earlier is None:
                earlier = self._week_before[key] = sum(
                    v[0] for v in self._history(p.id, p.role, day, drip.window_days - 1).values())
            week = count + earlier
            if week >= drip.min_subjects:
                key = (p.role, day)
                limit = self._peer_week[key] if key in self._peer_week \
                    else self._peer_week_limit(p.role, day)
                if limit is not None and week > limit:
                    iso = date.fromisoformat(day).isocalendar()
                    out.append(self._finding(
                        "slow_drip", p, f"{p.id}:{iso.year}-W{iso.week:02d}",
                        f"{week} customers touched over {drip.window_days} days, above "
                        f"{drip.peer_factor} times their peers' 99th percentile",
                        [ev["id"]], [], subjects=week, limit=round(limit, 1)))

    def _volume_limits(self, p: _Principal, day: str) -> tuple[float, float] | None:
        key = (p.id, day)
        if key in self._thresholds:
            return self._thresholds[key]
        spec = self.d.volume_spike
        past = [v[0] for v in self._history(p.id, p.role, day, spec.history_days).values()]
        limits: tuple[float, float] | None = None
        if len(past) >= spec.min_history_days:
            med = statistics.median(past)
            mad = statistics.median(abs(x - med) for x in past)
            own = med + spec.mad_factor * max(mad, 1.0)
            limits = (own, self._peer_day_limit(p.role, day))
        self._thresholds[key] = limits
        return limits

    def _peer_day_limit(self, role: str, day: str) -> float:
        """The peers' percentile of distinct subjects a day: once per role and day."""
        key = (role, day)
        got = self._peer_day.get(key)
        if got is None:
            spec = self.d.volume_spike
            peers = [v[0] for pid in self._role_members[role]
                     for v in self._history(pid, role, day, spec.history_days).values()]
            got = self._peer_day[key] = _percentile(peers, spec.peer_percentile)
        return got

    def _peer_week_limit(self, role: str, day: str) -> float | None:
        key = (role, day)
        if key in self._peer_week:
            return self._peer_week[key]
        drip = self.d.slow_drip
        sums = []
        for pid in self._role_members[role]:
            past = self._history(pid, role, day, drip.history_days)
            if len(past) < drip.window_days:
                continue
            # Each peer's window-day sums ending on each past day they worked (two pointers
            # over the days in order).
            days = sorted((date.fromisoformat(d), v[0]) for d, v in past.items())
            lo, total = 0, 0
            for when, n in days:
                total += n
                while days[lo][0] <= when - timedelta(days=drip.window_days):
                    total -= days[lo][1]
                    lo += 1
                sums.append(total)
        limit = None
        if len(self._role_members[role]) >= drip.min_peers and sums:
            limit = drip.peer_factor * _percentile(sums, 99)
        self._peer_week[key] = limit
        return limit

    def _bulk(self, p: _Principal, ev: dict[str, Any], at: datetime,
              out: list[Finding]) -> None:
        if "bulk_export" not in self.on:
            return
        spec = self.d.bulk_export
        n = int(ev["details"].get("result_count", len(ev["record_ids"])) or 0)
        if ev["action"] == "records.export":
            if ev.get("purpose") in self._pseudonymised:
                return  # the analytics export of pseudonyms is the actuary's daily work
            w = self._window("export", p.id, 60)
            w.add(at, (ev["id"], n), n)
            total = w.total
            key = f"{p.id}:export:{self._bucket(at, 60)}"
            if total >= spec.export_records and self._may_fire("bulk_export", key):
                out.append(self._finding(
                    "bulk_export", p, key,
                    f"{total} records exported within an hour",
                    [x[1][0] for x in w.items], [], records=total))
            return
        w = self._window("reads", p.id, spec.window_minutes)
        w.add(at, (ev["id"], n), n)
        total = w.total
        key = f"{p.id}:reads:{self._bucket(at, spec.window_minutes)}"
        if total >= spec.read_records and self._may_fire("bulk_export", key):
            out.append(self._finding(
                "bulk_export", p, key,
                f"{total} records read within {spec.window_minutes} minutes",
                [x[1][0] for x in w.items], [], records=total))

    # -- searching -------------------------------------------------------------------------
    def _search(self, p: _Principal, ev: dict[str, Any], at: datetime,
                out: list[Finding]) -> None:
        if "search_sweep" not in self.on:
            return
        spec = self.d.search_sweep
        action = ev["action"]
        if action == "record.search.attempt":
            return  # the search itself follows (or its refusal)
        details = ev["details"]
        if action == "record.verify":
            hit = bool(details.get("match")) if ev["decision"] != "deny" else False
        else:
            hit = ev["decision"] != "deny" and int(details.get("result_count", 0)) > 0
        query = details.get("query_digests") or {}
        w = self._window("search", p.id, spec.window_minutes)
        w.add(at, (ev["id"], hit, query, ev.get("collection")))
        items = [x[1] for x in w.items]
        n = len(items)
        hits = sum(1 for x in items if x[1])
        why = None
        if n >= spec.min_searches and hits / n <= spec.max_hit_ratio:
            why = (f"{n} searches within {spec.window_minutes} minutes, "
                   f"{hits} of them finding anything")
        else:
            fields_by_value: dict[str, set[str]] = defaultdict(set)
            values_by_field: dict[str, set[str]] = defaultdict(set)
            for _, found, q, coll in items:
                for f, digest in q.items():
                    fields_by_value[digest].add(f"{coll}.{f}")
                    if not found:
                        values_by_field[f"{coll}.{f}"].add(digest)
            if any(len(v) >= spec.fields_per_value for v in fields_by_value.values()):
                why = "one value tried in many fields (an enumeration)"
            elif any(len(v) >= spec.values_per_field for v in values_by_field.values()):
                why = "many values of one field tried without a match (guessing)"
        if why:
            out.append(self._finding(
                "search_sweep", p, f"{p.id}:{self._bucket(at, spec.window_minutes)}", why,
                [x[1][0] for x in w.items], [], searches=n, hits=hits))

    # -- refusals and sign-in --------------------------------------------------------------
    def _denied(self, p: _Principal, ev: dict[str, Any], at: datetime,
                out: list[Finding]) -> None:
        if "denied_burst" not in self.on:
            return
        spec = self.d.denied_burst
        w = self._window("denied", p.id, spec.window_minutes)
        w.add(at, ev["id"])
        if len(w.items) >= spec.denials:
            reasons = sorted({ev.get("reason") or "denied"})
            out.append(self._finding(
                "denied_burst", p, f"{p.id}:{self._bucket(at, spec.window_minutes)}",
                f"{len(w.items)} refusals within {spec.window_minutes} minutes",
                [x[1] for x in w.items], [], denials=len(w.items), last_reason=reasons[0]))

    def _failed_login(self, ev: dict[str, Any], at: datetime, out: list[Finding]) -> None:
        if "failed_login_burst" not in self.on:
            return
        spec = self.d.failed_login_burst
        client = ev.get("client") or "unknown"
        # A name that exists, or the keyed digest standing for what else was typed.
        username = str(ev["details"].get("username") or "")
        typed_as = username or str(ev["details"].get("username_digest") or "")
        w = self._window("login_addr", client, spec.window_minutes)
        w.add(at, (ev["id"], hashlib.sha256(typed_as.encode()).digest()))
        names = {x[1][1] for x in w.items}
        anon = _Principal("anonymous", "", None, "")
        if len(names) >= spec.usernames_per_address:
            f = self._finding(
                "failed_login_burst", anon,
                f"addr:{client}:{self._bucket(at, spec.window_minutes)}",
                f"failed sign-ins for {len(names)} usernames from one address within "
                f"{spec.window_minutes} minutes (password spraying)",
                [x[1][0] for x in w.items], [], client=client, usernames=len(names),
                failures=len(w.items))
            out.append(dataclasses.replace(f, principal_id=None))
        # What was typed as a username may be a password: keys hold a digest of it.
        typed = hashlib.sha256(typed_as.encode()).hexdigest()[:16]
        wu = self._window("login_user", typed, spec.window_minutes)
        wu.add(at, ev["id"])
        if typed_as and len(wu.items) >= spec.failures_per_user:
            uid = next((k for k, s in self.profiles.staff.items() if s[0] == username), None)
            who = _Principal("user", uid or "", username if uid else None, "")
            f = self._finding(
                "failed_login_burst", who,
                f"user:{typed}:{self._bucket(at, spec.window_minutes)}",
                f"{len(wu.items)} failed sign-ins for one account within "
                f"{spec.window_minutes} minutes", [x[1] for x in wu.items], [],
                failures=len(wu.items), client=client, known_user=uid is not None)
            out.append(dataclasses.replace(f, principal_id=uid))

    def _dormant(self, p: _Principal, ev: dict[str, Any], at: datetime,
                 out: list[Finding]) -> None:
        if "dormant_account" not in self.on:
            return
        if self.warming:
            self._last_login[p.id] = at
            return
        spec = self.d.dormant_account
        if p.id in self._last_login:  # seen, or looked up by prefetch
            before = self._last_login[p.id]
        else:  # first sign-in this monitor sees of them: the trail knows the one before
            with self.db.read() as conn:
                before = conn.execute(sa.select(sa.func.max(audit_events.c.at)).where(
                    audit_events.c.actor == p.id, audit_events.c.action == "auth.login",
                    audit_events.c.event_id != ev["id"], audit_events.c.at <= at)).scalar()
        self._last_login[p.id] = at
        if before is None:
            staff = self.profiles.staff.get(p.id)
            before = staff[3] if staff else None
        if before is not None and at - before >= timedelta(days=spec.days):
            idle = (at - before).days
            out.append(self._finding(
                "dormant_account", p, f"{p.id}:{ev['id']}",
                f"sign-in after {idle} days without one", [ev["id"]], [], idle_days=idle))

    def _break_glass(self, p: _Principal, ev: dict[str, Any], at: datetime,
                     out: list[Finding]) -> None:
        if "break_glass" not in self.on or self.warming:
            return
        spec = self.d.break_glass
        with self.db.read() as conn:
            n = int(conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(
                audit_events.c.actor == p.id, audit_events.c.action == "auth.break_glass",
                audit_events.c.at > at - timedelta(days=30),
                audit_events.c.at <= at)).scalar_one())
        high = n >= spec.per_month_high
        out.append(self._finding(
            "break_glass", p, f"grant:{ev['details'].get('grant_id', ev['id'])}",
            f"emergency access (break glass), grant {n} in 30 days",
            [ev["id"]], ev["subject_ids"], severity=Severity.HIGH if high else None,
            grants_30_days=n))

    def _break_glass_review(self, p: _Principal, ev: dict[str, Any],
                            out: list[Finding]) -> None:
        details = ev["details"]
        if "break_glass" not in self.on or details.get("outcome") != "unjustified":
            return
        uid = str(details.get("requester") or "")
        staff = self.profiles.staff.get(uid)
        who = _Principal("user", uid, staff[0] if staff else None, "")
        out.append(self._finding(
            "break_glass", who, f"review:{details.get('grant_id')}",
            "an emergency access was reviewed as unjustified", [ev["id"]], ev["subject_ids"],
            severity=Severity.CRITICAL, score=95, reviewer=p.name))

    def _api_key(self, p: _Principal, ev: dict[str, Any], at: datetime,
                 out: list[Finding]) -> None:
        if "new_api_key_origin" not in self.on:
            return
        spec = self.d.new_api_key_origin
        st = self._keys.get(p.id)
        if st is None:
            with self.db.read() as conn:
                raw = conn.execute(sa.select(system_state.c.value).where(
                    system_state.c.key == _KEY_STATE + p.id)).scalar()
            v = json.loads(raw) if raw else {}
            st = self._keys[p.id] = _KeyState(set(v.get("origins", [])), v.get("events", 0),
                                              v.get("max_hour", 0))
        origin = ev.get("client") or "unknown"
        hour = at.strftime("%Y-%m-%dT%H")
        if hour != st.hour:
            st.max_hour = max(st.max_hour, st.in_hour)
            st.hour, st.in_hour = hour, 0
        st.in_hour += 1
        seasoned = st.events >= spec.min_history_events
        if origin not in st.origins:
            if seasoned and len(st.origins) < 1000:
                out.append(self._finding(
                    "new_api_key_origin", p, f"{p.id}:origin:{origin}",
                    "an API key was used from an address it has never used",
                    [ev["id"]], [], client=origin, known_origins=len(st.origins)))
            st.origins.add(origin)
        if seasoned and st.max_hour and st.in_hour >= spec.min_hour_volume \
                and st.in_hour > spec.volume_factor * st.max_hour:
            out.append(self._finding(
                "new_api_key_origin", p, f"{p.id}:volume:{hour}",
                f"an API key made {st.in_hour} requests in an hour, above "
                f"{spec.volume_factor} times its busiest hour so far",
                [ev["id"]], [], requests=st.in_hour, busiest_hour=st.max_hour))
        st.events += 1
        st.dirty = True

    # -- what to store ---------------------------------------------------------------------
    def _trim(self) -> None:
        """Bound a long-running monitor's memory: windows with nothing left in their span
        (an attacker spraying random usernames makes one each), days past every baseline."""
        if self._latest is None:
            return
        latest = self._latest
        if len(self._windows) > 2000:
            for k in [k for k, w in self._windows.items()
                      if not w.items or w.items[-1][0] < latest - w.span]:
                del self._windows[k]
        horizon = max(self.d.volume_spike.history_days, self.d.off_hours.history_days,
                      self.d.slow_drip.history_days) + 2
        oldest = (latest.astimezone(self.zone).date() - timedelta(days=horizon)).isoformat()
        for days in self._days.values():
            for d in [d for d in days if d < oldest]:
                del days[d]
        for cache in (self._usual, self._week_before, self._thresholds, self._peer_day,
                      self._peer_week):
            if len(cache) > 50_000:
                cache.clear()  # per principal (or role) and day: recomputed on demand
        if len(self._fired) > 200_000:
            self._fired.clear()  # the table's unique key still refuses a repeat

    def dirty_days(self) -> list[dict[str, Any]]:
        out = []
        for pid, day in sorted(self._dirty):
            out.append({"principal_id": pid, "day": day,
                        "role": self._role_of.get(pid, ""),
                        "subjects": len(self._live[pid].get(day, ())),
                        "hours": json.dumps(self._live_hours[pid].get(day, [0] * 24))})
        return out

    def dirty_keys(self) -> list[tuple[str, str]]:
        out = []
        for kid, st in self._keys.items():
            if st.dirty:
                out.append((_KEY_STATE + kid, json.dumps({
                    "origins": sorted(st.origins)[:1000], "events": st.events,
                    "max_hour": max(st.max_hour, st.in_hour)})))
        return out

    def clean(self) -> None:
        """After a commit: forget what is stored, and move each principal's finished days
        (all but its latest) from the live sets into the history."""
        self._dirty.clear()
        for st in self._keys.values():
            st.dirty = False
        self._trim()
        for pid, days in self._live.items():
            if len(days) < 2:
                continue
            latest = max(days)
            hours = self._live_hours[pid]
            for d in [d for d in days if d < latest]:
                seen = days.pop(d)
                h = hours.pop(d, [0] * 24)
                stored = self._days[pid].get(d, (0, [0] * 24))
                self._days[pid][d] = (max(stored[0], len(seen)),
                                      [max(a, b) for a, b in zip(stored[1], h, strict=True)])
