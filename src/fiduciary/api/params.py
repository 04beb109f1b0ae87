"""Bounded parameter types shared by routes: a value outside them is a 422 naming the
parameter, never a failure deeper down (an overflowing date, an integer too big for SQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError


def _utc(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return aware.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
        raise PydanticCustomError("datetime_range",
                                  "out of range (years 1 to 9999 in UTC)") from None


#: A date-time in UTC (one without a zone is taken as UTC); out of range is a 422.
UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
