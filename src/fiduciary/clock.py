"""An injectable clock, so deadlines, expiry and retention are testable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock for tests: stands still until moved."""

    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self._at += timedelta(**delta)


def iso(dt: datetime) -> str:
    """The one timestamp format of every API response and document: RFC 3339, UTC, ``Z``."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
