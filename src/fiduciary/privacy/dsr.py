"""Data-subject requests (GDPR Art. 15-22, CCPA): a ticket per request with its statutory
deadlines, a workflow whose every step is audited, and fulfilment by type.

Workflow::

    received ─verify─▶ identity_verified ─start─▶ in_progress ─fulfil─▶ fulfilled
        │                    │                         │           └──▶ partially_fulfilled
        └────────────────────┴─────────deny────────────┴─────────────▶ denied

``acknowledge`` and ``extend`` may happen at any open state. The request log is never
deleted (CCPA regs 7101 asks for 24 months); it holds ids, dates, types and outcomes, and the
texts the DPO writes (reasons, notes) — which audit events carry only as digests.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.audit.events import AuditLog, actor_label, audit_actor
from fiduciary.clock import Clock, iso, iso_or_none
from fiduciary.errors import (
    ConfigurationError,
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    Reason,
    WorkflowConflict,
)
from fiduciary.ids import is_id, shown
from fiduciary.principal import Permission, Principal, Scope, require_permission
from fiduciary.privacy.consent import (
    SALE_OR_SHARING,
    SENSITIVE_DATA_USE,
    ConsentLedger,
)
from fiduciary.privacy.deadlines import (
    CCPA,
    GDPR,
    REGIMES,
    StatutoryCalendar,
    deadlines,
    end_of_day,
    extended_due,
    extension_refusal,
    local_day,
)
from fiduciary.privacy.gates import Restriction
from fiduciary.storage import Database
from fiduciary.storage.schema import dsr_requests, dsr_steps
from fiduciary.vault import store

TYPES: dict[str, tuple[str, ...]] = {
    GDPR: ("access", "portability", "rectification", "erasure", "restriction", "objection"),
    CCPA: ("know", "delete", "correct", "opt_out_sale_sharing", "limit_sensitive"),
}
PACKAGE_TYPES = frozenset({"access", "portability", "know"})
ERASURE_TYPES = frozenset({"erasure", "delete"})
CORRECTION_TYPES = frozenset({"rectification", "correct"})
#: CCPA choices a request withdraws in the consent ledger.
CHOICE_OF_TYPE = {"opt_out_sale_sharing": SALE_OR_SHARING, "limit_sensitive": SENSITIVE_DATA_USE}

RECEIVED = "received"
IDENTITY_VERIFIED = "identity_verified"
IN_PROGRESS = "in_progress"
FULFILLED = "fulfilled"
PARTIALLY_FULFILLED = "partially_fulfilled"
DENIED = "denied"
OPEN = (RECEIVED, IDENTITY_VERIFIED, IN_PROGRESS)
STATUSES = (*OPEN, FULFILLED, PARTIALLY_FULFILLED, DENIED)

#: How a request reached the insurer (also the consent method of the withdrawals it causes).
CHANNELS = ("web_form", "email", "phone", "paper", "in_person", "api")
VERIFICATION_METHODS = ("account_login", "email_link", "phone_callback", "id_document",
                        "knowledge_based", "in_person", "authorised_agent", "not_required")
#: Opting out and limiting need no verifiable request (CCPA regs 7026, 7027).
UNVERIFIED_TYPES = frozenset(CHOICE_OF_TYPE)
MAX_TEXT = 2000
MAX_LIST = 10_000
#: The furthest horizon ``due_within_days`` may ask about (ten years).
MAX_DUE_WITHIN_DAYS = 3660
# A requester's clock may run a little ahead of ours.
_RECEIPT_SKEW = timedelta(minutes=5)


class AccessPackager(Protocol):
    def build(self, principal: Principal, subject_id: str, request_id: str) -> dict[str, Any]:
        """Write the subject's access package; returns where it is and what it holds (ids,
        counts, file names), never a customer value."""
        ...

    def download(self, principal: Principal, result: Mapping[str, Any] | None,
                 subject_id: str, fmt: str) -> tuple[bytes, str]:
        """The package built for a request, opened, and its media type."""
        ...


class Eraser(Protocol):
    def erase(self, principal: Principal, subject_id: str,
              request_id: str) -> Mapping[str, Any]:
        """Erase the subject; ``status`` is ``complete``, or ``pending`` with the records kept
        (legal hold, retention duty) listed."""
        ...


@dataclass(frozen=True)
class DsrStep:
    at: datetime
    step: str
    actor: str
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), "step": self.step, "actor": self.actor,
                "details": self.details}


@dataclass(frozen=True)
class DsrRequest:
    id: str
    subject_id: str
    type: str
    regime: str
    channel: str | None
    status: str
    received_at: datetime
    due_at: datetime
    original_due_at: datetime
    acknowledge_by: datetime | None
    acknowledged_at: datetime | None
    extension_reason: str | None
    verified_at: datetime | None
    verified_by: str | None
    verification_method: str | None
    closed_at: datetime | None
    outcome_reason: str | None
    result: dict[str, Any] | None
    created_by: str
    updated_at: datetime
    steps: tuple[DsrStep, ...] = field(default=())

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def overdue(self, now: datetime) -> list[str]:
        """Which deadlines an open request has missed: ``acknowledgement`` (CCPA receipt not
        confirmed in time) and/or ``response``."""
        if not self.is_open:
            return []
        late = []
        if (self.acknowledge_by is not None and self.acknowledged_at is None
                and now > self.acknowledge_by):
            late.append("acknowledgement")
        if now > self.due_at:
            late.append("response")
        return late

    def band(self, now: datetime, soon: timedelta) -> str:
        """``overdue`` (a deadline missed), ``soon`` (due within ``soon``) or ``later``; a
        closed request is ``closed``: the bands of the console's queue and dashboard."""
        if not self.is_open:
            return "closed"
        if self.overdue(now):
            return "overdue"
        return "soon" if self.due_at - now <= soon else "later"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "subject_id": self.subject_id, "type": self.type,
            "regime": self.regime, "channel": self.channel, "status": self.status,
            "received_at": iso_or_none(self.received_at), "due_at": iso_or_none(self.due_at),
            "original_due_at": iso_or_none(self.original_due_at), "extended": self.extension_reason
            is not None, "extension_reason": self.extension_reason,
            "acknowledge_by": iso_or_none(self.acknowledge_by),
            "acknowledged_at": iso_or_none(self.acknowledged_at),
            "verified_at": iso_or_none(self.verified_at),
            "verified_by": self.verified_by, "verification_method": self.verification_method,
            "closed_at": iso_or_none(self.closed_at), "outcome_reason": self.outcome_reason,
            "result": self.result, "created_by": self.created_by,
            "updated_at": iso_or_none(self.updated_at), "overdue": self.overdue(now),
        }
        if self.steps:
            doc["steps"] = [s.as_dict() for s in self.steps]
        return doc


def text_digest(name: str, text: str) -> dict[str, Any]:
    """What an audit event keeps of a text a person wrote: its digest and length."""
    return {f"{name}_sha256": hashlib.sha256(text.encode()).hexdigest(),
            f"{name}_chars": len(text)}


def _request(row: Any) -> DsrRequest:
    return DsrRequest(
        id=row.id, subject_id=row.subject_id, type=row.type, regime=row.regime,
        channel=row.channel, status=row.status, received_at=row.received_at,
        due_at=row.due_at, original_due_at=row.original_due_at,
        acknowledge_by=row.acknowledge_by, acknowledged_at=row.acknowledged_at,
        extension_reason=row.extension_reason, verified_at=row.verified_at,
        verified_by=row.verified_by, verification_method=row.verification_method,
        closed_at=row.closed_at, outcome_reason=row.outcome_reason,
        result=json.loads(row.result) if row.result else None, created_by=row.created_by,
        updated_at=row.updated_at)


def _text(name: str, text: str | None, what: str) -> str:
    """A required text of the DPO's (reason, note): present and not too long."""
    value = (text or "").strip()
    if not value or len(value) > MAX_TEXT:
        raise InvalidInput.from_problems([FieldProblem(
            name, f"required: {what}, at most {MAX_TEXT} characters")])
    return value


class DsrService:
    """Opens, moves and closes data-subject requests. Fulfilment uses Art. 18 restriction,
    the consent ledger (objection, CCPA opt-outs), and the access packager and eraser when
    they are configured."""

    def __init__(self, db: Database, clock: Clock, audit: AuditLog, restriction: Restriction,
                 consent: ConsentLedger, packager: AccessPackager | None = None,
                 eraser: Eraser | None = None,
                 calendar: StatutoryCalendar = StatutoryCalendar(),
                 two_person: bool = True) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.restriction = restriction
        self.consent = consent
        self.packager = packager
        self.eraser = eraser
        #: The controller's time zone and holidays, which the statutory periods count.
        self.calendar = calendar
        #: Erasure and the release of a package need someone other than the verifier.
        self.two_person = two_person

    # -- opening -------------------------------------------------------------------------------
    def create(self, principal: Principal, subject_id: str, type: str, regime: str,
               received_at: datetime | None = None, channel: str | None = None) -> DsrRequest:
        """Log a request received at ``received_at`` (default now; without a zone, the
        controller's local time) and set its deadlines."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        now = self.clock.now()
        received = received_at or now
        if received.tzinfo is None:  # a date the office wrote down is its own local day
            received = received.replace(tzinfo=self.calendar.zone)
        problems = []
        try:
            received = received.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
            problems.append(FieldProblem("received_at", "out of range (years 1 to 9999 in UTC)"))
            received = now
        if regime not in REGIMES:
            problems.append(FieldProblem("regime", "one of: " + ", ".join(REGIMES)))
        elif type not in TYPES[regime]:
            problems.append(FieldProblem(
                "type", f"not a {regime} request type; one of: " + ", ".join(TYPES[regime])))
        if channel is not None and channel not in CHANNELS:
            problems.append(FieldProblem("channel", "one of: " + ", ".join(CHANNELS)))
        if received > now + _RECEIPT_SKEW:
            problems.append(FieldProblem("received_at", "in the future"))
        if problems:
            raise InvalidInput.from_problems(problems)
        due = deadlines(regime, received, self.calendar)
        request_id = str(uuid.uuid4())
        row = {"id": request_id, "subject_id": subject_id, "type": type, "regime": regime,
               "channel": channel, "status": RECEIVED, "received_at": received,
               "due_at": due.due_at, "original_due_at": due.due_at,
               "acknowledge_by": due.acknowledge_by, "created_by": actor_label(principal),
               "updated_at": now}
        with self.db.write() as conn:
            store.subject(conn, subject_id)
            conn.execute(dsr_requests.insert(), [row])
            request = self._load(conn, request_id)
            return self._record_step(conn, principal, request, "create", {}, {
                "received_at": iso(received), "due_at": iso(due.due_at),
                "acknowledge_by": iso(due.acknowledge_by) if due.acknowledge_by
                else None, "channel": channel})

    # -- steps ---------------------------------------------------------------------------------
    def verify(self, principal: Principal, request_id: str, method: str) -> DsrRequest:
        """Record that the requester's identity was verified, and how."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        with self.db.write() as conn:
            req = self._open_request(conn, request_id)
            if req.status != RECEIVED:
                raise WorkflowConflict(f"request {request_id} is already verified",
                                       reason=Reason.ALREADY_VERIFIED)
            if method not in VERIFICATION_METHODS:
                raise InvalidInput.from_problems([FieldProblem(
                    "method", "one of: " + ", ".join(VERIFICATION_METHODS))])
            if method == "not_required" and req.type not in UNVERIFIED_TYPES:
                raise InvalidInput.from_problems([FieldProblem(
                    "method", f"a {req.type} request needs the requester's identity verified")])
            return self._record_step(conn, principal, req, "verify", {
                "status": IDENTITY_VERIFIED, "verified_at": self.clock.now(),
                "verified_by": actor_label(principal), "verification_method": method,
            }, {"method": method})

    def acknowledge(self, principal: Principal, request_id: str) -> DsrRequest:
        """Record that receipt was confirmed to the requester (CCPA: within 10 business
        days)."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        with self.db.write() as conn:
            req = self._open_request(conn, request_id)
            if req.acknowledged_at is not None:
                raise WorkflowConflict(f"request {request_id} is already acknowledged",
                                       reason=Reason.ALREADY_ACKNOWLEDGED)
            return self._record_step(conn, principal, req, "acknowledge",
                                     {"acknowledged_at": self.clock.now()}, {})

    def extend(self, principal: Principal, request_id: str, reason: str | None) -> DsrRequest:
        """Extend the deadline once, with a recorded reason, before the original due date
        passes (GDPR Art. 12(3): by two months; CCPA: by 45 days, 90 at most)."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        text = _text("reason", reason, "why the request needs more time")
        with self.db.write() as conn:
            req = self._open_request(conn, request_id)
            refusal = extension_refusal(req.original_due_at, req.extension_reason is not None,
                                        self.clock.now())
            if refusal == "already_extended":
                raise WorkflowConflict(f"request {request_id} was already extended; the "
                                       "deadline can be extended only once", reason=refusal)
            if refusal is not None:
                raise WorkflowConflict(
                    f"request {request_id}: the original due date "
                    f"{local_day(req.original_due_at, self.calendar.zone)} has passed; an "
                    "extension must be decided before it", reason=refusal)
            due_at = extended_due(req.regime, req.received_at, req.original_due_at,
                                  self.calendar)
            return self._record_step(conn, principal, req, "extend", {
                "due_at": due_at, "extension_reason": text,
            }, {"due_at": iso(due_at), **text_digest("reason", text)})

    def start(self, principal: Principal, request_id: str) -> DsrRequest:
        """Begin work on a verified request."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        with self.db.write() as conn:
            req = self._open_request(conn, request_id)
            self._require_verified(req)
            if req.status == IN_PROGRESS:
                raise WorkflowConflict(f"request {request_id} is already in progress",
                                       reason=Reason.ALREADY_STARTED)
            return self._record_step(conn, principal, req, "start", {"status": IN_PROGRESS},
                                     {})

    def deny(self, principal: Principal, request_id: str, reason: str | None) -> DsrRequest:
        """Close an open request as denied, with the reason given to the requester."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        text = _text("reason", reason, "why the request is denied")
        with self.db.write() as conn:
            req = self._open_request(conn, request_id)
            return self._record_step(conn, principal, req, "deny", {
                "status": DENIED, "closed_at": self.clock.now(), "outcome_reason": text,
            }, text_digest("reason", text))

    def fulfil(self, principal: Principal, request_id: str, note: str | None = None,
               purposes: Sequence[str] | None = None) -> DsrRequest:
        """Carry out a verified request and close it (see the module docstring for what each
        type does). A verified request not yet started is started first."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        req = self.get(request_id)
        self._require_open(req)
        self._require_verified(req)
        if req.type in ERASURE_TYPES:
            self._require_second_person(principal, req, "erase the customer's data")
        note = self._fulfil_note(req, note)
        withdraw = self._purposes_to_withdraw(req, purposes)
        if req.type in PACKAGE_TYPES and self.packager is None:
            raise ConfigurationError("no access packager is configured: access, portability "
                                     "and know requests cannot be fulfilled here yet")
        if req.type in ERASURE_TYPES and self.eraser is None:
            raise ConfigurationError("no eraser is configured: erasure and delete requests "
                                     "cannot be fulfilled here yet")
        if req.status == IDENTITY_VERIFIED:
            req = self.start(principal, request_id)
        status = FULFILLED
        result: dict[str, Any] = {}
        outcome_reason: str | None = None
        if req.type in PACKAGE_TYPES and self.packager is not None:
            result["package"] = self.packager.build(principal, req.subject_id, req.id)
        elif req.type in ERASURE_TYPES and self.eraser is not None:
            erasure = self.eraser.erase(principal, req.subject_id, req.id)
            result["erasure"] = erasure
            if erasure.get("status") != "complete":
                status = PARTIALLY_FULFILLED
                outcome_reason = ("records under a legal hold or a statutory retention duty are "
                                  "kept until it ends; see result.erasure")
        elif req.type == "restriction":
            self.restriction.restrict_subject(principal, req.subject_id, True)
            result["restricted"] = True
        if note is not None:
            result["note"] = note
        with self.db.write() as conn:
            req = self._open_request(conn, request_id)
            withdrawn = [self.consent.append(
                conn, principal, req.subject_id, purpose, False, None, None,
                req.channel or "api", f"dsr:{req.id}") for purpose in withdraw]
            if withdrawn:
                result["withdrawn"] = [{"purpose": e.purpose, "consent_id": e.id}
                                       for e in withdrawn]
            details: dict[str, Any] = {"outcome": status}
            if note is not None:
                details |= text_digest("note", note)
            if withdraw:
                details["withdrawn_purposes"] = list(withdraw)
            if "erasure" in result:
                details["erasure_status"] = result["erasure"].get("status")
            return self._record_step(conn, principal, req, "fulfil", {
                "status": status, "closed_at": self.clock.now(),
                "outcome_reason": outcome_reason, "result": json.dumps(result, sort_keys=True),
            }, details)

    def _fulfil_note(self, req: DsrRequest, note: str | None) -> str | None:
        if req.type in CORRECTION_TYPES:
            return _text("note", note, "what was corrected (through the records API)")
        if note is None or not note.strip():
            return None
        return _text("note", note, "a note")

    def _purposes_to_withdraw(self, req: DsrRequest,
                              purposes: Sequence[str] | None) -> tuple[str, ...]:
        if purposes and req.type != "objection":
            raise InvalidInput.from_problems([FieldProblem(
                "purposes", "only an objection names purposes")])
        if req.type in CHOICE_OF_TYPE:
            return (CHOICE_OF_TYPE[req.type],)
        if req.type != "objection":
            return ()
        allowed = self.consent.consent_purposes
        if not purposes:
            return allowed
        if any(p not in allowed for p in purposes):
            raise InvalidInput.from_problems([FieldProblem(
                "purposes", "consent-based purposes only; one of: " + ", ".join(allowed))])
        return tuple(dict.fromkeys(purposes))

    # -- reading -------------------------------------------------------------------------------
    def download(self, principal: Principal, request_id: str, fmt: str) -> tuple[bytes, str]:
        """Release the access package's content (opened): by a second person of the privacy
        office, not who verified the requester's identity."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.READ)
        req = self.get(request_id)
        if self.packager is None:
            raise ConfigurationError("no access packager is configured")
        self._require_second_person(principal, req, "release the access package")
        return self.packager.download(principal, req.result, req.subject_id, fmt)

    def _require_second_person(self, principal: Principal, req: DsrRequest, what: str) -> None:
        """Two people, not a person and a key they might hold: both the verification and
        this step are a staff user's, and not the same one's."""
        if not self.two_person or principal.is_system:
            return
        if (not principal.is_person or not (req.verified_by or "").startswith("user:")
                or req.verified_by == actor_label(principal)):
            raise Forbidden(f"a second person of the privacy office must {what}: a staff "
                            "user other than the one who verified the requester's identity",
                            reason=Reason.SEPARATION_OF_DUTIES)

    def read(self, principal: Principal, request_id: str) -> DsrRequest:
        """:meth:`get` for a person or key, audited (a request names a customer)."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.READ)
        req = self.get(request_id)
        self.audit.append_committed(self.audit.event(
            audit_actor(principal), "dsr.read", subject_ids=[req.subject_id],
            details={"request_id": req.id}))
        return req

    def browse(self, principal: Principal, status: str | None = None, overdue: bool = False,
               due_within_days: int | None = None, subject_id: str | None = None,
               limit: int = 1000) -> builtins.list[DsrRequest]:
        """:meth:`list` for a person or key, audited with the customers it names."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.READ)
        found = self.list(status, overdue, due_within_days, subject_id, limit)
        self.audit.append_committed(self.audit.event(
            audit_actor(principal), "dsr.list", subject_ids=[r.subject_id for r in found],
            details={"result_count": len(found), "status": status, "overdue": overdue,
                     "due_within_days": due_within_days}))
        return found

    def due_counts(self, principal: Principal, soon: timedelta = timedelta(days=7)
                   ) -> dict[str, int]:
        """Open requests by due band — ``overdue`` (a deadline missed), ``soon`` (due within
        ``soon``), ``later`` — for a dashboard: counts name no customer, so unlike
        :meth:`browse` this leaves no audit event per view."""
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.READ)
        now = self.clock.now()
        counts = {"overdue": 0, "soon": 0, "later": 0}
        for status in OPEN:  # open requests only, each status up to the list's bound
            for r in self.list(status, limit=MAX_LIST):
                counts[r.band(now, soon)] += 1
        return counts

    def get(self, request_id: str) -> DsrRequest:
        """The request with its steps."""
        with self.db.read() as conn:
            req = self._load(conn, request_id)
            rows = conn.execute(sa.select(dsr_steps).where(dsr_steps.c.request_id == req.id)
                                .order_by(dsr_steps.c.id)).all()
        return replace(req, steps=tuple(DsrStep(r.at, r.step, r.actor, json.loads(r.details))
                                        for r in rows))

    def list(self, status: str | None = None, overdue: bool = False,
             due_within_days: int | None = None, subject_id: str | None = None,
             limit: int = 1000) -> builtins.list[DsrRequest]:
        """Requests by due date. ``overdue``: open and past a deadline (the response, or a
        CCPA acknowledgement not made in time). ``due_within_days``: open with a deadline
        still ahead that falls on one of the next that many days (0: today)."""
        problems = []
        if status is not None and status not in STATUSES:
            problems.append(FieldProblem("status", "one of: " + ", ".join(STATUSES)))
        if due_within_days is not None and not 0 <= due_within_days <= MAX_DUE_WITHIN_DAYS:
            problems.append(FieldProblem("due_within_days", f"0 to {MAX_DUE_WITHIN_DAYS}"))
        if not 1 <= limit <= MAX_LIST:
            problems.append(FieldProblem("limit", f"1 to {MAX_LIST}"))
        if problems:
            raise InvalidInput.from_problems(problems, what="query")
        now = self.clock.now()
        r = dsr_requests.c
        unacknowledged = sa.and_(r.acknowledge_by.is_not(None), r.acknowledged_at.is_(None))
        q = sa.select(dsr_requests)
        if status is not None:
            q = q.where(r.status == status)
        if subject_id is not None:
            q = q.where(r.subject_id == subject_id)
        if overdue or due_within_days is not None:
            q = q.where(r.status.in_(OPEN))
        if overdue:
            q = q.where(sa.or_(r.due_at < now, sa.and_(unacknowledged, r.acknowledge_by < now)))
        if due_within_days is not None:
            zone = self.calendar.zone
            horizon = end_of_day(local_day(now, zone) + timedelta(days=due_within_days), zone)
            q = q.where(sa.or_(r.due_at.between(now, horizon), sa.and_(
                unacknowledged, r.acknowledge_by.between(now, horizon))))
        with self.db.read() as conn:
            rows = conn.execute(q.order_by(r.due_at, r.id).limit(limit)).all()
        return [_request(row) for row in rows]

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _load(conn: Connection, request_id: str, lock: bool = False) -> DsrRequest:
        row = None
        if is_id(request_id):
            q = sa.select(dsr_requests).where(dsr_requests.c.id == request_id)
            row = conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(f"data-subject request {shown(request_id)} not found",
                           code="dsr_not_found")
        return _request(row)

    def _open_request(self, conn: Connection, request_id: str) -> DsrRequest:
        req = self._load(conn, request_id, lock=True)
        self._require_open(req)
        return req

    @staticmethod
    def _require_open(req: DsrRequest) -> None:
        if not req.is_open:
            raise WorkflowConflict(f"request {req.id} is closed ({req.status})",
                                   reason=Reason.REQUEST_CLOSED)

    @staticmethod
    def _require_verified(req: DsrRequest) -> None:
        if req.status == RECEIVED:
            raise WorkflowConflict(
                f"request {req.id}: verify the requester's identity first "
                f"(POST /v1/dsr/{req.id}/verify or 'fiduciary dsr verify')",
                reason=Reason.IDENTITY_NOT_VERIFIED)

    def _record_step(self, conn: Connection, principal: Principal, req: DsrRequest, step: str,
                     values: dict[str, Any], details: dict[str, Any]) -> DsrRequest:
        """Apply ``values`` to the request, add the step to its ticket and audit it, all in
        the caller's transaction."""
        now = self.clock.now()
        if values:
            conn.execute(dsr_requests.update().where(dsr_requests.c.id == req.id)
                         .values(**values, updated_at=now))
        conn.execute(dsr_steps.insert(), [{
            "request_id": req.id, "at": now, "step": step, "actor": actor_label(principal),
            "details": json.dumps(details, sort_keys=True)}])
        updated = self._load(conn, req.id)
        self.audit.append(conn, self.audit.event(
            audit_actor(principal), f"dsr.{step}", subject_ids=[req.subject_id],
            details={"request_id": req.id, "type": req.type, "regime": req.regime,
                     "status": updated.status, **details}))
        return updated
