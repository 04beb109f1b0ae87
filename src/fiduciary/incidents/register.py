"""The incident register: incidents with their legal clocks, scope from the audit trail, the
affected subjects, escalated alerts, and a timeline of every step. Free text (title,
description, notes, a person's reasons) is sealed at rest and reaches the trail as a keyed
digest. ``incidents:read`` to read, ``incidents:manage`` to run one."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.audit.events import AuditLog, actor_label
from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import Clock, iso, iso_or_none
from fiduciary.errors import (
    FieldProblem,
    InvalidInput,
    NotFound,
    WorkflowConflict,
)
from fiduciary.ids import is_id, new_id, shown
from fiduciary.incidents.rules import IncidentFacts, RulesTable, ScopeFacts, derive
from fiduciary.incidents.scope import ScopeCalculator, parse_request
from fiduciary.monitoring.alerts import AlertService, Notes, free_text
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    incident_affected,
    incident_alerts,
    incident_obligations,
    incident_timeline,
    incidents,
)

KINDS = ("unauthorized_access", "lost_device", "ransomware", "extortion",
         "misdirected_disclosure", "vendor_breach", "other")
STATUSES = ("open", "assessing", "notifying", "closed")
#: Forward only; a closed incident is reopened by opening a new one that refers to it.
_NEXT = {"open": ("assessing", "notifying", "closed"), "assessing": ("notifying", "closed"),
         "notifying": ("closed",), "closed": ()}
SEVERITIES = ("low", "medium", "high", "critical")
MAX_TEXT = 20_000
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
#: Obligations due within this many days are "due soon".
DUE_SOON_DAYS = 3


def _when(name: str, value: Any, required: bool, problems: list[FieldProblem]
          ) -> datetime | None:
    if value is None and not required:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        problems.append(FieldProblem(name, "a date-time with a time zone"))
        return None
    return value.astimezone(UTC)


class IncidentService:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, trail: AuditTrail,
                 notes: Notes, rules: RulesTable, scope: ScopeCalculator,
                 alerts: AlertService, holidays: Iterable[date] = ()) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.trail = trail
        self.notes = notes
        self.rules = rules
        self.scope_calc = scope
        self.alerts = alerts
        self.holidays = tuple(holidays)

    # -- creating and reading --------------------------------------------------------------
    def create(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=None)
        problems: list[FieldProblem] = []
        title = body.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > 300:
            problems.append(FieldProblem("title", "a non-empty text of at most 300"))
        kind = body.get("kind")
        if kind not in KINDS:
            problems.append(FieldProblem("kind", f"one of {', '.join(KINDS)}"))
        severity = body.get("severity", "high")
        if severity not in SEVERITIES:
            problems.append(FieldProblem("severity", f"one of {', '.join(SEVERITIES)}"))
        now = self.clock.now()
        discovered = _when("discovered_at", body.get("discovered_at"), True, problems)
        determined = _when("determined_at", body.get("determined_at"), False, problems)
        paid = _when("extortion_paid_at", body.get("extortion_paid_at"), False, problems)
        for name, v in (("discovered_at", discovered), ("determined_at", determined),
                        ("extortion_paid_at", paid)):
            if v is not None and v > now + timedelta(minutes=5):
                problems.append(FieldProblem(name, "not in the future"))
            elif v is not None and v < _EARLIEST:
                problems.append(FieldProblem(name, "not before 1970"))
        if discovered and determined and determined < discovered:
            problems.append(FieldProblem("determined_at", "not before discovered_at"))
        description = body.get("description")
        if description is not None and (not isinstance(description, str)
                                        or len(description) > MAX_TEXT):
            problems.append(FieldProblem("description", f"a text of at most {MAX_TEXT}"))
        if problems:
            raise InvalidInput.from_problems(problems, what="incident")
        assert isinstance(title, str) and discovered is not None
        iid = new_id()
        with self.db.write() as conn:
            conn.execute(incidents.insert(), [{
                "id": iid, "title_sealed": self.notes.seal(title.strip(), "incident", iid),
                "description_sealed": self.notes.seal(description, "incident-description",
                                                      iid) if description else None,
                "kind": kind, "status": "open", "severity": severity,
                "owner": principal.username if principal.is_person else None,
                "discovered_at": discovered, "determined_at": determined,
                "extortion_paid_at": paid, "scope": None, "scope_result": None,
                "created_by": actor_label(principal), "created_at": now, "updated_at": now,
                "closed_at": None}])
            self._step(conn, principal, iid, "create", {"kind": kind, "severity": severity},
                       description)
            self._sync_obligations(conn, principal, iid)
        return self.get(principal, iid, audited=False)

    def get(self, principal: Principal, incident_id: str, audited: bool = True
            ) -> dict[str, Any]:
        require_permission(principal, Permission.INCIDENTS_READ,
                           Permission.INCIDENTS_MANAGE, scope=None)
        with self.db.read() as conn:
            row = self._row(conn, incident_id)
            out = self._incident(conn, row, full=True)
        if audited:
            self.audit.append_committed(self.audit.event(
                principal, "incident.read", details={"incident_id": incident_id}))
        return out

    def list_incidents(self, principal: Principal, *, overdue: bool = False, due_soon: bool = False,
             status: str | None = None) -> list[dict[str, Any]]:
        require_permission(principal, Permission.INCIDENTS_READ,
                           Permission.INCIDENTS_MANAGE, scope=None)
        if status is not None and status not in STATUSES:
            raise InvalidInput.from_problems(
                [FieldProblem("status", f"one of {', '.join(STATUSES)}")], what="query")
        now = self.clock.now()
        q = sa.select(incidents)
        if status:
            q = q.where(incidents.c.status == status)
        if overdue:
            q = q.where(incidents.c.id.in_(sa.select(incident_obligations.c.incident_id).where(
                incident_obligations.c.status == "due", incident_obligations.c.due_at < now)))
        if due_soon:
            q = q.where(incidents.c.id.in_(sa.select(incident_obligations.c.incident_id).where(
                incident_obligations.c.status == "due", incident_obligations.c.due_at >= now,
                incident_obligations.c.due_at < now + timedelta(days=DUE_SOON_DAYS))))
        with self.db.read() as conn:
            items = [self._incident(conn, r, full=False) for r in conn.execute(
                q.order_by(incidents.c.discovered_at.desc()))]
        self.audit.append_committed(self.audit.event(
            principal, "incident.read", details={"result_count": len(items),
                                                 "overdue": overdue, "due_soon": due_soon}))
        return items

    @staticmethod
    def _row(conn: Connection, incident_id: str) -> Any:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first() \
            if is_id(incident_id) else None
        if row is None:
            raise NotFound(f"incident {shown(incident_id)} not found",
                           code="incident_not_found")
        return row

    def _incident(self, conn: Connection, r: Any, full: bool) -> dict[str, Any]:
        now = self.clock.now()
        obligations = [self._obligation(o, now) for o in conn.execute(
            sa.select(incident_obligations).where(incident_obligations.c.incident_id == r.id)
            .order_by(incident_obligations.c.due_at.is_(None),
                      incident_obligations.c.due_at, incident_obligations.c.rule_id))]
        out: dict[str, Any] = {
            "id": r.id, "title": self.notes.open(r.title_sealed, "incident", r.id),
            "kind": r.kind, "status": r.status, "severity": r.severity, "owner": r.owner,
            "discovered_at": iso(r.discovered_at),
            "determined_at": iso_or_none(r.determined_at),
            "extortion_paid_at": iso_or_none(r.extortion_paid_at),
            "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
            "closed_at": iso_or_none(r.closed_at),
            "obligations": obligations,
            "overdue": sum(1 for o in obligations if o["overdue"]),
            "scope": json.loads(r.scope) if r.scope else None,
            "scope_result": json.loads(r.scope_result) if r.scope_result else None}
        if full:
            out["description"] = self.notes.open(
                r.description_sealed, "incident-description", r.id) \
                if r.description_sealed is not None else None
            out["alerts"] = list(conn.execute(sa.select(incident_alerts.c.alert_id).where(
                incident_alerts.c.incident_id == r.id)).scalars())
            out["timeline"] = [{
                "action": t.action, "actor": t.actor, "at": iso(t.at),
                "details": json.loads(t.details),
                "text": self.notes.open(t.text_sealed, "incident-step", r.id, str(t.id))
                if t.text_sealed is not None else None}
                for t in conn.execute(sa.select(incident_timeline).where(
                    incident_timeline.c.incident_id == r.id).order_by(incident_timeline.c.id))]
        return out

    def _obligation(self, o: Any, now: datetime) -> dict[str, Any]:
        reason = o.reason
        if o.reason_sealed is not None:
            reason = self.notes.open(o.reason_sealed, "obligation", o.id)
        return {"id": o.id, "rule_id": o.rule_id, "regime": o.regime,
                "recipient": o.recipient, "basis": o.basis, "due_at": iso_or_none(o.due_at),
                "due_note": o.due_note, "status": o.status, "reason": reason,
                "filed_at": iso_or_none(o.filed_at), "reference": o.reference,
                "decided_by": o.decided_by,
                "overdue": o.status == "due" and o.due_at is not None and o.due_at < now,
                "due_soon": o.status == "due" and o.due_at is not None
                and now <= o.due_at < now + timedelta(days=DUE_SOON_DAYS)}

    # -- the steps -------------------------------------------------------------------------
    def _step(self, conn: Connection, principal: Principal, iid: str, action: str,
              details: dict[str, Any], text: str | None = None) -> None:
        now = self.clock.now()
        key = conn.execute(incident_timeline.insert().values(
            incident_id=iid, action=action, actor=actor_label(principal),
            details=json.dumps(details, sort_keys=True, default=str), text_sealed=None,
            at=now)).inserted_primary_key
        assert key is not None
        if text:
            conn.execute(incident_timeline.update().where(incident_timeline.c.id == key[0])
                         .values(text_sealed=self.notes.seal(text, "incident-step", iid,
                                                             str(key[0]))))
        audit_details = {"incident_id": iid, **details}
        if text:
            audit_details["text_digest"] = self.notes.digest(text)
        self.audit.append(conn, self.audit.event(principal, f"incident.{action}",
                                                 details=audit_details))
        conn.execute(incidents.update().where(incidents.c.id == iid).values(updated_at=now))

    def _manage(self, principal: Principal, conn: Connection, incident_id: str) -> Any:
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=None)
        row = self._row(conn, incident_id)
        if row.status == "closed":
            raise WorkflowConflict("the incident is closed", reason="incident_closed")
        return row

    def transition(self, principal: Principal, incident_id: str, status: Any,
                   note: Any = None) -> dict[str, Any]:
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=None)
        text = free_text("note", note or None, required=False, limit=MAX_TEXT)
        with self.db.write() as conn:
            row = self._manage(principal, conn, incident_id)
            if status not in STATUSES:
                raise InvalidInput.from_problems(
                    [FieldProblem("status", f"one of {', '.join(STATUSES)}")], "transition")
            if status not in _NEXT[row.status]:
                raise WorkflowConflict(f"an incident goes from {row.status} to "
                                       f"{' or '.join(_NEXT[row.status]) or 'nothing'}",
                                       reason="invalid_transition")
            values: dict[str, Any] = {"status": status}
            if status == "closed":
                due = conn.execute(sa.select(sa.func.count()).select_from(
                    incident_obligations).where(incident_obligations.c.incident_id == row.id,
                                                incident_obligations.c.status == "due")
                                   ).scalar_one()
                if due:
                    raise WorkflowConflict(
                        f"{due} obligation(s) still due: file them or record why they are "
                        "not required", reason="obligations_open")
                values["closed_at"] = self.clock.now()
            conn.execute(incidents.update().where(incidents.c.id == row.id).values(**values))
            self._step(conn, principal, row.id, "status", {"from": row.status, "to": status},
                       text)
        return self.get(principal, incident_id, audited=False)

    def update_facts(self, principal: Principal, incident_id: str, body: dict[str, Any]
                     ) -> dict[str, Any]:
        """Record when the incident was determined or an extortion paid: the clocks follow."""
        problems: list[FieldProblem] = []
        with self.db.write() as conn:
            row = self._manage(principal, conn, incident_id)
            values: dict[str, Any] = {}
            now = self.clock.now()
            for name in ("determined_at", "extortion_paid_at"):
                if name in body:
                    when = _when(name, body[name], True, problems)
                    if when is not None and when > now + timedelta(minutes=5):
                        problems.append(FieldProblem(name, "not in the future"))
                    elif when is not None and when < row.discovered_at:
                        problems.append(FieldProblem(name, "not before discovered_at"))
                    values[name] = when
            if problems:
                raise InvalidInput.from_problems(problems, what="incident")
            if not values:
                raise InvalidInput.from_problems(
                    [FieldProblem("body", "determined_at or extortion_paid_at")], "incident")
            conn.execute(incidents.update().where(incidents.c.id == row.id).values(**values))
            self._step(conn, principal, row.id, "facts",
                       {k: iso(v) for k, v in values.items()})
            self._sync_obligations(conn, principal, row.id)
        return self.get(principal, incident_id, audited=False)

    # -- scope -----------------------------------------------------------------------------
    def scope(self, principal: Principal, incident_id: str, body: Any) -> dict[str, Any]:
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=None)
        with self.db.read() as conn:
            row = self._row(conn, incident_id)
        if row.status == "closed":
            raise WorkflowConflict("the incident is closed", reason="incident_closed")
        req = parse_request(self.db, body)
        result = self.scope_calc.compute(req)
        summary = result.summary()
        with self.db.write() as conn:
            conn.execute(incident_affected.delete().where(
                incident_affected.c.incident_id == incident_id))
            rows = [{"incident_id": incident_id, "subject_id": sid, "exposure": e.exposure,
                     "jurisdiction": result.jurisdictions.get(sid, "unknown"),
                     "classifications": " ".join(sorted(e.classifications)),
                     "records": len(e.records), "event_id": e.event_id}
                    for sid, e in result.subjects.items()]
            for i in range(0, len(rows), 1000):
                conn.execute(incident_affected.insert(), rows[i:i + 1000])
            values: dict[str, Any] = {"scope": json.dumps(req.as_dict()),
                                      "scope_result": json.dumps(summary)}
            if row.status == "open":
                values["status"] = "assessing"
            conn.execute(incidents.update().where(incidents.c.id == incident_id)
                         .values(**values))
            self._step(conn, principal, incident_id, "scope", {**req.as_dict(), **{
                "subjects": summary["subjects"], "records": summary["records"],
                "checkpoint_size": summary["checkpoint_size"]}})
            self._sync_obligations(conn, principal, incident_id)
        return summary

    def _sync_obligations(self, conn: Connection, principal: Principal, iid: str) -> None:
        """Derive the obligations from the facts and the scope; what a person decided
        (filed, not required) stays; a derived one that no longer applies goes."""
        row = self._row(conn, iid)
        facts = IncidentFacts(kind=row.kind, discovered_at=row.discovered_at,
                              determined_at=row.determined_at,
                              extortion_paid_at=row.extortion_paid_at)
        scope = None
        if row.scope_result:
            s = json.loads(row.scope_result)
            scope = ScopeFacts(by_jurisdiction=s["by_jurisdiction"],
                               classifications=frozenset(s["classifications"]),
                               ciphertext_only=bool(s["safe_harbour"]),
                               total=sum(s["subjects"].values()))
        derived = {o.rule_id: o for o in derive(self.rules, facts, scope, self.holidays)}
        existing = {o.rule_id: o for o in conn.execute(sa.select(incident_obligations).where(
            incident_obligations.c.incident_id == iid))}
        for rule_id, old in existing.items():
            # What no rule derives any more goes, unless a person decided it.
            if rule_id not in derived and old.decided_by in (None, "rules"):
                conn.execute(incident_obligations.delete().where(
                    incident_obligations.c.id == old.id))
        for rule_id, d in derived.items():
            values = {"regime": d.regime, "recipient": d.recipient, "basis": d.basis,
                      "due_at": d.due_at, "due_note": d.due_note}
            o = existing.get(rule_id)
            if o is None:
                conn.execute(incident_obligations.insert(), [{
                    "id": new_id(), "incident_id": iid, "rule_id": rule_id, **values,
                    "status": d.status, "reason": d.reason, "reason_sealed": None,
                    "filed_at": None, "reference": None,
                    "decided_by": "rules" if d.status != "due" else None}])
            elif o.decided_by in (None, "rules"):  # nobody decided it: the rules may
                conn.execute(incident_obligations.update().where(
                    incident_obligations.c.id == o.id).values(
                    **values, status=d.status, reason=d.reason,
                    decided_by="rules" if d.status != "due" else None))
            else:
                conn.execute(incident_obligations.update().where(
                    incident_obligations.c.id == o.id).values(**values))

    # -- obligations -----------------------------------------------------------------------
    def file(self, principal: Principal, incident_id: str, obligation_id: str,
             reference: Any, filed_at: Any = None) -> dict[str, Any]:
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=None)
        ref = free_text("reference", reference, limit=200)
        problems: list[FieldProblem] = []
        when = _when("filed_at", filed_at, False, problems) or self.clock.now()
        if problems:
            raise InvalidInput.from_problems(problems, what="filing")
        if when > self.clock.now() + timedelta(minutes=5):
            raise InvalidInput.from_problems([FieldProblem("filed_at", "not in the future")],
                                             what="filing")
        return self._decide(principal, incident_id, obligation_id, "filed",
                            {"filed_at": when, "reference": ref}, None)

    def not_required(self, principal: Principal, incident_id: str, obligation_id: str,
                     reason: Any) -> dict[str, Any]:
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=None)
        text = free_text("reason", reason, limit=MAX_TEXT)
        return self._decide(principal, incident_id, obligation_id, "not_required", {}, text)

    def _decide(self, principal: Principal, incident_id: str, obligation_id: str,
                status: str, values: dict[str, Any], reason: str | None) -> dict[str, Any]:
        with self.db.write() as conn:
            row = self._manage(principal, conn, incident_id)
            o = conn.execute(sa.select(incident_obligations).where(
                incident_obligations.c.id == obligation_id,
                incident_obligations.c.incident_id == row.id)).first() \
                if is_id(obligation_id) else None
            if o is None:
                raise NotFound(f"obligation {shown(obligation_id)} not found",
                               code="obligation_not_found")
            if o.status == "filed":
                raise WorkflowConflict("the obligation is already filed",
                                       reason="already_filed")
            conn.execute(incident_obligations.update().where(
                incident_obligations.c.id == o.id).values(
                status=status, decided_by=actor_label(principal)[:128],
                reason_sealed=self.notes.seal(reason, "obligation", o.id) if reason else None,
                reason=None, **values))
            self._step(conn, principal, row.id, f"obligation.{status}", {
                "obligation_id": o.id, "rule_id": o.rule_id,
                **({"reference_digest": self.notes.digest(values["reference"])}
                   if "reference" in values else {})}, reason)
        return self.get(principal, incident_id, audited=False)

    # -- the affected ----------------------------------------------------------------------
    def affected(self, principal: Principal, incident_id: str, fmt: str = "json"
                 ) -> dict[str, Any] | str:
        """Subject ids with their exposure; JSON with each one's evidence: the first event
        that exposed them, with its inclusion proof against the scope's checkpoint."""
        require_permission(principal, Permission.INCIDENTS_READ,
                           Permission.INCIDENTS_MANAGE, scope=None)
        if fmt not in ("json", "csv"):
            raise InvalidInput.from_problems([FieldProblem("format", "json or csv")], "query")
        with self.db.read() as conn:
            row = self._row(conn, incident_id)
            if not row.scope_result:
                raise WorkflowConflict("the incident has no scope yet", reason="no_scope")
            size = json.loads(row.scope_result)["checkpoint_size"]
            rows = conn.execute(sa.select(incident_affected).where(
                incident_affected.c.incident_id == incident_id)
                .order_by(incident_affected.c.subject_id)).all()
            items = [{"subject_id": r.subject_id, "exposure": r.exposure,
                      "jurisdiction": r.jurisdiction,
                      "classifications": r.classifications.split(), "records": r.records,
                      "event_id": r.event_id} for r in rows]
            checkpoint = None
            if fmt == "json":
                checkpoint = self._evidence(conn, items, size)
        self.audit.append_committed(self.audit.event(
            principal, "incident.affected", subject_ids=[i["subject_id"] for i in items],
            details={"incident_id": incident_id, "format": fmt, "result_count": len(items)}))
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["subject_id", "exposure", "jurisdiction", "classifications",
                        "records", "event_id"])
            for i in items:
                w.writerow([i["subject_id"], i["exposure"], i["jurisdiction"],
                            " ".join(i["classifications"]), i["records"], i["event_id"] or ""])
            return buf.getvalue()
        return {"incident_id": incident_id, "checkpoint": checkpoint, "items": items}

    def _evidence(self, conn: Connection, items: list[dict[str, Any]], size: int
                  ) -> dict[str, Any] | None:
        proofs = self.trail.event_proofs(
            conn, [i["event_id"] for i in items if i["event_id"]], size)
        for i in items:
            leaf, _, proof = proofs.get(i["event_id"] or "", (None, None, None))
            i["leaf_index"] = leaf
            i["inclusion_proof"] = [p.hex() for p in proof or ()]
        cp = self.trail.checkpoint_in(conn, size)
        return cp.as_dict() if cp is not None else None

    # -- alerts ----------------------------------------------------------------------------
    def escalate_alert(self, principal: Principal, alert_id: str, note: Any = None,
                       incident_id: str | None = None) -> dict[str, Any]:
        """Escalate an alert into an incident: a new one (unauthorized access, discovered
        when the alert was raised), or the open incident named."""
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=None)
        if incident_id is not None:
            with self.db.read() as conn:
                target = self._row(conn, incident_id)
            if target.status == "closed":
                raise WorkflowConflict("the incident is closed", reason="incident_closed")
        alert = self.alerts.escalate(principal, alert_id, note)
        if incident_id is None:
            made = self.create(principal, {
                "title": f"Escalated alert: {alert['detection']}",
                "kind": "unauthorized_access", "severity": alert["severity"]
                if alert["severity"] in SEVERITIES else "high",
                "discovered_at": datetime.fromisoformat(alert["created_at"])})
            incident_id = str(made["id"])
        with self.db.write() as conn:
            conn.execute(incident_alerts.insert(), [{"incident_id": incident_id,
                                                      "alert_id": alert_id}])
            self._step(conn, principal, incident_id, "alert", {
                "alert_id": alert_id, "detection": alert["detection"]})
        # The alert as the escalation left it, beside the incident it went to.
        return {**self.get(principal, incident_id, audited=False), "escalated_alert": alert}
