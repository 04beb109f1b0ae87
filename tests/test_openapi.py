"""The contract /openapi.json publishes: short stable operation ids, a typed success response
and the documented error body on every route, bearer security wherever a credential is needed
(and every such route refusing a request without one); and typed responses that drop nothing
the services return."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fiduciary.api.app import create_app
from fiduciary.clock import FixedClock
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from tests.conftest import make_staff

OPERATIONS = {
    "healthz", "login", "logout", "logout_all", "change_password", "me", "break_glass",
    "create_subject", "get_subject", "list_subject_records",
    "create_record", "get_record", "update_record", "delete_record", "search_records",
    "verify_record",
    "get_datamap",
    "list_audit_events", "get_audit_checkpoint", "get_inclusion_proof", "get_consistency_proof",
    "get_ropa", "record_consent", "list_consents",
    "create_dsr", "list_dsr", "get_dsr", "download_dsr_package", "verify_dsr", "acknowledge_dsr",
    "extend_dsr", "start_dsr", "fulfil_dsr", "deny_dsr",
    "list_users", "create_user", "disable_user", "list_api_keys", "create_api_key",
    "revoke_api_key", "list_break_glass_reviews", "review_break_glass", "enrol",
    "set_user_roles", "re_enrol_user", "list_approvals", "approve",
    "reject",
    "list_alerts", "get_alert", "dismiss_alert", "escalate_alert", "assign_alert",
    "comment_alert", "list_suppressions", "create_suppression", "list_watchlist",
    "watch_subject", "unwatch_subject",
    "create_incident", "list_incidents", "get_incident", "set_incident_status",
    "update_incident_facts", "scope_incident", "list_affected", "file_obligation",
    "set_obligation_not_required", "list_notices", "render_letters", "get_letter_batch",
    "list_reviews", "start_review_campaign", "decide_review_item",
    "my_training", "attempt_training", "training_status", "training_statements",
}
# The speak-up channel: the reporter has no login (the receipt is the credential).
OPERATIONS |= {"submit_speakup_report", "get_speakup_thread", "post_speakup_message",
               "list_speakup_reports", "get_speakup_report", "acknowledge_speakup_report",
               "give_speakup_feedback", "close_speakup_report", "list_speakup_alerts"}
# The compliance posture (issue 14).
OPERATIONS |= {"list_control_results", "get_control_history", "record_attestation"}
# OSCAL, the NYDFS certification draft and the CCPA metrics (issue 14 items 4-5).
OPERATIONS |= {"get_compliance_oscal", "get_nydfs_certification", "get_ccpa_metrics"}
# The evidence pack (issue 14 item 3).
OPERATIONS |= {"download_evidence_pack"}
PUBLIC = {"healthz", "login", "enrol", "submit_speakup_report", "get_speakup_thread",
          "post_speakup_message"}
PA = "policy_administration"


@pytest.fixture
def spec(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("FIDUCIARY_BENCH_ENDPOINTS", "true")
    return create_app().openapi()  # the document needs no runtime


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items()
            for method, op in ops.items()]


def test_every_operation_has_a_short_stable_id(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids))
    assert set(ids) == OPERATIONS | {"get_plain_record"}
    assert not [i for i in ids if "_v1_" in i or "_get" in i or "_post" in i]


def _typed(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """A named model with properties, or a declared non-object type."""
    if "$ref" in schema:
        named = components[schema["$ref"].rsplit("/", 1)[1]]
        return bool(named.get("properties"))
    return schema.get("type") not in (None, "object")


def test_every_success_response_is_typed(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    for method, path, op in operations(spec):
        ok = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        # A change that may wait for a second person's approval also declares its 202.
        if len(ok) == 2 and "202" in ok:
            proposal = ok.pop("202")
            for media, body in proposal["content"].items():
                assert _typed(body["schema"], components), (method, path, media, body)
        assert len(ok) == 1, (method, path, ok)
        [(status, response)] = ok.items()
        if status == "204":
            assert "content" not in response, (method, path)
            continue
        content = response["content"]
        assert content, (method, path)
        for media, body in content.items():
            assert _typed(body["schema"], components), (method, path, media, body)


def test_documented_errors_carry_the_error_body(spec: dict[str, Any]) -> None:
    body = spec["components"]["schemas"]["ErrorBody"]
    assert set(body["properties"]) == {"error"}
    for method, path, op in operations(spec):
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        if op["operationId"] not in PUBLIC:
            assert "401" in errors, (method, path)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in errors, (method, path)
        for r in errors.values():
            assert r["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"}, (method, path)


def test_every_route_but_login_and_healthz_needs_a_credential(spec: dict[str, Any],
                                                              rt: Runtime) -> None:
    anon = TestClient(create_app(rt), raise_server_exceptions=False)
    for method, path, op in operations(spec):
        secured = "security" in op
        assert secured == (op["operationId"] not in PUBLIC), (method, path)
        if not secured or op["operationId"] == "get_plain_record":
            continue
        url = path.format(**{p["name"]: "x" for p in op.get("parameters", [])
                             if p["in"] == "path"})
        for headers in ({}, {"Authorization": "Bearer fdy_unknown_key"}):
            # Without parameters or body: the refusal comes before the 422.
            r = anon.request(method, url, headers=headers)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthenticated"


def test_responses_keep_every_key_the_services_return(client: TestClient, rt: Runtime,
                                                      clock: FixedClock) -> None:
    subject = client.post("/v1/subjects").json()["id"]
    r = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": subject, "data": {"first_name": "Ada", "last_name": "Byron"}})
    assert r.status_code == 201, r.text
    stored = rt.vault.get_record(SYSTEM, "persons", r.json()["id"], PA)
    assert r.json() == stored.as_dict()
    r = client.post(f"/v1/subjects/{subject}/consents", json={
        "purpose": "marketing", "granted": True, "notice_version": "2026-01",
        "method": "web_form"})
    assert r.status_code == 201, r.text
    [entry] = rt.consent.read(SYSTEM, subject)[1]
    assert r.json() == entry.as_dict()
    dpo = make_staff(rt, clock, "dee", ["dpo"]).client
    r = dpo.post("/v1/dsr", json={"subject_id": subject, "type": "access", "regime": "gdpr",
                                  "received_at": "2026-01-30"})
    assert r.status_code == 201, r.text
    assert "steps" not in r.json()
    request = rt.dsr.get(r.json()["id"])
    assert dpo.get(f"/v1/dsr/{request.id}").json() == request.as_dict(clock.now())
    assert request.steps and "steps" in request.as_dict(clock.now())
