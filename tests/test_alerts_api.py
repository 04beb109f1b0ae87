"""Monitoring alerts over the API and the CLI, replayed as an insider would try to get around
them: reading or closing alerts without the role, triaging or suppressing an alert about
oneself, closing one without a word; and the evidence an alert carries, checked offline as an
examiner would, against the signed checkpoint."""

from __future__ import annotations

import base64
import copy
import json
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from fiduciary.audit import merkle
from fiduciary.audit.events import canonical
from fiduciary.audit.trail import public_key_bytes
from fiduciary.clock import FixedClock, iso
from fiduciary.config import Settings
from fiduciary.ids import new_id
from fiduciary.monitoring.alerts import Finding, insert_finding
from fiduciary.monitoring.pack import Severity
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import metadata
from tests.conftest import Staff, make_staff, table_rows
from tests.test_import_export import cli

PA = "policy_administration"
REASON = "read the file of the customer who is themselves"
#: A customer's surname, typed into a dismissal: it must never be stored or audited in clear.
SURNAME = "Quennell-Brightwater"


def raise_alert(rt: Runtime, clock: FixedClock, about: str, *, detection: str = "self_access",
                subject_ids: list[str] | None = None, event_ids: list[str] | None = None
                ) -> str:
    """An open alert about the staff user ``about``, as the monitor would raise it."""
    user = rt.users.get(about)
    finding = Finding(detection=detection, severity=Severity.HIGH, score=90.0,
                      principal_kind="user", principal_id=user.id, principal_name=about,
                      reason=REASON, dedup_key=new_id(), event_ids=event_ids or [],
                      subject_ids=subject_ids or [])
    with rt.db.write() as conn:
        alert_id = insert_finding(conn, finding, clock.now())
    assert alert_id is not None
    return alert_id


def customer(rt: Runtime, last_name: str = "Moreau") -> str:
    subject = rt.vault.create_subject(SYSTEM).id
    rt.vault.create_record(SYSTEM, "persons", subject, {
        "first_name": "Ines", "last_name": last_name, "email": "ines@example.org",
        "region": "west"}, PA)
    return subject


def status_of(rt: Runtime, alert_id: str) -> str:
    return str(rt.alerts.get(SYSTEM, alert_id)["status"])


def events(rt: Runtime, action: str | None = None) -> list[dict[str, Any]]:
    rows = table_rows(rt, "audit_events")
    found = [json.loads(str(r["event"])) for r in rows if r["event"] is not None]
    return [e for e in found if action is None or e["action"] == action]


def fields(r: Any) -> set[str]:
    return {f["field"] for f in r.json()["error"].get("fields") or []}


def in_90_days(clock: FixedClock, days: float = 30) -> str:
    return iso(clock.now() + timedelta(days=days))


@pytest.fixture
def team(rt: Runtime, clock: FixedClock) -> dict[str, Staff]:
    """Two security analysts (Sam, Sue) and a compliance officer (Cora)."""
    return {"sam": make_staff(rt, clock, "sam", ["security_analyst"]),
            "sue": make_staff(rt, clock, "sue", ["security_analyst"]),
            "cora": make_staff(rt, clock, "cora", ["compliance_officer"])}


def test_roles_without_alerts_can_neither_read_nor_silence_them(
        rt: Runtime, clock: FixedClock, client: TestClient, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    insiders: dict[str, TestClient] = {"service key": client}
    for username, role, regions in (("adj", "claims_adjuster", []),
                                    ("cal", "call_center_agent", ["west"]),
                                    ("root", "admin", [])):
        insiders[username] = make_staff(rt, clock, username, [role], regions).client
    alerts = {name: raise_alert(rt, clock, name, subject_ids=[subject])
              for name in ("adj", "cal", "root")}
    suppression = {"detection": "self_access", "reason": "known", "expires_at":
                   in_90_days(clock)}
    for name, c in insiders.items():
        own = alerts.get(name, alerts["adj"])
        attempts = [
            c.get("/v1/alerts"), c.get(f"/v1/alerts?principal={name}"),
            c.get(f"/v1/alerts/{own}"),
            c.post(f"/v1/alerts/{own}/dismiss", json={"explanation": "false positive"}),
            c.post(f"/v1/alerts/{own}/escalate"),
            c.post(f"/v1/alerts/{own}/assign", json={"username": "sue"}),
            c.post(f"/v1/alerts/{own}/comments", json={"text": "nothing to see"}),
            # A malformed request is refused before anything is said about its form.
            c.post(f"/v1/alerts/{own}/dismiss", json={}),
            c.get("/v1/monitoring/suppressions"),
            c.post("/v1/monitoring/suppressions", json=suppression),
            c.post("/v1/monitoring/suppressions", json={**suppression, "principal": name}),
            c.get("/v1/monitoring/watchlist"),
            c.post("/v1/monitoring/watchlist", json={"subject_id": subject, "reason": "vip"}),
            c.delete(f"/v1/monitoring/watchlist/{subject}"),
        ]
        for r in attempts:
            assert r.status_code == 403, (name, r.request.method, r.request.url, r.text)
            assert r.json()["error"]["reason"] == "field_not_permitted"
            assert REASON not in r.text and own not in r.text
    assert {status_of(rt, a) for a in alerts.values()} == {"open"}
    assert rt.alerts.suppressions(SYSTEM) == [] and rt.alerts.watchlist(SYSTEM) == []
    assert table_rows(rt, "alert_actions") == []


def test_a_compliance_officer_reads_alerts_but_does_not_triage_them(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    alert = raise_alert(rt, clock, "sam", subject_ids=[subject])
    cora = team["cora"].client
    r = cora.get("/v1/alerts")
    assert r.status_code == 200, r.text
    assert [a["id"] for a in r.json()["items"]] == [alert]
    assert cora.get(f"/v1/alerts/{alert}").status_code == 200
    assert cora.get("/v1/monitoring/suppressions").json() == {"items": []}
    assert cora.get("/v1/monitoring/watchlist").json() == {"items": []}
    for r in (cora.post(f"/v1/alerts/{alert}/dismiss", json={"explanation": "fine"}),
              cora.post(f"/v1/alerts/{alert}/escalate", json={"note": "look"}),
              cora.post(f"/v1/alerts/{alert}/assign", json={"username": "sue"}),
              cora.post(f"/v1/alerts/{alert}/comments", json={"text": "seen"}),
              cora.post("/v1/monitoring/suppressions", json={
                  "detection": "self_access", "principal": "sam", "reason": "known",
                  "expires_at": in_90_days(clock)}),
              cora.post("/v1/monitoring/watchlist", json={"subject_id": subject,
                                                          "reason": "litigation"}),
              cora.delete(f"/v1/monitoring/watchlist/{subject}")):
        assert r.status_code == 403, (r.request.url, r.text)
    assert status_of(rt, alert) == "open"
    assert rt.alerts.suppressions(SYSTEM) == [] and rt.alerts.watchlist(SYSTEM) == []


def test_the_alert_json_carries_who_what_and_evidence(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    event_ids = [e["id"] for e in events(rt, "record.create")]
    older = raise_alert(rt, clock, "sue", detection="off_hours")
    clock.advance(minutes=5)
    alert = raise_alert(rt, clock, "sam", subject_ids=[subject], event_ids=event_ids)
    cora = team["cora"].client
    r = cora.get("/v1/alerts")
    assert [a["id"] for a in r.json()["items"]] == [alert, older]  # newest first
    item = r.json()["items"][0]
    assert item["principal"] == {"kind": "user", "id": rt.users.get("sam").id,
                                 "username": "sam"}
    assert {k: item[k] for k in ("detection", "severity", "score", "status", "subject_ids",
                                 "event_ids", "reason", "assignee")} == {
        "detection": "self_access", "severity": "high", "score": 90.0, "status": "open",
        "subject_ids": [subject], "event_ids": event_ids, "reason": REASON, "assignee": None}
    assert [e["event_id"] for e in item["evidence"]] == event_ids
    detail = cora.get(f"/v1/alerts/{alert}").json()
    assert detail == {**item, "timeline": []}
    assert detail == rt.alerts.get(SYSTEM, alert)  # nothing the service returns is dropped
    for query, expected in (("principal=sam", [alert]), ("detection=off_hours", [older]),
                            (f"subject_id={subject}", [alert]), ("status=dismissed", []),
                            ("limit=1", [alert])):
        r = cora.get(f"/v1/alerts?{query}")
        assert [a["id"] for a in r.json()["items"]] == expected, query
    for query, field in (("status=closed", "status"), ("detection=mind_reading", "detection"),
                         ("limit=0", "limit"), ("limit=501", "limit")):
        r = cora.get(f"/v1/alerts?{query}")
        assert r.status_code == 422 and field in fields(r), (query, r.text)
    for unknown in (new_id(), "not-an-id", "1' OR '1'='1"):
        r = cora.get(f"/v1/alerts/{unknown}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "alert_not_found"


def test_errors_do_not_echo_what_was_typed_where_an_id_belongs(
        rt: Runtime, team: dict[str, Staff]) -> None:
    sue = team["sue"].client
    ssn = "078-05-1120"
    for r in (sue.get(f"/v1/alerts/{ssn}"), sue.delete(f"/v1/monitoring/watchlist/{ssn}"),
              sue.post(f"/v1/alerts/{ssn}/dismiss", json={"explanation": "x"})):
        assert r.status_code == 404, r.text
        assert ssn not in r.text, r.request.url


def test_nobody_triages_an_alert_about_themselves(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    alert = raise_alert(rt, clock, "sam")
    sam, sue = team["sam"].client, team["sue"].client
    for r in (sam.post(f"/v1/alerts/{alert}/dismiss", json={"explanation": "that was me, ok"}),
              sam.post(f"/v1/alerts/{alert}/escalate", json={"note": "to nobody"}),
              sam.post(f"/v1/alerts/{alert}/escalate"),
              sam.post(f"/v1/alerts/{alert}/assign", json={"username": "sam"}),
              sam.post(f"/v1/alerts/{alert}/assign", json={"username": "sue"}),
              sam.post(f"/v1/alerts/{alert}/comments", json={"text": "approved by me"}),
              # Nor is it handed to the person it is about by someone else.
              sue.post(f"/v1/alerts/{alert}/assign", json={"username": "sam"})):
        assert r.status_code == 403, (r.request.url, r.text)
        assert r.json()["error"]["reason"] == "separation_of_duties"
    after = rt.alerts.get(SYSTEM, alert)
    assert (after["status"], after["assignee"], after["timeline"]) == ("open", None, [])
    assert not [e for e in events(rt) if e["action"].startswith("alert.")]
    # Another analyst triages it.
    r = sue.post(f"/v1/alerts/{alert}/assign", json={"username": "sue"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["assignee"]) == ("triaged", "sue")
    # Only someone who triages alerts is assigned one.
    r = sue.post(f"/v1/alerts/{alert}/assign", json={"username": "cora"})
    assert r.status_code == 422 and fields(r) == {"username"}
    r = sue.post(f"/v1/alerts/{alert}/assign", json={"username": "nobody"})
    assert r.status_code == 404


def test_nobody_suppresses_alerts_about_themselves(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    sam, sue = team["sam"].client, team["sue"].client
    body = {"detection": "off_hours", "principal": "sam", "reason": "on call this month",
            "expires_at": in_90_days(clock)}
    r = sam.post("/v1/monitoring/suppressions", json=body)
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    assert rt.alerts.suppressions(SYSTEM) == []
    r = sue.post("/v1/monitoring/suppressions", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert {k: made[k] for k in ("detection", "principal", "subject_id", "reason",
                                 "created_by", "expires_at")} == {
        "detection": "off_hours", "principal": "sam", "subject_id": None,
        "reason": "on call this month", "created_by": "sue", "expires_at": body["expires_at"]}
    assert team["cora"].client.get("/v1/monitoring/suppressions").json() == {"items": [made]}


def test_suppressions_are_bounded(rt: Runtime, clock: FixedClock,
                                  team: dict[str, Staff]) -> None:
    sue = team["sue"].client
    body = {"detection": "off_hours", "principal": "sam", "reason": "on call"}
    for expires in (iso(clock.now() - timedelta(seconds=1)), iso(clock.now()),
                    in_90_days(clock, 90.001), in_90_days(clock, 365), "9999-12-31T23:59:59Z"):
        r = sue.post("/v1/monitoring/suppressions", json={**body, "expires_at": expires})
        assert r.status_code == 422 and fields(r) == {"expires_at"}, (expires, r.text)
    for broken, field in (({"detection": "mind_reading"}, "detection"),
                          ({"detection": None}, "detection"),
                          ({"reason": "   "}, "reason"),
                          ({"subject_id": "someone"}, "subject_id"),
                          ({"expires_at": "next week"}, "expires_at")):
        r = sue.post("/v1/monitoring/suppressions",
                     json={**body, "expires_at": in_90_days(clock), **broken})
        assert r.status_code == 422 and field in fields(r), (broken, r.text)
        assert "someone" not in r.text and "next week" not in r.text
    assert rt.alerts.suppressions(SYSTEM, active_only=False) == []
    r = sue.post("/v1/monitoring/suppressions", json={**body, "expires_at": in_90_days(
        clock, 90)})
    assert r.status_code == 201, r.text


def test_the_watch_list(rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    make_staff(rt, clock, "adj", ["claims_adjuster"])
    sam, sue = team["sam"].client, team["sue"].client
    # Listing oneself as the expected handler of a watched customer would hide one's reads.
    r = sam.post("/v1/monitoring/watchlist", json={
        "subject_id": subject, "category": "litigant", "reason": "suing us",
        "handlers": ["adj", "sam"]})
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    assert rt.alerts.watchlist(SYSTEM) == []
    for broken, field in (({"category": "enemy"}, "category"), ({"handlers": [""]}, "handlers"),
                          ({"subject_id": "x"}, "subject_id"), ({"reason": ""}, "reason")):
        r = sue.post("/v1/monitoring/watchlist", json={
            "subject_id": subject, "reason": "suing us", **broken})
        assert r.status_code == 422 and field in fields(r), (broken, r.text)
    r = sue.post("/v1/monitoring/watchlist", json={"subject_id": new_id(), "reason": "x"})
    assert r.status_code == 404
    r = sue.post("/v1/monitoring/watchlist", json={"subject_id": subject, "reason": "x",
                                                   "handlers": ["nobody"]})
    assert r.status_code == 404
    assert rt.alerts.watchlist(SYSTEM) == []
    r = sue.post("/v1/monitoring/watchlist", json={
        "subject_id": subject, "category": "litigant", "reason": "suing us",
        "handlers": ["adj"]})
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in ("subject_id", "category", "handlers", "reason",
                                     "added_by")} == {
        "subject_id": subject, "category": "litigant", "handlers": ["adj"],
        "reason": "suing us", "added_by": "sue"}
    assert team["cora"].client.get("/v1/monitoring/watchlist").json() == {"items": [r.json()]}
    r = sue.delete(f"/v1/monitoring/watchlist/{subject}")
    assert r.status_code == 204 and r.content == b""
    assert sue.delete(f"/v1/monitoring/watchlist/{subject}").status_code == 404
    assert rt.alerts.watchlist(SYSTEM) == []


def test_a_dismissal_needs_an_explanation_and_happens_once(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    alert = raise_alert(rt, clock, "sam")
    sue = team["sue"].client
    for body in ({}, {"explanation": ""}, {"explanation": "   \n"}, {"explanation": None},
                 {"explanation": "x" * 4001}):
        r = sue.post(f"/v1/alerts/{alert}/dismiss", json=body)
        assert r.status_code == 422 and fields(r) == {"explanation"}, (body, r.text)
    after = rt.alerts.get(SYSTEM, alert)
    assert (after["status"], after["timeline"]) == ("open", [])
    assert events(rt, "alert.dismiss") == []
    r = sue.post(f"/v1/alerts/{alert}/dismiss", json={"explanation": "a scheduled test"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "dismissed"
    for again in (sue.post(f"/v1/alerts/{alert}/dismiss", json={"explanation": "again"}),
                  sue.post(f"/v1/alerts/{alert}/escalate", json={"note": "changed my mind"})):
        assert again.status_code == 409, again.text
        assert again.json()["error"]["reason"] == "alert_closed"
    timeline = team["cora"].client.get(f"/v1/alerts/{alert}").json()["timeline"]
    assert [(t["action"], t["actor"], t["text"]) for t in timeline] == [
        ("dismiss", "sue", "a scheduled test")]
    assert len(events(rt, "alert.dismiss")) == 1


def test_free_text_naming_a_customer_is_sealed_and_digested(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt, SURNAME)
    alert = raise_alert(rt, clock, "sam", subject_ids=[subject])
    sue = team["sue"].client
    text = f"Spoke to {SURNAME}'s broker: the access was requested"
    assert sue.post(f"/v1/alerts/{alert}/comments", json={"text": text}).status_code == 200
    r = sue.post(f"/v1/alerts/{alert}/dismiss", json={"explanation": text})
    assert r.status_code == 200, r.text
    assert SURNAME not in r.text  # the triaged alert does not repeat it
    assert sue.post("/v1/monitoring/watchlist", json={
        "subject_id": subject, "category": "vip", "reason": text}).status_code == 201
    assert sue.post("/v1/monitoring/suppressions", json={
        "detection": "off_hours", "subject_id": subject, "reason": text,
        "expires_at": in_90_days(clock)}).status_code == 201
    rt.trail.sequence(force_checkpoint=True)
    # It reads back, for those who read alerts.
    timeline = team["cora"].client.get(f"/v1/alerts/{alert}").json()["timeline"]
    assert [t["text"] for t in timeline] == [text, text]
    # Nowhere in the database in clear: not in any text or binary column of any table.
    with rt.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for column, value in row._mapping.items():
                    if isinstance(value, bytes | memoryview):
                        assert SURNAME.encode() not in bytes(value), (table.name, column)
                    else:
                        assert SURNAME not in str(value), (table.name, column)
    # The audit trail keeps a digest of each text, never the text.
    triage = [e for e in events(rt) if e["action"] in (
        "alert.comment", "alert.dismiss", "watchlist.add", "monitoring.suppress")]
    assert len(triage) == 4
    digests = {json.dumps(e["details"]) for e in triage}
    assert all("digest" in d for d in digests)
    assert not [e for e in events(rt) if SURNAME in json.dumps(e) or "broker" in json.dumps(e)]


def test_reading_and_triaging_alerts_is_audited(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    alert = raise_alert(rt, clock, "sam", subject_ids=[subject])
    other = raise_alert(rt, clock, "sue", detection="off_hours")
    cora, sam, sue = team["cora"].client, team["sam"].client, team["sue"].client
    cora.get("/v1/alerts?detection=self_access")
    cora.get(f"/v1/alerts/{alert}")
    assert sue.post(f"/v1/alerts/{alert}/assign", json={"username": "sue"}).status_code == 200
    assert sue.post(f"/v1/alerts/{alert}/comments", json={"text": "looking"}).status_code == 200
    assert sue.post(f"/v1/alerts/{alert}/escalate").status_code == 200
    assert sam.post(f"/v1/alerts/{other}/dismiss", json={"explanation": "ok"}
                    ).status_code == 200
    assert sue.post("/v1/monitoring/watchlist", json={"subject_id": subject, "reason": "x"}
                    ).status_code == 201
    assert sue.delete(f"/v1/monitoring/watchlist/{subject}").status_code == 204
    assert sue.post("/v1/monitoring/suppressions", json={
        "detection": "off_hours", "principal": "sam", "reason": "on call",
        "expires_at": in_90_days(clock)}).status_code == 201
    reads = events(rt, "alerts.read")
    assert [(e["actor"]["name"], e["details"]) for e in reads] == [
        ("cora", {"filters": {"detection": "self_access"}, "result_count": 1}),
        ("cora", {"alert_id": alert})]
    triage = [(e["actor"]["name"], e["action"], e["details"].get("alert_id"))
              for e in events(rt) if e["action"].startswith("alert.")]
    assert triage == [("sue", "alert.assign", alert), ("sue", "alert.comment", alert),
                      ("sue", "alert.escalate", alert), ("sam", "alert.dismiss", other)]
    assert [(e["actor"]["name"], e["subject_ids"]) for e in events(rt) if e["action"] in (
        "watchlist.add", "watchlist.remove")] == [("sue", [subject]), ("sue", [subject])]
    assert [e["actor"]["name"] for e in events(rt, "monitoring.suppress")] == ["sue"]


def test_alert_evidence_verifies_offline_against_the_signed_checkpoint(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    rt.vault.list_subject_records(SYSTEM, subject, PA)
    event_ids = [e["id"] for e in events(rt) if subject in e["subject_ids"]]
    assert len(event_ids) >= 3
    alert = raise_alert(rt, clock, "sam", subject_ids=[subject], event_ids=event_ids)
    cora = team["cora"].client
    # Before a checkpoint covers them, the events come without a proof.
    before = cora.get(f"/v1/alerts/{alert}").json()
    assert before["checkpoint"] is None
    assert {(e["checkpoint_size"], len(e["inclusion_proof"])) for e in before["evidence"]} == {
        (None, 0)}
    rt.trail.sequence(force_checkpoint=True)
    body = cora.get(f"/v1/alerts/{alert}").json()
    cp = body["checkpoint"]
    assert base64.b64decode(cp["public_key"]) == public_key_bytes(rt.trail.key)
    # Everything below uses the alert's JSON alone, as an examiner would.
    public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(cp["public_key"]))
    signed = canonical({"size": cp["size"], "root": cp["root"], "timestamp": cp["timestamp"]})
    public_key.verify(base64.b64decode(cp["signature"]), signed)
    root = base64.b64decode(cp["root"])

    def verify(item: dict[str, Any]) -> None:
        merkle.verify_inclusion(merkle.leaf_hash(canonical(item["event"])), item["leaf_index"],
                                item["checkpoint_size"],
                                [bytes.fromhex(p) for p in item["inclusion_proof"]], root)

    assert [e["event_id"] for e in body["evidence"]] == event_ids
    for item in body["evidence"]:
        assert item["checkpoint_size"] == cp["size"] and item["event"]["id"] == item["event_id"]
        verify(item)
        # One character changed anywhere in the event and the proof fails.
        for key in ("action", "time", "id"):
            tampered = copy.deepcopy(item)
            value = tampered["event"][key]
            tampered["event"][key] = value[:-1] + ("0" if value[-1] != "0" else "1")
            with pytest.raises(merkle.ProofError):
                verify(tampered)
        tampered = copy.deepcopy(item)
        tampered["event"]["subject_ids"] = []
        with pytest.raises(merkle.ProofError):
            verify(tampered)
    # A checkpoint that is not the one signed does not verify either.
    forged = canonical({"size": cp["size"] + 1, "root": cp["root"],
                        "timestamp": cp["timestamp"]})
    with pytest.raises(InvalidSignature):
        public_key.verify(base64.b64decode(cp["signature"]), forged)


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_triages_alerts(rt: Runtime, settings: Settings, clock: FixedClock) -> None:
    make_staff(rt, clock, "sam", ["security_analyst"])
    make_staff(rt, clock, "sue", ["security_analyst"])
    older = raise_alert(rt, clock, "sue")
    clock.advance(minutes=1)
    alert = raise_alert(rt, clock, "sam")
    code, out, err = cli(settings, "alerts", "list", "--json")
    assert code == 0, err
    assert [a["id"] for a in json.loads(out)["items"]] == [alert, older]
    code, out, _ = cli(settings, "alerts", "list", "--status", "open", "--detection",
                       "self_access")
    assert code == 0 and alert[:8] in out
    code, _, err = cli(settings, "alerts", "list", "--status", "shut")
    assert code == 2 and "status" in err
    code, out, err = cli(settings, "alerts", "assign", alert, "sue")
    assert code == 0, err
    code, out, err = cli(settings, "alerts", "dismiss", alert, "--explanation",
                         "a scheduled penetration test")
    assert code == 0, err
    assert "dismissed" in out
    code, _, err = cli(settings, "alerts", "dismiss", alert, "--explanation", "again")
    assert code == 2 and "already dismissed" in err
    code, _, err = cli(settings, "alerts", "dismiss", older, "--explanation", " ")
    assert code == 2 and "explanation" in err
    code, out, _ = cli(settings, "alerts", "show", alert, "--json")
    shown = json.loads(out)
    assert shown["status"] == "dismissed" and shown["assignee"] == "sue"
    assert [(t["action"], t["text"]) for t in shown["timeline"]] == [
        ("assign", None), ("dismiss", "a scheduled penetration test")]
    code, out, _ = cli(settings, "alerts", "show", alert)
    assert code == 0 and "a scheduled penetration test" in out
    code, _, err = cli(settings, "alerts", "escalate", older, "--note", "for HR")
    assert code == 0, err
    assert status_of(rt, older) == "escalated"
    code, _, err = cli(settings, "alerts", "show", new_id())
    assert code == 2 and "not found" in err
    # The operator's reads and actions are in the trail, in their name.
    assert {e["actor"]["kind"] for e in events(rt) if e["action"].startswith("alert")} == {
        "system"}


def test_cli_keeps_the_watch_list(rt: Runtime, settings: Settings, clock: FixedClock) -> None:
    subject = customer(rt)
    make_staff(rt, clock, "adj", ["claims_adjuster"])
    code, out, err = cli(settings, "watchlist", "add", subject, "--reason", "litigation",
                         "--category", "litigant", "--handler", "adj")
    assert code == 0, err
    [entry] = rt.alerts.watchlist(SYSTEM)
    assert (entry["category"], entry["handlers"], entry["reason"]) == (
        "litigant", ["adj"], "litigation")
    code, out, _ = cli(settings, "watchlist", "list")
    assert code == 0 and subject[:8] in out
    code, _, err = cli(settings, "watchlist", "add", subject, "--reason", "x", "--category",
                       "enemy")
    assert code == 2 and "category" in err
    code, _, err = cli(settings, "watchlist", "remove", subject)
    assert code == 0, err
    assert rt.alerts.watchlist(SYSTEM) == []
    code, _, err = cli(settings, "watchlist", "remove", subject)
    assert code == 2


def test_cli_links_a_staff_user_to_their_customer_record(
        rt: Runtime, settings: Settings) -> None:
    subject = customer(rt)

    def profile(username: str) -> tuple[object, object]:
        [row] = [r for r in table_rows(rt, "users") if r["username"] == username]
        return row["subject_id"], row["surname_digest"]

    code, _, err = cli(settings, "users", "create", "ann", "--role", "claims_adjuster",
                       "--subject-id", subject, "--last-name", "Moreau", "--json")
    assert code == 0, err
    linked, digest = profile("ann")
    assert linked == subject
    assert digest == rt.profiles.surname_digest("Moreau")
    assert b"Moreau" not in bytes(digest)  # type: ignore[arg-type]
    # A wrong profile stops the command before the user exists.
    code, _, err = cli(settings, "users", "create", "bob", "--role", "claims_adjuster",
                       "--subject-id", "me")
    assert code == 2 and "subject_id" in err
    assert not [r for r in table_rows(rt, "users") if r["username"] == "bob"]
    code, _, err = cli(settings, "users", "create", "bob", "--role", "claims_adjuster")
    assert code == 0, err
    assert profile("bob") == (None, None)
    code, _, err = cli(settings, "users", "link-subject", "bob", subject)
    assert code == 0, err
    assert profile("bob")[0] == subject
    code, _, err = cli(settings, "users", "link-subject", "bob", "--unlink")
    assert code == 0, err
    assert profile("bob")[0] is None
    for args in (("bob",), ("bob", subject, "--unlink")):
        assert cli(settings, "users", "link-subject", *args)[0] == 2
    code, _, err = cli(settings, "users", "link-subject", "bob", new_id())
    assert code == 2 and "not found" in err
    code, _, err = cli(settings, "users", "link-subject", "nobody", subject)
    assert code == 2 and "not found" in err
    linked_events = events(rt, "user.link_subject")
    assert [(e["details"]["username"], e["details"]["linked"]) for e in linked_events] == [
        ("ann", True), ("bob", True), ("bob", False)]


def test_cli_monitor_run_reports_what_it_did_once(
        rt: Runtime, settings: Settings, clock: FixedClock) -> None:
    subject = customer(rt)
    agent = make_staff(rt, clock, "cal", ["call_center_agent"], ["west"]).client
    rt.alerts.watch(SYSTEM, subject, "a journalist", "journalist")
    [person] = rt.vault.list_subject_records(SYSTEM, subject, PA)
    r = agent.get(f"/v1/collections/persons/records/{person.id}?purpose=customer_service")
    assert r.status_code in (200, 404), r.text  # either way, the access was attempted
    code, out, err = cli(settings, "monitor", "run", "--json")
    assert code == 0, err
    first = json.loads(out.strip().splitlines()[-1])
    assert set(first) == {"events", "alerts", "suppressed"}
    assert first["events"] > 0 and first["alerts"] >= 1
    code, out, err = cli(settings, "monitor", "run", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["alerts"] == 0
    code, out, err = cli(settings, "monitor", "run")
    assert code == 0 and "0 alerts" in out
