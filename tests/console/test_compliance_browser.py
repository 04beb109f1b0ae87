"""A compliance officer answers "who saw this customer?" in a real browser: a staff member's
read of the customer is in the access log with its purpose and decision, and the event's
inclusion proof is fetched and verified in the page itself (WebCrypto, against the signed
checkpoint) — "verified" appears next to the row."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Route, expect

from tests.console.conftest import Console, Tab, create_customer, service_key, sign_in
from tests.realserver import fiduciary

#: Typed into the customer's record: it must never reach the compliance pages.
CANARY = "Quillfeather-Oakhampton"


def seen_customer(console: Console) -> str:
    """A customer, created by a service key; a DPO reads the record through the API; then a
    signed checkpoint over it all (as ``fiduciary audit sequence`` signs one)."""
    key = service_key(console, "intake")
    with httpx.Client(base_url=console.base, headers={"Authorization": f"Bearer {key}"}) as api:
        subject, record = create_customer(api, CANARY)
        # Another customer's requests feed the dashboard's on-time chart.
        other = api.post("/v1/subjects").json()["id"]
    reader = console.staff["comp.reader"]
    with httpx.Client(base_url=console.base) as api:
        r = api.post("/v1/auth/login", json={"username": reader.username,
                                             "password": reader.password,
                                             "totp": reader.totp()})
        assert r.status_code == 200, r.text
        r = api.get(f"/v1/collections/persons/records/{record}",
                    params={"purpose": "legal_obligation"},
                    headers={"Authorization": f"Bearer {r.json()['token']}"})
        assert r.status_code == 200, r.text
        _dsr_history(api, r.request.headers["Authorization"], other)
    fiduciary(console.env, "audit", "sequence", "--data-dir", str(console.data))
    return subject


def _dsr_history(api: httpx.Client, auth: str, subject: str) -> None:
    """Requests received months ago and answered only now (late, for the on-time chart);
    one answered at once."""
    now = datetime.now(UTC)
    for days, answer in ((150, True), (95, True), (70, False), (65, True), (3, True)):
        r = api.post("/v1/dsr", headers={"Authorization": auth}, json={
            "subject_id": subject, "type": "access", "regime": "gdpr",
            "received_at": (now - timedelta(days=days)).isoformat()})
        assert r.status_code == 201, r.text
        if answer:
            r = api.post(f"/v1/dsr/{r.json()['id']}/deny", headers={"Authorization": auth},
                         json={"reason": "the requester did not confirm their identity"})
            assert r.status_code == 200, r.text


def test_an_officer_verifies_the_proof_of_a_read_in_the_page(
        console: Console, tab: Tab, shot: Callable[[str], Path]) -> None:
    subject = seen_customer(console)
    page = tab.page
    sign_in(tab, console, console.staff["comp.officer"])
    page.get_by_role("link", name="Who saw a customer").click()
    page.get_by_label("Customer (subject id)").fill(subject)
    page.get_by_role("button", name="Show access log").click()
    row = page.locator("tr", has=page.locator("code", has_text="record.read"))
    expect(row).to_contain_text("comp.reader")
    expect(row).to_contain_text("legal_obligation")
    expect(row).to_contain_text("allow")
    row.get_by_role("link", name="Verify proof").click()
    result = row.locator(".proof-result")
    # Chromium checks the checkpoint's Ed25519 signature too.
    expect(result).to_have_text(re.compile(r"^verified: in checkpoint \d+, signed [-\d]+ "
                                           r"[:\d]+ UTC$"))
    expect(result).to_have_class(re.compile(r"\bok\b"))
    shot("compliance-access-log")
    # Every event of the customer verifies, the create too; the page never showed a value.
    for link in page.get_by_role("link", name="Verify proof").all():
        link.click()
    expect(page.locator(".proof-result.ok")).to_have_count(
        page.get_by_role("link", name="Verify proof").count())
    assert CANARY not in page.content()
    # The script is the verifier: a proof altered on its way (one bit of the audit path)
    # is refused in the page.
    def tamper(route: Route) -> None:
        body = route.fetch().json()
        hashed = bytearray(base64.b64decode(body["proof"][0]))
        hashed[0] ^= 1
        body["proof"][0] = base64.b64encode(bytes(hashed)).decode()
        route.fulfill(json=body)

    page.route("**/console/compliance/proof?*", tamper)
    page.reload()
    row.get_by_role("link", name="Verify proof").click()
    expect(result).to_have_text("does not verify: the audit path does not lead to the "
                                "checkpoint's root")
    expect(result).to_have_class(re.compile(r"\bbad\b"))
    # The dashboard's trends, drawn on the server, with their numbers a click away.
    page.get_by_role("link", name="Dashboard").click()
    chart = page.get_by_role("img", name="Data-subject requests answered on time, per month, "
                                          "last 12 months")
    expect(chart).to_be_visible()
    page.get_by_role("region", name=re.compile("^Data-subject requests")).get_by_text(
        "The numbers").click()
    expect(page.get_by_role("cell", name=re.compile(r"^0% \(0 of \d\)$")).first).to_be_visible()
    # The alerts chart beside it: empty by day, but at night this journey's own reads raise an
    # off-hours alert (working hours 07:00-19:00 on weekdays), so either state is right.
    alerts = page.get_by_role("region", name=re.compile("^Alerts raised per day"))
    expect(alerts).to_contain_text(re.compile("No alert was raised in these days.|The numbers"))
    shot("compliance-dashboard-charts")
    # A session that ended meanwhile: the proof is not checked, and the page says why.
    page.go_back()
    page.context.clear_cookies()
    page.unroute("**/console/compliance/proof?*")
    row.get_by_role("link", name="Verify proof").click()
    expect(result).to_have_text("not checked: your session has ended: sign in again")
    assert tab.console_errors == [] and tab.page_errors == []
