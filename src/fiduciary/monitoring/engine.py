"""The monitor: reads audit events in leaf order (the order the sequencer committed them) from
a stored cursor, runs the detections, and writes the alerts, the day baselines and the cursor
in one transaction, so a rerun or a second monitor never repeats an alert and a restart
resumes where the last commit left off. It reads audit events, subject attributes, staff
profiles and the handler fields the pack names — never a sealed value."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.audit.events import AuditLog
from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import Clock
from fiduciary.datamap import DataMap
from fiduciary.monitoring.alerts import Finding, insert_finding
from fiduciary.monitoring.delivery import AlertDelivery
from fiduciary.monitoring.detectors import (
    DENIED,
    OBSERVED,
    Detectors,
    Profiles,
    Suppression,
)
from fiduciary.monitoring.pack import DetectionPack
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    audit_events,
    monitor_days,
    monitor_suppressions,
    monitor_watchlist,
    system_state,
    users,
)

log = logging.getLogger("fiduciary.monitoring")

CURSOR_KEY = "monitor.cursor"
_PG_LOCK = 0x4D4F4E49  # one monitor commits at a time across servers
#: Windows and "today" are rebuilt from this much of the trail before the cursor.
WARM = timedelta(hours=26)


@dataclass(frozen=True)
class MonitorRun:
    events: int
    alerts: int
    suppressed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "alerts": self.alerts, "suppressed": self.suppressed}


class Monitor:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, trail: AuditTrail,
                 pack: DetectionPack, datamap: DataMap, delivery: AlertDelivery,
                 batch_size: int = 5000) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.trail = trail
        self.pack = pack
        self.datamap = datamap
        self.delivery = delivery
        self.batch_size = batch_size
        self._detectors: Detectors | None = None
        #: The cursor the in-memory state has seen up to; another monitor moving the stored
        #: cursor past it makes this one rebuild its state.
        self._seen = -1
        self._lock = threading.Lock()

    # -- running ---------------------------------------------------------------------------
    def run_once(self, sequence: bool = True) -> MonitorRun:
        """Process every sequenced event after the cursor (sequencing what is waiting first)."""
        with self._lock:
            if sequence:
                self.trail.sequence()
            events = alerts = suppressed = 0
            profiles = self._profiles()
            fresh = True
            while True:
                cursor = self._cursor()
                det = self._state(cursor, profiles, fresh)
                fresh = False
                rows = self._batch(cursor, None)
                if not rows:
                    break
                parsed = _parse(det, rows)
                det.prefetch(parsed, rows[0].leaf_index)
                findings: list[Finding] = []
                for ev in parsed:
                    findings.extend(det.observe(ev))
                end = rows[-1].leaf_index + 1
                made, held = self._commit(cursor, end, findings, det)
                if made < 0:  # another monitor got there first: start again from its cursor
                    self._detectors = None
                    continue
                self._seen = end
                events += len(rows)
                alerts += made
                suppressed += held
            return MonitorRun(events, alerts, suppressed)

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        """The loop ``fiduciary serve`` runs in a background thread."""
        while not stop.wait(interval):
            try:
                self.run_once(sequence=False)  # the sequencer thread sequences
            except Exception:
                log.exception("monitor round failed")

    # -- state -----------------------------------------------------------------------------
    def _cursor(self, conn: Connection | None = None) -> int:
        def read(c: Connection) -> int:
            v = c.execute(sa.select(system_state.c.value).where(
                system_state.c.key == CURSOR_KEY)).scalar()
            return int(v) if v is not None else 0
        if conn is not None:
            return read(conn)
        with self.db.read() as c:
            return read(c)

    def _profiles(self) -> Profiles:
        now = self.clock.now()
        with self.db.read() as conn:
            staff = conn.execute(sa.select(users.c.id, users.c.username, users.c.subject_id,
                                           users.c.surname_digest, users.c.created_at)).all()
            watch = conn.execute(sa.select(monitor_watchlist.c.subject_id,
                                           monitor_watchlist.c.category,
                                           monitor_watchlist.c.handlers)).all()
            sup = conn.execute(sa.select(monitor_suppressions).where(
                monitor_suppressions.c.expires_at > now)).all()
        return Profiles(
            staff={r.id: (r.username, r.subject_id, r.surname_digest, r.created_at)
                   for r in staff},
            watchlist={r.subject_id: (r.category, set(json.loads(r.handlers))) for r in watch},
            suppressions=[Suppression(r.detection, r.principal, r.subject_id, r.created_by)
                          for r in sup])

    def _state(self, cursor: int, profiles: Profiles, fresh: bool) -> Detectors:
        det = self._detectors
        if det is None or self._seen != cursor:
            det = Detectors(self.db, self.pack, profiles, pseudonymised=[
                name for name, purpose in self.datamap.purposes.items()
                if purpose.pseudonymised_only])
            self._warm(det, cursor)
            self._detectors = det
            self._seen = cursor
        elif fresh:  # a new run: staff, watch list, suppressions and subject facts re-read
            det.refresh(profiles)
        return det

    def _warm(self, det: Detectors, cursor: int) -> None:
        """Rebuild the windows and today's counts from the events before the cursor, raising
        nothing (what they found was raised when they were first read)."""
        if cursor == 0:
            return
        with self.db.read() as conn:
            last = conn.execute(sa.select(audit_events.c.at).where(
                audit_events.c.leaf_index == cursor - 1)).scalar()
            if last is None:
                return
            start = conn.execute(sa.select(sa.func.min(audit_events.c.leaf_index)).where(
                audit_events.c.at >= last - WARM, audit_events.c.leaf_index.is_not(None))
            ).scalar()
        if start is None:
            return
        det.warming = True
        at = int(start)
        while at < cursor:
            rows = self._batch(at, cursor)
            if not rows:
                break
            parsed = _parse(det, rows)
            det.prefetch(parsed)
            for ev in parsed:
                det.observe(ev)
            at = rows[-1].leaf_index + 1
        det.warming = False
        det.clean()

    def _batch(self, start: int, stop: int | None) -> list[Any]:
        """The next batch of sequenced events from ``start`` (before ``stop``), leaf order."""
        where = [audit_events.c.leaf_index >= start]
        if stop is not None:
            where.append(audit_events.c.leaf_index < stop)
        with self.db.read() as conn:
            return list(conn.execute(
                sa.select(audit_events.c.leaf_index, audit_events.c.action,
                          audit_events.c.actor, audit_events.c.event)
                .where(*where).order_by(audit_events.c.leaf_index).limit(self.batch_size))
                .all())

    def _commit(self, cursor: int, end: int, findings: list[Finding], det: Detectors
                ) -> tuple[int, int]:
        """Alerts, day baselines and the new cursor in one transaction; (-1, 0) when another
        monitor moved the cursor meanwhile."""
        now = self.clock.now()
        made = held = 0
        with self.db.write() as conn:
            if not self.db.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            if self._cursor(conn) != cursor:
                return -1, 0
            for f in findings:
                if det.suppressed(f):
                    held += 1
                    continue
                alert_id = insert_finding(conn, f, now, self.delivery.channels_for(f.severity))
                if alert_id is None:
                    continue
                made += 1
                self.audit.append(conn, self.audit.event(None, "alert.raise", details={
                    "alert_id": alert_id, "detection": f.detection,
                    "severity": str(f.severity), "principal_kind": f.principal_kind,
                    "principal_id": f.principal_id, "subjects": len(f.subject_ids),
                    "events": len(f.event_ids)}))
            days = det.dirty_days()
            for i in range(0, len(days), 400):
                part = days[i:i + 400]
                conn.execute(monitor_days.delete().where(sa.tuple_(
                    monitor_days.c.principal_id, monitor_days.c.day).in_(
                    [(d["principal_id"], d["day"]) for d in part])))
                conn.execute(monitor_days.insert(), part)
            keys = det.dirty_keys()
            if keys:
                conn.execute(system_state.delete().where(
                    system_state.c.key.in_([k for k, _ in keys])))
                conn.execute(system_state.insert(), [{"key": k, "value": v} for k, v in keys])
            if cursor == 0 and conn.execute(sa.select(system_state.c.key).where(
                    system_state.c.key == CURSOR_KEY)).first() is None:
                conn.execute(system_state.insert(), [{"key": CURSOR_KEY, "value": str(end)}])
            else:
                conn.execute(system_state.update().where(system_state.c.key == CURSOR_KEY)
                             .values(value=str(end)))
        det.clean()
        return made, held


def _load(text: str) -> Any:
    """One stored event: orjson, or the standard library for what orjson refuses (an integer
    beyond 64 bits; the trail's canonical JSON never has one, but the monitor must not stop)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _parse(det: Detectors, rows: list[Any]) -> list[dict[str, Any]]:
    """The events of a batch that can matter to a detection, parsed (pruned ones are gone):
    an action no detection reads, by a known staff user, and no refusal, is not parsed."""
    staff = det.profiles.staff
    return [_load(text) for _, action, actor, text in rows if text is not None
            and (action in OBSERVED or actor not in staff or DENIED in text)]
