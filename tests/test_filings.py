"""Filings: the NYDFS 500.17(b) draft both ways (certification when every Part 500 control
passed during the year, an acknowledgment naming the failing section otherwise), kept five
years and audited; the CCPA regs 7102 metrics of a seeded year, counted and timed by hand; both
as JSON and HTML; the CLI and the API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from fiduciary.access import SYSTEM
from fiduciary.audit.events import actor_label
from fiduciary.clock import FixedClock
from fiduciary.compliance.catalogue import load_controls
from fiduciary.compliance.filings import FilingService, nydfs_certification, render_html
from fiduciary.compliance.model import Control, ControlResult, Outcome, Status
from fiduciary.config import Settings
from fiduciary.errors import Forbidden, InvalidInput
from fiduciary.principal import Principal
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import audit_events
from tests.conftest import make_staff, table_rows
from tests.test_import_export import cli

CONTROLS = load_controls(None).controls


def _at(month: int, day: int, year: int = 2025) -> datetime:
    return datetime(year, month, day, 6, 0, tzinfo=UTC)


def _results(status_of: dict[str, Status] | None = None,
             when: datetime = _at(6, 1)) -> list[ControlResult]:
    """Every control of the catalogue checked at ``when``: passing unless named."""
    status_of = status_of or {}
    return [ControlResult(c, Outcome(status_of.get(c.id, Status.PASS),
                                     {"checked": c.id}), when) for c in CONTROLS]


def _part_500(control: Control) -> bool:
    return any(s.startswith("NYDFS 500.") for s in control.sections)


def _service(rt: Runtime, results: Sequence[ControlResult]) -> FilingService:
    """The filing service over a posture history given as results (the history is ours to
    choose; the store, the audit trail and the clock are the runtime's)."""
    return FilingService(rt.db, rt.clock, rt.audit,
                         lambda start, end: [r for r in results if start <= r.checked_at < end],
                         lambda: CONTROLS)


def test_every_part_500_control_passing_drafts_a_certification() -> None:
    others = [c for c in CONTROLS if not _part_500(c)]
    assert others, "the catalogue has controls outside Part 500"
    # Controls of other regulations failing do not stop a Part 500 certification.
    results = _results({c.id: Status.FAIL for c in others})
    doc = nydfs_certification(2025, CONTROLS, results, _at(2, 1, 2026))
    assert doc["form"] == "certification"
    assert doc["title"] == "Certification of Material Compliance"
    assert doc["due"] == "2026-04-15" and doc["calendar_year"] == 2025
    assert doc["failing_sections"] == []
    assert {c["id"] for c in doc["controls"]} == {c.id for c in CONTROLS if _part_500(c)}
    assert all(c["status"] == "pass" for c in doc["controls"])
    assert [s["role"] for s in doc["signatures"]] == ["highest_ranking_executive", "ciso"]
    assert all(s["name"] == "" and s["date"] == "" for s in doc["signatures"])


def test_one_failing_part_500_control_drafts_an_acknowledgment_naming_its_section() -> None:
    mfa = next(c for c in CONTROLS if "NYDFS 500.12" in c.sections)
    # Failed once in March, fixed the next day; a failure in 2024 or 2026 is another year's.
    results = [*_results(when=_at(1, 10)),
               ControlResult(mfa, Outcome(Status.FAIL, {"without_mfa": ["j.doe"]}), _at(3, 1)),
               ControlResult(mfa, Outcome(Status.PASS, {"without_mfa": []}), _at(3, 2)),
               ControlResult(mfa, Outcome(Status.FAIL, {"without_mfa": ["x"]}),
                             _at(12, 31, 2024)),
               ControlResult(mfa, Outcome(Status.FAIL, {"without_mfa": ["y"]}),
                             _at(1, 1, 2026))]
    doc = nydfs_certification(2025, CONTROLS, results, _at(2, 1, 2026))
    assert doc["form"] == "acknowledgment"
    assert doc["title"] == "Acknowledgment of Noncompliance"
    assert [s["section"] for s in doc["failing_sections"]] == ["500.12"]
    section = doc["failing_sections"][0]
    assert section["remediation_timeline"] == ""
    [failing] = section["controls"]
    assert failing["id"] == mfa.id
    assert failing["extent"] == {
        "checks": 3, "failed_checks": 1, "first_failed_at": "2025-03-01T06:00:00Z",
        "last_failed_at": "2025-03-01T06:00:00Z", "passing_at_year_end": True,
        "facts": {"without_mfa": ["j.doe"]}}


def test_a_part_500_control_never_checked_during_the_year_is_not_certified() -> None:
    unchecked = next(c for c in CONTROLS if _part_500(c))
    results = [r for r in _results() if r.control.id != unchecked.id]
    doc = nydfs_certification(2025, CONTROLS, results, _at(2, 1, 2026))
    assert doc["form"] == "acknowledgment"
    listed = {c["id"]: c for s in doc["failing_sections"] for c in s["controls"]}
    assert listed[unchecked.id]["status"] == "not_evidenced"
    assert listed[unchecked.id]["extent"]["note"] == "not checked during the year"


def test_a_not_applicable_part_500_control_does_not_block_the_certification() -> None:
    na = next(c for c in CONTROLS if _part_500(c))
    doc = nydfs_certification(2025, CONTROLS, _results({na.id: Status.NOT_APPLICABLE}),
                              _at(2, 1, 2026))
    assert doc["form"] == "certification"


def test_the_draft_is_stored_five_years_and_audited(rt: Runtime) -> None:
    mfa = next(c for c in CONTROLS if "NYDFS 500.12" in c.sections)
    service = _service(rt, _results({mfa.id: Status.FAIL}))
    filing = service.draft_nydfs(SYSTEM, 2025)  # the clock says 2026-01-31
    assert filing.status == "acknowledgment"
    [row] = table_rows(rt, "compliance_filings")
    assert row["kind"] == "nydfs_500_17b" and row["year"] == 2025
    assert row["status"] == "acknowledgment"
    # Five years from the due date (15 April 2026), the later of it and the draft's creation.
    assert row["retain_until"] == datetime(2031, 4, 15, tzinfo=UTC)
    assert json.loads(str(row["body"]))["failing_sections"][0]["section"] == "500.12"
    assert service.filing(filing.id).body == filing.body
    with rt.db.read() as conn:
        events = conn.execute(sa.select(audit_events.c.event).where(
            audit_events.c.action == "compliance.filing_drafted")).scalars().all()
    [event] = events
    details = json.loads(str(event))["details"]
    assert details["filing_id"] == filing.id
    assert details["body_sha256"] == row["body_sha256"]
    assert details["failing_sections"] == ["500.12"]
    assert "j.doe" not in json.dumps(details) and "facts" not in json.dumps(details)


def test_a_draft_made_after_the_due_date_is_kept_five_years_from_its_making(
        rt: Runtime, clock: FixedClock) -> None:
    clock.advance(days=200)  # 2026-08-19, after 15 April 2026
    _service(rt, _results()).draft_nydfs(SYSTEM, 2025)
    [row] = table_rows(rt, "compliance_filings")
    assert row["status"] == "certification"
    assert row["retain_until"] == clock.now().replace(year=2031)


@pytest.mark.parametrize(("year", "reason"), [(2026, "the calendar year has not ended"),
                                              (2016, "must be 2017 or later")])
def test_a_year_not_ended_or_before_part_500_is_refused_and_nothing_stored(
        rt: Runtime, year: int, reason: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        _service(rt, _results()).draft_nydfs(SYSTEM, year)
    assert [(f.field, f.reason) for f in raised.value.fields] == [("year", reason)]
    assert table_rows(rt, "compliance_filings") == []


def test_the_html_draft_escapes_the_facts_and_leaves_the_timeline_blank() -> None:
    mfa = next(c for c in CONTROLS if "NYDFS 500.12" in c.sections)
    results = [*_results(), ControlResult(
        mfa, Outcome(Status.FAIL, {"without_mfa": ["<script>alert(1)</script>"]}), _at(7, 1))]
    html = render_html(nydfs_certification(2025, CONTROLS, results, _at(2, 1, 2026)))
    assert html.startswith("<!DOCTYPE html>")
    assert "Acknowledgment of Noncompliance" in html and "Section 500.12" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Remediation timeline" in html
    assert "Chief Information Security Officer" in html
    assert "http" not in html.lower().replace("http-equiv", "")  # nothing fetched


def test_the_cli_drafts_stores_and_renders_the_certification(
        rt: Runtime, settings: Settings, tmp_path: Path) -> None:
    page = tmp_path / "nydfs.html"
    code, stdout, stderr = cli(settings, "compliance", "nydfs-certification", "--year", "2025",
                               "--json", "--html", str(page))
    assert code == 0, stderr
    doc = json.loads(stdout)
    # A store without a single check during 2025 cannot certify it.
    assert doc["form"] == "acknowledgment" and doc["calendar_year"] == 2025
    assert {c["status"] for s in doc["failing_sections"] for c in s["controls"]} == {
        "not_evidenced"}
    [row] = table_rows(rt, "compliance_filings")
    assert doc["filing"]["id"] == row["id"] and row["status"] == "acknowledgment"
    created = row["created_at"]
    assert isinstance(created, datetime)
    assert row["retain_until"] == max(created, datetime(2026, 4, 15, tzinfo=UTC)).replace(
        year=max(created.year, 2026) + 5)
    assert "Acknowledgment of Noncompliance" in page.read_text()


def test_the_cli_refuses_a_year_not_ended(rt: Runtime, settings: Settings) -> None:
    year = str(datetime.now(UTC).year)
    code, _, stderr = cli(settings, "compliance", "nydfs-certification", "--year", year)
    assert code == 2 and "year: the calendar year has not ended" in stderr
    assert table_rows(rt, "compliance_filings") == []


def test_the_api_previews_the_draft_and_the_metrics_for_the_compliance_office_only(
        rt: Runtime, clock: FixedClock) -> None:
    subject = rt.vault.create_subject(SYSTEM).id
    request = rt.dsr.create(SYSTEM, subject, "know", "ccpa", received_at=_at(12, 1))
    rt.dsr.deny(SYSTEM, request.id, "not a California resident")  # 61 days on 31 January
    officer = make_staff(rt, clock, "cora", ["compliance_officer"]).client
    r = officer.get("/v1/compliance/nydfs-certification?year=2025")
    assert r.status_code == 200, r.text
    assert r.json()["form"] == "acknowledgment" and r.json()["due"] == "2026-04-15"
    assert table_rows(rt, "compliance_filings") == []  # a GET stores nothing
    dpo = make_staff(rt, clock, "dee", ["dpo"]).client
    r = dpo.get("/v1/compliance/ccpa-metrics")  # the previous year: 2025
    assert r.status_code == 200, r.text
    know = r.json()["requests"]["know"]
    assert (know["received"], know["denied"], know["median_days_to_respond"]) == (1, 1, 61.0)
    r = dpo.get("/v1/compliance/ccpa-metrics?year=2026")
    assert r.status_code == 422 and "year" in r.text
    for username, roles in (("adam", ["admin"]), ("ula", ["underwriter"])):
        staff = make_staff(rt, clock, username, roles).client
        for path in ("/v1/compliance/nydfs-certification?year=2025",
                     "/v1/compliance/ccpa-metrics?year=2025"):
            assert staff.get(path).status_code == 403, (username, path)


def test_the_cli_prints_the_metrics_and_writes_the_page(
        rt: Runtime, settings: Settings, tmp_path: Path) -> None:
    subject = rt.vault.create_subject(SYSTEM).id
    request = rt.dsr.create(SYSTEM, subject, "delete", "ccpa", received_at=_at(12, 1))
    rt.dsr.deny(SYSTEM, request.id, "not a California resident")
    page = tmp_path / "ccpa.html"
    code, stdout, stderr = cli(settings, "compliance", "ccpa-metrics", "--year", "2025",
                               "--json", "--html", str(page))
    assert code == 0, stderr
    delete = json.loads(stdout)["requests"]["delete"]
    assert (delete["received"], delete["denied"], delete["mean_days_to_respond"]) == (
        1, 1, 61.0)
    assert "Requests to delete" in page.read_text()


# --- CCPA regs 7102 -----------------------------------------------------------------------


def _move_to(clock: FixedClock, when: datetime) -> None:
    clock.advance(seconds=(when - clock.now()).total_seconds())


#: (type, received, closed or None, outcome) — CCPA requests; days counted by hand below.
SEEDED = [
    ("know", _at(2, 3), _at(2, 13), "deny"),            # 10 days
    ("know", _at(3, 3), _at(4, 2), "deny"),             # 30 days
    ("know", _at(12, 20), None, None),                  # still open: pending
    ("correct", _at(4, 1), _at(4, 8), "fulfil"),        # 7
    ("correct", _at(5, 5), _at(5, 7), "fulfil"),        # 2
    ("correct", _at(6, 2), _at(6, 14), "fulfil"),       # 12
    ("correct", _at(6, 10), _at(7, 25), "deny"),        # 45
    ("opt_out_sale_sharing", _at(7, 1), _at(7, 2), "fulfil"),    # 1
    ("opt_out_sale_sharing", _at(8, 1), _at(8, 4), "fulfil"),    # 3
    ("opt_out_sale_sharing", _at(8, 10), _at(8, 15), "fulfil"),  # 5
    ("limit_sensitive", _at(9, 1), _at(9, 2), "fulfil"),        # 1
    ("delete", _at(10, 1), _at(10, 15), "deny"),                # 14
]


def _seed_year(rt: Runtime, clock: FixedClock) -> None:
    steps: list[tuple[datetime, int, str, str]] = []
    for i, (type_, received, closed, outcome) in enumerate(SEEDED):
        steps.append((received, i, "create", type_))
        if closed is not None and outcome is not None:
            # Closed in the afternoon: the days count dates, not hours.
            steps.append((closed + timedelta(hours=10), i, outcome, type_))
    ids: dict[int, str] = {}
    for when, i, action, type_ in sorted(steps):
        _move_to(clock, when)
        if action == "create":
            subject = rt.vault.create_subject(SYSTEM).id
            ids[i] = rt.dsr.create(SYSTEM, subject, type_, "ccpa", channel="web_form").id
        elif action == "deny":
            rt.dsr.deny(SYSTEM, ids[i], "could not verify the requester")
        else:
            rt.dsr.verify(SYSTEM, ids[i], "not_required" if type_ in (
                "opt_out_sale_sharing", "limit_sensitive") else "id_document")
            rt.dsr.fulfil(SYSTEM, ids[i], note="address corrected" if type_ == "correct"
                          else None)
    # Not of 2025's metrics: a GDPR request, and a CCPA request received on 2 January 2026.
    rt.dsr.create(SYSTEM, rt.vault.create_subject(SYSTEM).id, "access", "gdpr")
    _move_to(clock, _at(1, 2, 2026))
    rt.dsr.create(SYSTEM, rt.vault.create_subject(SYSTEM).id, "know", "ccpa")


class TestCcpaMetrics:
    @pytest.fixture
    def clock(self) -> FixedClock:
        """The seeded year is lived through: the clock starts on Monday 6 January 2025."""
        return FixedClock(datetime(2025, 1, 6, 9, 0, tzinfo=UTC))

    def test_metrics_of_a_seeded_year(self, rt: Runtime, clock: FixedClock) -> None:
        _seed_year(rt, clock)
        service = _service(rt, [])
        metrics = service.ccpa_metrics()  # the previous calendar year: 2025
        assert metrics["calendar_year"] == 2025
        req = metrics["requests"]
        assert {k: (m["received"], m["complied_in_whole_or_in_part"], m["denied"], m["pending"])
                for k, m in req.items()} == {
            "know": (3, 0, 2, 1), "delete": (1, 0, 1, 0), "correct": (4, 3, 1, 0),
            "opt_out": (3, 3, 0, 0), "limit": (1, 1, 0, 0)}
        # know: 10, 30 → 20; correct: 2, 7, 12, 45 → median 9.5, mean 16.5; opt out: 1, 3, 5.
        assert {k: (m["median_days_to_respond"], m["mean_days_to_respond"])
                for k, m in req.items()} == {
            "know": (20.0, 20.0), "delete": (14.0, 14.0), "correct": (9.5, 16.5),
            "opt_out": (3.0, 3.0), "limit": (1.0, 1.0)}
        assert service.ccpa_metrics(2026 - 1) == metrics
        html = render_html(metrics)
        assert "Requests to know" in html and "16.5" in html and "9.5" in html


    def test_metrics_of_a_year_not_ended_are_refused(self, rt: Runtime) -> None:
        with pytest.raises(InvalidInput) as raised:
            _service(rt, []).ccpa_metrics(2025)  # the clock is in 2025
        assert raised.value.fields[0].field == "year"


    def test_the_metrics_hold_no_customer_value(self, rt: Runtime, clock: FixedClock) -> None:
        subject = rt.vault.create_subject(SYSTEM).id
        rt.vault.create_record(SYSTEM, "persons", subject, {
            "first_name": "Vera", "last_name": "Ortiz", "national_id": "078-05-1120",
            "date_of_birth": "1970-05-17", "email": "vera@example.org", "region": "west"},
            "legal_obligation")
        req = rt.dsr.create(SYSTEM, subject, "delete", "ccpa")
        rt.dsr.deny(SYSTEM, req.id, "Vera Ortiz is not a California resident")
        _move_to(clock, _at(1, 5, 2026))
        metrics = _service(rt, []).ccpa_metrics(2025)
        text = json.dumps(metrics) + render_html(metrics)
        assert metrics["requests"]["delete"]["denied"] == 1
        for value in ("Vera", "Ortiz", "078-05-1120", subject, req.id):
            assert value not in text


def test_the_metrics_count_the_controller_s_calendar_year(rt: Runtime) -> None:
    # 20:00 on New Year's Eve in Los Angeles is already 2026 in UTC.
    received = datetime(2025, 12, 31, 20, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    request = rt.dsr.create(SYSTEM, rt.vault.create_subject(SYSTEM).id, "know", "ccpa",
                            received_at=received)
    rt.dsr.deny(SYSTEM, request.id, "not a California resident")  # 31 January, 12:00 UTC
    los_angeles = FilingService(rt.db, rt.clock, rt.audit, lambda s, e: [], lambda: CONTROLS,
                                zone=ZoneInfo("America/Los_Angeles"))
    know = los_angeles.ccpa_metrics(2025)["requests"]["know"]
    assert (know["received"], know["median_days_to_respond"]) == (1, 31.0)
    assert _service(rt, []).ccpa_metrics(2025)["requests"]["know"]["received"] == 0


@pytest.mark.parametrize("role", ["dpo", "admin", "underwriter"])
def test_only_the_compliance_officer_drafts_the_certification(rt: Runtime, role: str) -> None:
    who = Principal(id=f"u-{role}", kind="user", username=f"u-{role}", roles=(role,),
                    permissions=rt.policy.permissions([role]))
    with pytest.raises(Forbidden):
        _service(rt, _results()).draft_nydfs(who, 2025)
    assert table_rows(rt, "compliance_filings") == []
    officer = Principal(id="u-co", kind="user", username="cora", roles=("compliance_officer",),
                        permissions=rt.policy.permissions(["compliance_officer"]))
    filing = _service(rt, _results()).draft_nydfs(officer, 2025)
    assert filing.created_by == actor_label(officer)
    assert [r["id"] for r in table_rows(rt, "compliance_filings")] == [filing.id]


def test_failing_sections_are_in_the_order_of_part_500() -> None:
    wanted = ["500.7(a)(4)", "500.12", "500.13(a)", "500.13(b)"]
    controls = [Control(f"c{i}", f"control {i}", (f"NYDFS {s}",), "check")
                for i, s in enumerate(reversed(wanted))]
    results = [ControlResult(c, Outcome(Status.FAIL, {}), _at(5, 1)) for c in controls]
    doc = nydfs_certification(2025, controls, results, _at(2, 1, 2026))
    assert [s["section"] for s in doc["failing_sections"]] == wanted
