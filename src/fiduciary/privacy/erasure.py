"""Erasure by crypto-shredding (GDPR Art. 17, CCPA delete).

The subject's rows and blind-index entries are deleted and, once nothing of theirs must be
kept, their data key is destroyed in the key store: every copy of their ciphertext — backups,
replicas, a stolen file — becomes undecryptable. Records under a legal hold or a statutory
retention duty are kept (listed with the reason in the certificate) and erased by the
retention job when the hold or duty ends; until then the subject is ``erasure_pending`` and
their kept records serve legal obligations only.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypedDict

import sqlalchemy as sa

from fiduciary.audit.events import AuditLog, canonical
from fiduciary.clock import Clock, iso
from fiduciary.datamap import DataMap
from fiduciary.errors import NotFound
from fiduciary.ids import shown
from fiduciary.principal import Permission, Principal, Scope, require_permission
from fiduciary.privacy.holds import ActiveHolds
from fiduciary.privacy.retention import RetentionRules
from fiduciary.storage import Database
from fiduciary.storage.schema import erasures
from fiduciary.vault import store
from fiduciary.vault.keys import SubjectKeys
from fiduciary.vault.store import StoredRecord, SubjectStatus

FORMAT = "fiduciary-erasure-certificate/1"

#: What an erasure leaves on purpose: none of it holds the subject's data.
NOT_ERASED = [
    "audit trail events: ids, actions and times, never values; kept for NYDFS 500.6 and "
    "HIPAA 164.316 and so the trail still verifies",
    "consent ledger entries: purpose, decision, notice and method, as evidence of consent "
    "(GDPR Art. 7(1))",
    "the data-subject request log: dates, types and outcomes (CCPA regs 7101, 24 months)",
]


class KeptRecord(TypedDict):
    record_id: str
    collection: str
    reason: str
    hold_id: str | None
    until: str | None


class ErasedSummary(TypedDict):
    records: int
    by_collection: dict[str, int]
    record_ids: list[str]
    blind_index_entries: int


class DataKeyState(TypedDict, total=False):
    state: str
    destroyed_at: str


class ErasureCertificate(TypedDict, total=False):
    """What an erasure did, kept and left, for the requester and the regulator; stored with
    the erasure and its SHA-256 (RFC 8785) in the ``subject.erase`` audit event."""

    format: str
    erasure_id: str
    subject_id: str
    request_id: str | None
    cause: str
    performed_by: str
    started_at: str
    completed_at: str | None
    status: str  # complete | pending
    erased: ErasedSummary
    data_key: DataKeyState
    kept: list[KeptRecord]
    not_erased: list[str]
    #: Set when a pending erasure completes (the kept records went too).
    kept_erased_at: str


class ConsentState(Protocol):
    def current(self, subject_id: str) -> Mapping[str, Any]: ...


def _actor(principal: Principal) -> str:
    return principal.username or principal.id


class Eraser:
    def __init__(self, db: Database, datamap: DataMap, clock: Clock, audit: AuditLog,
                 keys: SubjectKeys, consent: ConsentState,
                 on_erased: Callable[[str], object] | None = None) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.keys = keys
        self.consent = consent
        self.rules = RetentionRules(datamap)
        #: Called after each erasure of a subject (the access packager deletes its files).
        self.on_erased = on_erased

    def erase(self, principal: Principal, subject_id: str,
              request_id: str | None = None) -> ErasureCertificate:
        """Fulfil an erasure request: the certificate of what was erased, kept and why."""
        return self._erase(principal, subject_id, request_id, "data-subject request")

    def shred(self, principal: Principal, subject_id: str, reason: str) -> ErasureCertificate:
        """The retention job's erasure of a subject whose every record has expired."""
        return self._erase(principal, subject_id, None, reason)

    def _erase(self, principal: Principal, subject_id: str, request_id: str | None,
               cause: str) -> ErasureCertificate:
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)
        now = self.clock.now()
        withdrawn = {p: e.recorded_at for p, e in self.consent.current(subject_id).items()
                     if not e.granted}
        with self.db.write() as conn:
            # Writers take the subject row FOR SHARE: they finish first, or see the erasure.
            store.subject(conn, subject_id, lock=True)  # 404 unknown, 410 already erased
            rows = store.stored_records(conn, subject_id)
            held = ActiveHolds.of_subject(conn, subject_id, rows).covered(subject_id, rows)
            expiries = self.rules.expiries(rows, withdrawn)
            kept: list[KeptRecord] = []
            erased: list[StoredRecord] = []
            for r in rows:
                hold = held.get(r.id)
                duty = self.rules.duty(r, expiries[r.id], now.date())
                if hold or duty:
                    expiry = expiries[r.id].expires_on
                    kept.append(KeptRecord(
                        record_id=r.id, collection=r.collection,
                        reason=hold.label() if hold else str(duty),
                        hold_id=hold.id if hold else None,
                        until=None if hold or expiry is None else expiry.isoformat()))
                else:
                    erased.append(r)
            ids = [r.id for r in erased]
            index_entries = store.delete_records(conn, ids)
            complete = not kept
            store.set_status(conn, subject_id, SubjectStatus.ERASED if complete
                             else SubjectStatus.ERASURE_PENDING)
            erasure_id = str(uuid.uuid4())
            certificate = ErasureCertificate(
                format=FORMAT, erasure_id=erasure_id, subject_id=subject_id,
                request_id=request_id, cause=cause, performed_by=_actor(principal),
                started_at=iso(now), completed_at=iso(now) if complete else None,
                status="complete" if complete else "pending",
                erased=ErasedSummary(
                    records=len(erased),
                    by_collection=dict(sorted(Counter(r.collection for r in erased).items())),
                    record_ids=ids, blind_index_entries=index_entries),
                data_key=(DataKeyState(state="destroyed", destroyed_at=iso(now)) if complete
                          else DataKeyState(state="kept until the records below are erased")),
                kept=kept,
                not_erased=NOT_ERASED,
            )
            conn.execute(erasures.insert(), [{
                "id": erasure_id, "subject_id": subject_id, "request_id": request_id,
                "status": certificate["status"], "started_at": now,
                "completed_at": now if complete else None,
                "certificate": json.dumps(certificate)}])
            self.audit.append(conn, self.audit.event(
                principal, "subject.erase", subject_ids=[subject_id],
                record_ids=[*ids, *(k["record_id"] for k in kept)],
                decision="allow" if complete else "partial",
                details={"erasure_id": erasure_id, "request_id": request_id, "cause": cause,
                         "erased": len(ids), "kept": len(kept),
                         "data_key_destroyed": complete,
                         "certificate_sha256": hashlib.sha256(canonical(certificate))
                         .hexdigest()}))
        if complete:
            # After the commit: the event and the deletions are durable first; a failure
            # here leaves an erased subject whose key `retention run` destroys next time.
            self.keys.destroy([subject_id], "erasure")
        if self.on_erased:
            self.on_erased(subject_id)  # copies made from the erased records go too
        return certificate

    def _destroy(self, subject_id: str) -> None:
        self.keys.destroy([subject_id], "erasure")
        if self.on_erased:
            self.on_erased(subject_id)

    def finish(self, principal: Principal, subject_id: str) -> bool:
        """A pending erasure whose kept records are all gone now: destroy the key."""
        now = self.clock.now()
        with self.db.write() as conn:
            status = store.status_of(conn, subject_id)
            if status != SubjectStatus.ERASURE_PENDING or store.record_count(conn, subject_id):
                return False
            store.set_status(conn, subject_id, SubjectStatus.ERASED)
            pending = conn.execute(sa.select(erasures.c.id, erasures.c.certificate).where(
                erasures.c.subject_id == subject_id, erasures.c.status == "pending")).all()
            for e in pending:
                cert: ErasureCertificate = json.loads(e.certificate)
                cert["status"], cert["completed_at"] = "complete", iso(now)
                cert["data_key"] = DataKeyState(state="destroyed", destroyed_at=iso(now))
                cert["kept_erased_at"] = iso(now)
                conn.execute(erasures.update().where(erasures.c.id == e.id).values(
                    status="complete", completed_at=now, certificate=json.dumps(cert)))
            self.audit.append(conn, self.audit.event(
                principal, "subject.erase.complete", subject_ids=[subject_id],
                details={"erasure_ids": [e.id for e in pending], "data_key_destroyed": True}))
        self._destroy(subject_id)
        return True

    def destroy_leftover_keys(self) -> int:
        """Clean up after a crash between an erasure's commit and its key destruction: keys
        of subjects marked erased, and any row that reached them despite the erasure."""
        with self.db.write() as conn:
            store.delete_leftovers(conn)
            ids = store.erased_subject_ids(conn)
        left = list(self.keys.store.get(ids))
        for sid in left:
            self._destroy(sid)
        return len(left)

    def certificates(self, subject_id: str) -> list[ErasureCertificate]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(erasures.c.certificate).where(
                erasures.c.subject_id == subject_id).order_by(erasures.c.started_at)).all()
        if not rows:
            raise NotFound(f"no erasure of subject {shown(subject_id)}", code="erasure_not_found")
        return [json.loads(r.certificate) for r in rows]
