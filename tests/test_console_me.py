"""The console's pages of every staff member (issue 15): a customer's record opened for a
chosen purpose and shown as the vault decides (masked, withheld with reasons, audited with the
purpose), never an unrelated customer's; my training with an assessment; my sessions and
signing out everywhere (with ``POST /v1/auth/logout-all``); my break-glass grants. And the
speak-up pages: the public report and thread (no cookie, no CSRF token, nothing logged) and the
ethics officer's cases."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from markupsafe import escape

from fiduciary.clock import FixedClock
from fiduciary.logs import WithoutPaths
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from tests.conftest import Staff, make_staff, table_rows
from tests.test_console import browser, csrf_of, sign_in
from tests.test_insider_attacks import SSN, customer
from tests.test_training import right_answers, wrong_answers

CH = "claims_handling"
REPORT = "Surveyor Pemberton-Quaile inflates storm claims for a cut (canary Obsidian-40417)"
FEEDBACK = "We have opened an inquiry (canary Tamarisk-66203)"
REPLY = "Thank you; the invoices are in the blue folder (canary Larkspur-51190)"


@pytest.fixture
def world(rt: Runtime) -> dict[str, dict[str, str]]:
    """A customer of the adjuster's claim in the west, and another adjuster's customer."""
    return {"mine": customer(rt, "west", adjuster="adam", claim="CLM-1"),
            "theirs": customer(rt, "west", adjuster="other.adj", claim="CLM-2")}


@pytest.fixture
def adam(rt: Runtime, clock: FixedClock) -> Staff:
    return make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])


def record_url(subject: str, collection: str, record_id: str, purpose: str | None = None
               ) -> str:
    url = f"/console/customers/{subject}/records/{collection}/{record_id}"
    return url + (f"?purpose={purpose}" if purpose else "")


def events(rt: Runtime, action: str) -> list[dict[str, Any]]:
    return [json.loads(str(e["event"])) for e in table_rows(rt, "audit_events")
            if e["action"] == action]


def post(web: TestClient, path: str, data: dict[str, str], page: str | None = None
         ) -> Response:
    """Posts a form with the CSRF token of the page it is on (``page``, else ``path``)."""
    token = csrf_of(web.get(page or path))
    return web.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


# -- customers -------------------------------------------------------------------------------
def test_an_adjuster_chooses_a_purpose_then_sees_the_record_as_the_vault_masks_it(
        rt: Runtime, clock: FixedClock, adam: Staff, world: dict[str, dict[str, str]]) -> None:
    mine = world["mine"]
    web, _ = sign_in(rt, clock, adam)
    assert 'href="/console/customers"' in web.get("/console/").text
    # Finding the customer asks for a purpose first: no default, nothing read yet.
    r = web.get(f"/console/customers?subject={mine['subject']}", follow_redirects=True)
    assert r.status_code == 200 and f'value="{CH}"' in r.text
    assert "checked" not in r.text and "Ortiz" not in r.text
    assert events(rt, "subject.records") == []
    r = web.get(f"/console/customers/{mine['subject']}?purpose={CH}")
    assert r.status_code == 200
    assert record_url(mine["subject"], "persons", mine["person"], CH) in r.text
    assert record_url(mine["subject"], "claims", mine["claim"], CH) in r.text
    # The record page too starts with the purposes the policy gives the role.
    r = web.get(record_url(mine["subject"], "persons", mine["person"]))
    assert r.status_code == 200 and f'value="{CH}"' in r.text and "Ortiz" not in r.text

    r = web.get(record_url(mine["subject"], "persons", mine["person"], CH))
    assert r.status_code == 200
    api = adam.client.get(f"/v1/collections/persons/records/{mine['person']}?purpose={CH}")
    shown = api.json()
    # Exactly what the API returns: each value, masked ones as masked, withheld ones named.
    for value in shown["data"].values():
        assert str(value).lower() in r.text.lower()
    assert shown["data"]["national_id"] != SSN and shown["data"]["national_id"] in r.text
    assert SSN not in r.text
    assert "Ortiz-CLM-1" in r.text
    assert "masked" in r.text and "Nothing withheld" in r.text
    # A withheld field is listed with the vault's reason, and its value is not on the page.
    r = web.get(record_url(mine["subject"], "policies", mine["policy"], CH))
    api = adam.client.get(f"/v1/collections/policies/records/{mine['policy']}?purpose={CH}")
    assert api.json()["withheld"] == [{"field": "premium", "reason": "purpose_not_allowed"}]
    assert re.search(r">premium<.*?purpose_not_allowed", r.text, re.S)
    assert "1200" not in r.text and "POL-CLM-1" in r.text
    # The page view is audited as the API's read, with the purpose chosen.
    reads = [e for e in events(rt, "record.read") if e["actor"]["name"] == "adam"]
    assert reads and all(e["purpose"] == CH for e in reads)
    assert mine["person"] in reads[0]["record_ids"]
    assert "national_id" in reads[0]["details"]["masked_fields"]


def test_an_adjuster_cannot_reach_an_unrelated_customer_by_url(
        rt: Runtime, clock: FixedClock, adam: Staff, world: dict[str, dict[str, str]]) -> None:
    theirs = world["theirs"]
    web, _ = sign_in(rt, clock, adam)
    for url in (f"/console/customers/{theirs['subject']}?purpose={CH}",
                record_url(theirs["subject"], "persons", theirs["person"], CH),
                record_url(theirs["subject"], "claims", theirs["claim"], CH),
                # Their record under the adjuster's own customer's address.
                record_url(world["mine"]["subject"], "persons", theirs["person"], CH)):
        r = web.get(url)
        assert r.status_code == 404, (url, r.status_code)
        assert "Ortiz-CLM-2" not in r.text and SSN not in r.text and "CLM-2" not in r.text
    # A record of the adjuster's own customer shown under another customer's address is not.
    r = web.get(record_url(theirs["subject"], "persons", world["mine"]["person"], CH))
    assert r.status_code == 404 and "Ortiz" not in r.text


def test_a_purpose_the_role_lacks_is_refused_and_no_value_shown(
        rt: Runtime, clock: FixedClock, adam: Staff, world: dict[str, dict[str, str]]) -> None:
    mine = world["mine"]
    web, _ = sign_in(rt, clock, adam)
    r = web.get(record_url(mine["subject"], "persons", mine["person"]))
    assert 'value="marketing"' not in r.text and 'value="underwriting"' not in r.text
    for purpose in ("underwriting", "marketing", "no_such_purpose"):
        r = web.get(record_url(mine["subject"], "persons", mine["person"], purpose))
        assert r.status_code in (403, 422), (purpose, r.status_code)
        assert "Ortiz" not in r.text and "1120" not in r.text
    # The customer's list for such a purpose is empty, as the API's.
    r = web.get(f"/console/customers/{mine['subject']}?purpose=marketing")
    assert r.status_code == 200 and "No record of this customer" in r.text
    assert mine["person"] not in r.text
    denied = [e for e in events(rt, "record.read") if e["decision"] == "deny"]
    assert {e["purpose"] for e in denied} >= {"underwriting", "marketing"}


def test_a_search_finds_only_what_the_role_sees_in_clear_and_keeps_the_value_out_of_urls(
        rt: Runtime, clock: FixedClock, adam: Staff, world: dict[str, dict[str, str]]) -> None:
    web, _ = sign_in(rt, clock, adam)
    page = web.get("/console/customers")
    assert 'value="persons.last_name"' in page.text
    token = csrf_of(page)
    r = web.post("/console/customers/search", data={
        "csrf_token": token, "field": "persons.last_name", "value": "Ortiz-CLM-1",
        "purpose": CH})
    assert r.status_code == 200 and world["mine"]["subject"] in r.text
    r = web.post("/console/customers/search", data={
        "csrf_token": token, "field": "persons.last_name", "value": "Ortiz-CLM-2",
        "purpose": CH})
    assert r.status_code == 200 and world["theirs"]["subject"] not in r.text
    assert "No record you may see matches" in r.text
    # The adjuster sees the national id masked: searching by it would recover it.
    r = web.post("/console/customers/search", data={
        "csrf_token": token, "field": "persons.national_id", "value": SSN, "purpose": CH})
    assert r.status_code == 403 and world["mine"]["subject"] not in r.text
    # Without the form's token: refused before any search ran.
    searches = len(events(rt, "record.search"))
    r = web.post("/console/customers/search", data={
        "field": "persons.last_name", "value": "Ortiz-CLM-1", "purpose": CH})
    assert r.status_code == 403 and len(events(rt, "record.search")) == searches
    searched = events(rt, "record.search")
    assert searched and all("Ortiz" not in json.dumps(e) for e in searched)


def test_a_role_without_customer_data_has_no_customers_page(
        rt: Runtime, clock: FixedClock, world: dict[str, dict[str, str]]) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    assert "/console/customers" not in web.get("/console/").text
    for url in ("/console/customers", f"/console/customers/{world['mine']['subject']}",
                record_url(world["mine"]["subject"], "persons", world["mine"]["person"], CH)):
        r = web.get(url)
        assert r.status_code == 403 and "Ortiz" not in r.text, url
    # The other "Me" pages are everyone's.
    home = web.get("/console/").text
    for path in ("/console/me/training", "/console/me/sessions", "/console/me/break-glass"):
        assert f'href="{path}"' in home and web.get(path).status_code == 200


# -- my training ----------------------------------------------------------------------------
def test_a_new_hire_takes_an_assessment_in_the_console(rt: Runtime, clock: FixedClock) -> None:
    newbie = make_staff(rt, clock, "nina", ["claims_adjuster"], ["west"], trained=False)
    hers = customer(rt, "west", adjuster="nina", claim="CLM-9")
    web, _ = sign_in(rt, clock, newbie)
    # Untrained, she sees her customer with the government id withheld, and why.
    r = web.get(record_url(hers["subject"], "persons", hers["person"], CH))
    assert re.search(r">national_id<.*?training_missing", r.text, re.S)
    assert "1120" not in r.text
    page = web.get("/console/me/training")
    mine = rt.training.mine(rt.users.authenticate(
        newbie.client.headers["Authorization"].split()[1]))
    assert page.status_code == 200 and mine
    first = mine[0]
    assert first["title"] in page.text and "missing" in page.text
    form = web.get(f"/console/me/training/{first['id']}")
    assert form.status_code == 200
    for q in first["questions"]:
        assert str(escape(q["text"])) in form.text
    assert "correct" not in form.text

    def answered(answers: list[int | list[int]]) -> dict[str, str]:
        data = {}
        for i, a in enumerate(answers):
            if isinstance(a, list):
                data.update({f"q{i}.{j}": "1" for j in a})
            else:
                data[f"q{i}"] = str(a)
        return data

    # An unanswered question is named, and the attempt counts for nothing.
    r = post(web, f"/console/me/training/{first['id']}", {})
    assert r.status_code == 422 and "answers[0]" in r.text
    r = post(web, f"/console/me/training/{first['id']}",
             answered(wrong_answers(rt.training.catalogue, first["id"])))
    assert r.status_code == 200 and "not passed" in r.text
    r = post(web, f"/console/me/training/{first['id']}",
             answered(right_answers(rt.training.catalogue, first["id"])))
    assert r.status_code == 200 and "passed" in r.text and "100%" in r.text
    assert [a["passed"] for a in table_rows(rt, "training_attempts")] == [False, True]
    assert "current" in web.get("/console/me/training").text
    # Without the form's token nothing is graded.
    r = web.post(f"/console/me/training/{first['id']}", follow_redirects=False,
                 data=answered(right_answers(rt.training.catalogue, first["id"])))
    assert r.status_code == 403 and len(table_rows(rt, "training_attempts")) == 2
    assert web.get("/console/me/training/no-such-course").status_code == 404


# -- my sessions ----------------------------------------------------------------------------
def test_sign_out_everywhere_ends_every_session_and_is_audited(
        rt: Runtime, clock: FixedClock, adam: Staff) -> None:
    laptop, _ = sign_in(rt, clock, adam)
    phone, _ = sign_in(rt, clock, adam)
    page = laptop.get("/console/me/sessions")
    assert page.status_code == 200
    # The API session of make_staff and the two console ones; this one marked.
    assert page.text.count("<tr>") == 1 + 3 and page.text.count("this session</span>") == 1
    # A forged post (no token) ends nothing.
    r = laptop.post("/console/me/sessions/end-all", follow_redirects=False)
    assert r.status_code == 403 and phone.get("/console/me/sessions").status_code == 200
    r = post(laptop, "/console/me/sessions/end-all", {}, page="/console/me/sessions")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    for web in (laptop, phone):
        r = web.get("/console/me/sessions", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert adam.client.get("/v1/auth/me").status_code == 401
    [event] = events(rt, "auth.logout_all")
    assert event["actor"]["name"] == "adam" and event["details"]["sessions_ended"] == 3


def test_the_api_signs_a_user_out_everywhere(rt: Runtime, clock: FixedClock,
                                             client: TestClient) -> None:
    dana = make_staff(rt, clock, "dana", ["dpo"])
    other = make_staff(rt, clock, "ola", ["dpo"])
    web, _ = sign_in(rt, clock, dana)
    r = dana.client.post("/v1/auth/logout-all")
    assert r.status_code == 200 and r.json() == {"sessions_ended": 2}
    assert dana.client.get("/v1/auth/me").status_code == 401
    assert web.get("/console/", follow_redirects=False).status_code == 303
    assert other.client.get("/v1/auth/me").status_code == 200  # someone else's stay
    # An API key has no session to end; nobody, nothing.
    assert client.post("/v1/auth/logout-all").status_code == 401
    assert browser(rt).post("/v1/auth/logout-all").status_code == 401


# -- my break-glass -------------------------------------------------------------------------
def test_an_adjuster_requests_break_glass_and_sees_only_their_own_grants(
        rt: Runtime, clock: FixedClock, adam: Staff, world: dict[str, dict[str, str]]) -> None:
    theirs = world["theirs"]["subject"]
    other = make_staff(rt, clock, "olga", ["claims_adjuster"], ["west"])
    other.client.post("/v1/auth/break-glass", json={
        "subject_ids": [world["mine"]["subject"]], "minutes": 10,
        "justification": "Olga's own emergency, canary Hornbeam-7731"})
    web, _ = sign_in(rt, clock, adam)
    page = web.get("/console/me/break-glass")
    assert page.status_code == 200 and "never broken glass" in page.text
    assert "Hornbeam" not in page.text
    r = post(web, "/console/me/break-glass", {"subject_ids": theirs, "minutes": "abc",
                                              "justification": "x"}, "/console/me/break-glass")
    assert r.status_code == 422 and "minutes" in r.text
    r = post(web, "/console/me/break-glass", {"subject_ids": theirs, "minutes": "15",
                                              "justification": "x"}, "/console/me/break-glass")
    assert r.status_code == 422 and "justification" in r.text
    r = web.post("/console/me/break-glass", follow_redirects=False, data={  # no token
        "subject_ids": theirs, "minutes": "15", "justification": "A forged request " * 3})
    assert r.status_code == 403
    assert rt.users.break_glass_grants(user_id=rt.users.get("adam").id) == []
    reason = "Claimant in hospital, her adjuster is away; payment due today"
    r = post(web, "/console/me/break-glass", {"subject_ids": theirs, "minutes": "15",
                                              "justification": reason},
             "/console/me/break-glass")
    assert r.status_code == 303 and r.headers["location"] == "/console/me/break-glass"
    page = web.get("/console/me/break-glass").text
    assert reason in page and theirs in page and "pending" in page and "active" in page
    assert "Hornbeam" not in page
    [event] = [e for e in events(rt, "auth.break_glass") if e["actor"]["name"] == "adam"]
    assert event["subject_ids"] == [theirs] and reason not in json.dumps(event)
    # A role without customer data is refused by the service, on the page.
    admin = make_staff(rt, clock, "ada", ["admin"])
    aweb, _ = sign_in(rt, clock, admin)
    r = post(aweb, "/console/me/break-glass", {"subject_ids": theirs, "minutes": "15",
                                               "justification": reason},
             "/console/me/break-glass")
    assert r.status_code == 403 and "no access to customer data" in r.text


# -- speak-up -------------------------------------------------------------------------------
def receipt_of(page: Response) -> str:
    found = re.search(r'<output id="receipt"[^>]*>([^<]+)</output>', page.text)
    assert found, page.text
    return found.group(1)


def test_a_reporter_files_reads_and_replies_without_a_cookie_and_the_officer_answers(
        rt: Runtime, clock: FixedClock) -> None:
    anon = browser(rt)
    form = anon.get("/console/speakup")
    assert form.status_code == 200 and "csrf_token" not in form.text
    r = anon.post("/console/speakup", data={"text": REPORT, "category": "fraud"})
    assert r.status_code == 201
    receipt = receipt_of(r)
    assert receipt not in anon.get("/console/speakup/thread").text  # shown once
    r = anon.post("/console/speakup/thread", data={"receipt": receipt})
    assert r.status_code == 200 and REPORT in r.text and "No message yet" in r.text
    wrong = anon.post("/console/speakup/thread", data={"receipt": "0" * 20})
    assert wrong.status_code == 401 and REPORT not in wrong.text
    # The ethics officer reads, acknowledges and answers in the console.
    eve = make_staff(rt, clock, "eve", ["ethics_officer"])
    web, _ = sign_in(rt, clock, eve)
    assert 'href="/console/speakup/cases"' in web.get("/console/").text
    [case] = rt.speakup.cases(SYSTEM)
    cases = web.get("/console/speakup/cases")
    assert cases.status_code == 200 and case["id"] in cases.text and "anonymous" in cases.text
    url = f"/console/speakup/cases/{case['id']}"
    assert REPORT in web.get(url).text
    r = web.post(url + "/acknowledge", follow_redirects=False)  # no token
    assert r.status_code == 403 and rt.speakup.show(SYSTEM, case["id"])["status"] == "received"
    r = post(web, url + "/acknowledge", {}, url)
    assert r.status_code == 303 and r.headers["location"] == url
    r = post(web, url + "/acknowledge", {}, url)
    assert r.status_code == 409 and "already acknowledged" in r.text
    r = post(web, url + "/feedback", {"text": ""}, url)
    assert r.status_code == 422 and "text" in r.text
    assert post(web, url + "/feedback", {"text": FEEDBACK}, url).status_code == 303
    # The reporter reads the answer and replies, with the receipt alone.
    r = anon.post("/console/speakup/thread", data={"receipt": receipt})
    assert FEEDBACK in r.text and "acknowledged" in r.text
    r = anon.post("/console/speakup/thread/messages", data={"receipt": receipt,
                                                            "text": REPLY})
    assert r.status_code == 201 and REPLY in r.text
    assert REPLY in web.get(url).text
    assert post(web, url + "/close", {"outcome": "Substantiated"}, url).status_code == 303
    r = anon.post("/console/speakup/thread/messages", data={"receipt": receipt,
                                                            "text": "one more"})
    assert r.status_code == 409 and "closed" in r.text
    # No page of the channel gave the reporter a cookie.
    assert not anon.cookies


def test_only_the_ethics_officer_has_the_case_pages(rt: Runtime, clock: FixedClock) -> None:
    browser(rt).post("/console/speakup", data={"text": REPORT})
    [case] = rt.speakup.cases(SYSTEM)
    for username, roles in (("ada", ["admin"]), ("dora", ["dpo"])):
        web, _ = sign_in(rt, clock, make_staff(rt, clock, username, roles))
        assert "/console/speakup/cases" not in web.get("/console/").text
        for url in ("/console/speakup/cases", f"/console/speakup/cases/{case['id']}"):
            r = web.get(url)
            assert r.status_code == 403 and REPORT not in r.text
        r = post(web, f"/console/speakup/cases/{case['id']}/close", {"outcome": "gone"},
                 "/console/")
        assert r.status_code == 403
    assert rt.speakup.show(SYSTEM, case["id"])["status"] == "received"
    # Without a session, the case pages send the browser to sign in.
    r = browser(rt).get("/console/speakup/cases", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_the_channel_pages_leave_no_access_log_line_and_no_address(
        rt: Runtime, clock: FixedClock, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    browser(rt)  # the app is built: its filters are installed
    access = logging.getLogger("uvicorn.access")
    quiet = [f for f in access.filters if isinstance(f, WithoutPaths)]

    def logged(path: str) -> bool:
        record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                                   '%s - "%s %s HTTP/%s" %d',
                                   ("203.0.113.7:5000", "POST", path, "1.1", 200), None)
        return all(f.filter(record) for f in quiet)

    for path in ("/console/speakup", "/console/speakup/thread",
                 "/console/speakup/thread/messages", "/console/speakup/cases"):
        assert not logged(path), path
    assert logged("/console/login") and logged("/console/speakupx")

    # A fault on a channel page is logged as its reference alone, never the report.
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a driver message quoting " + REPORT)

    monkeypatch.setattr(rt.speakup, "submit", broken)
    r = browser(rt).post("/console/speakup", data={"text": REPORT},
                         headers={"X-Request-ID": "reporter-chosen-id-4242"})
    assert r.status_code == 500 and "reporter-chosen-id-4242" not in r.headers.get(
        "x-request-id", "")
    lines = [rec.getMessage() for rec in caplog.records]
    assert not [line for line in lines if "Pemberton" in line or "/console/speakup" in line]


def test_flooding_the_public_report_page_is_rate_limited_and_stores_nothing(
        rt: Runtime) -> None:
    anon = browser(rt)
    # An empty report is refused naming the field, and stores nothing.
    r = anon.post("/console/speakup", data={"text": " "})
    assert r.status_code == 422 and "<strong>text</strong>" in r.text
    assert rt.speakup.cases(SYSTEM) == []
    # The refused one counted toward the address's limit too (the service counts first).
    for _ in range(rt.settings.speakup_reports_per_hour - 1):
        assert anon.post("/console/speakup", data={"text": REPORT}).status_code == 201
    r = anon.post("/console/speakup", data={"text": REPORT})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert 'id="receipt"' not in r.text and "What happened?" in r.text
    assert len(rt.speakup.cases(SYSTEM)) == rt.settings.speakup_reports_per_hour - 1
