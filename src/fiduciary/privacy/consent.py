"""The consent ledger: per subject and purpose, who granted or withdrew consent, when, how and
against which notice. Append-only; the current state of a purpose is its latest entry.

The ledger holds ids, codes and times, never a customer value: notice ids, versions and
channels are short codes, and methods come from a fixed vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.audit.events import AuditLog, actor_label, audit_actor
from fiduciary.clock import Clock, iso
from fiduciary.datamap import DataMap
from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.ids import is_id, ordered_id
from fiduciary.principal import ActorKind, Permission, Principal, Scope, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import consent_events, subjects
from fiduciary.vault import store
from fiduciary.vault.store import SubjectStatus

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
                "channel": self.channel, "recorded_at": iso(self.recorded_at),
                "recorded_by": self.recorded_by}


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
        require_permission(principal, Permission.CONSENT_WRITE, Permission.PRIVACY_MANAGE,
                           scope=Scope.WRITE)
        with self.db.write() as conn:
            return self.append(conn, principal, subject_id, purpose, granted, notice_id,
                               notice_version, method, channel)

    def append(self, conn: Connection, principal: Principal, subject_id: str, purpose: str,
               granted: bool, notice_id: str | None, notice_version: str | None, method: str,
               channel: str | None = None) -> ConsentEntry:
        """``record`` inside the caller's transaction (a DSR closes with its withdrawals)."""
        self._validate(purpose, granted, notice_id, notice_version, method, channel)
        store.subject(conn, subject_id, lock=True)
        entry = ConsentEntry(ordered_id(), subject_id, purpose, granted, notice_id,
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

    def honour_signal(self, principal: Principal, subject_id: str,
                      sec_gpc: str | None) -> ConsentEntry | None:
        """A ``Sec-GPC`` header relayed with a call about the subject. The signal is the
        consumer's, relayed by the insurer's consumer-facing applications (API keys); staff
        browsers may send it on their own behalf, not the customer's, so theirs is ignored."""
        if principal.kind != ActorKind.API_KEY or (sec_gpc or "").strip() != "1":
            return None
        return self.honour_gpc(principal, subject_id)

    def honour_gpc(self, principal: Principal, subject_id: str) -> ConsentEntry | None:
        """A Global Privacy Control signal (``Sec-GPC: 1``) opts the subject out of sale and
        sharing (CCPA regs 7025), once: None when they are already opted out."""
        with self.db.write() as conn:
            store.subject(conn, subject_id, lock=True)
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
        require_permission(principal, Permission.CONSENT_READ, Permission.PRIVACY_MANAGE,
                           scope=Scope.READ)
        with self.db.read() as conn:
            store.subject(conn, subject_id)
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
             .where(ranked.c.later_grants == 0, subjects.c.status != SubjectStatus.ERASED)
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


class SubjectReach(Protocol):
    def get_subject(self, principal: Principal, subject_id: str) -> object:
        """The subject if the principal's relationships reach it; 404 otherwise (audited)."""
        ...


class ConsentDesk:
    """Consent as staff and applications record and read it: the same relationships as
    reading the customer (an agent records consent for customers of their region only), and
    a relayed GPC signal honoured only once the caller is allowed the call."""

    def __init__(self, ledger: ConsentLedger, reach: SubjectReach) -> None:
        self.ledger = ledger
        self.reach = reach

    def _enter(self, principal: Principal, subject_id: str, sec_gpc: str | None,
               write: bool) -> None:
        require_permission(principal, Permission.CONSENT_WRITE if write
                           else Permission.CONSENT_READ, Permission.PRIVACY_MANAGE,
                           scope=Scope.WRITE if write else Scope.READ)
        if not principal.is_system:
            self.reach.get_subject(principal, subject_id)
        self.ledger.honour_signal(principal, subject_id, sec_gpc)

    def record(self, principal: Principal, subject_id: str, purpose: str, granted: bool,
               notice_id: str | None, notice_version: str | None, method: str,
               channel: str | None = None, sec_gpc: str | None = None) -> ConsentEntry:
        self._enter(principal, subject_id, sec_gpc, write=True)
        return self.ledger.record(principal, subject_id, purpose, granted, notice_id,
                                  notice_version, method, channel)

    def read(self, principal: Principal, subject_id: str, sec_gpc: str | None = None
             ) -> tuple[dict[str, ConsentEntry], list[ConsentEntry]]:
        self._enter(principal, subject_id, sec_gpc, write=False)
        return self.ledger.read(principal, subject_id)
