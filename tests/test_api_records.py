"""The REST contract of the vault core, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fiduciary.runtime import Runtime
from tests.conftest import table_rows

PA = "policy_administration"
PERSON = {"first_name": "Ann", "last_name": "Lee", "date_of_birth": "1980-02-29",
          "email": "Ann.Lee@Example.com", "phone": "+1 (415) 555-0134",
          "national_id": "123-45-6789", "region": "west", "vip": False}


def new_subject(client: TestClient) -> str:
    r = client.post("/v1/subjects")
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def new_person(client: TestClient, **overrides: Any) -> dict[str, Any]:
    subject = new_subject(client)
    r = client.post(f"/v1/collections/persons/records?purpose={PA}",
                    json={"subject_id": subject, "data": {**PERSON, **overrides}})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_healthz_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/collections/{collection}/search" in spec["paths"]
    assert client.get("/docs").status_code == 404  # off unless FIDUCIARY_API_DOCS (test_hygiene)


def test_create_returns_the_record(client: TestClient) -> None:
    rec = new_person(client)
    assert set(rec) >= {"id", "subject_id", "collection", "data", "created_at", "updated_at"}
    assert rec["collection"] == "persons"
    assert rec["data"]["national_id"] == "123-45-6789"
    assert rec["data"]["vip"] is False


def test_read_returns_exactly_what_was_written(client: TestClient) -> None:
    rec = new_person(client, national_id="123456789")
    got = client.get(f"/v1/collections/persons/records/{rec['id']}?purpose={PA}")
    assert got.status_code == 200
    body = got.json()
    assert body["data"]["first_name"] == "Ann"
    assert body["data"]["national_id"] == "123-45-6789"  # canonical form
    assert body["data"]["date_of_birth"] == "1980-02-29"
    assert body["subject_id"] == rec["subject_id"]


def test_read_withholds_fields_not_declared_for_the_purpose(client: TestClient) -> None:
    rec = new_person(client)
    body = client.get(f"/v1/collections/persons/records/{rec['id']}?purpose=underwriting").json()
    assert "email" not in body["data"]
    assert {"field": "email", "reason": "purpose_not_allowed"} in body["withheld"]
    assert body["data"]["date_of_birth"] == "1980-02-29"


def test_patch_is_partial(client: TestClient) -> None:
    rec = new_person(client)
    r = client.patch(f"/v1/collections/persons/records/{rec['id']}?purpose={PA}",
                     json={"data": {"email": "new@example.org", "phone": None}})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["email"] == "new@example.org"
    assert "phone" not in data
    assert data["national_id"] == "123-45-6789"
    found = client.post(f"/v1/collections/persons/search?purpose={PA}",
                        json={"where": {"email": "ann.lee@example.com"}}).json()["items"]
    assert found == []
    found = client.post(f"/v1/collections/persons/search?purpose={PA}",
                        json={"where": {"email": "NEW@example.org"}}).json()["items"]
    assert [f["id"] for f in found] == [rec["id"]]


def test_patch_cannot_empty_a_required_field(client: TestClient) -> None:
    rec = new_person(client)
    r = client.patch(f"/v1/collections/persons/records/{rec['id']}?purpose={PA}",
                     json={"data": {"last_name": None}})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "last_name"


def test_delete_then_404(client: TestClient, rt: Runtime) -> None:
    rec = new_person(client)
    url = f"/v1/collections/persons/records/{rec['id']}?purpose={PA}"
    assert client.delete(url).status_code == 204
    r = client.get(url)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "record_not_found"
    assert table_rows(rt, "blind_index") == []


def test_list_subject_records(client: TestClient) -> None:
    rec = new_person(client)
    subject = rec["subject_id"]
    r = client.post(f"/v1/collections/policies/records?purpose={PA}", json={
        "subject_id": subject,
        "data": {"policy_number": "POL-1", "product": "auto", "status": "active",
                 "premium": "812.50"}})
    assert r.status_code == 201, r.text
    items = client.get(f"/v1/subjects/{subject}/records?purpose={PA}").json()["items"]
    assert sorted(i["collection"] for i in items) == ["persons", "policies"]
    policy = next(i for i in items if i["collection"] == "policies")
    assert policy["data"]["premium"] == "812.50"


def test_search_normalises_email_ssn_and_phone(client: TestClient) -> None:
    rec = new_person(client)
    new_person(client, email="other@example.com", national_id="219-09-9999", last_name="Park",
               phone="+1 212 555 0100")
    for where in ({"email": "  ANN.LEE@example.COM "}, {"national_id": "123456789"},
                  {"national_id": "123 45 6789"}, {"phone": "14155550134"},
                  {"last_name": "lee", "region": "west"}):
        r = client.post(f"/v1/collections/persons/search?purpose={PA}", json={"where": where})
        assert r.status_code == 200, (where, r.text)
        assert [i["id"] for i in r.json()["items"]] == [rec["id"]], where
        assert r.json()["items"][0]["data"]["email"] == "Ann.Lee@Example.com"


def test_search_rejects_unsearchable_and_unknown_fields(client: TestClient) -> None:
    r = client.post(f"/v1/collections/persons/search?purpose={PA}",
                    json={"where": {"first_name": "Ann", "shoe_size": 9}})
    assert r.status_code == 422
    fields = {f["field"]: f["reason"] for f in r.json()["error"]["fields"]}
    assert fields == {"first_name": "not searchable", "shoe_size": "not declared in the data map"}


def test_search_is_post_only(client: TestClient) -> None:
    assert client.get("/v1/collections/persons/search?purpose=billing&email=a@b.c"
                      ).status_code == 405


def test_rejected_write_names_every_field_and_stores_nothing(client: TestClient,
                                                             rt: Runtime) -> None:
    subject = new_subject(client)
    r = client.post("/v1/collections/persons/records?purpose=marketing", json={
        "subject_id": subject,
        "data": {"first_name": "Ann", "last_name": "Lee", "national_id": "123-45-6789",
                 "shoe_size": 44, "email": "not-an-email"}})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    reasons = {f["field"]: f["reason"] for f in err["fields"]}
    assert reasons["national_id"] == "not allowed for purpose 'marketing'"
    assert "not declared" in reasons["shoe_size"]
    assert reasons["email"] == "not a valid email address"
    assert "not-an-email" not in r.text and "123-45-6789" not in r.text
    assert table_rows(rt, "records") == []


def test_wrong_types_are_named(client: TestClient) -> None:
    subject = new_subject(client)
    r = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": subject,
        "data": {"first_name": 7, "date_of_birth": "31/01/1980", "vip": "yes",
                 "national_id": "000-12-3456"}})
    assert r.status_code == 422
    fields = {f["field"] for f in r.json()["error"]["fields"]}
    assert fields == {"first_name", "date_of_birth", "vip", "national_id", "last_name"}


def test_purpose_is_required_and_must_be_declared(client: TestClient) -> None:
    rec = new_person(client)
    r = client.get(f"/v1/collections/persons/records/{rec['id']}")
    assert r.status_code == 422
    assert r.json()["error"]["fields"] == [{"field": "purpose", "reason": "required"}]
    r = client.get(f"/v1/collections/persons/records/{rec['id']}?purpose=curiosity")
    assert r.status_code == 422
    r = client.get(f"/v1/collections/medical_records/records/{rec['id']}?purpose=billing")
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "purpose_not_allowed"


def test_unknown_subject_collection_and_record(client: TestClient) -> None:
    r = client.post(f"/v1/collections/persons/records?purpose={PA}",
                    json={"subject_id": "nobody", "data": PERSON})
    assert r.status_code == 422
    assert r.json()["error"]["fields"] == [{"field": "subject_id", "reason": "unknown subject"}]
    assert client.get(f"/v1/collections/pets/records/x?purpose={PA}").status_code == 404
    assert client.get(f"/v1/collections/persons/records/x?purpose={PA}").status_code == 404
    assert client.get(f"/v1/subjects/nobody/records?purpose={PA}").status_code == 404


def test_record_of_another_collection_is_not_found(client: TestClient) -> None:
    rec = new_person(client)
    r = client.get(f"/v1/collections/policies/records/{rec['id']}?purpose={PA}")
    assert r.status_code == 404


def test_bad_input_is_never_a_5xx(client: TestClient) -> None:
    bodies: list[Any] = ["not json", "[]", '{"subject_id": 5}', '{"data": null}', "{}"]
    for body in bodies:
        r = client.post(f"/v1/collections/persons/records?purpose={PA}", content=body,
                        headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code)
        assert "error" in r.json()
    r = client.post(f"/v1/collections/persons/search?purpose={PA}",
                    json={"where": {"email": ["a"]}})
    assert r.status_code == 422


def test_authentication_is_required(client: TestClient, rt: Runtime) -> None:
    anon = TestClient(client.app)
    r = anon.post("/v1/subjects")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    r = anon.post("/v1/subjects", headers={"Authorization": "Bearer fdy_nope_nope"})
    assert r.status_code == 401
    key, token = rt.api_keys.create("temp")
    ok = anon.post("/v1/subjects", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 201
    rt.api_keys.revoke(key.id)
    r = anon.post("/v1/subjects", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_api_keys_are_stored_hashed(rt: Runtime) -> None:
    _, token = rt.api_keys.create("hashed")
    secret = token.split("_", 2)[2]
    for row in table_rows(rt, "api_keys"):
        assert secret.encode() not in bytes(row["secret_hash"])  # type: ignore[arg-type]
        assert secret not in str(row)


def test_odd_ids_are_not_found_not_server_errors(client: TestClient) -> None:
    for bad in ("%00", "x%00y", "a" * 500, "../../etc"):
        assert client.get(f"/v1/collections/persons/records/{bad}?purpose={PA}"
                          ).status_code == 404, bad
        assert client.get(f"/v1/subjects/{bad}/records?purpose={PA}").status_code == 404
    r = client.post(f"/v1/collections/persons/records?purpose={PA}",
                    json={"subject_id": "\u0000", "data": PERSON})
    assert r.status_code == 422
    anon = TestClient(client.app)
    r = anon.post("/v1/subjects", headers={"Authorization": "Bearer fdy_\u0000\u0000_x"})
    assert r.status_code == 401
