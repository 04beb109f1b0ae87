"""Issue 12, part 4: breach notices to regulators and letters to the affected people.

A letter names its addressee and nobody else, the categories of data and never a value, and is
read through the vault as whoever runs the batch (audited; refused for a role the policy
refuses). A notice to a regulator carries counts, categories and the DPO's contact, and leaves
what only a person can say as a placeholder."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fiduciary.clock import FixedClock
from fiduciary.errors import Forbidden, Gone, InvalidInput, WorkflowConflict
from fiduciary.ids import new_id
from fiduciary.incidents.letters import (
    LetterService,
    LetterTemplate,
    refusing_url_fetcher,
    template_for,
)
from fiduciary.incidents.notices import PLACEHOLDER, draft_notices, placeholders
from fiduciary.principal import SYSTEM, Principal
from fiduciary.runtime import Runtime
from tests.conftest import make_staff, table_rows

SSN = "078-05-1120"
DOB = "1970-05-17"
ICD = "S72.001A"
TREATMENT = "Hip surgery"
LO = "legal_obligation"
CA_HEADINGS = ["Notice of Data Breach", "What Happened", "What Information Was Involved",
               "What We Are Doing", "What You Can Do", "For More Information"]
EVERY_CLASS = ["personal", "government_id", "special_category", "financial"]

PEOPLE = {
    "ca": {"first_name": "Carmen", "last_name": "Alvarez", "address_line": "12 Ocean Ave",
           "city": "Santa Monica", "state": "CA", "postal_code": "90401", "country": "US",
           "email": "carmen@example.org"},
    "ny": {"first_name": "Nathan", "last_name": "Yorke", "address_line": "400 Hudson St",
           "city": "New York", "state": "NY", "postal_code": "10014", "country": "US",
           "email": "nathan@example.org"},
    "ma": {"first_name": "Maeve", "last_name": "Sullivan", "address_line": "9 Beacon St",
           "city": "Boston", "state": "MA", "postal_code": "02108", "country": "US",
           "email": "maeve@example.org"},
    "de": {"first_name": "Dagmar", "last_name": "Engel", "address_line": "Lindenweg 7",
           "city": "Freiburg", "postal_code": "79098", "country": "DE",
           "email": "dagmar@example.org"},
}


def customer(rt: Runtime, person: dict[str, str], *, health: bool = True) -> str:
    """A customer with an SSN, a date of birth and (by default) a medical record."""
    sid = rt.vault.create_subject(SYSTEM).id
    rt.vault.create_record(SYSTEM, "persons", sid,
                           {**person, "national_id": SSN, "date_of_birth": DOB}, LO)
    if health:
        rt.vault.create_record(SYSTEM, "medical_records", sid,
                               {"primary_icd_code": ICD, "treatment": TREATMENT}, LO)
    return sid


def incident(**letter: Any) -> dict[str, Any]:
    texts = {
        "what_happened": "An employee's account was used to look up customer files it had "
                         "no reason to open.",
        "what_we_are_doing": "We closed the account and reviewed every file it opened.",
        "likely_consequences": "The information could be used to impersonate you.",
        "law_enforcement_delay": False,
        "services_offer": "We offer 24 months of identity monitoring at no cost to you.",
    }
    return {"id": new_id(), "title": "Vera Ortiz exported files", "kind": "unauthorized_access",
            "status": "open", "discovered_at": datetime(2026, 1, 20, 9, 0, tzinfo=UTC),
            "determined_at": datetime(2026, 1, 22, 9, 0, tzinfo=UTC),
            "description": "Vera Ortiz (SSN 078-05-1120) looked up claims.",
            "letter": {**texts, **letter}}


@pytest.fixture
def letters(rt: Runtime, clock: FixedClock, tmp_path: Path) -> LetterService:
    return LetterService(rt.vault, rt.audit, clock, tmp_path / "data" / "letters",
                         {"name": "Example Mutual", "phone": "1-800-555-0100",
                          "email": "help@example-mutual.invalid",
                          "address": "1 Example Plaza, Hartford, CT 06103",
                          "dpo": "Data Protection Officer, dpo@example-mutual.invalid"})


def opened(letters: LetterService, manifest: dict[str, Any], sid: str, fmt: str) -> bytes:
    return letters.open_letter(SYSTEM, manifest["incident_id"], manifest["batch_id"], sid,
                               fmt)[0]


def events(rt: Runtime, action: str) -> list[dict[str, Any]]:
    found = [json.loads(str(r["event"])) for r in table_rows(rt, "audit_events")
             if r["event"] is not None]
    return [e for e in found if e["action"] == action]


def logged_in(rt: Runtime, clock: FixedClock, username: str, roles: list[str]) -> Principal:
    staff = make_staff(rt, clock, username, roles)
    return rt.users.authenticate(staff.client.headers["Authorization"].removeprefix("Bearer "))


def test_each_person_gets_a_sealed_letter_of_their_law_naming_only_them(
        rt: Runtime, letters: LetterService) -> None:
    sids = {k: customer(rt, p) for k, p in PEOPLE.items()}
    jurisdictions = {"ca": "US-CA", "ny": "US-NY", "ma": "US-MA", "de": "DE"}
    affected = [(sids[k], j, EVERY_CLASS) for k, j in jurisdictions.items()]
    seen: list[tuple[int, int]] = []
    manifest = letters.render_batch(SYSTEM, incident(), affected, new_id(),
                                    lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert manifest["totals"] == {"affected": 4, "letters": 4, "skipped": 0, "by_template": {
        "letter_eu": 1, "letter_us": 2, "letter_us_ca": 1}, "skipped_by_reason": {},
        "email_alternative": 0}
    assert {e["subject_id"]: e["template"] for e in manifest["letters"]} == {
        sids["ca"]: "letter_us_ca", sids["ny"]: "letter_us", sids["ma"]: "letter_us",
        sids["de"]: "letter_eu"}

    folder = Path(manifest["path"]).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{sid}.{fmt}.sealed" for sid in sids.values() for fmt in ("html", "pdf")]
        + ["manifest.json"])
    raw = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in raw)

    html = {k: opened(letters, manifest, sid, "html").decode() for k, sid in sids.items()}
    pdf = {k: opened(letters, manifest, sid, "pdf") for k, sid in sids.items()}
    assert all(p.startswith(b"%PDF-") for p in pdf.values())
    # California's title and headings, in the statute's order.
    at = [html["ca"].index(f">{h}<") for h in CA_HEADINGS]
    assert at == sorted(at)
    assert "This notice was not delayed by a law enforcement investigation." in html["ca"]
    assert "24 months of identity monitoring" in html["ca"]
    assert "Equifax" in html["ca"]  # the credit bureaus, an SSN being involved
    # GDPR Art. 34(2): nature, DPO, likely consequences, measures.
    for part in ("What happened", "Data Protection Officer, dpo@example-mutual.invalid",
                 "could be used to impersonate you", "We closed the account"):
        assert part in html["de"]
    assert "Notice of Data Breach" in html["ny"] and "What Happened" in html["ny"]
    assert "look up customer files" in html["ny"]
    # Massachusetts forbids telling residents the nature of the breach (c. 93H s3(b)).
    assert "What Happened" not in html["ma"] and "look up customer files" not in html["ma"]
    assert "right to obtain any police report" in html["ma"]
    for letter in html.values():
        assert "health information" in letter and "government identifiers" in letter

    for key, letter in html.items():
        person = PEOPLE[key]
        assert person["last_name"] in letter and person["address_line"] in letter
        others = [p for k, p in PEOPLE.items() if k != key]
        for other in others:
            for field in ("first_name", "last_name", "address_line", "email"):
                assert other[field] not in letter
    # No value but a name and address, in any file: not the SSN, the date of birth, the
    # diagnosis or the treatment of anyone, nor the incident's own free text.
    documents = [*raw.values(), *(h.encode() for h in html.values()), *pdf.values()]
    for blob in documents:
        for value in (SSN, DOB, ICD, TREATMENT, "Vera Ortiz",
                      *(p["email"] for p in PEOPLE.values())):
            assert value.encode() not in blob
    assert not any("1970" in h for h in html.values())  # not even the year of birth
    # On disk, sealed: not even the addressee's own name.
    for blob in raw.values():
        for person in PEOPLE.values():
            assert person["last_name"].encode() not in blob
            assert person["address_line"].encode() not in blob
    # The manifest: ids, jurisdictions, templates, digests — no name, address or e-mail.
    text = raw["manifest.json"].decode()
    for person in PEOPLE.values():
        for value in person.values():
            if len(value) > 2:
                assert value not in text


def test_names_are_escaped_in_the_letter(rt: Runtime, letters: LetterService) -> None:
    hostile = {**PEOPLE["ny"], "first_name": "<script>alert(1)</script>",
               "last_name": "O'Brien & \"Sons\""}
    sid = customer(rt, hostile, health=False)
    manifest = letters.render_batch(SYSTEM, incident(), [(sid, "US-NY", ["personal"])],
                                    new_id())
    html = opened(letters, manifest, sid, "html").decode()
    assert "<script>" not in html and "alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "O&#39;Brien &amp; &#34;Sons&#34;" in html
    assert "O'Brien" not in html and '"Sons"' not in html


def test_people_without_a_postal_address_are_skipped_with_a_reason(
        rt: Runtime, letters: LetterService) -> None:
    no_address = rt.vault.create_subject(SYSTEM).id
    rt.vault.create_record(SYSTEM, "persons", no_address, {
        "first_name": "Ines", "last_name": "Moreau", "email": "ines@example.org"}, LO)
    no_person = rt.vault.create_subject(SYSTEM).id
    erased = customer(rt, PEOPLE["ny"], health=False)
    rt.eraser.erase(SYSTEM, erased)
    batch_id = new_id()
    manifest = letters.render_batch(SYSTEM, incident(), [
        (no_address, "FR", ["personal"]), (no_person, "US-TX", ["personal"]),
        (erased, "US-NY", ["personal"])], batch_id)
    assert manifest["letters"] == []
    assert manifest["skipped"] == [
        {"subject_id": no_address, "jurisdiction": "FR", "reason": "no_contact_address",
         "email_on_file": True},
        {"subject_id": no_person, "jurisdiction": "US-TX", "reason": "no_persons_record",
         "email_on_file": False},
        {"subject_id": erased, "jurisdiction": "US-NY", "reason": "subject_erased",
         "email_on_file": False}]
    assert manifest["totals"]["email_alternative"] == 1
    text = Path(manifest["path"]).read_text()
    assert "ines@example.org" not in text and "Moreau" not in text
    assert sorted(p.name for p in Path(manifest["path"]).parent.iterdir()) == ["manifest.json"]
    # A batch renders once: the same id again is refused, and the first batch stays.
    with pytest.raises(WorkflowConflict):
        letters.render_batch(SYSTEM, {**incident(), "id": manifest["incident_id"]},
                             [(no_person, "US-TX", [])], batch_id)
    assert json.loads(Path(manifest["path"]).read_text())["skipped"] == manifest["skipped"]


def test_each_jurisdiction_has_its_letter() -> None:
    assert [template_for(j) for j in ("US-CA", "us-ca", "US-NY", "US-MA", "US", "unknown",
                                      "DE", "NO", "GB", "CA", "CH")] == [
        LetterTemplate.US_CA, LetterTemplate.US_CA, LetterTemplate.US, LetterTemplate.US,
        LetterTemplate.US, LetterTemplate.US, LetterTemplate.EU, LetterTemplate.EU,
        LetterTemplate.EU, LetterTemplate.US, LetterTemplate.US]


def test_a_principal_the_policy_refuses_gets_an_error_and_no_files(
        rt: Runtime, clock: FixedClock, letters: LetterService) -> None:
    sids = [customer(rt, PEOPLE["ca"]), customer(rt, PEOPLE["ny"])]
    affected = [(sids[0], "US-CA", EVERY_CLASS), (sids[1], "US-NY", EVERY_CLASS)]
    adjuster = logged_in(rt, clock, "adj", ["claims_adjuster"])
    with pytest.raises(Forbidden):
        letters.render_batch(adjuster, incident(), affected, new_id())
    # The security analyst runs incidents but may not read customers: the vault refuses,
    # and records the refusal.
    analyst = logged_in(rt, clock, "sec", ["security_analyst"])
    with pytest.raises(Forbidden) as refused:
        letters.render_batch(analyst, incident(), affected, new_id())
    assert "Carmen" not in str(refused.value) and "Alvarez" not in str(refused.value)
    denied = [e for e in events(rt, "subject.records") if e["actor"]["id"] == analyst.id]
    assert denied and all(e["decision"] == "deny" for e in denied)
    assert not list(letters.out_dir.glob("*/*/*"))
    # Nor may either open a letter someone else rendered.
    manifest = letters.render_batch(SYSTEM, incident(), affected[:1], new_id())
    for who in (adjuster, analyst):
        with pytest.raises(Forbidden):
            letters.open_letter(who, manifest["incident_id"], manifest["batch_id"], sids[0],
                                "pdf")


def test_the_dpo_reads_contacts_through_the_vault_and_every_read_is_audited(
        rt: Runtime, clock: FixedClock, letters: LetterService) -> None:
    sid = customer(rt, PEOPLE["de"], health=False)
    dpo = logged_in(rt, clock, "dpo", ["dpo"])
    manifest = letters.render_batch(dpo, incident(), [(sid, "DE", ["personal"])], new_id())
    reads = [e for e in events(rt, "subject.records") if e["actor"]["id"] == dpo.id]
    assert [(e["subject_ids"], e["purpose"], e["decision"]) for e in reads] == [
        ([sid], LO, "allow")]
    assert {"first_name", "last_name", "address_line"} <= set(reads[0]["fields"])
    [rendered] = events(rt, "incident.letters_rendered")
    assert rendered["subject_ids"] == [sid] and rendered["actor"]["id"] == dpo.id
    assert rendered["details"]["batch_id"] == manifest["batch_id"]
    # Opening a letter is audited too; once the person is erased it cannot be opened.
    content, media = letters.open_letter(dpo, manifest["incident_id"], manifest["batch_id"],
                                         sid, "html")
    assert media.startswith("text/html") and b"Engel" in content
    assert [e["subject_ids"] for e in events(rt, "incident.letter_opened")] == [[sid]]
    rt.eraser.erase(SYSTEM, sid)
    with pytest.raises(Gone):
        letters.open_letter(dpo, manifest["incident_id"], manifest["batch_id"], sid, "html")


def test_letters_need_the_texts_a_person_approves_before_anything_is_read(
        rt: Runtime, letters: LetterService) -> None:
    sids = [customer(rt, PEOPLE["ca"], health=False), customer(rt, PEOPLE["de"], health=False)]
    bare = incident()
    bare["letter"] = {"what_happened": "We found a problem."}
    with pytest.raises(InvalidInput) as refused:
        letters.render_batch(SYSTEM, bare, [(sids[0], "US-CA", ["government_id"]),
                                            (sids[1], "DE", ["personal"])], new_id())
    assert {f.field for f in refused.value.fields} == {
        "letter.what_we_are_doing", "letter.likely_consequences",
        "letter.law_enforcement_delay", "letter.services_offer"}
    with pytest.raises(InvalidInput):
        letters.render_batch(SYSTEM, incident(), [(sids[0], "US-CA", [])], "../../etc")
    assert events(rt, "subject.records") == []
    assert not letters.out_dir.exists() or not list(letters.out_dir.glob("*/*"))


def test_pdf_rendering_fetches_no_url() -> None:
    fetch = refusing_url_fetcher()
    for url in ("file:///etc/hostname", "http://127.0.0.1/logo.png",
                "data:text/plain,hello", "https://example.org/a.css"):
        with pytest.raises(ValueError, match="disallowed protocol"):
            fetch(url)


def test_notices_to_regulators_carry_counts_categories_and_placeholders() -> None:
    scope = {"subjects": {"decrypted": 120, "masked": 30, "ciphertext_only": 0},
             "records": 410, "classifications": ["personal", "special_category"],
             "by_jurisdiction": {"US-NY": 90, "US-CA": 40, "DE": 15, "FR": 5},
             "checkpoint_size": 9000, "safe_harbour": False}
    inc = incident()
    # Shaped as the rows of incidents/default_rules.yaml derive them.
    obligations = [
        {"id": "ob-1", "rule_id": "gdpr-33", "regime": "GDPR",
         "recipient": "supervisory authority", "basis": "GDPR Art. 33(1)",
         "due_at": datetime(2026, 1, 25, 9, 0, tzinfo=UTC), "status": "open"},
        {"id": "ob-2", "rule_id": "nydfs-500.17a", "regime": "NYDFS",
         "recipient": "NY superintendent", "basis": "23 NYCRR 500.17(a)(1)",
         "due_at": "2026-01-25T09:00:00Z", "status": "open"},
        {"id": "ob-3", "rule_id": "gdpr-34", "regime": "GDPR",
         "recipient": "affected individuals", "basis": "GDPR Art. 34(1)", "due_at": None,
         "status": "open"},
        {"id": "ob-4", "rule_id": "us-ca-ag", "regime": "US-CA",
         "recipient": "CA attorney general", "basis": "Cal. Civ. Code 1798.82(f)",
         "due_at": None, "status": "open"},
    ]
    dpo = "Data Protection Officer, dpo@example-mutual.invalid"
    gdpr, nydfs, ca = draft_notices(inc, scope, obligations, dpo)
    assert [d["obligation_id"] for d in (gdpr, nydfs, ca)] == ["ob-1", "ob-2", "ob-4"]
    assert ca["fields"]["state"] == "CA" and ca["fields"]["residents_affected"] == 40
    assert gdpr["due_at"] == "2026-01-25T09:00:00Z"
    f = gdpr["fields"]
    assert f["approximate_number_of_data_subjects"] == 150
    assert f["data_subjects_in_eea"] == 20
    assert f["approximate_number_of_records"] == 410
    assert f["categories_of_personal_data"] == [
        "health information", "names, contact details and other personal details"]
    assert f["dpo_contact"] == dpo and dpo in gdpr["text"]
    assert {"likely_consequences", "measures_taken_or_proposed", "description"} <= set(
        placeholders(gdpr))
    assert f["likely_consequences"].startswith(PLACEHOLDER)
    n = nydfs["fields"]
    assert n["date_of_determination"] == "2026-01-22T09:00:00Z"
    assert n["nonpublic_information_affected"] is True
    assert n["number_affected_by_state"] == {"CA": 40, "NY": 90}
    assert n["status"] == "open" and "description" in placeholders(nydfs)
    for draft in (gdpr, nydfs, ca):
        assert "150" in draft["text"] and "health information" in draft["text"]
        # The incident's title and description are free text that names people: not copied.
        dump = json.dumps(draft, default=str)
        for value in ("Vera", "Ortiz", SSN, "exported"):
            assert value not in dump
    # Before the scope is computed, the numbers are placeholders too, never guesses.
    unscoped = draft_notices(inc, None, obligations[:1], dpo)[0]
    assert "approximate_number_of_data_subjects" in placeholders(unscoped)
