"""The console's privacy office pages (issue 15): a data-subject request's page with its
timeline, countdown and workflow buttons, the access package download, the second person
an erasure or a package release needs; a customer's consent history; legal holds; the
retention plan and last runs; records of processing. Each page for its roles only, every
step through the service the API calls, on both backends."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

from fastapi.testclient import TestClient
from httpx import Response

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock
from fiduciary.runtime import Runtime
from tests.conftest import make_staff, table_rows
from tests.test_console import csrf_of, sign_in

PAGES = ("/console/privacy/dsr", "/console/privacy/consent", "/console/privacy/holds",
         "/console/privacy/retention", "/console/privacy/ropa")


def signed_in(rt: Runtime, clock: FixedClock, username: str, roles: list[str]
              ) -> TestClient:
    web, r = sign_in(rt, clock, make_staff(rt, clock, username, roles))
    assert r.status_code == 303, r.text
    return web


def post(web: TestClient, path: str, data: dict[str, str] | None = None,
         csrf: bool = True) -> Response:
    """Posts a console form as the browser does, with the page's CSRF token."""
    token = csrf_of(web.get("/console/")) if csrf else ""
    return web.post(path, data={**(data or {}), **({"csrf_token": token} if csrf else {})},
                    follow_redirects=False)


def customer(rt: Runtime) -> str:
    subject = rt.vault.create_subject(SYSTEM).id
    rt.vault.create_record(SYSTEM, "persons", subject, {
        "first_name": "Philippa", "last_name": "Quarrendon"}, "policy_administration")
    return subject


def actions(rt: Runtime, action: str) -> list[dict[str, object]]:
    return [e for e in table_rows(rt, "audit_events") if e["action"] == action]


def status_of(rt: Runtime, request_id: str) -> str:
    return rt.dsr.get(request_id).status


def text(page: Response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text)))


# -- who sees what -------------------------------------------------------------------------------
def test_the_privacy_pages_are_the_dpos_and_refused_by_url_to_other_roles(
        rt: Runtime, clock: FixedClock) -> None:
    dpo = signed_in(rt, clock, "pia", ["dpo"])
    home = dpo.get("/console/").text
    for path in PAGES:
        assert f'href="{path}"' in home
        r = dpo.get(path)
        assert r.status_code == 200, (path, r.text)
    adjuster = signed_in(rt, clock, "adam", ["claims_adjuster"])
    home = adjuster.get("/console/").text
    request_id = rt.dsr.create(SYSTEM, customer(rt), "access", "gdpr").id
    for path in (*PAGES, f"/console/privacy/dsr/{request_id}",
                 f"/console/privacy/dsr/{request_id}/package"):
        assert f'href="{path}"' not in home
        r = adjuster.get(path)
        assert r.status_code == 403 and "Not permitted" in r.text, path
    assert request_id not in adjuster.get(f"/console/privacy/dsr/{request_id}").text
    # The compliance officer reads the register (config:read), not the requests or holds.
    officer = signed_in(rt, clock, "cleo", ["compliance_officer"])
    home = officer.get("/console/").text
    assert 'href="/console/privacy/ropa"' in home and 'href="/console/privacy/holds"' not in home
    assert officer.get("/console/privacy/ropa").status_code == 200
    assert officer.get("/console/privacy/holds").status_code == 403


# -- a request's page and its workflow -----------------------------------------------------------
def test_a_dpo_takes_an_access_request_to_fulfilled_and_another_dpo_downloads_its_package(
        rt: Runtime, clock: FixedClock) -> None:
    subject = customer(rt)
    request_id = rt.dsr.create(SYSTEM, subject, "access", "gdpr", channel="email").id
    first = signed_in(rt, clock, "pia", ["dpo"])
    queue = first.get("/console/privacy/dsr").text
    assert f'href="/console/privacy/dsr/{request_id}"' in queue
    page = first.get(f"/console/privacy/dsr/{request_id}")
    assert page.status_code == 200 and subject in page.text and "received" in page.text
    assert "Verify identity" in page.text and "Start" not in page.text
    assert actions(rt, "dsr.read")  # the page is a read of the request, audited as the API's
    r = post(first, f"/console/privacy/dsr/{request_id}/start")  # out of turn: refused
    assert r.status_code == 409 and "verify the requester's identity first" in text(r)
    for step, data in (("verify", {"method": "id_document"}), ("acknowledge", {}),
                       ("start", {}), ("fulfil", {"note": ""})):
        r = post(first, f"/console/privacy/dsr/{request_id}/{step}", data)
        assert r.status_code == 303, (step, r.text)
        assert r.headers["location"] == f"/console/privacy/dsr/{request_id}"
    assert status_of(rt, request_id) == "fulfilled"
    page = first.get(f"/console/privacy/dsr/{request_id}")
    steps = re.findall(r"<tr>\s*<td class=\"nowrap\">[^<]+</td>\s*<td>(\w+)</td>", page.text)
    assert steps == ["create", "verify", "acknowledge", "start", "fulfil"]
    assert "user:pia" in page.text and "Deny" not in page.text  # closed: no buttons
    # Who verified the identity does not release the package (two-person rule).
    assert "/package" not in page.text and "You verified the identity" in page.text
    r = first.get(f"/console/privacy/dsr/{request_id}/package?format=json")
    assert r.status_code == 403 and "second person" in r.text and "Philippa" not in r.text
    second = signed_in(rt, clock, "quinn", ["dpo"])
    page = second.get(f"/console/privacy/dsr/{request_id}").text
    assert f"/console/privacy/dsr/{request_id}/package?format=json" in page
    # The request's pages name ids and counts, never the customer's data.
    assert "Philippa" not in page and "Philippa" not in second.get("/console/privacy/dsr").text
    r = second.get(f"/console/privacy/dsr/{request_id}/package?format=json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"] == f'attachment; filename="access-{request_id}.json"'
    assert r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert {rec["data"].get("first_name") for rec in doc["records"]} == {"Philippa"}
    # The same bytes as the API gives the same user, each download audited alike.
    api = make_staff(rt, clock, "rhea", ["dpo"]).client
    assert api.get(f"/v1/dsr/{request_id}/package?format=json").content == r.content
    downloads = actions(rt, "dsr.package_download")
    assert len(downloads) == 2 and all(subject in str(e["event"]) for e in downloads)


def test_the_verifier_cannot_approve_their_own_erasure(rt: Runtime, clock: FixedClock) -> None:
    subject = customer(rt)
    request_id = rt.dsr.create(SYSTEM, subject, "erasure", "gdpr").id
    first = signed_in(rt, clock, "pia", ["dpo"])
    page = text(first.get(f"/console/privacy/dsr/{request_id}"))
    assert "Second person" in page and "erasing the customer's data (fulfil)" in page
    assert post(first, f"/console/privacy/dsr/{request_id}/verify",
                {"method": "id_document"}).status_code == 303
    page = first.get(f"/console/privacy/dsr/{request_id}").text
    assert "another DPO must do these" in page and "/fulfil" not in page
    # The attack: the verifier posts the fulfil form anyway.
    r = post(first, f"/console/privacy/dsr/{request_id}/fulfil", {"note": ""})
    assert r.status_code == 403 and "second person of the privacy office" in text(r)
    assert status_of(rt, request_id) == "identity_verified"
    assert rt.vault.get_subject(SYSTEM, subject).id == subject  # not erased
    second = signed_in(rt, clock, "quinn", ["dpo"])
    page = second.get(f"/console/privacy/dsr/{request_id}").text
    assert "user:pia" in page and f"/console/privacy/dsr/{request_id}/fulfil" in page
    assert "You did not verify the identity: you may do these." in page
    assert post(second, f"/console/privacy/dsr/{request_id}/fulfil",
                {"note": ""}).status_code == 303
    assert status_of(rt, request_id) == "fulfilled"
    assert [e["actor"] for e in actions(rt, "dsr.fulfil")] == [
        rt.users.get("quinn").id]


def test_refused_steps_show_the_services_reason_and_change_nothing(
        rt: Runtime, clock: FixedClock) -> None:
    subject = customer(rt)
    late = rt.dsr.create(SYSTEM, subject, "access", "gdpr",
                         clock.now() - timedelta(days=40)).id
    soon = rt.dsr.create(SYSTEM, subject, "access", "gdpr",
                         clock.now() - timedelta(days=26)).id
    dpo = signed_in(rt, clock, "pia", ["dpo"])
    assert re.search(r'badge red">overdue: response, \d+ d late', dpo.get(
        f"/console/privacy/dsr/{late}").text)
    assert re.search(r'badge amber">due (in \d d|today)', dpo.get(
        f"/console/privacy/dsr/{soon}").text)
    before = rt.dsr.get(soon)
    r = post(dpo, f"/console/privacy/dsr/{soon}/deny", {"reason": "   "})
    assert r.status_code == 422 and "reason : required" in text(r)
    r = post(dpo, f"/console/privacy/dsr/{soon}/verify", {"method": "telepathy"})
    assert r.status_code == 422 and "method : one of" in text(r)
    assert rt.dsr.get(soon) == before
    # Extend once with a reason: the new due date and the reason are on the page.
    r = post(dpo, f"/console/privacy/dsr/{soon}/extend", {"reason": "complex request"})
    assert r.status_code == 303
    page = dpo.get(f"/console/privacy/dsr/{soon}").text
    assert "complex request" in page and "extended from" in page
    assert "Extend the deadline" not in page
    r = post(dpo, f"/console/privacy/dsr/{soon}/extend", {"reason": "again"})
    assert r.status_code == 409 and "already extended" in text(r)
    # Without the CSRF token, or as a role without privacy:manage: refused, nothing changes.
    r = post(dpo, f"/console/privacy/dsr/{soon}/deny", {"reason": "x"}, csrf=False)
    assert r.status_code == 403 and "security token" in r.text
    adjuster = signed_in(rt, clock, "adam", ["claims_adjuster"])
    r = post(adjuster, f"/console/privacy/dsr/{soon}/deny", {"reason": "x"})
    assert r.status_code == 403
    assert post(dpo, f"/console/privacy/dsr/{soon}/erase").status_code == 404
    assert post(dpo, "/console/privacy/dsr/nope/verify",
                {"method": "id_document"}).status_code == 404
    assert status_of(rt, soon) == "received"
    r = post(dpo, f"/console/privacy/dsr/{soon}/deny", {"reason": "manifestly unfounded"})
    assert r.status_code == 303 and status_of(rt, soon) == "denied"
    assert "manifestly unfounded" in dpo.get(f"/console/privacy/dsr/{soon}").text
    denied = actions(rt, "dsr.deny")
    assert "manifestly unfounded" not in json.dumps(denied, default=str)  # a digest only


# -- consent -------------------------------------------------------------------------------------
def test_consent_history_of_a_customer(rt: Runtime, clock: FixedClock) -> None:
    subject = customer(rt)
    rt.consent_desk.record(SYSTEM, subject, "marketing", True, None, "2026-01", "web_form")
    clock.advance(days=3)
    rt.consent_desk.record(SYSTEM, subject, "marketing", False, None, None, "phone",
                           "call-centre")
    dpo = signed_in(rt, clock, "pia", ["dpo"])
    form = dpo.get("/console/privacy/consent")
    assert form.status_code == 200 and '<label for="subject">' in form.text
    page = dpo.get("/console/privacy/consent", params={"subject": subject})
    shown = text(page)
    assert page.status_code == 200
    assert re.search(r"marketing withdrawn .* phone \(call-centre\)", shown)
    rows = re.findall(r"<td>marketing</td>\s*<td>.*?(granted|withdrawn)", page.text, re.S)
    assert rows == ["withdrawn", "withdrawn", "granted"]  # current, then newest first
    assert "web form" in shown and "2026-01" in shown
    unknown = dpo.get("/console/privacy/consent", params={"subject": "no-such-customer"})
    assert unknown.status_code == 404 and "not found" in unknown.text
    empty = customer(rt)
    assert "No consent recorded" in dpo.get("/console/privacy/consent",
                                            params={"subject": empty}).text
    # A role without consent:read or privacy:manage: refused, nothing of the subject shown.
    officer = signed_in(rt, clock, "cleo", ["compliance_officer"])
    r = officer.get("/console/privacy/consent", params={"subject": subject})
    assert r.status_code == 403 and "call-centre" not in r.text


# -- legal holds ---------------------------------------------------------------------------------
def test_legal_holds_are_added_and_released_by_a_second_dpo(rt: Runtime,
                                                             clock: FixedClock) -> None:
    subject = customer(rt)
    first = signed_in(rt, clock, "pia", ["dpo"])
    assert "No active legal holds" in first.get("/console/privacy/holds").text
    r = post(first, "/console/privacy/holds", {"scope": "planet", "target": subject,
                                               "reason": "", "owner": "legal"})
    assert r.status_code == 422
    assert "scope : expected one of" in text(r) and "reason : required" in text(r)
    r = post(first, "/console/privacy/holds", {"scope": "subject", "target": "nobody",
                                               "reason": "Smith v Insurer", "owner": "legal"})
    assert r.status_code == 422 and "no subject with id nobody" in text(r)
    assert table_rows(rt, "legal_holds") == []
    r = post(first, "/console/privacy/holds", {"scope": "subject", "target": subject,
                                               "reason": "Smith v Insurer", "owner": "legal"})
    assert r.status_code == 303 and r.headers["location"] == "/console/privacy/holds"
    (hold,) = rt.holds.list()
    page = first.get("/console/privacy/holds").text
    assert "Smith v Insurer" in page and subject in page
    assert "another DPO must release it" in page and f"/holds/{hold.id}/release" not in page
    # The attack: whoever placed it posts the release anyway.
    r = post(first, f"/console/privacy/holds/{hold.id}/release")
    assert r.status_code == 403 and "second person" in text(r)
    assert rt.holds.list() == [hold]
    assert post(first, f"/console/privacy/holds/{hold.id}/release",
                csrf=False).status_code == 403
    second = signed_in(rt, clock, "quinn", ["dpo"])
    assert f"/holds/{hold.id}/release" in second.get("/console/privacy/holds").text
    r = post(second, f"/console/privacy/holds/{hold.id}/release")
    assert r.status_code == 303 and rt.holds.list() == []
    page = text(second.get("/console/privacy/holds"))
    assert "No active legal holds" in page and re.search(r"UTC quinn subject", page)
    assert [e["action"] for e in table_rows(rt, "audit_events")
            if str(e["action"]).startswith("hold.")] == ["hold.add", "hold.release"]


# -- retention -----------------------------------------------------------------------------------
def test_the_retention_plan_as_of_a_date_and_the_last_runs(rt: Runtime,
                                                           clock: FixedClock) -> None:
    subject = customer(rt)
    held = customer(rt)
    rt.holds.add(SYSTEM, "subject", held, "Smith v Insurer", "legal")
    dpo = signed_in(rt, clock, "pia", ["dpo"])
    page = dpo.get("/console/privacy/retention").text
    assert "Retention has not run yet" in page and 'type="date"' in page
    today = dpo.get("/console/privacy/retention", params={"as_of": str(clock.now().date())})
    assert "Nothing has expired" in today.text
    later = dpo.get("/console/privacy/retention", params={"as_of": "2100-01-01"})
    assert later.status_code == 200 and "nothing was purged" in later.text
    rows = re.findall(r"<tr><td>(.*?)</td>\s*<td>persons</td><td><code>[^<]+</code></td>"
                      r"<td><code>([^<]+)</code></td>", later.text)
    assert {(sid, "held" in action) for action, sid in rows} == {(subject, False),
                                                                (held, True)}
    assert rt.vault.get_subject(SYSTEM, subject).id == subject  # a dry run: nothing purged
    assert len(actions(rt, "retention.plan")) == 2 and not actions(rt, "retention.run")
    r = dpo.get("/console/privacy/retention", params={"as_of": "2100-13-01"})
    assert r.status_code == 422 and "as_of : a date" in text(r)
    rt.retention.run(SYSTEM)
    page = text(dpo.get("/console/privacy/retention"))
    assert re.search(rf"system {clock.now().date()} 0 0 0 0 0", page), page


# -- records of processing -----------------------------------------------------------------------
def test_the_records_of_processing_as_tables(rt: Runtime, clock: FixedClock) -> None:
    dpo = signed_in(rt, clock, "pia", ["dpo"])
    page = dpo.get("/console/privacy/ropa")
    assert page.status_code == 200
    doc = rt.ropa.generate(SYSTEM, "json")
    for activity in doc["activities"]:
        assert f'id="purpose-{activity["purpose"]}"' in page.text
    assert "AES-256-GCM" in page.text and doc["sources"]["datamap"]["sha256"] in page.text
    assert "<style" not in page.text  # the console's stylesheet, no inline style (CSP)
    generated = actions(rt, "ropa.generated")
    assert generated and str(generated[0]["actor"]) == rt.users.get("pia").id


def test_an_agent_reads_consent_of_their_regions_customers_only(rt: Runtime,
                                                                clock: FixedClock) -> None:
    def in_region(region: str) -> str:
        subject = rt.vault.create_subject(SYSTEM).id
        rt.vault.create_record(SYSTEM, "persons", subject, {
            "first_name": "Vera", "last_name": "Ortiz", "region": region}, "legal_obligation")
        rt.consent_desk.record(SYSTEM, subject, "marketing", True, None, "2026-01",
                               "web_form", f"{region}-kiosk")
        return subject

    west, east = in_region("west"), in_region("east")
    web, r = sign_in(rt, clock, make_staff(rt, clock, "cal", ["call_center_agent"], ["west"]))
    assert r.status_code == 303
    home = web.get("/console/").text
    assert 'href="/console/privacy/consent"' in home and "/console/privacy/dsr" not in home
    page = web.get("/console/privacy/consent", params={"subject": west})
    assert page.status_code == 200 and "west-kiosk" in page.text
    # The attack: another region's customer by typing their id. Not found, as in the API.
    r = web.get("/console/privacy/consent", params={"subject": east})
    assert r.status_code == 404 and "east-kiosk" not in r.text and "granted" not in r.text
