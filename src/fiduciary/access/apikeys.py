"""Service API keys: ``fdy_<id>_<secret>``, shown once, stored as a SHA-256 of the secret.

The secret carries 256 bits of randomness, so a fast hash is safe here (unlike passwords).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from fiduciary.clock import Clock
from fiduciary.errors import FieldProblem, InvalidInput, NotFound, Unauthenticated
from fiduciary.storage import Database
from fiduciary.storage.schema import api_keys

PREFIX = "fdy"
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
DEFAULT_ROLE = "service"


@dataclass(frozen=True)
class Principal:
    """Who is calling: for now, a service API key."""

    id: str
    kind: str
    role: str
    name: str


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= now:
            return "expired"
        return "active"


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ApiKeyService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def create(self, name: str, role: str = DEFAULT_ROLE,
               expires_in: timedelta | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns it and the token, which is never retrievable again."""
        if not name or len(name) > 128:
            raise InvalidInput("a key needs a name of 1 to 128 characters",
                               [FieldProblem("name", "1 to 128 characters")])
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = self.clock.now()
        key = ApiKey(key_id, name, role, now, now + expires_in if expires_in else None, None)
        with self.db.write() as conn:
            conn.execute(api_keys.insert(), [{
                "id": key.id, "name": key.name, "role": key.role, "secret_hash": _hash(secret),
                "created_at": key.created_at, "expires_at": key.expires_at,
            }])
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
        key = ApiKey(row.id, row.name, row.role, row.created_at, row.expires_at, row.revoked_at)
        if key.state(self.clock.now()) != "active":
            raise failure
        return Principal(id=key.id, kind="api_key", role=key.role, name=key.name)

    def list(self) -> list[ApiKey]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
        return [ApiKey(r.id, r.name, r.role, r.created_at, r.expires_at, r.revoked_at)
                for r in rows]

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
