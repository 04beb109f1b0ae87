"""Statutory deadlines: GDPR one calendar month (+2) ending on a working day, CCPA 45 days (+45,
90 at most) and a 10-business-day acknowledgement. Pure functions: no database. Holidays, time
zones and the settings that configure them: tests/test_statutory_periods.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from fiduciary.privacy.deadlines import (
    CCPA,
    GDPR,
    StatutoryCalendar,
    add_business_days,
    add_months,
    deadlines,
    end_of_day,
    extended_due,
    extension_refusal,
)


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def due(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T23:59:59.999999+00:00")


@pytest.mark.parametrize(("received", "expected"), [
    ("2025-01-30", "2025-02-28"),  # 30 February does not exist: the month's last day (Friday)
    ("2026-01-31", "2026-03-02"),  # ... 28 February 2026 is a Saturday: Monday 2 March
    ("2028-01-31", "2028-02-29"),  # leap year (a Tuesday)
    ("2025-11-30", "2025-12-30"),
    ("2026-03-31", "2026-04-30"),
    ("2026-01-15", "2026-02-16"),  # 15 February is a Sunday
    ("2026-12-31", "2027-02-01"),  # across the year end; 31 January 2027 is a Sunday
    ("2026-02-28", "2026-03-30"),  # 28 March is a Saturday
    ("2026-03-06", "2026-04-06"),  # a Monday (no holidays unless configured)
])
def test_gdpr_due_is_one_calendar_month_clamped_and_moved_off_the_weekend(
        received: str, expected: str) -> None:
    d = deadlines(GDPR, at(received))
    assert d.due_at == due(expected)
    assert d.acknowledge_by is None


def test_due_at_is_the_end_of_the_due_day_in_utc_by_default() -> None:
    assert end_of_day(date(2026, 2, 28)).isoformat() == "2026-02-28T23:59:59.999999+00:00"
    # 23:30 in New York on 31 March is 1 April in UTC: without a configured time zone the
    # day counted is the UTC one.
    evening = datetime(2026, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-4)))
    assert deadlines(GDPR, evening).due_at == due("2026-05-01")
    assert deadlines(GDPR, evening.replace(hour=19)).due_at == due("2026-04-30")


def test_add_months_clamps_and_crosses_years() -> None:
    assert add_months(date(2026, 1, 31), 13) == date(2027, 2, 28)
    assert add_months(date(2027, 12, 30), 2) == date(2028, 2, 29)
    assert add_months(date(2026, 5, 31), -1) == date(2026, 4, 30)


@pytest.mark.parametrize(("received", "original", "extended"), [
    # two months from the original NOMINAL last day (28 February), not from Monday 2 March
    ("2026-01-31", "2026-03-02", "2026-04-28"),
    ("2028-01-31", "2028-02-29", "2028-05-01"),  # 29 April 2028 is a Saturday
    ("2025-11-30", "2025-12-30", "2026-03-02"),  # 30 February does not exist; 28th: Saturday
    ("2026-06-15", "2026-07-15", "2026-09-15"),
])
def test_gdpr_extension_adds_two_months_to_the_original_due_date(
        received: str, original: str, extended: str) -> None:
    first = deadlines(GDPR, at(received)).due_at
    assert first == due(original)
    assert extended_due(GDPR, at(received), first) == due(extended)


def test_ccpa_45_days_extendable_by_45_and_never_past_90() -> None:
    received = at("2026-01-31")
    d = deadlines(CCPA, received)
    assert d.due_at == due("2026-03-17")
    assert extended_due(CCPA, received, d.due_at) == due("2026-05-01")
    assert due("2026-05-01").date() - received.date() == timedelta(days=90)
    # An original due date later than 45 days still cannot push the total past 90.
    assert extended_due(CCPA, received, due("2026-04-01")) == due("2026-05-01")


@pytest.mark.parametrize(("received", "acknowledge_by"), [
    ("2026-01-30", "2026-02-13"),  # Friday: two weekends inside the ten days
    ("2026-01-31", "2026-02-13"),  # Saturday: counting starts on Monday
    ("2026-02-02", "2026-02-16"),  # Monday
    ("2026-02-04", "2026-02-18"),  # Wednesday
])
def test_ccpa_acknowledgement_is_due_within_ten_business_days(received: str,
                                                              acknowledge_by: str) -> None:
    assert deadlines(CCPA, at(received)).acknowledge_by == due(acknowledge_by)


def test_ccpa_acknowledgement_skips_configured_holidays() -> None:
    presidents_day = date(2026, 2, 16)
    assert add_business_days(date(2026, 2, 4), 10) == date(2026, 2, 18)
    assert add_business_days(date(2026, 2, 4), 10, [presidents_day]) == date(2026, 2, 19)
    d = deadlines(CCPA, at("2026-02-04"), StatutoryCalendar(ccpa_closed=[presidents_day]))
    assert d.acknowledge_by == due("2026-02-19")
    assert d.due_at == due("2026-03-21")  # the response deadline counts calendar days


def test_extension_is_allowed_once_and_only_before_the_original_due_date() -> None:
    original = due("2026-02-28")
    assert extension_refusal(original, False, at("2026-02-28", 23)) is None
    assert extension_refusal(original, False, original) is None
    assert extension_refusal(original, False, at("2026-03-01", 0)) == "original_due_passed"
    assert extension_refusal(original, True, at("2026-02-01")) == "already_extended"


def test_unknown_regime_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown regime"):
        deadlines("lgpd", at("2026-01-31"))
