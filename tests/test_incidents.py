"""Issue 12: incidents over the API and the CLI. The scope of a breach computed from the audit
trail — decrypted, masked, ciphertext only — checked offline against the signed checkpoint as
an examiner would; the legal clocks it starts, filed once or waived with a reason; the
register attacked by roles that must not read or run it; free text sealed; letters rendered
only by a caller the policy lets read a person's address; alerts escalated into incidents."""

from __future__ import annotations

import base64
import copy
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from fiduciary.api.app import create_app
from fiduciary.audit import merkle
from fiduciary.audit.events import canonical
from fiduciary.clock import FixedClock, iso
from fiduciary.config import Settings
from fiduciary.ids import new_id
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import metadata
from tests.conftest import Staff, make_staff, table_rows
from tests.test_alerts_api import events, fields, raise_alert
from tests.test_import_export import cli

SSN = "078-05-1120"
#: A customer's surname typed into an incident: never stored or audited in clear.
SURNAME = "Quennell-Brightwater"
LETTER = {"what_happened": "An account was used to open customer files.",
          "what_we_are_doing": "We closed the account and reviewed every file it opened.",
          "likely_consequences": "The information could be used to impersonate you.",
          "law_enforcement_delay": False, "services_offer": ""}


def customer(rt: Runtime, last_name: str, *, state: str | None = None,
             country: str = "US", region: str = "west", adjuster: str | None = None
             ) -> dict[str, str]:
    """A customer with a persons record (address, SSN) and a payment method; a claim
    assigned to ``adjuster`` if given."""
    v = rt.vault
    s = v.create_subject(SYSTEM).id
    person: dict[str, Any] = {"first_name": "Vera", "last_name": last_name,
                              "national_id": SSN, "email": "vera@example.org",
                              "address_line": "1 Main Street", "city": "Springfield",
                              "postal_code": "10001", "country": country, "region": region}
    if state:
        person["state"] = state
    ids = {"subject": s,
           "person": v.create_record(SYSTEM, "persons", s, person, "legal_obligation").id,
           "payment": v.create_record(SYSTEM, "payment_methods", s, {
               "kind": "bank_account", "iban": "DE89370400440532013000"}, "billing").id}
    if adjuster:
        v.create_record(SYSTEM, "policies", s, {
            "policy_number": f"POL-{last_name}", "product": "auto", "status": "active"},
            "legal_obligation")
        v.create_record(SYSTEM, "claims", s, {
            "claim_number": f"CLM-{last_name}", "policy_number": f"POL-{last_name}",
            "status": "open", "loss_date": "2026-01-03", "assigned_adjuster": adjuster},
            "claims_handling")
    return ids


def record_url(collection: str, record_id: str, purpose: str) -> str:
    return f"/v1/collections/{collection}/records/{record_id}?purpose={purpose}"


def open_incident(c: TestClient, clock: FixedClock, **body: Any) -> dict[str, Any]:
    r = c.post("/v1/incidents", json={
        "title": "Claims account used out of hours", "kind": "unauthorized_access",
        "discovered_at": iso(clock.now() - timedelta(hours=2)), **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def window(clock: FixedClock) -> dict[str, str]:
    return {"from": iso(clock.now() - timedelta(hours=3)),
            "to": iso(clock.now() + timedelta(hours=1))}


def lost_backup(keys: bool = False) -> dict[str, Any]:
    return {"principals": [], "keys_compromised": keys}


def obligation(incident: dict[str, Any], rule_id: str) -> dict[str, Any]:
    [found] = [o for o in incident["obligations"] if o["rule_id"] == rule_id]
    return dict(found)


@pytest.fixture
def team(rt: Runtime, clock: FixedClock) -> dict[str, Staff]:
    """A security analyst (Sam), a DPO (Dee) and a compliance officer (Cora)."""
    return {"sam": make_staff(rt, clock, "sam", ["security_analyst"]),
            "dee": make_staff(rt, clock, "dee", ["dpo"]),
            "cora": make_staff(rt, clock, "cora", ["compliance_officer"])}


# -- scope -----------------------------------------------------------------------------------
def test_a_compromised_account_exposed_what_its_audit_events_say(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    ada = customer(rt, "Ada", state="NY", adjuster="adj")
    bea = customer(rt, "Bea", state="CA", region="west")
    carl = customer(rt, "Carl", country="DE")
    customer(rt, "Dora", state="TX")  # nobody compromised touched her
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"]).client
    cal = make_staff(rt, clock, "cal", ["call_center_agent"], ["west"]).client
    leaked_key, token = rt.api_keys.create("crm")
    crm = TestClient(create_app(rt), raise_server_exceptions=False)
    crm.headers["Authorization"] = f"Bearer {token}"
    # The adjuster reads the claimant's file in clear (the SSN only as its last four).
    r = adj.get(record_url("persons", ada["person"], "claims_handling"))
    assert r.status_code == 200 and r.json()["data"]["last_name"] == "Ada", r.text
    assert r.json()["data"]["national_id"] != SSN
    # The agent sees the account number masked: only masked data went out.
    r = cal.get(record_url("payment_methods", bea["payment"], "billing"))
    assert r.status_code == 200 and r.json()["data"]["iban"].endswith("3000"), r.text
    assert r.json()["data"]["iban"] != "DE89370400440532013000"
    # The integration's key reads everything in clear.
    r = crm.get(record_url("persons", carl["person"], "policy_administration"))
    assert r.status_code == 200 and r.json()["data"]["national_id"] == SSN, r.text

    sam = team["sam"].client
    incident = open_incident(sam, clock)
    body = {"principals": [{"kind": "user", "username": "adj"},
                           {"kind": "user", "username": "cal"},
                           {"kind": "api_key", "id": leaked_key.id}], **window(clock)}
    r = sam.post(f"/v1/incidents/{incident['id']}/scope", json=body)
    assert r.status_code == 200, r.text
    scope = r.json()
    assert {k: scope[k] for k in ("subjects", "records", "classifications",
                                  "by_jurisdiction", "safe_harbour")} == {
        "subjects": {"decrypted": 2, "masked": 1, "ciphertext_only": 0}, "records": 3,
        "classifications": ["government_id", "personal"],
        "by_jurisdiction": {"DE": 1, "US-CA": 1, "US-NY": 1}, "safe_harbour": False}

    r = sam.get(f"/v1/incidents/{incident['id']}/affected")
    assert r.status_code == 200, r.text
    affected = r.json()
    by_subject = {i["subject_id"]: i for i in affected["items"]}
    assert {s: (i["exposure"], i["jurisdiction"], i["classifications"])
            for s, i in by_subject.items()} == {
        ada["subject"]: ("decrypted", "US-NY", ["personal"]),
        bea["subject"]: ("masked", "US-CA", []),
        carl["subject"]: ("decrypted", "DE", ["government_id", "personal"])}

    # The examiner's check: the checkpoint is signed by the trail's key, and each subject's
    # evidence is in the tree it signs — and a changed event is not.
    cp = affected["checkpoint"]
    assert cp["size"] == scope["checkpoint_size"]
    Ed25519PublicKey.from_public_bytes(rt.trail.public_key).verify(
        base64.b64decode(cp["signature"]),
        canonical({"size": cp["size"], "root": cp["root"], "timestamp": cp["timestamp"]}))
    stored = {r["event_id"]: str(r["event"]) for r in table_rows(rt, "audit_events")}
    actors = {ada["subject"]: rt.users.get("adj").id, bea["subject"]: rt.users.get("cal").id,
              carl["subject"]: leaked_key.id}
    for sid, item in by_subject.items():
        event = json.loads(stored[item["event_id"]])
        assert event["actor"]["id"] == actors[sid] and sid in event["subject_ids"]
        proof = [bytes.fromhex(p) for p in item["inclusion_proof"]]
        root = base64.b64decode(cp["root"])
        merkle.verify_inclusion(merkle.leaf_hash(canonical(event)), item["leaf_index"],
                                cp["size"], proof, root)
        forged = copy.deepcopy(event)
        forged["fields"] = ["last_name"]
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(merkle.leaf_hash(canonical(forged)), item["leaf_index"],
                                    cp["size"], proof, root)

    # The same request again: the same people, the same numbers, against a later checkpoint.
    again = sam.post(f"/v1/incidents/{incident['id']}/scope", json=body).json()
    assert again["checkpoint_size"] > scope["checkpoint_size"]
    assert {**again, "checkpoint_size": 0} == {**scope, "checkpoint_size": 0}
    assert [(i["subject_id"], i["exposure"]) for i in sam.get(
        f"/v1/incidents/{incident['id']}/affected").json()["items"]] == [
        (i["subject_id"], i["exposure"]) for i in affected["items"]]
    # Computing the scope read no customer data.
    assert not [e for e in events(rt) if e["actor"]["name"] == "sam"
                and e["action"].startswith(("record.", "subject."))]


def test_a_lost_backup_is_ciphertext_only_until_the_keys_go_with_it(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    people = [customer(rt, "Ada", state="NY")["subject"],
              customer(rt, "Bea", state="CA")["subject"],
              customer(rt, "Carl", country="DE")["subject"]]
    sam = team["sam"].client
    incident = open_incident(sam, clock, kind="lost_device")
    url = f"/v1/incidents/{incident['id']}"
    r = sam.post(f"{url}/scope", json={**lost_backup(), **window(clock)})
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("subjects", "by_jurisdiction", "safe_harbour")} == {
        "subjects": {"decrypted": 0, "masked": 0, "ciphertext_only": 3},
        "by_jurisdiction": {"DE": 1, "US-CA": 1, "US-NY": 1}, "safe_harbour": True}
    items = sam.get(f"{url}/affected").json()["items"]
    assert sorted(i["subject_id"] for i in items) == sorted(people)
    assert {i["exposure"] for i in items} == {"ciphertext_only"}
    got = sam.get(url).json()
    assert got["status"] == "assessing"  # scoping starts the assessment
    # GDPR: the authority within 72 hours of discovery; the people not, under Art. 34(3)(a).
    assert obligation(got, "gdpr-33")["due_at"] == iso(
        clock.now() - timedelta(hours=2) + timedelta(hours=72))
    art34 = obligation(got, "gdpr-34")
    assert (art34["status"], art34["decided_by"]) == ("not_required", "rules")
    assert "34(3)(a)" in art34["reason"]

    r = sam.post(f"{url}/scope", json={**lost_backup(keys=True), **window(clock)})
    assert r.json()["subjects"] == {"decrypted": 3, "masked": 0, "ciphertext_only": 0}
    assert r.json()["safe_harbour"] is False
    assert obligation(sam.get(url).json(), "gdpr-34")["status"] == "due"


# -- obligations -----------------------------------------------------------------------------
def test_obligations_are_filed_once_or_waived_with_a_reason_and_their_clocks_run(
        rt: Runtime, clock: FixedClock, settings: Settings, team: dict[str, Staff]) -> None:
    customer(rt, "Carl", country="DE")
    sam = team["sam"].client
    incident = open_incident(sam, clock)
    url = f"/v1/incidents/{incident['id']}"
    assert {o["rule_id"] for o in incident["obligations"]} == {"gdpr-33.5"}
    # Determined: the NYDFS clock starts (72 hours); so does the NAIC one.
    determined = clock.now() - timedelta(hours=1)
    r = sam.post(f"{url}/facts", json={"determined_at": iso(determined)})
    assert r.status_code == 200, r.text
    assert obligation(r.json(), "nydfs-500.17a")["due_at"] == iso(determined
                                                                  + timedelta(hours=72))
    assert sam.post(f"{url}/scope", json={**lost_backup(), **window(clock)}
                    ).status_code == 200
    got = sam.get(url).json()
    register, gdpr = obligation(got, "gdpr-33.5"), obligation(got, "gdpr-33")

    for bad in ({}, {"reason": ""}, {"reason": "  "}, {"reason": None}):
        r = sam.post(f"{url}/obligations/{gdpr['id']}/not-required", json=bad)
        assert r.status_code == 422 and fields(r) == {"reason"}, (bad, r.text)
    r = sam.post(f"{url}/obligations/{register['id']}/file", json={"reference": "REG-1"})
    assert r.status_code == 200, r.text
    filed = obligation(r.json(), "gdpr-33.5")
    assert (filed["status"], filed["reference"], filed["filed_at"], filed["decided_by"]) == (
        "filed", "REG-1", iso(clock.now()), "user:sam")
    for again in (sam.post(f"{url}/obligations/{register['id']}/file",
                           json={"reference": "REG-2"}),
                  sam.post(f"{url}/obligations/{register['id']}/not-required",
                           json={"reason": "changed my mind"})):
        assert again.status_code == 409 and again.json()["error"]["reason"] == "already_filed"
    r = sam.post(f"{url}/obligations/{new_id()}/file", json={"reference": "X"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "obligation_not_found"
    r = sam.post(f"{url}/status", json={"status": "closed"})
    assert r.status_code == 409 and r.json()["error"]["reason"] == "obligations_open"

    # Nothing past due yet; 73 hours on, the 72-hour clocks have run out.
    assert incident["id"] not in [i["id"] for i in sam.get(
        "/v1/incidents?overdue=true").json()["items"]]
    assert [i["id"] for i in sam.get("/v1/incidents?due_soon=true").json()["items"]] == [
        incident["id"]]
    clock.advance(hours=73)
    sam = make_staff(rt, clock, "sue", ["security_analyst"]).client  # Sam's session expired
    r = sam.get("/v1/incidents?overdue=true")
    assert [(i["id"], i["overdue"]) for i in r.json()["items"]] == [(incident["id"], 3)]
    code, out, err = cli(settings, "incidents", "list", "--overdue", "--json")
    assert code == 0, err
    assert [i["id"] for i in json.loads(out)["items"]] == [incident["id"]]

    for o in sam.get(url).json()["obligations"]:
        if o["status"] == "due":
            r = sam.post(f"{url}/obligations/{o['id']}/not-required",
                         json={"reason": "no EU resident's data was readable"})
            assert r.status_code == 200, r.text
    assert sam.get("/v1/incidents?overdue=true").json() == {"items": []}
    r = sam.post(f"{url}/status", json={"status": "closed", "note": "reviewed by counsel"})
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    assert r.json()["closed_at"] == iso(clock.now())
    r = sam.post(f"{url}/obligations/{gdpr['id']}/file", json={"reference": "late"})
    assert r.status_code == 409 and r.json()["error"]["reason"] == "incident_closed"
    assert [t["action"] for t in sam.get(url).json()["timeline"]] == [
        "create", "facts", "scope", "obligation.filed"] + ["obligation.not_required"] * (
        len(got["obligations"]) - 2) + ["status"]


def test_notices_are_drafted_for_regulators_without_customer_data(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    customer(rt, SURNAME, country="DE")
    sam = team["sam"].client
    incident = open_incident(sam, clock)
    sam.post(f"/v1/incidents/{incident['id']}/scope", json={**lost_backup(keys=True),
                                                            **window(clock)})
    r = team["cora"].client.get(f"/v1/incidents/{incident['id']}/notices")
    assert r.status_code == 200, r.text
    drafts = {n["obligation_id"]: n for n in r.json()["items"]}
    gdpr = drafts[obligation(sam.get(f"/v1/incidents/{incident['id']}").json(),
                             "gdpr-33")["id"]]
    assert gdpr["form"] == "gdpr_art33" and gdpr["fields"]["data_subjects_in_eea"] == 1
    assert "Data Protection Officer" in gdpr["fields"]["dpo_contact"]
    assert SURNAME not in r.text and SSN not in r.text
    # The people are written to by letter, not in a notice.
    assert "affected individuals" not in {n["recipient"] for n in drafts.values()}


# -- who may ---------------------------------------------------------------------------------
def test_roles_without_incidents_can_neither_read_nor_run_them(
        rt: Runtime, clock: FixedClock, client: TestClient, team: dict[str, Staff]) -> None:
    customer(rt, "Ada", state="NY", adjuster="adj")
    incident = open_incident(team["sam"].client, clock)
    url = f"/v1/incidents/{incident['id']}"
    oid = incident["obligations"][0]["id"]
    insiders: dict[str, TestClient] = {"service key": client}
    for username, role, regions in (("adj", "claims_adjuster", []),
                                    ("cal", "call_center_agent", ["west"]),
                                    ("root", "admin", [])):
        insiders[username] = make_staff(rt, clock, username, [role], regions).client
    reads = lambda c: [  # noqa: E731
        c.get("/v1/incidents"), c.get("/v1/incidents?overdue=true"), c.get(url),
        c.get(f"{url}/affected"), c.get(f"{url}/affected?format=csv"), c.get(f"{url}/notices"),
        c.get(f"{url}/letters/{new_id()}")]
    runs = lambda c: [  # noqa: E731
        c.post("/v1/incidents", json={"title": "cover", "kind": "other",
                                      "discovered_at": iso(clock.now())}),
        c.post(f"{url}/scope", json={**lost_backup(), **window(clock)}),
        c.post(f"{url}/status", json={"status": "closed"}),
        c.post(f"{url}/facts", json={"determined_at": iso(clock.now())}),
        c.post(f"{url}/obligations/{oid}/file", json={"reference": "X"}),
        c.post(f"{url}/obligations/{oid}/not-required", json={"reason": "none"}),
        c.post(f"{url}/letters", json=LETTER),
        # A malformed request is refused before anything is said about its form.
        c.post("/v1/incidents", json={}), c.post(f"{url}/scope", json={})]
    for name, c in insiders.items():
        for r in reads(c) + runs(c):
            assert r.status_code == 403, (name, r.request.method, r.request.url, r.text)
            assert r.json()["error"]["reason"] == "field_not_permitted"
            assert "Claims account" not in r.text
    cora = team["cora"].client
    for r in reads(cora)[:3]:
        assert r.status_code == 200, (r.request.url, r.text)
    for r in runs(cora):
        assert r.status_code == 403, (r.request.url, r.text)
    after = rt.incidents.get(SYSTEM, incident["id"])
    assert (after["status"], after["scope"], len(after["timeline"])) == ("open", None, 1)
    assert len(rt.incidents.list_incidents(SYSTEM)) == 1


def test_letters_decrypt_addresses_as_the_caller_whom_the_policy_must_allow(
        rt: Runtime, clock: FixedClock, settings: Settings, tmp_path: Path,
        team: dict[str, Staff]) -> None:
    people = {customer(rt, "Ada", state="NY")["subject"],
              customer(rt, "Carl", country="DE")["subject"]}
    sam, dee = team["sam"].client, team["dee"].client
    incident = open_incident(sam, clock)
    url = f"/v1/incidents/{incident['id']}"
    sam.post(f"{url}/scope", json={**lost_backup(keys=True), **window(clock)})
    letters_dir = settings.data_dir / "letters"
    # A security analyst runs the incident but may not read a person's address.
    r = sam.post(f"{url}/letters", json=LETTER)
    assert r.status_code == 403 and r.json()["error"]["reason"] == "field_not_permitted", r.text
    assert not letters_dir.exists() or not [p for p in letters_dir.rglob("*") if p.is_file()]
    assert table_rows(rt, "letter_batches") == []
    # The DPO may: missing texts are named first, then the batch runs in the background.
    r = dee.post(f"{url}/letters", json={"what_happened": "x"})
    assert r.status_code == 422 and "letter.what_we_are_doing" in fields(r), r.text
    r = dee.post(f"{url}/letters", json=LETTER)
    assert r.status_code == 202, r.text
    batch_id = r.json()["batch_id"]
    for _ in range(300):
        batch = dee.get(f"{url}/letters/{batch_id}").json()
        if batch["status"] != "running":
            break
        time.sleep(0.1)
    assert (batch["status"], batch["total"], batch["done"], batch["created_by"]) == (
        "done", 2, 2, "user:dee"), batch
    assert {e["subject_id"] for e in batch["manifest"]["letters"]} == people
    assert "Springfield" not in json.dumps(batch)
    assert team["cora"].client.get(f"{url}/letters/{batch_id}").status_code == 200
    assert dee.get(f"{url}/letters/{new_id()}").status_code == 404
    # Rendered as the DPO: the reads are theirs, for the legal obligation.
    reads = [e for e in events(rt, "subject.records") if e["actor"]["name"] == "dee"]
    assert {s for e in reads for s in e["subject_ids"]} == people
    assert {e["purpose"] for e in reads} == {"legal_obligation"}
    # The CLI renders in the foreground and says where the manifest is.
    text = tmp_path / "letter.json"
    text.write_text(json.dumps(LETTER))
    code, out, err = cli(settings, "incidents", "letters", incident["id"], "--text", str(text))
    assert code == 0, err
    assert "2 letters, 0 skipped" in out and "manifest.json" in out
    assert len(table_rows(rt, "letter_batches")) == 2


# -- free text -------------------------------------------------------------------------------
def test_titles_descriptions_and_notes_are_sealed_and_audited_as_digests(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    sam = team["sam"].client
    incident = open_incident(sam, clock, title=f"{SURNAME} file exported",
                             description=f"Found {SURNAME}'s claim in a public bucket")
    url = f"/v1/incidents/{incident['id']}"
    waived = incident["obligations"][0]["id"]
    assert sam.post(f"{url}/obligations/{waived}/not-required",
                    json={"reason": f"{SURNAME} is not an EU resident"}).status_code == 200
    assert sam.post(f"{url}/status", json={"status": "assessing",
                                           "note": f"called {SURNAME}"}).status_code == 200
    got = sam.get(url).json()
    assert got["title"] == f"{SURNAME} file exported"
    assert got["description"] == f"Found {SURNAME}'s claim in a public bucket"
    assert obligation(got, "gdpr-33.5")["reason"] == f"{SURNAME} is not an EU resident"
    assert [t["text"] for t in got["timeline"]] == [
        got["description"], obligation(got, "gdpr-33.5")["reason"], f"called {SURNAME}"]
    assert got == rt.incidents.get(SYSTEM, incident["id"])  # nothing the service says dropped
    with rt.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for column, value in row._mapping.items():
                    if isinstance(value, bytes | memoryview):
                        assert SURNAME.encode() not in bytes(value), (table.name, column)
                    else:
                        assert SURNAME not in str(value), (table.name, column)
    steps = [e for e in events(rt) if e["action"].startswith("incident.")
             and e["action"] != "incident.read"]
    assert [e["action"] for e in steps] == ["incident.create", "incident.obligation.not_required",
                                            "incident.status"]
    assert all("text_digest" in e["details"] for e in steps)
    assert not [e for e in events(rt) if SURNAME in json.dumps(e)]


# -- alerts ----------------------------------------------------------------------------------
def test_escalating_alerts_opens_an_incident_or_joins_one(
        rt: Runtime, clock: FixedClock, settings: Settings, team: dict[str, Staff]) -> None:
    make_staff(rt, clock, "adj", ["claims_adjuster"])
    first = raise_alert(rt, clock, "adj")
    second = raise_alert(rt, clock, "adj", detection="off_hours")
    third = raise_alert(rt, clock, "adj", detection="bulk_read")
    sam = team["sam"].client
    r = sam.post(f"/v1/alerts/{first}/escalate", json={"note": "looks deliberate"})
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["status"]) == (first, "escalated")
    incident_id = r.json()["incident_id"]
    incident = sam.get(f"/v1/incidents/{incident_id}").json()
    assert (incident["kind"], incident["alerts"], incident["discovered_at"]) == (
        "unauthorized_access", [first], iso(clock.now()))
    # Into an incident that does not exist: refused, and the alert stays open.
    r = sam.post(f"/v1/alerts/{second}/escalate", json={"incident_id": new_id()})
    assert r.status_code == 404 and r.json()["error"]["code"] == "incident_not_found"
    assert rt.alerts.get(SYSTEM, second)["status"] == "open"
    r = sam.post(f"/v1/alerts/{second}/escalate", json={"incident_id": incident_id})
    assert r.status_code == 200 and r.json()["incident_id"] == incident_id, r.text
    code, out, err = cli(settings, "alerts", "escalate", third, "--incident", incident_id)
    assert code == 0 and incident_id in out, err
    assert sorted(sam.get(f"/v1/incidents/{incident_id}").json()["alerts"]) == sorted(
        [first, second, third])
    assert len(rt.incidents.list_incidents(SYSTEM)) == 1
    # The DPO runs incidents but does not triage alerts.
    fourth = raise_alert(rt, clock, "adj", detection="self_access")
    r = team["dee"].client.post(f"/v1/alerts/{fourth}/escalate")
    assert r.status_code == 403 and rt.alerts.get(SYSTEM, fourth)["status"] == "open"


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_runs_an_incident(rt: Runtime, clock: FixedClock, settings: Settings) -> None:
    subject = customer(rt, "Carl", country="DE")["subject"]
    discovered = iso(clock.now() - timedelta(hours=2))
    code, out, err = cli(settings, "incidents", "create", "--title", "Laptop lost",
                         "--kind", "lost_device", "--discovered-at", discovered, "--json")
    assert code == 0, err
    incident = json.loads(out)
    code, out, err = cli(settings, "incidents", "scope", incident["id"],
                         "--from", discovered, "--to", iso(clock.now()), "--json")
    assert code == 0, err
    assert json.loads(out)["subjects"]["ciphertext_only"] == 1
    code, out, err = cli(settings, "incidents", "affected", incident["id"])
    assert code == 0 and out.splitlines()[1].startswith(f"{subject},ciphertext_only,DE"), err
    code, out, _ = cli(settings, "incidents", "show", incident["id"], "--json")
    shown = json.loads(out)
    assert shown["status"] == "assessing"
    ids = {o["rule_id"]: o["id"] for o in shown["obligations"] if o["status"] == "due"}
    code, out, err = cli(settings, "incidents", "file", incident["id"], ids.pop("gdpr-33"),
                         "--reference", "BfDI-2026-1")
    assert code == 0 and "filed" in out, err
    code, _, err = cli(settings, "incidents", "status", incident["id"], "closed")
    assert code == 2 and "still due" in err
    for oid in ids.values():
        code, _, err = cli(settings, "incidents", "not-required", incident["id"], oid,
                           "--reason", "register kept elsewhere")
        assert code == 0, err
    code, out, err = cli(settings, "incidents", "status", incident["id"], "closed")
    assert code == 0 and "closed" in out, err
    code, out, _ = cli(settings, "incidents", "show", incident["id"])
    assert "BfDI-2026-1" not in out and "closed" in out and "Laptop lost" in out
    for args, named in ((("incidents", "scope", incident["id"], "--from", "yesterday",
                          "--to", discovered), "--from"),
                        (("incidents", "show", new_id()), "not found"),
                        (("incidents", "create", "--title", " ", "--kind", "lost_device",
                          "--discovered-at", discovered), "title")):
        code, _, err = cli(settings, *args)
        assert code == 2 and named in err, (args, err)
    assert {e["actor"]["kind"] for e in events(rt) if e["action"].startswith("incident.")
            } == {"system"}
