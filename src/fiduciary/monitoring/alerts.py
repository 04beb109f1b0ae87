"""Alerts: what the detections found, their triage (assign, comment, dismiss, escalate), the
suppression list and the watch list. An alert names principals and subjects by id and carries
the audit events behind it with RFC 9162 inclusion proofs against a signed checkpoint, so it is
evidence an examiner can verify offline. Free text (explanations, notes, reasons) may name
people: it is sealed at rest and reaches the audit trail only as a keyed digest."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.users import UserService
from fiduciary.audit.events import AuditLog, actor_label
from fiduciary.audit.trail import AuditTrail, Checkpoint
from fiduciary.clock import Clock, iso
from fiduciary.crypto.aead import associated_data, open_sealed, seal
from fiduciary.crypto.keyring import Keyring
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    Reason,
    WorkflowConflict,
)
from fiduciary.ids import is_id, new_id, shown
from fiduciary.monitoring.pack import DETECTION_IDS, Severity
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    alert_actions,
    alert_deliveries,
    alerts,
    monitor_suppressions,
    monitor_watchlist,
    subjects,
)

#: Most items one list returns.
MAX_ALERTS_PAGE = 500
#: Most events an alert keeps as evidence (the first ones: enough to prove the pattern).
MAX_EVIDENCE = 50
MAX_TEXT = 4000
#: Longest a suppression may last: a standing exception is a policy change, not triage.
MAX_SUPPRESSION_DAYS = 90
WATCH_CATEGORIES = ("vip", "employee", "litigant", "deceased", "journalist", "other")


class AlertStatus(StrEnum):
    OPEN = "open"
    TRIAGED = "triaged"
    DISMISSED = "dismissed"
    ESCALATED = "escalated"


_CLOSED = (AlertStatus.DISMISSED, AlertStatus.ESCALATED)


#: Detections other features raise through :func:`insert_finding` (not the monitor's pack):
#: compliance's control turning from pass to fail. Their alerts are listed and filtered alike.
RAISED_ELSEWHERE: tuple[str, ...] = ("compliance_control",)
ALERT_DETECTIONS: frozenset[str] = frozenset(DETECTION_IDS) | frozenset(RAISED_ELSEWHERE)


@dataclass(frozen=True)
class Finding:
    """One thing a detection found, before it is an alert."""

    detection: str
    severity: Severity
    score: float
    principal_kind: str
    principal_id: str | None
    principal_name: str | None
    reason: str
    dedup_key: str
    event_ids: list[str]
    subject_ids: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Notes:
    """Seals free text under a keyring-derived key bound to what it belongs to; digests it
    (keyed, so a short note cannot be guessed from the trail) for audit events."""

    def __init__(self, keyring: Keyring) -> None:
        self._key = keyring.derive_key("monitoring-notes")
        self._mac = keyring.derive_key("monitoring-note-digests")

    def seal(self, text: str, *context: str) -> bytes:
        return seal(self._key, text.encode(), associated_data(b"fiduciary-note", *context))

    def open(self, sealed: bytes, *context: str) -> str:
        return open_sealed(self._key, sealed, associated_data(b"fiduciary-note", *context)
                           ).decode()

    def digest(self, text: str) -> str:
        return hmac.new(self._mac, text.encode(), hashlib.sha256).hexdigest()


def free_text(name: str, value: Any, required: bool = True, limit: int = MAX_TEXT
              ) -> str | None:
    """A person's text (a note, an explanation, a reason), stripped; 4xx naming ``name``."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} is required", [FieldProblem(name, "a non-empty text")])
    if len(value) > limit:
        raise InvalidInput(f"{name} is too long", [FieldProblem(name, f"at most {limit}")])
    return value.strip()


def insert_finding(conn: Connection, finding: Finding, now: datetime,
                   channels: Iterable[str] = ()) -> str | None:
    """Store the finding as an open alert (and queue its delivery) unless one with the same
    key exists: the id, or None for a repeat."""
    if conn.execute(sa.select(alerts.c.id).where(
            alerts.c.dedup_key == finding.dedup_key)).first() is not None:
        return None
    alert_id = new_id()
    conn.execute(alerts.insert(), [{
        "id": alert_id, "detection": finding.detection, "severity": str(finding.severity),
        "score": float(finding.score), "status": AlertStatus.OPEN,
        "principal_kind": finding.principal_kind, "principal_id": finding.principal_id,
        "principal_name": finding.principal_name,
        "subject_ids": " ".join(sorted(set(finding.subject_ids))),
        "event_ids": " ".join(finding.event_ids[:MAX_EVIDENCE]),
        "reason": finding.reason, "details": json.dumps(finding.details, sort_keys=True),
        "dedup_key": finding.dedup_key[:255], "assignee": None,
        "created_at": now, "updated_at": now}])
    rows = [{"alert_id": alert_id, "channel": c, "attempts": 0, "next_at": now}
            for c in channels]
    if rows:
        conn.execute(alert_deliveries.insert(), rows)
    return alert_id


def alert_message(row: Any) -> dict[str, Any]:
    """An alert row as every channel sends it and every read starts from: ids, scores and
    the detection's reason, no evidence proofs and no customer value (an alert has none)."""
    return {"id": row.id, "detection": row.detection, "severity": row.severity,
            "score": row.score, "status": row.status,
            "principal": {"kind": row.principal_kind, "id": row.principal_id,
                          "username": row.principal_name},
            "subject_ids": row.subject_ids.split(), "event_ids": row.event_ids.split(),
            "reason": row.reason, "created_at": iso(row.created_at)}


class AlertService:
    """Reading and triaging alerts, suppressions and the watch list (``alerts:read`` to read,
    ``alerts:manage`` to change). Every call is an audit event."""

    def __init__(self, db: Database, clock: Clock, audit: AuditLog, trail: AuditTrail,
                 users: UserService, notes: Notes) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.trail = trail
        self.users = users
        self.notes = notes

    # -- reading -------------------------------------------------------------------------------
    def list_alerts(self, principal: Principal, *, status: str | None = None,
             detection: str | None = None, username: str | None = None,
             subject_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        require_permission(principal, Permission.ALERTS_READ, Permission.ALERTS_MANAGE,
                           scope=None)
        problems = []
        if status is not None and status not in set(AlertStatus):
            problems.append(FieldProblem("status", f"one of {', '.join(AlertStatus)}"))
        if detection is not None and detection not in ALERT_DETECTIONS:
            problems.append(FieldProblem("detection", "not a detection of the pack"))
        if not 1 <= limit <= MAX_ALERTS_PAGE:
            problems.append(FieldProblem("limit", f"1 to {MAX_ALERTS_PAGE}"))
        if subject_id is not None and not is_id(subject_id):
            problems.append(FieldProblem("subject_id", "a subject id"))
        if problems:
            raise InvalidInput.from_problems(problems, what="query")
        q = sa.select(alerts)
        if status:
            q = q.where(alerts.c.status == status)
        if detection:
            q = q.where(alerts.c.detection == detection)
        if username:
            q = q.where(alerts.c.principal_name == username)
        if subject_id:
            q = q.where(alerts.c.subject_ids.contains(subject_id, autoescape=True))
        if principal.is_person:
            # An alert about you is not yours to read: nobody is tipped off by colleagues'
            # notes on their own case.
            q = q.where(sa.or_(alerts.c.principal_id.is_(None),
                               alerts.c.principal_id != principal.id))
        with self.db.read() as conn:
            rows = conn.execute(q.order_by(alerts.c.created_at.desc(), alerts.c.id.desc())
                                .limit(limit)).all()
            items = [self._alert(conn, r, evidence=True) for r in rows]
        self.audit.append_committed(self.audit.event(principal, "alerts.read", details={
            "filters": {k: v for k, v in (("status", status), ("detection", detection),
                                          ("principal", username),
                                          ("subject_id", subject_id)) if v},
            "result_count": len(items)}))
        return items

    def get(self, principal: Principal, alert_id: str) -> dict[str, Any]:
        require_permission(principal, Permission.ALERTS_READ, Permission.ALERTS_MANAGE,
                           scope=None)
        with self.db.read() as conn:
            row = self._row(conn, alert_id)
            if principal.is_person and row.principal_id == principal.id:
                raise NotFound(f"alert {shown(alert_id)} not found", code="alert_not_found")
            out = self._alert(conn, row, evidence=True)
            out["timeline"] = self._timeline(conn, alert_id)
        self.audit.append_committed(self.audit.event(principal, "alerts.read",
                                                     details={"alert_id": alert_id}))
        return out

    @staticmethod
    def _row(conn: Connection, alert_id: str) -> Any:
        row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first() \
            if is_id(alert_id) else None
        if row is None:
            raise NotFound(f"alert {shown(alert_id)} not found", code="alert_not_found")
        return row

    def _alert(self, conn: Connection, r: Any, evidence: bool) -> dict[str, Any]:
        out: dict[str, Any] = {**alert_message(r), "details": json.loads(r.details),
                               "assignee": r.assignee, "updated_at": iso(r.updated_at)}
        if evidence:
            out["evidence"], cp = self.evidence(conn, out["event_ids"])
            out["checkpoint"] = cp.as_dict() if cp else None
        return out

    def evidence(self, conn: Connection, event_ids: list[str]
                 ) -> tuple[list[dict[str, Any]], Checkpoint | None]:
        """Each event with its leaf index and an inclusion proof against the latest signed
        checkpoint, once a checkpoint covers it (until then, no proof yet)."""
        cp = self.trail.checkpoint_in(conn)
        proofs = self.trail.event_proofs(conn, event_ids, cp.size if cp else None)
        out = []
        for eid in event_ids:
            leaf, text, proof = proofs.get(eid, (None, None, None))
            out.append({"event_id": eid, "leaf_index": leaf,
                        "checkpoint_size": cp.size if cp and proof is not None else None,
                        "inclusion_proof": [p.hex() for p in proof or ()],
                        "event": json.loads(text) if text is not None else None})
        return out, cp

    def _timeline(self, conn: Connection, alert_id: str) -> list[dict[str, Any]]:
        return [{"action": r.action, "actor": r.actor, "at": iso(r.at),
                 "text": self.notes.open(r.text_sealed, "alert", alert_id, str(r.id))
                 if r.text_sealed is not None else None}
                for r in conn.execute(sa.select(alert_actions).where(
                    alert_actions.c.alert_id == alert_id).order_by(alert_actions.c.id))]

    # -- triage --------------------------------------------------------------------------------
    def assign(self, principal: Principal, alert_id: str, username: Any) -> dict[str, Any]:
        require_permission(principal, Permission.ALERTS_MANAGE, scope=None)
        name = free_text("username", username)
        assert name is not None
        user = self.users.get(name)
        perms = self.users.policy.permissions(user.roles)
        if user.disabled_at is not None or Permission.ALERTS_MANAGE not in perms:
            raise InvalidInput("the assignee must be an active user who triages alerts",
                               [FieldProblem("username", "lacks alerts:manage or disabled")])
        return self._act(principal, alert_id, "assign", None, assignee=name)

    def comment(self, principal: Principal, alert_id: str, text: Any) -> dict[str, Any]:
        return self._act(principal, alert_id, "comment", free_text("text", text))

    def dismiss(self, principal: Principal, alert_id: str, explanation: Any) -> dict[str, Any]:
        return self._act(principal, alert_id, "dismiss", free_text("explanation", explanation),
                         status=AlertStatus.DISMISSED)

    def escalate(self, principal: Principal, alert_id: str, note: Any) -> dict[str, Any]:
        return self._act(principal, alert_id, "escalate",
                         free_text("note", note or None, required=False),
                         status=AlertStatus.ESCALATED)

    def _act(self, principal: Principal, alert_id: str, action: str, text: str | None, *,
             status: AlertStatus | None = None, assignee: str | None = None
             ) -> dict[str, Any]:
        require_permission(principal, Permission.ALERTS_MANAGE, scope=None)
        now = self.clock.now()
        with self.db.write() as conn:
            row = self._row(conn, alert_id)
            if principal.is_person and row.principal_id == principal.id:
                # Nobody triages an alert about themselves: it would be theirs to hide.
                raise Forbidden("this alert is about you: another analyst must triage it",
                                reason=Reason.SEPARATION_OF_DUTIES)
            if assignee is not None and row.principal_name == assignee \
                    and row.principal_kind == "user":
                raise Forbidden("an alert cannot be assigned to the user it is about",
                                reason=Reason.SEPARATION_OF_DUTIES)
            if status is not None and row.status in _CLOSED:
                raise WorkflowConflict(f"the alert is already {row.status}",
                                       reason="alert_closed")
            values: dict[str, Any] = {"updated_at": now}
            if status is not None:
                values["status"] = status
            elif row.status == AlertStatus.OPEN:
                values["status"] = AlertStatus.TRIAGED
            if assignee is not None:
                values["assignee"] = assignee
            conn.execute(alerts.update().where(alerts.c.id == alert_id).values(**values))
            key = conn.execute(alert_actions.insert().values(
                alert_id=alert_id, action=action, actor=_actor(principal), text_sealed=None,
                at=now)).inserted_primary_key
            assert key is not None
            action_id = key[0]
            if text is not None:
                conn.execute(alert_actions.update().where(alert_actions.c.id == action_id)
                             .values(text_sealed=self.notes.seal(text, "alert", alert_id,
                                                                 str(action_id))))
            details: dict[str, Any] = {"alert_id": alert_id, "detection": row.detection,
                                       "status": values.get("status", row.status)}
            if text is not None:
                details["text_digest"] = self.notes.digest(text)
            if assignee is not None:
                details["assignee"] = assignee
            self.audit.append(conn, self.audit.event(principal, f"alert.{action}",
                                                     details=details))
            out = self._alert(conn, self._row(conn, alert_id), evidence=False)
        return out

    # -- suppressions --------------------------------------------------------------------------
    def suppressions(self, principal: Principal, active_only: bool = True
                     ) -> list[dict[str, Any]]:
        require_permission(principal, Permission.ALERTS_READ, Permission.ALERTS_MANAGE,
                           scope=None)
        q = sa.select(monitor_suppressions)
        if active_only:
            q = q.where(monitor_suppressions.c.expires_at > self.clock.now())
        with self.db.read() as conn:
            items = [self._suppression(r) for r in conn.execute(
                q.order_by(monitor_suppressions.c.created_at))]
        self.audit.append_committed(self.audit.event(principal, "monitoring.suppressions.read",
                                                     details={"result_count": len(items)}))
        return items

    def _suppression(self, r: Any) -> dict[str, Any]:
        return {"id": r.id, "detection": r.detection, "principal": r.principal,
                "subject_id": r.subject_id,
                "reason": self.notes.open(r.reason_sealed, "suppression", r.id),
                "created_by": r.created_by, "created_at": iso(r.created_at),
                "expires_at": iso(r.expires_at)}

    def suppress(self, principal: Principal, detection: Any, reason: Any, expires_at: Any,
                 username: Any = None, subject_id: Any = None) -> dict[str, Any]:
        require_permission(principal, Permission.ALERTS_MANAGE, scope=None)
        now = self.clock.now()
        problems = []
        if detection not in DETECTION_IDS:
            problems.append(FieldProblem("detection", "not a detection of the pack"))
        if username is not None and (not isinstance(username, str) or not username):
            problems.append(FieldProblem("principal", "a username"))
        if subject_id is not None and not is_id(subject_id):
            problems.append(FieldProblem("subject_id", "a subject id"))
        if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            problems.append(FieldProblem("expires_at", "a date-time with a time zone"))
        elif not now < expires_at <= now + timedelta(days=MAX_SUPPRESSION_DAYS):
            problems.append(FieldProblem(
                "expires_at", f"in the future, at most {MAX_SUPPRESSION_DAYS} days ahead"))
        if not isinstance(reason, str) or not reason.strip():
            problems.append(FieldProblem("reason", "a non-empty text"))
        if problems:
            raise InvalidInput.from_problems(problems, what="suppression")
        text = free_text("reason", reason)
        assert text is not None
        if principal.is_person and username == principal.username:
            raise Forbidden("nobody suppresses alerts about themselves",
                            reason=Reason.SEPARATION_OF_DUTIES)
        sid = new_id()
        with self.db.write() as conn:
            conn.execute(monitor_suppressions.insert(), [{
                "id": sid, "detection": detection, "principal": username,
                "subject_id": subject_id, "reason_sealed": self.notes.seal(
                    text, "suppression", sid), "created_by": _actor(principal),
                "created_at": now, "expires_at": expires_at}])
            self.audit.append(conn, self.audit.event(
                principal, "monitoring.suppress",
                subject_ids=[subject_id] if subject_id else [], details={
                    "suppression_id": sid, "detection": detection, "principal": username,
                    "expires_at": iso(expires_at), "reason_digest": self.notes.digest(text)}))
            row = conn.execute(sa.select(monitor_suppressions).where(
                monitor_suppressions.c.id == sid)).one()
        return self._suppression(row)

    # -- the watch list ------------------------------------------------------------------------
    def watchlist(self, principal: Principal) -> list[dict[str, Any]]:
        require_permission(principal, Permission.ALERTS_READ, Permission.ALERTS_MANAGE,
                           scope=None)
        with self.db.read() as conn:
            items = [self._watch(r) for r in conn.execute(
                sa.select(monitor_watchlist).order_by(monitor_watchlist.c.added_at))]
        # The watch list names VIPs and litigants: reading it is an access to them.
        self.audit.append_committed(self.audit.event(
            principal, "watchlist.read", subject_ids=[i["subject_id"] for i in items],
            details={"result_count": len(items)}))
        return items

    def _watch(self, r: Any) -> dict[str, Any]:
        return {"subject_id": r.subject_id, "category": r.category,
                "handlers": json.loads(r.handlers),
                "reason": self.notes.open(r.reason_sealed, "watch", r.subject_id),
                "added_by": r.added_by, "added_at": iso(r.added_at)}

    def watch(self, principal: Principal, subject_id: Any, reason: Any,
              category: Any = "other", handlers: Any = ()) -> dict[str, Any]:
        require_permission(principal, Permission.ALERTS_MANAGE, scope=None)
        problems = []
        if not is_id(subject_id):
            problems.append(FieldProblem("subject_id", "a subject id"))
        if category not in WATCH_CATEGORIES:
            problems.append(FieldProblem("category", f"one of {', '.join(WATCH_CATEGORIES)}"))
        names = list(handlers) if isinstance(handlers, list | tuple) else None
        if names is None or not all(isinstance(h, str) and h for h in names):
            problems.append(FieldProblem("handlers", "a list of usernames"))
        if not isinstance(reason, str) or not reason.strip():
            problems.append(FieldProblem("reason", "a non-empty text"))
        if problems:
            raise InvalidInput.from_problems(problems, what="watch list entry")
        assert names is not None
        text = free_text("reason", reason)
        assert text is not None
        if principal.is_person and principal.username in names:
            raise Forbidden("nobody lists themselves as a handler",
                            reason=Reason.SEPARATION_OF_DUTIES)
        for h in names:
            self.users.get(h)  # 404 for an unknown username
        now = self.clock.now()
        with self.db.write() as conn:
            if conn.execute(sa.select(subjects.c.id).where(subjects.c.id == subject_id)
                            ).first() is None:
                raise NotFound(f"subject {shown(subject_id)} not found",
                               code="subject_not_found")
            conn.execute(monitor_watchlist.delete().where(
                monitor_watchlist.c.subject_id == subject_id))
            conn.execute(monitor_watchlist.insert(), [{
                "subject_id": subject_id, "category": category,
                "handlers": json.dumps(sorted(set(names))),
                "reason_sealed": self.notes.seal(text, "watch", subject_id),
                "added_by": _actor(principal), "added_at": now}])
            self.audit.append(conn, self.audit.event(
                principal, "watchlist.add", subject_ids=[subject_id], details={
                    "category": category, "handlers": sorted(set(names)),
                    "reason_digest": self.notes.digest(text)}))
            row = conn.execute(sa.select(monitor_watchlist).where(
                monitor_watchlist.c.subject_id == subject_id)).one()
        return self._watch(row)

    def unwatch(self, principal: Principal, subject_id: str) -> None:
        require_permission(principal, Permission.ALERTS_MANAGE, scope=None)
        with self.db.write() as conn:
            gone = conn.execute(monitor_watchlist.delete().where(
                monitor_watchlist.c.subject_id == subject_id)).rowcount
            if not gone:
                raise NotFound(f"subject {shown(subject_id)} is not on the watch list",
                               code="not_watched")
            self.audit.append(conn, self.audit.event(principal, "watchlist.remove",
                                                     subject_ids=[subject_id]))


def _actor(principal: Principal) -> str:
    """Who acted, for the timeline: the person, the key, or the operator behind the CLI."""
    return principal.username if principal.is_person else actor_label(principal)
