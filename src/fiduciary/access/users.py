"""Staff users, sessions, MFA, lockout, training and break-glass.

Login answers one message for an unknown user, a wrong password and a wrong code; failures
are counted per username whether or not it exists, so lockout tells nothing either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pyotp
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.passwords import Passwords
from fiduciary.access.policy import PolicyEngine, PolicySettings
from fiduciary.audit.events import AuditLog
from fiduciary.clock import Clock
from fiduciary.crypto.aead import DecryptionError, associated_data, open_sealed, seal
from fiduciary.crypto.keyring import Keyring
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    Reason,
    Unauthenticated,
)
from fiduciary.principal import Principal
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    break_glass_grants,
    break_glass_uses,
    login_failures,
    recovery_codes,
    sessions,
    training_records,
    users,
)

SESSION_PREFIX = "fds_"
RECOVERY_CODES = 10
_TOUCH_SECONDS = 30  # last_seen is refreshed at most this often: idle timeout, not a hot write


@dataclass(frozen=True)
class User:
    id: str
    username: str
    roles: tuple[str, ...]
    regions: tuple[str, ...]
    disabled_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    mfa_enrolled_at: datetime | None
    must_change_password: bool

    @classmethod
    def from_row(cls, r: Any) -> User:
        return cls(r.id, r.username, tuple(json.loads(r.roles)), tuple(json.loads(r.regions)),
                   r.disabled_at, r.created_at, r.last_login_at, r.mfa_enrolled_at,
                   bool(r.must_change_password))


@dataclass(frozen=True)
class NewCredentials:
    """Shown once: the one-time password, the TOTP secret and URI, the recovery codes."""

    user: User
    password: str
    totp_secret: str
    totp_uri: str
    recovery_codes: list[str]


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class TrainingRecord:
    course: str
    completed_at: date
    expires_at: date


@dataclass(frozen=True)
class BreakGlassGrant:
    id: str
    user_id: str
    subject_ids: list[str]
    justification: str
    created_at: datetime
    expires_at: datetime
    reviewed_at: datetime | None


def _plausible_username(username: str) -> bool:
    return 0 < len(username) <= 64 and all(c.isalnum() or c in "._-@" for c in username)


def _sha(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class UserService:
    def __init__(self, db: Database, clock: Clock, keyring: Keyring, policy: PolicyEngine,
                 audit: AuditLog, passwords: Passwords | None = None,
                 issuer: str = "Fiduciary") -> None:
        self.db = db
        self.audit = audit
        self.clock = clock
        self.policy = policy
        self.settings: PolicySettings = policy.pack.settings
        self.passwords = passwords or Passwords(self.settings.password_min_length)
        self.issuer = issuer
        self._totp_key = keyring.derive_key("credentials/totp")
        self._pepper = keyring.derive_key("credentials/recovery-codes")

    # -- administration ------------------------------------------------------------------------
    def _check_roles(self, roles: list[str]) -> None:
        unknown = [r for r in roles if r not in self.policy.pack.roles]
        if not roles or unknown:
            raise InvalidInput(
                "unknown or missing role(s): " + ", ".join(unknown or ["(none)"]),
                [FieldProblem("role", f"known roles: {', '.join(self.policy.pack.roles)}")])

    def create(self, username: str, roles: list[str], regions: list[str] | None = None
               ) -> NewCredentials:
        if not _plausible_username(username):
            raise InvalidInput("invalid username", [FieldProblem(
                "username", "1 to 64 letters, digits or . _ - @")])
        self._check_roles(roles)
        password = secrets.token_urlsafe(18)
        totp_secret = pyotp.random_base32()
        now = self.clock.now()
        user_id = str(uuid.uuid4())
        codes = [secrets.token_hex(5) for _ in range(RECOVERY_CODES)]
        with self.db.write() as conn:
            if conn.execute(sa.select(users.c.id).where(users.c.username == username)).first():
                raise InvalidInput(f"user {username} already exists",
                                   [FieldProblem("username", "already exists")])
            conn.execute(users.insert(), [{
                "id": user_id, "username": username, "password_hash": self.passwords.hash(password),
                "must_change_password": True, "totp_sealed": self._seal_totp(user_id, totp_secret),
                "roles": json.dumps(roles), "regions": json.dumps(regions or []),
                "created_at": now, "password_changed_at": now,
            }])
            conn.execute(recovery_codes.insert(), [
                {"code_hash": self._code_hash(user_id, c), "user_id": user_id} for c in codes])
            user = self._user(conn, username)
            self._admin_event(conn, "user.create", user, roles=roles, regions=regions or [])
        uri = pyotp.TOTP(totp_secret).provisioning_uri(name=username, issuer_name=self.issuer)
        return NewCredentials(user, password, totp_secret, uri, codes)

    def all(self) -> list[User]:
        with self.db.read() as conn:
            return [User.from_row(r) for r in conn.execute(
                sa.select(users).order_by(users.c.username))]

    def get(self, username: str) -> User:
        with self.db.read() as conn:
            return self._user(conn, username)

    def _admin_event(self, conn: Connection, action: str, user: User, by: Principal | None = None,
                     **details: Any) -> None:
        self.audit.append(conn, self.audit.event(
            by, action, details={"user_id": user.id, "username": user.username, **details}))

    def _user(self, conn: Connection, username: str) -> User:
        row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        if row is None:
            raise NotFound(f"user {username} not found", code="user_not_found")
        return User.from_row(row)

    def set_disabled(self, username: str, disabled: bool) -> User:
        with self.db.write() as conn:
            user = self._user(conn, username)
            conn.execute(users.update().where(users.c.id == user.id).values(
                disabled_at=self.clock.now() if disabled else None))
            if disabled:
                self._revoke_sessions(conn, user.id)
            self._admin_event(conn, "user.disable" if disabled else "user.enable", user)
            return self._user(conn, username)

    def set_roles(self, username: str, roles: list[str]) -> User:
        self._check_roles(roles)
        with self.db.write() as conn:
            user = self._user(conn, username)
            conn.execute(users.update().where(users.c.id == user.id).values(
                roles=json.dumps(roles)))
            self._admin_event(conn, "user.set_roles", user, roles=roles,
                              previous=list(user.roles))
            return self._user(conn, username)

    def set_regions(self, username: str, regions: list[str]) -> User:
        with self.db.write() as conn:
            user = self._user(conn, username)
            conn.execute(users.update().where(users.c.id == user.id).values(
                regions=json.dumps(regions)))
            self._admin_event(conn, "user.set_regions", user, regions=regions)
            return self._user(conn, username)

    def reset_password(self, username: str) -> str:
        """A new one-time password; sessions end and the user must choose a new one."""
        password = secrets.token_urlsafe(18)
        with self.db.write() as conn:
            user = self._user(conn, username)
            conn.execute(users.update().where(users.c.id == user.id).values(
                password_hash=self.passwords.hash(password), must_change_password=True,
                password_changed_at=self.clock.now()))
            self._revoke_sessions(conn, user.id)
            conn.execute(login_failures.delete().where(login_failures.c.username == username))
            self._admin_event(conn, "user.reset_password", user)
        return password

    def _revoke_sessions(self, conn: Connection, user_id: str) -> None:
        conn.execute(sessions.update().where(sessions.c.user_id == user_id,
                                             sessions.c.revoked_at.is_(None))
                     .values(revoked_at=self.clock.now()))

    # -- credentials ---------------------------------------------------------------------------
    def _seal_totp(self, user_id: str, secret: str) -> bytes:
        return seal(self._totp_key, secret.encode(), associated_data(b"totp", user_id))

    def _totp_secret(self, user_id: str, sealed: bytes) -> str | None:
        try:
            return open_sealed(self._totp_key, sealed, associated_data(b"totp", user_id)).decode()
        except DecryptionError:
            return None

    def _code_hash(self, user_id: str, code: str) -> bytes:
        normal = code.strip().lower().replace("-", "").replace(" ", "")
        return hmac.digest(self._pepper, f"{user_id}|{normal}".encode(), "sha256")

    # -- login ---------------------------------------------------------------------------------
    def login(self, username: str, password: str, totp: str | None = None,
              recovery_code: str | None = None) -> Session:
        if not totp and not recovery_code:
            raise Unauthenticated("a TOTP code (or a recovery code) is required",
                                  reason=Reason.MFA_REQUIRED)
        if not _plausible_username(username):
            # Cannot exist; answered like any other failure, without touching the database.
            raise Unauthenticated("invalid username, password or code")
        now = self.clock.now()
        with self.db.write() as conn:
            fail = conn.execute(sa.select(login_failures).where(
                login_failures.c.username == username)).first()
            if fail is not None and fail.locked_until and fail.locked_until > now:
                locked_out = True
            else:
                locked_out = False
            row = None if locked_out else conn.execute(
                sa.select(users).where(users.c.username == username)).first()
            if locked_out:
                self.audit.append(conn, self.audit.event(
                    None, "auth.login_failed", decision="deny", reason=Reason.ACCOUNT_LOCKED,
                    details={"username": username}))
                ok = False
            else:
                ok = self.passwords.verify(row.password_hash if row else None, password)
            step: int | None = None
            if ok and row is not None:
                ok, step = self._second_factor(conn, row, totp, recovery_code, now)
            if ok and row is not None and row.disabled_at is not None:
                ok = False
            if (not ok or row is None) and not locked_out:
                locked = self._count_failure(conn, username, fail, now)
                self.audit.append(conn, self.audit.event(
                    None, "auth.login_failed", decision="deny", reason=Reason.INVALID_CREDENTIALS,
                    details={"username": username}))
                if locked:
                    self.audit.append(conn, self.audit.event(
                        None, "auth.lockout", decision="deny", reason=Reason.ACCOUNT_LOCKED,
                        details={"username": username,
                                 "minutes": self.settings.lockout_minutes}))
        if locked_out:
            raise Forbidden("account locked after repeated failed logins; try again later",
                            reason=Reason.ACCOUNT_LOCKED)
        if not ok or row is None:
            # Raised outside the transaction so the failure count is committed.
            raise Unauthenticated("invalid username, password or code")
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        expires = now + timedelta(hours=self.settings.absolute_hours)
        with self.db.write() as conn:
            conn.execute(login_failures.delete().where(login_failures.c.username == username))
            values: dict[str, Any] = {"last_login_at": now}
            if step is not None:
                values["totp_last_step"] = step
            if row.mfa_enrolled_at is None:
                values["mfa_enrolled_at"] = now
            conn.execute(users.update().where(users.c.id == row.id).values(**values))
            conn.execute(sessions.insert(), [{"token_hash": _sha(token), "user_id": row.id,
                                              "created_at": now, "last_seen_at": now,
                                              "expires_at": expires}])
            who = Principal(id=row.id, kind="user", username=row.username,
                            roles=tuple(json.loads(row.roles)))
            method = "totp" if step is not None else "recovery_code"
            self.audit.append(conn, self.audit.event(who, "auth.login",
                                                     details={"mfa": method}))
            if row.mfa_enrolled_at is None:
                self.audit.append(conn, self.audit.event(who, "auth.mfa_enrolled",
                                                         details={"mfa": method}))
        return Session(token, expires)

    def _second_factor(self, conn: Connection, row: Any, totp: str | None,
                       recovery_code: str | None, now: datetime) -> tuple[bool, int | None]:
        if totp:
            secret = self._totp_secret(row.id, row.totp_sealed)
            if secret is None:
                return False, None
            t = pyotp.TOTP(secret)
            # One step either side for clock drift; a code is good once (no replay).
            for offset in (0, -1, 1):
                at = now + timedelta(seconds=30 * offset)
                step = int(at.timestamp()) // 30
                if (hmac.compare_digest(t.at(at), totp.strip())
                        and (row.totp_last_step is None or step > row.totp_last_step)):
                    return True, step
            return False, None
        code = self._code_hash(row.id, recovery_code or "")
        used = conn.execute(recovery_codes.update().where(
            recovery_codes.c.code_hash == code, recovery_codes.c.user_id == row.id,
            recovery_codes.c.used_at.is_(None)).values(used_at=now))
        return used.rowcount == 1, None

    def _count_failure(self, conn: Connection, username: str, fail: Any,
                       now: datetime) -> bool:
        """Count a failure; True when it locks the account."""
        failures = (fail.failures if fail is not None and not fail.locked_until else 0) + 1
        locked = (now + timedelta(minutes=self.settings.lockout_minutes)
                  if failures >= self.settings.lockout_attempts else None)
        if fail is None:
            conn.execute(login_failures.insert(), [{"username": username,
                                                    "failures": failures,
                                                    "locked_until": locked}])
        else:
            conn.execute(login_failures.update().where(login_failures.c.username == username)
                         .values(failures=0 if locked else failures, locked_until=locked))
        return locked is not None

    def logout(self, principal: Principal, token: str) -> None:
        with self.db.write() as conn:
            conn.execute(sessions.update().where(sessions.c.token_hash == _sha(token))
                         .values(revoked_at=self.clock.now()))
            self.audit.append(conn, self.audit.event(principal, "auth.logout"))

    def change_password(self, principal: Principal, current: str, new: str) -> None:
        with self.db.write() as conn:
            row = conn.execute(sa.select(users).where(users.c.id == principal.id)).first()
            if row is None or not self.passwords.verify(row.password_hash, current):
                raise InvalidInput("current password is wrong",
                                   [FieldProblem("current", "does not match")])
            if self.passwords.verify(row.password_hash, new):
                raise InvalidInput("the new password must differ from the current one",
                                   [FieldProblem("new", "same as the current password")])
            self.passwords.check_rules(new, row.username)
            conn.execute(users.update().where(users.c.id == row.id).values(
                password_hash=self.passwords.hash(new), must_change_password=False,
                password_changed_at=self.clock.now()))
            self.audit.append(conn, self.audit.event(principal, "auth.password_change"))

    # -- sessions ------------------------------------------------------------------------------
    def authenticate(self, token: str) -> Principal:
        failure = Unauthenticated("missing, expired or revoked session")
        now = self.clock.now()
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(sessions.c.last_seen_at, sessions.c.expires_at,
                          sessions.c.revoked_at, users)
                .join(users, users.c.id == sessions.c.user_id)
                .where(sessions.c.token_hash == _sha(token))).first()
            if (row is None or row.revoked_at is not None or row.disabled_at is not None
                    or row.expires_at <= now
                    or now - row.last_seen_at > timedelta(minutes=self.settings.idle_minutes)):
                raise failure
            training_ok = self._training_current(conn, row.id, now.date())
            glass = self._active_break_glass(conn, row.id, now)
        if (now - row.last_seen_at).total_seconds() > _TOUCH_SECONDS:
            with self.db.write() as conn:
                conn.execute(sessions.update().where(sessions.c.token_hash == _sha(token))
                             .values(last_seen_at=now))
        roles = tuple(json.loads(row.roles))
        return Principal(id=row.id, kind="user", username=row.username, roles=roles,
                         regions=tuple(json.loads(row.regions)),
                         permissions=self.policy.permissions(roles),
                         training_current=training_ok,
                         must_change_password=bool(row.must_change_password),
                         break_glass=glass)

    # -- training ------------------------------------------------------------------------------
    def record_training(self, username: str, course: str, completed: date,
                        expires: date | None = None) -> TrainingRecord:
        if not course.strip():
            raise InvalidInput("course is required", [FieldProblem("course", "required")])
        expires = expires or completed + timedelta(days=self.settings.training_validity_days)
        if expires <= completed:
            raise InvalidInput("training must expire after it was completed",
                               [FieldProblem("expires", "on or before the completion date")])
        if completed > self.clock.now().date():
            raise InvalidInput("training cannot be completed in the future",
                               [FieldProblem("completed", "in the future")])
        with self.db.write() as conn:
            user = self._user(conn, username)
            conn.execute(training_records.insert(), [{
                "user_id": user.id, "course": course, "completed_at": completed,
                "expires_at": expires, "recorded_at": self.clock.now()}])
            self._admin_event(conn, "training.record", user, course=course,
                              completed=completed.isoformat(), expires=expires.isoformat())
        return TrainingRecord(course, completed, expires)

    def training(self, user_id: str) -> list[TrainingRecord]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(training_records).where(
                training_records.c.user_id == user_id).order_by(training_records.c.completed_at))
            return [TrainingRecord(r.course, r.completed_at, r.expires_at) for r in rows]

    def _training_current(self, conn: Connection, user_id: str, today: date) -> bool:
        required = self.settings.required_training
        if not required:
            return True
        current = {r.course for r in conn.execute(
            sa.select(training_records.c.course).where(
                training_records.c.user_id == user_id, training_records.c.course.in_(required),
                training_records.c.expires_at > today))}
        return current >= set(required)

    # -- break-glass ---------------------------------------------------------------------------
    def break_glass(self, principal: Principal, subject_ids: list[str], justification: str,
                    minutes: int) -> BreakGlassGrant:
        s = self.settings
        problems = []
        if not principal.is_person:
            raise Forbidden("break-glass is for staff users", reason=Reason.FIELD_NOT_PERMITTED)
        if not self.policy.has_any_grant(principal, ("read",)):
            # Separation of duties: roles without customer data (admin, compliance) never
            # break glass into it.
            raise Forbidden("this role has no access to customer data to extend",
                            reason=Reason.FIELD_NOT_PERMITTED)
        if not isinstance(subject_ids, list) or not subject_ids or len(subject_ids) > 100:
            problems.append(FieldProblem("subject_ids", "1 to 100 subject ids"))
        if len((justification or "").strip()) < s.break_glass_min_justification:
            problems.append(FieldProblem(
                "justification", f"at least {s.break_glass_min_justification} characters"))
        if not 1 <= minutes <= s.break_glass_max_minutes:
            problems.append(FieldProblem("minutes", f"1 to {s.break_glass_max_minutes}"))
        if problems:
            raise InvalidInput.from_problems(problems, "break-glass request")
        now = self.clock.now()
        grant = BreakGlassGrant(str(uuid.uuid4()), principal.id, sorted(set(subject_ids)),
                                justification.strip(), now, now + timedelta(minutes=minutes),
                                None)
        with self.db.write() as conn:
            conn.execute(break_glass_grants.insert(), [{
                "id": grant.id, "user_id": grant.user_id,
                "subject_ids": json.dumps(grant.subject_ids),
                "justification": grant.justification, "created_at": now,
                "expires_at": grant.expires_at}])
            self.audit.append(conn, self.audit.event(
                principal, "auth.break_glass", subject_ids=grant.subject_ids,
                # Free text may name the customer: the event keeps a digest, not the words.
                details={"grant_id": grant.id, "minutes": minutes, "review": "pending",
                         "justification_sha256": hashlib.sha256(
                             grant.justification.encode()).hexdigest(),
                         "justification_chars": len(grant.justification)}))
        return grant

    def _active_break_glass(self, conn: Connection, user_id: str, now: datetime
                            ) -> dict[str, tuple[str, datetime]]:
        out: dict[str, tuple[str, datetime]] = {}
        for r in conn.execute(sa.select(break_glass_grants).where(
                break_glass_grants.c.user_id == user_id, break_glass_grants.c.expires_at > now)):
            for sid in json.loads(r.subject_ids):
                out[sid] = (r.id, r.expires_at)
        return out

    def record_break_glass_use(self, principal: Principal, subject_id: str, collection: str,
                               record_id: str | None, action: str) -> None:
        grant = principal.break_glass.get(subject_id)
        if grant is None:
            return
        with self.db.write() as conn:
            conn.execute(break_glass_uses.insert(), [{
                "grant_id": grant[0], "subject_id": subject_id, "record_id": record_id,
                "collection": collection, "action": action, "at": self.clock.now()}])
            self.audit.append(conn, self.audit.event(
                principal, "auth.break_glass_use", collection=collection,
                record_ids=[record_id] if record_id else [], subject_ids=[subject_id],
                details={"grant_id": grant[0], "action": action}))

    def break_glass_grants(self, pending_only: bool = False) -> list[BreakGlassGrant]:
        q = sa.select(break_glass_grants).order_by(break_glass_grants.c.created_at)
        if pending_only:
            q = q.where(break_glass_grants.c.reviewed_at.is_(None))
        with self.db.read() as conn:
            return [BreakGlassGrant(r.id, r.user_id, json.loads(r.subject_ids), r.justification,
                                    r.created_at, r.expires_at, r.reviewed_at)
                    for r in conn.execute(q)]
