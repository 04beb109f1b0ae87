"""Erasure by crypto-shredding, legal holds and statutory duties, access packages."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.crypto.aead import DecryptionError
from fiduciary.crypto.keystore import subject_deks
from fiduciary.errors import Gone
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import records
from tests.conftest import make_staff
from tests.test_import_export import cli

PA = "policy_administration"
SSN = "219-09-9999"
EMAIL = "erasure.canary@example.net"


def person(client: TestClient, **extra: Any) -> tuple[str, str]:
    sid = client.post("/v1/subjects").json()["id"]
    r = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": sid, "data": {"first_name": "Ada", "last_name": "Quill",
                                    "national_id": SSN, "email": EMAIL, **extra}})
    assert r.status_code == 201, r.text
    return sid, r.json()["id"]


def add(client: TestClient, sid: str, collection: str, purpose: str,
        data: dict[str, Any]) -> str:
    r = client.post(f"/v1/collections/{collection}/records?purpose={purpose}",
                    json={"subject_id": sid, "data": data})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def claim(client: TestClient, sid: str, closed_at: str | None, status: str = "closed") -> str:
    data = {"claim_number": "CLM-1", "policy_number": "POL-1", "status": status,
            "loss_date": "2025-03-01", "description": "rear-ended at a junction"}
    if closed_at:
        data["closed_at"] = closed_at
    return add(client, sid, "claims", "claims_handling", data)


def sealed_rows(rt: Runtime, sid: str) -> list[Any]:
    with rt.db.read() as conn:
        return conn.execute(sa.select(records).where(records.c.subject_id == sid)).all()


def test_erasure_leaves_nothing_decryptable(rt: Runtime, client: TestClient,
                                            settings: Settings) -> None:
    sid, pid = person(client)
    pay = add(client, sid, "payment_methods", "billing",
              {"kind": "card", "card_number": "4111111111111111"})
    other, other_pid = person(client)
    backup = sealed_rows(rt, sid)  # a copy of the database taken before the erasure
    assert backup and all(r.sealed != "{}" for r in backup)

    cert = rt.eraser.erase(SYSTEM, sid)

    assert cert["status"] == "complete" and cert["kept"] == []
    assert sorted(cert["erased"]["record_ids"]) == sorted([pid, pay])
    assert cert["data_key"]["state"] == "destroyed"
    assert client.get(f"/v1/collections/persons/records/{pid}?purpose={PA}").status_code == 404
    r = client.get(f"/v1/subjects/{sid}")
    assert r.status_code == 410, r.text
    found = client.post(f"/v1/collections/persons/search?purpose={PA}",
                        json={"where": {"national_id": SSN}}).json()["items"]
    assert [f["subject_id"] for f in found] == [other]
    # The keyring and key store in force after the erasure open nothing of the copy.
    assert rt.vault.keys.store.get([sid]) == {}
    rt.vault.keys.forget(sid)
    with pytest.raises(Gone):
        rt.vault.keys.cipher_for(sid)
    spec = rt.datamap.collections["persons"]
    for row in backup:
        for field, blob in json.loads(row.sealed).items():
            for key in rt.vault.keys.store.get([other]).values():  # every key still there
                cipher = rt.vault.keys.cipher_for(key.subject_id)
                with pytest.raises(DecryptionError):
                    cipher.decrypt(spec.name, row.id, field, base64.b64decode(blob))
    # The other customer is untouched, and the trail still verifies.
    assert client.get(f"/v1/collections/persons/records/{other_pid}?purpose={PA}"
                      ).json()["data"]["national_id"] == SSN
    rt.trail.sequence(force_checkpoint=True)
    code, out, err = cli(settings, "audit", "verify")
    assert code == 0, out + err
    events = [e["event"] for e in rt.trail.events(subject_id=sid, limit=100)[0]]
    assert "subject.erase" in [e["action"] for e in events]
    assert SSN not in json.dumps(events) and EMAIL not in json.dumps(events)


def test_a_backup_of_the_database_is_unreadable_after_erasure(
        tmp_path: Path, clock: FixedClock) -> None:
    settings = Settings(data_dir=tmp_path / "data", argon2_time_cost=1, argon2_memory_kib=8192)
    rt = open_runtime(settings, create=True, clock=clock)
    sid = rt.vault.create_subject(SYSTEM).id
    rec = rt.vault.create_record(SYSTEM, "persons", sid, {
        "first_name": "Ada", "last_name": "Quill", "national_id": SSN}, PA)
    with rt.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # the file we copy is whole
    shutil.copy(tmp_path / "data" / "fiduciary.db", tmp_path / "backup.db")
    wrapped = rt.vault.keys.store.get([sid])[sid].wrapped_dek
    rt.eraser.erase(SYSTEM, sid)
    rt.close()
    # Restore the old database beside the keyring and key store in force now.
    shutil.copy(tmp_path / "backup.db", tmp_path / "data" / "fiduciary.db")
    for wal in (tmp_path / "data").glob("fiduciary.db-*"):
        wal.unlink()
    restored = open_runtime(settings, clock=clock)
    try:
        with restored.db.read() as conn:  # the old copy still lists the subject as active
            assert conn.execute(sa.text("SELECT status FROM subjects WHERE id = :i"),
                                {"i": sid}).scalar() == "active"
        with pytest.raises(Gone):
            restored.vault.get_record(SYSTEM, "persons", rec.id, PA)
    finally:
        restored.close()
    # And the destroyed key is in no file of the key store (secure_delete, WAL truncated).
    for f in (tmp_path / "data").glob("keys.db*"):
        assert wrapped not in f.read_bytes(), f


def test_statutory_duty_and_holds_keep_records_until_they_end(
        rt: Runtime, client: TestClient, clock: FixedClock) -> None:
    now = clock.now()
    clock.advance(days=-244)  # 2025-06-01: the claim is written when it closes
    sid, pid = person(client)
    closed = claim(client, sid, "2025-06-01")
    clock._at = now
    open_claim = claim(client, sid, None, status="open")
    quote = add(client, sid, "quotes", "underwriting",
                {"quote_number": "Q-1", "product": "auto", "decision": "accepted"})
    hold = rt.holds.add(SYSTEM, "record", quote, "Smith v. Example Mutual 2026-CV-12",
                        "legal@example")

    cert = rt.eraser.erase(SYSTEM, sid, "req-1")

    assert cert["status"] == "pending"
    kept = {k["record_id"]: k for k in cert["kept"]}
    assert set(kept) == {open_claim, closed, quote}
    assert kept[closed]["until"] == "2032-06-01" and "statutory" in kept[closed]["reason"]
    assert kept[open_claim]["until"] is None and "not yet started" in kept[open_claim]["reason"]
    assert kept[quote]["hold_id"] == hold.id
    assert cert["erased"]["record_ids"] == [pid]
    assert cert["data_key"]["state"].startswith("kept")
    # Kept records serve legal obligations only; the erased one is gone.
    assert client.get(f"/v1/collections/persons/records/{pid}?purpose={PA}").status_code == 404
    r = client.get(f"/v1/collections/claims/records/{closed}?purpose=claims_handling")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "processing_restricted"
    r = client.get(f"/v1/collections/claims/records/{closed}?purpose=legal_obligation")
    assert r.status_code == 403  # a service key's wildcard grant is not the privacy office
    dpo = make_staff(rt, clock, "dpo0", ["dpo"])
    r = dpo.client.get(f"/v1/collections/claims/records/{closed}?purpose=legal_obligation")
    assert r.status_code == 200 and r.json()["data"]["description"] == "rear-ended at a junction"
    r = client.patch(f"/v1/collections/claims/records/{closed}?purpose=claims_handling",
                     json={"data": {"status": "open"}})
    assert r.status_code == 403

    # The hold is released and the open claim closes; the retention job erases as duties end.
    rt.holds.release(SYSTEM, hold.id)
    # Only the privacy office may still act on what an erasure keeps.
    r = client.patch(f"/v1/collections/claims/records/{open_claim}?purpose=legal_obligation",
                     json={"data": {"status": "closed", "closed_at": "2026-01-15"}})
    assert r.status_code == 403 and r.json()["error"]["reason"] == "processing_restricted"
    rt.vault.update_record(SYSTEM, "claims", open_claim,
                           {"status": "closed", "closed_at": "2026-01-15"}, "legal_obligation")
    report = rt.retention.run(SYSTEM)
    assert report.records_deleted == 1  # the quote
    assert rt.vault.keys.store.get([sid])  # claims still within their duty
    clock.advance(days=365 * 7 + 5)  # 2033-02-03: both claims closed 7 years ago (counted
    # from when closed_at was written, 2025-06-01 and 2026-01-31)
    report = rt.retention.run(SYSTEM)
    assert report.records_deleted == 2 and report.erasures_completed == 1
    assert rt.vault.keys.store.get([sid]) == {}
    # Seven years on, the test's API key has long expired (every key does): a fresh one.
    client.headers["Authorization"] = f"Bearer {rt.api_keys.create('later')[1]}"
    assert client.get(f"/v1/subjects/{sid}").status_code == 410
    final = rt.eraser.certificates(sid)[0]
    assert final["status"] == "complete" and final["data_key"]["state"] == "destroyed"


def test_subject_hold_blocks_erasure_of_everything(rt: Runtime, client: TestClient) -> None:
    sid, pid = person(client)
    rt.holds.add(SYSTEM, "subject", sid, "regulator's examination 2026-07", "compliance")
    cert = rt.eraser.erase(SYSTEM, sid)
    assert cert["status"] == "pending" and [k["record_id"] for k in cert["kept"]] == [pid]
    assert cert["erased"]["records"] == 0


def test_access_package_through_a_dsr(rt: Runtime, client: TestClient,
                                      clock: FixedClock) -> None:
    sid, _ = person(client, last_name="<script>alert(1)</script>")
    add(client, sid, "claims", "claims_handling", {
        "claim_number": "CLM-9", "policy_number": "POL-9", "status": "open",
        "loss_date": "2025-03-01", "description": "hail damage", "assigned_adjuster": "adj"})
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"])
    found = adj.client.post("/v1/collections/claims/search?purpose=claims_handling",
                            json={"where": {"claim_number": "CLM-9"}}).json()["items"]
    assert len(found) == 1
    r = client.post(f"/v1/subjects/{sid}/consents", json={
        "purpose": "marketing", "granted": True, "notice_version": "2026-01",
        "method": "web_form"})
    assert r.status_code == 201, r.text
    dpo = make_staff(rt, clock, "dpo1", ["dpo"])
    r = dpo.client.post("/v1/dsr", json={"subject_id": sid, "type": "access",
                                         "regime": "gdpr",
                                         "received_at": "2026-01-30T09:00:00Z"})
    assert r.status_code == 201, r.text
    dsr = r.json()["id"]
    assert dpo.client.post(f"/v1/dsr/{dsr}/verify", json={"method": "id_document"}
                           ).status_code == 200
    r = dpo.client.post(f"/v1/dsr/{dsr}/fulfil", json={})
    assert r.status_code == 200, r.text
    result = r.json()["result"]["package"]
    # On disk the package is sealed under the subject's key: no value in clear, owner-only.
    files = [Path(rt.settings.data_dir) / "exports" / sid / name for name in result["files"]]
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        assert SSN.encode() not in f.read_bytes() and b"hail damage" not in f.read_bytes()
    # Who verified the requester does not also release the content (two-person rule).
    r = dpo.client.get(f"/v1/dsr/{dsr}/package?format=json")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    assert SSN not in r.text
    dpo = make_staff(rt, clock, "dpo1b", ["dpo"])
    r = dpo.client.get(f"/v1/dsr/{dsr}/package?format=json")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    doc = r.json()
    by_collection = {r["collection"]: r["data"] for r in doc["records"]}
    assert by_collection["persons"]["national_id"] == SSN  # in clear: it is their own data
    assert by_collection["claims"]["description"] == "hail damage"
    persons = next(c for c in doc["collections"] if c["collection"] == "persons")
    assert persons["lawful_basis"] == "contract" and persons["retention"]["period"] == "P7Y"
    assert "payment_processor" in [t["name"] for t in persons["recipients"]["third_parties"]]
    assert [e["purpose"] for e in doc["consent_history"]] == ["marketing"]
    reads = [e for e in doc["access_log"] if e["by"]["roles"] == ["claims_adjuster"]]
    assert reads and reads[0]["action"] == "record.search"
    assert '"adj"' not in json.dumps(doc["access_log"])  # roles, not staff names
    page = dpo.client.get(f"/v1/dsr/{dsr}/package?format=html").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert dpo.client.get(f"/v1/dsr/{dsr}/package?format=../x").status_code == 422
    assert adj.client.get(f"/v1/dsr/{dsr}/package").status_code == 403
    assert len(rt.trail.events(action="dsr.package_download")[0]) == 2
    # Its creation is audited, without the values.
    events = [e["event"] for e in rt.trail.events(action="dsr.access_package")[0]]
    assert events and events[0]["details"]["sha256"] == result["sha256"]
    assert SSN not in json.dumps(events)
    # The CLI opens it too.
    out_file = Path(rt.settings.data_dir) / "pkg.html"
    code, _, err = cli(rt.settings, "dsr", "package", dsr, "--format", "html", "--output",
                       str(out_file))
    assert code == 0, err
    assert out_file.read_text() == page and stat.S_IMODE(out_file.stat().st_mode) == 0o600
    # Only privacy:manage may build one.
    with pytest.raises(Exception, match="privacy:manage"):
        rt.packager.build(adj_principal(rt, "adj"), sid)
    # Erasure takes the package with it, even while it keeps the open claim for its duty.
    assert rt.eraser.erase(SYSTEM, sid)["status"] == "pending"
    assert not any(f.exists() for f in files)
    assert dpo.client.get(f"/v1/dsr/{dsr}/package").status_code == 404


def adj_principal(rt: Runtime, username: str) -> Any:
    from fiduciary.principal import Principal
    return Principal(id=username, kind="user", username=username, roles=("claims_adjuster",))


def test_erasure_dsr_and_cli(rt: Runtime, client: TestClient, clock: FixedClock,
                             settings: Settings) -> None:
    sid, _ = person(client)
    closed = claim(client, sid, "2025-06-01")
    dpo = make_staff(rt, clock, "dpo2", ["dpo"])
    dsr = dpo.client.post("/v1/dsr", json={"subject_id": sid, "type": "erasure",
                                           "regime": "gdpr",
                                           "received_at": "2026-01-30T09:00:00Z"}).json()["id"]
    dpo.client.post(f"/v1/dsr/{dsr}/verify", json={"method": "id_document"})
    same = dpo.client.post(f"/v1/dsr/{dsr}/fulfil", json={})
    assert same.status_code == 403 and same.json()["error"]["reason"] == "separation_of_duties"
    second = make_staff(rt, clock, "dpo2b", ["dpo"])
    r = second.client.post(f"/v1/dsr/{dsr}/fulfil", json={})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "partially_fulfilled"
    assert [k["record_id"] for k in r.json()["result"]["erasure"]["kept"]] == [closed]
    code, out, err = cli(settings, "erasure-certificate", sid)
    assert code == 0, err
    assert json.loads(out)["items"][0]["kept"][0]["collection"] == "claims"
    code, out, err = cli(settings, "holds", "add", sid, "--reason", "litigation",
                         "--owner", "legal", "--json")
    assert code == 0, err
    hold = json.loads(out)["id"]
    code, out, err = cli(settings, "holds", "list", "--json")
    assert [h["id"] for h in json.loads(out)["items"]] == [hold]
    code, out, err = cli(settings, "retention", "run", "--as-of", "2033-02-01", "--dry-run",
                         "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["held"] == 1 and plan["items"][0]["hold_id"] == hold
    assert cli(settings, "holds", "release", hold)[0] == 0
    code, out, err = cli(settings, "retention", "run", "--as-of", "2033-02-01", "--json")
    assert code == 2 and "future" in err  # only a dry run may look ahead
    clock.advance(days=365 * 7 + 2)  # 2033-02-01; the claim was written 2026-01-31
    assert rt.retention.run(SYSTEM).erasures_completed == 1
    assert rt.vault.keys.store.get([sid]) == {}
    code, out, err = cli(settings, "holds", "add", "nope", "--reason", "x", "--owner", "y")
    assert code == 2 and "target" in err


def test_erasure_needs_privacy_manage(rt: Runtime, client: TestClient,
                                      clock: FixedClock) -> None:
    sid, _ = person(client)
    with pytest.raises(Exception, match="privacy:manage"):
        rt.eraser.erase(adj_principal(rt, "x"), sid)
    assert rt.vault.keys.store.get([sid])
    with rt.vault.keys.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(subject_deks)).scalar() == 1


def test_a_legal_hold_freezes_the_records_it_covers(rt: Runtime, client: TestClient) -> None:
    sid, pid = person(client)
    closed = claim(client, sid, "2025-06-01")
    hold = rt.holds.add(SYSTEM, "subject", sid, "Doe v. Example", "legal")
    r = client.delete(f"/v1/collections/persons/records/{pid}?purpose={PA}")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "legal_hold"
    r = client.patch(f"/v1/collections/claims/records/{closed}?purpose=claims_handling",
                     json={"data": {"status": "open"}})
    assert r.status_code == 403 and r.json()["error"]["reason"] == "legal_hold"
    # New records may still be added; the hold keeps what exists.
    add(client, sid, "claim_notes", "claims_handling", {"claim_number": "CLM-1",
                                                        "note": "called the customer"})
    rt.holds.release(SYSTEM, hold.id)
    assert client.delete(f"/v1/collections/persons/records/{pid}?purpose={PA}"
                         ).status_code == 204


def test_a_restricted_subject_is_for_the_privacy_office_only(
        rt: Runtime, client: TestClient, clock: FixedClock) -> None:
    sid, pid = person(client)
    rt.restriction.restrict_subject(SYSTEM, sid, True)
    for purpose in (PA, "legal_obligation"):
        r = client.get(f"/v1/collections/persons/records/{pid}?purpose={purpose}")
        assert r.status_code == 403 and r.json()["error"]["reason"] == "processing_restricted"
        r = client.post(f"/v1/collections/policies/records?purpose={purpose}", json={
            "subject_id": sid, "data": {"policy_number": "P-9", "product": "auto",
                                        "status": "active"}})
        assert r.status_code == 403, r.text
    found = client.post("/v1/collections/persons/search?purpose=legal_obligation",
                        json={"where": {"national_id": SSN}}).json()["items"]
    assert found == []
    dpo = make_staff(rt, clock, "dpo3", ["dpo"])
    r = dpo.client.get(f"/v1/collections/persons/records/{pid}?purpose=legal_obligation")
    assert r.status_code == 200 and r.json()["data"]["national_id"] == SSN
    # While an erasure keeps records, nothing new is written for the subject.
    rt.restriction.restrict_subject(SYSTEM, sid, False)
    claim(client, sid, "2025-06-01")
    rt.eraser.erase(SYSTEM, sid)
    r = client.post("/v1/collections/claim_notes/records?purpose=legal_obligation", json={
        "subject_id": sid, "data": {"claim_number": "CLM-1", "note": "late note"}})
    assert r.status_code == 422 and "being erased" in r.text
