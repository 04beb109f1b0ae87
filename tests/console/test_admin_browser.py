"""An administrator proposes a new user in Chromium, a second person (a compliance officer
holding approvals:decide) approves it in a browser of their own, and the administrator sees
the user created with its enrolment pending. Neither of them ever sees the enrolment code:
the operator issues it to the new user, who enrols in the console and is shown their
authenticator secret once (issue 15; the two-person rule of issue 10)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.conftest import STRONG
from tests.console.conftest import Console, StaffLogin, Tab, sign_in
from tests.realserver import cli

NEW_USER = "nora.newhire"
ENROLMENT_CODE = re.compile(r"[0-9A-F]{5}-[0-9A-F]{5}-[0-9A-F]{5}-[0-9A-F]{5}")


def test_a_proposed_user_is_approved_by_a_second_person_and_enrols_once(
        console: Console, tab: Tab, browser: Browser, shot: Callable[[str], Path]) -> None:
    page = tab.page
    sign_in(tab, console, console.staff["admin.ada"])
    page.get_by_role("link", name="Users").click()
    expect(page.locator("h1")).to_have_text("Users")
    page.get_by_label("Username").fill(NEW_USER)
    page.get_by_label(re.compile(r"^claims_adjuster")).check()
    page.get_by_label(re.compile(r"^Regions")).fill("west")
    with page.expect_navigation():
        page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status")).to_contain_text("waiting for approval")
    expect(page.get_by_role("row").filter(has_text=NEW_USER)).to_contain_text(
        "waiting for approval")
    # Approving it oneself is not even offered: the proposal waits for someone else.
    page.get_by_role("link", name="Approvals").click()
    expect(page.locator("main")).to_contain_text("does not decide proposals")
    expect(page.get_by_role("button", name=re.compile("^Approve"))).to_have_count(0)

    second = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        desk = Tab(second.new_page(), [], [])
        sign_in(desk, console, console.staff["admin.cole"])
        desk.page.get_by_role("link", name="Approvals").click()
        desk.page.get_by_label("Note (optional)").fill("HR ticket 4711")
        with desk.page.expect_navigation():
            desk.page.get_by_role("button", name=f"Approve user.create {NEW_USER}").click()
        expect(desk.page.get_by_role("status")).to_contain_text("decision is recorded")
        expect(desk.page.get_by_role("row").filter(has_text=NEW_USER)).to_contain_text(
            "approved")
        assert not ENROLMENT_CODE.search(desk.page.content())
        assert not desk.console_errors and not desk.page_errors, desk.console_errors
    finally:
        second.close()

    page.get_by_role("link", name="Users").click()
    row = page.get_by_role("row").filter(has_text=NEW_USER)
    expect(row).to_contain_text("claims_adjuster")
    expect(row).to_contain_text("enrolment pending")
    assert not ENROLMENT_CODE.search(page.content())
    shot("admin-users")
    assert not tab.console_errors and not tab.page_errors, tab.console_errors

    # The operator hands the new user their code; the user enrols in the console and sees
    # their authenticator secret once.
    code = cli(console.env, "users", "enrolment-code", NEW_USER, "--data-dir",
               str(console.data))["enrolment_code"]
    newcomer = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        own = Tab(newcomer.new_page(), [], [])
        own.page.goto(console.url("/console/enrol"))
        own.page.get_by_label("Username").fill(NEW_USER)
        own.page.get_by_label("Enrolment code").fill(code)
        own.page.get_by_label("New password").fill(STRONG)
        with own.page.expect_navigation():
            own.page.get_by_role("button", name="Enrol").click()
        expect(own.page.locator("h1")).to_have_text("Enrolled")
        secret = own.page.locator("dl.secrets dd code").first.inner_text()
        sign_in(own, console, StaffLogin(NEW_USER, STRONG, secret))
        expect(own.page.locator("h1")).to_contain_text("Dashboard")
    finally:
        newcomer.close()
    page.reload()
    expect(page.get_by_role("row").filter(has_text=NEW_USER)).to_contain_text("TOTP")
