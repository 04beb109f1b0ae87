"""Staff profiles for monitoring: the customer who is this staff member (self and co-worker
access) and their surname, held only as the blind-index digest of ``persons.last_name`` so it
compares with customers' surnames without a new plaintext copy."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fiduciary.audit.events import AuditLog
from fiduciary.datamap.values import ValueRejected, validate
from fiduciary.errors import FieldProblem, Forbidden, InvalidInput, NotFound, Reason
from fiduciary.ids import is_id
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import subjects, users
from fiduciary.vault import VaultService

SURNAME_COLLECTION = "persons"
SURNAME_FIELD = "last_name"


class StaffProfiles:
    def __init__(self, db: Database, audit: AuditLog, vault: VaultService) -> None:
        self.db = db
        self.audit = audit
        self.vault = vault

    def surname_digest(self, last_name: Any) -> bytes:
        spec = self.vault.datamap.collections.get(SURNAME_COLLECTION)
        if spec is None or SURNAME_FIELD not in spec.fields \
                or not spec.fields[SURNAME_FIELD].searchable:
            raise InvalidInput("the data map has no searchable persons.last_name",
                               [FieldProblem("last_name", "not comparable in this data map")])
        try:
            value = validate(spec.fields[SURNAME_FIELD], last_name)
        except ValueRejected as exc:
            raise InvalidInput("last name rejected", [FieldProblem("last_name", str(exc))]
                               ) from None
        return self.vault.codec.digest(spec, SURNAME_FIELD, value)

    def link_subject(self, principal: Principal, username: str, subject_id: Any) -> None:
        """Link a staff user to the customer record that is themselves (None unlinks)."""
        require_permission(principal, Permission.USERS_MANAGE, scope=None)
        self._not_own(principal, username)
        if subject_id is not None and not is_id(subject_id):
            raise InvalidInput("not a subject id", [FieldProblem("subject_id", "a subject id")])
        with self.db.write() as conn:
            if subject_id is not None and conn.execute(sa.select(subjects.c.id).where(
                    subjects.c.id == subject_id)).first() is None:
                raise NotFound(f"subject {subject_id} not found", code="subject_not_found")
            user_id = self._user_id(conn, username)
            conn.execute(users.update().where(users.c.id == user_id)
                         .values(subject_id=subject_id))
            self.audit.append(conn, self.audit.event(
                principal, "user.link_subject", subject_ids=[subject_id] if subject_id else [],
                details={"user_id": user_id, "username": username,
                         "linked": subject_id is not None}))

    def set_surname(self, principal: Principal, username: str, last_name: Any) -> None:
        require_permission(principal, Permission.USERS_MANAGE, scope=None)
        self._not_own(principal, username)
        digest = self.surname_digest(last_name)
        with self.db.write() as conn:
            user_id = self._user_id(conn, username)
            conn.execute(users.update().where(users.c.id == user_id)
                         .values(surname_digest=digest))
            self.audit.append(conn, self.audit.event(
                principal, "user.set_surname", details={"user_id": user_id,
                                                        "username": username}))

    @staticmethod
    def _not_own(principal: Principal, username: str) -> None:
        # Unlinking oneself would silence self-access and co-worker detections about oneself.
        if principal.is_person and principal.username == username:
            raise Forbidden("nobody changes their own monitoring profile",
                            reason=Reason.SEPARATION_OF_DUTIES)

    @staticmethod
    def _user_id(conn: Any, username: str) -> str:
        uid = conn.execute(sa.select(users.c.id).where(users.c.username == username)).scalar()
        if uid is None:
            raise NotFound(f"user {username} not found", code="user_not_found")
        return str(uid)
