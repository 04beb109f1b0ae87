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

from fiduciary.access.policy import ACTIONS, PolicyEngine
from fiduciary.audit.events import AuditLog
from fiduciary.clock import Clock
from fiduciary.errors import FieldProblem, InvalidInput, NotFound, Unauthenticated
from fiduciary.principal import Principal
from fiduciary.storage import Database
from fiduciary.storage.schema import api_keys

PREFIX = "fdy"
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
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

    @classmethod
    def from_row(cls, r: Any) -> ApiKey:
        return cls(r.id, r.name, r.role, r.created_at, r.expires_at, r.revoked_at,
                   tuple(json.loads(r.scopes)) if r.scopes else None, r.last_used_at)

    def state(self, now: datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= now:
            return "expired"
        return "active"


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ApiKeyService:
    def __init__(self, db: Database, clock: Clock, policy: PolicyEngine,
                 audit: AuditLog) -> None:
        self.db = db
        self.audit = audit
        self.clock = clock
        self.policy = policy

    def create(self, name: str, role: str = DEFAULT_ROLE, expires_in: timedelta | None = None,
               scopes: list[str] | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns it and the token, which is never retrievable again."""
        problems = []
        if not name or len(name) > 128:
            problems.append(FieldProblem("name", "1 to 128 characters"))
        if role not in self.policy.pack.roles:
            problems.append(FieldProblem("role", f"unknown role (known: "
                                                 f"{', '.join(self.policy.pack.roles)})"))
        bad_scopes = [s for s in scopes or [] if s not in ACTIONS]
        if bad_scopes:
            problems.append(FieldProblem("scope", f"unknown scope(s) {', '.join(bad_scopes)} "
                                                  f"(known: {', '.join(ACTIONS)})"))
        if expires_in is not None and expires_in.total_seconds() <= 0:
            problems.append(FieldProblem("expires", "must be in the future"))
        if problems:
            raise InvalidInput.from_problems(problems, "API key")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = self.clock.now()
        key = ApiKey(key_id, name, role, now, now + expires_in if expires_in else None, None,
                     tuple(scopes) if scopes else None)
        with self.db.write() as conn:
            conn.execute(api_keys.insert(), [{
                "id": key.id, "name": key.name, "role": key.role, "secret_hash": _hash(secret),
                "created_at": key.created_at, "expires_at": key.expires_at,
                "scopes": json.dumps(list(key.scopes)) if key.scopes else None,
            }])
            self.audit.append(conn, self.audit.event(
                None, "apikey.create", details={"key_id": key.id, "name": name, "role": role,
                                                "scopes": list(key.scopes or [])}))
        return key, f"{PREFIX}_{key_id}_{secret}"

    def authenticate(self, token: str | None) -> Principal:
        # One message for every failure: a caller learns nothing about which keys exist.
        failure = Unauthenticated("missing, unknown, expired or revoked API key")
        if not token:
            raise failure
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX or not _KEY_ID.match(parts[1]):
            raise failure
        with self.db.read() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == parts[1])).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(parts[2])):
            raise failure
        key = ApiKey.from_row(row)
        now = self.clock.now()
        if key.state(now) != "active":
            raise failure
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            # Coarse, so access reviews see use without a write per request.
            with self.db.write() as conn:
                conn.execute(api_keys.update().where(api_keys.c.id == key.id)
                             .values(last_used_at=now))
        return Principal(id=key.id, kind="api_key", username=key.name, roles=(key.role,),
                         scopes=frozenset(key.scopes) if key.scopes else None,
                         permissions=self.policy.permissions((key.role,)))

    def all(self) -> list[ApiKey]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
        return [ApiKey.from_row(r) for r in rows]

    def revoke(self, key_id: str) -> None:
        if not _KEY_ID.match(key_id):
            raise NotFound(f"API key {key_id} not found", code="api_key_not_found")
        with self.db.write() as conn:
            done = conn.execute(
                api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self.clock.now()))
            if done.rowcount == 0:
                exists = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == key_id))
                if exists.first() is None:
                    raise NotFound(f"API key {key_id} not found", code="api_key_not_found")
            self.audit.append(conn, self.audit.event(None, "apikey.revoke",
                                                     details={"key_id": key_id}))
