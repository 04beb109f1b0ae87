"""Data-subject requests: deadlines on creation, the workflow order, extensions, overdue and
due-soon lists under a moving clock, fulfilment by type, audit, permissions and the CLI."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.api.app import create_app
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.errors import ConfigurationError
from fiduciary.privacy.dsr import DsrService
from fiduciary.runtime import Runtime, open_runtime
from tests.conftest import make_staff, table_rows
from tests.test_import_export import cli

SSN = "078-05-1120"
RECEIVED = "2026-01-31T09:00:00Z"


@pytest.fixture
def dpo(rt: Runtime) -> Iterator[TestClient]:
    """A DPO's API key: unlike a staff session, it outlives the clock moving by weeks."""
    _, token = rt.api_keys.create("dpo-desk", role="dpo")
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def person(rt: Runtime) -> str:
    s = rt.vault.create_subject(SYSTEM).id
    rt.vault.create_record(SYSTEM, "persons", s, {
        "first_name": "Vera", "last_name": "Ortiz", "national_id": SSN,
        "date_of_birth": "1970-05-17", "email": "vera@example.org", "region": "west"},
        "legal_obligation")
    return s


def open_request(dpo: TestClient, subject: str, type_: str = "access", regime: str = "gdpr",
                 received_at: str = RECEIVED, **extra: Any) -> dict[str, Any]:
    r = dpo.post("/v1/dsr", json={"subject_id": subject, "type": type_, "regime": regime,
                                  "received_at": received_at, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def step(dpo: TestClient, request_id: str, name: str, status: int = 200,
         **body: Any) -> dict[str, Any]:
    r = dpo.post(f"/v1/dsr/{request_id}/{name}", json=body or None)
    assert r.status_code == status, r.text
    return dict(r.json())


def verified(dpo: TestClient, subject: str, type_: str, regime: str = "gdpr") -> str:
    req = open_request(dpo, subject, type_, regime)
    method = "not_required" if type_ in ("opt_out_sale_sharing", "limit_sensitive") else \
        "id_document"
    step(dpo, req["id"], "verify", method=method)
    return str(req["id"])


def test_creation_sets_statutory_deadlines(dpo: TestClient, rt: Runtime) -> None:
    s = person(rt)
    gdpr = open_request(dpo, s, "access", "gdpr", channel="email")
    assert gdpr["status"] == "received"
    # One month ends on Saturday 28 February, so on Monday 2 March (Regulation 1182/71 3(4)).
    assert gdpr["due_at"] == "2026-03-02T23:59:59.999999Z"
    assert gdpr["acknowledge_by"] is None and gdpr["overdue"] == []
    ccpa = open_request(dpo, s, "know", "ccpa", "2026-01-30T16:00:00Z")  # a Friday
    assert ccpa["due_at"] == "2026-03-16T23:59:59.999999Z"
    assert ccpa["acknowledge_by"] == "2026-02-13T23:59:59.999999Z"
    naive = open_request(dpo, s, "erasure", "gdpr", "2024-01-31")
    assert naive["received_at"] == "2024-01-31T00:00:00Z"
    assert naive["due_at"].startswith("2024-02-29T23:59:59")  # leap year


def test_type_must_belong_to_the_regime_and_inputs_are_named(dpo: TestClient,
                                                             rt: Runtime) -> None:
    s = person(rt)

    def rejected(body: dict[str, Any]) -> set[str]:
        r = dpo.post("/v1/dsr", json={"subject_id": s, "type": "access", "regime": "gdpr",
                                      "received_at": RECEIVED, **body})
        assert r.status_code == 422, r.text
        return {f["field"] for f in r.json()["error"]["fields"]}

    assert rejected({"type": "know"}) == {"type"}
    assert rejected({"regime": "ccpa"}) == {"type"}
    assert rejected({"regime": "lgpd"}) == {"regime"}
    assert rejected({"channel": "carrier pigeon"}) == {"channel"}
    assert rejected({"received_at": "2026-03-01T00:00:00Z"}) == {"received_at"}
    r = dpo.post("/v1/dsr", json={"subject_id": "00000000-0000-4000-8000-000000000000",
                                  "type": "access", "regime": "gdpr", "received_at": RECEIVED})
    assert r.status_code == 404
    assert dpo.get("/v1/dsr/00000000-0000-4000-8000-000000000000").status_code == 404
    assert table_rows(rt, "dsr_requests") == []


def test_workflow_order_is_enforced_and_denial_needs_a_reason(dpo: TestClient,
                                                              rt: Runtime) -> None:
    s = person(rt)
    rid = open_request(dpo, s, "access")["id"]
    early = step(dpo, rid, "fulfil", 409)
    assert early["error"]["reason"] == "identity_not_verified"
    assert "verify" in early["error"]["message"]
    assert step(dpo, rid, "start", 409)["error"]["reason"] == "identity_not_verified"
    assert "method" in {f["field"] for f in step(dpo, rid, "verify", 422,
                                                 method="trust me")["error"]["fields"]}
    assert step(dpo, rid, "verify", 422, method="not_required")["error"]["fields"][0][
        "field"] == "method"  # only CCPA opt-out and limit requests need no verification
    assert step(dpo, rid, "verify", method="id_document")["status"] == "identity_verified"
    assert step(dpo, rid, "verify", 409, method="id_document")["error"]["reason"] == \
        "already_verified"
    assert step(dpo, rid, "start")["status"] == "in_progress"
    assert step(dpo, rid, "deny", 422, reason="  ")["error"]["fields"][0]["field"] == "reason"
    denied = step(dpo, rid, "deny", reason="Manifestly unfounded (Art. 12(5))")
    assert denied["status"] == "denied" and denied["closed_at"]
    assert denied["outcome_reason"] == "Manifestly unfounded (Art. 12(5))"
    assert step(dpo, rid, "fulfil", 409)["error"]["reason"] == "request_closed"
    assert step(dpo, rid, "extend", 409, reason="late")["error"]["reason"] == "request_closed"
    shown = dpo.get(f"/v1/dsr/{rid}").json()
    assert [x["step"] for x in shown["steps"]] == ["create", "verify", "start", "deny"]


def test_every_step_is_audited_and_written_text_only_as_a_digest(dpo: TestClient,
                                                                 rt: Runtime) -> None:
    s = person(rt)
    reason = "Vera Ortiz sent 40 boxes of paper records; SSN 078-05-1120 needs checking"
    note = "Corrected surname Ortiz-Lopez and date of birth 1970-05-17"
    rid = open_request(dpo, s, "rectification")["id"]
    step(dpo, rid, "acknowledge")
    assert step(dpo, rid, "acknowledge", 409)["error"]["reason"] == "already_acknowledged"
    step(dpo, rid, "verify", method="phone_callback")
    step(dpo, rid, "extend", reason=reason)
    step(dpo, rid, "start")
    assert step(dpo, rid, "fulfil", 422)["error"]["fields"][0]["field"] == "note"
    done = step(dpo, rid, "fulfil", note=note)
    assert done["status"] == "fulfilled" and done["result"] == {"note": note}
    other = open_request(dpo, s, "objection")["id"]
    step(dpo, other, "deny", reason=reason)

    events = [i["event"] for i in rt.trail.events(subject_id=s, limit=1000)[0]
              if i["event"]["action"].startswith("dsr.")]
    assert [(e["action"], e["details"]["request_id"]) for e in events] == [
        ("dsr.create", rid), ("dsr.acknowledge", rid), ("dsr.verify", rid),
        ("dsr.extend", rid), ("dsr.start", rid), ("dsr.fulfil", rid),
        ("dsr.create", other), ("dsr.deny", other)]
    assert all(e["actor"]["kind"] == "api_key" and e["subject_ids"] == [s] for e in events)
    by_action = {e["action"]: e["details"] for e in events}
    digest = hashlib.sha256(reason.encode()).hexdigest()
    assert by_action["dsr.extend"]["reason_sha256"] == digest
    assert by_action["dsr.deny"] == {**by_action["dsr.deny"], "reason_sha256": digest,
                                     "reason_chars": len(reason), "status": "denied"}
    assert by_action["dsr.fulfil"]["note_sha256"] == hashlib.sha256(note.encode()).hexdigest()
    trail = json.dumps(rt.trail.events(limit=1000)[0])
    steps = json.dumps([r["details"] for r in table_rows(rt, "dsr_steps")])
    for text in (trail, steps):
        assert reason not in text and note not in text
        assert SSN not in text and "Ortiz" not in text
    assert len(table_rows(rt, "dsr_steps")) == 8


def test_gdpr_extension_needs_a_reason_happens_once_and_only_before_the_due_date(
        dpo: TestClient, rt: Runtime, clock: FixedClock) -> None:
    s = person(rt)
    rid = open_request(dpo, s, "access")["id"]
    assert step(dpo, rid, "extend", 422, reason="")["error"]["fields"][0]["field"] == "reason"
    extended = step(dpo, rid, "extend", reason="Complex: records across five lines")
    assert extended["due_at"] == "2026-04-28T23:59:59.999999Z"
    assert extended["original_due_at"] == "2026-03-02T23:59:59.999999Z"
    assert extended["extended"] is True
    again = step(dpo, rid, "extend", 409, reason="Still complex")
    assert again["error"]["reason"] == "already_extended"
    late = open_request(dpo, s, "portability")["id"]
    clock.advance(days=31)  # 3 March 2026: the original due date (Monday 2 March) has passed
    refused = step(dpo, late, "extend", 409, reason="Complex")
    assert refused["error"]["reason"] == "original_due_passed"
    assert dpo.get(f"/v1/dsr/{late}").json()["due_at"].startswith("2026-03-02")


def test_ccpa_extension_stops_at_ninety_days(dpo: TestClient, rt: Runtime) -> None:
    s = person(rt)
    rid = open_request(dpo, s, "delete", "ccpa")["id"]
    extended = step(dpo, rid, "extend", reason="Backups on tape need recall")
    assert extended["due_at"] == "2026-05-01T23:59:59.999999Z"  # 31 Jan + 90 days


def test_overdue_and_due_soon_lists_move_with_the_clock(dpo: TestClient, rt: Runtime,
                                                        clock: FixedClock) -> None:
    s = person(rt)
    gdpr = open_request(dpo, s, "access", "gdpr")["id"]  # due Mon 2 Mar (28 Feb: a Sat)
    ccpa = open_request(dpo, s, "know", "ccpa")["id"]  # acknowledge by 13 Feb, due 17 Mar

    def ids(query: str) -> list[str]:
        r = dpo.get(f"/v1/dsr?{query}")
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    assert ids("overdue=true") == []
    assert ids("due_within_days=14") == [ccpa]  # its acknowledgement is due on 13 February
    assert ids("due_within_days=30") == [gdpr, ccpa]
    assert ids("status=received") == [gdpr, ccpa]
    assert dpo.get("/v1/dsr?status=lost").status_code == 422

    clock.advance(days=14)  # 14 February: the CCPA receipt was never confirmed
    assert ids("overdue=true") == [ccpa]
    assert dpo.get(f"/v1/dsr/{ccpa}").json()["overdue"] == ["acknowledgement"]
    step(dpo, ccpa, "acknowledge")
    assert ids("overdue=true") == []
    assert ids("due_within_days=15") == []
    assert ids("due_within_days=16") == [gdpr]

    clock.advance(days=17)  # 3 March: the GDPR answer is late
    assert ids("overdue=true") == [gdpr]
    assert dpo.get("/v1/dsr?overdue=true").json()["items"][0]["overdue"] == ["response"]
    assert ids("due_within_days=30") == [ccpa]
    step(dpo, gdpr, "deny", reason="Requester withdrew the request")
    assert ids("overdue=true") == []
    assert ids("status=denied") == [gdpr]
    assert ids(f"subject_id={s}") == [gdpr, ccpa]
    clock.advance(days=15)  # 18 March
    assert ids("overdue=true") == [ccpa]


def test_restriction_objection_opt_out_and_limit_take_effect(dpo: TestClient, rt: Runtime,
                                                              client: TestClient) -> None:
    s = person(rt)
    for purpose in ("marketing", "sale_or_sharing", "sensitive_data_use"):
        rt.consent.record(SYSTEM, s, purpose, True, None, "v1", "web_form")

    objection = verified(dpo, s, "objection")
    assert step(dpo, objection, "fulfil", 422, purposes=["underwriting"])["error"][
        "fields"][0]["field"] == "purposes"
    done = step(dpo, objection, "fulfil", purposes=["marketing"])
    assert done["status"] == "fulfilled"
    assert [w["purpose"] for w in done["result"]["withdrawn"]] == ["marketing"]
    current = rt.consent.current(s)
    assert not current["marketing"].granted and current["marketing"].channel == \
        f"dsr:{objection}"
    assert rt.consent.has_consent(s, "sale_or_sharing")

    step(dpo, verified(dpo, s, "opt_out_sale_sharing", "ccpa"), "fulfil")
    assert not rt.consent.has_consent(s, "sale_or_sharing")
    assert rt.consent.has_consent(s, "sensitive_data_use")
    step(dpo, verified(dpo, s, "limit_sensitive", "ccpa"), "fulfil")
    assert not rt.consent.has_consent(s, "sensitive_data_use")

    restriction = verified(dpo, s, "restriction")
    assert step(dpo, restriction, "fulfil", 422, purposes=["marketing"])["error"][
        "fields"][0]["field"] == "purposes"
    assert step(dpo, restriction, "fulfil")["result"] == {"restricted": True}
    assert client.get(f"/v1/subjects/{s}").json()["status"] == "restricted"
    r = client.get(f"/v1/subjects/{s}/records?purpose=policy_administration")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "processing_restricted"
    actions = [i["event"]["action"] for i in rt.trail.events(subject_id=s, limit=1000)[0]]
    assert "subject.restrict" in actions and actions.count("consent.record") == 6


class Packager:
    def build(self, principal: Any, subject_id: str, request_id: str) -> dict[str, Any]:
        return {"file": f"access-{request_id}.zip", "records": 1}


class Eraser:
    def __init__(self, status: str) -> None:
        self.status = status

    def erase(self, principal: Any, subject_id: str, request_id: str) -> dict[str, Any]:
        kept = [{"collection": "claims", "reason": "retention"}] if self.status == "pending" \
            else []
        return {"status": self.status, "certificate_id": "cert-1", "kept": kept}


def test_access_and_erasure_use_the_packager_and_eraser_when_configured(
        dpo: TestClient, rt: Runtime) -> None:
    s = person(rt)
    rid = verified(dpo, s, "access")
    rt.dsr.packager = None  # as before the access packager is wired in
    missing = step(dpo, rid, "fulfil", 503)
    assert missing["error"]["code"] == "configuration_error"
    assert dpo.get(f"/v1/dsr/{rid}").json()["status"] == "identity_verified"  # untouched
    bare = DsrService(rt.db, rt.clock, rt.audit, rt.restriction, rt.consent)
    with pytest.raises(ConfigurationError, match="eraser"):
        bare.fulfil(SYSTEM, verified(dpo, s, "erasure"))

    service = DsrService(rt.db, rt.clock, rt.audit, rt.restriction, rt.consent,
                         packager=Packager(), eraser=Eraser("pending"))
    access = service.fulfil(SYSTEM, rid)
    assert access.status == "fulfilled"
    assert access.result == {"package": {"file": f"access-{rid}.zip", "records": 1}}
    erasure = service.fulfil(SYSTEM, verified(dpo, s, "erasure"))
    assert erasure.status == "partially_fulfilled"
    assert erasure.result is not None and erasure.result["erasure"]["kept"]
    assert erasure.outcome_reason and "legal hold" in erasure.outcome_reason
    complete = DsrService(rt.db, rt.clock, rt.audit, rt.restriction, rt.consent,
                          eraser=Eraser("complete"))
    assert complete.fulfil(SYSTEM, verified(dpo, s, "delete", "ccpa")).status == "fulfilled"
    assert [x.step for x in service.get(rid).steps] == ["create", "verify", "start", "fulfil"]


def test_erasure_request_erases_the_subject_and_its_log_stays(dpo: TestClient, rt: Runtime,
                                                              clock: FixedClock,
                                                              client: TestClient) -> None:
    s = person(rt)
    # Two people of the privacy office: one verifies, another erases (keys are not people).
    first = make_staff(rt, clock, "dpo.first", ["dpo"]).client
    second = make_staff(rt, clock, "dpo.second", ["dpo"]).client
    rid = verified(first, s, "erasure")
    assert first.post(f"/v1/dsr/{rid}/fulfil").json()["error"]["reason"] == \
        "separation_of_duties"
    assert dpo.post(f"/v1/dsr/{rid}/fulfil").json()["error"]["reason"] == \
        "separation_of_duties"
    done = step(second, rid, "fulfil")
    assert done["status"] == "fulfilled" and done["result"]["erasure"]["status"] == "complete"
    assert client.get(f"/v1/subjects/{s}").status_code == 410
    again = dpo.post("/v1/dsr", json={"subject_id": s, "type": "access", "regime": "gdpr",
                                      "received_at": RECEIVED})
    assert again.status_code == 410
    shown = dpo.get(f"/v1/dsr/{rid}").json()  # the request log outlives the subject's data
    assert shown["status"] == done["status"]
    assert [x["step"] for x in shown["steps"]] == ["create", "verify", "start", "fulfil"]
    assert "Ortiz" not in json.dumps(shown) and SSN not in json.dumps(shown)


def test_only_privacy_managers_handle_requests(rt: Runtime, clock: FixedClock,
                                              client: TestClient) -> None:
    s = person(rt)
    body = {"subject_id": s, "type": "access", "regime": "gdpr", "received_at": RECEIVED}
    underwriter = make_staff(rt, clock, "uw", ["underwriter"]).client
    for caller in (underwriter, client):  # the service key may record consent, not DSRs
        r = caller.post("/v1/dsr", json=body)
        assert r.status_code == 403 and r.json()["error"]["reason"] == "field_not_permitted"
        assert caller.get("/v1/dsr").status_code == 403
    staff = make_staff(rt, clock, "dpo", ["dpo"]).client
    r = staff.post("/v1/dsr", json=body)
    assert r.status_code == 201
    assert r.json()["created_by"] == "user:dpo"
    assert staff.get(f"/v1/dsr/{r.json()['id']}").json()["steps"][0]["actor"] == "user:dpo"
    assert len(table_rows(rt, "dsr_requests")) == 1


def test_request_log_holds_no_customer_values(dpo: TestClient, rt: Runtime) -> None:
    s = person(rt)
    step(dpo, verified(dpo, s, "objection"), "fulfil")
    step(dpo, verified(dpo, s, "restriction"), "fulfil")
    stored = repr([table_rows(rt, t) for t in ("dsr_requests", "dsr_steps", "consent_events")])
    for value in (SSN, "Ortiz", "Vera", "vera@example.org", "1970-05-17"):
        assert value not in stored


def test_cli_runs_a_request_and_records_consent(rt: Runtime, settings: Settings) -> None:
    s = person(rt)
    today = datetime.now(UTC).date().isoformat()
    code, out, err = cli(settings, "dsr", "create", "--subject", s, "--type", "objection",
                         "--regime", "gdpr", "--received", today, "--channel", "paper",
                         "--json")
    assert code == 0, err
    created = json.loads(out)
    rid = created["id"]
    assert created["status"] == "received" and created["channel"] == "paper"
    code, _, err = cli(settings, "dsr", "fulfil", rid)
    assert code == 2 and "verify the requester's identity first" in err
    assert cli(settings, "dsr", "verify", rid, "--method", "id_document")[0] == 0
    assert cli(settings, "dsr", "acknowledge", rid)[0] == 0
    code, out, err = cli(settings, "dsr", "fulfil", rid, "--purpose", "marketing", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "fulfilled"
    code, out, _ = cli(settings, "dsr", "list", "--status", "fulfilled", "--json")
    assert [i["id"] for i in json.loads(out)["items"]] == [rid]
    code, out, _ = cli(settings, "dsr", "list", "--overdue")
    assert code == 0
    code, out, _ = cli(settings, "dsr", "show", rid, "--json")
    assert [x["step"] for x in json.loads(out)["steps"]] == [
        "create", "verify", "acknowledge", "start", "fulfil"]
    assert cli(settings, "dsr", "show", rid)[0] == 0

    code, out, err = cli(settings, "consent", "record", s, "--purpose", "sale_or_sharing",
                         "--granted", "--notice-version", "2026-01", "--method", "paper",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["recorded_by"].startswith("cli:")
    code, out, _ = cli(settings, "consent", "history", s, "--json")
    current = json.loads(out)["current"]
    assert current["marketing"]["granted"] is False and current["sale_or_sharing"]["granted"]
    assert cli(settings, "consent", "history", s)[0] == 0
    code, _, err = cli(settings, "consent", "record", s, "--purpose", "underwriting",
                       "--withdrawn", "--method", "paper")
    assert code == 2 and "purpose" in err
    # What the CLI does is attributed to the operator running it.
    events = [i["event"] for i in rt.trail.events(subject_id=s, limit=1000)[0]
              if i["event"]["action"].split(".")[0] in ("dsr", "consent")]
    assert events and all(e["actor"]["kind"] == "operator" for e in events)


def test_holidays_from_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="FIDUCIARY_DSR_HOLIDAYS"):
        Settings(dsr_holidays="25 December").holidays()
    settings = Settings(data_dir=tmp_path / "d", dsr_holidays="2026-02-02, 2026-02-03",
                        argon2_time_cost=1, argon2_memory_kib=8192)
    runtime = open_runtime(settings, create=True, clock=FixedClock(
        datetime(2026, 1, 31, 12, 0, tzinfo=UTC)))
    try:
        subject = runtime.vault.create_subject(SYSTEM).id
        req = runtime.dsr.create(SYSTEM, subject, "know", "ccpa",
                                 datetime(2026, 1, 30, 16, 0, tzinfo=UTC))
        # 2 and 3 February closed by the setting, 16 February Presidents' Day (US-CA, the
        # default CCPA calendar): the tenth business day after Friday 30 January is 18 February.
        assert req.acknowledge_by == datetime(2026, 2, 18, 23, 59, 59, 999999, tzinfo=UTC)
        assert date(2026, 2, 2) in runtime.dsr.calendar.gdpr_closed  # closed for GDPR too
    finally:
        runtime.close()
