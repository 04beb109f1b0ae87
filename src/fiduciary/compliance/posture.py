"""Continuous posture: every control of the catalogue checked, its result kept, a control
that turns from pass to fail raised as an alert and an audit event.

::

    check()  (daily in ``serve``, ``fiduciary compliance check``, the posture API's first read)
      ├─ each control: its check (``compliance.checks``) or its latest attestation
      │    (passes until document date + every_days; expired after)
      ├─ results stored (``control_results``), one ``compliance.check`` audit event per run
      └─ pass → fail: one alert (detection ``compliance_control``, the control's severity)
           and one ``compliance.control_failed`` event — once per turn, whoever runs it

Attestations (NYDFS 500.16 incident response plan, 500.9 risk assessment, 500.13(a) asset
inventory): a person holding ``compliance:attest`` records a document's reference and date
for the named person who vouches for it; the date cannot lie in the future, nor so far back
that the control would already have expired.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fiduciary.access.policy import PolicyEngine
from fiduciary.access.users import UserService
from fiduciary.audit.events import AuditLog, audit_actor
from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import Clock, iso
from fiduciary.compliance.catalogue import Catalogue
from fiduciary.compliance.checks import CHECKS, CheckContext
from fiduciary.compliance.model import Control, ControlResult, Outcome, Status
from fiduciary.config import Settings
from fiduciary.crypto.keyring import Keyring
from fiduciary.datamap import DataMap
from fiduciary.errors import FieldProblem, InvalidInput, NotFound
from fiduciary.ids import new_id
from fiduciary.monitoring.alerts import RAISED_ELSEWHERE, Finding, insert_finding
from fiduciary.monitoring.delivery import AlertDelivery
from fiduciary.monitoring.pack import Severity
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import compliance_attestations, control_results

log = logging.getLogger("fiduciary.compliance")

#: The detection id of the alerts a failing control raises.
DETECTION = RAISED_ELSEWHERE[0]  # "compliance_control"
MAX_HISTORY = 1000
MAX_REFERENCE = 200


def summary(results: Sequence[ControlResult]) -> dict[str, int]:
    """How many controls pass, fail and do not apply."""
    return {s.value: sum(1 for r in results if r.status == s) for s in Status}


class PostureService:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, catalogue: Catalogue,
                 settings: Settings, datamap: DataMap, policy: PolicyEngine,
                 users: UserService, trail: AuditTrail, keyring: Keyring,
                 delivery: AlertDelivery) -> None:
        self.db, self.clock, self.audit = db, clock, audit
        self.catalogue = catalogue
        self.settings, self.datamap, self.policy = settings, datamap, policy
        self.users, self.trail, self.keyring = users, trail, keyring
        self.delivery = delivery

    # -- checking ----------------------------------------------------------------------------
    def check(self, now: datetime | None = None, *, full_audit: bool = False,
              by: Principal | None = None) -> list[ControlResult]:
        """Run every control, store the results and return them (catalogue order).
        ``full_audit``: verify the audit trail from its first event."""
        now = now or self.clock.now()
        ctx = CheckContext(self.db, self.settings, self.datamap, self.policy, self.users,
                           self.trail, self.keyring, now, full_audit)
        results = [ControlResult(c, self._run(ctx, c), now) for c in self.catalogue.controls]
        self._store(results, now, by)
        return results

    def _run(self, ctx: CheckContext, control: Control) -> Outcome:
        try:
            if control.check is None:
                return self._attested(control, ctx.now)
            return CHECKS[control.check].run(ctx, control)
        except Exception as exc:
            # One broken check must not hide the others; its control fails, saying so.
            log.exception("compliance check %s failed to run", control.id)
            return Outcome(Status.FAIL, {"problem": "the check could not run",
                                         "error": type(exc).__name__})

    def _previous(self, conn: sa.Connection) -> dict[str, tuple[int, str]]:
        """Control id -> (result row id, status) of its latest stored result."""
        last = (sa.select(sa.func.max(control_results.c.id))
                .group_by(control_results.c.control_id).scalar_subquery())
        return {r.control_id: (r.id, r.status) for r in conn.execute(
            sa.select(control_results.c.id, control_results.c.control_id,
                      control_results.c.status).where(control_results.c.id.in_(last)))}

    def _store(self, results: list[ControlResult], now: datetime,
               by: Principal | None) -> None:
        run_id = new_id()
        actor = audit_actor(by) if by is not None else None
        with self.db.write() as conn:
            previous = self._previous(conn)
            conn.execute(control_results.insert(), [{
                "run_id": run_id, "control_id": r.control.id, "title": r.control.title,
                "sections": json.dumps(list(r.control.sections)), "status": r.status.value,
                "facts": json.dumps(dict(r.outcome.facts), sort_keys=True, default=str),
                "event_ids": " ".join(r.outcome.event_ids), "checked_at": now}
                for r in results])
            turned = []
            for r in results:
                before = previous.get(r.control.id)
                if before is None or before[1] != Status.PASS or r.status != Status.FAIL:
                    continue
                alert_id = insert_finding(conn, self._finding(r, before[0]), now,
                                          self.delivery.channels_for(self._severity(r)))
                if alert_id is None:
                    continue  # another run raised this turn already
                turned.append(r.control.id)
                self.audit.append(conn, self.audit.event(
                    actor, "compliance.control_failed", details={
                        "control": r.control.id, "sections": list(r.control.sections),
                        "severity": r.control.severity, "alert_id": alert_id,
                        "run_id": run_id}))
            self.audit.append(conn, self.audit.event(actor, "compliance.check", details={
                "run_id": run_id, "catalogue_sha256": self.catalogue.digest(),
                "summary": summary(results), "turned_to_fail": turned,
                "failing": [r.control.id for r in results if r.status == Status.FAIL]}))

    @staticmethod
    def _severity(result: ControlResult) -> Severity:
        return Severity(result.control.severity)

    def _finding(self, result: ControlResult, previous_id: int) -> Finding:
        c = result.control
        return Finding(
            detection=DETECTION, severity=self._severity(result), score=1.0,
            principal_kind="system", principal_id=None, principal_name=None,
            reason=f"compliance control {c.id} ({c.title}) turned from pass to fail",
            # One alert per turn: the pass it follows names it, however many runs see it.
            dedup_key=f"{DETECTION}:{c.id}:{previous_id}",
            event_ids=list(result.outcome.event_ids),
            details={"control": c.id, "sections": list(c.sections),
                     "facts": dict(result.outcome.facts)})

    def run_forever(self, stop: threading.Event, interval_seconds: float) -> None:
        """The daily run ``fiduciary serve`` keeps in a background thread (first run one
        interval after the start)."""
        while not stop.wait(interval_seconds):
            try:
                results = self.check()
                log.info("compliance check: %s", summary(results))
            except Exception:
                log.exception("compliance check failed")

    # -- reading -----------------------------------------------------------------------------
    def _control(self, row: Any) -> Control:
        """The catalogue's control, with the title and sections it had when checked."""
        sections = tuple(json.loads(row.sections))
        found = self.catalogue.get(row.control_id)
        if found is None:
            return Control(id=row.control_id, title=row.title, sections=sections, check=None)
        return replace(found, title=row.title, sections=sections)

    def _result(self, row: Any) -> ControlResult:
        return ControlResult(self._control(row), Outcome(
            Status(row.status), json.loads(row.facts),
            tuple(row.event_ids.split()) if row.event_ids else ()), row.checked_at)

    def latest(self) -> list[ControlResult]:
        """Each control's latest result, in catalogue order (controls never checked left
        out)."""
        with self.db.read() as conn:
            last = (sa.select(sa.func.max(control_results.c.id))
                    .group_by(control_results.c.control_id).scalar_subquery())
            rows = {r.control_id: r for r in conn.execute(
                sa.select(control_results).where(control_results.c.id.in_(last)))}
        return [self._result(rows[c.id]) for c in self.catalogue.controls if c.id in rows]

    def history(self, control_id: str, limit: int = MAX_HISTORY) -> list[ControlResult]:
        """A control's results, newest first."""
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidInput.from_problems([FieldProblem("limit", f"1 to {MAX_HISTORY}")],
                                             "query")
        with self.db.read() as conn:
            rows = conn.execute(sa.select(control_results)
                                .where(control_results.c.control_id == control_id)
                                .order_by(control_results.c.id.desc()).limit(limit)).all()
        if not rows and self.catalogue.get(control_id) is None:
            raise NotFound(f"no control {control_id!r}", code="control_not_found")
        return [self._result(r) for r in rows]

    def results_between(self, start: datetime, end: datetime) -> list[ControlResult]:
        """Every result checked in ``[start, end)``, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(sa.select(control_results).where(
                control_results.c.checked_at >= start, control_results.c.checked_at < end)
                .order_by(control_results.c.id)).all()
        return [self._result(r) for r in rows]

    # -- attestations ------------------------------------------------------------------------
    def _attested(self, control: Control, now: datetime) -> Outcome:
        with self.db.read() as conn:
            row = conn.execute(sa.select(compliance_attestations)
                               .where(compliance_attestations.c.control_id == control.id)
                               .order_by(compliance_attestations.c.document_date.desc(),
                                         compliance_attestations.c.recorded_at.desc())
                               .limit(1)).first()
        if row is None:
            return Outcome(Status.FAIL, {"attestation": control.attestation,
                                         "problem": "no attestation recorded"})
        expires = row.document_date + timedelta(days=control.every_days or 0)
        facts = {"attestation": control.attestation, "reference": row.reference,
                 "document_date": row.document_date.isoformat(),
                 "attested_by": row.attested_by, "recorded_by": row.recorded_by,
                 "recorded_at": iso(row.recorded_at), "expires_on": expires.isoformat(),
                 "expired": now.date() >= expires}
        return Outcome(Status.FAIL if facts["expired"] else Status.PASS, facts,
                       (row.event_id,))

    def attest(self, principal: Principal, control_id: str, reference: str,
               document_date: date, attested_by: str | None = None) -> dict[str, Any]:
        """Record that ``attested_by`` (default: the caller) vouches for the document
        ``reference`` dated ``document_date``; audited as ``compliance.attested``."""
        require_permission(principal, Permission.COMPLIANCE_ATTEST, scope=None)
        today = self.clock.now().date()
        problems = []
        control = self.catalogue.get(control_id)
        if control is None:
            problems.append(FieldProblem("control", f"unknown control {control_id!r}"))
        elif control.attestation is None:
            problems.append(FieldProblem("control", f"{control_id} is checked by Fiduciary, "
                                                    "not attested"))
        reference = reference.strip()
        if not reference or len(reference) > MAX_REFERENCE:
            problems.append(FieldProblem("reference", f"1 to {MAX_REFERENCE} characters"))
        if document_date > today:
            problems.append(FieldProblem("document_date", "lies in the future"))
        elif control is not None and control.every_days is not None and \
                document_date + timedelta(days=control.every_days) <= today:
            problems.append(FieldProblem("document_date", f"older than the control's period "
                                         f"({control.every_days} days): already expired"))
        who = (attested_by if attested_by is not None else principal.username).strip()
        if not who or len(who) > 128:
            problems.append(FieldProblem("attested_by", "1 to 128 characters"))
        if problems:
            raise InvalidInput.from_problems(problems, "attestation")
        assert control is not None and control.every_days is not None
        now = self.clock.now()
        row = {"id": new_id(), "control_id": control.id, "reference": reference,
               "document_date": document_date, "attested_by": who,
               "recorded_by": principal.username, "recorded_at": now}
        event = self.audit.event(audit_actor(principal), "compliance.attested", details={
            "attestation_id": row["id"], "control": control.id, "reference": reference,
            "document_date": document_date.isoformat(), "attested_by": who})
        with self.db.write() as conn:
            conn.execute(compliance_attestations.insert(), [{**row, "event_id": event["id"]}])
            self.audit.append(conn, event)
        expires = document_date + timedelta(days=control.every_days)
        return {"id": row["id"], "control": control.id, "reference": reference,
                "document_date": document_date.isoformat(), "attested_by": who,
                "recorded_by": principal.username, "recorded_at": iso(now),
                "expires_on": expires.isoformat()}
