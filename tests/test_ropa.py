"""Records of processing (GDPR Art. 30): built from the data map, policy pack and keyring in
force; as JSON, as an escaped HTML page, from the CLI and from the API."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fiduciary.access.policy import PolicyEngine, load_policy, parse_policy
from fiduciary.api.app import create_app
from fiduciary.clock import FixedClock, iso
from fiduciary.config import Settings
from fiduciary.crypto.keyring import KekVersion
from fiduciary.datamap import DataMap, load_default, parse
from fiduciary.privacy.ropa import build_ropa, render_html
from fiduciary.runtime import Runtime
from tests.conftest import make_staff
from tests.test_import_export import cli

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
ONE_KEK = [KekVersion(1, "2026-01-01T00:00:00+00:00", "active")]


def default_ropa(policy_path: Path | None = None, settings: Settings | None = None,
                 versions: list[KekVersion] = ONE_KEK) -> dict[str, Any]:
    dm = load_default()
    engine = PolicyEngine(load_policy(policy_path, dm), dm)
    return build_ropa(dm, engine, versions, settings or Settings(), NOW)


def activities(ropa: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["purpose"]: a for a in ropa["activities"]}


def roles_of(activity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["role"]: r for r in activity["recipients"]["roles"]}


def ropa_events(rt: Runtime) -> list[dict[str, Any]]:
    items, _ = rt.trail.events(action="ropa.generated")
    return [i["event"] for i in items]


# -- the register ------------------------------------------------------------------------------
def test_every_purpose_is_an_activity_with_basis_subjects_and_data() -> None:
    ropa = default_ropa()
    dm = load_default()
    acts = activities(ropa)
    assert list(acts) == list(dm.purposes)
    assert ropa["controller"]["name"] == "Example Mutual Insurance Company"
    assert "dpo@example-mutual.invalid" in ropa["controller"]["dpo"]
    for name, a in acts.items():
        assert a["lawful_bases"], name
        assert a["subject_categories"], name
        assert a["data_categories"], name
        assert a["retention"], name
        assert a["recipients"]["roles"], name
    json.dumps(ropa)  # serialisable as it is

    claims = acts["claims_handling"]
    assert claims["lawful_bases"] == ["contract"]
    assert {"claimants", "third-party claimants", "beneficiaries"} <= set(
        claims["subject_categories"])
    by_class = {d["classification"]: {g["collection"]: g["fields"] for g in d["collections"]}
                for d in claims["data_categories"]}
    assert by_class["special_category"]["medical_records"] == [
        "primary_icd_code", "secondary_icd_codes", "treatment", "treatment_date"]
    assert "national_id" in by_class["government_id"]["persons"]
    assert "card_number" in by_class["financial"]["payment_methods"]
    # Art. 9(2) appears only where the purpose touches special-category data.
    assert claims["special_category_conditions"] == [
        {"collection": "medical_records", "condition": "substantial_public_interest"}]
    assert acts["billing"]["special_category_conditions"] == []
    assert {c["collection"] for c in acts["underwriting"]["special_category_conditions"]} == {
        "medical_records", "underwriting_answers"}

    marketing = acts["marketing"]
    assert marketing["consent_required"] is True
    assert "consent" in marketing["lawful_bases"]
    assert acts["analytics"]["pseudonymised_only"] is True
    # Marketing uses only the name and contact fields of persons, never the SSN.
    m_fields = {f for d in marketing["data_categories"] for g in d["collections"]
                if g["collection"] == "persons" for f in g["fields"]}
    assert m_fields == {"first_name", "last_name", "email", "phone"}


def test_recipients_are_roles_with_a_grant_and_third_parties_for_the_purpose() -> None:
    acts = activities(default_ropa())
    claims = acts["claims_handling"]
    adjuster = roles_of(claims)["claims_adjuster"]
    assert adjuster["description"] == "Handles the claims assigned to them"
    assert adjuster["actions"] == ["read", "search", "write"]
    assert {"claims", "claim_notes", "medical_records", "persons"} <= set(
        adjuster["collections"])
    assert "record.assigned_adjuster == principal.username" in adjuster["conditions"]
    assert "underwriter" not in roles_of(claims)
    assert "admin" not in roles_of(claims)  # separation of duties: no data role
    assert set(roles_of(acts["underwriting"])) == {"service", "underwriter"}
    assert "actuary" in roles_of(acts["analytics"])

    parties = {t["name"]: t for t in claims["recipients"]["third_parties"]}
    assert set(parties) == {"reinsurer", "claims_administrator"}
    assert parties["claims_administrator"]["kind"] == "processor"
    assert parties["reinsurer"]["country"] == "DE"
    # Only what is shared for this purpose: underwriting answers are not used for claims.
    assert "underwriting_answers" not in parties["reinsurer"]["collections"]
    assert "underwriting_answers" in {t["name"]: t for t in acts["underwriting"]["recipients"]
                                      ["third_parties"]}["reinsurer"]["collections"]
    assert [t["name"] for t in acts["billing"]["recipients"]["third_parties"]] == [
        "payment_processor"]
    assert acts["marketing"]["recipients"]["third_parties"] == []


def test_transfers_list_recipients_outside_the_eu_eea_with_their_safeguard() -> None:
    ropa = default_ropa()
    acts = activities(ropa)
    claims = {t["recipient"]: t for t in acts["claims_handling"]["transfers"]}
    assert set(claims) == {"claims_administrator"}  # the reinsurer (DE) is inside the EU
    assert claims["claims_administrator"]["country"] == "US"
    assert "SCCs" in claims["claims_administrator"]["transfer_safeguard"]
    assert acts["underwriting"]["transfers"] == []
    assert [t["recipient"] for t in acts["billing"]["transfers"]] == ["payment_processor"]
    everyone = {t["name"]: t["third_country"] for t in ropa["third_parties"]}
    assert everyone == {"reinsurer": False, "claims_administrator": True,
                        "payment_processor": True, "insurance_regulator": True}


def test_retention_periods_come_from_the_data_map() -> None:
    acts = activities(default_ropa())
    quotes = {r["collection"]: r for r in acts["underwriting"]["retention"]}["quotes"]
    assert quotes["period"] == "P2Y"
    assert quotes["from"] == "decision_date"
    assert quotes["when"] == {"decision": "declined"}
    assert quotes["until_consent_withdrawn"] is False
    claims = {r["collection"]: r for r in acts["claims_handling"]["retention"]}["claims"]
    assert (claims["period"], claims["from"]) == ("P7Y", "closed_at")
    prefs = {r["collection"]: r for r in acts["marketing"]["retention"]}["marketing_preferences"]
    assert prefs["period"] is None
    assert prefs["from"] == "consent_withdrawn"
    assert prefs["until_consent_withdrawn"] is True
    assert prefs["consent_purpose"] == "marketing"


def test_security_measures_follow_the_policy_pack_and_settings(tmp_path: Path) -> None:
    default = default_ropa()["security_measures"]
    assert default["field_encryption"]["algorithm"] == "AES-256-GCM"
    assert default["blind_indexes"]["algorithm"] == "HMAC-SHA256"
    assert default["access_control"]["mfa_required"] is True
    assert default["access_control"]["session_idle_minutes"] == 15
    assert default["access_control"]["required_training"] == ["data-protection"]
    assert default["audit_trail"]["retention_days"] == 2191
    assert "admin" in default["access_control"]["roles_without_customer_data"]

    text = (Path(__file__).parents[1] / "src/fiduciary/access/default_policy.yaml").read_text()
    assert "idle_minutes: 15" in text
    custom = tmp_path / "policy.yaml"
    custom.write_text(text.replace("idle_minutes: 15", "idle_minutes: 7")
                      .replace("password_min_length: 12", "password_min_length: 16"))
    ropa = default_ropa(custom, Settings(audit_retention_days=3000))
    measures = ropa["security_measures"]
    assert measures["access_control"]["session_idle_minutes"] == 7
    assert measures["access_control"]["password_min_length"] == 16
    assert measures["audit_trail"]["retention_days"] == 3000
    assert ropa["sources"]["policy"]["source"] == str(custom)
    assert ropa["sources"]["policy"]["sha256"] != default_ropa()["sources"]["policy"]["sha256"]


def test_the_register_is_stable_for_the_same_configuration() -> None:
    assert json.dumps(default_ropa()) == json.dumps(default_ropa())
    assert default_ropa()["generated_at"] == iso(NOW)


def test_kek_versions_are_read_from_the_keyring_in_force(rt: Runtime) -> None:
    def measures() -> dict[str, Any]:
        ropa = build_ropa(rt.datamap, rt.policy, rt.keyring.versions(), rt.settings,
                          rt.clock.now())
        return dict(ropa["security_measures"]["field_encryption"])

    before = measures()
    assert (before["kek_versions"], before["kek_active_version"]) == (1, 1)
    rt.keyring.add_version()
    after = measures()
    assert (after["kek_versions"], after["kek_active_version"]) == (2, 2)
    assert after["kek_versions_by_state"]["active"] == 1


def test_sources_carry_the_digests_the_runtime_audits(rt: Runtime) -> None:
    ropa = build_ropa(rt.datamap, rt.policy, rt.keyring.versions(), rt.settings,
                      rt.clock.now())
    items, _ = rt.trail.events(action="config.changed")
    recorded = items[-1]["event"]["details"]
    assert ropa["sources"]["datamap"] == {"source": recorded["datamap_source"],
                                          "sha256": recorded["datamap_sha256"]}
    assert ropa["sources"]["policy"] == {"source": recorded["policy_source"],
                                         "sha256": recorded["policy_sha256"]}


# -- HTML --------------------------------------------------------------------------------------
HOSTILE_MAP = """
controller:
  name: "Acme <b>Mutual</b> & Co"
  dpo: dpo@acme.invalid
third_parties:
  broker:
    kind: processor
    description: "<img src=x onerror=alert(2)>"
    purposes: [claims_handling]
    collections: [claims]
    country: BR
purposes:
  claims_handling: {description: "Claims <script>alert(1)</script>"}
collections:
  claims:
    description: "Claims \\"quoted\\" <i>here</i>"
    lawful_basis: contract
    subject_categories: ["<u>claimants</u>"]
    retention: {period: P7Y, from: created, description: "7 years <after>"}
    purposes: [claims_handling]
    fields:
      claim_number: {type: string, classification: internal}
      description: {type: text, classification: personal}
"""

HOSTILE_POLICY = """
roles:
  adjuster:
    description: "Adjusts </td></tr></table><script>x()</script>"
    grants:
      - collections: [claims]
        actions: [read]
        purposes: [claims_handling]
"""


def hostile() -> tuple[DataMap, PolicyEngine]:
    dm = parse(HOSTILE_MAP, "<test>")
    return dm, PolicyEngine(parse_policy(HOSTILE_POLICY, "<test-policy>", dm), dm)


def test_html_escapes_every_value_from_the_configuration() -> None:
    dm, engine = hostile()
    page = render_html(build_ropa(dm, engine, ONE_KEK, Settings(), NOW))
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "<img" not in page and "<b>" not in page and "<u>" not in page
    assert "Claims &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Acme &lt;b&gt;Mutual&lt;/b&gt; &amp; Co" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "Adjusts &lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;script&gt;x()&lt;/script&gt;" in page
    assert "Claims &quot;quoted&quot; &lt;i&gt;here&lt;/i&gt;" in page
    assert "&lt;u&gt;claimants&lt;/u&gt;" in page
    # The broker in Brazil is a transfer to a third country, shown with no safeguard.
    ropa = build_ropa(dm, engine, ONE_KEK, Settings(), NOW)
    assert [t["recipient"] for t in ropa["activities"][0]["transfers"]] == ["broker"]


def test_html_page_is_readable_and_self_contained() -> None:
    page = render_html(default_ropa())
    assert "<style>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert page.count('<section class="activity"') == len(load_default().purposes)
    for heading in ("Controller (Art. 30(1)(a))", "Transfers to third countries",
                    "Time limits for erasure", "Technical and organisational security"):
        assert heading in page
    assert "Example Mutual Insurance Company" in page
    assert "until consent to marketing is withdrawn" in page
    assert "P2Y from decision_date" in page
    assert "AES-256-GCM" in page and "HMAC-SHA256" in page


# -- CLI and API -------------------------------------------------------------------------------
def test_cli_prints_the_register_as_json_and_audits_it(rt: Runtime, settings: Settings) -> None:
    code, stdout, stderr = cli(settings, "ropa", "--format", "json")
    assert code == 0, stderr
    ropa = json.loads(stdout)
    assert [a["purpose"] for a in ropa["activities"]] == list(rt.datamap.purposes)
    assert ropa["security_measures"]["field_encryption"]["kek_versions"] == 1
    [event] = ropa_events(rt)
    assert event["actor"]["kind"] == "operator"
    assert event["details"]["format"] == "json"
    assert event["details"]["output"] == "stdout"
    assert event["details"]["datamap_sha256"] == ropa["sources"]["datamap"]["sha256"]


def test_cli_writes_html_to_an_owner_only_file(rt: Runtime, settings: Settings,
                                               tmp_path: Path) -> None:
    target = tmp_path / "ropa.html"
    target.write_text("old")
    target.chmod(0o644)
    code, stdout, stderr = cli(settings, "ropa", "--format", "html", "--output", str(target))
    assert code == 0, stderr
    assert stdout == ""
    page = target.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Records of processing" in page
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    [event] = ropa_events(rt)
    assert event["details"] | {"format": "html", "output": str(target)} == event["details"]


def test_cli_rejects_an_unknown_format(rt: Runtime, settings: Settings) -> None:
    code, _, stderr = cli(settings, "ropa", "--format", "pdf")
    assert code == 2
    assert "pdf" in stderr
    assert ropa_events(rt) == []


def test_api_serves_the_register_to_config_readers_only(rt: Runtime,
                                                        clock: FixedClock) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    r = officer.client.get("/v1/ropa")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generated_at"] == iso(clock.now())
    assert "claims_handling" in {a["purpose"] for a in body["activities"]}

    r = officer.client.get("/v1/ropa", params={"format": "html"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "<h1>Records of processing activities</h1>" in r.text

    assert officer.client.get("/v1/ropa", params={"format": "pdf"}).status_code == 422

    events = ropa_events(rt)
    assert [e["details"]["format"] for e in events] == ["json", "html"]
    assert {e["actor"]["name"] for e in events} == {"cora"}

    underwriter = make_staff(rt, clock, "uma", ["underwriter"])
    r = underwriter.client.get("/v1/ropa")
    assert r.status_code == 403
    assert len(ropa_events(rt)) == 2


def test_api_refuses_a_caller_without_credentials(rt: Runtime) -> None:
    with TestClient(create_app(rt), raise_server_exceptions=False) as anonymous:
        assert anonymous.get("/v1/ropa").status_code == 401
    assert ropa_events(rt) == []
