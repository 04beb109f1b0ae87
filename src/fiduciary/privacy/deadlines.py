"""Statutory periods of data-subject requests, counted as the law counts them: pure functions
of dates, with the controller's time zone and holiday calendars passed in.

GDPR Art. 12(3): answer "within one month of receipt", extendable once "by two further
months". The GDPR does not say how a period is counted; the EDPB and the supervisory
authorities apply Regulation (EEC, Euratom) No 1182/71 (OJ L 124, 8.6.1971, p. 1):

- Art. 3(1), second subparagraph: the day of the event (the receipt) is not counted;
- Art. 3(2)(c): a period in months ends with the expiry of the last hour of the day of the last
  month that has the same date as the day from which it runs, or, if there is no such date in
  that month, of the month's last day (31 January + 1 month = 28 February, or 29 in a leap
  year);
- Art. 3(4): "Where the last day of a period expressed otherwise than in hours is a public
  holiday, Sunday or Saturday, the period shall end with the expiry of the last hour of the
  following working day" (working days: Art. 2(2), every day but public holidays, Sundays and
  Saturdays; public holidays: Art. 2(1), those of the Member State "in which action is to be
  taken", here the controller's configured jurisdictions).

The extension's two further months are counted from the original period's *nominal* last day
(before Art. 3(4) moves it), and Art. 3(4) is then applied to the extended last day. Counting
from the moved day would be the longer reading: received Friday 29 January 2027, the month
ends on Monday 1 March, not Sunday 28 February; two months from 28 February end on Wednesday
28 April, from 1 March on Monday 3 May (1 May is a Saturday). Fiduciary takes the earlier of
the two, so a deadline it shows is never later than any reading of the law.

CCPA regs 7021: confirm receipt within 10 business days (Monday to Friday, not a public
holiday of the configured jurisdictions); respond within 45 calendar days, extendable once by
45 more, 90 at most from receipt. The calendar days are not moved off weekends.

Days are the controller's local days (an IANA time zone, UTC by default): a request is
received on the local day of its receipt, and a deadline falls at the end of its local due
day, given as an aware UTC instant — a request is late only once its due day has passed
entirely where the controller is.
"""

from __future__ import annotations

import calendar
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holiday_calendars

from fiduciary.config import Settings
from fiduciary.errors import ConfigurationError

GDPR = "gdpr"
CCPA = "ccpa"
REGIMES = (GDPR, CCPA)

GDPR_MONTHS = 1
GDPR_EXTENSION_MONTHS = 2
CCPA_DAYS = 45
CCPA_EXTENSION_DAYS = 45
CCPA_MAX_DAYS = 90
CCPA_ACKNOWLEDGE_BUSINESS_DAYS = 10


# -- holiday calendars ---------------------------------------------------------------------------
@lru_cache(maxsize=256)
def public_holidays(jurisdiction: str, year: int) -> frozenset[date]:
    """The public holidays of ``jurisdiction`` — a country (``IE``) or a country and one of its
    subdivisions (``US-CA``, ``DE-BY``) of the ``holidays`` package — in ``year``, observed
    days included. Raises ValueError for a code the package does not know."""
    country, _, subdivision = jurisdiction.partition("-")
    try:
        return frozenset(holiday_calendars.country_holidays(
            country, subdiv=subdivision or None, years=year))
    except NotImplementedError:
        raise ValueError(f"unknown holiday calendar {jurisdiction!r} (a country or country-"
                         "subdivision code of the holidays package, such as IE or US-CA)"
                         ) from None


class HolidayCalendar:
    """The days on which no working day is counted besides Saturdays and Sundays: the public
    holidays of some jurisdictions and extra closure dates. ``day in calendar`` asks; any year
    is answered (a year's holidays are computed once and kept)."""

    def __init__(self, jurisdictions: Iterable[str] = (),
                 closures: Iterable[date] = ()) -> None:
        self.jurisdictions = tuple(dict.fromkeys(jurisdictions))
        self.closures = frozenset(closures)
        for code in self.jurisdictions:
            public_holidays(code, 2026)  # an unknown code fails here, not on first use

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        return day in self.closures or any(day in public_holidays(code, day.year)
                                           for code in self.jurisdictions)

    def __repr__(self) -> str:
        return (f"HolidayCalendar({list(self.jurisdictions)!r}, "
                f"{sorted(self.closures)!r})")


@dataclass(frozen=True)
class StatutoryCalendar:
    """How the controller counts statutory days: the time zone whose calendar days count, and
    the days closed (besides weekends) for each regime's working days."""

    zone: tzinfo = UTC
    gdpr_closed: Container[date] = field(default_factory=frozenset)
    ccpa_closed: Container[date] = field(default_factory=frozenset)


def statutory_calendar(settings: Settings) -> StatutoryCalendar:
    """The calendar the settings configure; a wrong time zone or jurisdiction code raises
    ConfigurationError naming the setting (checked when the runtime starts)."""
    try:
        zone = ZoneInfo(settings.controller_timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory's name
        raise ConfigurationError(
            "FIDUCIARY_CONTROLLER_TIMEZONE must be an IANA time zone name such as "
            "Europe/Dublin or America/New_York") from None
    closures = settings.holidays()
    calendars = {}
    for setting, value in (("gdpr", settings.gdpr_holiday_calendars),
                           ("ccpa", settings.ccpa_holiday_calendars)):
        codes = [c.strip() for c in value.split(",") if c.strip()]
        try:
            calendars[setting] = HolidayCalendar(codes, closures)
        except ValueError as e:
            raise ConfigurationError(
                f"FIDUCIARY_{setting.upper()}_HOLIDAY_CALENDARS: {e}") from None
    return StatutoryCalendar(zone, calendars["gdpr"], calendars["ccpa"])


# -- days ----------------------------------------------------------------------------------------
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


def local_day(moment: datetime, zone: tzinfo = UTC) -> date:
    """The calendar day of ``moment`` in ``zone`` (a naive datetime is taken to be UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).date()


def end_of_day(day: date, zone: tzinfo = UTC) -> datetime:
    """The last instant of ``day`` in ``zone``, in UTC."""
    # fold=1: where clocks go back at midnight, the day ends at the later 23:59:59.
    return datetime.combine(day, time.max, zone).replace(fold=1).astimezone(UTC).replace(fold=0)


def is_working_day(day: date, closed: Container[date] = frozenset()) -> bool:
    """Monday to Friday and not a closed day."""
    return day.weekday() < 5 and day not in closed


def on_working_day(day: date, closed: Container[date] = frozenset()) -> date:
    """Regulation 1182/71 Art. 3(4): ``day``, or if it is a Saturday, Sunday or closed day,
    the next working day."""
    while not is_working_day(day, closed):
        day += timedelta(days=1)
    return day


def add_business_days(day: date, days: int, closed: Container[date] = frozenset()) -> date:
    """The ``days``-th working day (Monday to Friday, not in ``closed``) after ``day``."""
    current, counted = day, 0
    while counted < days:
        current += timedelta(days=1)
        if is_working_day(current, closed):
            counted += 1
    return current


# -- the periods ---------------------------------------------------------------------------------
def deadlines(regime: str, received_at: datetime,
              counting: StatutoryCalendar = StatutoryCalendar()) -> Deadlines:
    """The first deadlines of a request received at ``received_at``."""
    received = local_day(received_at, counting.zone)
    if regime == GDPR:
        last = on_working_day(add_months(received, GDPR_MONTHS), counting.gdpr_closed)
        return Deadlines(end_of_day(last, counting.zone))
    if regime == CCPA:
        acknowledge = add_business_days(received, CCPA_ACKNOWLEDGE_BUSINESS_DAYS,
                                        counting.ccpa_closed)
        return Deadlines(end_of_day(received + timedelta(days=CCPA_DAYS), counting.zone),
                         end_of_day(acknowledge, counting.zone))
    raise ValueError(f"unknown regime {regime!r}")


def extended_due(regime: str, received_at: datetime, original_due_at: datetime,
                 counting: StatutoryCalendar = StatutoryCalendar()) -> datetime:
    """The due date after the one extension the regime allows. GDPR: two further months from
    the original period's nominal last day (one month from receipt, not moved off a weekend
    or holiday), then moved to a working day; CCPA: 45 further days from the original due
    date, never past 90 from receipt."""
    received = local_day(received_at, counting.zone)
    if regime == GDPR:
        nominal = add_months(add_months(received, GDPR_MONTHS), GDPR_EXTENSION_MONTHS)
        return end_of_day(on_working_day(nominal, counting.gdpr_closed), counting.zone)
    if regime == CCPA:
        original = local_day(original_due_at, counting.zone)
        cap = received + timedelta(days=CCPA_MAX_DAYS)
        return end_of_day(min(original + timedelta(days=CCPA_EXTENSION_DAYS), cap),
                          counting.zone)
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
