"""No silent rollback (issue 10, finding 9): a database administrator writes an earlier state of
a record back into ``records``. A field from an earlier write fails to open (409); a whole row
restored to an earlier write, a deleted row brought back and a row deleted behind Fiduciary's
back are named by ``fiduciary audit verify --records`` and by the server's scheduled check.
Real databases (SQLite and PostgreSQL), no mocks: the attacker's SQL runs against the store."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.crypto.aead import (
    _FIELD_LABEL,
    DecryptionError,
    FieldCipher,
    associated_data,
    new_key,
)
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import audit_events, blind_index, records
from fiduciary.vault import store
from fiduciary.vault.records import _dumps
from tests.test_api_records import PA, new_person
from tests.test_import_export import cli, write_csv

OLD_SSN, NEW_SSN = "111-22-3333", "219-09-9999"


def test_a_field_opens_only_at_the_write_version_it_was_sealed_for() -> None:
    dek = new_key()
    cipher = FieldCipher("subject-1", dek, 2)
    items = [("national_id", b'{"v":"111-22-3333"}'), ("email", b'{"v":"a@b.c"}')]
    for version in (0, 1, 7):
        blobs = cipher.encrypt_many("persons", "rec-1", items, version)
        for (name, plain), blob in zip(items, blobs, strict=True):
            assert cipher.decrypt("persons", "rec-1", name, blob, version) == plain
            for other in {0, 1, 7, 8} - {version}:
                with pytest.raises(DecryptionError):
                    cipher.decrypt("persons", "rec-1", name, blob, other)
        one = cipher.encrypt("persons", "rec-1", "email", b"x", version)
        assert cipher.decrypt("persons", "rec-1", "email", one, version) == b"x"
    # Version 0 is exactly the associated data of fields sealed before versions existed.
    blob = cipher.encrypt("persons", "rec-1", "email", b"x")
    legacy_ad = associated_data(_FIELD_LABEL, "persons", "rec-1", "email", "subject-1", 2)
    assert AESGCM(dek).decrypt(blob[5:17], blob[17:], legacy_ad) == b"x"


def _row(rt: Runtime, record_id: str) -> dict[str, Any]:
    with rt.db.read() as conn:
        row = conn.execute(sa.select(records).where(records.c.id == record_id)).first()
    assert row is not None
    return dict(row._mapping)


def _put(rt: Runtime, record_id: str, **values: Any) -> None:
    """The administrator's UPDATE, straight into the table."""
    with rt.db.write() as conn:
        conn.execute(records.update().where(records.c.id == record_id).values(**values))


def _verify(settings: Settings) -> tuple[int, dict[str, Any], str]:
    code, out, err = cli(settings, "audit", "verify", "--records", "--json")
    return code, json.loads(out.strip().splitlines()[-1]), err


def _problems(result: dict[str, Any]) -> dict[str, str]:
    return {f["record_id"]: f["problem"] for f in result["records"]["findings"]}


def _get(client: TestClient, record_id: str) -> Any:
    return client.get(f"/v1/collections/persons/records/{record_id}?purpose={PA}")


def _search(client: TestClient, **where: str) -> Any:
    return client.post(f"/v1/collections/persons/search?purpose={PA}", json={"where": where})


def test_a_field_from_an_earlier_write_answers_409_on_read_and_search(
        client: TestClient, rt: Runtime, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    rec = new_person(client, national_id=OLD_SSN)
    first = json.loads(_row(rt, rec["id"])["sealed"])
    r = client.patch(f"/v1/collections/persons/records/{rec['id']}?purpose={PA}",
                     json={"data": {"national_id": NEW_SSN}})
    assert r.status_code == 200 and r.json()["data"]["national_id"] == NEW_SSN
    now = _row(rt, rec["id"])
    assert now["version"] == 2
    # Every field of the row was sealed again for write 2, the unchanged ones included.
    assert all(now_b64 != first[n] for n, now_b64 in json.loads(now["sealed"]).items())

    # The payout-account attack: the earlier ciphertext of one field written back.
    sealed = json.loads(now["sealed"])
    _put(rt, rec["id"], sealed=_dumps({**sealed, "national_id": first["national_id"]}))
    with caplog.at_level(logging.ERROR, logger="fiduciary.integrity"):
        r = _get(client, rec["id"])
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "integrity_error"
    assert err["fields"] == [{"field": "national_id",
                              "reason": "stored ciphertext failed its integrity check"}]
    assert OLD_SSN not in r.text and NEW_SSN not in r.text
    assert any(rec["id"] in m.getMessage() and "national_id" in m.getMessage()
               for m in caplog.records if m.name == "fiduciary.integrity")
    for where in ({"national_id": NEW_SSN}, {"last_name": "Lee"}):
        r = _search(client, **where)
        assert r.status_code == 409 and r.json()["error"]["code"] == "integrity_error", r.text
        assert OLD_SSN not in r.text
    assert _search(client, national_id=OLD_SSN).json()["items"] == []  # never indexed now

    # An unchanged field's ciphertext from write 1 fails just the same.
    _put(rt, rec["id"], sealed=_dumps({**sealed, "email": first["email"]}))
    r = _get(client, rec["id"])
    assert r.status_code == 409 and [f["field"] for f in r.json()["error"]["fields"]] == ["email"]
    # An update cannot launder it: re-sealing the unchanged fields refuses the tampered one.
    r = client.patch(f"/v1/collections/persons/records/{rec['id']}?purpose={PA}",
                     json={"data": {"first_name": "Ann"}})
    assert r.status_code == 409 and r.json()["error"]["code"] == "integrity_error"
    assert _row(rt, rec["id"])["version"] == 2
    with rt.db.read() as conn:
        failures = conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(
            audit_events.c.action == "integrity.failure")).scalar_one()
    assert failures >= 4  # read, two searches, read, update: each left its event
    code, result, _ = _verify(settings)
    assert code == 1 and _problems(result) == {rec["id"]: "differs"}


def test_a_whole_row_restored_to_an_earlier_write_is_named(
        client: TestClient, rt: Runtime, settings: Settings) -> None:
    other = new_person(client, national_id="078-05-1120")
    rec = new_person(client, national_id=OLD_SSN)
    before = _row(rt, rec["id"])
    assert before["version"] == 1
    r = client.patch(f"/v1/collections/persons/records/{rec['id']}?purpose={PA}",
                     json={"data": {"national_id": NEW_SSN, "region": "east"}})
    assert r.status_code == 200
    code, result, err = _verify(settings)
    assert code == 0, err
    assert result["verified"] is True and result["records"] == {
        "verified": True, "checked": 2, "unattested": 0, "findings": []}

    # The whole earlier row, consistent with itself: it opens, so reads cannot tell ...
    _put(rt, rec["id"], sealed=before["sealed"], clear=before["clear"],
         version=before["version"])
    assert _get(client, rec["id"]).json()["data"]["national_id"] == OLD_SSN
    # ... but its digest is not the one the latest write event recorded.
    code, result, _ = _verify(settings)
    assert code == 1 and result["verified"] is False
    assert result["records"]["findings"] == [{
        "record_id": rec["id"], "collection": "persons", "problem": "differs",
        "version": 1, "expected_version": 2}]
    assert OLD_SSN not in json.dumps(result) and NEW_SSN not in json.dumps(result)
    code, _, err = cli(settings, "audit", "verify", "--records")
    assert code == 1 and "do NOT verify" in err
    assert f"{rec['id']} persons differs (version 1, expected 2)" in err
    assert other["id"] not in err

    # Restoring the timestamps too changes nothing: the version and ciphertexts differ.
    _put(rt, rec["id"], updated_at=before["updated_at"])
    assert _problems(_verify(settings)[1]) == {rec["id"]: "differs"}
    # A clear field edited in place (no ciphertext touched) is named as well.
    now = json.loads(_row(rt, other["id"])["clear"])
    _put(rt, other["id"], clear=_dumps({**now, "vip": True}))
    assert _problems(_verify(settings)[1]) == {rec["id"]: "differs", other["id"]: "differs"}


def test_a_clean_store_verifies_and_deleted_or_missing_rows_are_named(
        client: TestClient, rt: Runtime, settings: Settings, tmp_path: Path,
        api_key: str) -> None:
    kept = new_person(client)
    changed = new_person(client)
    assert client.patch(f"/v1/collections/persons/records/{changed['id']}?purpose={PA}",
                        json={"data": {"email": "new@example.org"}}).status_code == 200
    deleted = new_person(client)
    deleted_row = _row(rt, deleted["id"])
    r = client.delete(f"/v1/collections/persons/records/{deleted['id']}?purpose={PA}")
    assert r.status_code == 204
    src = write_csv(tmp_path / "people.csv", ["first_name", "last_name", "national_id"],
                    [["Cy", "Ng", "219-09-9999"], ["Di", "Fo", "078-05-1120"],
                     ["Ed", "Wu", "123-45-6789"]])
    code, _, err = cli(settings, "import", "persons", str(src), "--purpose", PA, "--json",
                       "--batch-size", "2", api_key=api_key)
    assert code == 0, err
    with rt.db.read() as conn:
        imported = [r for r in conn.execute(sa.select(records)).all()
                    if r.id not in {kept["id"], changed["id"]}]
    assert len(imported) == 3 and {r.version for r in imported} == {1}
    # An erasure that keeps a held record, and one that takes everything.
    partly = new_person(client)
    held = client.post("/v1/collections/quotes/records?purpose=underwriting", json={
        "subject_id": partly["subject_id"],
        "data": {"quote_number": "Q-1", "product": "auto", "decision": "accepted"}}).json()
    rt.holds.add(SYSTEM, "record", held["id"], "Smith v. Example Mutual 2026-CV-12",
                 "legal@example")
    partly_row = _row(rt, partly["id"])
    cert = rt.eraser.erase(SYSTEM, partly["subject_id"])
    assert cert["status"] == "pending" and cert["erased"]["record_ids"] == [partly["id"]]
    gone = new_person(client)
    gone_row = _row(rt, gone["id"])
    assert rt.eraser.erase(SYSTEM, gone["subject_id"])["status"] == "complete"

    code, result, err = _verify(settings)
    assert code == 0, err
    assert result["records"] == {"verified": True, "checked": 6, "unattested": 0,
                                 "findings": []}

    # Rows the trail says were deleted, brought back from a backup.
    with rt.db.write() as conn:
        conn.execute(records.insert(), [deleted_row, partly_row])
    # A row deleted behind Fiduciary's back.
    with rt.db.write() as conn:
        conn.execute(blind_index.delete().where(blind_index.c.record_id == changed["id"]))
        conn.execute(records.delete().where(records.c.id == changed["id"]))
    code, result, _ = _verify(settings)
    assert code == 1
    assert _problems(result) == {deleted["id"]: "deleted", partly["id"]: "deleted",
                                 changed["id"]: "missing"}
    # A completely erased subject's row brought back cannot be read (its key is gone), and
    # is named too; so is a row nobody wrote.
    made_up = "0190f5e2-7d7a-4000-8000-0000000fa4e0"
    with rt.db.write() as conn:
        store.delete_records(conn, [deleted["id"], partly["id"]])
        conn.execute(records.insert(), [gone_row, {
            **gone_row, "id": made_up, "subject_id": kept["subject_id"], "clear": "{}",
            "sealed": "{}"}])
    code, result, _ = _verify(settings)
    assert code == 1
    assert _problems(result) == {gone["id"]: "deleted", changed["id"]: "missing",
                                 made_up: "unrecorded"}


def test_rows_written_before_versions_still_open_and_are_attested_from_their_next_write(
        client: TestClient, rt: Runtime, settings: Settings) -> None:
    """A row as the code before record versions wrote it (version 0, the older associated
    data, a create event without a digest) reads as before; its next update binds it."""
    sid = client.post("/v1/subjects").json()["id"]
    spec = rt.vault.collection("persons")
    data = {"first_name": "Ann", "last_name": "Lee", "national_id": OLD_SSN, "region": "west"}
    values, _ = rt.vault.validate_write(spec, data, PA, partial=False)
    rid = "0190f5e2-7d7a-7000-8000-00000000abcd"
    now = rt.clock.now()
    cipher = rt.vault.keys.cipher_for(sid)
    clear, sealed = rt.vault.codec.seal(spec, rid, cipher, values)  # version 0
    with rt.db.write() as conn:
        store.insert_record(conn, {"id": rid, "subject_id": sid, "collection": "persons",
                                   "clear": _dumps(clear), "sealed": _dumps(sealed),
                                   "created_at": now, "updated_at": now},
                            rt.vault.codec.index_rows(spec, rid, sid, values))
        rt.audit.append(conn, rt.audit.event(SYSTEM, "record.create", collection="persons",
                                             record_ids=[rid], subject_ids=[sid],
                                             fields=list(values), purpose=PA))
    legacy = _row(rt, rid)
    assert legacy["version"] == 0
    r = _get(client, rid)
    assert r.status_code == 200 and r.json()["data"]["national_id"] == OLD_SSN
    assert [i["id"] for i in _search(client, national_id=OLD_SSN).json()["items"]] == [rid]
    code, result, err = _verify(settings)
    assert code == 0, err
    assert result["records"] == {"verified": True, "checked": 0, "unattested": 1,
                                 "findings": []}

    r = client.patch(f"/v1/collections/persons/records/{rid}?purpose={PA}",
                     json={"data": {"national_id": NEW_SSN}})
    assert r.status_code == 200, r.text
    assert _row(rt, rid)["version"] == 1
    assert _get(client, rid).json()["data"] == {**data, "national_id": NEW_SSN}
    code, result, _ = _verify(settings)
    assert code == 0 and result["records"]["checked"] == 1
    assert result["records"]["unattested"] == 0

    # Putting the pre-version row back opens (the older associated data) but is named.
    _put(rt, rid, sealed=legacy["sealed"], clear=legacy["clear"], version=0)
    assert _get(client, rid).json()["data"]["national_id"] == OLD_SSN
    code, result, _ = _verify(settings)
    assert code == 1 and result["records"]["findings"] == [{
        "record_id": rid, "collection": "persons", "problem": "differs", "version": 0,
        "expected_version": 1}]


def test_a_replayed_write_event_does_not_vouch_for_an_earlier_row(
        client: TestClient, rt: Runtime, settings: Settings) -> None:
    rec = new_person(client, national_id=OLD_SSN)
    before = _row(rt, rec["id"])
    client.patch(f"/v1/collections/persons/records/{rec['id']}?purpose={PA}",
                 json={"data": {"national_id": NEW_SSN}})
    with rt.db.read() as conn:
        created = json.loads(conn.execute(sa.select(audit_events.c.event).where(
            audit_events.c.action == "record.create",
            audit_events.c.record_ids == rec["id"])).scalar_one())
    # The old row back, and an "update" event appended that repeats the create's digest.
    _put(rt, rec["id"], **{k: before[k] for k in ("sealed", "clear", "version", "updated_at")})
    with rt.db.write() as conn:
        rt.audit.append(conn, rt.audit.event(
            SYSTEM, "record.update", collection="persons", record_ids=[rec["id"]],
            subject_ids=[rec["subject_id"]], fields=["national_id"], purpose=PA,
            details={"row_digests": created["details"]["row_digests"]}))
    code, result, _ = _verify(settings)
    assert code == 1 and _problems(result) == {rec["id"]: "version_regressed"}


def test_the_server_checks_records_on_its_schedule(settings: Settings,
                                                   clock: FixedClock) -> None:
    scheduled = settings.model_copy(update={"records_check_interval_hours": 0.0003,  # ~1 s
                                            "retention_interval_hours": 0})
    rt = open_runtime(scheduled, create=True, clock=clock)
    try:
        sid = rt.vault.create_subject(SYSTEM).id
        rec = rt.vault.create_record(SYSTEM, "persons", sid,
                                     {"first_name": "Ann", "last_name": "Lee",
                                      "national_id": OLD_SSN}, PA)
        before = _row(rt, rec.id)
        rt.vault.update_record(SYSTEM, "persons", rec.id, {"national_id": NEW_SSN}, PA)
        _put(rt, rec.id, sealed=before["sealed"], clear=before["clear"], version=1)
        rt.start()
        deadline = time.monotonic() + 30
        event = None
        while event is None and time.monotonic() < deadline:
            time.sleep(0.2)
            with rt.db.read() as conn:
                text = conn.execute(sa.select(audit_events.c.event).where(
                    audit_events.c.action == "records.check")).scalars().first()
            event = json.loads(text) if text else None
        rt.stop()
        assert event is not None, "no scheduled records check within 30 s"
        assert event["decision"] == "deny" and event["reason"] == "integrity_error"
        assert event["record_ids"] == [rec.id]
        assert event["details"]["problems"] == [{"record_id": rec.id, "problem": "differs"}]
        assert OLD_SSN not in json.dumps(event)
    finally:
        rt.close()
