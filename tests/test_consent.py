"""The consent ledger: append-only history, current state, the marketing gate, GPC opt-outs,
validation, permissions and the withdrawals the retention job reads."""

from __future__ import annotations

from datetime import datetime

from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock, iso
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import subjects
from tests.conftest import make_staff, table_rows

SSN = "078-05-1120"
GRANT = {"purpose": "marketing", "granted": True, "notice_version": "2026-01",
         "notice_id": "privacy-notice", "method": "web_form", "channel": "web"}
WITHDRAW = {"purpose": "marketing", "granted": False, "method": "email"}


def person(rt: Runtime) -> tuple[str, str]:
    s = rt.vault.create_subject(SYSTEM).id
    rec = rt.vault.create_record(SYSTEM, "persons", s, {
        "first_name": "Vera", "last_name": "Ortiz", "national_id": SSN,
        "date_of_birth": "1970-05-17", "email": "vera@example.org", "region": "west"},
        "legal_obligation")
    return s, rec.id


def set_status(rt: Runtime, subject_id: str, status: str) -> None:
    with rt.db.write() as conn:
        conn.execute(subjects.update().where(subjects.c.id == subject_id).values(status=status))


def test_history_is_append_only_and_current_is_the_latest_entry_per_purpose(
        client: TestClient, rt: Runtime, clock: FixedClock) -> None:
    s, _ = person(rt)
    url = f"/v1/subjects/{s}/consents"
    r = client.post(url, json=GRANT)
    assert r.status_code == 201, r.text
    granted = r.json()
    assert granted["granted"] is True and granted["notice_version"] == "2026-01"
    assert granted["recorded_at"] == iso(clock.now())
    assert granted["recorded_by"].startswith("api_key:")
    # Same instant (frozen clock): the later entry still wins.
    assert client.post(url, json=WITHDRAW).status_code == 201
    clock.advance(days=1)
    assert client.post(url, json={"purpose": "sale_or_sharing", "granted": False,
                                  "method": "phone"}).status_code == 201
    body = client.get(url).json()
    assert [(e["purpose"], e["granted"]) for e in body["history"]] == [
        ("marketing", True), ("marketing", False), ("sale_or_sharing", False)]
    assert {p: e["granted"] for p, e in body["current"].items()} == {
        "marketing": False, "sale_or_sharing": False}
    assert body["history"][0] == granted  # earlier entries are never rewritten
    assert not rt.consent.has_consent(s, "marketing")
    assert len(table_rows(rt, "consent_events")) == 3
    assert not any(hasattr(rt.consent, name) for name in ("update", "delete", "remove"))


def test_marketing_read_needs_current_consent_and_each_denial_is_audited(
        client: TestClient, rt: Runtime, clock: FixedClock) -> None:
    s, rec = person(rt)
    read = f"/v1/collections/persons/records/{rec}?purpose=marketing"
    before = client.get(read)
    assert before.status_code == 403
    assert before.json()["error"]["reason"] == "consent_required"
    assert client.post(f"/v1/subjects/{s}/consents", json=GRANT).status_code == 201
    allowed = client.get(read)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["data"]["last_name"] == "Ortiz"
    assert "national_id" not in allowed.json()["data"]  # not declared for marketing
    clock.advance(minutes=5)
    assert client.post(f"/v1/subjects/{s}/consents", json=WITHDRAW).status_code == 201
    after = client.get(read)
    assert after.status_code == 403 and after.json()["error"]["reason"] == "consent_required"
    assert "Ortiz" not in after.text
    events = [i["event"] for i in rt.trail.events(record_id=rec, action="record.read")[0]]
    assert [(e["decision"], e["reason"], e["purpose"]) for e in events] == [
        ("deny", "consent_required", "marketing"), ("partial", None, "marketing"),
        ("deny", "consent_required", "marketing")]


def test_each_entry_is_audited_with_ids_and_codes_only(client: TestClient,
                                                       rt: Runtime) -> None:
    s, _ = person(rt)
    entry = client.post(f"/v1/subjects/{s}/consents", json=GRANT).json()
    client.get(f"/v1/subjects/{s}/consents")
    recorded = [i["event"] for i in rt.trail.events(subject_id=s, action="consent.record")[0]]
    assert len(recorded) == 1
    assert recorded[0]["subject_ids"] == [s]
    assert recorded[0]["details"] == {"consent_id": entry["id"], "purpose": "marketing",
                                      "granted": True, "method": "web_form"}
    assert recorded[0]["actor"]["kind"] == "api_key"
    assert len(rt.trail.events(subject_id=s, action="consent.read")[0]) == 1
    # The ledger holds ids and codes: nothing of the person.
    stored = repr(table_rows(rt, "consent_events"))
    assert "Ortiz" not in stored and SSN not in stored and "vera@" not in stored


def test_purpose_method_and_notice_are_checked_and_never_echoed(client: TestClient,
                                                                rt: Runtime) -> None:
    s, _ = person(rt)
    url = f"/v1/subjects/{s}/consents"

    def problems(body: dict[str, object]) -> dict[str, str]:
        r = client.post(url, json=body)
        assert r.status_code == 422, r.text
        assert "vera@example.org" not in r.text
        return {f["field"]: f["reason"] for f in r.json()["error"]["fields"]}

    assert "purpose" in problems({**GRANT, "purpose": "underwriting"})
    assert "method" in problems({**GRANT, "method": "fax"})
    assert "notice_version" in problems({**GRANT, "notice_version": None})
    assert set(problems({**GRANT, "notice_id": "vera@example.org",
                         "channel": "call from Vera Ortiz"})) == {"notice_id", "channel"}
    # Withdrawing needs no notice: as easy as granting (GDPR 7(3)).
    assert client.post(url, json={"purpose": "sensitive_data_use", "granted": False,
                                  "method": "api"}).status_code == 201
    assert table_rows(rt, "consent_events") and len(table_rows(rt, "consent_events")) == 1


def test_unknown_subject_is_404_and_erased_subject_410(client: TestClient,
                                                       rt: Runtime) -> None:
    for unknown in ("00000000-0000-4000-8000-000000000000", "not-an-id"):
        r = client.post(f"/v1/subjects/{unknown}/consents", json=GRANT)
        assert r.status_code == 404 and r.json()["error"]["code"] == "subject_not_found"
        assert client.get(f"/v1/subjects/{unknown}/consents").status_code == 404
    s, _ = person(rt)
    set_status(rt, s, "erased")
    assert client.post(f"/v1/subjects/{s}/consents", json=GRANT).status_code == 410
    assert client.get(f"/v1/subjects/{s}/consents").status_code == 410
    assert table_rows(rt, "consent_events") == []


def test_sec_gpc_header_records_one_opt_out_of_sale_and_sharing(
        client: TestClient, rt: Runtime, clock: FixedClock) -> None:
    s, _ = person(rt)
    url = f"/v1/subjects/{s}/consents"
    gpc = {"Sec-GPC": "1"}

    def opt_outs() -> list[dict[str, object]]:
        return [e for e in client.get(url).json()["history"]
                if e["method"] == "opt_out_preference_signal"]

    assert client.post(url, json=GRANT, headers=gpc).status_code == 201
    assert client.get(url, headers=gpc).status_code == 200
    assert client.post(url, json=WITHDRAW, headers=gpc).status_code == 201
    assert len(opt_outs()) == 1
    current = client.get(url).json()["current"]
    assert current["sale_or_sharing"]["granted"] is False
    assert current["marketing"]["granted"] is False  # the explicit choices still recorded
    # An explicit later opt-in, then the signal again: honoured again, once.
    clock.advance(days=1)
    client.post(url, json={"purpose": "sale_or_sharing", "granted": True,
                           "notice_version": "2026-01", "method": "web_form"})
    client.get(url, headers=gpc)
    client.get(url, headers=gpc)
    client.get(url, headers={"Sec-GPC": "0"})
    assert len(opt_outs()) == 2
    assert not rt.consent.has_consent(s, "sale_or_sharing")


def test_only_consent_roles_read_or_record_consent(rt: Runtime, clock: FixedClock) -> None:
    s, _ = person(rt)
    url = f"/v1/subjects/{s}/consents"
    underwriter = make_staff(rt, clock, "uw", ["underwriter"]).client
    for r in (underwriter.post(url, json=GRANT), underwriter.get(url),
              underwriter.get(url, headers={"Sec-GPC": "1"})):
        assert r.status_code == 403, r.text
        assert r.json()["error"]["reason"] == "field_not_permitted"
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], regions=["west"]).client
    assert agent.post(url, json=GRANT).status_code == 201
    dpo = make_staff(rt, clock, "dpo", ["dpo"]).client
    assert dpo.post(url, json=WITHDRAW).status_code == 201
    assert [e["recorded_by"] for e in dpo.get(url).json()["history"]] == [
        "user:agent", "user:dpo"]
    assert table_rows(rt, "consent_events") and len(table_rows(rt, "consent_events")) == 2


def test_withdrawn_lists_subjects_currently_withdrawn_since_their_withdrawal(
        rt: Runtime, clock: FixedClock) -> None:
    ledger = rt.consent

    def record(subject: str, granted: bool) -> datetime:
        entry = ledger.record(SYSTEM, subject, "marketing", granted, None,
                              "v1" if granted else None, "web_form")
        return entry.recorded_at

    a, b, c, d, e, f = (rt.vault.create_subject(SYSTEM).id for _ in range(6))
    record(a, True)
    record(b, False)
    record(d, True)
    record(f, True)
    record(f, False)  # same instant as the grant: still the later entry
    clock.advance(days=1)
    a_withdrawn = record(a, False)
    record(b, True)
    c_withdrawn = record(c, False)
    d_first = record(d, False)
    record(e, False)
    clock.advance(days=1)
    record(a, False)  # withdrawing again does not move the date
    middle = clock.now()
    clock.advance(hours=1)
    record(d, True)
    clock.advance(days=1)
    d_second = record(d, False)
    set_status(rt, e, "erased")  # nothing left to purge
    found = dict(ledger.withdrawn("marketing", clock.now()))
    start = datetime.fromisoformat("2026-01-31T12:00:00+00:00")
    assert found == {a: a_withdrawn, c: c_withdrawn, d: d_second, f: start}
    assert dict(ledger.withdrawn("marketing", middle))[d] == d_first
    assert list(ledger.withdrawn("sale_or_sharing")) == []


def test_gpc_from_staff_is_ignored_and_read_only_keys_cannot_record(
        client: TestClient, rt: Runtime, clock: FixedClock) -> None:
    s, _ = person(rt)
    url = f"/v1/subjects/{s}/consents"
    # A staff browser's own GPC signal is the employee's, not the customer's.
    agent = make_staff(rt, clock, "agent2", ["call_center_agent"], regions=["west"]).client
    assert agent.get(url, headers={"Sec-GPC": "1"}).status_code == 200
    assert rt.consent.current(s) == {}
    _, token = rt.api_keys.create("reader", role="service", scopes=["read"])
    reader = TestClient(client.app, raise_server_exceptions=False)
    reader.headers["Authorization"] = f"Bearer {token}"
    r = reader.post(url, json=GRANT)
    assert r.status_code == 403 and "write scope" in r.json()["error"]["message"]
    assert reader.get(url).status_code == 200
    assert rt.consent.current(s) == {}
