"""Who is calling — a staff user (password + TOTP), a service API key, or the system itself —
and the one permission check every layer uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from fiduciary.errors import Forbidden, Reason


class ActorKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    SYSTEM = "system"
    #: Audit trail only: the OS user behind a CLI command, and a caller not yet known.
    OPERATOR = "operator"
    ANONYMOUS = "anonymous"


class Permission(StrEnum):
    """Non-data permissions a role holds (``resource:action``); data access is granted by the
    policy pack's grants, not by these."""

    USERS_MANAGE = "users:manage"
    APIKEYS_MANAGE = "apikeys:manage"
    CONFIG_READ = "config:read"
    AUDIT_READ = "audit:read"
    PRIVACY_MANAGE = "privacy:manage"
    #: Monitoring alerts: read them; triage them (assign, dismiss, escalate), suppressions
    #: and the watch list.
    ALERTS_READ = "alerts:read"
    #: The incident register: read it; run incidents (scope, obligations, letters).
    INCIDENTS_READ = "incidents:read"
    INCIDENTS_MANAGE = "incidents:manage"
    ALERTS_MANAGE = "alerts:manage"
    CONSENT_READ = "consent:read"
    CONSENT_WRITE = "consent:write"
    #: Approve or reject another person's proposal to grant a data role, ``privacy:manage``
    #: or this permission (separation of duties: never one's own proposal).
    APPROVALS_DECIDE = "approvals:decide"
    #: Everyone's training status and the xAPI statements of completions.
    TRAINING_READ = "training:read"
    #: Access review campaigns: see every campaign and item (not only one's own to decide);
    #: open campaigns too.
    REVIEWS_READ = "reviews:read"
    REVIEWS_MANAGE = "reviews:manage"
    #: The speak-up channel's cases: read reports and threads, acknowledge, give feedback,
    #: close; and its retaliation watch's alerts (the ethics officer alone).
    SPEAKUP_MANAGE = "speakup:manage"
    #: The compliance posture: every control's result and history; recording an attestation
    #: (a document Fiduciary does not hold: incident response plan, risk assessment, asset
    #: inventory).
    COMPLIANCE_READ = "compliance:read"
    COMPLIANCE_ATTEST = "compliance:attest"


class Scope(StrEnum):
    """What an API key limited by scopes may do (the policy pack's data actions)."""

    READ = "read"
    SEARCH = "search"
    WRITE = "write"
    DELETE = "delete"
    EXPORT = "export"
    IMPORT = "import"
    VERIFY = "verify"


@dataclass(frozen=True)
class Principal:
    id: str
    kind: str  # an ActorKind
    username: str  # a user's username, or the key's name
    roles: tuple[str, ...]
    regions: tuple[str, ...] = ()
    #: Actions an API key is limited to; None means whatever its role allows.
    scopes: frozenset[str] | None = None
    permissions: frozenset[str] = frozenset()
    #: The baseline course(s) (the policy pack's ``required_training``) are current: what
    #: ``require_training`` asks of whoever sees customer data in clear outside a read.
    training_current: bool = True
    #: Data classes the person may not see for want of training: classification ->
    #: ``training_missing`` or ``training_expired`` (the training gate, per class).
    training_blocked: Mapping[str, str] = field(default_factory=dict)
    must_change_password: bool = False
    #: subject id -> (break-glass grant id, expiry), for unexpired grants only.
    break_glass: Mapping[str, tuple[str, datetime]] = field(default_factory=dict)

    @property
    def is_person(self) -> bool:
        return self.kind == ActorKind.USER

    @property
    def is_system(self) -> bool:
        return self.kind == ActorKind.SYSTEM

    @property
    def role(self) -> str:
        return self.roles[0] if self.roles else ""

    def break_glass_covers(self, subject_id: str) -> bool:
        return subject_id in self.break_glass

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def require_permission(principal: Principal, *permissions: Permission,
                       scope: Scope | None) -> None:
    """One of ``permissions`` is needed; the system itself (the operator's CLI) is trusted.
    ``scope`` is what the operation does with customer data: an API key limited by scopes
    must hold it (``read`` to read a request or download a package, ``write`` to change
    anything). None: the operation touches no customer data (user administration)."""
    if principal.is_system:
        return
    if not any(principal.can(p) for p in permissions):
        raise Forbidden(f"requires the {' or '.join(permissions)} permission",
                        reason=Reason.FIELD_NOT_PERMITTED)
    if scope is not None and principal.scopes is not None and scope not in principal.scopes:
        raise Forbidden(f"this API key lacks the {scope} scope",
                        reason=Reason.FIELD_NOT_PERMITTED)


def require_training(principal: Principal) -> None:
    """Whoever sees customer data in clear must be trained — the privacy office included."""
    if principal.is_person and not principal.training_current:
        raise Forbidden("required training is not current", reason=Reason.TRAINING_EXPIRED)


SYSTEM = Principal(id="system", kind=ActorKind.SYSTEM, username="system", roles=("service",))
