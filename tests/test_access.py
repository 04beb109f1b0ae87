"""Conditions, writes, search, training gate, break-glass, VIP masking, separation of duties,
scoped keys and access reviews, as staff users see them."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.runtime import Runtime
from tests.conftest import log_in, make_staff, table_rows
from tests.test_import_export import cli

SSN = "078-05-1120"


def person(rt: Runtime, **extra: object) -> tuple[str, str]:
    s = rt.vault.create_subject(SYSTEM).id
    rec = rt.vault.create_record(SYSTEM, "persons", s, {
        "first_name": "Vera", "last_name": "Ortiz", "national_id": SSN,
        "date_of_birth": "1970-05-17", "email": "vera@example.org", "region": "west",
        "drivers_licence_number": "D1234567", "drivers_licence_state": "CA", **extra},
        "legal_obligation")
    return s, rec.id


def claim(rt: Runtime, subject: str, adjuster: str, restricted: bool = False,
          number: str = "CLM-1") -> str:
    return rt.vault.create_record(SYSTEM, "claims", subject, {
        "claim_number": number, "policy_number": "POL-9", "status": "open",
        "loss_date": "2026-01-03", "assigned_adjuster": adjuster, "restricted": restricted,
        "description": "Water came through the ceiling at night"}, "claims_handling").id


def quote(rt: Runtime, subject: str, underwriter: str) -> str:
    """A quote in ``underwriter``'s queue: what relates them to the customer."""
    return rt.vault.create_record(SYSTEM, "quotes", subject, {
        "quote_number": f"Q-{underwriter}", "product": "auto", "decision": "pending",
        "assigned_underwriter": underwriter}, "underwriting").id


def test_adjuster_sees_only_assigned_unrestricted_claims(rt: Runtime, clock: FixedClock) -> None:
    subject, _ = person(rt)
    mine = claim(rt, subject, "adj", number="CLM-1")
    theirs = claim(rt, subject, "someone.else", number="CLM-2")
    restricted = claim(rt, subject, "adj", restricted=True, number="CLM-3")
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"]).client
    url = "/v1/collections/claims/records/{}?purpose=claims_handling"
    assert adj.get(url.format(mine)).json()["data"]["description"].startswith("Water")
    for other in (theirs, restricted):
        # Outside the adjuster's claims: answered as if it did not exist.
        r = adj.get(url.format(other))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "record_not_found"
        assert "Water" not in r.text
    found = adj.post("/v1/collections/claims/search?purpose=claims_handling",
                     json={"where": {"policy_number": "POL-9"}}).json()["items"]
    assert [f["id"] for f in found] == [mine]
    # Writes follow the same conditions.
    ok = adj.patch(url.format(mine), json={"data": {"status": "under_review"}})
    assert ok.status_code == 200
    denied = adj.patch(url.format(theirs), json={"data": {"status": "closed"}})
    assert denied.status_code == 404 and denied.json()["error"]["code"] == "record_not_found"
    assert rt.vault.get_record(SYSTEM, "claims", theirs, "claims_handling"
                               ).data["status"] == "open"
    gone = adj.delete(url.format(mine))
    assert gone.status_code == 403 and gone.json()["error"]["reason"] == "field_not_permitted"


def test_masking_follows_industry_norms(rt: Runtime, clock: FixedClock) -> None:
    _, rec = person(rt)
    agent = make_staff(rt, clock, "cc", ["call_center_agent"], regions=["west"]).client
    body = agent.get(f"/v1/collections/persons/records/{rec}?purpose=customer_service").json()
    assert body["data"]["national_id"] == "***-**-1120"
    assert body["data"]["date_of_birth"] == "1970"
    assert body["data"]["drivers_licence_number"] == "CA ****567"
    assert body["data"]["first_name"] == "Vera"
    assert SSN not in json.dumps(body)


def test_region_condition_and_write_denial(rt: Runtime, clock: FixedClock) -> None:
    subject, rec = person(rt)
    east = make_staff(rt, clock, "east", ["call_center_agent"], regions=["east"]).client
    r = east.get(f"/v1/collections/persons/records/{rec}?purpose=customer_service")
    assert r.status_code == 404 and r.json()["error"]["code"] == "record_not_found"
    r = east.patch(f"/v1/collections/persons/records/{rec}?purpose=customer_service",
                   json={"data": {"email": "x@example.org"}})
    assert r.status_code == 403
    assert r.json()["error"]["fields"] == [{"field": "email", "reason": "field_not_permitted"}]
    r = east.post("/v1/collections/persons/records?purpose=customer_service",
                  json={"subject_id": subject, "data": {"first_name": "A", "last_name": "B"}})
    assert r.status_code == 403
    assert len(table_rows(rt, "records")) == 1


def test_training_gate(rt: Runtime, clock: FixedClock, settings: Settings) -> None:
    subject, rec = person(rt)
    quote(rt, subject, "new.hire")
    quote(rt, subject, "lapsed")
    url = f"/v1/collections/persons/records/{rec}?purpose=underwriting"
    fresh = make_staff(rt, clock, "new.hire", ["underwriter"], trained=False).client
    r = fresh.get(url)
    assert r.status_code == 200
    body = r.json()
    # New staff: personal data in the grace period; a government id waits for its course.
    assert body["data"]["last_name"] == "Ortiz" and body["data"]["region"] == "west"
    withheld = {w["field"]: w["reason"] for w in body["withheld"]}
    assert withheld["national_id"] == "training_missing"
    assert withheld["email"] == "purpose_not_allowed"
    for course in ("data-protection", "identity-data"):
        code, _, _ = cli(settings, "training", "record", "new.hire", course, "--completed",
                         (clock.now().date() - timedelta(days=364)).isoformat(),
                         "--evidence", "LMS-4711")
        assert code == 0
    assert fresh.get(url).json()["data"]["national_id"].endswith("1120")
    # Annual training (NYDFS 500.14(a)(3)): a course done 366 days ago has lapsed, once the
    # grace period of a new account is over.
    lapsed = make_staff(rt, clock, "lapsed", ["underwriter"], trained=False)
    rt.users.record_training("lapsed", "data-protection",
                             clock.now().date() - timedelta(days=366))
    clock.advance(days=31)
    log_in(lapsed, clock)
    body = lapsed.client.get(url).json()
    assert "last_name" not in body["data"]
    # Nothing but sensitive fields: the whole read is refused, with the reason.
    s2 = rt.vault.create_subject(SYSTEM).id
    only = rt.vault.create_record(SYSTEM, "persons", s2, {"first_name": "A", "last_name": "B"},
                                  "underwriting").id
    quote(rt, s2, "lapsed")
    r = lapsed.client.get(f"/v1/collections/persons/records/{only}?purpose=underwriting")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "training_expired"


def test_break_glass(rt: Runtime, clock: FixedClock, settings: Settings) -> None:
    subject, rec = person(rt, vip=True)
    url = f"/v1/collections/persons/records/{rec}?purpose=customer_service"
    east = make_staff(rt, clock, "glass", ["call_center_agent"], regions=["east"]).client
    assert east.get(url).status_code == 404
    short = east.post("/v1/auth/break-glass", json={
        "subject_ids": [subject], "justification": "urgent", "minutes": 30})
    assert short.status_code == 422
    too_long = east.post("/v1/auth/break-glass", json={
        "subject_ids": [subject], "justification": "Customer on the phone after a crash",
        "minutes": 90})
    assert too_long.status_code == 422
    granted = east.post("/v1/auth/break-glass", json={
        "subject_ids": [subject], "justification": "Customer on the phone after a crash",
        "minutes": 30})
    assert granted.status_code == 201 and granted.json()["review"] == "pending"
    events = "\n".join(str(r["event"]) for r in table_rows(rt, "audit_events"))
    assert "auth.break_glass" in events and "after a crash" not in events
    body = east.get(url).json()
    # Opened beyond the role's region, but a VIP stays masked (issue 10, finding 5).
    assert body["data"]["national_id"] == "***-**-1120" and SSN not in json.dumps(body)
    assert [u["subject_id"] for u in table_rows(rt, "break_glass_uses")] == [subject]
    _, out, _ = cli(settings, "access", "break-glass", "--pending", "--json")
    assert [g["review"] for g in json.loads(out)["items"]] == ["pending"]
    for _ in range(2):  # stay active: the session must outlive the grant
        clock.advance(minutes=14)
        assert east.get("/v1/auth/me").status_code == 200
    clock.advance(minutes=3)
    r = east.get(url)
    assert r.status_code == 404 and r.json()["error"]["code"] == "record_not_found"


def test_vip_and_employee_records_are_masked_without_explicit_grant(
    rt: Runtime, clock: FixedClock, client: TestClient
) -> None:
    vip_subject, vip = person(rt, vip=True)
    quote(rt, vip_subject, "uw")
    under = make_staff(rt, clock, "uw", ["underwriter"]).client
    body = under.get(f"/v1/collections/persons/records/{vip}?purpose=underwriting").json()
    assert body["data"]["last_name"] != "Ortiz"
    assert body["data"]["date_of_birth"] == "1970"
    assert SSN not in json.dumps(body)
    # The service role holds the explicit grant (sees_vip).
    full = client.get(f"/v1/collections/persons/records/{vip}?purpose=underwriting").json()
    assert full["data"]["last_name"] == "Ortiz"


def test_admin_has_no_customer_data(rt: Runtime, clock: FixedClock, settings: Settings) -> None:
    subject, rec = person(rt)
    _, admin_key = rt.api_keys.create("ops", role="admin")
    admin = TestClient(client_app(rt), raise_server_exceptions=False)
    admin.headers["Authorization"] = f"Bearer {admin_key}"
    for purpose in ("legal_obligation", "customer_service", "underwriting"):
        r = admin.get(f"/v1/collections/persons/records/{rec}?purpose={purpose}")
        assert r.status_code == 403
    assert admin.post("/v1/subjects").status_code == 403
    assert admin.get(f"/v1/subjects/{subject}/records?purpose=legal_obligation"
                     ).status_code == 403
    assert admin.get("/v1/admin/users").status_code == 200
    # A data role through the API is a proposal, and the creator never sees a secret.
    made = admin.post("/v1/admin/users", json={"username": "zed", "roles": ["actuary"]})
    assert made.status_code == 202 and made.json()["status"] == "pending"
    assert "totp_secret" not in made.json() and "enrolment_code" not in made.json()
    made = admin.post("/v1/admin/users", json={"username": "zoe", "roles": ["admin"]})
    assert made.status_code == 201 and "enrolment_code" not in made.json()
    # Separation of duties holds for an admin *user* too: no break-glass into customer data.
    admin_user = make_staff(rt, clock, "root.admin", ["admin"]).client
    r = admin_user.post("/v1/auth/break-glass", json={
        "subject_ids": [subject], "justification": "I just want to have a look here",
        "minutes": 10})
    assert r.status_code == 403
    assert admin_user.get(f"/v1/collections/persons/records/{rec}?purpose=legal_obligation"
                          ).status_code == 403
    # ...and the data roles cannot administer.
    uw = make_staff(rt, clock, "uw2", ["underwriter"]).client
    r = uw.get("/v1/admin/users")
    assert r.status_code == 403


def client_app(rt: Runtime):  # type: ignore[no-untyped-def]
    from fiduciary.api.app import create_app

    return create_app(rt)


def test_scoped_api_key(rt: Runtime) -> None:
    _, rec = person(rt)
    _, key = rt.api_keys.create("reader", role="service", scopes=["read"])
    c = TestClient(client_app(rt), raise_server_exceptions=False)
    c.headers["Authorization"] = f"Bearer {key}"
    assert c.get(f"/v1/collections/persons/records/{rec}?purpose=underwriting"
                 ).status_code == 200
    r = c.patch(f"/v1/collections/persons/records/{rec}?purpose=underwriting",
                json={"data": {"occupation": "Pilot"}})
    assert r.status_code == 403
    assert c.post("/v1/subjects").status_code == 403
    # A write-only key writes, and is told nothing back.
    _, writer = rt.api_keys.create("writer", role="service", scopes=["write"])
    c.headers["Authorization"] = f"Bearer {writer}"
    r = c.patch(f"/v1/collections/persons/records/{rec}?purpose=underwriting",
                json={"data": {"occupation": "Pilot"}})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {}
    assert {"field": "occupation", "reason": "field_not_permitted"} in r.json()["withheld"]
    assert rt.vault.get_record(SYSTEM, "persons", rec, "underwriting"
                               ).data["occupation"] == "Pilot"


def test_consent_based_purpose_needs_consent(client: TestClient, rt: Runtime) -> None:
    _, rec = person(rt)
    r = client.get(f"/v1/collections/persons/records/{rec}?purpose=marketing")
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "consent_required"


def test_no_sensitive_value_in_403_bodies_or_logs(rt: Runtime, clock: FixedClock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    _, rec = person(rt)
    with caplog.at_level(logging.DEBUG):
        east = make_staff(rt, clock, "east2", ["call_center_agent"], regions=["east"]).client
        bodies = [east.get(f"/v1/collections/persons/records/{rec}?purpose={p}").text
                  for p in ("customer_service", "underwriting", "marketing")]
        bodies.append(east.patch(f"/v1/collections/persons/records/{rec}?purpose=billing",
                                 json={"data": {"national_id": SSN}}).text)
        bodies.append(east.post("/v1/collections/persons/search?purpose=customer_service",
                                json={"where": {"national_id": SSN}}).text)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in [*bodies, logged]:
        assert SSN not in text and "1120" not in text and "Ortiz" not in text


def test_access_review_flags_certify_and_revoke(rt: Runtime, clock: FixedClock,
                                                settings: Settings) -> None:
    rt.users.create("never.logged", ["actuary"])
    make_staff(rt, clock, "active.one", ["underwriter"])
    code, out, _ = cli(settings, "access", "review", "--json")
    assert code == 0 and {a["name"] for a in json.loads(out)["accounts"]} >= {"never.logged"}
    # Flags depend on time: read them on the injected clock.
    accounts = {a["name"]: a for a in rt.reviews.review()}
    never = accounts["never.logged"]
    assert "no_mfa" in never["flags"] and "not_reviewed_365d" in never["flags"]
    assert "training_expired" in never["flags"]
    ent = accounts["active.one"]["entitlements"]["underwriter"]["collections"]
    assert ent["persons"]["actions"] == ["read", "search"]
    assert "national_id" in ent["persons"]["fields"]
    assert accounts["active.one"]["flags"] == ["not_reviewed_365d"]
    rt.reviews.decide("active.one", "certified", "ciso")
    clock.advance(days=91)
    accounts = {a["name"]: a for a in rt.reviews.review()}
    assert "not_reviewed_365d" not in accounts["active.one"]["flags"]
    assert "unused_90d" in accounts["active.one"]["flags"]
    assert cli(settings, "access", "revoke", "never.logged", "--reviewer", "ciso",
               "--note", "left the company")[0] == 0
    assert rt.users.get("never.logged").disabled_at is not None
    code, out, _ = cli(settings, "access", "history", "--json")
    assert [(h["account"], h["decision"]) for h in json.loads(out)["items"]] == [
        ("active.one", "certified"), ("never.logged", "revoked")]
