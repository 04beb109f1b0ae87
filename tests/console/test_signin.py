"""Sign-in, the session cookie, CSP and CSRF as a browser sees them (issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import expect

from tests.console.conftest import Console, Tab, session_cookies, sign_in
from tests.realserver import fiduciary


def test_sign_in_with_totp_lands_on_the_dashboard_and_sign_out_ends_it(
        console: Console, tab: Tab, shot: Callable[[str], Path]) -> None:
    page = tab.page
    page.goto(console.url("/console/"))  # not signed in: sent to the sign-in page
    expect(page).to_have_url(console.url("/console/login"))
    shot("login")
    sign_in(tab, console, console.staff["dina.dpo"])
    expect(page).to_have_url(console.url("/console/"))
    expect(page.locator("h1")).to_contain_text("Dashboard")
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("DSR")
    shot("dashboard")
    [cookie] = session_cookies(tab)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    # HttpOnly: a script on the page cannot read the session.
    assert "fdy_console=" not in page.evaluate("document.cookie")

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(console.url("/console/login"))
    assert session_cookies(tab) == []
    page.goto(console.url("/console/privacy/dsr"))
    expect(page).to_have_url(console.url("/console/login"))
    assert not tab.page_errors and not tab.console_errors, tab.console_errors


def test_a_wrong_code_shows_an_error_and_gives_no_session(
        console: Console, tab: Tab, shot: Callable[[str], Path]) -> None:
    user = console.staff["wes.wrongcode"]
    wrong = f"{(int(user.totp()) + 500_000) % 1_000_000:06d}"
    sign_in(tab, console, user, totp=wrong)
    expect(tab.page.get_by_role("alert")).to_be_visible()
    expect(tab.page.locator("h1")).to_contain_text("Sign in")
    shot("wrong-code")
    assert session_cookies(tab) == []
    tab.page.goto(console.url("/console/"))
    expect(tab.page).to_have_url(console.url("/console/login"))


def test_the_csp_is_sent_and_enforced_and_the_pages_raise_no_error(
        console: Console, tab: Tab) -> None:
    page = tab.page
    response = page.goto(console.url("/console/login"))
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    sign_in(tab, console, console.staff["cyd.csp"])
    expect(page.locator("h1")).to_contain_text("Dashboard")
    # Neither page broke the policy or raised an error: htmx and the stylesheet load as 'self'.
    assert not tab.console_errors and not tab.page_errors, (tab.console_errors, tab.page_errors)
    assert page.evaluate("typeof window.htmx") == "object"

    # An injected inline script (what a stored XSS would be) does not run: the browser
    # refuses it and reports the violation.
    violations = page.evaluate("""() => new Promise(resolve => {
      document.addEventListener('securitypolicyviolation',
                                e => resolve(e.violatedDirective));
      const s = document.createElement('script');
      s.textContent = 'window.injected = true';
      document.body.appendChild(s);
      setTimeout(() => resolve(null), 2000);
    })""")
    assert violations is not None and violations.startswith("script-src")
    assert page.evaluate("window.injected === undefined")


def test_a_form_posted_without_its_csrf_token_is_refused(console: Console, tab: Tab) -> None:
    page, user = tab.page, console.staff["cora.csrf"]
    # A forged sign-in (no token, as a cross-site form would send it) signs nobody in.
    page.goto(console.url("/console/login"))
    r = page.request.post(console.url("/console/login"), form={
        "username": user.username, "password": user.password, "totp": user.totp()})
    assert r.status == 403 and "security token" in r.text()
    assert session_cookies(tab) == []

    sign_in(tab, console, user)
    expect(page.locator("h1")).to_contain_text("Dashboard")
    # Sign-out posted without the token, or with another one, is refused: still signed in.
    for form in ({}, {"csrf_token": "0" * 64}):
        r = page.request.post(console.url("/console/logout"), form=form)
        assert r.status == 403, (form, r.status)
    page.goto(console.url("/console/privacy/dsr"))
    expect(page).to_have_url(console.url("/console/privacy/dsr"))
    assert session_cookies(tab) != []


def test_a_session_ended_on_the_server_sends_the_browser_to_sign_in(
        console: Console, tab: Tab) -> None:
    sign_in(tab, console, console.staff["dora.dpo"])
    expect(tab.page.locator("h1")).to_contain_text("Dashboard")
    # The administrator disables the account from the CLI: its sessions end at once.
    fiduciary(console.env, "users", "disable", "dora.dpo", "--data-dir", str(console.data))
    tab.page.goto(console.url("/console/privacy/dsr"))
    expect(tab.page).to_have_url(console.url("/console/login"))
    assert session_cookies(tab) == []


def test_an_adjuster_sees_no_privacy_page_and_is_refused_it_by_url(
        console: Console, tab: Tab, shot: Callable[[str], Path]) -> None:
    page = tab.page
    sign_in(tab, console, console.staff["adam.adjuster"])
    expect(page.locator("h1")).to_contain_text("Dashboard")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav).to_contain_text("Dashboard")
    expect(nav).not_to_contain_text("DSR")
    # Typing the address of the DPO's queue: a 403 page, and no request listed on it.
    response = page.goto(console.url("/console/privacy/dsr"))
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_contain_text("Not permitted")
    expect(page.locator("table")).to_have_count(0)
    shot("adjuster-refused")
