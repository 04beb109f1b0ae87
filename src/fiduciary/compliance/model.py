"""The shapes every part of compliance shares: a control, the outcome of its check, a
control's result as stored and reported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a control status, not a password
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class Control:
    """One control of the catalogue (``default_controls.yaml``, insurer-editable)."""

    id: str
    title: str
    #: Regulation sections it serves, as written in the catalogue ("NYDFS 500.12", "GDPR 32").
    sections: tuple[str, ...]
    #: The name of the check implemented in code, or None for an attestation.
    check: str | None
    #: Thresholds and options the check reads (e.g. {"max_age_days": 365}).
    params: Mapping[str, Any] = field(default_factory=dict)
    #: An attestation: what document a named person vouches for, and how often it is due.
    attestation: str | None = None
    every_days: int | None = None
    description: str = ""
    #: Of the alert raised when the control turns from pass to fail (monitoring severities).
    severity: str = "medium"


@dataclass(frozen=True)
class Outcome:
    """What a check found: the status and the facts behind it (JSON-able, no customer value).
    ``event_ids`` name audit events the facts rest on; the evidence pack proves them."""

    status: Status
    facts: Mapping[str, Any]
    event_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControlResult:
    """A control's outcome at a moment, as stored in the posture history."""

    control: Control
    outcome: Outcome
    checked_at: datetime

    @property
    def status(self) -> Status:
        return self.outcome.status

    def as_json(self) -> dict[str, Any]:
        return {"id": self.control.id, "title": self.control.title,
                "sections": list(self.control.sections), "status": self.status.value,
                "checked_at": self.checked_at.isoformat(), "facts": dict(self.outcome.facts),
                "event_ids": list(self.outcome.event_ids)}
