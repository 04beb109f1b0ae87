"""The data map: the default insurance map, validation errors that name their place, formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fiduciary.cli.main import app
from fiduciary.datamap import Classification, FieldType, load_default, load_file, parse
from fiduciary.datamap.values import ValueRejected, index_form, validate
from fiduciary.errors import DataMapInvalid

REQUIRED = {
    "persons": {"first_name", "last_name", "date_of_birth", "gender", "email", "phone",
                "address_line", "national_id", "drivers_licence_number", "passport_number",
                "occupation", "vip", "employee"},
    "policies": {"policy_number"},
    "vehicles": {"vin", "licence_plate"},
    "claims": {"assigned_adjuster", "restricted", "description"},
    "claim_notes": {"note"},
    "medical_records": {"primary_icd_code", "treatment"},
    "payment_methods": {"iban", "bank_account_number", "card_number"},
    "beneficiaries": {"full_name"},
    "underwriting_answers": {"smoker", "bmi", "medical_history"},
}


def test_default_map_covers_the_insurance_domain() -> None:
    dm = load_default()
    for collection, fields in REQUIRED.items():
        assert fields <= set(dm.collections[collection].fields), collection
    persons = dm.collections["persons"].fields
    assert persons["national_id"].classification is Classification.GOVERNMENT_ID
    assert persons["national_id"].searchable and persons["national_id"].encrypted
    assert persons["vip"].type is FieldType.BOOLEAN and not persons["vip"].encrypted
    med = dm.collections["medical_records"]
    assert med.special_category_condition is not None
    assert all(c.retention.period or c.retention.start == "consent_withdrawn"
               for c in dm.collections.values())
    assert dm.purposes["marketing"].consent_required


BAD_MAP = """
purposes: {claims_handling: {}}
collections:
  claims:
    lawful_basis: because
    retention: {period: 7 years, from: closed_at}
    purposes: [claims_handling, gossip]
    fields:
      closed_at: {type: date, classification: internal}
      diagnosis: {type: string, classification: secret}
      ssn: {type: string, format: ssn_us, classification: government_id}
      notes: {type: text, classification: personal, searchable: true}
      health: {type: string, classification: special_category}
"""


def test_invalid_map_names_file_collection_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_MAP)
    with pytest.raises(DataMapInvalid) as info:
        load_file(path)
    where = {p.field.split(": ", 1)[1]: p.reason for p in info.value.fields}
    assert all(p.field.startswith(str(path)) for p in info.value.fields)
    assert "unknown lawful basis" in where["collections.claims.lawful_basis"]
    assert "ISO 8601" in where["collections.claims.retention.period"]
    assert "undeclared purpose 'gossip'" in where["collections.claims.purposes"]
    assert "unknown classification 'secret'" in where[
        "collections.claims.fields.diagnosis.classification"]
    assert "unknown format 'ssn_us'" in where["collections.claims.fields.ssn.format"]
    assert "free text" in where["collections.claims.fields.notes.searchable"]
    assert "Art. 9(2)" in where["collections.claims.special_category_condition"]


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(DataMapInvalid) as info:
        parse("purposes: {a: {}}\ncollections: [\n", source="x.yaml")
    assert info.value.fields[0].field.startswith("x.yaml: line ")


def test_datamap_cli_show_and_check(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["datamap", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    ssn = doc["collections"]["persons"]["fields"]["national_id"]
    assert {k: ssn[k] for k in ("type", "classification", "searchable", "required")} == {
        "type": "string", "classification": "government_id", "searchable": True,
        "required": False}
    assert "customer_service" in ssn["purposes"]
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps({"purposes": {"billing": {}}, "collections": {"invoices": {
        "lawful_basis": "contract", "retention": {"period": "P10Y", "from": "created"},
        "fields": {"amount": {"type": "decimal", "classification": "financial",
                              "purposes": ["billing"]}}}}}))
    ok = runner.invoke(app, ["datamap", "check", str(good)])
    assert ok.exit_code == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_MAP)
    failed = runner.invoke(app, ["datamap", "check", str(bad)])
    assert failed.exit_code != 0
    assert "collections.claims.fields.diagnosis.classification" in failed.stderr


def test_custom_map_is_used_by_show(tmp_path: Path) -> None:
    good = tmp_path / "m.yaml"
    good.write_text("purposes: {billing: {}}\ncollections:\n  invoices:\n"
                    "    lawful_basis: contract\n    retention: {period: P1Y, from: created}\n"
                    "    fields: {amount: {type: integer, classification: financial, "
                    "purposes: [billing]}}\n")
    r = CliRunner().invoke(app, ["datamap", "show", "--json", "--datamap", str(good)])
    assert list(json.loads(r.stdout)["collections"]) == ["invoices"]


def _field(collection: str, name: str):  # type: ignore[no-untyped-def]
    return load_default().collections[collection].fields[name]


@pytest.mark.parametrize(("collection", "field", "good", "canonical"), [
    ("persons", "national_id", "123 45 6789", "123-45-6789"),
    ("persons", "email", " a.b@Example.org", "a.b@Example.org"),
    ("payment_methods", "iban", "gb82 west 1234 5698 7654 32", "GB82WEST12345698765432"),
    ("payment_methods", "card_number", "4111 1111 1111 1111", "4111111111111111"),
    ("payment_methods", "routing_number", "021000021", "021000021"),
    ("vehicles", "vin", "1hgcm82633a004352", "1HGCM82633A004352"),
    ("medical_records", "primary_icd_code", "s82.101a", "S82.101A"),
    ("medical_records", "secondary_icd_codes", "I10, e11.9", "I10,E11.9"),
    ("policies", "premium", 812.5, "812.5"),
    ("claims", "reported_at", "2026-01-31T10:00:00+01:00", "2026-01-31T09:00:00Z"),
])
def test_valid_values_take_canonical_form(collection: str, field: str, good: object,
                                          canonical: object) -> None:
    assert validate(_field(collection, field), good) == canonical


@pytest.mark.parametrize(("collection", "field", "bad"), [
    ("persons", "national_id", "666-12-3456"),
    ("persons", "national_id", "123-45-678"),
    ("persons", "email", "ann@"),
    ("persons", "phone", "12"),
    ("payment_methods", "iban", "GB83WEST12345698765432"),
    ("payment_methods", "card_number", "4111111111111112"),
    ("payment_methods", "routing_number", "021000022"),
    ("vehicles", "vin", "1HGCM82633A00435O"),
    ("vehicles", "year", 1800),
    ("medical_records", "primary_icd_code", "U07.1"),
    ("persons", "gender", "other"),
    ("persons", "vip", "yes"),
    ("persons", "date_of_birth", "2026-02-30"),
    ("claims", "reported_at", "2026-01-31T10:00:00"),
    ("underwriting_answers", "bmi", "NaN"),
])
def test_invalid_values_are_rejected_without_echoing_them(collection: str, field: str,
                                                          bad: object) -> None:
    with pytest.raises(ValueRejected) as info:
        validate(_field(collection, field), bad)
    assert str(bad) not in str(info.value)


def test_index_normalisation() -> None:
    email, phone, ssn = (_field("persons", n) for n in ("email", "phone", "national_id"))
    assert index_form(email, "Ann.Lee@Example.COM") == b"ann.lee@example.com"
    assert index_form(phone, "+1 (415) 555-0134") == b"14155550134"
    assert index_form(ssn, "123-45-6789") == b"123456789"
    assert index_form(_field("persons", "last_name"), "  van  Dyke ") == b"van dyke"
