"""The console's compliance pages (issue 15): who saw a customer with proofs a verifier can
check (and a tampered one that fails), audit search, posture with history and the evidence
pack, training and review status, the dashboard's charts and the counts behind them; each
page for its roles only, on both backends."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.api.app import create_app
from fiduciary.audit import merkle
from fiduciary.audit.trail import checkpoint_message
from fiduciary.clock import FixedClock
from fiduciary.console import charts
from fiduciary.errors import Forbidden, InvalidInput
from fiduciary.ids import new_id
from fiduciary.monitoring import trends
from fiduciary.monitoring.alerts import Finding, insert_finding
from fiduciary.monitoring.pack import Severity
from fiduciary.privacy import dsr_trends
from fiduciary.runtime import Runtime
from tests.conftest import Staff, make_staff, table_rows
from tests.test_console import sign_in

PAGES = ("/console/compliance/access-log", "/console/compliance/audit",
         "/console/compliance/posture", "/console/compliance/workforce")


@dataclass
class Seen:
    """A customer, read by a DPO through the API, the trail sequenced and checkpointed."""

    subject: str
    record: str
    reader: Staff


def busy_trail(rt: Runtime, events: int) -> None:
    """Events enough for more than one page."""
    for i in range(events):
        rt.audit.append_committed(rt.audit.event(SYSTEM, "test.filler", details={"n": i}))


def seen_customer(rt: Runtime, clock: FixedClock) -> Seen:
    reader = make_staff(rt, clock, "rita", ["dpo"])
    subject = rt.vault.create_subject(SYSTEM).id
    record = rt.vault.create_record(SYSTEM, "persons", subject, {
        "first_name": "Ottoline", "last_name": "Quarrier-Canary"}, "policy_administration").id
    r = reader.client.get(f"/v1/collections/persons/records/{record}",
                          params={"purpose": "legal_obligation"})
    assert r.status_code == 200, r.text
    rt.trail.sequence(force_checkpoint=True)
    return Seen(subject, record, reader)


def officer_opens_access_log(rt: Runtime, clock: FixedClock
                             ) -> tuple[Seen, Staff, TestClient, str]:
    """A compliance officer signed in to the console opens the seen customer's access log."""
    seen = seen_customer(rt, clock)
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    page = web.get("/console/compliance/access-log", params={"subject": seen.subject}).text
    return seen, officer, web, page


def audit_reads(rt: Runtime) -> list[dict[str, Any]]:
    """The ``audit.read`` events, in the order they were appended."""
    rows = sorted(table_rows(rt, "audit_events"), key=lambda e: int(str(e["seq"])))
    return [json.loads(str(e["event"])) for e in rows if e["action"] == "audit.read"]


def proof_links(page: str) -> list[tuple[int, dict[str, Any]]]:
    """(leaf index, event as the page carries it) of each "Verify proof" link."""
    return [(int(i), json.loads(html.unescape(ev))) for i, ev in re.findall(
        r'data-index="(\d+)"[^>]*data-event=\'([^\']*)\'', page)]


def verifies(event: dict[str, Any], body: dict[str, Any]) -> bool:
    """What proof.js does, in Python: the event's leaf, the path to the checkpoint's root,
    the checkpoint's signature."""
    cp = body["checkpoint"]
    leaf = merkle.leaf_hash(rfc8785.dumps(event))
    if base64.b64decode(body["leaf_hash"]) != leaf or body["size"] != cp["size"]:
        return False
    try:
        merkle.verify_inclusion(leaf, body["index"], body["size"],
                                [base64.b64decode(p) for p in body["proof"]],
                                base64.b64decode(cp["root"]))
        Ed25519PublicKey.from_public_bytes(base64.b64decode(cp["public_key"])).verify(
            base64.b64decode(cp["signature"]), checkpoint_message(
                cp["size"], base64.b64decode(cp["root"]),
                datetime.fromisoformat(cp["timestamp"])))
    except (merkle.ProofError, InvalidSignature):
        return False
    return True


def test_who_saw_a_customer_lists_the_read_with_purpose_and_decision_and_is_audited(
        rt: Runtime, clock: FixedClock) -> None:
    seen = seen_customer(rt, clock)
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    before = len(audit_reads(rt))
    page = web.get("/console/compliance/access-log", params={"subject": seen.subject})
    assert page.status_code == 200
    row = next(r for r in page.text.split("<tr>") if "<code>record.read</code>" in r)
    assert "rita" in row and "dpo" in row and "legal_obligation" in row
    assert '<span class="badge green">allow</span>' in row and "Verify proof" in row
    # Names and ids only: the customer's values never reach the page.
    assert "Ottoline" not in page.text and "Quarrier" not in page.text
    # The view is audited as the API's events query is.
    reads = audit_reads(rt)[before:]
    assert [r["details"] for r in reads] == [{"query": "events", "subject_id": seen.subject}]
    assert reads[0]["actor"]["name"] == "cora"


def test_a_proof_from_the_page_verifies_and_a_tampered_one_does_not(
        rt: Runtime, clock: FixedClock) -> None:
    _, officer, web, page = officer_opens_access_log(rt, clock)
    links = proof_links(page)
    index, event = next((i, e) for i, e in links if e["action"] == "record.read")
    r = web.get("/console/compliance/proof", params={"index": index})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert verifies(event, body)
    # The proof read is audited like the API's two reads.
    queries = [r["details"]["query"] for r in audit_reads(rt)]
    assert queries[-2:] == ["checkpoint", "proof/inclusion"]
    # The API's endpoints give the same proof and checkpoint for the same index.
    api = officer.client
    assert api.get("/v1/audit/checkpoint").json() == body["checkpoint"]
    assert api.get("/v1/audit/proof/inclusion", params={
        "index": index, "size": body["size"]}).json()["proof"] == body["proof"]
    # Tampered: a flipped bit in the path, a different event, another leaf's index, a
    # forged root, a wrong signature — none verifies.
    flipped = bytearray(base64.b64decode(body["proof"][0]))
    flipped[0] ^= 1
    assert not verifies(event, {**body, "proof": [base64.b64encode(bytes(flipped)).decode(),
                                                  *body["proof"][1:]]})
    assert not verifies({**event, "purpose": "claims_handling"}, body)
    assert not verifies(event, {**body, "index": (index + 1) % body["size"]})
    assert not verifies(event, {**body, "checkpoint": {
        **body["checkpoint"], "root": base64.b64encode(b"\0" * 32).decode()}})
    assert not verifies(event, {**body, "checkpoint": {
        **body["checkpoint"], "signature": base64.b64encode(b"\0" * 64).decode()}})


def test_a_proof_not_yet_in_a_checkpoint_or_a_bad_index_is_refused(
        rt: Runtime, clock: FixedClock) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    size = rt.trail.sequence(force_checkpoint=True)
    r = web.get("/console/compliance/proof", params={"index": size + 1000})
    assert r.status_code == 409 and "checkpoint" in r.json()["problem"]
    for bad in ("-1", "abc", ""):
        r = web.get("/console/compliance/proof", params={"index": bad})
        assert r.status_code == 422 and "index" in r.text


def test_the_script_is_served_from_static_and_no_inline_script_or_style_is_used(
        rt: Runtime, clock: FixedClock) -> None:
    _, _, web, page = officer_opens_access_log(rt, clock)
    assert '<script src="/console/static/proof.js" defer></script>' in page
    assert "<script>" not in page and "style=" not in page and "onclick" not in page
    assert 'aria-live="polite"' in page
    js = web.get("/console/static/proof.js")
    assert js.status_code == 200 and "crypto.subtle" in js.text
    # Markup typed as a subject id comes back escaped, and finds nothing.
    page = web.get("/console/compliance/access-log",
                   params={"subject": '"><img src=x onerror=alert(1)>'}).text
    assert "<img src=x" not in page and "Nothing in the audit trail names" in page


def test_audit_search_by_principal_action_and_dates_is_paginated_and_audited(
        rt: Runtime, clock: FixedClock) -> None:
    seen = seen_customer(rt, clock)
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    today = clock.now().date()
    r = web.get("/console/compliance/audit", params={
        "principal": "rita", "action": "record.read", "from": str(today), "to": str(today)})
    assert r.status_code == 200
    assert "<code>record.read</code>" in r.text and seen.subject in r.text
    assert "No event matches" not in r.text
    assert audit_reads(rt)[-1]["details"] == {
        "query": "events", "actor": rt.users.get("rita").id, "action": "record.read"}
    # Dates exclude: the day before finds nothing.
    r = web.get("/console/compliance/audit", params={
        "principal": "rita", "to": str(today - timedelta(days=1))})
    assert "No event matches" in r.text
    # More than a page: a next link that carries the filters on.
    busy_trail(rt, 60)
    first = web.get("/console/compliance/audit", params={"search": "1"}).text
    nxt = re.search(r'href="(/console/compliance/audit\?[^"]*cursor=\d+)"', first)
    assert nxt, "the whole trail fits one page?"
    second = web.get(html.unescape(nxt.group(1))).text
    assert "<table>" in second


def test_a_bad_search_names_the_field_and_reads_nothing(
        rt: Runtime, clock: FixedClock) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    before = len(audit_reads(rt))
    r = web.get("/console/compliance/audit", params={"from": "2026-13-01", "to": "x"})
    assert r.status_code == 422 and "<strong>from</strong>" in r.text \
        and "<strong>to</strong>" in r.text
    r = web.get("/console/compliance/audit", params={"from": "2026-05-02", "to": "2026-05-01"})
    assert r.status_code == 422 and "before from" in r.text
    assert len(audit_reads(rt)) == before


@pytest.mark.parametrize(("role", "opens"), [
    ("compliance_officer", PAGES),
    ("dpo", PAGES),
    ("security_analyst", ("/console/compliance/access-log", "/console/compliance/audit",
                          "/console/compliance/workforce")),
    ("ethics_officer", ()),
])
def test_each_role_sees_and_opens_the_pages_its_permissions_allow(
        rt: Runtime, clock: FixedClock, role: str, opens: tuple[str, ...]) -> None:
    staff = make_staff(rt, clock, "pat", [role])
    web, _ = sign_in(rt, clock, staff)
    home = web.get("/console/").text
    for path in PAGES:
        allowed = path in opens
        assert (f'href="{path}"' in home) == allowed, path
        assert web.get(path).status_code == (200 if allowed else 403), path


@pytest.mark.parametrize("role", ["claims_adjuster", "underwriter"])
def test_a_role_without_the_permissions_sees_no_compliance_page_nor_proof(
        rt: Runtime, clock: FixedClock, role: str) -> None:
    seen = seen_customer(rt, clock)
    low = make_staff(rt, clock, "lowe", [role], ["west"])
    web, _ = sign_in(rt, clock, low)
    home = web.get("/console/").text
    for path in PAGES:
        assert path not in home
    before = len(audit_reads(rt))
    for path, params in [*((p, {}) for p in PAGES),
                         ("/console/compliance/access-log", {"subject": seen.subject}),
                         ("/console/compliance/proof", {"index": "0"}),
                         ("/console/compliance/audit", {"principal": "rita"}),
                         ("/console/compliance/posture/access_review_done", {}),
                         ("/console/compliance/evidence", {})]:
        r = web.get(path, params=params)
        assert r.status_code == 403, path
        assert seen.subject not in r.text and "record.read" not in r.text
    # Refused before any service ran: nothing was read from the trail for them.
    assert len(audit_reads(rt)) == before
    assert not [e for e in table_rows(rt, "audit_events") if e["action"] == "evidence.pack"]


def test_the_posture_page_shows_controls_failing_first_with_history_and_sections(
        rt: Runtime, clock: FixedClock) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    page = web.get("/console/compliance/posture").text  # the first read runs a check
    results = rt.posture.latest()
    assert results
    failing = [r.control.id for r in results if r.status == "fail"]
    passing = [r.control.id for r in results if r.status == "pass"]
    assert f"{len(failing)} failing" in page
    if failing and passing:
        assert page.index(f"<code>{failing[-1]}</code>") < page.index(f"<code>{passing[0]}</code>")
    first = results[0]
    assert first.control.sections[0] in page
    # By regulation: each regulation's failing controls, linked.
    nydfs = page[page.index('<th scope="row">NYDFS</th>'):]
    nydfs = nydfs[:nydfs.index("</tr>")]
    for r in results:
        listed = f'href="/console/compliance/posture/{r.control.id}">{r.control.id}</a>' in nydfs
        assert listed == (r.status == "fail" and any(
            sec.startswith("NYDFS ") for sec in r.control.sections)), r.control.id
    clock.advance(minutes=1)
    rt.posture.check()
    history = web.get(f"/console/compliance/posture/{first.control.id}")
    assert history.status_code == 200 and first.control.title in history.text
    assert history.text.count("<tr>") == 2 + 1  # two results and the heading row
    missing = web.get("/console/compliance/posture/no_such_control")
    assert missing.status_code == 404 and "no_such_control" in missing.text


def test_the_evidence_pack_is_the_apis_pack_and_verifies(
        rt: Runtime, clock: FixedClock) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    web, _ = sign_in(rt, clock, officer)
    page = web.get("/console/compliance/posture").text
    start, end = re.findall(r'name="(?:from|to)" type="date" value="([^"]+)"', page)
    r = web.get("/console/compliance/evidence", params={"from": start, "to": end})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert f'filename="evidence-{start}..{end}.zip"' in r.headers["content-disposition"]
    api = officer.client.get("/v1/compliance/evidence", params={"from": start, "to": end})
    ours, theirs = (zipfile.ZipFile(io.BytesIO(b.content)) for b in (r, api))
    assert ours.namelist() == theirs.namelist()
    assert ours.read("verify_pack.py") == theirs.read("verify_pack.py")
    assert json.loads(ours.read("controls.json"))["period"] == \
        json.loads(theirs.read("controls.json"))["period"]
    # Without dates: the last full quarter, as the API; half a period is refused.
    assert web.get("/console/compliance/evidence").status_code == 200
    r = web.get("/console/compliance/evidence", params={"from": start})
    assert r.status_code == 422 and "<strong>to</strong>" in r.text


def test_training_and_reviews_show_each_part_to_whoever_may_read_it(
        rt: Runtime, clock: FixedClock) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    make_staff(rt, clock, "ulla", ["underwriter"], trained=False)
    analyst = make_staff(rt, clock, "sam", ["security_analyst"])
    dpo = make_staff(rt, clock, "dana", ["dpo"])
    campaign = rt.campaigns.start(SYSTEM, "all", None)
    web, _ = sign_in(rt, clock, officer)
    page = web.get("/console/compliance/workforce").text
    ulla = page[page.index('<th scope="row">ulla</th>'):]
    ulla = ulla[:ulla.index("</tr>")]
    assert '<span class="badge red">missing</span>' in ulla
    dana = page[page.index('<th scope="row">dana</th>'):]
    assert '<span class="badge green">current</span>' in dana[:dana.index("</tr>")]
    assert f"<code>{campaign.id}</code>" in page and f"0 of {campaign.total}" in page
    # The DPO reads training, not reviews; the analyst reviews, not training.
    web, _ = sign_in(rt, clock, dpo)
    page = web.get("/console/compliance/workforce").text
    assert "ulla" in page and campaign.id not in page
    web, _ = sign_in(rt, clock, analyst)
    page = web.get("/console/compliance/workforce").text
    assert campaign.id in page and '<th scope="row">ulla</th>' not in page


# -- charts and the counts behind them ---------------------------------------------------------
def _alert(rt: Runtime, when: datetime, about: str | None = None) -> None:
    with rt.db.write() as conn:
        insert_finding(conn, Finding(
            detection="bulk_read", severity=Severity.HIGH, score=1.0, principal_kind="user",
            principal_id=about, principal_name=None, reason="test", dedup_key=new_id(),
            event_ids=[]), when)


def test_alerts_per_day_counts_each_day_and_leaves_out_alerts_about_the_reader(
        rt: Runtime, clock: FixedClock) -> None:
    analyst = make_staff(rt, clock, "sam", ["security_analyst"])
    me = rt.users.get("sam").id
    now = clock.now()
    for back in (0, 0, 2, 29, 30):
        _alert(rt, now - timedelta(days=back))
    _alert(rt, now, about=me)
    who = rt.users.authenticate(analyst.client.headers["Authorization"].split()[1])
    days = trends.alerts_per_day(rt.alerts, who)
    assert len(days) == 30 and days[-1][0] == now.astimezone(UTC).date()
    counts = dict(days)
    today = now.astimezone(UTC).date()
    assert counts[today] == 2 and counts[today - timedelta(days=2)] == 1
    assert counts[today - timedelta(days=29)] == 1 and sum(counts.values()) == 4
    with pytest.raises(InvalidInput):
        trends.alerts_per_day(rt.alerts, who, days=0)
    adjuster = make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])
    with pytest.raises(Forbidden):
        trends.alerts_per_day(rt.alerts, rt.users.authenticate(
            adjuster.client.headers["Authorization"].split()[1]))


def test_dsr_on_time_by_month_counts_by_due_month(rt: Runtime, clock: FixedClock) -> None:
    subject = rt.vault.create_subject(SYSTEM).id
    now = clock.now()
    # GDPR: a month to answer. Received ~3 months ago: due ~2 months ago.
    answered = rt.dsr.create(SYSTEM, subject, "access", "gdpr",
                             received_at=now - timedelta(days=95))
    late = rt.dsr.create(SYSTEM, subject, "restriction", "gdpr",
                         received_at=now - timedelta(days=92))
    rt.dsr.deny(SYSTEM, answered.id, "manifestly unfounded")
    months = dsr_trends.on_time_by_month(rt.dsr, SYSTEM)
    assert len(months) == 12 and months[-1].month == now.date().replace(day=1)
    by = {m.month: m for m in months}
    # Denied after its due date or never answered: both late.
    due_months = {answered.due_at.date().replace(day=1), late.due_at.date().replace(day=1)}
    assert sum(by[m].due for m in due_months) == 2
    assert sum(by[m].on_time for m in due_months) == 0
    assert all(m.rate is None for m in months if m.month not in due_months)
    # An answer in time counts once its due date has passed, as on time.
    prompt = rt.dsr.create(SYSTEM, subject, "access", "gdpr",
                           received_at=now - timedelta(days=5))
    rt.dsr.deny(SYSTEM, prompt.id, "identity not verified")
    assert sum(m.due for m in dsr_trends.on_time_by_month(rt.dsr, SYSTEM)) == 2
    clock.advance(days=40)
    months = dsr_trends.on_time_by_month(rt.dsr, SYSTEM)
    assert sum(m.on_time for m in months) == 1 and sum(m.due for m in months) == 3
    with pytest.raises(InvalidInput):
        dsr_trends.on_time_by_month(rt.dsr, SYSTEM, months=0)


def test_charts_are_svg_with_a_title_and_no_style_and_carry_their_numbers() -> None:
    days = [(date(2026, 11, 1) + timedelta(days=i), i % 3) for i in range(30)]
    chart = charts.alerts_per_day(days)
    svg = str(chart.svg)
    assert svg.startswith("<svg") and 'role="img"' in svg and "aria-label=" in svg
    assert f"<title>{chart.title}</title>" in svg and "style=" not in svg
    assert svg.count("<rect") == sum(1 for _, n in days if n)
    assert chart.rows[0] == ("2026-11-01", "0") and len(chart.rows) == 30
    assert chart.empty is None
    assert charts.alerts_per_day([(d, 0) for d, _ in days]).empty
    months = [(date(2026, m, 1), d, o)
              for m, d, o in ((1, 0, 0), (2, 4, 4), (3, 10, 7), (4, 2, 0))]
    chart = charts.on_time_by_month(months)
    svg = str(chart.svg)
    # No request due: no bar; none on time: a red sliver, so the two differ.
    assert svg.count("<rect") == 3 and "#a4161a" in svg and "#1d6b34" in svg
    assert 'height="2" fill="#a4161a"><title>Apr: 0% (0 of 2)</title>' in svg
    assert chart.rows == [("Jan 2026", "none due"), ("Feb 2026", "100% (4 of 4)"),
                          ("Mar 2026", "70% (7 of 10)"), ("Apr 2026", "0% (0 of 2)")]
    # A label is text, never markup.
    bad = charts.bar_chart("<script>", [charts.Bar("<b>", 1, "<i>")], 1, [(0, "<u>")])
    assert "<script>" not in bad and "<b>" not in bad and "&lt;b&gt;" in bad


def test_the_dashboard_shows_the_charts_to_the_roles_that_read_them(
        rt: Runtime, clock: FixedClock) -> None:
    analyst = make_staff(rt, clock, "sam", ["security_analyst"])
    web, _ = sign_in(rt, clock, analyst)
    home = web.get("/console/").text
    assert "No alert was raised in these days." in home and "<svg" not in home
    _alert(rt, clock.now())
    officer = make_staff(rt, clock, "cora", ["compliance_officer"])
    adjuster = make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])
    web, _ = sign_in(rt, clock, analyst)
    home = web.get("/console/").text
    assert "Alerts raised per day, last 30 days" in home and "<svg" in home
    assert "answered on time" not in home
    assert "<summary>The numbers</summary>" in home and "style=" not in home
    web, _ = sign_in(rt, clock, officer)
    home = web.get("/console/").text
    assert "answered on time, per month, last 12 months" in home
    assert "No request was due for an answer in these months." in home
    assert "Alerts raised per day" in home  # the compliance officer reads alerts too
    web, _ = sign_in(rt, clock, adjuster)
    home = web.get("/console/").text
    assert "<svg" not in home


def test_the_proof_endpoint_needs_a_console_session(rt: Runtime) -> None:
    # An API bearer token is no console session: sign in first.
    r = TestClient(create_app(rt), raise_server_exceptions=False).get(
        "/console/compliance/proof", params={"index": "0"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
