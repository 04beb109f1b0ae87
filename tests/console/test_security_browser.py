"""A security analyst in a real browser (issue 15): a fraud investigator reads two watched
customers, the server's own monitor raises an alert for each; the analyst dismisses one with
an explanation and escalates the other to an incident, records when it was determined and
sees the regulators' clocks start."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
from playwright.sync_api import expect

from tests.console.conftest import Console, Tab, sign_in
from tests.realserver import cli, fiduciary

SURNAME = "Vandermolen-Okafor"
EXPLANATION = "Fraud referral FR-2291 names this customer: the investigator's read is her case"


def _watched_customers_read(console: Console) -> None:
    """Two customers on the watch list, each read by the fraud investigator (not a
    handler): the accesses the monitor flags."""
    key = cli(console.env, "apikeys", "create", "--name", "sec-seed", "--data-dir",
              str(console.data))["api_key"]
    service = httpx.Client(base_url=console.base, headers={"Authorization": f"Bearer {key}"})
    fiona = console.staff["sec.fiona"]
    r = httpx.post(console.url("/v1/auth/login"), json={
        "username": fiona.username, "password": fiona.password,
        "totp": pyotp.TOTP(fiona.totp_secret).now()})
    assert r.status_code == 200, r.text
    investigator = httpx.Client(base_url=console.base,
                                headers={"Authorization": f"Bearer {r.json()['token']}"})
    for n in range(2):
        subject = service.post("/v1/subjects").json()["id"]
        r = service.post("/v1/collections/persons/records?purpose=policy_administration",
                         json={"subject_id": subject, "data": {
                             "first_name": "Ada", "last_name": f"{SURNAME}-{n}",
                             "email": f"ada{n}@example.org", "region": "west"}})
        assert r.status_code == 201, r.text
        fiduciary(console.env, "watchlist", "add", subject, "--reason", "board member",
                  "--category", "vip", "--data-dir", str(console.data))
        got = investigator.get(f"/v1/collections/persons/records/{r.json()['id']}",
                               params={"purpose": "fraud_prevention"})
        assert got.status_code == 200, got.text


def test_an_analyst_dismisses_one_alert_and_escalates_another_to_an_incident(
        console: Console, tab: Tab, shot: Callable[[str], Path]) -> None:
    _watched_customers_read(console)
    page = tab.page
    sign_in(tab, console, console.staff["sec.sam"])
    queue = console.url("/console/security/alerts?detection=watchlist_subject&status=open")
    deadline = time.monotonic() + 30
    while True:  # the server's monitor runs every second
        page.goto(queue)
        if page.locator("tbody tr").count() >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("sec.fiona")
    expect(rows.first).to_contain_text("high")
    shot("security-alerts-queue")

    # The first: read, and dismissed with an explanation.
    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("watchlist_subject")
    expect(page.locator("table.evidence tbody tr")).not_to_have_count(0)
    # An explanation is required: an empty one is refused, the alert stays open.
    page.get_by_role("button", name="Dismiss").click()
    expect(page.locator(".problem")).to_contain_text("explanation")
    page.get_by_label("Why it is not a concern (required)").fill(EXPLANATION)
    page.get_by_role("button", name="Dismiss").click()
    expect(page.locator("dl.facts")).to_contain_text("dismissed")
    expect(page.locator("ol.thread")).to_contain_text(EXPLANATION)

    # The second: escalated to a new incident.
    page.goto(queue)
    expect(page.locator("tbody tr")).to_have_count(1)
    page.locator("tbody tr").first.get_by_role("link").click()
    page.get_by_label("Escalation note (optional)").fill(
        "Investigator read a board member outside any referral")
    page.get_by_role("button", name="Escalate to an incident").click()
    expect(page).to_have_url(re.compile(r"/console/security/incidents/[0-9a-f-]+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Escalated alert")
    # The determination starts the regulators' 72-hour clocks.
    determined = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Determined at (UTC)").fill(determined)
    page.get_by_role("button", name="Record the facts").click()
    clocks = page.locator("table.clocks tbody")
    expect(clocks).to_contain_text("NY superintendent")
    expect(clocks).to_contain_text(re.compile(r"[23] d \d+ h left"))
    expect(clocks).to_contain_text("no fixed deadline")
    shot("security-incident")

    # Nothing the customers are called reached a page or the server's output.
    assert SURNAME not in page.content()
    assert SURNAME.encode() not in console.output() and EXPLANATION.encode() not in \
        console.output()
    # The browser reported no CSP violation or script error: only the refused dismissal.
    assert [e for e in tab.console_errors if "status of 422" not in e] == []
    assert tab.page_errors == []
