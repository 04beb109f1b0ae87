"""A DPO takes a data-subject request from received to fulfilled in a real browser: the
queue, the request's page, verify, acknowledge, start and fulfil through its buttons; the
access package is then downloaded by a second DPO (whoever verified the requester may not
release it), and the file is the customer's package."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from tests.console.conftest import Console, Tab, create_customer, service_key, sign_in
from tests.realserver import cli

#: Typed into the customer's record: it must reach the package and nothing else.
CANARY = "Wrenfield-Ottaway"


def access_request(console: Console) -> tuple[str, str]:
    """A customer entered by a service over the API, and their access request logged by the
    office through the CLI: (subject id, request id)."""
    key = service_key(console, "priv-intake")
    with httpx.Client(base_url=console.base, headers={"Authorization": f"Bearer {key}"}) as api:
        subject, _ = create_customer(api, CANARY)
    made = cli(console.env, "dsr", "create", "--subject", subject, "--type", "access",
               "--regime", "gdpr", "--channel", "email", "--data-dir", str(console.data))
    return subject, made["id"]


def test_a_dpo_takes_a_request_to_fulfilled_and_a_second_dpo_downloads_the_package(
        console: Console, tab: Tab, browser: Browser, shot: Callable[[str], Path]) -> None:
    subject, request_id = access_request(console)
    page = tab.page
    sign_in(tab, console, console.staff["priv.dpo"])
    page.get_by_role("link", name="DSR queue", exact=True).click()
    row = page.get_by_role("row").filter(has_text=request_id)
    expect(row).to_contain_text("received")
    shot("privacy-dsr-queue")
    row.get_by_role("link", name=request_id).click()
    expect(page.locator("h1")).to_contain_text(request_id)
    expect(page.locator(".countdown")).to_contain_text("due in")

    page.get_by_label("How was the identity verified?").select_option("id_document")
    page.get_by_role("button", name="Verify identity").click()
    expect(page.locator(".countdown")).to_contain_text("identity_verified")
    expect(page.locator(".four-eyes")).to_contain_text("another DPO must do these")
    shot("privacy-dsr-request")
    for button in ("Acknowledge", "Start", "Fulfil"):
        page.get_by_role("button", name=button).click()
        expect(page.get_by_role("button", name=button)).to_have_count(0)
    expect(page.locator(".countdown")).to_contain_text("fulfilled")
    steps = page.locator("table tbody tr td:nth-child(2)").all_inner_texts()
    assert steps == ["create", "verify", "acknowledge", "start", "fulfil"]
    # Who verified the requester is not offered the package: a second person releases it.
    expect(page.locator(".four-eyes")).to_contain_text("another DPO must do these")
    expect(page.get_by_role("link", name="Download (JSON)")).to_have_count(0)
    assert CANARY not in page.content()  # the request page names ids, not the customer's data

    second = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    try:
        desk = Tab(second.new_page(), [], [])
        sign_in(desk, console, console.staff["priv.second"])
        desk.page.goto(console.url(f"/console/privacy/dsr/{request_id}"))
        with desk.page.expect_download() as download:
            desk.page.get_by_role("link", name="Download (JSON)").click()
        assert download.value.suggested_filename == f"access-{request_id}.json"
        doc = json.loads(Path(download.value.path()).read_text())
        assert {r["data"]["last_name"] for r in doc["records"]} == {CANARY}
        assert subject in json.dumps(doc)
        assert desk.console_errors == [] and desk.page_errors == []
    finally:
        second.close()
    assert tab.console_errors == [] and tab.page_errors == []
    assert CANARY.encode() not in console.output()
