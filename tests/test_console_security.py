"""The console's security pages (issue 15), on both backends: the alerts queue and its filters,
an alert's evidence with its inclusion proofs, triage as an analyst does it and as a read-only
officer or the person an alert is about would try it; incidents with their obligation clocks,
scope and steps; the break-glass review queue; the watch list and suppressions. Every page is
absent from the navigation and 403 by URL for a role without its permission."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from fiduciary.clock import FixedClock
from fiduciary.console.security import obligation_clock
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import alerts
from tests.conftest import Staff, make_staff, table_rows
from tests.test_alerts_api import REASON, SURNAME, customer, raise_alert, status_of
from tests.test_console import csrf_of, sign_in
from tests.test_incidents import LETTER
from tests.test_incidents import customer as incident_customer

PAGES = {"Alerts": "/console/security/alerts", "Incidents": "/console/security/incidents",
         "Break-glass review": "/console/security/break-glass",
         "Watch list &amp; suppressions": "/console/security/watchlist"}
PA = "policy_administration"


@pytest.fixture
def team(rt: Runtime, clock: FixedClock) -> dict[str, Staff]:
    """Two security analysts (Sam, Sue), a compliance officer (Cora), a DPO (Dina) and a
    claims adjuster (Adam)."""
    return {"sam": make_staff(rt, clock, "sam", ["security_analyst"]),
            "sue": make_staff(rt, clock, "sue", ["security_analyst"]),
            "cora": make_staff(rt, clock, "cora", ["compliance_officer"]),
            "dina": make_staff(rt, clock, "dina", ["dpo"]),
            "adam": make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])}


def web_of(rt: Runtime, clock: FixedClock, staff: Staff) -> TestClient:
    web, r = sign_in(rt, clock, staff)
    assert r.status_code == 303, r.text
    return web


def post(web: TestClient, page: str, action: str, data: dict[str, str]) -> Response:
    """Posts a form of ``page`` as the browser does, with the page's CSRF token."""
    token = csrf_of(web.get(page))
    return web.post(action, data={"csrf_token": token, **data}, follow_redirects=False)


def nav(html: str) -> str:
    found = re.search(r'<nav class="side".*?</nav>', html, re.S)
    return found.group(0) if found else ""


def test_each_role_sees_the_security_pages_its_permissions_allow(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    expected = {"sam": set(PAGES), "cora": set(PAGES),
                "dina": {"Incidents", "Break-glass review"}, "adam": set()}
    for name, visible in expected.items():
        web = web_of(rt, clock, team[name])
        menu = nav(web.get("/console/").text)
        for label, path in PAGES.items():
            r = web.get(path)
            if label in visible:
                assert f'href="{path}"' in menu and label in menu, (name, label)
                assert r.status_code == 200, (name, path, r.text)
            else:
                assert f'href="{path}"' not in menu, (name, label)
                assert r.status_code == 403, (name, path)
                assert "<table" not in r.text


def test_the_queue_filters_by_status_severity_detection_and_assignee(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    high = raise_alert(rt, clock, "adam", detection="self_access")
    watch = raise_alert(rt, clock, "adam", detection="watchlist_subject")
    with rt.db.write() as conn:
        conn.execute(alerts.update().where(alerts.c.id == watch).values(severity="medium"))
    rt.alerts.assign(SYSTEM, high, "sue")
    web = web_of(rt, clock, team["sam"])
    q = "/console/security/alerts"

    def listed(query: str) -> set[str]:
        r = web.get(q + query)
        assert r.status_code == 200, r.text
        return set(re.findall(r'href="/console/security/alerts/([0-9a-f-]+)"', r.text))

    assert listed("") == {high, watch}
    assert listed("?severity=medium") == {watch}
    assert listed("?detection=self_access") == {high}
    assert listed("?status=triaged") == {high}
    assert listed("?assignee=sue") == {high}
    assert listed("?principal=adam&status=open") == {watch}
    assert "No alert matches these filters." in web.get(q + "?assignee=nobody").text
    r = web.get(q + "?status=closed&severity=loud")
    assert r.status_code == 422
    assert "<strong>status</strong>" in r.text and "<strong>severity</strong>" in r.text
    assert REASON not in r.text


def test_an_alert_shows_its_evidence_with_inclusion_proofs(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt, SURNAME)
    rt.vault.list_subject_records(SYSTEM, subject, PA)
    events = [e for e in (json.loads(str(r["event"])) for r in table_rows(rt, "audit_events")
                          if r["event"]) if subject in e["subject_ids"]]
    alert = raise_alert(rt, clock, "adam", subject_ids=[subject],
                        event_ids=[e["id"] for e in events[:2]])
    rt.trail.sequence(force_checkpoint=True)
    cp = rt.trail.latest_checkpoint()
    for name in ("sam", "cora"):
        r = web_of(rt, clock, team[name]).get(f"/console/security/alerts/{alert}")
        assert r.status_code == 200, r.text
        assert REASON in r.text and "90.0" in r.text
        assert f"checkpoint of size <strong>{cp.size}</strong>" in r.text
        for e in events[:2]:
            assert e["id"] in r.text
        leaves = re.findall(r'href="/console/compliance/proof\?index=(\d+)"', r.text)
        assert len(leaves) == 2 and all(int(i) < cp.size for i in leaves)
        for leaf in leaves:
            # The same audit path the trail proves, hex as the API gives it.
            path = rt.trail.inclusion(int(leaf), cp.size)["proof"]
            assert path and all(base64.b64decode(h).hex() in r.text for h in path)
        # The alert names the customer by id, never by a value of theirs.
        assert subject in r.text and SURNAME not in r.text
    # Only alerts:manage sees the triage forms.
    assert "/dismiss" in web_of(rt, clock, team["sam"]).get(
        f"/console/security/alerts/{alert}").text
    assert "/dismiss" not in web_of(rt, clock, team["cora"]).get(
        f"/console/security/alerts/{alert}").text


def test_an_analyst_triages_dismissing_only_with_an_explanation(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    alert = raise_alert(rt, clock, "adam")
    web = web_of(rt, clock, team["sam"])
    page = f"/console/security/alerts/{alert}"
    r = post(web, page, f"{page}/assign", {"username": "sue"})
    assert r.status_code == 303 and r.headers["location"] == page
    r = post(web, page, f"{page}/assign", {"username": "cora"})  # cannot triage alerts
    assert r.status_code == 422 and "lacks alerts:manage" in r.text
    r = post(web, page, f"{page}/comment", {"text": "looking at the claim file"})
    assert r.status_code == 303
    r = post(web, page, f"{page}/dismiss", {"explanation": "   "})
    assert r.status_code == 422
    assert "<strong>explanation</strong>" in r.text
    assert status_of(rt, alert) == "triaged"
    explanation = f"{SURNAME} is the assigned claimant of this adjuster"
    r = post(web, page, f"{page}/dismiss", {"explanation": explanation})
    assert r.status_code == 303
    shown = web.get(page).text
    assert "dismissed" in shown and explanation in shown and "looking at the claim" in shown
    assert "sue" in shown
    # Sealed at rest: the explanation is neither in the audit trail nor in any table.
    assert status_of(rt, alert) == "dismissed"
    for table in ("audit_events", "alert_actions"):
        assert SURNAME not in str(table_rows(rt, table))
    # A closed alert is not dismissed twice.
    r = post(web, page, f"{page}/dismiss", {"explanation": "again"})
    assert r.status_code == 409


def test_escalating_opens_an_incident_with_its_clocks(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    alert = raise_alert(rt, clock, "adam")
    web = web_of(rt, clock, team["sam"])
    page = f"/console/security/alerts/{alert}"
    r = post(web, page, f"{page}/escalate", {"note": "bulk look-ups", "incident_id": ""})
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("/console/security/incidents/")
    incident = rt.incidents.get(SYSTEM, location.rsplit("/", 1)[1])
    assert incident["alerts"] == [alert] and status_of(rt, alert) == "escalated"
    shown = web.get(location).text
    assert "Obligation clocks" in shown and "Escalated alert: self_access" in shown
    # Before the scope and the determination, only the breach register (no deadline).
    assert [o["regime"] for o in incident["obligations"]] == ["GDPR"]
    assert "breach register" in shown and "no fixed deadline" in shown
    assert f'href="/console/security/alerts/{alert}"' in shown
    listed = web.get("/console/security/incidents").text
    assert "Escalated alert: self_access" in listed


def test_a_read_only_officer_posting_triage_is_refused(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    alert = raise_alert(rt, clock, "adam", subject_ids=[subject])
    incident = rt.incidents.create(SYSTEM, {"title": "Laptop lost", "kind": "lost_device",
                                            "discovered_at": clock.now()})
    web = web_of(rt, clock, team["cora"])
    page = f"/console/security/alerts/{alert}"
    attempts = [(f"{page}/dismiss", {"explanation": "fine"}), (f"{page}/escalate", {}),
                (f"{page}/assign", {"username": "sue"}), (f"{page}/comment", {"text": "x"}),
                ("/console/security/watchlist", {"subject_id": subject, "reason": "vip"}),
                ("/console/security/suppressions", {"detection": "self_access",
                                                    "reason": "known", "expires_at":
                                                    (clock.now() + timedelta(days=3))
                                                    .strftime("%Y-%m-%dT%H:%M")}),
                (f"/console/security/incidents/{incident['id']}/status",
                 {"status": "closed"}),
                ("/console/security/incidents", {"title": "x", "kind": "other",
                                                 "discovered_at": "2026-01-30T10:00"})]
    for action, data in attempts:
        r = post(web, page, action, data)
        assert r.status_code == 403, (action, r.text)
        assert "alerts:manage" in r.text or "incidents:manage" in r.text
    assert status_of(rt, alert) == "open" and table_rows(rt, "alert_actions") == []
    assert rt.alerts.watchlist(SYSTEM) == [] and rt.alerts.suppressions(SYSTEM) == []
    assert [i["status"] for i in rt.incidents.list_incidents(SYSTEM)] == ["open"]


def test_nobody_reads_or_triages_an_alert_about_themselves(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    about_sam = raise_alert(rt, clock, "sam")
    web = web_of(rt, clock, team["sam"])
    assert about_sam not in web.get("/console/security/alerts").text
    page = f"/console/security/alerts/{about_sam}"
    assert web.get(page).status_code == 404
    token = csrf_of(web.get("/console/security/alerts"))
    for action, data in (("dismiss", {"explanation": "a false positive"}),
                         ("escalate", {}), ("assign", {"username": "sue"})):
        r = web.post(f"{page}/{action}", data={"csrf_token": token, **data},
                     follow_redirects=False)
        assert r.status_code in (403, 404), r.text
        assert REASON not in r.text
    assert status_of(rt, about_sam) == "open"
    assert table_rows(rt, "alert_actions") == []


def test_a_form_posted_without_its_token_is_refused(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    alert = raise_alert(rt, clock, "adam")
    web = web_of(rt, clock, team["sam"])
    for data in ({"explanation": "fine"}, {"explanation": "fine", "csrf_token": "0" * 64}):
        r = web.post(f"/console/security/alerts/{alert}/dismiss", data=data,
                     follow_redirects=False)
        assert r.status_code == 403 and "security token" in r.text
    assert status_of(rt, alert) == "open"


def test_obligation_clocks_are_red_overdue_and_amber_within_a_day(clock: FixedClock) -> None:
    now = clock.now()

    def due(hours: float, overdue: bool = False) -> dict[str, object]:
        return {"status": "due", "due_at": (now + timedelta(hours=hours)).isoformat(),
                "overdue": overdue}

    assert obligation_clock(due(-5, True), now) == ("overdue", "overdue by 5 h 0 min")
    assert obligation_clock(due(23.5), now) == ("soon", "23 h 30 min left")
    assert obligation_clock(due(50), now) == ("later", "2 d 2 h left")
    assert obligation_clock({"status": "due", "due_at": None, "overdue": False}, now) == (
        "open", "no fixed deadline")
    assert obligation_clock({"status": "not_required"}, now) == ("done", "not required")


def test_an_incident_is_run_from_its_page(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    web = web_of(rt, clock, team["sam"])
    r = post(web, "/console/security/incidents", "/console/security/incidents", {
        "title": "", "kind": "ransomware", "severity": "high", "discovered_at": "yesterday"})
    assert r.status_code == 422
    assert "<strong>title</strong>" in r.text and "<strong>discovered_at</strong>" in r.text
    assert rt.incidents.list_incidents(SYSTEM) == []
    r = web.get("/console/security/incidents?status=burning")
    assert r.status_code == 422 and "<strong>status</strong>" in r.text
    discovered = clock.now() - timedelta(hours=60)
    r = post(web, "/console/security/incidents", "/console/security/incidents", {
        "title": "Adjuster account phished", "kind": "unauthorized_access",
        "severity": "critical", "discovered_at": discovered.strftime("%Y-%m-%dT%H:%M"),
        "determined_at": discovered.strftime("%Y-%m-%dT%H:%M")})
    assert r.status_code == 303
    url = r.headers["location"]
    iid = url.rsplit("/", 1)[1]
    incident = rt.incidents.get(SYSTEM, iid)
    assert incident["title"] == "Adjuster account phished"
    # Sam (the analyst) scopes it on Adam's account over the window: Adam read the customer.
    rt.vault.list_subject_records(SYSTEM, subject, PA)
    r = post(web, url, f"{url}/scope", {"usernames": "nobody.here", "from": "", "to": ""})
    assert r.status_code == 422
    assert "principals[0]" in r.text and "<strong>from</strong>" in r.text
    r = post(web, url, f"{url}/scope", {
        "usernames": "", "from": (clock.now() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        "to": (clock.now() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")})
    assert r.status_code == 303, r.text
    incident = rt.incidents.get(SYSTEM, iid)
    assert incident["scope_result"] is not None and incident["status"] == "assessing"
    shown = web.get(url).text
    assert "By jurisdiction" in shown
    for j, n in incident["scope_result"]["by_jurisdiction"].items():
        assert re.search(rf"<td>{re.escape(j)}</td><td>{n}</td>", shown)
    due = [o for o in incident["obligations"] if o["status"] == "due"]
    assert due, incident["obligations"]
    for o in due:
        band, text = obligation_clock(o, clock.now())
        assert f"due-{band}" in shown and text in shown
    # Closing with obligations still due: refused with the service's words.
    r = post(web, url, f"{url}/status", {"status": "closed"})
    assert r.status_code == 409 and "still due" in r.text
    first, *rest = due
    base = f"{url}/obligations/{first['id']}"
    r = post(web, url, f"{base}/not-required", {"reason": ""})
    assert r.status_code == 422 and "<strong>reason</strong>" in r.text
    r = post(web, url, f"{base}/file", {"reference": "ICO-2026-0042"})
    assert r.status_code == 303
    for o in rest:
        r = post(web, url, f"{url}/obligations/{o['id']}/not-required",
                 {"reason": "risk assessment: encrypted at rest"})
        assert r.status_code == 303
    shown = web.get(url).text
    assert "ICO-2026-0042" in shown and "risk assessment: encrypted at rest" in shown
    r = post(web, url, f"{url}/status", {"status": "closed", "note": "all filed"})
    assert r.status_code == 303
    shown = web.get(url).text
    assert "closed" in shown and "Run the incident" not in shown
    # A compliance officer reads the incident but is given no form.
    officer = web_of(rt, clock, team["cora"]).get(url)
    assert officer.status_code == 200 and "Adjuster account phished" in officer.text
    assert "Open an incident" not in web_of(rt, clock, team["cora"]).get(
        "/console/security/incidents").text


def test_break_glass_grants_are_reviewed_by_someone_else(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt)
    justification = "Customer on the phone, adjuster on leave, claim payment blocked"
    for name in ("adam", "dina"):
        r = team[name].client.post("/v1/auth/break-glass", json={
            "subject_ids": [subject], "justification": justification, "minutes": 30})
        assert r.status_code == 201, r.text
    grants = {g.user_id: g.id for g in rt.users.break_glass_grants()}
    adam_grant = grants[rt.users.get("adam").id]
    dina_grant = grants[rt.users.get("dina").id]
    queue = "/console/security/break-glass"
    dina = web_of(rt, clock, team["dina"])
    shown = dina.get(queue).text
    assert "your own grant" in shown and f'action="{queue}/{dina_grant}"' not in shown
    assert f'action="{queue}/{adam_grant}"' in shown and "adam" in shown
    assert justification not in shown  # free text that may name the customer
    # Dina posts a review of her own grant anyway: refused, still pending.
    r = post(dina, queue, f"{queue}/{dina_grant}", {"outcome": "justified"})
    assert r.status_code == 403 and "reviewed by someone else" in r.text
    assert post(dina, queue, f"{queue}/{adam_grant}", {"outcome": "maybe"}
                ).status_code == 422
    sam = web_of(rt, clock, team["sam"])
    r = post(sam, queue, f"{queue}/{adam_grant}", {"outcome": "unjustified",
                                                   "note": "no claim open"})
    assert r.status_code == 303
    r = post(sam, queue, f"{queue}/{adam_grant}", {"outcome": "justified"})
    assert r.status_code == 409
    pending = {g.id for g in rt.users.break_glass_grants(pending_only=True)}
    assert pending == {dina_grant}
    assert adam_grant not in sam.get(queue).text
    assert "unjustified" in sam.get(queue + "?all=1").text
    # An adjuster cannot reach the queue, let alone review his own grant.
    adam = web_of(rt, clock, team["adam"])
    token = csrf_of(adam.get("/console/"))
    r = adam.post(f"{queue}/{adam_grant}", data={"csrf_token": token, "outcome": "justified"},
                  follow_redirects=False)
    assert r.status_code == 403


def test_the_watch_list_and_suppressions(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    subject = customer(rt, SURNAME)
    page = "/console/security/watchlist"
    sam = web_of(rt, clock, team["sam"])
    assert "Nobody is on the watch list." in sam.get(page).text
    r = post(sam, page, page, {"subject_id": subject, "category": "vip", "reason": "",
                               "handlers": "sam"})
    assert r.status_code == 422 and "<strong>reason</strong>" in r.text
    r = post(sam, page, page, {"subject_id": subject, "category": "litigant",
                               "reason": "suing the insurer", "handlers": "sam"})
    assert r.status_code == 403 and "handler" in r.text
    r = post(sam, page, page, {"subject_id": subject, "category": "litigant",
                               "reason": "suing the insurer", "handlers": "adam, sue"})
    assert r.status_code == 303
    [entry] = rt.alerts.watchlist(SYSTEM)
    assert entry["handlers"] == ["adam", "sue"] and entry["category"] == "litigant"
    in_a_week = (clock.now() + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
    too_far = (clock.now() + timedelta(days=120)).strftime("%Y-%m-%dT%H:%M")
    sup = "/console/security/suppressions"
    r = post(sam, page, sup, {"detection": "off_hours", "reason": "night shift",
                              "expires_at": too_far})
    assert r.status_code == 422 and "<strong>expires_at</strong>" in r.text
    r = post(sam, page, sup, {"detection": "off_hours", "reason": "covering for Sam",
                              "principal": "sam", "expires_at": in_a_week})
    assert r.status_code == 403
    r = post(sam, page, sup, {"detection": "off_hours", "reason": "night shift in claims",
                              "principal": "adam", "expires_at": in_a_week})
    assert r.status_code == 303
    [s] = rt.alerts.suppressions(SYSTEM)
    assert s["principal"] == "adam" and s["expires_at"].startswith(in_a_week[:10])
    cora = web_of(rt, clock, team["cora"]).get(page).text
    assert subject in cora and "night shift in claims" in cora
    assert f"{page}/{subject}/remove" not in cora and 'action="/console/security/suppressions"' \
        not in cora
    r = post(sam, page, f"{page}/{subject}/remove", {})
    assert r.status_code == 303 and rt.alerts.watchlist(SYSTEM) == []
    r = post(sam, page, f"{page}/{subject}/remove", {})
    assert r.status_code == 404
    assert SURNAME not in sam.get(page).text


def test_the_incident_page_shows_its_scope_by_jurisdiction_and_letter_batches(
        rt: Runtime, clock: FixedClock, team: dict[str, Staff]) -> None:
    for name, where in (("Ada", {"state": "NY"}), ("Bea", {"state": "NY"}),
                        ("Carl", {"country": "DE"})):
        incident_customer(rt, name, **where)
    iid = rt.incidents.create(SYSTEM, {"title": "Backup tape lost", "kind": "lost_device",
                                       "discovered_at": clock.now()})["id"]
    rt.incidents.scope(SYSTEM, iid, {"principals": [], "keys_compromised": True,
                                     "from": clock.now() - timedelta(hours=3),
                                     "to": clock.now() + timedelta(hours=1)})
    url = f"/console/security/incidents/{iid}"
    cora = web_of(rt, clock, team["cora"])
    assert "No letter batch yet." in cora.get(url).text
    # The DPO renders the letters (through the API: decrypting addresses is hers to do).
    r = team["dina"].client.post(f"/v1/incidents/{iid}/letters", json=LETTER)
    assert r.status_code == 202, r.text
    batch_id = r.json()["batch_id"]
    for _ in range(300):
        if rt.letters.batch(SYSTEM, iid, batch_id)["status"] != "running":
            break
        time.sleep(0.1)
    shown = cora.get(url).text
    row = re.search(rf"<tr><td><code>{batch_id}</code></td>.*?</tr>", shown, re.S)
    assert row and ">done<" in row.group(0) and "3 of 3" in row.group(0)
    assert "user:dina" in row.group(0)
    assert 'hx-trigger="every 3s"' not in shown  # polled only while a batch runs
    assert re.search(r"<td>DE</td><td>1</td>", shown)
    assert re.search(r"<td>US-NY</td><td>2</td>", shown)
    # Counts and ids only: no address the letters were sent to.
    assert "Springfield" not in shown and "Ada" not in shown
