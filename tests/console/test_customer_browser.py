"""An adjuster opens a customer in Chromium (issue 15): a purpose is chosen first (none is
preselected), the record is shown masked as the policy says with the withheld fields and
their reasons, and an unrelated customer cannot be reached by typing its address."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console, Tab, sign_in
from tests.realserver import cli

CH = "claims_handling"
SSN = "078-05-1120"
OTHER_SSN = "219-09-9999"


def _customer(api: httpx.Client, adjuster: str, claim: str, ssn: str) -> dict[str, str]:
    """A customer with a policy and a claim assigned to ``adjuster``, through the API."""
    r = api.post("/v1/subjects")
    assert r.status_code == 201, r.text
    subject = r.json()["id"]

    def add(collection: str, data: dict[str, Any], purpose: str = "legal_obligation") -> str:
        r = api.post(f"/v1/collections/{collection}/records?purpose={purpose}",
                     json={"subject_id": subject, "data": data})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    return {"subject": subject,
            "person": add("persons", {"first_name": "Vera", "last_name": f"Ortiz-{claim}",
                                      "national_id": ssn, "date_of_birth": "1970-05-17",
                                      "region": "west"}),
            "policy": add("policies", {"policy_number": f"POL-{claim}", "product": "auto",
                                       "status": "active", "premium": "1234.56"}),
            "claim": add("claims", {"claim_number": claim, "policy_number": f"POL-{claim}",
                                    "status": "open", "loss_date": "2026-01-03",
                                    "assigned_adjuster": adjuster, "restricted": False}, CH)}


@pytest.fixture(scope="module")
def customers(console: Console) -> dict[str, dict[str, str]]:
    """The adjuster's customer and another adjuster's, entered by a service over the API."""
    key = cli(console.env, "apikeys", "create", "--name", "claims-intake",
              "--data-dir", str(console.data))["api_key"]
    with httpx.Client(base_url=console.base,
                      headers={"Authorization": f"Bearer {key}"}) as api:
        return {"mine": _customer(api, "adam.adjuster", "CLM-7001", SSN),
                "theirs": _customer(api, "other.adjuster", "CLM-7002", OTHER_SSN)}


def test_an_adjuster_sees_a_record_masked_for_the_chosen_purpose_and_no_unrelated_one(
        console: Console, tab: Tab, shot: Callable[[str], Path],
        customers: dict[str, dict[str, str]]) -> None:
    page, mine, theirs = tab.page, customers["mine"], customers["theirs"]
    sign_in(tab, console, console.staff["adam.adjuster"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Customers").click()
    page.get_by_label("Customer (subject id)").fill(mine["subject"])
    page.get_by_role("button", name="Find").click()
    # A purpose first, none chosen for the user.
    purpose = page.get_by_role("radio", name=CH)
    expect(purpose).not_to_be_checked()
    assert page.locator("input[type=radio]:checked").count() == 0
    shot("customer-purpose")
    purpose.check()
    page.get_by_role("button", name="Open for this purpose").click()
    expect(page.get_by_role("cell", name="claims", exact=True)).to_be_visible()

    page.get_by_role("row").filter(has_text="persons").get_by_role("link").click()
    expect(page.locator("h1")).to_contain_text("persons")
    national_id = page.get_by_role("row", name="national_id")
    expect(national_id).to_contain_text("***-**-1120")
    expect(national_id).to_contain_text("masked")
    expect(page.get_by_role("row", name="last_name")).to_contain_text("Ortiz-CLM-7001")
    assert SSN not in page.content()
    shot("customer-record")

    # The policy's premium is not for claims handling: withheld, with the vault's reason.
    page.go_back()
    page.get_by_role("row").filter(has_text="policies").get_by_role("link").click()
    expect(page.get_by_role("row", name="premium")).to_contain_text("purpose_not_allowed")
    assert "1234.56" not in page.content()

    # Another adjuster's customer, typed into the address bar: not found, nothing shown.
    for path in (f"/console/customers/{theirs['subject']}?purpose={CH}",
                 f"/console/customers/{theirs['subject']}/records/persons/{theirs['person']}"
                 f"?purpose={CH}"):
        response = page.goto(console.url(path))
        assert response is not None and response.status == 404
        expect(page.locator("h1")).to_contain_text("Not found")
        content = page.content()
        assert "Ortiz-CLM-7002" not in content and OTHER_SSN not in content
        assert "9999" not in content
    shot("customer-unrelated")
    # Nothing of either customer reached the server's log (addresses carry ids and purposes).
    output = console.output()
    for value in (SSN, OTHER_SSN, "Ortiz-CLM-7001", "Ortiz-CLM-7002", "1234.56"):
        assert value.encode() not in output, value
    # A missing page answers 404 in the console log: the only errors allowed.
    errors = [e for e in tab.console_errors if "404" not in e]
    assert not errors and not tab.page_errors, (errors, tab.page_errors)
