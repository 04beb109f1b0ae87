"""Retention: expiry on the boundary day, 'when' rules, whole-subject crypto-shredding, consent
withdrawal, legal holds blocking purges."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.datamap import load_default
from fiduciary.errors import InvalidInput
from fiduciary.privacy.retention import RetentionRules, add_period
from fiduciary.runtime import Runtime
from fiduciary.vault.store import StoredRecord
from tests.test_erasure import add, person
from tests.test_import_export import cli


def at(clock: FixedClock, day: date) -> None:
    """Records are written when their events happen: move the clock there first."""
    clock._at = datetime.combine(day, time(12), UTC)


def test_add_period_clamps_month_ends() -> None:
    assert add_period(date(2024, 2, 29), "P1Y") == date(2025, 2, 28)
    assert add_period(date(2026, 1, 31), "P1M") == date(2026, 2, 28)
    assert add_period(date(2020, 1, 1), "P2Y6M10D") == date(2022, 7, 11)
    assert add_period(date(2020, 1, 1), None) == date(2020, 1, 1)


def quote(client: TestClient, sid: str, decision: str, decided: str) -> str:
    return add(client, sid, "quotes", "underwriting", {
        "quote_number": f"Q-{decision}", "product": "home", "decision": decision,
        "decision_date": decided})


def policy(client: TestClient, sid: str, end: str | None) -> str:
    data: dict[str, Any] = {"policy_number": "POL-7", "product": "auto",
                            "status": "expired" if end else "active", "start_date": "2010-01-01"}
    if end:
        data["end_date"] = end
    return add(client, sid, "policies", "policy_administration", data)


def test_declined_quote_expires_on_the_boundary_day(rt: Runtime, client: TestClient,
                                                    clock: FixedClock) -> None:
    at(clock, date(2024, 3, 15))
    sid, _ = person(client)
    policy(client, sid, None)  # an active policy keeps the customer
    declined = quote(client, sid, "declined", "2024-03-15")
    quote(client, sid, "accepted", "2020-03-15")  # not covered by the declined-quote rule

    before = rt.retention.run(SYSTEM, date(2026, 3, 14), dry_run=True)
    assert before.items == []
    on_day = rt.retention.run(SYSTEM, date(2026, 3, 15), dry_run=True)
    assert [(i.record_id, i.action, i.expired_on) for i in on_day.items] == [
        (declined, "delete", date(2026, 3, 15))]
    assert client.get(f"/v1/collections/quotes/records/{declined}?purpose=underwriting"
                      ).status_code == 200  # a dry run changes nothing

    with pytest.raises(InvalidInput, match="future"):
        rt.retention.run(SYSTEM, date(2026, 3, 15))  # the clock still says 2024
    at(clock, date(2026, 3, 15))
    done = rt.retention.run(SYSTEM)
    assert done.records_deleted == 1 and done.subjects_shredded == 0
    assert client.get(f"/v1/collections/quotes/records/{declined}?purpose=underwriting"
                      ).status_code == 404
    found = client.post("/v1/collections/quotes/search?purpose=underwriting",
                        json={"where": {"quote_number": "Q-declined"}}).json()["items"]
    assert found == []
    events = [e["event"] for e in rt.trail.events(action="retention.purge")[0]]
    assert events and events[0]["record_ids"] == [declined]


def test_a_subject_whose_every_record_expired_is_crypto_shredded(
        rt: Runtime, client: TestClient, clock: FixedClock) -> None:
    at(clock, date(2018, 6, 30))
    sid, _ = person(client)
    policy(client, sid, "2018-06-30")  # persons and policies: 7 years after it ended
    assert rt.retention.run(SYSTEM, date(2025, 6, 29), dry_run=True).items == []
    plan = rt.retention.run(SYSTEM, date(2025, 6, 30), dry_run=True)
    assert {i.action for i in plan.items} == {"shred_subject"} and len(plan.items) == 2
    at(clock, date(2025, 6, 30))
    report = rt.retention.run(SYSTEM)
    assert report.subjects_shredded == 1
    assert client.get(f"/v1/subjects/{sid}").status_code == 410
    assert rt.vault.keys.store.get([sid]) == {}
    cert = rt.eraser.certificates(sid)[0]
    assert cert["cause"] == "retention period ended" and cert["erased"]["records"] == 2


def test_an_open_claim_keeps_the_customer(rt: Runtime, client: TestClient,
                                          clock: FixedClock) -> None:
    at(clock, date(2010, 6, 30))
    sid, _ = person(client)
    policy(client, sid, "2010-06-30")
    add(client, sid, "claims", "claims_handling", {
        "claim_number": "C-1", "policy_number": "POL-7", "status": "open",
        "loss_date": "2010-05-01"})
    plan = rt.retention.run(SYSTEM, date(2030, 1, 1), dry_run=True)
    # The policy's own clock has run out, but the persons clock waits for the open claim.
    assert [(i.collection, i.action) for i in plan.items] == [("policies", "delete")]


def test_holds_block_purges_until_released(rt: Runtime, client: TestClient,
                                           settings: Settings, clock: FixedClock) -> None:
    at(clock, date(2012, 1, 1))
    sid, _ = person(client)
    policy(client, sid, None)
    declined = quote(client, sid, "declined", "2012-01-01")
    other, _ = person(client)
    policy(client, other, "2012-01-01")
    at(clock, date(2026, 1, 31))
    col = rt.holds.add(SYSTEM, "collection", "quotes", "market-conduct exam", "compliance")
    sub = rt.holds.add(SYSTEM, "subject", other, "Doe v. Example", "legal")
    report = rt.retention.run(SYSTEM)
    assert report.records_deleted == 0 and report.subjects_shredded == 0
    assert {(i.record_id, i.action, i.hold_id) for i in report.items
            if i.subject_id == sid} == {(declined, "held", col.id)}
    assert all(i.hold_id == sub.id for i in report.items if i.subject_id == other)
    code, _, err = cli(settings, "holds", "release", col.id)
    assert code == 0, err
    rt.holds.release(SYSTEM, sub.id)
    report = rt.retention.run(SYSTEM)
    assert report.records_deleted == 1 and report.subjects_shredded == 1
    # Every hold and release is audited, the reason only as a digest.
    events = [e["event"] for e in rt.trail.events(action="hold.add")[0]]
    assert len(events) == 2 and "Doe v. Example" not in json.dumps(events)
    assert {h.id for h in rt.holds.list(include_released=True)} == {col.id, sub.id}
    assert rt.holds.list() == []


def test_marketing_data_goes_when_consent_is_withdrawn(rt: Runtime, client: TestClient,
                                                        clock: FixedClock) -> None:
    sid, _ = person(client)
    policy(client, sid, None)
    r = client.post(f"/v1/subjects/{sid}/consents", json={
        "purpose": "marketing", "granted": True, "notice_version": "v1", "method": "web_form"})
    assert r.status_code == 201, r.text
    prefs = add(client, sid, "marketing_preferences", "marketing",
                {"channel": "email", "interests": "travel cover"})
    assert rt.retention.run(SYSTEM, dry_run=True).items == []
    clock.advance(days=3)
    client.post(f"/v1/subjects/{sid}/consents", json={
        "purpose": "marketing", "granted": False, "notice_version": "v1", "method": "phone"})
    report = rt.retention.run(SYSTEM)
    assert [(i.record_id, i.action) for i in report.items] == [(prefs, "delete")]
    assert report.records_deleted == 1


def test_rules_from_a_record_field_and_created() -> None:
    rules = RetentionRules(load_default())
    from datetime import UTC, datetime
    at = datetime(2020, 5, 1, tzinfo=UTC)
    rows = [StoredRecord("c1", "s", "claims", {"closed_at": "2021-02-28"}, at, at),
            StoredRecord("n1", "s", "claim_notes", {}, at, at),
            StoredRecord("x1", "s", "claims", {}, at, at)]
    got = rules.expiries(rows)
    assert got["c1"].expires_on == date(2028, 2, 28)
    # Backdating a clock's field after the fact does not shorten retention: the clock never
    # starts before the record's last change.
    later = datetime(2026, 1, 10, tzinfo=UTC)
    backdated = StoredRecord("c2", "s", "claims", {"closed_at": "2001-01-01"}, at, later)
    assert rules.expiries([backdated])["c2"].expires_on == date(2033, 1, 10)
    ended = StoredRecord("p1", "s", "policies", {"end_date": "2001-01-01"}, at, later)
    person_row = StoredRecord("x", "s", "persons", {}, at, at)
    assert rules.expiries([ended, person_row])["x"].expires_on == date(2033, 1, 10)
    assert got["n1"].expires_on == date(2027, 5, 1)
    assert got["x1"].running and got["x1"].expires_on is None


def test_serve_runs_retention_on_a_schedule(rt: Runtime) -> None:
    import threading

    stop = threading.Event()
    worker = threading.Thread(target=rt.retention.run_forever, args=(SYSTEM, stop, 0.05))
    worker.start()
    try:
        for _ in range(200):
            if rt.trail.events(action="retention.run")[0]:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        worker.join()
    assert rt.trail.events(action="retention.run")[0]
