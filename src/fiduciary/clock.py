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
    # Naive datetimes are UTC here (as stored), never the machine's local time.
    aware = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def iso_or_none(dt: datetime | None) -> str | None:
    return iso(dt) if dt is not None else None
