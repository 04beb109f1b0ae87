"""Training (issue 13, parts 1 and 2): the gate by data class, the grace period of new staff,
expiry on the clock, assessments graded on the server with a limit on attempts, refresher
after a course's version changes, reminders once each, the status report and the xAPI
export — on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fiduciary.api.app import create_app
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.errors import CatalogueInvalid
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.workforce.catalogue import (
    DEFAULT_CATALOGUE,
    Catalogue,
    answer_digest,
    load_catalogue,
    parse_catalogue,
)
from tests.conftest import Staff, log_in, make_staff, table_rows
from tests.test_alert_delivery import SECRET, Webhook
from tests.test_alerts_api import events
from tests.test_import_export import cli

ALL = ("data-protection", "health-privacy", "financial-data", "identity-data")
CLAIM = "CLM-7"


def customer(rt: Runtime, adjuster: str) -> tuple[str, str, str]:
    """A claimant with a claim assigned to ``adjuster`` and its medical record."""
    s = rt.vault.create_subject(SYSTEM).id
    claim = rt.vault.create_record(SYSTEM, "claims", s, {
        "claim_number": CLAIM, "policy_number": "POL-7", "status": "open",
        "loss_date": "2026-01-03", "assigned_adjuster": adjuster, "restricted": False,
        "description": "Slipped on the stairs", "amount_claimed": "1200.00"},
        "claims_handling").id
    medical = rt.vault.create_record(SYSTEM, "medical_records", s, {
        "claim_number": CLAIM, "primary_icd_code": "S82.1", "treatment": "cast, six weeks",
        "provider_name": "Dr Imani Okafor"}, "claims_handling").id
    return s, claim, medical


def read(staff: Staff, collection: str, record: str) -> tuple[dict[str, Any], dict[str, str]]:
    r = staff.client.get(f"/v1/collections/{collection}/records/{record}"
                         "?purpose=claims_handling")
    assert r.status_code == 200, r.text
    body = r.json()
    return body["data"], {w["field"]: w["reason"] for w in body["withheld"]}


def staff_with(rt: Runtime, clock: FixedClock, username: str, role: str,
               courses: tuple[str, ...], days_ago: int = 10) -> Staff:
    s = make_staff(rt, clock, username, [role], ["west"], trained=False)
    for c in courses:
        rt.users.record_training(username, c, clock.now().date() - timedelta(days=days_ago))
    return s


def right_answers(catalogue: Catalogue, course_id: str) -> list[int | list[int]]:
    """The key, worked out from the digests as a catalogue author would check it."""
    course = catalogue.course(course_id)
    assert course is not None
    out: list[int | list[int]] = []
    for q in course.questions:
        right = [i for i, c in enumerate(q.choices)
                 if answer_digest(course.id, q.id, c) in q.correct]
        out.append(right if q.multiple else right[0])
    return out


def wrong_answers(catalogue: Catalogue, course_id: str) -> list[int | list[int]]:
    course = catalogue.course(course_id)
    assert course is not None
    out: list[int | list[int]] = []
    for q, right in zip(course.questions, right_answers(catalogue, course_id), strict=True):
        bad = next(i for i in range(len(q.choices))
                   if i not in (right if isinstance(right, list) else [right]))
        out.append([bad] if q.multiple else bad)
    return out


def attempt(staff: Staff, course: str, answers: list[Any]) -> Any:
    return staff.client.post(f"/v1/training/{course}/attempts", json={"answers": answers})


def default_catalogue() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(Path(__file__).parents[1].joinpath(
        "src/fiduciary/workforce", DEFAULT_CATALOGUE).read_text())
    return doc


def course_in(doc: dict[str, Any], course_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in doc["courses"] if c["id"] == course_id)
    return found


def insurers_runtime(settings: Settings, clock: FixedClock, doc: dict[str, Any],
                     tmp_path: Path) -> Runtime:
    """A runtime over the same store with the insurer's own catalogue."""
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(doc))
    return open_runtime(settings.model_copy(update={"training_catalogue": path}), clock=clock)


def attempts_stored(rt: Runtime) -> int:
    return len(table_rows(rt, "training_attempts"))


# -- the gate by data class --------------------------------------------------------------------
def test_health_field_withheld_without_health_privacy_rest_returned(
        rt: Runtime, clock: FixedClock) -> None:
    adj = staff_with(rt, clock, "adj", "claims_adjuster",
                     ("data-protection", "financial-data", "identity-data"), days_ago=60)
    clock.advance(days=40)  # past the grace period of a new account
    log_in(adj, clock)
    _, claim, medical = customer(rt, "adj")
    data, withheld = read(adj, "medical_records", medical)
    assert data["provider_name"] == "Dr Imani Okafor" and data["claim_number"] == CLAIM
    assert withheld == {"primary_icd_code": "training_missing",
                        "treatment": "training_missing"}
    data, withheld = read(adj, "claims", claim)
    assert data["amount_claimed"] == "1200.00" and withheld == {}
    # The health course passed through the API: the diagnosis opens.
    r = attempt(adj, "health-privacy", right_answers(rt.training.catalogue, "health-privacy"))
    assert r.status_code == 200 and r.json()["passed"] is True
    data, withheld = read(adj, "medical_records", medical)
    assert data["primary_icd_code"] == "S82.1" and withheld == {}


def test_sensitive_classes_need_the_baseline_course_too(rt: Runtime, clock: FixedClock) -> None:
    adj = staff_with(rt, clock, "adj", "claims_adjuster",
                     ("health-privacy", "financial-data", "identity-data"), days_ago=60)
    clock.advance(days=40)
    log_in(adj, clock)
    _, claim, medical = customer(rt, "adj")
    data, withheld = read(adj, "medical_records", medical)
    assert set(withheld) == {"primary_icd_code", "treatment", "provider_name"}
    assert set(withheld.values()) == {"training_missing"}
    data, withheld = read(adj, "claims", claim)
    assert withheld["amount_claimed"] == "training_missing"
    assert data["status"] == "open"  # internal fields need no course


def test_new_staff_grace_for_personal_not_special_category(rt: Runtime,
                                                           clock: FixedClock) -> None:
    new = make_staff(rt, clock, "new.adj", ["claims_adjuster"], trained=False)
    _, claim, medical = customer(rt, "new.adj")
    data, withheld = read(new, "medical_records", medical)
    assert data["provider_name"] == "Dr Imani Okafor"
    assert withheld == {"primary_icd_code": "training_missing", "treatment": "training_missing"}
    data, withheld = read(new, "claims", claim)
    assert data["description"] == "Slipped on the stairs"
    assert withheld == {"amount_claimed": "training_missing"}
    # 30 days on, the grace period is over: personal data waits for the course as well.
    clock.advance(days=30, minutes=1)
    log_in(new, clock)
    data, withheld = read(new, "medical_records", medical)
    assert "provider_name" not in data and withheld["provider_name"] == "training_missing"
    r = new.client.get(f"/v1/collections/claims/records/{claim}?purpose=claims_handling")
    assert r.status_code == 200 and "description" not in r.json()["data"]


def test_expiry_on_the_clock(rt: Runtime, clock: FixedClock) -> None:
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"])  # every course, 10 days ago
    _, _, medical = customer(rt, "adj")
    assert read(adj, "medical_records", medical)[1] == {}
    clock.advance(days=354)  # the last day of validity
    log_in(adj, clock)
    assert read(adj, "medical_records", medical)[1] == {}
    clock.advance(days=1)
    log_in(adj, clock)
    data, withheld = read(adj, "medical_records", medical)
    assert data == {"claim_number": CLAIM}
    assert set(withheld.values()) == {"training_expired"}
    mine = {c["id"]: c for c in adj.client.get("/v1/me/training").json()["items"]}
    assert {c["status"] for c in mine.values()} == {"expired"}
    assert not any(c["refresher_due"] for c in mine.values())


# -- assessments ---------------------------------------------------------------------------------
def test_my_training_lists_my_courses_without_the_key(rt: Runtime, clock: FixedClock) -> None:
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    r = agent.client.get("/v1/me/training")
    assert r.status_code == 200
    items = {c["id"]: c for c in r.json()["items"]}
    # An agent never sees health data: that course is not theirs.
    assert set(items) == {"data-protection", "financial-data", "identity-data"}
    dp = items["data-protection"]
    assert dp["status"] == "missing" and dp["expires_at"] is None and dp["version"]
    assert dp["attempts_left"] == 5 and dp["unlocks"] == ["personal"]
    # Social engineering (NYDFS 500.14(a)(3)): pretext calls and phishing.
    assert {"pretext-call", "phishing-link"} <= {q["id"] for q in dp["questions"]}
    assert all(set(q) == {"id", "text", "choices", "multiple"} for q in dp["questions"])
    digests = {d for c in rt.training.catalogue.courses for q in c.questions for d in q.correct}
    assert not [d for d in digests if d in r.text]
    # The admin takes none; an API key is no person.
    admin = make_staff(rt, clock, "root", ["admin"])
    assert admin.client.get("/v1/me/training").json()["items"] == []
    key = rt.api_keys.create("svc")[1]
    r = TestClient(create_app(rt), raise_server_exceptions=False).get(
        "/v1/me/training", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_grading_pass_fail_and_record(rt: Runtime, clock: FixedClock) -> None:
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    cat = rt.training.catalogue
    r = attempt(agent, "data-protection", wrong_answers(cat, "data-protection"))
    assert r.status_code == 200
    assert r.json() == {"passed": False, "score": 0.0, "expires_at": None, "attempts_left": 4}
    # Four of five right: 0.8 meets the pass mark.
    answers = right_answers(cat, "data-protection")
    answers[0] = wrong_answers(cat, "data-protection")[0]
    r = attempt(agent, "data-protection", answers)
    assert r.json()["passed"] is True and r.json()["score"] == 0.8
    expires = (clock.now().date() + timedelta(days=365)).isoformat()
    assert r.json()["expires_at"] == expires
    [rec] = table_rows(rt, "training_records")
    assert (rec["course"], rec["source"], rec["course_version"]) == (
        "data-protection", "assessment", cat.versions()["data-protection"])
    me = {c["id"]: c for c in agent.client.get("/v1/me/training").json()["items"]}
    assert me["data-protection"]["status"] == "current"
    assert me["data-protection"]["expires_at"] == expires
    graded = [(e["details"]["score"], e["details"]["passed"])
              for e in events(rt, "training.attempt")]
    assert graded == [(0.0, False), (0.8, True)]
    # Attempts keep the score, never the answers given.
    assert set(table_rows(rt, "training_attempts")[0]) == {
        "id", "user_id", "course", "course_version", "score", "passed", "attempted_at"}


def test_bad_answer_lists_are_refused_naming_the_question(rt: Runtime,
                                                          clock: FixedClock) -> None:
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    good = right_answers(rt.training.catalogue, "data-protection")
    r = attempt(agent, "data-protection", good[:-1])
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "answers"
    r = attempt(agent, "data-protection", [*good[:1], 7, *good[2:]])
    assert r.status_code == 422
    assert r.json()["error"]["fields"] == [{
        "field": "answers[1] (question phishing-link)", "reason": "unknown choice: 0 to 2"}]
    r = attempt(agent, "data-protection", [[0, 1], *good[1:]])  # two picks, one right choice
    assert r.status_code == 422 and "pretext-call" in r.json()["error"]["fields"][0]["field"]
    for odd in ("yes", "1", True, 1.5):  # an index, not text, a flag or a fraction
        r = attempt(agent, "data-protection", [odd, *good[1:]])
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"].startswith(
            "answers"), odd
    assert attempts_stored(rt) == 0 and table_rows(rt, "training_records") == []
    # A course not for the role, and one that does not exist.
    assert attempt(agent, "health-privacy", [0, 0, [0]]).status_code == 403
    assert attempt(agent, "no-such-course", [0]).status_code == 404
    assert attempts_stored(rt) == 0


def test_answers_cannot_be_brute_forced(rt: Runtime, clock: FixedClock) -> None:
    """An insider walking through the choices is stopped after 5 graded attempts a day."""
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    cat = rt.training.catalogue
    course = cat.course("data-protection")
    assert course is not None
    for i in range(5):
        clock.advance(minutes=1)
        guess = [[i % len(q.choices)] if q.multiple else i % len(q.choices)
                 for q in course.questions]
        assert attempt(agent, "data-protection", guess).status_code == 200
    r = attempt(agent, "data-protection", right_answers(cat, "data-protection"))
    assert r.status_code == 429 and r.json()["error"]["reason"] == "rate_limited"
    assert 0 < int(r.headers["Retry-After"]) <= 24 * 3600
    assert "passed" not in r.text and "score" not in r.text  # no grade leaks past the limit
    assert attempts_stored(rt) == 5
    denied = [e for e in events(rt, "training.attempt") if e["decision"] == "deny"]
    assert len(denied) == 1 and denied[0]["reason"] == "rate_limited"
    # Another course is another count; a day after the first attempt, one more is allowed.
    assert attempt(agent, "financial-data", wrong_answers(cat, "financial-data")
                   ).status_code == 200
    clock.advance(hours=24, minutes=-3)
    log_in(agent, clock)
    r = attempt(agent, "data-protection", right_answers(cat, "data-protection"))
    assert r.status_code == 200 and r.json()["passed"] is True


def test_parallel_attempts_cannot_outrun_the_limit(rt: Runtime, clock: FixedClock) -> None:
    """Ten answers sent at once: five are graded, the rest refused."""
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    answers = wrong_answers(rt.training.catalogue, "data-protection")
    app = create_app(rt)

    def one(_: int) -> int:
        c = TestClient(app, raise_server_exceptions=False)
        c.headers.update(agent.client.headers)
        return attempt(Staff("agent", c, "", "", []), "data-protection", answers).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = sorted(pool.map(one, range(10)))
    assert codes == [200] * 5 + [429] * 5
    assert attempts_stored(rt) == 5


def test_version_change_makes_completions_due_for_refresher(
        rt: Runtime, clock: FixedClock, settings: Settings, tmp_path: Path) -> None:
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"])
    _, _, medical = customer(rt, "adj")
    doc = default_catalogue()
    course_in(doc, "health-privacy")["version"] = "2027.1"  # a material change
    rt2 = insurers_runtime(settings, clock, doc, tmp_path)
    try:
        # The new catalogue's taking effect is on the audit trail.
        assert events(rt2, "config.changed")[-1]["details"]["changed"] == ["catalogue_sha256"]
        with TestClient(create_app(rt2), raise_server_exceptions=False) as c:
            c.headers.update(adj.client.headers)
            body = c.get(f"/v1/collections/medical_records/records/{medical}"
                         "?purpose=claims_handling").json()
            assert body["data"]["provider_name"] == "Dr Imani Okafor"
            assert {w["field"]: w["reason"] for w in body["withheld"]} == {
                "primary_icd_code": "training_expired", "treatment": "training_expired"}
            mine = {x["id"]: x for x in c.get("/v1/me/training").json()["items"]}
            assert mine["health-privacy"]["status"] == "expired"
            assert mine["health-privacy"]["refresher_due"] is True
            assert mine["health-privacy"]["version"] == "2027.1"
            assert mine["data-protection"]["status"] == "current"
            r = c.post("/v1/training/health-privacy/attempts",
                       json={"answers": right_answers(rt2.training.catalogue,
                                                      "health-privacy")})
            assert r.json()["passed"] is True
            body = c.get(f"/v1/collections/medical_records/records/{medical}"
                         "?purpose=claims_handling").json()
            assert body["data"]["primary_icd_code"] == "S82.1"
    finally:
        rt2.close()
    versions = {r["course_version"] for r in table_rows(rt, "training_records")
                if r["course"] == "health-privacy"}
    assert versions == {"2026.1", "2027.1"}


def test_a_role_outside_a_courses_audience_is_named(rt: Runtime, clock: FixedClock,
                                                    settings: Settings, tmp_path: Path) -> None:
    make_staff(rt, clock, "adj", ["claims_adjuster"], trained=False)
    assert rt.training.audience_gaps() == []
    doc = default_catalogue()
    course_in(doc, "health-privacy")["audience"] = ["underwriter", "dpo"]
    rt2 = insurers_runtime(settings, clock, doc, tmp_path)
    try:
        assert rt2.training.audience_gaps() == [
            "role claims_adjuster reaches special_category data but is not in the audience "
            "of course health-privacy"]
    finally:
        rt2.close()
    code, out, _ = cli(settings, "training", "catalogue", "--json")
    assert code == 0 and json.loads(out)["gaps"] == []


# -- reminders -----------------------------------------------------------------------------------
def test_reminders_30_and_7_days_before_expiry_once_each(rt: Runtime, clock: FixedClock) -> None:
    make_staff(rt, clock, "agent", ["call_center_agent"], ["west"])  # 3 courses, expire in 355
    make_staff(rt, clock, "root", ["admin"])  # takes no course: nothing to remind
    with Webhook().serving() as hook:
        rt.settings.alert_webhook_url = hook.url
        rt.settings.alert_webhook_secret = SecretStr(SECRET)
        assert rt.training.remind() == []  # 355 days left
        clock.advance(days=330)  # 25 days left
        sent = rt.training.remind()
        assert sorted((s["course"], s["threshold_days"], s["days_left"]) for s in sent) == [
            ("data-protection", 30, 25), ("financial-data", 30, 25), ("identity-data", 30, 25)]
        assert rt.training.remind() == []  # once
        clock.advance(days=20)  # 5 days left
        assert [s["threshold_days"] for s in rt.training.remind()] == [7, 7, 7]
        assert rt.training.remind() == []
        assert len(hook.requests) == 6
        _, headers, body = hook.requests[0]
        mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Fiduciary-Signature"] == f"sha256={mac}"
        notice = json.loads(body)
        assert notice["kind"] == "training.reminder" and notice["username"] == "agent"
    reminders = events(rt, "training.reminder")
    assert len(reminders) == 6
    assert {(e["details"]["course"], e["details"]["threshold_days"]) for e in reminders} == {
        (c, t) for c in ("data-protection", "financial-data", "identity-data") for t in (30, 7)}
    # Renewed, the course is current for a year: nothing more about it; the others' 7-day
    # reminders stay spent.
    rt.users.record_training("agent", "data-protection", clock.now().date())
    clock.advance(days=3)
    assert rt.training.remind() == []
    clock.advance(days=335)  # the renewal's 30-day mark
    assert [s["course"] for s in rt.training.remind()] == ["data-protection"]


def test_remind_from_the_cli(rt: Runtime, clock: FixedClock, settings: Settings) -> None:
    make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    # The CLI runs on the system clock: an expiry 20 days from the real today.
    rt.users.record_training("agent", "data-protection", clock.now().date(),
                             datetime.now(UTC).date() + timedelta(days=20))
    code, out, _ = cli(settings, "training", "remind", "--json")
    assert code == 0
    [sent] = json.loads(out)["sent"]
    assert (sent["username"], sent["course"], sent["threshold_days"]) == (
        "agent", "data-protection", 30)
    code, out, _ = cli(settings, "training", "remind", "--json")
    assert json.loads(out)["sent"] == []
    assert len(events(rt, "training.reminder")) == 1


# -- status report and xAPI --------------------------------------------------------------------
def test_status_report_for_the_compliance_officer(rt: Runtime, clock: FixedClock) -> None:
    co = make_staff(rt, clock, "co", ["compliance_officer"])
    agent = staff_with(rt, clock, "agent", "call_center_agent", ("data-protection",),
                       days_ago=350)
    staff_with(rt, clock, "adj", "claims_adjuster", ("data-protection", "health-privacy"),
               days_ago=400)
    r = co.client.get("/v1/training/status")
    assert r.status_code == 200
    people = {p["username"]: {c["id"]: c for c in p["courses"]} for p in r.json()["items"]}
    assert people["co"] == {}  # no data, no course
    assert people["agent"]["data-protection"]["status"] == "expiring"
    assert people["agent"]["data-protection"]["expires_at"] == (
        clock.now().date() + timedelta(days=15)).isoformat()
    assert people["agent"]["financial-data"] == {
        "id": "financial-data", "version": "2026.1", "status": "missing", "expires_at": None,
        "refresher_due": False}
    assert people["adj"]["health-privacy"]["status"] == "expired"
    assert set(people["adj"]) == set(ALL)
    # Staff read their own status only; an administrator reads nobody's.
    assert agent.client.get("/v1/training/status").status_code == 403
    root = make_staff(rt, clock, "root", ["admin"])
    assert root.client.get("/v1/training/status").status_code == 403
    assert root.client.get("/v1/training/statements").status_code == 403


def test_xapi_statements(rt: Runtime, clock: FixedClock, settings: Settings) -> None:
    co = make_staff(rt, clock, "co", ["compliance_officer"], trained=False)
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    cat = rt.training.catalogue
    attempt(agent, "data-protection", wrong_answers(cat, "data-protection"))
    clock.advance(minutes=5)
    attempt(agent, "data-protection", right_answers(cat, "data-protection"))
    code, _, _ = cli(settings, "training", "record", "agent", "identity-data", "--completed",
                     clock.now().date().isoformat(), "--evidence", "CERT-2026-0042")
    assert code == 0
    r = co.client.get("/v1/training/statements")
    assert r.status_code == 200
    body = r.json()
    assert body["more"] == ""
    failed, passed, completed = body["statements"]
    home = settings.training_xapi_home_page
    assert failed["verb"]["id"] == "http://adlnet.gov/expapi/verbs/failed"
    assert passed["verb"]["id"] == "http://adlnet.gov/expapi/verbs/passed"
    assert completed["verb"]["id"] == "http://adlnet.gov/expapi/verbs/completed"
    assert passed["actor"] == {"objectType": "Agent", "name": "agent",
                               "account": {"homePage": home, "name": "agent"}}
    assert passed["object"]["id"] == f"{home}/training/courses/data-protection"
    assert passed["object"]["definition"]["name"]["en-US"].startswith("Data protection")
    assert passed["result"] == {"score": {"scaled": 1.0}, "success": True, "completion": True}
    assert failed["result"]["success"] is False and failed["result"]["score"]["scaled"] == 0
    assert passed["context"] == {"revision": "2026.1"}
    assert passed["timestamp"].endswith("Z") and passed["timestamp"] > failed["timestamp"]
    assert completed["result"]["success"] is True
    assert "CERT-2026-0042" in json.dumps(completed["result"])
    # Exported twice, the same ids: an LMS keeps one copy.
    again = co.client.get("/v1/training/statements").json()["statements"]
    assert [s["id"] for s in again] == [s["id"] for s in body["statements"]]
    since = co.client.get("/v1/training/statements", params={
        "since": passed["timestamp"]}).json()["statements"]
    assert [s["verb"]["display"]["en-US"] for s in since] == ["passed", "completed"]
    code, out, _ = cli(settings, "training", "export", "--since", passed["timestamp"])
    assert code == 0 and [s["id"] for s in json.loads(out)["statements"]] == [
        s["id"] for s in since]


# -- the CLI and the catalogue ---------------------------------------------------------------------
def test_cli_catalogue_status_and_record_needs_evidence(rt: Runtime, clock: FixedClock,
                                                        settings: Settings) -> None:
    make_staff(rt, clock, "agent", ["call_center_agent"], ["west"], trained=False)
    code, out, _ = cli(settings, "training", "catalogue", "--json")
    assert code == 0
    cat = json.loads(out)
    assert cat["baseline"] == "data-protection"
    assert {c["id"]: c["unlocks"] for c in cat["courses"]} == {
        "data-protection": ["personal"], "health-privacy": ["special_category"],
        "financial-data": ["financial"], "identity-data": ["government_id"]}
    assert "correct" not in out
    day = clock.now().date().isoformat()
    code, _, _ = cli(settings, "training", "record", "agent", "data-protection",
                     "--completed", day)
    assert code == 2  # no evidence reference: nothing recorded
    code, _, err = cli(settings, "training", "record", "agent", "fire-safety",
                       "--completed", day, "--evidence", "X-1")
    assert code == 2 and "course" in err
    assert table_rows(rt, "training_records") == []
    code, _, _ = cli(settings, "training", "record", "agent", "data-protection",
                     "--completed", day, "--evidence", "LMS-88")
    assert code == 0
    [rec] = table_rows(rt, "training_records")
    assert (rec["source"], rec["evidence"]) == ("external", "LMS-88")
    [event] = events(rt, "training.record")
    assert event["details"]["evidence"] == "LMS-88" and event["actor"]["kind"] == "operator"
    code, out, _ = cli(settings, "training", "status", "--json")
    assert code == 0
    [agent] = json.loads(out)["items"]
    status = {c["id"]: c["status"] for c in agent["courses"]}
    assert status["financial-data"] == status["identity-data"] == "missing"


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d["courses"][1].update(audience=["claims_adjuster", "wizard"]),
     "courses[health-privacy].audience"),
    (lambda d: d["courses"][2].update(unlocks=["internal"]), "courses[financial-data].unlocks"),
    (lambda d: d["courses"][0]["questions"][1].update(correct=["00" * 32]),
     "courses[data-protection].questions[phishing-link].correct"),
    (lambda d: d["courses"][3].update(pass_mark=1.5), "courses[identity-data].pass_mark"),
    (lambda d: d.update(baseline="fire-safety"), "baseline"),
    (lambda d: d["courses"][0].pop("validity_days"), "courses[data-protection].validity_days"),
])
def test_an_invalid_catalogue_is_refused_naming_course_and_field(change: Any, named: str,
                                                                 tmp_path: Path) -> None:
    text = yaml.safe_dump(default_catalogue())
    roles = ["underwriter", "claims_adjuster", "call_center_agent", "fraud_investigator",
             "actuary", "dpo"]
    parse_catalogue(text, "mine.yaml", roles)  # the packaged one is valid
    doc = yaml.safe_load(text)
    change(doc)
    with pytest.raises(CatalogueInvalid) as exc:
        parse_catalogue(yaml.safe_dump(doc), "mine.yaml", roles)
    assert f"mine.yaml: {named}" in [p.field for p in exc.value.fields]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogueInvalid):
        load_catalogue(path, roles)
