"""Service API keys: ``fdy_<id>_<secret>``, shown once, stored as a SHA-256 of the secret.

The secret carries 256 bits of randomness, so a fast hash is safe here (unlike passwords).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.access.authcache import NO_CACHE, AuthCache, token_digest
from fiduciary.access.policy import ACTIONS, PolicyEngine
from fiduciary.audit.events import AuditLog, audit_actor
from fiduciary.clock import Clock, iso
from fiduciary.errors import FieldProblem, InvalidInput, NotFound, Unauthenticated
from fiduciary.principal import Principal
from fiduciary.storage import Database
from fiduciary.storage.schema import api_keys, users

PREFIX = "fdy"
#: Lifetime bounds (days) when the runtime gives none (settings ``api_key_default_days`` and
#: ``api_key_max_days``).
DEFAULT_DAYS = 365
MAX_DAYS = 730
_KEY_ID = re.compile(r"^[0-9a-f]{16}\Z")
DEFAULT_ROLE = "service"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    scopes: tuple[str, ...] | None = None
    last_used_at: datetime | None = None
    #: The approval the key waits for (None: in force, or never needed one).
    approval_id: str | None = None
    #: The staff user the key belongs to (None: a service key nobody holds personally).
    owner_id: str | None = None
    #: Its holder is disabled or gone: the key does not authenticate until they are enabled.
    holder_out: bool = False

    @classmethod
    def from_row(cls, r: Any) -> ApiKey:
        """From a row of ``api_keys``, joined with its holder (``_WITH_OWNER``)."""
        return cls(r.id, r.name, r.role, r.created_at, r.expires_at, r.revoked_at,
                   tuple(json.loads(r.scopes)) if r.scopes else None, r.last_used_at,
                   r.approval_id, r.owner_id, not _owner_in_office(r))

    def state(self, now: datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if self.approval_id:
            return "pending_approval"
        if self.expires_at and self.expires_at <= now:
            return "expired"
        if self.holder_out:
            return "holder_disabled"
        return "active"


#: A key with its holder's standing, read together: a disabled holder's key stops at once
#: whichever path disabled them (admin, dormant job, HR sync, SQL), and works again when
#: they are enabled; it is never revoked by this.
_WITH_OWNER = (sa.select(api_keys, users.c.id.label("owner_found"),
                         users.c.disabled_at.label("owner_disabled_at"))
               .select_from(api_keys.outerjoin(users, users.c.id == api_keys.c.owner_id)))


def _owner_in_office(row: Any) -> bool:
    """A service key (no holder), or a key whose holder exists and is not disabled."""
    return row.owner_id is None or (row.owner_found is not None
                                    and row.owner_disabled_at is None)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _actor(by: Principal | None) -> Principal | None:
    """The principal an admin event names: None (the CLI operator) for the CLI."""
    return None if by is None else audit_actor(by)


class ApiKeyService:
    def __init__(self, db: Database, clock: Clock, policy: PolicyEngine,
                 audit: AuditLog, default_days: int = DEFAULT_DAYS,
                 max_days: int = MAX_DAYS, auth_cache: AuthCache = NO_CACHE) -> None:
        self.db = db
        self.auth_cache = auth_cache
        self.audit = audit
        self.clock = clock
        self.policy = policy
        self.default_days = default_days
        self.max_days = max(max_days, 1)

    def check(self, name: str, role: str, days: int | None = None,
              scopes: list[str] | None = None) -> None:
        """What a new key needs: a name, a known role, known scopes and a lifetime within
        the bounds (``days`` None: the default)."""
        problems = []
        if not isinstance(name, str) or not name or len(name) > 128:
            problems.append(FieldProblem("name", "1 to 128 characters"))
        if role not in self.policy.pack.roles:
            problems.append(FieldProblem("role", f"unknown role (known: "
                                                 f"{', '.join(self.policy.pack.roles)})"))
        bad_scopes = [s for s in scopes or [] if s not in ACTIONS]
        if bad_scopes:
            problems.append(FieldProblem("scope", f"unknown scope(s) {', '.join(bad_scopes)} "
                                                  f"(known: {', '.join(ACTIONS)})"))
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)
                                 or not 1 <= days <= self.max_days):
            # 0 or a negative or absurd number is never "no expiry".
            problems.append(FieldProblem("days", f"1 to {self.max_days}"))
        if problems:
            raise InvalidInput.from_problems(problems, "API key")

    def create(self, name: str, role: str = DEFAULT_ROLE, days: int | None = None,
               scopes: list[str] | None = None, *, by: Principal | None = None,
               authority: dict[str, Any] | None = None,
               owner_id: str | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns it and the token, which is never retrievable again. Every
        key expires: after ``days`` (at most the maximum), or after the default.
        ``owner_id``: the staff user who holds it (reviewed with them, revoked when they
        leave); by default the staff user creating it, who is shown the secret."""
        with self.db.write() as conn:
            return self.create_in(conn, name, role, days, scopes, by=by, authority=authority,
                                  owner_id=owner_id)

    def create_in(self, conn: Connection, name: str, role: str = DEFAULT_ROLE,
                  days: int | None = None, scopes: list[str] | None = None, *,
                  by: Principal | None = None, authority: dict[str, Any] | None = None,
                  approval_id: str | None = None,
                  owner_id: str | None = None) -> tuple[ApiKey, str]:
        """As :meth:`create`, in the caller's transaction. With ``approval_id`` the key
        authenticates only once that approval is granted (:meth:`activate_in`)."""
        self.check(name, role, days, scopes)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = self.clock.now()
        lifetime = timedelta(days=days if days is not None else min(self.default_days,
                                                                    self.max_days))
        expires = now + lifetime
        if owner_id is None and by is not None and by.is_person:
            owner_id = by.id  # whoever is shown the secret holds the key
        key = ApiKey(key_id, name, role, now, expires, None,
                     tuple(scopes) if scopes else None, None, approval_id, owner_id)
        conn.execute(api_keys.insert(), [{
            "id": key.id, "name": key.name, "role": key.role, "secret_hash": _hash(secret),
            "created_at": key.created_at, "expires_at": key.expires_at,
            "scopes": json.dumps(list(key.scopes)) if key.scopes else None,
            "approval_id": approval_id, "owner_id": owner_id,
        }])
        self.audit.append(conn, self.audit.event(
            _actor(by), "apikey.create",
            details={"key_id": key.id, "name": name, "role": role, "owner_id": owner_id,
                     "scopes": list(key.scopes or []), "expires_at": iso(expires),
                     **(authority or {"authority": "operator"})}))
        return key, f"{PREFIX}_{key_id}_{secret}"

    def activate_in(self, conn: Connection, key_id: str, approval_id: str) -> bool:
        """The key waiting for this approval starts to authenticate."""
        done = conn.execute(api_keys.update().where(
            api_keys.c.id == key_id, api_keys.c.approval_id == approval_id,
            api_keys.c.revoked_at.is_(None)).values(approval_id=None))
        return done.rowcount == 1

    def authenticate(self, token: str | None) -> Principal:
        # One message for every failure: a caller learns nothing about which keys exist.
        failure = Unauthenticated("missing, unknown, expired or revoked API key")
        if not token:
            raise failure
        now = self.clock.now()
        digest = token_digest(token)
        hit, generation = self.auth_cache.lookup(digest, now)
        if hit is not None:
            hit.seen = self._note_use(hit.principal.id, hit.seen, now)
            return hit.principal
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX or not _KEY_ID.match(parts[1]):
            raise failure
        with self.db.read() as conn:
            row = conn.execute(_WITH_OWNER.where(api_keys.c.id == parts[1])).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(parts[2])):
            raise failure
        key = ApiKey.from_row(row)
        if key.state(now) != "active":  # revoked, waiting, expired, or its holder disabled
            raise failure
        seen = self._note_use(key.id, key.last_used_at, now)
        principal = Principal(id=key.id, kind="api_key", username=key.name, roles=(key.role,),
                              scopes=frozenset(key.scopes) if key.scopes else None,
                              permissions=self.policy.permissions((key.role,)))
        self.auth_cache.store(digest, principal, generation, now, key.expires_at, seen)
        return principal

    def _note_use(self, key_id: str, last_used: datetime | None, now: datetime) -> datetime:
        """``last_used_at``, written when more than a minute old: coarse, so access reviews
        see use without a write per request. Returns it as it now stands."""
        if last_used is not None and (now - last_used).total_seconds() <= 60:
            return last_used
        with self.db.write() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id)
                         .values(last_used_at=now))
        return now

    def all(self) -> list[ApiKey]:
        with self.db.read() as conn:
            rows = conn.execute(_WITH_OWNER.order_by(api_keys.c.created_at)).all()
        return [ApiKey.from_row(r) for r in rows]

    def revoke(self, key_id: str, by: Principal | None = None, **details: Any) -> bool:
        """Revoke at once; ``details`` (why: a leaver, a review) go into the audit event.
        False: it was revoked before."""
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise NotFound(f"API key {key_id} not found", code="api_key_not_found")
        with self.db.write() as conn:
            return self.revoke_in(conn, key_id, by, **details)

    def revoke_in(self, conn: Connection, key_id: str, by: Principal | None = None,
                  **details: Any) -> bool:
        """As :meth:`revoke`, in the caller's transaction; False if it was revoked before."""
        done = conn.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=self.clock.now()))
        owner = conn.execute(sa.select(api_keys.c.owner_id).where(api_keys.c.id == key_id)
                             ).first()
        if owner is None:
            raise NotFound(f"API key {key_id} not found", code="api_key_not_found")
        # The holder too: a key's revocation is a change to that person's access.
        self.audit.append(conn, self.audit.event(_actor(by), "apikey.revoke", details={
            "key_id": key_id, **({"owner_id": owner.owner_id} if owner.owner_id else {}),
            **details}))
        return done.rowcount == 1

    def owned_by(self, user_id: str) -> list[ApiKey]:
        """The keys a staff user holds, revoked ones included."""
        with self.db.read() as conn:
            rows = conn.execute(_WITH_OWNER.where(api_keys.c.owner_id == user_id)
                                .order_by(api_keys.c.created_at)).all()
        return [ApiKey.from_row(r) for r in rows]
