"""The breach-notification rules table (issue 12, part 3): pure, no database.

Every row's clock, with the deadline written out by hand; 72 hours across a month, a year and a
daylight-saving change (UTC arithmetic); business days over a weekend, a state holiday and the
local day; 60 days across a leap February; the HHS annual log date; thresholds on either side
of each number; the encryption safe harbours; which rows wait for the scope; an insurer's
override file; and the errors a wrong file gives, naming the row and field.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from fiduciary.errors import DataMapInvalid
from fiduciary.incidents.rules import (
    IncidentFacts,
    Obligation,
    ObligationStatus,
    RulesInvalid,
    RulesTable,
    ScopeFacts,
    derive,
    load_rules,
)

RULES = load_rules(None)
ALL_CLASSES = ("personal", "financial", "government_id", "special_category")
NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")


def utc(text: str) -> datetime:
    """An ISO 8601 instant written without its offset, in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def facts(discovered: datetime | str, determined: datetime | str | None = None,
          paid: datetime | str | None = None, kind: str = "unauthorized_access"
          ) -> IncidentFacts:
    def instant(v: datetime | str | None) -> datetime | None:
        return utc(v) if isinstance(v, str) else v

    found = instant(discovered)
    assert found is not None
    return IncidentFacts(kind, found, instant(determined), instant(paid))


def scope(by: dict[str, int], classes: tuple[str, ...] = ALL_CLASSES,
          ciphertext_only: bool = False, total: int | None = None) -> ScopeFacts:
    return ScopeFacts(by, frozenset(classes), ciphertext_only,
                      sum(by.values()) if total is None else total)


def obligations(incident: IncidentFacts, affected: ScopeFacts | None,
                rules: RulesTable = RULES, holidays: tuple[date, ...] = ()
                ) -> dict[str, Obligation]:
    derived = derive(rules, incident, affected, holidays)
    assert len({o.rule_id for o in derived}) == len(derived)
    return {o.rule_id: o for o in derived}


# -- the table as shipped ---------------------------------------------------------------------
def test_every_row_cites_its_law_and_was_verified() -> None:
    assert RULES.source == "<package>/default_rules.yaml"
    for row in RULES.rows:
        assert row.basis.strip() and row.regime.strip() and row.recipient.strip(), row.id
        assert row.last_verified == date(2026, 11, 26), row.id


def test_the_eu_eea_group_holds_the_27_member_states_and_the_eea_three() -> None:
    eu_eea = set(RULES.groups["eu_eea"])
    assert len(eu_eea) == 30
    # "NO" would be YAML's false if left unquoted: Norway must be there as a code.
    assert {"IS", "LI", "NO", "DE", "FR", "GR", "IE"} <= eu_eea
    assert not {"GB", "CH", "EL"} & eu_eea


# -- every row's clock ------------------------------------------------------------------------
#: One incident for every clock: discovered two days before New Year, determined on New Year's
#: Eve (a Friday, and a holiday observed in LA and MS), an extortion payment in leap February.
INCIDENT = facts(discovered="2027-12-30T10:00", determined="2027-12-31T22:00",
                 paid="2028-02-27T15:30", kind="ransomware")
#: Enough people everywhere for every row but the HHS annual log.
EVERYONE = scope({"DE": 10, "GB": 10, "US-LA": 300, "US-MS": 300, "US-CA": 600, "US-NY": 600,
                  "US-TX": 600, "US-FL": 600, "US-WA": 600, "US-CO": 600, "US-MA": 600})
#: Fewer than 500 individuals: the HHS annual log instead of the 60-day report.
FEW = scope({"US-NY": 10})

CLOCKS: list[tuple[str, ScopeFacts, str | None]] = [
    # 72 hours from discovery, across the year boundary.
    ("gdpr-33", EVERYONE, "2028-01-02T10:00"),
    ("gdpr-33.5", EVERYONE, None),  # kept, with no deadline of its own (never "overdue")
    ("gdpr-34", EVERYONE, None),
    ("uk-gdpr-33", EVERYONE, "2028-01-02T10:00"),
    ("uk-gdpr-34", EVERYONE, None),
    # 72 hours from determination; 24 hours and 30 days (leap February) from the payment.
    ("nydfs-500.17a", EVERYONE, "2028-01-03T22:00"),
    ("nydfs-500.17c1", EVERYONE, "2028-02-28T15:30"),
    ("nydfs-500.17c2", EVERYONE, "2028-03-28T15:30"),
    ("naic-668-6", EVERYONE, "2028-01-03T22:00"),
    # Determined Friday 31 Dec 16:00 CST, a holiday (New Year's Day observed); Sat 1 Jan, Sun;
    # Mon 3 (1), Tue 4 (2), Wed 5 (3) at 16:00 CST.
    ("naic-668-us-la", EVERYONE, "2028-01-05T22:00"),
    ("naic-668-us-ms", EVERYONE, "2028-01-05T22:00"),
    # 60 days: 30 Dec + 2 = 1 Jan, + 31 = 1 Feb, + 27 = 28 Feb.
    ("hipaa-164.404", EVERYONE, "2028-02-28T10:00"),
    ("hipaa-164.406", EVERYONE, "2028-02-28T10:00"),
    ("hipaa-164.408b", EVERYONE, "2028-02-28T10:00"),
    # 60 days after 31 Dec 2027: 31 Jan (31), 29 Feb (60): 2028 is a leap year.
    ("hipaa-164.408c", FEW, "2028-02-29T23:59:59.999999"),
    ("glba-314.4j", EVERYONE, "2028-01-29T10:00"),
    ("us-ca-residents", EVERYONE, "2028-01-29T10:00"),
    ("us-ca-ag", EVERYONE, None),
    ("us-ny-residents", EVERYONE, "2028-01-29T10:00"),
    ("us-ny-ag", EVERYONE, None),
    ("us-ny-dfs", EVERYONE, None),
    ("us-tx-residents", EVERYONE, "2028-02-28T10:00"),
    ("us-tx-ag", EVERYONE, "2028-01-29T10:00"),
    ("us-fl-residents", EVERYONE, "2028-01-29T10:00"),
    ("us-fl-ag", EVERYONE, "2028-01-29T10:00"),
    ("us-wa-residents", EVERYONE, "2028-01-29T10:00"),
    ("us-wa-ag", EVERYONE, "2028-01-29T10:00"),
    ("us-co-residents", EVERYONE, "2028-01-29T10:00"),
    ("us-co-ag", EVERYONE, "2028-01-29T10:00"),
    ("us-ma-residents", EVERYONE, None),
    ("us-ma-ag", EVERYONE, None),
    ("us-ma-ocabr", EVERYONE, None),
]


def test_every_row_of_the_table_has_its_clock_tested() -> None:
    assert sorted(rule_id for rule_id, _, _ in CLOCKS) == sorted(r.id for r in RULES.rows)


@pytest.mark.parametrize(("rule_id", "affected", "due"), CLOCKS, ids=[c[0] for c in CLOCKS])
def test_clock_of_each_row(rule_id: str, affected: ScopeFacts, due: str | None) -> None:
    o = obligations(INCIDENT, affected)[rule_id]
    assert o.status == ObligationStatus.DUE and o.reason is None
    row = RULES.rule(rule_id)
    assert (o.regime, o.recipient, o.basis) == (row.regime, row.recipient, row.basis)
    if due is None:
        assert o.due_at is None
        assert o.due_note  # says what the law sets instead ("without undue delay" ...)
    else:
        assert o.due_at == utc(due)
        assert o.due_at is not None and o.due_at.tzinfo is UTC


def test_the_60_day_report_and_the_annual_log_exclude_each_other() -> None:
    assert "hipaa-164.408c" not in obligations(INCIDENT, EVERYONE)
    assert "hipaa-164.408b" not in obligations(INCIDENT, FEW)


# -- hours: UTC arithmetic --------------------------------------------------------------------
@pytest.mark.parametrize(("anchor", "due"), [
    (utc("2027-01-30T18:00"), utc("2027-02-02T18:00")),   # end of January
    (utc("2027-02-27T10:00"), utc("2027-03-02T10:00")),   # 28-day February
    (utc("2028-02-27T10:00"), utc("2028-03-01T10:00")),   # 29-day February
    (utc("2027-12-31T23:59"), utc("2028-01-03T23:59")),   # New Year
])
def test_72_hours_across_month_and_year_ends(anchor: datetime, due: datetime) -> None:
    found = obligations(facts(anchor, determined=anchor), None)
    assert found["nydfs-500.17a"].due_at == due
    assert found["naic-668-6"].due_at == due
    assert obligations(facts(anchor), scope({"FR": 1}))["gdpr-33"].due_at == due


def test_72_hours_across_the_end_of_daylight_saving_time_are_72_real_hours() -> None:
    # Saturday noon EDT (16:00 UTC); clocks go back on Sunday 7 November 2027.
    determined = datetime(2027, 11, 6, 12, 0, tzinfo=NEW_YORK)
    due = obligations(facts(determined, determined=determined), None)["nydfs-500.17a"].due_at
    assert due == utc("2027-11-09T16:00")
    assert due is not None and due - determined == timedelta(hours=72)
    # 11:00 on the New York clock, not noon: adding 72 h to the local wall clock would be late.
    assert due.astimezone(NEW_YORK).hour == 11
    assert determined + timedelta(hours=72) == utc("2027-11-09T17:00")


def test_72_hours_across_the_start_of_daylight_saving_time_are_72_real_hours() -> None:
    # Saturday 09:00 EST (14:00 UTC); clocks go forward on Sunday 14 March 2027.
    determined = datetime(2027, 3, 13, 9, 0, tzinfo=NEW_YORK)
    due = obligations(facts(determined, determined=determined), None)["naic-668-6"].due_at
    assert due == utc("2027-03-16T14:00")
    assert due is not None and due.astimezone(NEW_YORK).hour == 10


def test_gdpr_72_hours_across_the_european_clock_change() -> None:
    # Saturday noon CEST (10:00 UTC); Europe's clocks go back on Sunday 31 October 2027.
    discovered = datetime(2027, 10, 30, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    due = obligations(facts(discovered), scope({"DE": 3}))["gdpr-33"].due_at
    assert due == utc("2027-11-02T10:00")
    assert due is not None and due.astimezone(ZoneInfo("Europe/Berlin")).hour == 11


# -- business days: Louisiana and Mississippi -------------------------------------------------
def la_ms(determined: datetime, holidays: tuple[date, ...] = ()) -> tuple[datetime, datetime]:
    found = obligations(facts(determined, determined=determined),
                        scope({"US-LA": 250, "US-MS": 250}), holidays=holidays)
    la, ms = found["naic-668-us-la"].due_at, found["naic-668-us-ms"].due_at
    assert la is not None and ms is not None
    return la, ms


def test_three_business_days_over_a_weekend() -> None:
    # Friday 4 June 2027, 10:00 CDT: Mon 7 (1), Tue 8 (2), Wed 9 (3), at 10:00 CDT.
    la, ms = la_ms(datetime(2027, 6, 4, 10, 0, tzinfo=CHICAGO))
    assert la == ms == utc("2027-06-09T15:00")


def test_three_business_days_over_thanksgiving() -> None:
    # Wednesday 24 Nov 2027, 15:00 CST: Thu 25 is Thanksgiving; Fri 26 (1), Mon 29 (2),
    # Tue 30 (3). Three days, not 72 hours (which would end on Saturday).
    la, ms = la_ms(datetime(2027, 11, 24, 15, 0, tzinfo=CHICAGO))
    assert la == ms == utc("2027-11-30T21:00")


def test_each_state_counts_its_own_holidays() -> None:
    # Friday 23 April 2027: Monday 26 is Confederate Memorial Day in Mississippi only.
    la, ms = la_ms(datetime(2027, 4, 23, 10, 0, tzinfo=CHICAGO))
    assert la == utc("2027-04-28T15:00")
    assert ms == utc("2027-04-29T15:00")


def test_holidays_passed_to_derive_are_skipped_too() -> None:
    # The weekend case, with Monday 7 June closed as well: Tue 8, Wed 9, Thu 10.
    la, _ = la_ms(datetime(2027, 6, 4, 10, 0, tzinfo=CHICAGO), holidays=(date(2027, 6, 7),))
    assert la == utc("2027-06-10T15:00")


def test_business_days_are_counted_on_the_local_calendar_not_the_utc_one() -> None:
    # Tuesday 8 June 2027, 20:00 CDT is already Wednesday in UTC. Counted from the local
    # Tuesday: Wed, Thu, Fri at 20:00 CDT (Saturday 01:00 UTC). Counted from the UTC Wednesday
    # the deadline would fall on Monday, three days late.
    la, _ = la_ms(datetime(2027, 6, 9, 1, 0, tzinfo=UTC))
    assert la == utc("2027-06-12T01:00")
    assert la.astimezone(CHICAGO).date() == date(2027, 6, 11)


def test_business_days_keep_the_local_time_across_a_clock_change() -> None:
    # Friday 12 March 2027 10:00 CST; clocks go forward Sunday 14: Wednesday 17, 10:00 CDT.
    la, _ = la_ms(datetime(2027, 3, 12, 10, 0, tzinfo=CHICAGO))
    assert la == utc("2027-03-17T15:00")


# -- days: 60 across February -----------------------------------------------------------------
@pytest.mark.parametrize(("discovered", "due"), [
    ("2028-01-15T08:00", "2028-03-15T08:00"),   # 16 + 29 + 15: leap February
    ("2027-01-15T08:00", "2027-03-16T08:00"),   # 16 + 28 + 16
    ("2028-02-01T00:00", "2028-04-01T00:00"),   # 29 + 31
])
def test_60_days_across_february(discovered: str, due: str) -> None:
    found = obligations(facts(discovered), scope({"US-TX": 600}))
    assert found["hipaa-164.404"].due_at == utc(due)
    assert found["us-tx-residents"].due_at == utc(due)


# -- HHS annual log ---------------------------------------------------------------------------
@pytest.mark.parametrize(("discovered", "due"), [
    ("2026-06-01T12:00", "2027-03-01"),
    ("2027-01-01T00:00", "2028-02-29"),   # 2028 is a leap year: 60 days end on 29 February
    ("2027-12-31T23:59", "2028-02-29"),
    ("2028-02-29T12:00", "2029-03-01"),   # 2029 is not
    ("2028-12-31T23:00", "2029-03-01"),
])
def test_hhs_annual_log_is_due_60_days_after_the_year_of_discovery(discovered: str,
                                                                    due: str) -> None:
    o = obligations(facts(discovered), scope({"US-NY": 499}, ("special_category",)))
    assert "hipaa-164.408b" not in o
    assert o["hipaa-164.408c"].due_at == datetime.combine(
        date.fromisoformat(due), datetime.max.time(), UTC)


# -- thresholds -------------------------------------------------------------------------------
THRESHOLDS = [
    # at least 500
    ("us-fl-ag", "US-FL", 499, False), ("us-fl-ag", "US-FL", 500, True),
    ("us-fl-ag", "US-FL", 501, True),
    ("us-co-ag", "US-CO", 499, False), ("us-co-ag", "US-CO", 500, True),
    ("glba-314.4j", "US-NY", 499, False), ("glba-314.4j", "US-NY", 500, True),
    ("hipaa-164.408b", "US-NY", 499, False), ("hipaa-164.408b", "US-NY", 500, True),
    ("hipaa-164.408b", "US-NY", 501, True),
    # fewer than 500
    ("hipaa-164.408c", "US-NY", 499, True), ("hipaa-164.408c", "US-NY", 500, False),
    # more than 500
    ("us-ca-ag", "US-CA", 499, False), ("us-ca-ag", "US-CA", 500, False),
    ("us-ca-ag", "US-CA", 501, True),
    ("us-wa-ag", "US-WA", 500, False), ("us-wa-ag", "US-WA", 501, True),
    ("hipaa-164.406", "US-NY", 500, False), ("hipaa-164.406", "US-NY", 501, True),
    # at least 250
    ("us-tx-ag", "US-TX", 249, False), ("us-tx-ag", "US-TX", 250, True),
    ("naic-668-us-la", "US-LA", 249, False), ("naic-668-us-la", "US-LA", 250, True),
    ("naic-668-us-ms", "US-MS", 249, False), ("naic-668-us-ms", "US-MS", 250, True),
    # any resident at all
    ("us-ny-ag", "US-NY", 1, True), ("us-ma-ag", "US-MA", 1, True),
    ("us-ca-residents", "US-CA", 1, True), ("us-ca-residents", "US-CA", 0, False),
]


@pytest.mark.parametrize(("rule_id", "where", "n", "applies"), THRESHOLDS,
                         ids=[f"{r}-{n}" for r, _, n, _ in THRESHOLDS])
def test_thresholds(rule_id: str, where: str, n: int, applies: bool) -> None:
    found = obligations(facts("2027-05-03T09:00", determined="2027-05-03T12:00"),
                        scope({where: n}))
    assert (rule_id in found) is applies


def test_residents_of_other_states_do_not_count_towards_a_state_threshold() -> None:
    found = obligations(facts("2027-05-03T09:00"), scope({"US-TX": 249, "US-OK": 5000}))
    assert "us-tx-residents" in found and "us-tx-ag" not in found


def test_hipaa_counts_everyone_for_hhs_but_one_state_at_a_time_for_the_media() -> None:
    # 1,000 people, 500 in each of two states: HHS within 60 days, but no state has more
    # than 500 residents, so no media notice.
    found = obligations(facts("2027-05-03T09:00"), scope({"US-NY": 500, "US-NJ": 500}))
    assert "hipaa-164.408b" in found and "hipaa-164.408c" not in found
    assert "hipaa-164.406" not in found
    # 501 in one of them: media notice.
    found = obligations(facts("2027-05-03T09:00"), scope({"US-NY": 501, "US-NJ": 10}))
    assert "hipaa-164.406" in found


def test_people_of_unknown_residence_count_in_totals_only() -> None:
    found = obligations(facts("2027-05-03T09:00"), scope({"unknown": 600, "US-TX": 10}))
    assert {"glba-314.4j", "hipaa-164.408b", "us-tx-residents"} <= set(found)
    assert "us-tx-ag" not in found and "gdpr-33" not in found
    # A US resident of unknown state: the federal rows, no state's.
    found = obligations(facts("2027-05-03T09:00"), scope({"US": 3}))
    assert {"hipaa-164.404", "hipaa-164.408c"} <= set(found)
    assert not [i for i in found if i.startswith("us-")]


def test_an_affected_count_under_the_total_is_counted_by_total_where_the_row_says_so() -> None:
    # 300 known US residents of 600 affected people in all: GLBA and HHS count the 600.
    found = obligations(facts("2027-05-03T09:00"), scope({"US-NY": 300}, total=600))
    assert "glba-314.4j" in found and "hipaa-164.408b" in found


# -- what data, and the encryption safe harbours ----------------------------------------------
def test_a_state_law_applies_only_to_the_data_it_protects() -> None:
    names_only = scope({"US-TX": 600, "US-WA": 600, "US-MA": 600}, ("personal",))
    found = obligations(facts("2027-05-03T09:00"), names_only)
    # Washington's personal information includes a full date of birth with the name.
    assert {"us-wa-residents", "us-wa-ag"} <= set(found)
    assert not {"us-tx-residents", "us-ma-residents", "hipaa-164.404"} & set(found)
    health_only = scope({"US-MA": 600, "US-TX": 600}, ("special_category",))
    found = obligations(facts("2027-05-03T09:00"), health_only)
    assert "us-ma-residents" not in found  # Massachusetts protects ids and accounts only
    assert {"us-tx-residents", "hipaa-164.404"} <= set(found)


SAFE_HARBOURED = {
    "gdpr-34", "uk-gdpr-34", "hipaa-164.404", "hipaa-164.406", "hipaa-164.408b", "glba-314.4j",
    "us-ca-residents", "us-ca-ag", "us-ny-residents", "us-ny-ag", "us-ny-dfs",
    "us-tx-residents", "us-tx-ag", "us-fl-residents", "us-fl-ag", "us-wa-residents",
    "us-wa-ag", "us-co-residents", "us-co-ag", "us-ma-residents", "us-ma-ag", "us-ma-ocabr"}


def test_ciphertext_only_makes_the_safe_harboured_rows_not_required_with_their_reason() -> None:
    encrypted = scope(dict(EVERYONE.by_jurisdiction), ciphertext_only=True)
    found = obligations(INCIDENT, encrypted)
    assert set(found) == set(obligations(INCIDENT, EVERYONE))  # the same rows apply
    not_required = {i for i, o in found.items() if o.status == ObligationStatus.NOT_REQUIRED}
    assert not_required == SAFE_HARBOURED
    ca = found["us-ca-residents"]
    assert ca.reason is not None and ca.reason.startswith(
        "encryption safe harbour: Cal. Civ. Code 1798.82(a) applies to unencrypted personal")
    assert ca.due_at is None and ca.due_note is None
    for o in found.values():
        if o.status == ObligationStatus.NOT_REQUIRED:
            assert o.reason and o.reason.startswith("encryption safe harbour: ") and not o.due_at


def test_ciphertext_only_does_not_excuse_what_needs_a_person_to_decide() -> None:
    # Authorities and regulators: whether an encrypted loss is "unlikely to result in a risk"
    # is a judgement, so GDPR 33, NYDFS, the NAIC commissioners stay due.
    found = obligations(INCIDENT, scope(dict(EVERYONE.by_jurisdiction), ciphertext_only=True))
    assert found["gdpr-33.5"].status == ObligationStatus.DUE
    for rule_id in ("gdpr-33", "uk-gdpr-33", "nydfs-500.17a", "nydfs-500.17c1",
                    "naic-668-6", "naic-668-us-la", "naic-668-us-ms"):
        assert found[rule_id].status == ObligationStatus.DUE, rule_id
        assert found[rule_id].due_at is not None


def test_without_ciphertext_only_every_row_is_due() -> None:
    assert {o.status for o in obligations(INCIDENT, EVERYONE).values()} == {
        ObligationStatus.DUE}


def test_hhs_annual_log_is_not_required_for_secured_phi() -> None:
    found = obligations(INCIDENT, scope({"US-NY": 10}, ciphertext_only=True))
    assert found["hipaa-164.408c"].status == ObligationStatus.NOT_REQUIRED


# -- GDPR only for EU/EEA residents -----------------------------------------------------------
@pytest.mark.parametrize(("where", "gdpr", "uk"), [
    ({"US-CA": 10}, False, False),
    ({"FR": 1}, True, False),
    ({"NO": 1}, True, False),     # EEA
    ({"IS": 2, "US-NY": 5}, True, False),
    ({"CH": 5}, False, False),    # Switzerland: neither EU nor EEA
    ({"GB": 5}, False, True),     # the UK has its own GDPR
    ({"DE": 0, "US-CA": 3}, False, False),  # nobody in Germany after all
])
def test_gdpr_only_when_an_eu_or_eea_resident_is_affected(where: dict[str, int], gdpr: bool,
                                                          uk: bool) -> None:
    found = obligations(facts("2027-05-03T09:00"), scope(where))
    assert ("gdpr-33" in found) is gdpr and ("gdpr-34" in found) is gdpr
    assert ("uk-gdpr-33" in found) is uk
    assert "gdpr-33.5" in found  # every breach is documented


# -- NYDFS extortion timers -------------------------------------------------------------------
def test_extortion_payment_starts_the_24_hour_and_30_day_timers() -> None:
    paid = facts("2027-12-20T08:00", determined="2027-12-21T08:00", paid="2027-12-31T23:30",
                 kind="extortion")
    found = obligations(paid, None)
    assert found["nydfs-500.17c1"].due_at == utc("2028-01-01T23:30")
    assert found["nydfs-500.17c2"].due_at == utc("2028-01-30T23:30")
    assert found["nydfs-500.17c1"].recipient == "NY superintendent"


def test_no_extortion_timers_without_a_payment() -> None:
    found = obligations(facts("2027-12-20T08:00", determined="2027-12-21T08:00",
                              kind="extortion"), EVERYONE)
    assert not {"nydfs-500.17c1", "nydfs-500.17c2"} & set(found)


# -- scope not computed yet -------------------------------------------------------------------
def test_without_scope_only_the_rows_that_need_no_scope_are_derived() -> None:
    assert list(obligations(facts("2027-05-03T09:00"), None)) == ["gdpr-33.5"]
    determined = facts("2027-05-03T09:00", determined="2027-05-04T09:00")
    assert list(obligations(determined, None)) == ["gdpr-33.5", "nydfs-500.17a", "naic-668-6"]
    paid = facts("2027-05-03T09:00", determined="2027-05-04T09:00", paid="2027-05-05T09:00")
    found = obligations(paid, None)
    assert list(found) == ["gdpr-33.5", "nydfs-500.17a", "nydfs-500.17c1", "nydfs-500.17c2",
                           "naic-668-6"]
    assert found["nydfs-500.17a"].due_at == utc("2027-05-07T09:00")


def test_the_same_rows_come_out_the_same_once_the_scope_is_known() -> None:
    incident = facts("2027-05-03T09:00", determined="2027-05-04T09:00")
    early = obligations(incident, None)
    later = obligations(incident, scope({"US-NY": 3}))
    assert all(later[i] == o for i, o in early.items())
    assert "us-ny-residents" in later


def test_no_determination_no_nydfs_or_naic_clock() -> None:
    found = obligations(facts("2027-05-03T09:00"), EVERYONE)
    assert not {"nydfs-500.17a", "naic-668-6", "naic-668-us-la"} & set(found)
    assert "us-ny-residents" in found


# -- facts are checked ------------------------------------------------------------------------
def test_facts_reject_naive_times_unknown_kinds_and_unknown_data_classes() -> None:
    with pytest.raises(ValueError, match="discovered_at"):
        IncidentFacts("lost_device", datetime(2027, 1, 1, 9), None)
    with pytest.raises(ValueError, match="determined_at"):
        IncidentFacts("lost_device", utc("2027-01-01T09:00"), datetime(2027, 1, 1, 10))
    with pytest.raises(ValueError, match="kind"):
        IncidentFacts("phishing", utc("2027-01-01T09:00"), None)
    with pytest.raises(ValueError, match="health"):
        scope({"US-NY": 1}, ("health",))  # a typo would silently skip HIPAA
    with pytest.raises(ValueError, match="ISO 3166"):
        scope({"New York": 1})
    with pytest.raises(ValueError, match="negative"):
        scope({"US-NY": -1})


# -- an insurer's own file --------------------------------------------------------------------
def write(tmp_path: Path, doc: dict[str, Any] | str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "nydfs-500.17a", "regime": "NYDFS", "recipient": "NY superintendent",
        "basis": "23 NYCRR 500.17(a)(1)", "last_verified": date(2027, 1, 4),
        "anchor": "determined_at", "hours": 48}
    return {**base, **fields}


def test_an_override_replaces_a_rows_hours_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 1, "extends": "default", "rows": [row()]})
    rules = load_rules(path)
    assert rules.source == str(path)
    assert [r.id for r in rules.rows] == [r.id for r in RULES.rows]  # same rows, same order
    assert rules.rule("nydfs-500.17a").hours == 48
    assert rules.rule("nydfs-500.17a").last_verified == date(2027, 1, 4)
    incident = facts("2027-05-03T09:00", determined="2027-05-04T09:00")
    found = obligations(incident, EVERYONE, rules)
    assert found["nydfs-500.17a"].due_at == utc("2027-05-06T09:00")
    assert found["naic-668-6"].due_at == utc("2027-05-07T09:00")  # untouched: 72 h
    assert found["us-ca-residents"] == obligations(incident, EVERYONE)["us-ca-residents"]


def test_an_override_removes_rows_adds_rows_and_groups(tmp_path: Path) -> None:
    extra = row(id="us-ct-ins", regime="US-CT", recipient="CT insurance commissioner",
                basis="Conn. Gen. Stat. 38a-38", anchor="discovered_at", hours=None,
                business_days=5, timezone="America/New_York", holiday_calendar="US-CT",
                jurisdictions=["@new_england"], min_affected=1, comparison="at_least")
    path = write(tmp_path, {"version": 1, "extends": "default",
                            "remove": ["glba-314.4j", "naic-668-6"],
                            "groups": {"new_england": ["US-CT", "US-RI"]}, "rows": [extra]})
    rules = load_rules(path)
    assert [r.id for r in rules.rows][-1] == "us-ct-ins"
    assert rules.groups["eu_eea"] == RULES.groups["eu_eea"]
    found = obligations(facts("2027-05-07T14:00", determined="2027-05-07T15:00"),
                        scope({"US-RI": 700, "FR": 1}), rules)
    assert not {"glba-314.4j", "naic-668-6"} & set(found)
    assert "gdpr-33" in found  # the default groups still resolve
    # Friday 7 May, 10:00 EDT: Mon 10 .. Fri 14 is five business days.
    assert found["us-ct-ins"].due_at == utc("2027-05-14T14:00")


def test_a_file_without_extends_is_the_whole_table(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, {"version": 1, "rows": [row()]}))
    assert [r.id for r in rules.rows] == ["nydfs-500.17a"]
    found = obligations(facts("2027-05-03T09:00", determined="2027-05-04T09:00"), EVERYONE,
                        rules)
    assert list(found) == ["nydfs-500.17a"]


# -- wrong files ------------------------------------------------------------------------------
def problems(path: Path) -> dict[str, str]:
    with pytest.raises(RulesInvalid) as exc:
        load_rules(path)
    assert isinstance(exc.value, DataMapInvalid)
    assert exc.value.code == "rules_invalid"
    return {p.field: p.reason for p in exc.value.fields}


def test_unknown_field_bad_anchor_and_missing_citation_are_named_by_row(tmp_path: Path) -> None:
    no_basis = row(id="x-3")
    del no_basis["basis"]
    path = write(tmp_path, {"version": 1, "rows": [
        row(id="x-1", hourz=48), row(id="x-2", anchor="breached_at"), no_basis]})
    found = problems(path)
    assert found[f"{path}: rows[0].hourz"] == "Extra inputs are not permitted"
    assert f"{path}: rows[1].anchor" in found
    assert "discovered_at" in found[f"{path}: rows[1].anchor"]
    assert found[f"{path}: rows[2].basis"] == "Field required"
    assert len(found) == 3


def test_rows_that_contradict_themselves_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 1, "rows": [
        row(id="a", days=3),                                        # two deadlines
        row(id="b", min_affected=500),                              # no comparison
        row(id="c", jurisdictions=["@nowhere"]),                    # unknown group
        row(id="d", hours=None),                                    # no deadline, no note
        row(id="e", hours=None, business_days=3),                   # whose business days?
        row(id="f", hours=None, business_days=3, timezone="America/Chicago",
            holiday_calendar="US-ZZ"),                              # unknown calendar
        row(id="g", timezone="Mars/Olympus"),
        row(id="a"),                                                # duplicate id
        row(id="h", jurisdictions=["California"]),
        row(id="i", comparison="at_least"),                         # comparison, no minimum
        row(id="j", basis="  "),
    ]})
    found = problems(path)
    assert set(found) == {f"{path}: {where}" for where in (
        "rows[0].days", "rows[1].comparison", "rows[2].jurisdictions[0]", "rows[3].due_note",
        "rows[4].timezone", "rows[5].holiday_calendar", "rows[6].timezone", "rows[7].id",
        "rows[8].jurisdictions[0]", "rows[9].comparison", "rows[10].basis")}
    assert "one deadline" in found[f"{path}: rows[0].days"]
    assert "duplicate" in found[f"{path}: rows[7].id"]


def test_an_override_row_is_named_by_its_place_in_the_override(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 1, "extends": "default", "remove": ["no-such-row"],
                            "rows": [row(), row(id="gdpr-33", jurisdictions=["@eu"])]})
    assert set(problems(path)) == {f"{path}: remove[0]", f"{path}: rows[1].jurisdictions[0]"}


@pytest.mark.parametrize(("doc", "where"), [
    ({"version": 1, "extends": "mine", "rows": []}, "extends"),
    ({"version": 1, "remove": ["gdpr-33"], "rows": []}, "remove"),
    ({"version": 2, "rows": []}, "version"),
    ({"version": 1}, "rows"),
    ({"version": 1, "groups": {"eu": ["France"]}, "rows": []}, "groups.eu[0]"),
    ("version: 1\nrows: [\n", "line 3"),
])
def test_wrong_documents_are_named(tmp_path: Path, doc: dict[str, Any] | str,
                                   where: str) -> None:
    path = write(tmp_path, doc)
    assert f"{path}: {where}" in problems(path)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert problems(missing) == {str(missing): "cannot read file"}


def test_the_error_message_lists_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 1, "rows": [row(id="x-1", hourz=1),
                                                   row(id="x-2", anchor="noon")]})
    with pytest.raises(RulesInvalid) as exc:
        load_rules(path)
    assert "rows[0].hourz" in str(exc.value) and "rows[1].anchor" in str(exc.value)
