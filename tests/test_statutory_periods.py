"""Statutory periods as the law counts them: GDPR periods end on a working day (Regulation
1182/71 Art. 3(4)) of the controller's holiday calendars, CCPA business days skip public
holidays, and days are the controller's local days. The rules are pure functions with the
calendar passed in; the settings configure it, checked when the runtime starts, and the DSR
API counts with it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.errors import ConfigurationError
from fiduciary.privacy.deadlines import (
    CCPA,
    GDPR,
    HolidayCalendar,
    StatutoryCalendar,
    add_business_days,
    deadlines,
    end_of_day,
    extended_due,
    on_working_day,
    public_holidays,
    statutory_calendar,
)
from fiduciary.runtime import Runtime, open_runtime
from tests.conftest import table_rows
from tests.test_import_export import cli

NEW_YORK = ZoneInfo("America/New_York")
DUBLIN = ZoneInfo("Europe/Dublin")
IRELAND = StatutoryCalendar(DUBLIN, gdpr_closed=HolidayCalendar(["IE"]))


def at(day: str, hour: int = 12, zone: Any = UTC) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=zone)


def end(day: str, zone: Any = UTC) -> datetime:
    """The end of ``day`` in ``zone``, as the UTC instant a deadline is stored as."""
    return end_of_day(date.fromisoformat(day), zone)


# -- GDPR: one month, moved to the next working day ----------------------------------------------
@pytest.mark.parametrize(("received", "due"), [
    ("2028-01-31", "2028-02-29"),  # leap year: 31 January + 1 month is 29 February (Tuesday)
    ("2028-02-29", "2028-03-29"),  # received on the leap day
    ("2027-01-31", "2027-03-01"),  # 28 February 2027 is a Sunday
    ("2026-01-31", "2026-03-02"),  # 28 February 2026 is a Saturday
    ("2026-11-25", "2026-12-28"),  # Friday 25 December, Saturday 26 (St Stephen's), Sunday
    ("2026-03-06", "2026-04-07"),  # Monday 6 April 2026 is Easter Monday in Ireland
    ("2026-03-03", "2026-04-03"),  # Good Friday is a working day in Ireland
    ("2026-04-17", "2026-05-18"),  # Sunday 17 May; Monday 18 May is no Irish holiday
    ("2026-05-04", "2026-06-04"),  # (received on the May bank holiday: the day is not counted)
])
def test_gdpr_month_ends_on_an_irish_working_day(received: str, due: str) -> None:
    assert deadlines(GDPR, at(received), IRELAND).due_at == end(due, DUBLIN)


def test_a_due_day_on_christmas_moves_to_monday_and_only_configured_holidays_count() -> None:
    received = at("2026-11-25")
    assert deadlines(GDPR, received).due_at == end("2026-12-25")  # weekends only by default
    us = StatutoryCalendar(gdpr_closed=HolidayCalendar(["US-NY"]))
    assert deadlines(GDPR, received, us).due_at == end("2026-12-28")
    # Good Friday closes a German calendar, then the weekend, then Easter Monday.
    germany = StatutoryCalendar(gdpr_closed=HolidayCalendar(["DE"]))
    assert deadlines(GDPR, at("2026-03-03"), germany).due_at == end("2026-04-07")
    assert deadlines(GDPR, at("2026-03-03"), IRELAND).due_at == end("2026-04-03", DUBLIN)


def test_extra_closures_move_a_gdpr_period_too() -> None:
    office_closed = StatutoryCalendar(gdpr_closed=HolidayCalendar(closures=[date(2026, 4, 30)]))
    assert deadlines(GDPR, at("2026-03-29"), office_closed).due_at == end("2026-04-29")
    assert deadlines(GDPR, at("2026-03-30"), office_closed).due_at == end("2026-05-01")


def test_the_extension_counts_from_the_nominal_end_then_moves_to_a_working_day() -> None:
    # Received Friday 29 January 2027: one month ends Sunday 28 February, so Monday 1 March;
    # two further months run from 28 February (Wednesday 28 April), not from 1 March (which
    # would give Saturday 1 May, so Monday 3 May).
    received = at("2027-01-29")
    original = deadlines(GDPR, received, IRELAND).due_at
    assert original == end("2027-03-01", DUBLIN)
    assert extended_due(GDPR, received, original, IRELAND) == end("2027-04-28", DUBLIN)
    # The extended end is itself moved: 29 March 2027 is Easter Monday in Ireland.
    received = at("2026-12-29")
    original = deadlines(GDPR, received, IRELAND).due_at
    assert original == end("2027-01-29", DUBLIN)
    assert extended_due(GDPR, received, original, IRELAND) == end("2027-03-30", DUBLIN)
    # Leap year: 29 February 2028 + 1 month = 29 March, + 2 = Monday 29 May 2028.
    assert extended_due(GDPR, at("2028-02-29"), end("2028-03-29"), IRELAND) == end(
        "2028-05-29", DUBLIN)


# -- time zones ----------------------------------------------------------------------------------
def test_a_request_at_2330_in_new_york_is_received_that_local_day() -> None:
    evening = datetime(2026, 3, 31, 23, 30, tzinfo=NEW_YORK)  # 03:30 on 1 April in UTC
    local = StatutoryCalendar(NEW_YORK)
    assert deadlines(GDPR, evening, local).due_at == end("2026-04-30", NEW_YORK)
    assert end("2026-04-30", NEW_YORK) == datetime(2026, 5, 1, 3, 59, 59, 999999, tzinfo=UTC)
    assert deadlines(GDPR, evening).due_at == end("2026-05-01")  # the UTC day, by default
    # In Dublin a request at 00:30 local time (23:30 UTC the day before) is the local day.
    early = datetime(2026, 6, 1, 0, 30, tzinfo=DUBLIN)
    assert deadlines(GDPR, early, IRELAND).due_at == end("2026-07-01", DUBLIN)
    assert end("2026-07-01", DUBLIN) == datetime(2026, 7, 1, 22, 59, 59, 999999, tzinfo=UTC)


def test_the_end_of_a_local_day_is_its_last_instant_across_daylight_saving_changes() -> None:
    # 8 March 2026 is 23 hours long in New York, 1 November 25 hours.
    assert end("2026-03-08", NEW_YORK) == datetime(2026, 3, 9, 3, 59, 59, 999999, tzinfo=UTC)
    assert end("2026-11-01", NEW_YORK) == datetime(2026, 11, 2, 4, 59, 59, 999999, tzinfo=UTC)
    assert end("2026-03-07", NEW_YORK) == datetime(2026, 3, 8, 4, 59, 59, 999999, tzinfo=UTC)


# -- CCPA: calendar days, and business days over Thanksgiving ------------------------------------
def test_ccpa_acknowledgement_over_thanksgiving_2026() -> None:
    received = at("2026-11-13")  # a Friday
    california = StatutoryCalendar(ccpa_closed=HolidayCalendar(["US-CA"]))
    federal = StatutoryCalendar(ccpa_closed=HolidayCalendar(["US"]))
    # California closes Thanksgiving (26 November) and the day after: Tuesday 1 December.
    assert deadlines(CCPA, received, california).acknowledge_by == end("2026-12-01")
    assert deadlines(CCPA, received, federal).acknowledge_by == end("2026-11-30")
    assert deadlines(CCPA, received).acknowledge_by == end("2026-11-27")  # weekends only


def test_ccpa_45_days_are_calendar_days_even_onto_christmas() -> None:
    california = StatutoryCalendar(ccpa_closed=HolidayCalendar(["US-CA"]))
    d = deadlines(CCPA, at("2026-11-10"), california)
    assert d.due_at == end("2026-12-25")  # a holiday: the 45 days are not moved
    assert extended_due(CCPA, at("2026-11-10"), d.due_at, california) == end("2027-02-08")


def test_ccpa_counts_the_local_day_of_receipt() -> None:
    # 23:30 on Friday 13 November in New York is Saturday in UTC.
    evening = datetime(2026, 11, 13, 23, 30, tzinfo=NEW_YORK)
    local = StatutoryCalendar(NEW_YORK, ccpa_closed=HolidayCalendar(["US-CA"]))
    d = deadlines(CCPA, evening, local)
    assert d.acknowledge_by == end("2026-12-01", NEW_YORK)
    assert d.due_at == end("2026-12-28", NEW_YORK)


# -- the calendar mechanism ----------------------------------------------------------------------
def test_holiday_calendar_answers_any_year_and_combines_jurisdictions() -> None:
    both = HolidayCalendar(["US-LA", "IE"], closures=[date(2031, 8, 4)])
    assert date(2027, 2, 9) in both  # Mardi Gras in Louisiana
    assert date(2040, 3, 17) in both  # St Patrick's Day, years ahead
    assert date(2031, 8, 4) in both
    assert date(2026, 11, 27) not in both and "2026-12-25" not in both
    assert on_working_day(date(2026, 12, 25), both) == date(2026, 12, 28)
    assert add_business_days(date(2026, 12, 24), 1, both) == date(2026, 12, 28)
    assert public_holidays("US-CA", 2026) >= {date(2026, 11, 26), date(2026, 11, 27)}


@pytest.mark.parametrize("code", ["XX", "US-ZZ", "ie", "Eire", ""])
def test_an_unknown_jurisdiction_is_refused(code: str) -> None:
    with pytest.raises(ValueError, match="unknown holiday calendar"):
        HolidayCalendar([code])


# -- settings --------------------------------------------------------------------------------------
def test_settings_build_the_calendar_and_name_a_wrong_setting() -> None:
    calendar = statutory_calendar(Settings(
        controller_timezone="Europe/Dublin", gdpr_holiday_calendars="IE, GB-NIR",
        ccpa_holiday_calendars="US-CA", dsr_holidays="2026-12-31"))
    assert calendar.zone == DUBLIN
    assert date(2026, 7, 13) in calendar.gdpr_closed  # Battle of the Boyne (Northern Ireland)
    assert date(2026, 7, 13) not in calendar.ccpa_closed
    assert date(2026, 11, 27) in calendar.ccpa_closed
    assert date(2026, 12, 31) in calendar.gdpr_closed and date(2026, 12, 31) in calendar.ccpa_closed
    default = statutory_calendar(Settings())
    assert default.zone == ZoneInfo("UTC") and date(2026, 12, 25) not in default.gdpr_closed
    assert date(2026, 12, 25) in default.ccpa_closed  # US-CA unless configured otherwise

    for bad, setting in [
        ({"controller_timezone": "Mars/Olympus"}, "FIDUCIARY_CONTROLLER_TIMEZONE"),
        ({"controller_timezone": "../../etc/passwd"}, "FIDUCIARY_CONTROLLER_TIMEZONE"),
        ({"controller_timezone": "America"}, "FIDUCIARY_CONTROLLER_TIMEZONE"),
        ({"gdpr_holiday_calendars": "IE,XX"}, "FIDUCIARY_GDPR_HOLIDAY_CALENDARS.*'XX'"),
        ({"ccpa_holiday_calendars": "US-ZZ"}, "FIDUCIARY_CCPA_HOLIDAY_CALENDARS.*'US-ZZ'"),
        ({"dsr_holidays": "25 December"}, "FIDUCIARY_DSR_HOLIDAYS"),
    ]:
        with pytest.raises(ConfigurationError, match=setting):
            statutory_calendar(Settings(**bad))


def test_the_runtime_does_not_start_with_an_unknown_calendar(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", gdpr_holiday_calendars="EU",
                        argon2_time_cost=1, argon2_memory_kib=8192)
    with pytest.raises(ConfigurationError, match="FIDUCIARY_GDPR_HOLIDAY_CALENDARS"):
        open_runtime(settings, create=True, clock=FixedClock(datetime(2026, 1, 31, tzinfo=UTC)))


# -- the DSR API counts with the configured calendar (SQLite and PostgreSQL) ---------------------
@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A New York controller with Irish GDPR holidays and the default Californian CCPA ones."""
    return settings.model_copy(update={"controller_timezone": "America/New_York",
                                       "gdpr_holiday_calendars": "IE"})


def test_dsr_deadlines_follow_the_controllers_zone_and_holidays(
        client: TestClient, rt: Runtime, clock: FixedClock) -> None:
    dpo = client
    dpo.headers["Authorization"] = f"Bearer {rt.api_keys.create('dpo-desk', role='dpo')[1]}"
    subject = rt.vault.create_subject(SYSTEM).id

    def create(regime: str, type_: str, received_at: str) -> dict[str, Any]:
        r = dpo.post("/v1/dsr", json={"subject_id": subject, "type": type_, "regime": regime,
                                      "received_at": received_at})
        assert r.status_code == 201, r.text
        return dict(r.json())

    # 23:30 on Thursday 29 January in New York (30 January in UTC): one month ends Saturday
    # 28 February, so Monday 2 March, at midnight New York time.
    gdpr = create("gdpr", "access", "2026-01-29T23:30:00-05:00")
    assert gdpr["due_at"] == "2026-03-03T04:59:59.999999Z"
    # 23:30 on Thursday 15 January: ten Californian business days skip Martin Luther King Day.
    ccpa = create("ccpa", "know", "2026-01-15T23:30:00-05:00")
    assert ccpa["acknowledge_by"] == "2026-01-31T04:59:59.999999Z"  # Friday 30 January
    assert ccpa["due_at"] == "2026-03-02T04:59:59.999999Z"  # 1 March, a Sunday: not moved

    r = dpo.post(f"/v1/dsr/{gdpr['id']}/extend", json={"reason": "Records on five systems"})
    assert r.status_code == 200, r.text
    assert r.json()["due_at"] == "2026-04-29T03:59:59.999999Z"  # 28 April (EDT), not 4 May
    events = [i["event"] for i in rt.trail.events(subject_id=subject, limit=100)[0]]
    assert [e["details"]["due_at"] for e in events if e["action"] == "dsr.extend"] == [
        "2026-04-29T03:59:59.999999Z"]

    def listed(query: str) -> list[str]:
        r = dpo.get(f"/v1/dsr?{query}")
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    # 22:00 on 1 March in New York (03:00 UTC on 2 March): the acknowledgement is late, the
    # CCPA answer is due today, local time — though 1 March has already ended in UTC.
    clock.advance(days=29, hours=15)
    assert clock.now() == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert listed("overdue=true") == [ccpa["id"]]
    assert listed("due_within_days=0") == [ccpa["id"]]
    clock.advance(hours=2)  # 05:00 UTC: midnight has passed in New York
    assert dpo.get(f"/v1/dsr/{ccpa['id']}").json()["overdue"] == ["acknowledgement",
                                                                   "response"]


def test_a_time_without_a_zone_is_the_controllers_local_time(
        client: TestClient, rt: Runtime, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dpo = client
    dpo.headers["Authorization"] = f"Bearer {rt.api_keys.create('dpo-desk', role='dpo')[1]}"
    subject = rt.vault.create_subject(SYSTEM).id
    body = {"subject_id": subject, "type": "access", "regime": "gdpr"}
    r = dpo.post("/v1/dsr", json={**body, "received_at": "2026-01-29"})
    assert r.status_code == 201, r.text
    assert r.json()["received_at"] == "2026-01-29T05:00:00Z"  # midnight in New York
    assert r.json()["due_at"] == "2026-03-03T04:59:59.999999Z"
    for out_of_range in ("9999-12-31T23:00:00", "0001-01-01T00:00:00+14:00"):
        r = dpo.post("/v1/dsr", json={**body, "received_at": out_of_range})
        assert r.status_code == 422, r.text
        assert [f["field"] for f in r.json()["error"]["fields"]] == ["received_at"]
    assert len(table_rows(rt, "dsr_requests")) == 1

    # The operator's CLI reads a date as the same local day and shows local due dates.
    monkeypatch.setenv("FIDUCIARY_CONTROLLER_TIMEZONE", "America/New_York")
    monkeypatch.setenv("FIDUCIARY_GDPR_HOLIDAY_CALENDARS", "IE")
    code, out, err = cli(settings, "dsr", "create", "--subject", subject, "--type", "access",
                         "--regime", "gdpr", "--received", "2026-01-29", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["due_at"] == "2026-03-03T04:59:59.999999Z"
    code, out, err = cli(settings, "dsr", "acknowledge", created["id"])
    assert code == 0, err
    assert "due 2026-03-02" in out
    monkeypatch.setenv("FIDUCIARY_CONTROLLER_TIMEZONE", "New York")
    code, _, err = cli(settings, "dsr", "show", created["id"])
    assert code != 0 and "FIDUCIARY_CONTROLLER_TIMEZONE" in err
