"""Staff users, enrolment, sessions, MFA, lockout, training and break-glass.

Login answers one message for an unknown user, a wrong password and a wrong code; failures
are counted per username whether or not it exists, so lockout tells nothing either.

Races: a login hashes the password (Argon2id, behind the hashing semaphore) outside any
transaction, then settles in one write transaction that locks the username's failure row
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write transaction holds the database lock):
the lock state is read again there, a failure is counted there, and the TOTP step is moved
forward by an update that only succeeds if it is still ahead. So N parallel wrong passwords
count N (and lock at the threshold) and one TOTP code opens one session.

Nobody who creates a user sees its secrets: a new user gets a one-time enrolment code (the
operator's CLI prints it; through the API it is never shown to the proposer or approver) and
enrols itself — password, TOTP secret, recovery codes — with ``enrol``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import pyotp
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from fiduciary.access.authcache import NO_CACHE, AuthCache, token_digest
from fiduciary.access.passwords import Passwords
from fiduciary.access.policy import PolicyEngine, PolicySettings
from fiduciary.access.throttle import LoginThrottle
from fiduciary.audit.events import AuditLog, audit_actor, request_context
from fiduciary.clock import Clock
from fiduciary.crypto.aead import DecryptionError, associated_data, open_sealed, seal
from fiduciary.crypto.keyring import Keyring
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Reason,
    Unauthenticated,
    WorkflowConflict,
)
from fiduciary.ids import is_id as valid_id
from fiduciary.principal import Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    api_keys,
    break_glass_grants,
    break_glass_uses,
    enrolments,
    login_failures,
    recovery_codes,
    sessions,
    subjects,
    training_records,
    users,
)

SESSION_PREFIX = "fds_"
RECOVERY_CODES = 10
ENROLMENT_HOURS = 72
_TOUCH_SECONDS = 30  # last_seen is refreshed at most this often: idle timeout, not a hot write
#: The password hash of a user who has not enrolled (or must enrol again): matches nothing.
UNUSABLE_PASSWORD = "!"  # noqa: S105 (a marker, not a password)
#: Usernames: ASCII letters, digits, ``.``, ``_``, ``-`` (no look-alike characters).
USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: HR's employee ids: ASCII letters, digits and ``.`` ``_`` ``-`` ``/``.
EMPLOYEE_ID = re.compile(r"[A-Za-z0-9._/-]{1,64}")
_LOGIN_FAILED = "invalid username, password or code"
_ENROL_FAILED = "invalid username or enrolment code"


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
    #: False until the user has enrolled (chosen a password, received a TOTP secret).
    enrolled: bool = True
    #: The manager's user id (reviews this user's access), and HR's id for the user.
    manager_id: str | None = None
    employee_id: str | None = None

    @classmethod
    def from_row(cls, r: Any) -> User:
        return cls(r.id, r.username, tuple(json.loads(r.roles)), tuple(json.loads(r.regions)),
                   r.disabled_at, r.created_at, r.last_login_at, r.mfa_enrolled_at,
                   bool(r.must_change_password), r.password_hash != UNUSABLE_PASSWORD,
                   r.manager_id, r.employee_id)


@dataclass(frozen=True)
class NewUser:
    """A created user; the enrolment code is shown once (None: not issued to this caller)."""

    user: User
    enrolment_code: str | None
    enrolment_expires_at: datetime | None


@dataclass(frozen=True)
class Enrolled:
    """What enrolment hands the user, once: the TOTP secret and URI, the recovery codes."""

    username: str
    totp_secret: str
    totp_uri: str
    recovery_codes: list[str]


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    """One of a user's sessions that still works (not revoked, expired or idle)."""

    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    #: The session the list was asked from.
    current: bool


@dataclass(frozen=True)
class TrainingRecord:
    course: str
    completed_at: date
    expires_at: date
    #: The course version completed (None: recorded before versions; counts as current).
    course_version: str | None = None
    #: ``assessment`` (passed through the API) or ``external`` (recorded with evidence).
    source: str | None = None
    evidence: str | None = None


#: A course's state for one person.
CURRENT, EXPIRED, MISSING = "current", "expired", "missing"


@dataclass(frozen=True)
class CourseState:
    status: str  # CURRENT, EXPIRED or MISSING
    #: Of the latest completion (of any version); None when missing.
    expires_at: date | None = None
    #: Completed, but of a version the catalogue has since replaced (material change).
    refresher_due: bool = False


@dataclass(frozen=True)
class TrainingRequirements:
    """What the training gate asks, as plain data: the catalogue that declares it lives in
    ``fiduciary.workforce``, above this layer, and the runtime hands it over."""

    #: Each encrypted classification -> the courses it needs, all current.
    unlocks: Mapping[str, tuple[str, ...]]
    #: Course -> its current version (a completion of another version is due for refresher).
    versions: Mapping[str, str] = field(default_factory=dict)
    #: Course -> days a completion is valid.
    validity_days: Mapping[str, int] = field(default_factory=dict)
    #: New accounts reach ``grace_classes`` without the courses for this many days.
    grace_days: int = 0
    grace_classes: frozenset[str] = frozenset()

    @classmethod
    def baseline_only(cls, courses: tuple[str, ...]) -> TrainingRequirements:
        """Without a catalogue: every encrypted class needs the baseline courses, no grace."""
        return cls({c: courses for c in ("personal", "financial", "government_id",
                                         "special_category")})

    def state(self, records: list[TrainingRecord], course: str, today: date) -> CourseState:
        """A course's state from the person's completions of it (any order)."""
        done = [r for r in records if r.course == course]
        if not done:
            return CourseState(MISSING)
        latest = max(done, key=lambda r: r.expires_at)
        version = self.versions.get(course)
        valid = [r for r in done if r.course_version in (None, version) or version is None]
        if valid and max(r.expires_at for r in valid) > today:
            return CourseState(CURRENT, max(r.expires_at for r in valid))
        return CourseState(EXPIRED, latest.expires_at,
                           refresher_due=not valid and latest.expires_at > today)

    def blocked(self, records: list[TrainingRecord], created_at: datetime, now: datetime
                ) -> dict[str, str]:
        """Classification -> ``training_missing``/``training_expired`` for each class the
        person may not see yet; a missing course outranks an expired one."""
        today = now.date()
        in_grace = now - created_at < timedelta(days=self.grace_days)
        states: dict[str, CourseState] = {}
        out: dict[str, str] = {}
        for cls, courses in self.unlocks.items():
            if in_grace and cls in self.grace_classes:
                continue
            for c in courses:
                if c not in states:
                    states[c] = self.state(records, c, today)
            found = {states[c].status for c in courses}
            if MISSING in found:
                out[cls] = Reason.TRAINING_MISSING
            elif EXPIRED in found:
                out[cls] = Reason.TRAINING_EXPIRED
        return out


@dataclass(frozen=True)
class BreakGlassGrant:
    id: str
    user_id: str
    subject_ids: list[str]
    justification: str
    created_at: datetime
    expires_at: datetime
    reviewed_at: datetime | None
    reviewed_by: str | None = None
    review_outcome: str | None = None


def _training_record(r: Any) -> TrainingRecord:
    return TrainingRecord(r.course, r.completed_at, r.expires_at, r.course_version, r.source,
                          r.evidence)


def valid_username(username: str) -> bool:
    return isinstance(username, str) and USERNAME.fullmatch(username) is not None


def _plausible_username(username: str) -> bool:
    # Logins also accept ``@``: usernames created before the rule may hold one.
    return 0 < len(username) <= 64 and all(c.isascii() and (c.isalnum() or c in "._-@")
                                           for c in username)


def _sha(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _actor(by: Principal | None) -> Principal | None:
    """The principal an admin event names: None (the CLI operator) for the CLI."""
    return None if by is None else audit_actor(by)


class UserService:
    def __init__(self, db: Database, clock: Clock, keyring: Keyring, policy: PolicyEngine,
                 audit: AuditLog, passwords: Passwords | None = None,
                 issuer: str = "Fiduciary", throttle: LoginThrottle | None = None,
                 enrolment_hours: int = ENROLMENT_HOURS,
                 training: TrainingRequirements | None = None,
                 auth_cache: AuthCache = NO_CACHE) -> None:
        self.db = db
        self.auth_cache = auth_cache
        self.audit = audit
        self.clock = clock
        self.policy = policy
        self.settings: PolicySettings = policy.pack.settings
        self.passwords = passwords or Passwords(self.settings.password_min_length)
        self.issuer = issuer
        self.throttle = throttle or LoginThrottle(30, 300, 60.0)
        self.enrolment_hours = enrolment_hours
        self.training_rules = training or TrainingRequirements.baseline_only(
            self.settings.required_training)
        self._totp_key = keyring.derive_key("credentials/totp")
        self._pepper = keyring.derive_key("credentials/recovery-codes")
        self._enrol_key = keyring.derive_key("credentials/enrolment-codes")
        self._typed_key = keyring.derive_key("credentials/typed-usernames")

    # -- administration ------------------------------------------------------------------------
    def check_roles(self, roles: list[str]) -> None:
        unknown = [r for r in roles if r not in self.policy.pack.roles]
        if not roles or unknown:
            raise InvalidInput(
                "unknown or missing role(s): " + ", ".join(unknown or ["(none)"]),
                [FieldProblem("role", f"known roles: {', '.join(self.policy.pack.roles)}")])

    def check_new(self, conn: Connection, username: str, roles: list[str]) -> None:
        """What creating this user needs: a valid, free username and known roles."""
        if not valid_username(username):
            raise InvalidInput("invalid username", [FieldProblem(
                "username", "1 to 64 ASCII letters, digits or . _ -")])
        self.check_roles(roles)
        if conn.execute(sa.select(users.c.id).where(users.c.username == username)).first():
            raise InvalidInput(f"user {username} already exists",
                               [FieldProblem("username", "already exists")])

    def create(self, username: str, roles: list[str], regions: list[str] | None = None, *,
               by: Principal | None = None, issue_code: bool = True,
               authority: dict[str, Any] | None = None, manager: str | None = None,
               employee_id: str | None = None) -> NewUser:
        """Create a user at once (the operator's CLI; an approved or data-free API request).
        With ``issue_code`` the one-time enrolment code is returned, to be shown once;
        ``manager`` (a username) reviews the user's access, ``employee_id`` is HR's id."""
        with self.db.write() as conn:
            made = self.create_in(conn, username, roles, regions, by=by,
                                  issue_code=issue_code, authority=authority)
            if employee_id is not None:
                self.set_employee_id_in(conn, username, employee_id, by)
            if manager is not None:
                self.set_manager_in(conn, username, manager, by)
            if employee_id is None and manager is None:
                return made
            return NewUser(self._user(conn, username), made.enrolment_code,
                           made.enrolment_expires_at)

    def set_manager(self, username: str, manager: str | None,
                    by: Principal | None = None) -> User:
        with self.db.write() as conn:
            return self.set_manager_in(conn, username, manager, by)

    def set_manager_in(self, conn: Connection, username: str, manager: str | None,
                       by: Principal | None = None, **details: Any) -> User:
        """``manager`` (a username; None: none) reviews the user's access; never the user."""
        user = self._user(conn, username)
        manager_id = None
        if manager is not None:
            row = conn.execute(sa.select(users.c.id).where(users.c.username == manager)).first()
            if row is None:
                raise InvalidInput("unknown manager", [FieldProblem("manager", "no such user")])
            if row.id == user.id:
                raise InvalidInput("a user is not their own manager",
                                   [FieldProblem("manager", "the user themselves")])
            manager_id = row.id
        conn.execute(users.update().where(users.c.id == user.id).values(manager_id=manager_id))
        self._admin_event(conn, "user.set_manager", user, by, manager=manager,
                          previous_manager_id=user.manager_id, **details)
        return self._user(conn, username)

    def set_employee_id_in(self, conn: Connection, username: str, employee_id: str,
                           by: Principal | None = None, **details: Any) -> User:
        """HR's id for the user: unique, so the HR feed names one account."""
        if not isinstance(employee_id, str) or not EMPLOYEE_ID.fullmatch(employee_id):
            raise InvalidInput("invalid employee id", [FieldProblem(
                "employee_id", "1 to 64 ASCII letters, digits or . _ - /")])
        user = self._user(conn, username)
        taken = conn.execute(sa.select(users.c.id).where(
            users.c.employee_id == employee_id, users.c.id != user.id)).first()
        if taken is not None:
            raise InvalidInput("employee id already belongs to another user",
                               [FieldProblem("employee_id", "belongs to another user")])
        conn.execute(users.update().where(users.c.id == user.id).values(
            employee_id=employee_id))
        self._admin_event(conn, "user.set_employee_id", user, by, employee_id=employee_id,
                          **details)
        return self._user(conn, username)

    def create_in(self, conn: Connection, username: str, roles: list[str],
                  regions: list[str] | None = None, *, by: Principal | None = None,
                  issue_code: bool = True, authority: dict[str, Any] | None = None) -> NewUser:
        self.check_new(conn, username, roles)
        now = self.clock.now()
        user_id = str(uuid.uuid4())
        try:
            conn.execute(users.insert(), [{
                "id": user_id, "username": username, "password_hash": UNUSABLE_PASSWORD,
                "must_change_password": False, "totp_sealed": b"",
                "roles": json.dumps(roles), "regions": json.dumps(regions or []),
                "created_at": now, "password_changed_at": now,
            }])
        except sa.exc.IntegrityError:  # created meanwhile (PostgreSQL): the transaction ends
            raise InvalidInput(f"user {username} already exists",
                               [FieldProblem("username", "already exists")]) from None
        conn.execute(enrolments.insert(), [{"user_id": user_id, "created_at": now}])
        user = self._user(conn, username)
        self._admin_event(conn, "user.create", user, by, roles=roles, regions=regions or [],
                          **(authority or {"authority": "operator"}))
        code, expires = self._issue_code(conn, user, by) if issue_code else (None, None)
        return NewUser(user, code, expires)

    def all(self) -> list[User]:
        with self.db.read() as conn:
            return [User.from_row(r) for r in conn.execute(
                sa.select(users).order_by(users.c.username))]

    def get(self, username: str) -> User:
        with self.db.read() as conn:
            return self._user(conn, username)

    def _admin_event(self, conn: Connection, action: str, user: User,
                     by: Principal | None = None, **details: Any) -> None:
        self.audit.append(conn, self.audit.event(
            _actor(by), action, details={"user_id": user.id, "username": user.username,
                                         **details}))

    def _user(self, conn: Connection, username: str) -> User:
        row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        if row is None:
            raise NotFound(f"user {username} not found", code="user_not_found")
        return User.from_row(row)

    def set_disabled(self, username: str, disabled: bool, by: Principal | None = None,
                     **details: Any) -> User:
        """Disable (ending every session) or enable a user; ``details`` (why: a leaver, a
        dormant account, a review) go into the audit event."""
        with self.db.write() as conn:
            return self.set_disabled_in(conn, username, disabled, by, **details)

    def set_disabled_in(self, conn: Connection, username: str, disabled: bool,
                        by: Principal | None = None, **details: Any) -> User:
        user = self._user(conn, username)
        conn.execute(users.update().where(users.c.id == user.id).values(
            disabled_at=self.clock.now() if disabled else None))
        ended = self._revoke_sessions(conn, user.id) if disabled else 0
        effect: dict[str, Any] = {"sessions_ended": ended} if disabled else {}
        # The keys they hold stop with the account and work again with it (never revoked
        # here: ApiKeyService.authenticate reads the holder); the event names them.
        held = self._keys_in_force(conn, user.id)
        if held:
            effect["api_keys_stopped" if disabled else "api_keys_resumed"] = held
        self._admin_event(conn, "user.disable" if disabled else "user.enable", user, by,
                          **effect, **details)
        return self._user(conn, username)

    def _keys_in_force(self, conn: Connection, user_id: str) -> list[str]:
        """The ids of the API keys the user holds that are neither revoked, expired nor
        waiting for approval."""
        k = api_keys.c
        return list(conn.execute(
            sa.select(k.id).where(k.owner_id == user_id, k.revoked_at.is_(None),
                                  k.approval_id.is_(None),
                                  sa.or_(k.expires_at.is_(None), k.expires_at > self.clock.now()))
            .order_by(k.created_at)).scalars())

    def set_roles(self, username: str, roles: list[str], by: Principal | None = None,
                  authority: dict[str, Any] | None = None) -> User:
        self.check_roles(roles)
        with self.db.write() as conn:
            return self.set_roles_in(conn, username, roles, by, authority)

    def set_roles_in(self, conn: Connection, username: str, roles: list[str],
                     by: Principal | None = None,
                     authority: dict[str, Any] | None = None) -> User:
        self.check_roles(roles)
        user = self._user(conn, username)
        conn.execute(users.update().where(users.c.id == user.id).values(
            roles=json.dumps(roles)))
        self._admin_event(conn, "user.set_roles", user, by, roles=roles,
                          previous=list(user.roles),
                          **(authority or {"authority": "operator"}))
        return self._user(conn, username)

    def set_regions(self, username: str, regions: list[str],
                    by: Principal | None = None) -> User:
        with self.db.write() as conn:
            user = self._user(conn, username)
            conn.execute(users.update().where(users.c.id == user.id).values(
                regions=json.dumps(regions)))
            self._admin_event(conn, "user.set_regions", user, by, regions=regions)
            return self._user(conn, username)

    def reset_password(self, username: str, by: Principal | None = None) -> str:
        """A new one-time password (the operator's CLI); sessions end and the user must
        choose a new one."""
        password = secrets.token_urlsafe(18)
        hashed = self.passwords.hash(password)  # outside the write lock
        with self.db.write() as conn:
            user = self._user(conn, username)
            if not user.enrolled:
                raise WorkflowConflict(f"user {username} has not enrolled yet: issue an "
                                       "enrolment code instead", reason="not_enrolled")
            # The failure row before the user row, as a login takes them.
            self._forget_failures(conn, username)
            conn.execute(users.update().where(users.c.id == user.id).values(
                password_hash=hashed, must_change_password=True,
                password_changed_at=self.clock.now()))
            self._revoke_sessions(conn, user.id)
            self._admin_event(conn, "user.reset_password", user, by)
        return password

    def _revoke_sessions(self, conn: Connection, user_id: str, keep: str | None = None) -> int:
        q = sessions.update().where(sessions.c.user_id == user_id,
                                    sessions.c.revoked_at.is_(None))
        if keep:
            q = q.where(sessions.c.token_hash != _sha(keep))
        return int(conn.execute(q.values(revoked_at=self.clock.now())).rowcount)

    # -- enrolment -----------------------------------------------------------------------------
    def _enrolment_hash(self, user_id: str, code: str) -> bytes:
        normal = code.strip().upper().replace("-", "").replace(" ", "")
        return hmac.digest(self._enrol_key, f"{user_id}|{normal}".encode(), "sha256")

    def _issue_code(self, conn: Connection, user: User, by: Principal | None
                    ) -> tuple[str, datetime]:
        raw = secrets.token_hex(10).upper()  # 80 bits
        code = "-".join(raw[i:i + 5] for i in range(0, len(raw), 5))
        now = self.clock.now()
        expires = now + timedelta(hours=self.enrolment_hours)
        conn.execute(enrolments.update().where(enrolments.c.user_id == user.id).values(
            code_hash=self._enrolment_hash(user.id, code), issued_at=now, expires_at=expires))
        self._admin_event(conn, "user.enrolment_code", user, by,
                          expires_at=expires.isoformat())
        return code, expires

    def _reset_credentials(self, conn: Connection, user: User) -> None:
        """The user must enrol again: no password, no TOTP, no recovery codes, no sessions."""
        # The failure row before the user row, as a login takes them.
        self._forget_failures(conn, user.username)
        conn.execute(users.update().where(users.c.id == user.id).values(
            password_hash=UNUSABLE_PASSWORD, must_change_password=False, totp_sealed=b"",
            totp_last_step=None, mfa_enrolled_at=None, password_changed_at=self.clock.now()))
        conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user.id))
        self._revoke_sessions(conn, user.id)
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)
        conn.execute(insert(enrolments).values(user_id=user.id, created_at=self.clock.now())
                     .on_conflict_do_nothing())
        conn.execute(enrolments.update().where(enrolments.c.user_id == user.id).values(
            code_hash=None, issued_at=None, expires_at=None))

    def re_enrol_in(self, conn: Connection, username: str, by: Principal | None = None,
                    authority: dict[str, Any] | None = None) -> User:
        """Withdraw the user's credentials; they enrol again with a new code."""
        user = self._user(conn, username)
        self._reset_credentials(conn, user)
        self._admin_event(conn, "user.re_enrol", user, by,
                          **(authority or {"authority": "operator"}))
        return self._user(conn, username)

    def issue_enrolment_code(self, username: str, *, by: Principal | None = None,
                             re_enrol: bool = False) -> NewUser:
        """A new one-time enrolment code (the operator's CLI shows it once; any earlier code
        stops working). A user who has enrolled gets one only with ``re_enrol``, which
        withdraws their credentials first."""
        with self.db.write() as conn:
            user = self._user(conn, username)
            if user.disabled_at is not None:
                raise WorkflowConflict(f"user {username} is disabled", reason="user_disabled")
            pending = conn.execute(sa.select(enrolments.c.user_id).where(
                enrolments.c.user_id == user.id)).first() is not None
            if not pending:
                if not re_enrol:
                    raise WorkflowConflict(
                        f"user {username} has enrolled; re-enrolment withdraws their "
                        "credentials (--re-enrol)", reason="already_enrolled")
                self.re_enrol_in(conn, username, by)
            code, expires = self._issue_code(conn, user, by)
            return NewUser(self._user(conn, username), code, expires)

    def enrol(self, username: str, code: str, password: str) -> Enrolled:
        """The user's first step (or again after an approved re-enrolment): a valid, unused,
        unexpired code sets the password and hands out the TOTP secret and recovery codes.
        A wrong code counts toward the username's lockout, like a wrong password."""
        self._throttle()
        if not _plausible_username(username) or not isinstance(code, str) or len(code) > 64:
            raise Unauthenticated(_ENROL_FAILED)
        now = self.clock.now()
        self._refuse_if_locked(username, now, "auth.enrol_failed")
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(users.c.id, users.c.disabled_at, enrolments.c.code_hash,
                          enrolments.c.expires_at)
                .join(enrolments, enrolments.c.user_id == users.c.id)
                .where(users.c.username == username)).first()
        digest = self._enrolment_hash(row.id, code) if row is not None else b""
        valid = (row is not None and row.code_hash is not None and row.disabled_at is None
                 and row.expires_at is not None and row.expires_at > now
                 and hmac.compare_digest(row.code_hash, digest))
        if not valid or row is None:
            self._settle_failure(username, "auth.enrol_failed")
            raise Unauthenticated(_ENROL_FAILED)
        self.passwords.check_rules(password, username)
        hashed = self.passwords.hash(password)  # outside the write lock
        secret = pyotp.random_base32()
        codes = [secrets.token_hex(5) for _ in range(RECOVERY_CODES)]
        with self.db.write() as conn:
            fail = self._failure_row(conn, username)
            if self._locked(fail, now):
                refused = True
            else:
                # Single use, and only this code: a concurrent enrolment finds it gone.
                refused = conn.execute(enrolments.delete().where(
                    enrolments.c.user_id == row.id, enrolments.c.code_hash == digest,
                    enrolments.c.expires_at > now)).rowcount != 1
            if not refused:
                conn.execute(users.update().where(users.c.id == row.id).values(
                    password_hash=hashed, must_change_password=False,
                    totp_sealed=self._seal_totp(row.id, secret), totp_last_step=None,
                    mfa_enrolled_at=None, password_changed_at=now))
                conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == row.id))
                conn.execute(recovery_codes.insert(), [
                    {"code_hash": self._code_hash(row.id, c), "user_id": row.id}
                    for c in codes])
                self._forget_failures(conn, username)
                who = Principal(id=row.id, kind="user", username=username, roles=())
                self.audit.append(conn, self.audit.event(who, "auth.enrol"))
        if refused:
            self._settle_failure(username, "auth.enrol_failed")
            raise Unauthenticated(_ENROL_FAILED)
        uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=self.issuer)
        return Enrolled(username, secret, uri, codes)

    # -- credentials ---------------------------------------------------------------------------
    def _seal_totp(self, user_id: str, secret: str) -> bytes:
        return seal(self._totp_key, secret.encode(), associated_data(b"totp", user_id))

    def _totp_secret(self, user_id: str, sealed: bytes) -> str | None:
        if not sealed:
            return None
        try:
            return open_sealed(self._totp_key, sealed, associated_data(b"totp", user_id)).decode()
        except DecryptionError:
            return None

    def _code_hash(self, user_id: str, code: str) -> bytes:
        normal = code.strip().lower().replace("-", "").replace(" ", "")
        return hmac.digest(self._pepper, f"{user_id}|{normal}".encode(), "sha256")

    # -- lockout -------------------------------------------------------------------------------
    def _failure_key(self, username: str) -> str:
        """The key of a username's failure counter: a keyed digest, never the typed text (a
        password typed into the username field must not sit in the table)."""
        return hmac.digest(self._typed_key, b"lockout|" + username.encode(), "sha256").hex()

    def _forget_failures(self, conn: Connection, username: str) -> None:
        conn.execute(login_failures.delete().where(
            login_failures.c.username == self._failure_key(username)))

    def _typed(self, username: str, conn: Connection | None = None) -> dict[str, str]:
        """How a refused sign-in names what was typed as the username: the name when such an
        account exists, otherwise only a keyed digest (64 bits), so that a password typed
        into the username field never reaches the trail while repeats still group."""
        query = sa.select(users.c.id).where(users.c.username == username)
        if conn is None:
            with self.db.read() as c:
                found = c.execute(query).first()
        else:
            found = conn.execute(query).first()
        if found is not None:
            return {"username": username}
        digest = hmac.digest(self._typed_key, b"typed|" + username.encode(), "sha256")
        return {"username_digest": digest[:8].hex()}

    def _throttle(self) -> None:
        self.throttle.check(request_context.get().client)

    @staticmethod
    def _locked(fail: Any, now: datetime) -> bool:
        return fail is not None and fail.locked_until is not None and fail.locked_until > now

    def _failure_row(self, conn: Connection, username: str) -> Any:
        """The username's failure row, created if absent and locked for this transaction
        (PostgreSQL: ``FOR UPDATE``; SQLite: the write transaction holds the database)."""
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)
        for _ in range(100):
            conn.execute(insert(login_failures).values(
                username=self._failure_key(username), failures=0, locked_until=None)
                .on_conflict_do_nothing())
            row = conn.execute(sa.select(login_failures).where(
                login_failures.c.username == self._failure_key(username)).with_for_update()).first()
            if row is not None:
                return row
            # PostgreSQL: a successful login deleted the row between our insert (which found
            # it) and our lock (which found it gone); the next insert makes it ours.
        raise RuntimeError("the failure row of a username could not be locked")

    def _is_locked(self, username: str, now: datetime) -> bool:
        with self.db.read() as conn:
            fail = conn.execute(sa.select(login_failures.c.locked_until).where(
                login_failures.c.username == self._failure_key(username))).first()
        return self._locked(fail, now)

    def _refuse_if_locked(self, username: str, now: datetime, action: str,
                          who: Principal | None = None) -> None:
        if self._is_locked(username, now):
            self.audit.append_committed(self.audit.event(
                who, action, decision="deny", reason=Reason.ACCOUNT_LOCKED,
                details=self._typed(username)))
            raise self._locked_error()

    @staticmethod
    def _locked_error() -> Forbidden:
        return Forbidden("account locked after repeated failed attempts; try again later",
                         reason=Reason.ACCOUNT_LOCKED)

    def _count_failure(self, conn: Connection, username: str, fail: Any, now: datetime,
                       action: str, who: Principal | None = None) -> bool:
        """Count a failure on the locked failure row and audit it; True when it locks."""
        expired = fail.locked_until is not None and fail.locked_until <= now
        failures = (0 if expired else fail.failures) + 1
        locked = (now + timedelta(minutes=self.settings.lockout_minutes)
                  if failures >= self.settings.lockout_attempts else None)
        conn.execute(login_failures.update()
                     .where(login_failures.c.username == self._failure_key(username))
                     .values(failures=0 if locked else failures, locked_until=locked))
        self.audit.append(conn, self.audit.event(
            who, action, decision="deny", reason=Reason.INVALID_CREDENTIALS,
            details={**self._typed(username, conn), "failures": failures}))
        if locked:
            self.audit.append(conn, self.audit.event(
                who, "auth.lockout", decision="deny", reason=Reason.ACCOUNT_LOCKED,
                details={**self._typed(username, conn),
                         "minutes": self.settings.lockout_minutes}))
        return locked is not None

    def _settle_failure(self, username: str, action: str,
                        who: Principal | None = None) -> bool:
        """Count one failure in its own transaction; True when it locked the account. A
        failure that finds the account locked already is refused as locked, not counted."""
        now = self.clock.now()
        already = locked = False
        with self.db.write() as conn:
            fail = self._failure_row(conn, username)
            if self._locked(fail, now):
                self.audit.append(conn, self.audit.event(
                    who, action, decision="deny", reason=Reason.ACCOUNT_LOCKED,
                    details=self._typed(username, conn)))
                already = True
            else:
                locked = self._count_failure(conn, username, fail, now, action, who)
                if locked and who is not None:
                    # A session guessing its own user's password loses every session.
                    self._revoke_sessions(conn, who.id)
        if already:
            raise self._locked_error()
        return locked

    # -- login ---------------------------------------------------------------------------------
    def login(self, username: str, password: str, totp: str | None = None,
              recovery_code: str | None = None) -> Session:
        self._throttle()
        if not totp and not recovery_code:
            raise Unauthenticated("a TOTP code (or a recovery code) is required",
                                  reason=Reason.MFA_REQUIRED)
        if not _plausible_username(username):
            # Cannot exist; answered like any other failure, without touching the database.
            raise Unauthenticated(_LOGIN_FAILED)
        self._refuse_if_locked(username, self.clock.now(), "auth.login_failed")
        with self.db.read() as conn:
            row = conn.execute(sa.select(users.c.id, users.c.password_hash).where(
                users.c.username == username)).first()
        # Argon2id outside any transaction, behind the hashing semaphore; whoever waited
        # for a slot while the account was locked is refused without a hash.
        ok = self.passwords.verify(
            row.password_hash if row else None, password,
            before=lambda: self._refuse_if_locked(username, self.clock.now(),
                                                  "auth.login_failed"))
        now = self.clock.now()
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        expires = now + timedelta(hours=self.settings.absolute_hours)
        with self.db.write() as conn:
            fail = self._failure_row(conn, username)
            if self._locked(fail, now):
                self.audit.append(conn, self.audit.event(
                    None, "auth.login_failed", decision="deny", reason=Reason.ACCOUNT_LOCKED,
                    details=self._typed(username, conn)))
                outcome = "locked"
            else:
                user = None
                if ok and row is not None:
                    user = conn.execute(sa.select(users).where(users.c.id == row.id)
                                        .with_for_update()).first()
                    if (user is None or user.password_hash != row.password_hash
                            or user.disabled_at is not None):
                        user = None
                method = (self._second_factor(conn, user, totp, recovery_code, now)
                          if user is not None else None)
                if user is not None and method is not None:
                    self._open_session(conn, user, method, token, now, expires)
                    outcome = "ok"
                else:
                    self._count_failure(conn, username, fail, now, "auth.login_failed")
                    outcome = "failed"
        # Raised outside the transaction so the failure count is committed.
        if outcome == "locked":
            raise self._locked_error()
        if outcome == "failed":
            raise Unauthenticated(_LOGIN_FAILED)
        return Session(token, expires)

    def _open_session(self, conn: Connection, user: Any, method: str, token: str,
                      now: datetime, expires: datetime) -> None:
        self._forget_failures(conn, user.username)
        values: dict[str, Any] = {"last_login_at": now}
        if user.mfa_enrolled_at is None:
            values["mfa_enrolled_at"] = now
        conn.execute(users.update().where(users.c.id == user.id).values(**values))
        conn.execute(sessions.insert(), [{"token_hash": _sha(token), "user_id": user.id,
                                          "created_at": now, "last_seen_at": now,
                                          "expires_at": expires}])
        who = Principal(id=user.id, kind="user", username=user.username,
                        roles=tuple(json.loads(user.roles)))
        self.audit.append(conn, self.audit.event(who, "auth.login", details={"mfa": method}))
        if user.mfa_enrolled_at is None:
            self.audit.append(conn, self.audit.event(who, "auth.mfa_enrolled",
                                                     details={"mfa": method}))

    def _second_factor(self, conn: Connection, user: Any, totp: str | None,
                       recovery_code: str | None, now: datetime) -> str | None:
        """The factor that passed ("totp", "recovery_code") or None. Each is spent by a
        conditional update, so only one of several parallel logins can spend it."""
        if totp:
            secret = self._totp_secret(user.id, user.totp_sealed)
            if secret is None or not isinstance(totp, str) or len(totp) > 16:
                return None
            t = pyotp.TOTP(secret)
            # One step either side for clock drift; a code is good once (no replay).
            for offset in (0, -1, 1):
                at = now + timedelta(seconds=30 * offset)
                step = int(at.timestamp()) // 30
                if _same(t.at(at), totp.strip()):
                    spent = conn.execute(users.update().where(
                        users.c.id == user.id,
                        sa.or_(users.c.totp_last_step.is_(None),
                               users.c.totp_last_step < step)).values(totp_last_step=step))
                    return "totp" if spent.rowcount == 1 else None
            return None
        if not isinstance(recovery_code, str) or len(recovery_code) > 64:
            return None
        code = self._code_hash(user.id, recovery_code)
        used = conn.execute(recovery_codes.update().where(
            recovery_codes.c.code_hash == code, recovery_codes.c.user_id == user.id,
            recovery_codes.c.used_at.is_(None)).values(used_at=now))
        return "recovery_code" if used.rowcount == 1 else None

    def logout(self, principal: Principal, token: str) -> None:
        with self.db.write() as conn:
            conn.execute(sessions.update().where(sessions.c.token_hash == _sha(token))
                         .values(revoked_at=self.clock.now()))
            self.audit.append(conn, self.audit.event(principal, "auth.logout"))

    def active_sessions(self, principal: Principal, current: str | None = None
                        ) -> list[ActiveSession]:
        """The caller's own working sessions, newest first; ``current`` (a token) marks the
        one asking. Tokens are stored only as hashes: none is returned."""
        now = self.clock.now()
        idle_since = now - timedelta(minutes=self.settings.idle_minutes)
        s = sessions.c
        with self.db.read() as conn:
            rows = conn.execute(sa.select(s.token_hash, s.created_at, s.last_seen_at,
                                          s.expires_at).where(
                s.user_id == principal.id, s.revoked_at.is_(None), s.expires_at > now,
                s.last_seen_at >= idle_since).order_by(s.created_at.desc())).all()
        mine = _sha(current) if current else None
        return [ActiveSession(r.created_at, r.last_seen_at, r.expires_at,
                              mine is not None and hmac.compare_digest(r.token_hash, mine))
                for r in rows]

    def logout_everywhere(self, principal: Principal) -> int:
        """Ends every session of the caller (this one included): a lost laptop, a shared
        screen. Returns how many were ended."""
        with self.db.write() as conn:
            ended = self._revoke_sessions(conn, principal.id)
            self.audit.append(conn, self.audit.event(principal, "auth.logout_all",
                                                     details={"sessions_ended": ended}))
        return ended

    def change_password(self, principal: Principal, current: str, new: str,
                        keep_session: str | None = None) -> None:
        """A wrong ``current`` counts toward the lockout (a stolen session cannot guess the
        password); a change ends the user's other sessions."""
        self._refuse_if_locked(principal.username, self.clock.now(),
                               "auth.password_change_failed", principal)
        with self.db.read() as conn:
            row = conn.execute(sa.select(users.c.id, users.c.username, users.c.password_hash)
                               .where(users.c.id == principal.id)).first()
        if row is None:
            raise Unauthenticated("missing, expired or revoked session")
        if not self.passwords.verify(
                row.password_hash, current,
                before=lambda: self._refuse_if_locked(
                    principal.username, self.clock.now(), "auth.password_change_failed",
                    principal)):
            if self._settle_failure(row.username, "auth.password_change_failed", principal):
                raise self._locked_error()
            raise InvalidInput("current password is wrong",
                               [FieldProblem("current", "does not match")])
        self.passwords.check_rules(new, row.username)
        if self.passwords.verify(row.password_hash, new):
            raise InvalidInput("the new password must differ from the current one",
                               [FieldProblem("new", "same as the current password")])
        hashed = self.passwords.hash(new)  # outside the write lock
        with self.db.write() as conn:
            # The failure row before the user row, as a login takes them; locked meanwhile
            # by a guessing session: no change.
            if self._locked(self._failure_row(conn, row.username), self.clock.now()):
                raise self._locked_error()
            changed = conn.execute(users.update().where(
                users.c.id == row.id, users.c.password_hash == row.password_hash).values(
                password_hash=hashed, must_change_password=False,
                password_changed_at=self.clock.now()))
            if changed.rowcount != 1:  # changed meanwhile by another request
                raise InvalidInput("current password is wrong",
                                   [FieldProblem("current", "does not match")])
            self._forget_failures(conn, row.username)
            ended = self._revoke_sessions(conn, row.id, keep=keep_session)
            self.audit.append(conn, self.audit.event(principal, "auth.password_change",
                                                     details={"sessions_ended": ended}))

    # -- sessions ------------------------------------------------------------------------------
    def authenticate(self, token: str) -> Principal:
        failure = Unauthenticated("missing, expired or revoked session")
        now = self.clock.now()
        digest = token_digest(token)
        idle = timedelta(minutes=self.settings.idle_minutes)
        hit, generation = self.auth_cache.lookup(digest, now)
        # A request older than the idle limit, as this worker knows it: the database decides
        # (another worker may have served a later one).
        if hit is not None and hit.seen is not None and now - hit.seen <= idle:
            if (now - hit.seen).total_seconds() > _TOUCH_SECONDS:
                self._touch_session(digest, now)
                hit.seen = now
            return hit.principal
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(sessions.c.last_seen_at, sessions.c.expires_at,
                          sessions.c.revoked_at, users)
                .join(users, users.c.id == sessions.c.user_id)
                .where(sessions.c.token_hash == digest)).first()
            if (row is None or row.revoked_at is not None or row.disabled_at is not None
                    or row.expires_at <= now or now - row.last_seen_at > idle):
                raise failure
            records = self._training_in(conn, row.id)
            glass = self._active_break_glass(conn, row.id, now)
        seen = row.last_seen_at
        if (now - seen).total_seconds() > _TOUCH_SECONDS:
            self._touch_session(digest, now)
            seen = now
        roles = tuple(json.loads(row.roles))
        principal = Principal(id=row.id, kind="user", username=row.username, roles=roles,
                              regions=tuple(json.loads(row.regions)),
                              permissions=self.policy.permissions(roles),
                              training_current=self._training_current(records, now.date()),
                              training_blocked=self.training_rules.blocked(
                                  records, row.created_at, now),
                              must_change_password=bool(row.must_change_password),
                              break_glass=glass)
        # Never past a moment the principal changes by itself: the session's end, midnight
        # (a course expires), the end of the training grace, a break-glass grant's expiry.
        ends = [row.expires_at, datetime.combine(now.date() + timedelta(days=1), time(),
                                                 tzinfo=now.tzinfo)]
        grace_end = row.created_at + timedelta(days=self.training_rules.grace_days)
        ends += [grace_end] if grace_end > now else []
        ends += [expiry for _, expiry in glass.values()]
        self.auth_cache.store(digest, principal, generation, now, min(ends), seen)
        return principal

    def _touch_session(self, digest: bytes, now: datetime) -> None:
        """The session's last request: what the idle timeout counts from."""
        with self.db.write() as conn:
            conn.execute(sessions.update().where(sessions.c.token_hash == digest)
                         .values(last_seen_at=now))

    # -- training ------------------------------------------------------------------------------
    def record_training(self, username: str, course: str, completed: date,
                        expires: date | None = None, *, evidence: str | None = None,
                        source: str = "external", version: str | None = None,
                        by: Principal | None = None) -> TrainingRecord:
        """Record a completion: an external one (the operator's CLI, with its evidence
        reference) or a passed assessment. It counts for the course's current version unless
        ``version`` says otherwise."""
        rules = self.training_rules
        problems = []
        if not course.strip():
            problems.append(FieldProblem("course", "required"))
        elif rules.versions and course not in rules.versions:
            problems.append(FieldProblem("course", "not a course of the training catalogue"))
        if evidence is not None and not (0 < len(evidence.strip()) <= 256):
            problems.append(FieldProblem("evidence", "1 to 256 characters"))
        if problems:
            raise InvalidInput.from_problems(problems)
        expires = expires or completed + timedelta(
            days=rules.validity_days.get(course, self.settings.training_validity_days))
        if expires <= completed:
            raise InvalidInput("training must expire after it was completed",
                               [FieldProblem("expires", "on or before the completion date")])
        if completed > self.clock.now().date():
            raise InvalidInput("training cannot be completed in the future",
                               [FieldProblem("completed", "in the future")])
        with self.db.write() as conn:
            return self.record_training_in(conn, self._user(conn, username), course,
                                           completed, expires, evidence=evidence,
                                           source=source, version=version, by=by)

    def record_training_in(self, conn: Connection, user: User, course: str, completed: date,
                           expires: date, *, evidence: str | None, source: str,
                           version: str | None, by: Principal | None) -> TrainingRecord:
        """The completion's row and audit event, in the caller's transaction (a passed
        assessment writes it with its attempt)."""
        version = version or self.training_rules.versions.get(course)
        conn.execute(training_records.insert(), [{
            "user_id": user.id, "course": course, "completed_at": completed,
            "expires_at": expires, "recorded_at": self.clock.now(),
            "course_version": version, "source": source, "evidence": evidence}])
        self._admin_event(conn, "training.record", user, by, course=course, version=version,
                          source=source, evidence=evidence, completed=completed.isoformat(),
                          expires=expires.isoformat())
        return TrainingRecord(course, completed, expires, version, source, evidence)

    def training(self, user_id: str) -> list[TrainingRecord]:
        with self.db.read() as conn:
            return self._training_in(conn, user_id)

    def training_of_all(self) -> dict[str, list[TrainingRecord]]:
        """Every user's completions (user id -> records), in one read."""
        out: dict[str, list[TrainingRecord]] = {}
        with self.db.read() as conn:
            for r in conn.execute(sa.select(training_records).order_by(
                    training_records.c.completed_at, training_records.c.id)):
                out.setdefault(r.user_id, []).append(_training_record(r))
        return out

    def _training_in(self, conn: Connection, user_id: str) -> list[TrainingRecord]:
        rows = conn.execute(sa.select(training_records).where(
            training_records.c.user_id == user_id).order_by(
            training_records.c.completed_at, training_records.c.id))
        return [_training_record(r) for r in rows]

    def _training_current(self, records: list[TrainingRecord], today: date) -> bool:
        return all(self.training_rules.state(records, c, today).status == CURRENT
                   for c in self.settings.required_training)

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
        if self.policy.pseudonymised_only(principal):
            raise Forbidden("a pseudonymised-only role never sees customers in clear",
                            reason=Reason.FIELD_NOT_PERMITTED)
        if (not isinstance(subject_ids, list) or not subject_ids
                or len(subject_ids) > s.break_glass_max_subjects):
            problems.append(FieldProblem("subject_ids",
                                         f"1 to {s.break_glass_max_subjects} subject ids"))
        if len((justification or "").strip()) < s.break_glass_min_justification:
            problems.append(FieldProblem(
                "justification", f"at least {s.break_glass_min_justification} characters"))
        if not 1 <= minutes <= s.break_glass_max_minutes:
            problems.append(FieldProblem("minutes", f"1 to {s.break_glass_max_minutes}"))
        if problems:
            raise InvalidInput.from_problems(problems, "break-glass request")
        now = self.clock.now()
        with self.db.read() as conn:
            # Only existing, active customers: no grant "in advance" over ids to come.
            active = set(conn.execute(sa.select(subjects.c.id).where(
                subjects.c.id.in_([x for x in subject_ids if valid_id(x)]),
                subjects.c.status == "active")).scalars())
        unknown = [x for x in subject_ids if x not in active]
        if unknown:
            raise InvalidInput.from_problems([FieldProblem(
                "subject_ids", f"{len(unknown)} id(s) name no active customer")],
                "break-glass request")
        grant = BreakGlassGrant(str(uuid.uuid4()), principal.id, sorted(set(subject_ids)),
                                justification.strip(), now, now + timedelta(minutes=minutes),
                                None)
        with self.db.write() as conn:
            # Counted in the transaction that inserts, the user's row locked: parallel
            # requests cannot all slip under the monthly limit.
            conn.execute(sa.select(users.c.id).where(users.c.id == principal.id)
                         .with_for_update())
            taken = conn.execute(sa.select(sa.func.count()).select_from(break_glass_grants)
                                 .where(break_glass_grants.c.user_id == principal.id,
                                        break_glass_grants.c.created_at > now - timedelta(
                                            days=30))).scalar_one()
            if taken >= s.break_glass_per_month:
                raise RateLimited(f"at most {s.break_glass_per_month} break-glass grants in "
                                  "30 days", retry_after=timedelta(days=1).total_seconds())
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

    def review_break_glass(self, reviewer: Principal, grant_id: str, outcome: str,
                           note: str | None) -> BreakGlassGrant:
        """Close a grant as ``justified`` or ``unjustified``: a second person (audit
        permission: security analyst, compliance officer), never the requester; audited with
        the outcome and only a digest of the note."""
        require_permission(reviewer, Permission.AUDIT_READ, scope=None)
        if outcome not in ("justified", "unjustified"):
            raise InvalidInput.from_problems(
                [FieldProblem("outcome", "justified or unjustified")], "review")
        now = self.clock.now()
        with self.db.write() as conn:
            r = conn.execute(sa.select(break_glass_grants).where(
                break_glass_grants.c.id == grant_id)).first() if valid_id(grant_id) else None
            if r is None:
                raise NotFound(f"break-glass grant {grant_id} not found",
                               code="grant_not_found")
            if r.user_id == reviewer.id:
                raise Forbidden("a break-glass grant is reviewed by someone else",
                                reason=Reason.SEPARATION_OF_DUTIES)
            if r.reviewed_at is not None:
                raise WorkflowConflict(f"break-glass grant {grant_id} is already reviewed",
                                       reason="already_reviewed")
            conn.execute(break_glass_grants.update().where(
                break_glass_grants.c.id == grant_id).values(
                reviewed_at=now, reviewed_by=(reviewer.username or reviewer.id)[:64],
                review_outcome=outcome))
            details: dict[str, Any] = {"grant_id": grant_id, "outcome": outcome,
                                       "requester": r.user_id}
            if note:
                details["note_sha256"] = hashlib.sha256(note.encode()).hexdigest()
            self.audit.append(conn, self.audit.event(
                reviewer, "break_glass.review", subject_ids=json.loads(r.subject_ids),
                decision="allow" if outcome == "justified" else "deny", details=details))
        return next(g for g in self.break_glass_grants() if g.id == grant_id)

    def break_glass_grants(self, pending_only: bool = False, user_id: str | None = None
                           ) -> list[BreakGlassGrant]:
        """Every grant, oldest first; only those awaiting review, or only one user's."""
        q = sa.select(break_glass_grants).order_by(break_glass_grants.c.created_at)
        if pending_only:
            q = q.where(break_glass_grants.c.reviewed_at.is_(None))
        if user_id is not None:
            q = q.where(break_glass_grants.c.user_id == user_id)
        with self.db.read() as conn:
            return [BreakGlassGrant(r.id, r.user_id, json.loads(r.subject_ids), r.justification,
                                    r.created_at, r.expires_at, r.reviewed_at, r.reviewed_by,
                                    r.review_outcome)
                    for r in conn.execute(q)]
