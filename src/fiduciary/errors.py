"""The domain error tree. Services raise these; only ``fiduciary.api`` maps them to HTTP.

::

    FiduciaryError
     ├── InvalidInput          a request or row that breaks the data map (names every field)
     ├── NotFound              an unknown collection, record or subject
     ├── Gone                  a subject that existed and was erased
     ├── Unauthenticated       no credential, or one that is unknown, revoked or expired
     ├── Forbidden             authenticated, but not for this (``reason`` is a stable code)
     ├── WorkflowConflict      a step the record's state does not allow (a DSR already closed)
     ├── IntegrityFailure      stored ciphertext that does not authenticate (tampered or moved)
     ├── VerificationFailed    the audit trail does not verify (the message names where)
     ├── DataMapInvalid        a data-map file that does not validate (names its place)
     │    ├── PolicyInvalid    a policy pack that does not validate
     │    ├── CatalogueInvalid a training catalogue that does not validate
 │    └── ControlsInvalid  a compliance controls catalogue that does not validate
     ├── RateLimited           too many attempts in a window (``retry_after`` seconds)
     └── ConfigurationError    settings or a keyring that cannot be used

Every error has a ``code`` (its kind) and a ``reason`` (a stable, finer code where the kind
has several causes; otherwise the code). No message or attribute of these ever carries a field
value: they name fields, never contents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Reason codes that code compares (API bodies carry them as ``error.reason``)."""

    UNAUTHENTICATED = "unauthenticated"
    MFA_REQUIRED = "mfa_required"
    #: Not granted: a field, or a permission a route or operation needs.
    FIELD_NOT_PERMITTED = "field_not_permitted"
    PURPOSE_NOT_ALLOWED = "purpose_not_allowed"
    PROCESSING_RESTRICTED = "processing_restricted"
    TRAINING_EXPIRED = "training_expired"
    #: The course that unlocks a data class was never completed (by a person past the grace
    #: period, or for a sensitive class).
    TRAINING_MISSING = "training_missing"
    LEGAL_HOLD = "legal_hold"
    PASSWORD_CHANGE_REQUIRED = "password_change_required"  # noqa: S105 (a code)
    ACCOUNT_LOCKED = "account_locked"
    INVALID_CREDENTIALS = "invalid_credentials"
    INTEGRITY_ERROR = "integrity_error"
    # Data-subject request workflow (WorkflowConflict).
    REQUEST_CLOSED = "request_closed"
    IDENTITY_NOT_VERIFIED = "identity_not_verified"
    ALREADY_VERIFIED = "already_verified"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    ALREADY_STARTED = "already_started"
    #: Too many attempts in a sliding window (HTTP 429 with Retry-After).
    RATE_LIMITED = "rate_limited"
    #: A console form posted without its CSRF token (or with a wrong one).
    CSRF_FAILED = "csrf_failed"
    #: A search by a field the role does not see in clear (a search is a read of it).
    SEARCH_NOT_PERMITTED = "search_not_permitted"
    #: A record outside the caller's relationships (answered as 404, audited as this).
    RELATIONSHIP_REQUIRED = "relationship_required"
    #: The change waits for a second person's approval (HTTP 202 names it).
    APPROVAL_REQUIRED = "approval_required"
    #: The same person may not both propose and approve (or approve a grant to themselves).
    SEPARATION_OF_DUTIES = "separation_of_duties"


@dataclass(frozen=True)
class FieldProblem:
    """One offending field and why, without its value."""

    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class FiduciaryError(Exception):
    """Base of every error Fiduciary raises on purpose."""

    code = "error"

    def __init__(self, message: str, fields: list[FieldProblem] | None = None, *,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        self.reason: str = reason or self.code


class InvalidInput(FiduciaryError):
    """The request or row is rejected as a whole; ``fields`` names every offending field."""

    code = "invalid_input"

    @classmethod
    def from_problems(cls, problems: list[FieldProblem], what: str = "request") -> InvalidInput:
        names = ", ".join(sorted({p.field for p in problems}))
        return cls(f"{what} rejected; offending fields: {names}", problems)


class NotFound(FiduciaryError):
    """The collection, record or subject does not exist (or is not visible)."""

    code = "not_found"

    def __init__(self, message: str, code: str = "not_found") -> None:
        super().__init__(message, reason=code)
        self.code = code


class Gone(FiduciaryError):
    """The subject existed and has been erased."""

    code = "subject_erased"


class Unauthenticated(FiduciaryError):
    """No usable credential was presented; ``reason`` is ``unauthenticated`` or
    ``mfa_required``."""

    code = "unauthenticated"

    def __init__(self, message: str, reason: str = Reason.UNAUTHENTICATED) -> None:
        super().__init__(message, reason=reason)


class Forbidden(FiduciaryError):
    """The principal may not do this; ``reason`` is a code such as ``purpose_not_allowed``;
    ``fields`` names the denied fields where that helps (never their values)."""

    code = "forbidden"

    def __init__(self, message: str, reason: str,
                 fields: list[FieldProblem] | None = None) -> None:
        super().__init__(message, fields, reason=reason)


class WorkflowConflict(FiduciaryError):
    """The request is not in a state that allows this step; ``reason`` is a stable code
    (``identity_not_verified``, ``request_closed``, ``already_extended``,
    ``original_due_passed`` …)."""

    code = "invalid_state"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, reason=reason)


class IntegrityFailure(FiduciaryError):
    """Stored ciphertext failed authentication: it was altered or copied from elsewhere."""

    code = "integrity_error"


class VerificationFailed(FiduciaryError):
    """The audit trail does not verify; the message names where."""

    code = "audit_verification_failed"


class DataMapInvalid(FiduciaryError):
    """A data map did not validate; ``fields`` carries ``file: collection.field`` locations."""

    code = "datamap_invalid"


class PolicyInvalid(DataMapInvalid):
    """A policy pack did not validate; ``fields`` carries ``file: roles.R.grants[i]: reason``."""

    code = "policy_invalid"


class CatalogueInvalid(DataMapInvalid):
    """A training catalogue did not validate; ``fields`` carries
    ``file: courses[id].field: reason``."""

    code = "catalogue_invalid"


class ControlsInvalid(DataMapInvalid):
    """A compliance controls catalogue did not validate; ``fields`` carries
    ``file: controls[id].field: reason``."""

    code = "controls_invalid"


class DetectionsInvalid(DataMapInvalid):
    """A detection pack did not validate; ``fields`` carries ``file: detections.D.x: reason``."""

    code = "detections_invalid"


class RulesInvalid(DataMapInvalid):
    """A breach-notification rules table did not validate; ``fields`` carries
    ``file: rows[i].field: reason``."""

    code = "rules_invalid"


class RateLimited(FiduciaryError):
    """Too many attempts in a sliding window; ``retry_after`` is whole seconds to wait."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, reason=Reason.RATE_LIMITED)
        self.retry_after = max(1, math.ceil(retry_after))


class ConfigurationError(FiduciaryError):
    """The settings, data directory or keyring cannot be used as configured."""

    code = "configuration_error"
