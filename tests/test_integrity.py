"""A ciphertext copied to another record, field or subject must fail, loudly and opaquely."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary.crypto.keystore import subject_deks
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import records
from tests.test_api_records import PA, new_person


def _sealed(rt: Runtime, record_id: str) -> dict[str, str]:
    with rt.db.read() as conn:
        raw = conn.execute(sa.select(records.c.sealed).where(records.c.id == record_id)).scalar()
    return dict(json.loads(str(raw)))


def _set_sealed(rt: Runtime, record_id: str, sealed: dict[str, str]) -> None:
    with rt.db.write() as conn:
        conn.execute(records.update().where(records.c.id == record_id)
                     .values(sealed=json.dumps(sealed)))


def _expect_integrity_error(client: TestClient, record_id: str, field: str,
                            caplog: pytest.LogCaptureFixture, secret: str) -> None:
    with caplog.at_level(logging.ERROR, logger="fiduciary.integrity"):
        r = client.get(f"/v1/collections/persons/records/{record_id}?purpose={PA}")
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "integrity_error"
    assert err["fields"] == [{"field": field,
                              "reason": "stored ciphertext failed its integrity check"}]
    assert secret not in r.text
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "fiduciary.integrity"]
    assert any(record_id in m and field in m for m in logged)
    assert not any(secret in m for m in logged)


def test_ciphertext_copied_from_another_subject_fails(client: TestClient, rt: Runtime,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    victim = new_person(client, national_id="111-22-3333")
    attacker = new_person(client, national_id="219-09-9999")
    stolen = _sealed(rt, victim["id"])["national_id"]
    mine = _sealed(rt, attacker["id"])
    mine["national_id"] = stolen
    _set_sealed(rt, attacker["id"], mine)
    _expect_integrity_error(client, attacker["id"], "national_id", caplog, "111-22-3333")


def test_ciphertext_moved_to_another_field_fails(client: TestClient, rt: Runtime,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    rec = new_person(client)
    sealed = _sealed(rt, rec["id"])
    sealed["last_name"] = sealed["first_name"]
    _set_sealed(rt, rec["id"], sealed)
    _expect_integrity_error(client, rec["id"], "last_name", caplog, "Ann")


def test_ciphertext_moved_to_another_record_of_same_subject_fails(
    client: TestClient, rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    first = new_person(client, national_id="111-22-3333")
    r = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": first["subject_id"],
        "data": {"first_name": "Ann", "last_name": "Lee", "national_id": "219-09-9999"}})
    second = r.json()
    sealed = _sealed(rt, second["id"])
    sealed["national_id"] = _sealed(rt, first["id"])["national_id"]
    _set_sealed(rt, second["id"], sealed)
    _expect_integrity_error(client, second["id"], "national_id", caplog, "111-22-3333")


def test_flipped_bit_fails(client: TestClient, rt: Runtime,
                           caplog: pytest.LogCaptureFixture) -> None:
    import base64

    rec = new_person(client)
    sealed = _sealed(rt, rec["id"])
    blob = bytearray(base64.b64decode(sealed["email"]))
    blob[-1] ^= 1
    sealed["email"] = base64.b64encode(bytes(blob)).decode()
    _set_sealed(rt, rec["id"], sealed)
    _expect_integrity_error(client, rec["id"], "email", caplog, "Ann.Lee@Example.com")


def test_swapped_subject_keys_fail(client: TestClient, rt: Runtime,
                                   caplog: pytest.LogCaptureFixture) -> None:
    a = new_person(client)
    b = new_person(client, national_id="219-09-9999")
    with rt.vault.keys.store.engine.begin() as conn:
        wrapped = conn.execute(sa.select(subject_deks.c.wrapped_dek).where(
            subject_deks.c.subject_id == a["subject_id"])).scalar()
        conn.execute(subject_deks.update().where(subject_deks.c.subject_id == b["subject_id"])
                     .values(wrapped_dek=wrapped))
    rt.vault.keys.forget(b["subject_id"])
    with caplog.at_level(logging.ERROR, logger="fiduciary.integrity"):
        r = client.get(f"/v1/collections/persons/records/{b['id']}?purpose={PA}")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "integrity_error"
    assert "123-45-6789" not in r.text
