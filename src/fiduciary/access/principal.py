"""Who is calling: a staff user (password + TOTP), a service API key, or the system itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from fiduciary.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    id: str
    kind: str  # "user", "api_key" or "system"
    username: str  # a user's username, or the key's name
    roles: tuple[str, ...]
    regions: tuple[str, ...] = ()
    #: Actions an API key is limited to; None means whatever its role allows.
    scopes: frozenset[str] | None = None
    permissions: frozenset[str] = frozenset()
    training_current: bool = True
    must_change_password: bool = False
    #: subject id -> (break-glass grant id, expiry), for unexpired grants only.
    break_glass: Mapping[str, tuple[str, datetime]] = field(default_factory=dict)

    @property
    def is_person(self) -> bool:
        return self.kind == "user"

    @property
    def role(self) -> str:
        return self.roles[0] if self.roles else ""

    def break_glass_covers(self, subject_id: str) -> bool:
        return subject_id in self.break_glass

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def require_permission(principal: Principal, *permissions: str) -> None:
    """One of ``permissions`` is needed; the system itself (the operator's CLI) is trusted."""
    if principal.kind != "system" and not any(principal.can(p) for p in permissions):
        raise Forbidden(f"requires the {' or '.join(permissions)} permission",
                        reason="field_not_permitted")


SYSTEM = Principal(id="system", kind="system", username="system", roles=("service",))
