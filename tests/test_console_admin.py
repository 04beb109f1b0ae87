"""The console's administration pages (issue 15): users (create through the two-person
approval flow, roles, disable, re-enrol), API keys (secret once), approvals, access reviews,
the HR feed and key status. The attacks: an administrator approving their own proposal or
granting themselves a data role, an administrator without approvals:decide approving, a low
role typing the addresses, a form without its CSRF token; and no enrolment code or key secret
on any page that must not show it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from fiduciary.clock import FixedClock
from fiduciary.errors import NotFound
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from tests.conftest import Staff, make_staff, table_rows
from tests.test_console import csrf_of, sign_in

ADMIN_PAGES = ["/console/admin/users", "/console/admin/api-keys", "/console/admin/approvals",
               "/console/admin/hr", "/console/admin/keys"]
#: The shape of a one-time enrolment code (``XXXXX-XXXXX-XXXXX-XXXXX``).
ENROLMENT_CODE = re.compile(r"\b[0-9A-F]{5}-[0-9A-F]{5}-[0-9A-F]{5}-[0-9A-F]{5}\b")


def web_of(rt: Runtime, clock: FixedClock, staff: Staff) -> TestClient:
    web, r = sign_in(rt, clock, staff)
    assert r.status_code == 303, r.text
    return web


def post(web: TestClient, path: str, data: dict[str, Any], page: str) -> Response:
    """Posts a form as the browser does, with the CSRF token of the page it is on."""
    token = csrf_of(web.get(page))
    return web.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def events(rt: Runtime, action: str) -> list[dict[str, Any]]:
    return [json.loads(str(e["event"])) for e in table_rows(rt, "audit_events")
            if e["action"] == action]


def nav(html: str) -> str:
    found = re.search(r'<nav class="side".*?</nav>', html, re.S)
    assert found
    return found.group(0)


def pending(rt: Runtime) -> list[Any]:
    return rt.approvals.list("pending")


@pytest.fixture
def admin(rt: Runtime, clock: FixedClock) -> Staff:
    return make_staff(rt, clock, "ada.admin", ["admin"])


@pytest.fixture
def officer(rt: Runtime, clock: FixedClock) -> Staff:
    """The second person: a compliance officer, who holds approvals:decide."""
    return make_staff(rt, clock, "cole.compliance", ["compliance_officer"])


# -- navigation and refusals -------------------------------------------------------------------
def test_an_administrator_sees_every_administration_page(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    web = web_of(rt, clock, admin)
    menu = nav(web.get("/console/").text)
    for label in ("Users", "API keys", "Approvals", "Access reviews", "HR sync", "Keys"):
        assert f">{label}<" in menu, label
    for path in [*ADMIN_PAGES, "/console/admin/reviews"]:
        assert web.get(path).status_code == 200, path
    # Listing accounts is audited as through the API.
    assert {e["details"]["what"] for e in events(rt, "admin.list")} >= {
        "users", "apikeys", "approvals"}


def test_an_adjuster_sees_only_their_reviews_and_is_refused_the_rest_by_url(
        rt: Runtime, clock: FixedClock) -> None:
    adam = make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])
    web = web_of(rt, clock, adam)
    menu = nav(web.get("/console/").text)
    assert ">Access reviews<" in menu
    for label in ("Users", "API keys", "Approvals", "HR sync", "Keys"):
        assert f">{label}<" not in menu, label
    for path in ADMIN_PAGES:
        r = web.get(path)
        assert r.status_code == 403, path
        assert "ada" not in r.text and "<table>" not in r.text
    # Nor can they post: no user made, no key made.
    token = csrf_of(web.get("/console/admin/reviews"))
    r = web.post("/console/admin/users", data={"csrf_token": token, "username": "mole",
                                               "role": "dpo"}, follow_redirects=False)
    assert r.status_code == 403
    r = web.post("/console/admin/api-keys", data={"csrf_token": token, "name": "k",
                                                  "role": "service"}, follow_redirects=False)
    assert r.status_code == 403
    assert [u.username for u in rt.users.all()] == ["adam"]
    assert pending(rt) == [] and rt.api_keys.all() == []


def test_a_form_without_its_csrf_token_is_refused(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    web = web_of(rt, clock, admin)
    for data in ({}, {"csrf_token": "0" * 64}):
        r = web.post("/console/admin/users", data={**data, "username": "eve", "role": "admin"},
                     follow_redirects=False)
        assert r.status_code == 403 and "security token" in r.text
    assert "eve" not in [u.username for u in rt.users.all()]


# -- users -------------------------------------------------------------------------------------
def test_the_users_page_lists_roles_regions_status_mfa_and_last_login(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    make_staff(rt, clock, "adam", ["claims_adjuster"], ["west"])
    rt.users.create("newbie", ["admin"])
    web = web_of(rt, clock, admin)
    html = web.get("/console/admin/users").text
    row = re.search(r"<tr>\s*<th scope=\"row\"><a href=\"/console/admin/users/adam\">.*?</tr>",
                    html, re.S)
    assert row and "claims_adjuster" in row.group(0) and "west" in row.group(0)
    assert "TOTP" in row.group(0) and "2026-01-31" in row.group(0)
    newbie = re.search(r"users/newbie\">.*?</tr>", html, re.S)
    assert newbie and "enrolment pending" in newbie.group(0) and "never" in newbie.group(0)


def test_a_user_without_a_data_role_is_created_at_once_and_no_code_is_shown(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    web = web_of(rt, clock, admin)
    r = post(web, "/console/admin/users", {"username": "nia", "role": "admin",
                                           "regions": "west"}, "/console/admin/users")
    assert r.status_code == 303 and r.headers["location"] == "/console/admin/users?created=nia"
    page = web.get(r.headers["location"]).text
    assert "enrolment pending" in page and "fiduciary users enrolment-code nia" in page
    assert not ENROLMENT_CODE.search(page)
    nia = rt.users.get("nia")
    assert nia.roles == ("admin",) and nia.regions == ("west",) and not nia.enrolled
    # No code was issued to the administrator at all: the operator issues it to the user.
    assert events(rt, "user.enrolment_code") == [e for e in events(rt, "user.enrolment_code")
                                                 if e["details"]["username"] != "nia"]
    [made] = [e for e in events(rt, "user.create") if e["details"]["username"] == "nia"]
    assert made["actor"]["name"] == "ada.admin"


def test_bad_input_names_the_field_and_stores_nothing(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    web = web_of(rt, clock, admin)
    before = len(rt.users.all())
    r = post(web, "/console/admin/users", {"username": "bad name!", "role": "admin"},
             "/console/admin/users")
    assert r.status_code == 422 and "invalid username" in r.text
    assert 'value="bad name!"' in r.text  # the form keeps what was typed
    r = post(web, "/console/admin/users", {"username": "zed", "role": "wizard"},
             "/console/admin/users")
    assert r.status_code == 422 and "<strong>role</strong>" in r.text and "wizard" in r.text
    r = post(web, "/console/admin/users", {"username": "zed"}, "/console/admin/users")
    assert r.status_code == 422 and "(none)" in r.text
    assert len(rt.users.all()) == before and pending(rt) == []


def test_a_data_role_waits_for_a_second_person_and_no_code_is_shown_to_either(
        rt: Runtime, clock: FixedClock, admin: Staff, officer: Staff) -> None:
    web = web_of(rt, clock, admin)
    r = post(web, "/console/admin/users", {"username": "paula", "role": "claims_adjuster",
                                           "regions": "west"}, "/console/admin/users")
    assert r.status_code == 303 and "proposed=" in r.headers["location"]
    page = web.get(r.headers["location"]).text
    assert "waiting for approval" in page
    with pytest.raises(NotFound):
        rt.users.get("paula")  # nothing exists until approved
    [proposal] = pending(rt)

    co = web_of(rt, clock, officer)
    queue = co.get("/console/admin/approvals").text
    assert "paula" in queue and "Approve user.create paula" in queue
    r = post(co, f"/console/admin/approvals/{proposal.id}/approve", {"note": "HR ticket 42"},
             "/console/admin/approvals")
    assert r.status_code == 303
    assert not ENROLMENT_CODE.search(co.get(r.headers["location"]).text)
    paula = rt.users.get("paula")
    assert paula.roles == ("claims_adjuster",) and not paula.enrolled
    # The administrator's page now says approved, and shows no code either.
    page = web.get(f"/console/admin/users?proposed={proposal.id}").text
    assert "approved" in page and "cole.compliance" in page
    assert not ENROLMENT_CODE.search(page)
    assert [e["details"]["username"] for e in events(rt, "user.enrolment_code")].count(
        "paula") == 0


def test_an_administrator_cannot_approve_their_own_proposal(
        rt: Runtime, clock: FixedClock) -> None:
    # The strongest administrator: users:manage and approvals:decide in one person.
    both = make_staff(rt, clock, "bo.both", ["admin", "compliance_officer"])
    web = web_of(rt, clock, both)
    post(web, "/console/admin/users", {"username": "sock", "role": "dpo"},
         "/console/admin/users")
    [proposal] = pending(rt)
    queue = web.get("/console/admin/approvals").text
    # Listed as waiting for someone else: no button to approve it.
    assert "sock" in queue and "Approve user.create sock" not in queue
    r = post(web, f"/console/admin/approvals/{proposal.id}/approve", {},
             "/console/admin/approvals")
    assert r.status_code == 403 and "other than its proposer" in r.text
    assert [a.id for a in pending(rt)] == [proposal.id]
    with pytest.raises(NotFound):
        rt.users.get("sock")
    assert events(rt, "approval.approve") == []


def test_an_administrator_cannot_grant_themselves_a_data_role(
        rt: Runtime, clock: FixedClock) -> None:
    both = make_staff(rt, clock, "bo.both", ["admin", "compliance_officer"])
    web = web_of(rt, clock, both)
    r = post(web, "/console/admin/users/bo.both/roles",
             {"role": ["admin", "compliance_officer", "claims_adjuster"]},
             "/console/admin/users/bo.both")
    assert r.status_code == 303 and "proposed=" in r.headers["location"]
    assert "waiting for approval" in web.get(r.headers["location"]).text
    assert rt.users.get("bo.both").roles == ("admin", "compliance_officer")
    [proposal] = pending(rt)
    r = post(web, f"/console/admin/approvals/{proposal.id}/approve", {},
             "/console/admin/approvals")
    assert r.status_code == 403
    assert rt.users.get("bo.both").roles == ("admin", "compliance_officer")
    # Not by creating a second account for themselves either: that too waits.
    post(web, "/console/admin/users", {"username": "bo.alt", "role": "claims_adjuster"},
         "/console/admin/users")
    with pytest.raises(NotFound):
        rt.users.get("bo.alt")


def test_an_administrator_without_approvals_decide_cannot_decide(
        rt: Runtime, clock: FixedClock, admin: Staff, officer: Staff) -> None:
    other = make_staff(rt, clock, "oz.admin", ["admin"])
    web = web_of(rt, clock, admin)
    post(web, "/console/admin/users", {"username": "pat", "role": "dpo"},
         "/console/admin/users")
    [proposal] = pending(rt)
    web2 = web_of(rt, clock, other)
    page = web2.get("/console/admin/approvals").text
    assert "does not decide proposals" in page and "Approve user.create" not in page
    for verdict in ("approve", "reject"):
        r = post(web2, f"/console/admin/approvals/{proposal.id}/{verdict}", {},
                 "/console/admin/approvals")
        assert r.status_code == 403
    assert [a.status for a in pending(rt)] == ["pending"]


def test_a_rejected_proposal_applies_nothing(
        rt: Runtime, clock: FixedClock, admin: Staff, officer: Staff) -> None:
    web = web_of(rt, clock, admin)
    post(web, "/console/admin/users", {"username": "rex", "role": "dpo"},
         "/console/admin/users")
    [proposal] = pending(rt)
    co = web_of(rt, clock, officer)
    r = post(co, f"/console/admin/approvals/{proposal.id}/reject", {"note": "no ticket"},
             "/console/admin/approvals")
    assert r.status_code == 303
    assert "rejected" in co.get("/console/admin/approvals").text
    with pytest.raises(NotFound):
        rt.users.get("rex")
    # Deciding again: a conflict, nothing changes.
    r = post(co, f"/console/admin/approvals/{proposal.id}/approve", {},
             "/console/admin/approvals")
    assert r.status_code == 409
    # An address made up by hand: a page, not a server error.
    assert web.get("/console/admin/users?proposed=" + "x" * 80).status_code == 200
    r = post(co, f"/console/admin/approvals/{proposal.id}/bless", {}, "/console/admin/approvals")
    assert r.status_code == 404


def test_roles_change_disable_and_re_enrol(
        rt: Runtime, clock: FixedClock, admin: Staff, officer: Staff) -> None:
    target = make_staff(rt, clock, "tim", ["claims_adjuster"], ["west"])
    web = web_of(rt, clock, admin)
    page = "/console/admin/users/tim"
    assert "claims_adjuster" in web.get(page).text
    # Taking a data role away applies at once.
    r = post(web, "/console/admin/users/tim/roles", {"role": "admin"}, page)
    assert r.status_code == 303 and "changed=tim" in r.headers["location"]
    assert rt.users.get("tim").roles == ("admin",)
    r = post(web, "/console/admin/users/tim/roles", {}, page)
    assert r.status_code == 422 and "(none)" in r.text
    # Re-enrolment is always a proposal: tim's credentials stay until approved.
    r = post(web, "/console/admin/users/tim/re-enrol", {}, page)
    assert r.status_code == 303 and "proposed=" in r.headers["location"]
    assert rt.users.get("tim").enrolled
    assert "user.re_enrol" in web.get(page).text
    # Disabling ends tim's sessions at once.
    assert target.client.get("/v1/auth/me").status_code == 200
    r = post(web, "/console/admin/users/tim/disable", {}, page)
    assert r.status_code == 303
    assert rt.users.get("tim").disabled_at is not None
    assert target.client.get("/v1/auth/me").status_code == 401
    assert "disabled" in web.get(page).text
    assert web.get("/console/admin/users/nobody").status_code == 404


# -- API keys ----------------------------------------------------------------------------------
def test_an_api_key_secret_is_shown_once_and_revoking_ends_it(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    web = web_of(rt, clock, admin)
    r = post(web, "/console/admin/api-keys", {"name": "batch-export", "role": "admin",
                                              "days": "30"}, "/console/admin/api-keys")
    assert r.status_code == 200
    secret = re.search(r'id="secret"><code>([^<]+)</code>', r.text)
    assert secret and "shown this once" in r.text
    token = secret.group(1)
    [key] = rt.api_keys.all()
    listing = web.get("/console/admin/api-keys").text
    assert "batch-export" in listing and key.id in listing and token not in listing
    assert all(token not in json.dumps(e, default=str) for e in table_rows(rt, "api_keys"))
    api = TestClient(web.app, raise_server_exceptions=False)
    assert api.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
                   ).status_code == 200
    r = post(web, f"/console/admin/api-keys/{key.id}/revoke", {}, "/console/admin/api-keys")
    assert r.status_code == 303
    assert "revoked" in web.get(r.headers["location"]).text
    assert api.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
                   ).status_code == 401
    assert events(rt, "apikey.revoke")[0]["actor"]["name"] == "ada.admin"


def test_an_api_key_with_a_data_role_waits_and_bad_input_is_named(
        rt: Runtime, clock: FixedClock, admin: Staff, officer: Staff) -> None:
    web = web_of(rt, clock, admin)
    r = post(web, "/console/admin/api-keys", {"name": "claims-sync", "role":
                                              "claims_adjuster", "scope": ["read", "search"]},
             "/console/admin/api-keys")
    assert r.status_code == 200 and "waiting for approval" in r.text
    token = re.search(r'id="secret"><code>([^<]+)</code>', r.text)
    assert token
    [key] = rt.api_keys.all()
    assert key.scopes == ("read", "search") and key.approval_id is not None
    assert "pending approval" in web.get("/console/admin/api-keys").text
    api = TestClient(web.app, raise_server_exceptions=False)
    me = {"Authorization": f"Bearer {token.group(1)}"}
    assert api.get("/v1/auth/me", headers=me).status_code == 401  # not before approval
    # The second person approves it in the console: the key works from then on.
    [proposal] = pending(rt)
    co = web_of(rt, clock, officer)
    assert "Approve apikey.create" in co.get("/console/admin/approvals").text
    post(co, f"/console/admin/approvals/{proposal.id}/approve", {}, "/console/admin/approvals")
    assert api.get("/v1/auth/me", headers=me).status_code == 200
    assert ">active<" in web.get("/console/admin/api-keys").text
    for data, field in (({"name": "", "role": "admin"}, "name"),
                        ({"name": "k", "role": "admin", "days": "0"}, "days"),
                        ({"name": "k", "role": "admin", "days": "many"}, "days"),
                        ({"name": "k", "role": "admin", "scope": "fly"}, "scope")):
        r = post(web, "/console/admin/api-keys", data, "/console/admin/api-keys")
        assert r.status_code == 422 and f"<strong>{field}</strong>" in r.text, data
    assert len(rt.api_keys.all()) == 1


# -- access reviews ----------------------------------------------------------------------------
@pytest.fixture
def campaign(rt: Runtime, clock: FixedClock) -> dict[str, Staff]:
    """Mia manages rob: rob's role and region are hers to review."""
    mia = make_staff(rt, clock, "mia", ["admin"])
    rob = make_staff(rt, clock, "rob", ["claims_adjuster"], ["west"])
    rt.users.set_manager("rob", "mia")
    rt.users.set_manager("mia", "rob")
    rt.campaigns.start(SYSTEM)
    return {"mia": mia, "rob": rob}


def test_a_reviewer_keeps_and_revokes_their_own_items_with_a_reason(
        rt: Runtime, clock: FixedClock, campaign: dict[str, Staff]) -> None:
    web = web_of(rt, clock, campaign["mia"])
    page = web.get("/console/admin/reviews").text
    assert "rob" in page and "claims_adjuster" in page and "west" in page
    assert "Campaigns" not in page  # progress is for reviews:read
    items = {i.entitlement: i for i in rt.campaigns.overview(SYSTEM).items
             if i.account_name == "rob"}
    role, region = items["claims_adjuster"], items["west"]
    decide = f"/console/admin/reviews/{role.campaign_id}/items/{role.id}/decide"
    r = post(web, decide, {"decision": "revoke", "note": " "}, "/console/admin/reviews")
    assert r.status_code == 422 and "<strong>note</strong>" in r.text
    assert rt.users.get("rob").roles == ("claims_adjuster",)
    r = post(web, decide, {"decision": "revoke", "note": "moved to underwriting"},
             "/console/admin/reviews")
    assert r.status_code == 303
    assert rt.users.get("rob").disabled_at is not None  # the last role: account disabled
    r = post(web, f"/console/admin/reviews/{region.campaign_id}/items/{region.id}/decide",
             {"decision": "keep"}, "/console/admin/reviews")
    assert r.status_code == 303
    page = web.get("/console/admin/reviews").text
    assert "No review item waits for you" in page


def test_nobody_reviews_their_own_access_and_progress_is_for_reviews_read(
        rt: Runtime, clock: FixedClock, campaign: dict[str, Staff], officer: Staff) -> None:
    mine = [i for i in rt.campaigns.overview(SYSTEM).items if i.account_name == "mia"]
    web = web_of(rt, clock, campaign["mia"])
    assert "mia (user)" not in web.get("/console/admin/reviews").text
    # Mia posts a decision on her own admin role: refused, nothing decided.
    item = next(i for i in mine if i.entitlement == "admin")
    r = post(web, f"/console/admin/reviews/{item.campaign_id}/items/{item.id}/decide",
             {"decision": "keep"}, "/console/admin/reviews")
    assert r.status_code == 403
    assert all(i.decision is None for i in rt.campaigns.overview(SYSTEM).items)
    # Another administrator, not rob's manager, sees none of rob's items and may not decide.
    stranger = web_of(rt, clock, make_staff(rt, clock, "sal", ["admin"]))
    assert "No review item waits for you" in stranger.get("/console/admin/reviews").text
    robs = next(i for i in rt.campaigns.overview(SYSTEM).items if i.account_name == "rob")
    r = post(stranger, f"/console/admin/reviews/{robs.campaign_id}/items/{robs.id}/decide",
             {"decision": "revoke", "note": "why not"}, "/console/admin/reviews")
    assert r.status_code == 403 and "not assigned to you" in r.text
    assert rt.users.get("rob").roles == ("claims_adjuster",)
    # The compliance officer (reviews:read) sees every campaign's progress.
    page = web_of(rt, clock, officer).get("/console/admin/reviews").text
    assert "Campaigns" in page and "0 / " in page and "No review item waits for you" in page


# -- HR, keys ----------------------------------------------------------------------------------
def test_hr_shows_the_last_sync_dormant_accounts_and_checks_a_feed(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    make_staff(rt, clock, "lou", ["claims_adjuster"], ["west"])
    make_staff(rt, clock, "dmitri", ["claims_adjuster"], ["west"])
    web = web_of(rt, clock, admin)
    assert "never been applied" in web.get("/console/admin/hr").text
    rt.hr.sync_text("username,status\nlou,leaver\n")
    clock.advance(days=100)
    web = web_of(rt, clock, admin)
    page = web.get("/console/admin/hr").text
    assert re.search(r"Leavers disabled</dt><dd>1<", page)
    assert 'href="/console/admin/users/dmitri"' in page  # unused for 100 days: dormant
    feed = "username,status,role\ndmitri,leaver,\nada.admin,active,dpo\nghost,active,\n"
    r = post(web, "/console/admin/hr/check", {"feed": feed}, "/console/admin/hr")
    assert r.status_code == 200
    assert re.search(r"Leavers to disable</dt><dd>dmitri<", r.text)
    assert "ada.admin: HR says dpo" in r.text and "no such user" in r.text
    assert rt.users.get("dmitri").disabled_at is None  # a dry run: nothing applied
    r = post(web, "/console/admin/hr/check", {"feed": "name\nx\n"}, "/console/admin/hr")
    assert r.status_code == 422 and "<strong>username</strong>" in r.text


def test_key_status_shows_versions_age_and_rotation_progress_never_key_material(
        rt: Runtime, clock: FixedClock, admin: Staff) -> None:
    for _ in range(3):
        rt.vault.create_subject(SYSTEM)
    web = web_of(rt, clock, admin)
    page = web.get("/console/admin/keys").text
    assert re.search(r"Subject keys under version 1</dt><dd>3 / 3<", page)
    assert "within the period" in page
    keyring = (rt.settings.data_dir / "keyring.json").read_text()
    for value in re.findall(r'"([A-Za-z0-9+/=_-]{40,})"', keyring):
        assert value not in page
    rt.vault.keys.rotate()
    clock.advance(days=800)  # the new version's date is the host's: well past a year
    page = web_of(rt, clock, admin).get("/console/admin/keys").text
    assert re.search(r"Subject keys under version 2</dt><dd>3 / 3<", page)
    assert "rotation overdue by" in page
    # A compliance officer holds config:read too; an ethics officer does not.
    ethics = make_staff(rt, clock, "eli", ["ethics_officer"])
    assert web_of(rt, clock, ethics).get("/console/admin/keys").status_code == 403
