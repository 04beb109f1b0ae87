"""The consent ledger: per subject and purpose, who granted or withdrew consent, when, how and
against which notice. Append-only; the current state of a purpose is its latest entry.

The ledger holds ids, codes and times, never a customer value: notice ids, versions and
channels are short codes, and methods come from a fixed vocabulary.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.principal import Principal
from fiduciary.access.principal import require_permission as require_any_permission
from fiduciary.audit.events import AuditLog, request_context
from fiduciary.clock import Clock
from fiduciary.datamap import DataMap
from fiduciary.errors import FieldProblem, Forbidden, Gone, InvalidInput, NotFound
from fiduciary.storage import Database
from fiduciary.storage.schema import consent_events, subjects
from fiduciary.vault.service import is_id

#: How the subject expressed the choice.
CONSENT_METHODS = ("web_form", "phone", "paper", "email", "in_person",
                   "opt_out_preference_signal", "api")
#: CCPA choices kept in the same ledger: withdrawn means opted out of sale or sharing, or
#: limited the use of sensitive personal information.
SALE_OR_SHARING = "sale_or_sharing"
SENSITIVE_DATA_USE = "sensitive_data_use"
CCPA_CHOICES = (SALE_OR_SHARING, SENSITIVE_DATA_USE)
GPC_METHOD = "opt_out_preference_signal"

# Codes, not prose: a notice id or a channel must not become a place for a name or an email.
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
_CODE_LIMITS = {"notice_id": 128, "notice_version": 64, "channel": 48}
_CODE_RULE = "letters, digits and . _ : / - only, at most {} characters"


@dataclass(frozen=True)
class ConsentEntry:
    id: str
    subject_id: str
    purpose: str
    granted: bool
    notice_id: str | None
    notice_version: str | None
    method: str
    channel: str | None
    recorded_at: datetime
    recorded_by: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "subject_id": self.subject_id, "purpose": self.purpose,
                "granted": self.granted, "notice_id": self.notice_id,
                "notice_version": self.notice_version, "method": self.method,
                "channel": self.channel, "recorded_at": self.recorded_at.isoformat(),
                "recorded_by": self.recorded_by}


def actor_label(principal: Principal) -> str:
    """Who did it, for a ledger or ticket row: the operator behind a CLI run as SYSTEM."""
    operator = request_context.get().operator
    if principal.kind == "system" and operator:
        return f"cli:{operator}"
    return f"{principal.kind}:{principal.username if principal.kind == 'user' else principal.id}"


def audit_actor(principal: Principal) -> Principal | None:
    """The principal an event names: None lets the audit log name the CLI operator."""
    if principal.kind == "system" and request_context.get().operator:
        return None
    return principal


def require_permission(principal: Principal, *permissions: str) -> None:
    """Privacy operations need one of ``permissions``; the system itself (CLI) is trusted.
    An API key limited by scopes must also hold the matching one (``write`` to record,
    ``read`` to read)."""
    require_any_permission(principal, *permissions)
    scope = "write" if any(p.endswith(":write") for p in permissions) else "read"
    if principal.scopes is not None and scope not in principal.scopes:
        raise Forbidden(f"this API key lacks the {scope} scope", reason="field_not_permitted")


def subject_status(conn: Connection, subject_id: str, *, lock: bool = False) -> str:
    """The subject's status; unknown raises NotFound, erased raises Gone. ``lock`` holds the
    subject's row until the transaction ends (serialises writers for that subject)."""
    row = None
    if is_id(subject_id):
        q = sa.select(subjects.c.status).where(subjects.c.id == subject_id)
        row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise NotFound(f"subject {subject_id} not found", code="subject_not_found")
    if row.status == "erased":
        raise Gone(f"subject {subject_id} has been erased")
    return str(row.status)


_id_lock = threading.Lock()
_id_clock = [0, 0]  # milliseconds, counter within that millisecond


def _ordered_id() -> str:
    """A UUIDv7 (RFC 9562, counter in ``rand_a``) that grows with every call in this process:
    entries recorded within one clock tick (or under a test's frozen clock) still sort in
    the order they were made, and the latest entry is the current state."""
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _id_clock[0]:
            _id_clock[:] = [ms, 0]
        elif _id_clock[1] < 0xFFF:
            _id_clock[1] += 1
        else:
            _id_clock[:] = [_id_clock[0] + 1, 0]
        ms, counter = _id_clock
    value = ms << 80 | 0x7 << 76 | counter << 64 | 0x2 << 62 | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def _entry(row: Any) -> ConsentEntry:
    return ConsentEntry(row.id, row.subject_id, row.purpose, bool(row.granted), row.notice_id,
                        row.notice_version, row.method, row.channel, row.recorded_at,
                        row.recorded_by)


class ConsentLedger:
    """Records and answers consent. Also the :class:`~fiduciary.access.policy.ConsentChecker`
    the policy engine asks before a consent-based purpose."""

    def __init__(self, db: Database, datamap: DataMap, clock: Clock, audit: AuditLog) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        #: Purposes the data map says need consent (marketing), and the CCPA choices.
        self.consent_purposes = tuple(sorted(
            p.name for p in datamap.purposes.values() if p.consent_required))
        self.purposes = frozenset(self.consent_purposes) | frozenset(CCPA_CHOICES)

    # -- writing -------------------------------------------------------------------------------
    def record(self, principal: Principal, subject_id: str, purpose: str, granted: bool,
               notice_id: str | None, notice_version: str | None, method: str,
               channel: str | None = None) -> ConsentEntry:
        """Append a grant or a withdrawal. Withdrawing takes exactly what granting takes,
        less the notice (GDPR 7(3))."""
        require_permission(principal, "consent:write", "privacy:manage")
        with self.db.write() as conn:
            return self.append(conn, principal, subject_id, purpose, granted, notice_id,
                               notice_version, method, channel)

    def append(self, conn: Connection, principal: Principal, subject_id: str, purpose: str,
               granted: bool, notice_id: str | None, notice_version: str | None, method: str,
               channel: str | None = None) -> ConsentEntry:
        """``record`` inside the caller's transaction (a DSR closes with its withdrawals)."""
        self._validate(purpose, granted, notice_id, notice_version, method, channel)
        subject_status(conn, subject_id, lock=True)
        entry = ConsentEntry(_ordered_id(), subject_id, purpose, granted, notice_id,
                             notice_version, method, channel, self.clock.now(),
                             actor_label(principal))
        conn.execute(consent_events.insert(), [{
            "id": entry.id, "subject_id": subject_id, "purpose": purpose, "granted": granted,
            "notice_id": notice_id, "notice_version": notice_version, "method": method,
            "channel": channel, "recorded_at": entry.recorded_at,
            "recorded_by": entry.recorded_by}])
        self.audit.append(conn, self.audit.event(
            audit_actor(principal), "consent.record", subject_ids=[subject_id],
            details={"consent_id": entry.id, "purpose": purpose, "granted": granted,
                     "method": method}))
        return entry

    def honour_gpc(self, principal: Principal, subject_id: str) -> ConsentEntry | None:
        """A Global Privacy Control signal (``Sec-GPC: 1``) opts the subject out of sale and
        sharing (CCPA regs 7025), once: None when they are already opted out."""
        with self.db.write() as conn:
            subject_status(conn, subject_id, lock=True)
            latest = self._latest(conn, subject_id, SALE_OR_SHARING)
            if latest is not None and not latest.granted:
                return None
            return self.append(conn, principal, subject_id, SALE_OR_SHARING, False, None, None,
                               GPC_METHOD)

    def _validate(self, purpose: str, granted: bool, notice_id: str | None,
                  notice_version: str | None, method: str, channel: str | None) -> None:
        problems: list[FieldProblem] = []
        if purpose not in self.purposes:
            problems.append(FieldProblem("purpose", "not a consent-based purpose; one of: "
                                         + ", ".join(sorted(self.purposes))))
        if not isinstance(granted, bool):
            problems.append(FieldProblem("granted", "true or false"))
        if method not in CONSENT_METHODS:
            problems.append(FieldProblem("method", "one of: " + ", ".join(CONSENT_METHODS)))
        if granted is True and not notice_version:
            problems.append(FieldProblem(
                "notice_version", "required when consent is granted (the notice agreed to)"))
        given = {"notice_id": notice_id, "notice_version": notice_version, "channel": channel}
        for name, value in given.items():
            limit = _CODE_LIMITS[name]
            if value is not None and (not isinstance(value, str) or len(value) > limit
                                      or not _CODE.match(value)):
                problems.append(FieldProblem(name, _CODE_RULE.format(limit)))
        if problems:
            raise InvalidInput.from_problems(problems, what="consent")

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _latest(conn: Connection, subject_id: str, purpose: str) -> ConsentEntry | None:
        row = conn.execute(
            sa.select(consent_events)
            .where(consent_events.c.subject_id == subject_id,
                   consent_events.c.purpose == purpose)
            .order_by(consent_events.c.recorded_at.desc(), consent_events.c.id.desc())
            .limit(1)).first()
        return _entry(row) if row is not None else None

    def history(self, subject_id: str) -> list[ConsentEntry]:
        """Every entry of the subject, oldest first."""
        with self.db.read() as conn:
            return self._history(conn, subject_id)

    @staticmethod
    def _history(conn: Connection, subject_id: str) -> list[ConsentEntry]:
        rows = conn.execute(
            sa.select(consent_events).where(consent_events.c.subject_id == subject_id)
            .order_by(consent_events.c.recorded_at, consent_events.c.id)).all()
        return [_entry(r) for r in rows]

    @staticmethod
    def _current(history: list[ConsentEntry]) -> dict[str, ConsentEntry]:
        current: dict[str, ConsentEntry] = {}
        for entry in history:  # oldest first: the latest of each purpose wins
            current[entry.purpose] = entry
        return current

    def current(self, subject_id: str) -> dict[str, ConsentEntry]:
        """The latest entry per purpose."""
        return self._current(self.history(subject_id))

    def read(self, principal: Principal, subject_id: str
             ) -> tuple[dict[str, ConsentEntry], list[ConsentEntry]]:
        """Current state and history for a caller (404 unknown, 410 erased); audited."""
        require_permission(principal, "consent:read", "privacy:manage")
        with self.db.read() as conn:
            subject_status(conn, subject_id)
            history = self._history(conn, subject_id)
        self.audit.append_committed(self.audit.event(
            audit_actor(principal), "consent.read", subject_ids=[subject_id]))
        return self._current(history), history

    def has_consent(self, subject_id: str, purpose: str) -> bool:
        if not is_id(subject_id):
            return False
        with self.db.read() as conn:
            latest = self._latest(conn, subject_id, purpose)
        return latest is not None and latest.granted

    def withdrawn(self, purpose: str, as_of: datetime | None = None
                  ) -> Iterator[tuple[str, datetime]]:
        """Subjects (not erased) whose state for ``purpose`` at ``as_of`` is withdrawn, each
        with the time of that withdrawal: the first withdrawal after their last grant. One
        query, streamed; the connection is held until the iterator is exhausted or closed."""
        if purpose not in self.purposes:
            raise InvalidInput.from_problems([FieldProblem(
                "purpose", "not a consent-based purpose")], what="query")
        as_of = as_of or self.clock.now()
        ce = consent_events
        # Per entry, how many grants came at or after it: the entries with none form the
        # trailing run of withdrawals, which exists only if the current state is withdrawn.
        later_grants = sa.func.sum(sa.case((ce.c.granted.is_(True), 1), else_=0)).over(
            partition_by=ce.c.subject_id, order_by=(ce.c.recorded_at.desc(), ce.c.id.desc()))
        ranked = (sa.select(ce.c.subject_id, ce.c.recorded_at,
                            later_grants.label("later_grants"))
                  .where(ce.c.purpose == purpose, ce.c.recorded_at <= as_of).subquery())
        q = (sa.select(ranked.c.subject_id, sa.func.min(ranked.c.recorded_at).label(
                 "withdrawn_at"))
             .join(subjects, subjects.c.id == ranked.c.subject_id)
             .where(ranked.c.later_grants == 0, subjects.c.status != "erased")
             .group_by(ranked.c.subject_id)
             .order_by(ranked.c.subject_id))
        with self.db.read() as conn:
            for row in conn.execution_options(yield_per=1000).execute(q):
                yield row.subject_id, row.withdrawn_at


def entries_as_dict(current: Mapping[str, ConsentEntry],
                    history: list[ConsentEntry]) -> dict[str, Any]:
    """The body of ``GET /v1/subjects/{id}/consents`` and of ``consent history --json``."""
    return {"current": {p: e.as_dict() for p, e in sorted(current.items())},
            "history": [e.as_dict() for e in history]}
