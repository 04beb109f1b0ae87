"""The console's foundation: sign-in with TOTP through the API's login (cookie attributes,
lockout), the security headers, CSRF on every POST, the navigation and pages per role, sign-out
and the idle timeout on the injected clock, the vendored htmx's checksum."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path

import pyotp
from fastapi.testclient import TestClient
from httpx import Response

from fiduciary.access import SYSTEM
from fiduciary.api.app import create_app
from fiduciary.clock import FixedClock
from fiduciary.console import HTMX
from fiduciary.ids import new_id
from fiduciary.monitoring.alerts import Finding, insert_finding
from fiduciary.monitoring.pack import Severity
from fiduciary.runtime import Runtime
from tests.conftest import STRONG, Staff, make_staff, table_rows

#: htmx.org 2.0.8 from the npm registry (package/dist/htmx.min.js).
HTMX_SHA256 = "22283ef68cb7545914f0a88a1bdedc7256a703d1d580c1d255217d0a50d31313"
STATIC = Path(__file__).parents[1] / "src" / "fiduciary" / "console" / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")


def browser(rt: Runtime, base_url: str = "http://testserver") -> TestClient:
    """A client with no credentials but its cookies, as a browser."""
    return TestClient(create_app(rt), base_url=base_url, raise_server_exceptions=False)


def csrf_of(page: Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(rt: Runtime, clock: FixedClock, staff: Staff, *, totp: str | None = None,
            base_url: str = "http://testserver") -> tuple[TestClient, Response]:
    """Opens the sign-in page and posts the form as a browser does (a fresh TOTP step)."""
    clock.advance(seconds=30)
    web = browser(rt, base_url)
    form = web.get("/console/login")
    assert form.status_code == 200
    r = web.post("/console/login", follow_redirects=False, data={
        "csrf_token": csrf_of(form), "username": staff.username, "password": staff.password,
        "totp": totp or pyotp.TOTP(staff.totp_secret).at(clock.now())})
    return web, r


def set_cookie(r: Response, name: str) -> str:
    return next(h for h in r.headers.get_list("set-cookie") if h.startswith(name + "="))


def test_sign_in_with_totp_lands_on_the_dashboard_in_a_strict_cookie(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    web, r = sign_in(rt, clock, dpo)
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookie = set_cookie(r, "fdy_console").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # the setting is off: plain HTTP on loopback
    home = web.get("/console/")
    assert home.status_code == 200
    assert re.search(r"<h1>[^<]*Dashboard", home.text)
    assert "dana" in home.text
    assert [e["action"] for e in table_rows(rt, "audit_events")].count("auth.login") == 2


def test_the_session_cookie_is_secure_when_the_setting_says_tls(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    rt.settings.console_secure_cookie = True
    web, r = sign_in(rt, clock, dpo, base_url="https://testserver")
    assert "secure" in set_cookie(r, "fdy_console").lower()
    assert web.get("/console/").status_code == 200
    # Over plain HTTP the browser keeps the Secure cookies to itself: no sign-in there.
    _, r = sign_in(rt, clock, dpo)
    assert r.status_code == 403


def test_a_wrong_password_or_code_is_refused_on_the_page_and_locks_like_the_api(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    web, r = sign_in(rt, clock, dpo, totp="000000")
    assert r.status_code == 401
    assert "<h1>Sign in</h1>" in r.text and "fdy_console=" not in r.headers.get(
        "set-cookie", "")
    assert web.get("/console/", follow_redirects=False).headers["location"] == "/console/login"
    # Keep guessing: the API's lockout answers the console too, even with the right code.
    for _ in range(10):
        web, r = sign_in(rt, clock, dpo, totp="000000")
    web, r = sign_in(rt, clock, dpo)
    assert r.status_code == 403 and "locked" in r.text.lower()
    assert "fdy_console=" not in r.headers.get("set-cookie", "")


def test_every_console_response_carries_the_security_headers(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    web, _ = sign_in(rt, clock, dpo)
    for path in ("/console/login", "/console/", "/console/privacy/dsr",
                 "/console/static/console.css", f"/console/static/{HTMX}",
                 "/console/no-such-page"):
        r = web.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
    page = web.get("/console/").text
    # No inline script or style for the CSP to block: everything comes from /console/static.
    assert "<script>" not in page and "style=" not in page and "<style" not in page
    assert f'<script src="/console/static/{HTMX}"' in page


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    web, _ = sign_in(rt, clock, dpo)
    for data in ({}, {"csrf_token": "0" * 64}):
        r = web.post("/console/logout", data=data, follow_redirects=False)
        assert r.status_code == 403 and "security token" in r.text
    assert web.get("/console/").status_code == 200  # the session was not ended
    # A forged sign-in form (no token from our page) signs nobody in, even with good creds.
    clock.advance(seconds=30)
    forged = browser(rt).post("/console/login", follow_redirects=False, data={
        "username": "dana", "password": dpo.password,
        "totp": pyotp.TOTP(dpo.totp_secret).at(clock.now())})
    assert forged.status_code == 403 and "fdy_console=" not in forged.headers.get(
        "set-cookie", "")
    # Another browser's token does not fit this one's cookie either.
    token = csrf_of(browser(rt).get("/console/login"))
    mine = browser(rt)
    mine.get("/console/login")
    r = mine.post("/console/login", follow_redirects=False, data={
        "csrf_token": token, "username": "dana", "password": dpo.password,
        "totp": pyotp.TOTP(dpo.totp_secret).at(clock.now())})
    assert r.status_code == 403


def test_the_navigation_and_pages_follow_the_role(rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    adjuster = make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])
    web, _ = sign_in(rt, clock, dpo)
    home = web.get("/console/").text
    assert 'href="/console/privacy/dsr"' in home and "Open data-subject requests" in home
    adj, _ = sign_in(rt, clock, adjuster)
    home = adj.get("/console/").text
    assert "/console/privacy/dsr" not in home and "data-subject" not in home
    listed = [e for e in table_rows(rt, "audit_events") if e["action"] == "dsr.list"]
    r = adj.get("/console/privacy/dsr")
    assert r.status_code == 403 and "privacy:manage" in r.text
    # Refused before the service ran: no list of requests was read for the adjuster.
    assert [e for e in table_rows(rt, "audit_events") if e["action"] == "dsr.list"] == listed


def test_the_dsr_queue_is_sorted_by_due_date_with_overdue_red_and_due_soon_amber(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    subject = rt.vault.create_subject(SYSTEM).id
    now = clock.now()
    # GDPR: a month from receipt. Received 40 days ago: overdue; 26 days ago: due soon.
    made = {days: rt.dsr.create(SYSTEM, subject, "access", "gdpr",
                                received_at=now - timedelta(days=days)).id
            for days in (1, 40, 26)}
    web, _ = sign_in(rt, clock, dpo)
    page = web.get("/console/privacy/dsr").text
    order = [page.index(made[d]) for d in (40, 26, 1)]
    assert order == sorted(order)  # by due date, the oldest first
    row = {d: page[page.rindex("<tr", 0, page.index(made[d])):page.index(made[d])]
           for d in made}
    assert 'class="due-overdue"' in row[40] and "overdue" in row[40]
    assert 'class="due-soon"' in row[26] and "due in" in row[26]
    assert 'class="due-later"' in row[1]
    home = web.get("/console/").text
    assert re.search(r"Overdue</span></dt><dd>1<", home)
    # Reading the queue is audited like the API's list, naming the customers it showed.
    listed = [e for e in table_rows(rt, "audit_events") if e["action"] == "dsr.list"]
    assert listed and subject in str(listed[-1]["subject_ids"])
    # The dashboard's counts name nobody: viewing it leaves no list event behind.
    home = web.get("/console/").text
    assert re.search(r"Due within 7 days</span></dt><dd>1<", home)
    assert [e for e in table_rows(rt, "audit_events") if e["action"] == "dsr.list"] == listed


def test_sign_out_ends_the_session(rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    web, r = sign_in(rt, clock, dpo)
    token = set_cookie(r, "fdy_console").split(";")[0].split("=", 1)[1]
    out = web.post("/console/logout", data={"csrf_token": csrf_of(web.get("/console/"))},
                   follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert web.get("/console/", follow_redirects=False).status_code == 303
    # The token itself is dead, not just the cookie: replayed by hand, it is refused.
    stolen = browser(rt)
    stolen.cookies.set("fdy_console", token, path="/console")
    assert stolen.get("/console/", follow_redirects=False).headers["location"] == (
        "/console/login")
    assert stolen.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 401


def test_an_idle_session_expires_on_the_clock(rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    web, _ = sign_in(rt, clock, dpo)
    clock.advance(minutes=14)
    assert web.get("/console/").status_code == 200  # activity keeps it alive
    clock.advance(minutes=16)
    r = web.get("/console/privacy/dsr", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert web.get("/console/login").status_code == 200


def test_the_vendored_htmx_is_the_pinned_release() -> None:
    assert hashlib.sha256((STATIC / HTMX).read_bytes()).hexdigest() == HTMX_SHA256



def test_a_new_user_enrols_in_the_console_then_signs_in(rt: Runtime, clock: FixedClock
                                                         ) -> None:
    made = rt.users.create("erin", ["dpo"])
    assert made.enrolment_code
    web = browser(rt)
    form = web.get("/console/enrol")
    wrong = web.post("/console/enrol", data={
        "csrf_token": csrf_of(form), "username": "erin", "enrolment_code": "WRONG-CODE",
        "password": STRONG})
    assert wrong.status_code == 401 and "<h1>Enrol</h1>" in wrong.text
    weak = web.post("/console/enrol", data={
        "csrf_token": csrf_of(form), "username": "erin",
        "enrolment_code": made.enrolment_code, "password": "Insurance2026!"})
    assert weak.status_code == 422 and "password" in weak.text
    assert "Insurance2026!" not in weak.text  # the refused password is not echoed
    done = web.post("/console/enrol", data={
        "csrf_token": csrf_of(form), "username": "erin",
        "enrolment_code": made.enrolment_code, "password": STRONG})
    assert done.status_code == 200 and done.headers["cache-control"] == "no-store"
    secret = re.search(r"Authenticator secret</dt><dd><code>([A-Z2-7]+)<", done.text)
    assert secret
    erin = Staff("erin", web, secret.group(1), STRONG, [])
    signed, r = sign_in(rt, clock, erin)
    assert r.status_code == 303
    assert "Dashboard" in signed.get("/console/").text
    # The code worked once: enrolling again with it is refused.
    again = browser(rt)
    r = again.post("/console/enrol", data={
        "csrf_token": csrf_of(again.get("/console/enrol")), "username": "erin",
        "enrolment_code": made.enrolment_code, "password": STRONG})
    assert r.status_code == 401


def test_the_dashboard_shows_each_role_its_own_counts(rt: Runtime, clock: FixedClock) -> None:
    analyst = make_staff(rt, clock, "sam", ["security_analyst"])
    officer = make_staff(rt, clock, "carla", ["compliance_officer"])
    make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])
    finding = Finding(detection="self_access", severity=Severity.HIGH, score=90.0,
                      principal_kind="user", principal_id=rt.users.get("adam").id,
                      principal_name="adam", reason="watched", dedup_key=new_id(),
                      event_ids=[])
    with rt.db.write() as conn:
        assert insert_finding(conn, finding, clock.now())
    web, _ = sign_in(rt, clock, analyst)
    home = web.get("/console/").text
    assert "Open alerts by severity" in home
    assert re.search(r'sev-high">high</span></dt><dd>1<', home)
    assert "Compliance controls" not in home and "data-subject" not in home
    web, _ = sign_in(rt, clock, officer)
    home = web.get("/console/").text
    assert "Compliance controls" in home and "No control has been checked yet." in home
    assert "Open incidents" in home and "No open incidents." in home
    # An incident determined 60 hours ago: the 72-hour clocks are in their last day (amber).
    determined = clock.now() - timedelta(hours=60)
    rt.incidents.create(SYSTEM, {"title": "Adjuster account phished", "severity": "high",
                                 "kind": "unauthorized_access", "discovered_at": determined,
                                 "determined_at": determined})
    sam, _ = sign_in(rt, clock, analyst)
    seen = sam.get("/console/").text
    assert "Adjuster account phished" in seen
    assert re.search(r'class="badge amber">1[12] h \d+ min left', seen)
    failing = sorted(r.control.id for r in rt.posture.check() if r.outcome.status == "fail")
    assert failing  # a fresh store: attestations never made, no ROPA review yet …
    home = web.get("/console/").text
    assert f"{len(failing)} failing" in home and all(c in home for c in failing)


def test_a_csrf_token_from_another_session_is_refused(rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    adjuster = make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])
    victim, _ = sign_in(rt, clock, dpo)
    attacker, _ = sign_in(rt, clock, adjuster)
    # The adjuster's own valid token, planted in a form the DPO's browser posts.
    planted = csrf_of(attacker.get("/console/"))
    r = victim.post("/console/logout", data={"csrf_token": planted}, follow_redirects=False)
    assert r.status_code == 403
    assert victim.get("/console/privacy/dsr").status_code == 200  # still signed in


def test_a_busy_session_still_ends_at_the_absolute_timeout(rt: Runtime, clock: FixedClock
                                                            ) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    web, _ = sign_in(rt, clock, dpo)
    for _ in range(34):  # a page every 14 minutes: never idle, for 7 h 56 min
        clock.advance(minutes=14)
        assert web.get("/console/", follow_redirects=False).status_code == 200
    clock.advance(minutes=5)  # past the 8 hours since sign-in
    r = web.get("/console/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_after_a_reset_the_user_chooses_a_password_before_any_page(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    older, _ = sign_in(rt, clock, dpo)
    one_time = rt.users.reset_password("dana")
    dpo.password = one_time
    web, r = sign_in(rt, clock, dpo)
    assert r.status_code == 303
    r = web.get("/console/privacy/dsr", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/password"
    form = web.get("/console/password")
    wrong = web.post("/console/password", data={
        "csrf_token": csrf_of(form), "current": "not-my-password", "new": STRONG + "x"})
    assert wrong.status_code == 422 and "current" in wrong.text
    assert "not-my-password" not in wrong.text
    done = web.post("/console/password", follow_redirects=False, data={
        "csrf_token": csrf_of(form), "current": one_time, "new": STRONG + "x"})
    assert done.status_code == 303 and done.headers["location"] == "/console/"
    assert web.get("/console/privacy/dsr").status_code == 200
    assert older.get("/console/", follow_redirects=False).status_code == 303  # reset ended it


def test_markup_typed_into_the_sign_in_form_comes_back_escaped(rt: Runtime) -> None:
    web = browser(rt)
    form = web.get("/console/login")
    attack = '"><script src=/x.js></script>'
    r = web.post("/console/login", data={"csrf_token": csrf_of(form), "username": attack,
                                         "password": "x" * 12, "totp": "123456"})
    assert r.status_code == 401
    assert attack not in r.text and "&#34;&gt;&lt;script" in r.text


def test_an_unknown_console_address_is_an_html_404_page_or_the_sign_in(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = make_staff(rt, clock, "nora", ["dpo"])
    r = browser(rt).get("/console/no-such-page", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    web, _ = sign_in(rt, clock, dpo)
    r = web.get("/console/no-such-page")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Not found" in r.text and 'href="/console/privacy/dsr"' in r.text  # with the nav
    assert "content-security-policy" in r.headers
    # The static files and the API's own 404 are untouched by the console's fallback.
    assert web.get("/console/static/console.css").status_code == 200
    assert web.get("/console/static/nothing.css").status_code == 404
    assert web.get("/v1/nothing").headers["content-type"].startswith("application/")
