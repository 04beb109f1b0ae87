"""Statutory deadlines of data-subject requests, as pure functions of dates.

GDPR Art. 12(3): answer within one calendar month of receipt, extendable once by two further
months. CCPA regs 7021: confirm receipt within 10 business days, respond within 45 calendar
days, extendable once by 45 more (90 at most from receipt).

Days are counted in UTC. A deadline falls at the end of its day (23:59:59.999999 UTC), so a
request is late only once its due day has passed entirely.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

GDPR = "gdpr"
CCPA = "ccpa"
REGIMES = (GDPR, CCPA)

GDPR_MONTHS = 1
GDPR_EXTENSION_MONTHS = 2
CCPA_DAYS = 45
CCPA_EXTENSION_DAYS = 45
CCPA_MAX_DAYS = 90
CCPA_ACKNOWLEDGE_BUSINESS_DAYS = 10


@dataclass(frozen=True)
class Deadlines:
    """When a request must be answered and, under the CCPA, when its receipt confirmed."""

    due_at: datetime
    acknowledge_by: datetime | None = None


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped to the last day of a shorter month
    (31 January + 1 month is 28 February, or 29 in a leap year)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def end_of_day(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=UTC)


def utc_day(moment: datetime) -> date:
    """The calendar day of ``moment`` in UTC (a naive datetime is taken to be UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


def add_business_days(day: date, days: int, holidays: Iterable[date] = ()) -> date:
    """The ``days``-th working day (Monday to Friday, not in ``holidays``) after ``day``."""
    closed = frozenset(holidays)
    current, counted = day, 0
    while counted < days:
        current += timedelta(days=1)
        if current.weekday() < 5 and current not in closed:
            counted += 1
    return current


def deadlines(regime: str, received_at: datetime,
              holidays: Iterable[date] = ()) -> Deadlines:
    """The first deadlines of a request received at ``received_at``."""
    received = utc_day(received_at)
    if regime == GDPR:
        return Deadlines(end_of_day(add_months(received, GDPR_MONTHS)))
    if regime == CCPA:
        return Deadlines(
            end_of_day(received + timedelta(days=CCPA_DAYS)),
            end_of_day(add_business_days(received, CCPA_ACKNOWLEDGE_BUSINESS_DAYS, holidays)))
    raise ValueError(f"unknown regime {regime!r}")


def extended_due(regime: str, received_at: datetime, original_due_at: datetime) -> datetime:
    """The due date after the one extension the regime allows. GDPR: two further months
    counted from the original due date; CCPA: 45 further days, never past 90 from receipt."""
    original = utc_day(original_due_at)
    if regime == GDPR:
        return end_of_day(add_months(original, GDPR_EXTENSION_MONTHS))
    if regime == CCPA:
        cap = utc_day(received_at) + timedelta(days=CCPA_MAX_DAYS)
        return end_of_day(min(original + timedelta(days=CCPA_EXTENSION_DAYS), cap))
    raise ValueError(f"unknown regime {regime!r}")


def extension_refusal(original_due_at: datetime, already_extended: bool,
                      now: datetime) -> str | None:
    """Why a request may not be extended now (a stable code), or None if it may: the one
    extension must be decided, and the requester told, before the original due date passes."""
    if already_extended:
        return "already_extended"
    if now > original_due_at:
        return "original_due_passed"
    return None
