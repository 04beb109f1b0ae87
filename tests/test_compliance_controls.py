"""The compliance posture (issue 14 items 1-2): every control passes on a healthy store and
fails on a store broken in exactly its way; a pass -> fail turn raises one alert and one audit
event; the posture API, attestations and their attacks; the CLI; the catalogue's validation."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fiduciary.audit import merkle
from fiduciary.clock import FixedClock
from fiduciary.compliance.catalogue import parse_controls
from fiduciary.compliance.model import ControlResult
from fiduciary.errors import ControlsInvalid
from fiduciary.ids import new_id
from fiduciary.monitoring.alerts import Finding, insert_finding
from fiduciary.monitoring.pack import Severity
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import (
    alerts,
    audit_checkpoints,
    audit_events,
    audit_nodes,
    break_glass_grants,
    compliance_attestations,
    dsr_requests,
    incident_obligations,
    incidents,
    records,
    system_state,
    training_records,
    users,
)
from tests.conftest import Staff, make_staff

SSN = "123-45-6789"
PERSON = {"first_name": "Vera", "last_name": "Ortiz", "national_id": SSN,
          "date_of_birth": "1970-05-17", "email": "vera@example.org", "region": "west"}
ATTESTED = ("incident-response-plan", "risk-assessment", "asset-inventory")


def failing(results: list[ControlResult]) -> set[str]:
    return {r.control.id for r in results if r.status == "fail"}


def by_id(results: list[ControlResult]) -> dict[str, ControlResult]:
    return {r.control.id: r for r in results}


def healthy(rt: Runtime, clock: FixedClock) -> dict[str, Any]:
    """A store every control passes on: trained staff signed in with MFA, an HR sync, the
    retention job run, the RoPA generated, the documents attested, a checkpoint."""
    officer = make_staff(rt, clock, "carol", ["compliance_officer"])
    adam = make_staff(rt, clock, "adam", ["claims_adjuster"], regions=["west"])
    make_staff(rt, clock, "lena", ["underwriter"], regions=["west"])
    subject = rt.vault.create_subject(SYSTEM).id
    rt.vault.create_record(SYSTEM, "persons", subject, PERSON, "legal_obligation")
    rt.consent.record(SYSTEM, subject, "marketing", True, "privacy-notice", "v1", "web_form")
    rt.vault.create_record(SYSTEM, "marketing_preferences", subject, {"channel": "email"},
                           "marketing")
    rt.hr.sync_text("username,status\ncarol,active\nadam,active\nlena,active\n")
    rt.retention.run(SYSTEM)
    rt.ropa.generate(SYSTEM, "json")
    for control in ATTESTED:
        rt.posture.attest(SYSTEM, control, f"{control} v3", clock.now().date()
                          - timedelta(days=30), "Chris Chief")
    rt.trail.sequence(force_checkpoint=True)
    return {"officer": officer, "adam": adam, "subject": subject}


def user_id(rt: Runtime, username: str) -> str:
    return rt.users.get(username).id


def count_alerts(rt: Runtime) -> int:
    with rt.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(alerts).where(
            alerts.c.detection == "compliance_control")).scalar_one())


def count_events(rt: Runtime, action: str) -> int:
    with rt.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(
            audit_events.c.action == action)).scalar_one())


def test_every_control_passes_on_a_healthy_store_and_fails_when_broken_its_way(
        rt: Runtime, clock: FixedClock) -> None:
    store = healthy(rt, clock)
    now = clock.now()
    first = rt.posture.check()
    assert failing(first) == set(), {r.control.id: r.outcome.facts for r in first
                                     if r.status == "fail"}
    assert len(first) == 20 and all(r.status == "pass" for r in first)
    expected: set[str] = set()

    def broken(control: str) -> dict[str, Any]:
        """The posture after one more break: exactly that control joins the failing ones."""
        expected.add(control)
        results = rt.posture.check()
        assert failing(results) == expected, {r.control.id: r.outcome.facts for r in results
                                              if r.control.id in failing(results) ^ expected}
        return dict(by_id(results)[control].outcome.facts)

    # An account that never enrolled its second factor, past the enrolment grace.
    rt.users.create("ivan", ["admin"])
    with rt.db.write() as conn:
        conn.execute(users.update().where(users.c.username == "ivan")
                     .values(created_at=now - timedelta(days=10)))
    facts = broken("mfa-all-accounts")
    assert facts["without_mfa"]["items"] == ["ivan"]

    # An expired training: the adjuster may not see their classes any more.
    with rt.db.write() as conn:
        conn.execute(training_records.update().where(
            training_records.c.user_id == user_id(rt, "adam"))
            .values(expires_at=now.date() - timedelta(days=1)))
    facts = broken("training-current")
    assert [i["username"] for i in facts["not_current"]["items"]] == ["adam"]
    assert set(facts["not_current"]["items"][0]["classes"].values()) == {"training_expired"}

    # A record written in plaintext by direct SQL: found, and its value never repeated.
    plain = new_id()
    with rt.db.write() as conn:
        conn.execute(records.insert(), [{
            "id": plain, "subject_id": store["subject"], "collection": "persons",
            "clear": json.dumps({"region": "west", "email": "x@example.org"}),
            "sealed": json.dumps({"national_id": SSN}), "created_at": now,
            "updated_at": now, "version": 1}])
    facts = broken("encryption-at-rest")
    found = {(i["record_id"], i["field"], i["problem"]) for i in facts["plaintext_found"]["items"]}
    assert found == {(plain, "email", "sensitive field stored in clear"),
                     (plain, "national_id", "not a Fiduciary ciphertext")}
    assert SSN not in json.dumps(facts) and "x@example.org" not in json.dumps(facts)

    # A data-subject request past its due date.
    dsr = new_id()
    with rt.db.write() as conn:
        conn.execute(dsr_requests.insert(), [{
            "id": dsr, "subject_id": store["subject"], "type": "access", "regime": "gdpr",
            "status": "received", "received_at": now - timedelta(days=40),
            "due_at": now - timedelta(days=9), "original_due_at": now - timedelta(days=9),
            "created_by": "tests", "updated_at": now - timedelta(days=40)}])
    facts = broken("dsr-on-time")
    assert [i["request_id"] for i in facts["overdue"]["items"]] == [dsr]

    # A breach notification still due after its deadline.
    incident = new_id()
    with rt.db.write() as conn:
        conn.execute(incidents.insert(), [{
            "id": incident, "title_sealed": b"sealed", "kind": "unauthorised_access",
            "status": "assessing", "severity": "high", "discovered_at": now - timedelta(days=5),
            "created_by": "tests", "created_at": now - timedelta(days=5),
            "updated_at": now - timedelta(days=5)}])
        conn.execute(incident_obligations.insert(), [{
            "id": new_id(), "incident_id": incident, "rule_id": "gdpr-art33",
            "regime": "gdpr", "recipient": "supervisory authority", "basis": "GDPR 33",
            "due_at": now - timedelta(days=2), "status": "due"}])
    facts = broken("breach-obligations")
    assert facts["overdue"]["items"][0]["incident_id"] == incident

    # Consent to marketing withdrawn: the record held on that basis has none.
    rt.consent.record(SYSTEM, store["subject"], "marketing", False, None, None, "web_form")
    facts = broken("consent-present")
    assert facts["without_consent"]["marketing_preferences"]["count"] == 1

    # A break-glass grant that ended 8 days ago, never reviewed.
    grant = new_id()
    with rt.db.write() as conn:
        conn.execute(break_glass_grants.insert(), [{
            "id": grant, "user_id": user_id(rt, "adam"), "subject_ids": "[]",
            "justification": "customer on the phone, system down",
            "created_at": now - timedelta(days=8, hours=1),
            "expires_at": now - timedelta(days=8)}])
    facts = broken("break-glass-reviewed")
    assert facts["review_overdue"]["items"] == [
        {"grant_id": grant, "username": "adam", "ended_at": facts["review_overdue"]["items"][0]
         ["ended_at"]}]

    # An alert nobody triaged for two days.
    with rt.db.write() as conn:
        alert = insert_finding(conn, Finding(
            "bulk_read", Severity.HIGH, 1.0, "user", user_id(rt, "adam"), "adam", "many reads",
            f"test:{new_id()}", []), now - timedelta(days=2))
    facts = broken("alerts-triaged")
    assert [i["alert_id"] for i in facts["untriaged"]["items"]] == [alert]

    # A leaver the HR feed disabled, enabled again by hand.
    rt.hr.sync_text("username,status\nlena,leaver\n")
    assert failing(rt.posture.check()) == expected  # disabled: nothing wrong yet
    rt.users.set_disabled("lena", False)
    facts = broken("leavers-disabled")
    assert facts["leavers_enabled_since_sync"]["items"] == ["lena"]

    # A truncated audit trail: one sequenced event deleted.
    with rt.db.write() as conn:
        conn.execute(audit_events.delete().where(audit_events.c.leaf_index == 3))
    facts = broken("audit-trail-verifies")
    assert facts["verified"] is False and "deleted" in facts["problem"]

    # Each turn from pass to fail raised one alert and one event; running again adds none.
    assert count_alerts(rt) == len(expected)
    assert count_events(rt, "compliance.control_failed") == len(expected)
    rt.posture.check()
    assert count_alerts(rt) == len(expected)
    assert count_events(rt, "compliance.control_failed") == len(expected)
    assert count_events(rt, "compliance.check") == 13


def test_time_passing_fails_the_controls_that_need_doing_again(
        rt: Runtime, clock: FixedClock) -> None:
    healthy(rt, clock)
    assert failing(rt.posture.check()) == set()
    clock.advance(days=100)
    results = by_id(rt.posture.check())
    # Nobody signed in for 100 days, the retention job, the HR sync and the checkpoints
    # stopped: those controls fail, the rest still hold.
    assert failing(list(results.values())) == {
        "dormant-accounts", "retention-enforced", "leavers-disabled", "audit-trail-verifies"}
    assert {i["username"] for i in results["dormant-accounts"].outcome.facts["dormant"][
        "items"]} == {"carol", "adam", "lena"}
    assert results["retention-enforced"].outcome.facts["run_overdue"] is True
    assert results["leavers-disabled"].outcome.facts["sync_overdue"] is True
    # An attestation expires from its document's date, not from when it was recorded.
    clock.advance(days=236)
    results = by_id(rt.posture.check())
    assert results["incident-response-plan"].status == "fail"
    assert results["incident-response-plan"].outcome.facts["expired"] is True
    assert "access-reviewed" not in failing(list(results.values()))
    # A year on without an access review or a refresher course: both fail too.
    clock.advance(days=34)
    assert {"access-reviewed", "training-current"} <= failing(rt.posture.check())


def test_settings_below_the_regulations_fail_their_controls(
        rt: Runtime, clock: FixedClock) -> None:
    healthy(rt, clock)
    rt.settings.audit_retention_days = 1900  # 5 years (NYDFS), not 6 (HIPAA)
    path = rt.settings.data_dir / "keyring.json"
    doc = json.loads(path.read_text())
    doc["keks"][0]["created_at"] = "2020-01-01T00:00:00+00:00"  # a KEK never rotated
    path.write_text(json.dumps(doc))
    results = by_id(rt.posture.check())
    assert failing(list(results.values())) == {"audit-retention", "kek-rotation"}
    required = results["audit-retention"].outcome.facts["required"]
    assert required["NYDFS 500.6(b)"]["ok"] is True
    assert required["HIPAA 164.316(b)(2)(i)"]["ok"] is False
    assert results["kek-rotation"].outcome.facts["age_days"] > 365


def test_a_changed_policy_leaves_the_records_of_processing_out_of_date(
        rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    healthy(rt, clock)
    assert failing(rt.posture.check()) == set()
    from importlib import resources

    policy = tmp_path / "policy.yaml"
    policy.write_text(resources.files("fiduciary.access").joinpath("default_policy.yaml")
                      .read_text("utf-8") + "\n# lockout reviewed\n")
    settings = rt.settings.model_copy(update={"policy": policy})
    changed = open_runtime(settings, clock=clock)
    try:
        facts = by_id(changed.posture.check())["ropa-current"].outcome.facts
        assert facts["out_of_date"] == ["policy_sha256"]
        changed.ropa.generate(SYSTEM, "json")
        assert by_id(changed.posture.check())["ropa-current"].status == "pass"
    finally:
        changed.close()


def edit_event(conn: sa.Connection, index: int) -> None:
    """What an insider with database access does: one stored event's time changed."""
    row = conn.execute(sa.select(audit_events.c.event).where(
        audit_events.c.leaf_index == index)).scalar_one()
    conn.execute(audit_events.update().where(audit_events.c.leaf_index == index)
                 .values(event=row.replace('"time":"', '"time":"1')))


def test_the_trail_is_verified_incrementally_and_in_full_on_demand(
        rt: Runtime, clock: FixedClock) -> None:
    healthy(rt, clock)
    first = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert first["verification"] == "full"
    rt.trail.sequence(force_checkpoint=True)
    again = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert again["verification"] == "incremental"
    assert 0 < again["events_verified"] < again["tree_size"]
    # An event sequenced since the last run, edited: the incremental run finds it.
    rt.trail.sequence(force_checkpoint=True)
    with rt.db.write() as conn:
        top = conn.execute(sa.select(sa.func.max(audit_events.c.leaf_index))).scalar_one()
        edit_event(conn, top - 1)
    facts = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert facts["verified"] is False and f"leaf index {top - 1}" in facts["problem"]


def test_a_deleted_checkpoint_is_found_by_the_event_that_recorded_it(
        rt: Runtime, clock: FixedClock) -> None:
    healthy(rt, clock)
    rt.posture.check()
    rt.vault.create_subject(SYSTEM)
    rt.trail.sequence(force_checkpoint=True)  # a checkpoint, and the event recording it
    gone = rt.trail.latest_checkpoint().size
    rt.vault.create_subject(SYSTEM)
    rt.trail.sequence(force_checkpoint=True)  # sequences that event, signs another
    with rt.db.write() as conn:
        conn.execute(audit_checkpoints.delete().where(audit_checkpoints.c.size == gone))
    facts = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert facts["verified"] is False
    assert f"checkpoint size {gone}" in facts["problem"] and "missing" in facts["problem"]


def test_an_old_event_edited_is_found_by_the_full_verification(
        rt: Runtime, clock: FixedClock) -> None:
    healthy(rt, clock)
    rt.posture.check()
    with rt.db.write() as conn:
        edit_event(conn, 2)
    facts = by_id(rt.posture.check(full_audit=True))["audit-trail-verifies"].outcome.facts
    assert facts["verified"] is False and "leaf index 2" in facts["problem"]



@pytest.mark.parametrize("edit", ['{"a":1.0,', '{"a":NaN,', '{"a":9007199254740993,'])
def test_a_new_event_rewritten_in_a_form_rfc_8785_never_writes_fails_the_daily_check(
        edit: str, rt: Runtime, clock: FixedClock) -> None:
    """An insider rewrites an event not yet under a checkpoint, and the leaf hash recorded
    for it, into JSON that parses to another value than its RFC 8785 form says (a float
    written as 1.0, a NaN, an integer beyond I-JSON): the incremental check names it, as
    ``audit verify`` does."""
    healthy(rt, clock)
    rt.posture.check()
    rt.vault.create_subject(SYSTEM)
    rt.trail.sequence()
    with rt.db.write() as conn:
        top = conn.execute(sa.select(sa.func.max(audit_events.c.leaf_index))).scalar_one()
        row = conn.execute(sa.select(audit_events.c.event).where(
            audit_events.c.leaf_index == top)).scalar_one()
        text = row.replace("{", edit, 1)
        conn.execute(audit_events.update().where(audit_events.c.leaf_index == top)
                     .values(event=text))
        conn.execute(audit_nodes.update().where(audit_nodes.c.level == 0,
                                                audit_nodes.c["index"] == top)
                     .values(hash=merkle.leaf_hash(text.encode())))
    facts = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert facts["verified"] is False
    assert f"leaf index {top}" in facts["problem"] and "canonical" in facts["problem"]

def test_an_old_event_edited_is_found_by_the_weekly_full_verification_unasked(
        rt: Runtime, clock: FixedClock) -> None:
    """The insider edits an event the daily check verified days ago: the incremental runs
    cannot see it, but no later than 7 days after the last full verification the daily run
    verifies everything again by itself and the control fails naming the event."""
    healthy(rt, clock)
    assert by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts[
        "verification"] == "full"
    with rt.db.write() as conn:
        edit_event(conn, 2)
    clock.advance(days=6)
    facts = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert facts["verification"] == "incremental" and facts["verified"] is True
    clock.advance(days=1)
    facts = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert facts["verified"] is False and "leaf index 2" in facts["problem"]



def test_a_future_dated_last_full_verification_does_not_postpone_the_next(
        rt: Runtime, clock: FixedClock) -> None:
    """An insider with database access dates the last full verification a year ahead to
    keep an old edit unseen: the next daily run verifies in full all the same."""
    healthy(rt, clock)
    rt.posture.check()
    with rt.db.write() as conn:
        raw = conn.execute(sa.select(system_state.c.value).where(
            system_state.c.key == "compliance.audit_verified")).scalar_one()
        doc = json.loads(raw)
        doc["full_at"] = (clock.now() + timedelta(days=365)).isoformat()
        conn.execute(system_state.update().where(
            system_state.c.key == "compliance.audit_verified").values(value=json.dumps(doc)))
        edit_event(conn, 2)
    clock.advance(days=1)
    facts = by_id(rt.posture.check())["audit-trail-verifies"].outcome.facts
    assert facts["verified"] is False and "leaf index 2" in facts["problem"]


def test_the_posture_api_and_its_permissions(rt: Runtime, clock: FixedClock) -> None:
    store = healthy(rt, clock)
    officer: Staff = store["officer"]
    dpo = make_staff(rt, clock, "dora", ["dpo"])
    admin = make_staff(rt, clock, "ada", ["admin"])
    adam: Staff = store["adam"]
    r = officer.client.get("/v1/compliance/posture")  # no result yet: a check runs first
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"controls", "summary"}
    assert body["summary"] == {"pass": 20, "fail": 0, "not_applicable": 0}
    mfa = next(c for c in body["controls"] if c["id"] == "mfa-all-accounts")
    assert set(mfa) == {"id", "title", "sections", "status", "checked_at", "facts"}
    assert "NYDFS 500.12" in mfa["sections"] and mfa["status"] == "pass"
    assert dpo.client.get("/v1/compliance/posture").status_code == 200
    # Neither an administrator nor an adjuster reads the posture, nor attests.
    for who in (admin, adam):
        assert who.client.get("/v1/compliance/posture").status_code == 403
        assert who.client.get("/v1/compliance/controls/mfa-all-accounts/history"
                              ).status_code == 403
    today = clock.now().date()
    good = {"control": "risk-assessment", "reference": "RA-2026 v1",
            "document_date": (today - timedelta(days=3)).isoformat()}
    for who in (admin, adam, dpo):
        assert who.client.post("/v1/compliance/attestations", json=good).status_code == 403

    def stored() -> int:
        with rt.db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(
                compliance_attestations)).scalar_one())

    before = stored()
    for bad, field in (
            ({**good, "document_date": (today + timedelta(days=1)).isoformat()},
             "document_date"),
            # Back-dated beyond the period to fake a pass: it would already have expired.
            ({**good, "document_date": (today - timedelta(days=365)).isoformat()},
             "document_date"),
            ({**good, "control": "moon-landing"}, "control"),
            ({**good, "control": "mfa-all-accounts"}, "control"),
            ({**good, "reference": "  "}, "reference")):
        r = officer.client.post("/v1/compliance/attestations", json=bad)
        assert r.status_code == 422, r.text
        assert field in json.dumps(r.json())
    assert stored() == before
    r = officer.client.post("/v1/compliance/attestations",
                            json={**good, "attested_by": "Chris Chief"})
    assert r.status_code == 201, r.text
    assert r.json()["expires_on"] == (today - timedelta(days=3) + timedelta(days=365)
                                      ).isoformat()
    assert r.json()["recorded_by"] == "carol" and r.json()["attested_by"] == "Chris Chief"
    assert count_events(rt, "compliance.attested") == 4
    rt.posture.check()
    r = officer.client.get("/v1/compliance/controls/risk-assessment/history")
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 2 and items[0]["checked_at"] >= items[1]["checked_at"]
    assert items[0]["facts"]["reference"] == "RA-2026 v1"
    assert officer.client.get("/v1/compliance/controls/nope/history").status_code == 404


def test_compliance_check_from_the_cli(rt: Runtime, clock: FixedClock) -> None:
    from typer.testing import CliRunner

    from fiduciary.cli.main import app as cli_app

    s = rt.settings
    env = {"FIDUCIARY_DATA_DIR": str(s.data_dir),
           "FIDUCIARY_DATABASE_URL": s.resolved_database_url()}
    r = CliRunner().invoke(cli_app, ["compliance", "attest", "asset-inventory",
                                     "--reference", "CMDB export 2026-01",
                                     "--date", "2026-01-15", "--by", "Chris Chief"], env=env)
    assert r.exit_code == 0, r.stdout + r.stderr
    r = CliRunner().invoke(cli_app, ["compliance", "attest", "asset-inventory",
                                     "--reference", "x", "--date", "2099-01-01",
                                     "--by", "Chris Chief"], env=env)
    assert r.exit_code == 2 and "document_date" in r.stderr
    r = CliRunner().invoke(cli_app, ["compliance", "check", "--json"], env=env)
    # Some controls fail on an empty store (no HR sync, no RoPA): exit 1, JSON all the same.
    assert r.exit_code == 1, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"controls", "summary"}
    status = {c["id"]: c["status"] for c in doc["controls"]}
    assert status["asset-inventory"] == "pass" and status["ropa-current"] == "fail"
    assert doc["summary"]["fail"] == sum(1 for v in status.values() if v == "fail")
    r = CliRunner().invoke(cli_app, ["compliance", "history", "asset-inventory", "--json"],
                           env=env)
    assert r.exit_code == 0 and json.loads(r.stdout)["items"][0]["status"] == "pass"


CONTROL = """
controls:
  - id: mfa
    title: MFA
    sections: [NYDFS 500.12]
    check: mfa_enrolled
"""


@pytest.mark.parametrize(("change", "where", "reason"), [
    ("check: mfa_enrolled", "controls[mfa].check", "unknown check"),
    ("sections: [NYDFS 500.12]", "controls[mfa].sections", "unknown section"),
    ("title: MFA", "controls[mfa].params.days", "not a parameter"),
    ("title: MFA", "controls[mfa]", "not both"),
])
def test_a_wrong_catalogue_is_refused_naming_the_control_and_field(
        change: str, where: str, reason: str) -> None:
    text = {
        "unknown check": CONTROL.replace(change, "check: mfa_enroled"),
        "unknown section": CONTROL.replace(change, "sections: [NYDFS 500.99]"),
        "not a parameter": CONTROL.replace(change, "title: MFA\n    params: {days: 3}"),
        "not both": CONTROL.replace(change, "title: MFA\n    attestation: a plan\n"
                                    "    every_days: 365"),
    }[reason]
    with pytest.raises(ControlsInvalid) as caught:
        parse_controls(text, "mine.yaml")
    assert any(p.field == f"mine.yaml: {where}" and reason in p.reason
               for p in caught.value.fields), caught.value.fields
    assert parse_controls(CONTROL, "mine.yaml").controls[0].sections == ("NYDFS 500.12",)


def test_the_catalogue_ships_every_control_the_issue_names() -> None:
    from fiduciary.compliance.catalogue import load_controls

    catalogue = load_controls(None)
    assert len(catalogue.controls) == 20
    attested = {c.id: c.every_days for c in catalogue.controls if c.attestation}
    assert attested == dict.fromkeys(ATTESTED, 365)


def test_serve_runs_every_control_on_its_schedule_not_at_start(
        rt: Runtime, clock: FixedClock) -> None:
    import threading
    import time

    stop = threading.Event()
    worker = threading.Thread(target=rt.posture.run_forever, args=(stop, 0.2))
    worker.start()
    try:
        assert rt.posture.latest() == []  # the first run waits one interval
        deadline = time.monotonic() + 30
        while not rt.posture.latest() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    assert len(rt.posture.latest()) == 20
    assert count_events(rt, "compliance.check") >= 1


def test_a_control_turning_to_fail_is_in_the_analysts_alert_queue(
        rt: Runtime, clock: FixedClock) -> None:
    healthy(rt, clock)
    rt.posture.check()
    rt.users.create("ivan", ["admin"])  # never enrols a second factor
    clock.advance(days=4)
    rt.posture.check()
    sue = make_staff(rt, clock, "sue.analyst", ["security_analyst"]).client
    r = sue.get("/v1/alerts", params={"detection": "compliance_control", "status": "open"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]  # four days on, other controls (recency ones) turn too
    assert items and {a["detection"] for a in items} == {"compliance_control"}
    assert any("mfa-all-accounts" in a["reason"] for a in items)
    assert sue.get("/v1/alerts", params={"detection": "no_such"}).status_code == 422
