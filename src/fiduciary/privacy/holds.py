"""Legal holds: a subject, a record or a whole collection kept from retention purges and from
erasure while litigation, an investigation or a regulator's order runs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.audit.events import AuditLog
from fiduciary.clock import Clock, iso
from fiduciary.datamap import DataMap
from fiduciary.errors import FieldProblem, Forbidden, InvalidInput, NotFound, Reason
from fiduciary.ids import shown
from fiduciary.principal import Permission, Principal, Scope, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import legal_holds
from fiduciary.vault import store
from fiduciary.vault.store import StoredRecord

SCOPES = ("subject", "record", "collection")


@dataclass(frozen=True)
class Hold:
    id: str
    scope: str
    target: str
    reason: str
    owner: str
    created_at: datetime
    created_by: str
    released_at: datetime | None = None
    released_by: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "scope": self.scope, "target": self.target, "reason": self.reason,
                "owner": self.owner, "created_at": iso(self.created_at),
                "created_by": self.created_by,
                "released_at": iso(self.released_at) if self.released_at else None,
                "released_by": self.released_by, "active": self.active}

    def label(self) -> str:
        return f"legal hold {self.id} ({self.scope}, owner {self.owner})"


def _hold(r: Any) -> Hold:
    return Hold(r.id, r.scope, r.target, r.reason, r.owner, r.created_at, r.created_by,
                r.released_at, r.released_by)


class ActiveHolds:
    """The one rule for which hold covers a record: a hold on its subject, else on the record,
    else on its collection (the oldest, where several hold the same thing)."""

    def __init__(self, holds: Iterable[Hold]) -> None:
        self._by_target: dict[tuple[str, str], Hold] = {}
        for h in sorted(holds, key=lambda h: (h.created_at, h.id)):
            self._by_target.setdefault((h.scope, h.target), h)

    @classmethod
    def load(cls, conn: Connection, targets: Iterable[str] | None = None) -> ActiveHolds:
        """The active holds, or only those on ``targets`` (ids and collection names)."""
        q = sa.select(legal_holds).where(legal_holds.c.released_at.is_(None))
        if targets is not None:
            q = q.where(legal_holds.c.target.in_(set(targets)))
        return cls(_hold(r) for r in conn.execute(q))

    @classmethod
    def of_subject(cls, conn: Connection, subject_id: str,
                   rows: Iterable[StoredRecord]) -> ActiveHolds:
        """The active holds that may cover these records of one subject."""
        rows = list(rows)
        return cls.load(conn, {subject_id, *(r.id for r in rows), *(r.collection for r in rows)})

    def covering(self, subject_id: str, record_id: str, collection: str) -> Hold | None:
        return (self._by_target.get(("subject", subject_id))
                or self._by_target.get(("record", record_id))
                or self._by_target.get(("collection", collection)))

    def covered(self, subject_id: str, rows: Iterable[StoredRecord]) -> dict[str, Hold]:
        """record id -> the hold covering it, for those of ``rows`` that are held."""
        return {r.id: h for r in rows
                if (h := self.covering(subject_id, r.id, r.collection)) is not None}


def _actor(principal: Principal | None) -> str:
    return principal.username or principal.id if principal else "operator"


def _text_digest(text: str) -> dict[str, Any]:
    # A hold's reason may name a matter or a person: the audit event keeps a digest only.
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "length": len(text)}


class HoldService:
    def __init__(self, db: Database, datamap: DataMap, clock: Clock, audit: AuditLog,
                 two_person: bool = True) -> None:
        self.db = db
        #: A hold is released by someone other than who placed it.
        self.two_person = two_person
        self.datamap = datamap
        self.clock = clock
        self.audit = audit

    @staticmethod
    def _require(principal: Principal) -> None:
        require_permission(principal, Permission.PRIVACY_MANAGE, scope=Scope.WRITE)

    def add(self, principal: Principal, scope: str, target: str, reason: str,
            owner: str) -> Hold:
        self._require(principal)
        problems = []
        if scope not in SCOPES:
            problems.append(FieldProblem("scope", f"expected one of: {', '.join(SCOPES)}"))
        if not reason or not reason.strip():
            problems.append(FieldProblem("reason", "required: the matter or order the hold "
                                                   "serves"))
        if not owner or not owner.strip():
            problems.append(FieldProblem("owner", "required: who answers for the hold"))
        if problems:
            raise InvalidInput.from_problems(problems, what="legal hold")
        with self.db.write() as conn:
            subject_ids, record_ids = self._check_target(conn, scope, target)
            hold = Hold(str(uuid.uuid4()), scope, target, reason.strip(), owner.strip(),
                        self.clock.now(), _actor(principal))
            conn.execute(legal_holds.insert(), [{
                "id": hold.id, "scope": scope, "target": target, "reason": hold.reason,
                "owner": hold.owner, "created_at": hold.created_at,
                "created_by": hold.created_by}])
            self.audit.append(conn, self.audit.event(
                principal, "hold.add", collection=target if scope == "collection" else None,
                subject_ids=subject_ids, record_ids=record_ids,
                details={"hold_id": hold.id, "scope": scope, "owner": hold.owner,
                         "reason": _text_digest(hold.reason)}))
        return hold

    def _check_target(self, conn: Connection, scope: str,
                      target: str) -> tuple[list[str], list[str]]:
        """The held thing must exist; returns the ids the audit event names."""
        if scope == "collection":
            if target not in self.datamap.collections:
                raise InvalidInput.from_problems(
                    [FieldProblem("target", f"collection {target!r} is not declared")],
                    what="legal hold")
            return [], []
        owner = (target if store.status_of(conn, target) is not None else None) \
            if scope == "subject" else store.record_subject(conn, target)
        if owner is None:
            raise InvalidInput.from_problems(
                [FieldProblem("target", f"no {scope} with id {target}")], what="legal hold")
        return [owner], [] if scope == "subject" else [target]

    def release(self, principal: Principal, hold_id: str) -> Hold:
        self._require(principal)
        with self.db.write() as conn:
            r = conn.execute(sa.select(legal_holds).where(legal_holds.c.id == hold_id)).first()
            if r is None:
                raise NotFound(f"legal hold {shown(hold_id)} not found", code="hold_not_found")
            if r.released_at is not None:
                return _hold(r)
            if (self.two_person and not principal.is_system
                    and r.created_by == _actor(principal)):
                raise Forbidden("a second person of the privacy office must release this legal "
                                "hold: whoever placed it may not",
                                reason=Reason.SEPARATION_OF_DUTIES)
            now = self.clock.now()
            conn.execute(legal_holds.update().where(legal_holds.c.id == hold_id)
                         .values(released_at=now, released_by=_actor(principal)))
            self.audit.append(conn, self.audit.event(
                principal, "hold.release", details={"hold_id": hold_id, "scope": r.scope,
                                                    "owner": r.owner}))
            r = conn.execute(sa.select(legal_holds).where(legal_holds.c.id == hold_id)).one()
            return _hold(r)

    def list(self, include_released: bool = False) -> list[Hold]:
        q = sa.select(legal_holds).order_by(legal_holds.c.created_at, legal_holds.c.id)
        if not include_released:
            q = q.where(legal_holds.c.released_at.is_(None))
        with self.db.read() as conn:
            return [_hold(r) for r in conn.execute(q)]
