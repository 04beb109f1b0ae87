"""The privacy rules the vault consults before it serves or changes a record
(:class:`fiduciary.vault.gates.RecordGate`), and GDPR Art. 18 restriction itself.

- **Restriction (Art. 18(2))**: a restricted subject's data — and what an erasure had to keep
  while a hold or a statutory duty runs — serves legal obligations only, and only in the
  hands of the privacy office: not any role whose grants happen to cover every purpose, nor a
  break-glass grant.
- **Legal hold**: evidence under a hold is neither changed nor deleted
  (:class:`fiduciary.privacy.holds.ActiveHolds` decides which hold covers a record).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from fiduciary.audit.events import AuditLog
from fiduciary.errors import Forbidden, Reason
from fiduciary.principal import Permission, Principal, Scope, require_permission
from fiduciary.privacy.holds import ActiveHolds
from fiduciary.storage import Database
from fiduciary.vault import store
from fiduciary.vault.store import Subject, SubjectStatus

#: Subject states under which only legal obligations may still be served.
RESTRICTED = frozenset({SubjectStatus.RESTRICTED, SubjectStatus.ERASURE_PENDING})
RESTRICTED_PURPOSE = "legal_obligation"


class PrivacyGate:
    """Answers the vault's :class:`~fiduciary.vault.gates.RecordGate` questions."""

    def may_process(self, principal: Principal, subject_status: str, purpose: str) -> bool:
        return subject_status not in RESTRICTED or (
            purpose == RESTRICTED_PURPOSE
            and (principal.is_system or principal.can(Permission.PRIVACY_MANAGE)))

    def check_process(self, principal: Principal, subject_id: str, subject_status: str,
                      purpose: str) -> None:
        if not self.may_process(principal, subject_status, purpose):
            raise Forbidden(f"processing of subject {subject_id}'s data is restricted to the "
                            f"privacy office, for purpose {RESTRICTED_PURPOSE!r}",
                            reason=Reason.PROCESSING_RESTRICTED)

    def check_change(self, conn: Connection, subject_id: str, record_id: str,
                     collection: str, action: str) -> None:
        hold = ActiveHolds.load(conn, (subject_id, record_id, collection)).covering(
            subject_id, record_id, collection)
        if hold is not None:
            raise Forbidden(f"record {record_id} is under legal hold {hold.id}: it cannot be "
                            f"{action}", reason=Reason.LEGAL_HOLD)


class Restriction:
    """GDPR Art. 18: restrict a subject's processing, or lift the restriction."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    def restrict_subject(self, principal: Principal, subject_id: str,
                         restricted: bool) -> Subject:
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        with self.db.write() as conn:
            subject = store.subject(conn, subject_id)
            if subject.status == SubjectStatus.ERASURE_PENDING:
                raise Forbidden(f"subject {subject_id} is being erased",
                                reason=Reason.PROCESSING_RESTRICTED)
            status = SubjectStatus.RESTRICTED if restricted else SubjectStatus.ACTIVE
            store.set_status(conn, subject_id, status)
            self.audit.append(conn, self.audit.event(
                principal, "subject.restrict" if restricted else "subject.unrestrict",
                subject_ids=[subject_id]))
            return Subject(subject.id, status, subject.created_at)
