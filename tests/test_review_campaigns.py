"""Access review campaigns (issue 13, item 5): the snapshot of every entitlement, who
reviews it, revocations that take effect at once, overdue items and the 365-day flag — and
the attacks: a manager certifying their own access, a reviewer deciding someone else's items,
an administrator keeping its own role."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fiduciary.clock import FixedClock
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from tests.conftest import Staff, make_staff, table_rows

CH = "claims_handling"


def claim_for(rt: Runtime, adjuster: str, number: str = "CLM-1") -> str:
    s = rt.vault.create_subject(SYSTEM).id
    return rt.vault.create_record(SYSTEM, "claims", s, {
        "claim_number": number, "policy_number": "POL-1", "status": "open",
        "loss_date": "2026-01-03", "assigned_adjuster": adjuster,
        "description": "Water came through the ceiling"}, CH).id


@pytest.fixture
def office(rt: Runtime, clock: FixedClock) -> dict[str, Any]:
    """mia manages adam (adjuster and underwriter, one claim, a key of his own); sam is the
    security analyst; ursula (agent, region west) and ada (admin) have no manager."""
    mia = make_staff(rt, clock, "mia", ["underwriter"])
    rt.users.create("adam", ["claims_adjuster", "underwriter"], manager="mia",
                    employee_id="E-100")
    adam = make_staff_existing(rt, clock, "adam")
    sam = make_staff(rt, clock, "sam", ["security_analyst"])
    ursula = make_staff(rt, clock, "ursula", ["call_center_agent"], ["west", "northeast"])
    ada = make_staff(rt, clock, "ada", ["admin"])
    adam_id = rt.users.get("adam").id
    key, token = rt.api_keys.create("adam-script", "claims_adjuster", owner_id=adam_id)
    claim = claim_for(rt, "adam")
    campaign = rt.campaigns.start(SYSTEM)
    return {"mia": mia, "adam": adam, "sam": sam, "ursula": ursula, "ada": ada,
            "key": key.id, "token": token, "claim": claim, "campaign": campaign.id}


def make_staff_existing(rt: Runtime, clock: FixedClock, username: str) -> Staff:
    """make_staff for a user created here (with a manager): a fresh code, enrol, log in."""
    import pyotp

    from fiduciary.api.app import create_app
    from tests.conftest import STRONG

    code = rt.users.issue_enrolment_code(username).enrolment_code
    rt.users.record_training(username, "data-protection", clock.now().date() - timedelta(days=1))
    client = TestClient(create_app(rt), raise_server_exceptions=False)
    creds = client.post("/v1/auth/enrol", json={"username": username, "enrolment_code": code,
                                                "password": STRONG}).json()
    r = client.post("/v1/auth/login", json={
        "username": username, "password": STRONG,
        "totp": pyotp.TOTP(creds["totp_secret"]).at(clock.now())})
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return Staff(username, client, creds["totp_secret"], STRONG, creds["recovery_codes"])


def audit_events(rt: Runtime) -> list[dict[str, Any]]:
    return [json.loads(str(r["event"])) for r in table_rows(rt, "audit_events")]


def items(staff: Staff, **params: Any) -> list[dict[str, Any]]:
    r = staff.client.get("/v1/reviews", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def item(rt: Runtime, account: str, kind: str, entitlement: str | None = None
         ) -> dict[str, Any]:
    found = [i.as_dict() for i in rt.campaigns.overview(SYSTEM, decided=True).items
             if i.account_name == account and i.kind == kind
             and (entitlement is None or i.entitlement == entitlement)]
    assert len(found) == 1, found
    return found[0]


def decide(staff: Staff, it: dict[str, Any], decision: str, note: str | None = None
           ) -> Any:
    return staff.client.post(f"/v1/reviews/{it['campaign_id']}/items/{it['id']}/decide",
                             json={"decision": decision, "note": note})


def test_a_campaign_lists_every_entitlement_with_its_reviewer(rt: Runtime,
                                                              office: dict[str, Any]) -> None:
    adam = {(i["kind"], i["entitlement"]): i for i in
            (x.as_dict() for x in rt.campaigns.overview(SYSTEM).items)
            if i["account"]["name"] == "adam"}
    assert set(adam) == {("role", "claims_adjuster"), ("role", "underwriter"),
                         ("assignment", f"claims/{office['claim']}"),
                         ("api_key", office["key"])}
    assert {i["reviewer"]["name"] for i in adam.values()} == {"mia"}
    context = adam[("role", "claims_adjuster")]["context"]
    assert context["mfa_enrolled"] is True and context["last_login_at"]
    assert context["training"]["current"] is True
    assert adam[("api_key", office["key"])]["context"]["role"] == "claims_adjuster"
    # No manager: the security analysts' pool; a region is an entitlement too.
    ursula = item(rt, "ursula", "region", "west")
    assert ursula["reviewer"] == {"id": None, "name": None, "role": "security_analyst"}
    [c] = rt.campaigns.campaigns()
    assert (c.total, c.decided, c.overdue, c.as_dict()["completion"]) == (
        len(rt.campaigns.overview(SYSTEM).items), 0, 0, 0.0)
    # A reviewer sees only what is theirs to decide.
    mine = items(office["mia"])
    assert {i["account"]["name"] for i in mine} == {"adam"}
    assert items(office["adam"]) == []
    r = office["adam"].client.get("/v1/reviews")
    assert r.json()["uncertified"] is None
    # A reviews:read holder sees everything, and the accounts never certified.
    everything = office["sam"].client.get("/v1/reviews").json()
    assert len(everything["items"]) == c.total
    assert "adam" in {u["name"] for u in everything["uncertified"]}


def test_a_revoked_role_stops_granting_access_at_once(rt: Runtime,
                                                      office: dict[str, Any]) -> None:
    adam, mia = office["adam"], office["mia"]
    claim_url = f"/v1/collections/claims/records/{office['claim']}?purpose={CH}"
    assert adam.client.get(claim_url).status_code == 200
    role = item(rt, "adam", "role", "claims_adjuster")
    r = decide(mia, role, "revoke")  # a revocation says why
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "note"
    r = decide(mia, role, "revoke", "moved to underwriting in March")
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "revoke" and r.json()["effect"] == "role removed"
    assert rt.users.get("adam").roles == ("underwriter",)
    assert adam.client.get(claim_url).status_code in (403, 404)
    assert "Water" not in adam.client.get(claim_url).text
    # Decided once: a second decision (either way) is a conflict and changes nothing.
    r = decide(mia, role, "keep")
    assert r.status_code == 409 and r.json()["error"]["reason"] == "already_decided"
    assert rt.users.get("adam").roles == ("underwriter",)
    events = [e for e in audit_events(rt) if e["action"] in ("review.decide", "user.set_roles")]
    assert [e["actor"]["name"] for e in events] == ["mia", "mia"]
    decided = next(e for e in events if e["action"] == "review.decide")
    assert "moved to underwriting" not in str(decided)  # the note only as a digest
    assert decided["details"]["note_digest"]


def test_revoking_a_key_and_an_assignment_ends_them(rt: Runtime, client: TestClient,
                                                    office: dict[str, Any]) -> None:
    mia = office["mia"]
    as_key = {"Authorization": f"Bearer {office['token']}"}
    assert client.get("/v1/datamap", headers=as_key).status_code == 200
    r = decide(mia, item(rt, "adam", "api_key"), "revoke", "the script is retired")
    assert r.status_code == 200 and r.json()["effect"] == "key revoked"
    assert client.get("/v1/datamap", headers=as_key).status_code == 401
    r = decide(mia, item(rt, "adam", "assignment"), "revoke", "claim handed over")
    assert r.status_code == 200 and r.json()["effect"] == "assignment ended"
    stored = client.get(f"/v1/collections/claims/records/{office['claim']}?purpose={CH}")
    assert "assigned_adjuster" not in stored.json()["data"]
    r = office["adam"].client.get(
        f"/v1/collections/claims/records/{office['claim']}?purpose={CH}")
    assert r.status_code == 404


def test_revoking_the_last_role_disables_the_account(rt: Runtime,
                                                     office: dict[str, Any]) -> None:
    ursula_role = item(rt, "ursula", "role", "call_center_agent")
    r = decide(office["sam"], ursula_role, "revoke", "left the call centre")
    assert r.status_code == 200 and r.json()["effect"] == "account disabled (last role)"
    assert office["ursula"].client.get("/v1/auth/me").status_code == 401


def test_nobody_decides_their_own_access(rt: Runtime, office: dict[str, Any]) -> None:
    # The security analyst is in the pool that reviews accounts without a manager, his own
    # included: he still cannot keep his own role.
    own = item(rt, "sam", "role", "security_analyst")
    r = decide(office["sam"], own, "keep")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    assert item(rt, "sam", "role", "security_analyst")["decision"] is None
    # An administrator keeping its own role through a campaign.
    admin_role = item(rt, "ada", "role", "admin")
    r = decide(office["ada"], admin_role, "keep")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    assert item(rt, "ada", "role", "admin")["decision"] is None
    # A manager certifying their own access: mia cannot be her own manager, and her own
    # items are not hers to decide.
    with pytest.raises(Exception, match="own manager"):
        rt.users.set_manager("mia", "mia")
    r = decide(office["mia"], item(rt, "mia", "role", "underwriter"), "keep")
    assert r.status_code == 403
    assert item(rt, "mia", "role", "underwriter")["decision"] is None


def test_a_reviewer_cannot_decide_someone_elses_items(rt: Runtime,
                                                      office: dict[str, Any]) -> None:
    west = item(rt, "ursula", "region", "west")
    r = decide(office["mia"], west, "revoke", "not my team, but I will try")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "field_not_permitted"
    assert rt.users.get("ursula").regions == ("west", "northeast")
    r = decide(office["ada"], item(rt, "adam", "role", "claims_adjuster"), "revoke", "x")
    assert r.status_code == 403
    assert "claims_adjuster" in rt.users.get("adam").roles
    # An API key decides nothing, and an administrator opens no campaign.
    as_key = TestClient(office["mia"].client.app, raise_server_exceptions=False)
    as_key.headers["Authorization"] = f"Bearer {office['token']}"
    r = as_key.post(f"/v1/reviews/{west['campaign_id']}/items/{west['id']}/decide",
                    json={"decision": "keep"})
    assert r.status_code == 403
    assert office["ada"].client.post("/v1/reviews", json={}).status_code == 403
    # An item of another campaign, or none: 404.
    r = office["sam"].client.post(f"/v1/reviews/{west['campaign_id']}/items/"
                                  f"{west['campaign_id']}/decide", json={"decision": "keep"})
    assert r.status_code == 404


def test_overdue_items_completion_and_the_365_day_flag(rt: Runtime, clock: FixedClock,
                                                       office: dict[str, Any]) -> None:
    for it in items(office["mia"]):  # on time
        assert decide(office["mia"], it, "keep").status_code == 200
    flagged = {u.name for u in rt.campaigns.uncertified()}
    assert "adam" not in flagged and "ursula" in flagged
    clock.advance(days=31)
    [c] = rt.campaigns.campaigns()
    open_items = rt.campaigns.overview(SYSTEM).items
    assert c.overdue == len(open_items) == c.total - c.decided > 0 and c.status == "open"
    assert all(i.overdue for i in open_items)
    for it in open_items:  # the operator decides the rest, late
        rt.campaigns.decide(SYSTEM, it.campaign_id, it.id, "keep")
    [c] = rt.campaigns.campaigns()
    assert (c.status, c.decided, c.overdue, c.as_dict()["completion"]) == (
        "complete", c.total, 0, 100.0)
    # Every account of the campaign is certified (API keys nobody holds were in it too).
    assert {u.name for u in rt.campaigns.uncertified()} <= {"tests"}
    clock.advance(days=366)
    assert "adam" in {u.name for u in rt.campaigns.uncertified()}
    assert any(r["name"] == "adam" and "not_reviewed_365d" in r["flags"]
               for r in rt.reviews.review())


def test_bad_campaign_requests_name_the_field(rt: Runtime, office: dict[str, Any]) -> None:
    sam = office["sam"].client
    r = sam.post("/v1/reviews", json={"scope": "role:astronaut"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "scope"
    r = sam.post("/v1/reviews", json={"due": "2020-01-01"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "due"
    r = sam.post("/v1/reviews", json={"scope": "role:call_center_agent"})
    assert r.status_code == 201, r.text
    scoped = [i for i in items(office["sam"], campaign=r.json()["id"])]
    assert {i["account"]["name"] for i in scoped} == {"ursula"}
    r = decide(office["sam"], scoped[0], "maybe")
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "decision"
    r = decide(office["sam"], scoped[0], "revoke", "   ")
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "note"
    r = decide(office["sam"], scoped[0], "keep", "")  # a keep needs no note
    assert r.status_code == 200 and r.json()["note"] is None


def test_a_managers_items_go_to_the_pool_when_the_manager_leaves(
        rt: Runtime, office: dict[str, Any]) -> None:
    role = item(rt, "adam", "role", "underwriter")
    assert decide(office["sam"], role, "keep").status_code == 403  # mia's, while she is here
    rt.users.set_disabled("mia", True, reason="leaver")
    assert item(rt, "adam", "role", "underwriter")["reviewer"]["role"] == "security_analyst"
    r = decide(office["sam"], role, "keep")
    assert r.status_code == 200 and r.json()["decided_by"] == "sam"


def test_a_new_manager_takes_over_and_the_former_one_decides_nothing(
        rt: Runtime, clock: FixedClock, office: dict[str, Any]) -> None:
    """adam moves to a new manager mid-campaign: mia, his former manager, no longer sees or
    decides his items (a keep from her is refused); the new manager does; and the move is
    on the trail."""
    nora = make_staff(rt, clock, "nora", ["underwriter"])
    role = item(rt, "adam", "role", "underwriter")
    rt.users.set_manager("adam", "nora")
    assert not [i for i in items(office["mia"]) if i["account"]["name"] == "adam"]
    r = decide(office["mia"], role, "keep")
    assert r.status_code == 403 and "underwriter" in rt.users.get("adam").roles
    mine = [i for i in items(nora) if i["account"]["name"] == "adam"]
    assert mine and all(i["reviewer"]["name"] == "nora" for i in mine)
    r = decide(nora, role, "keep")
    assert r.status_code == 200 and r.json()["decided_by"] == "nora"
    moved = [e for e in audit_events(rt) if e["action"] == "review.reassigned"]
    assert len(moved) == 1 and role["id"] in moved[0]["details"]["moves"][0]["items"]
    assert moved[0]["actor"]["kind"] == "system"  # not whoever happened to list the items
    # With no manager at all, the items go to the pool.
    rt.users.set_manager("adam", None)
    left = [i for i in items(office["sam"]) if i["account"]["name"] == "adam"]
    assert left and all(i["reviewer"]["role"] == "security_analyst" for i in left)


def test_the_operator_runs_campaigns_from_the_cli(rt: Runtime) -> None:
    from typer.testing import CliRunner

    from fiduciary.cli.main import app as cli_app

    rt.users.create("mia", ["underwriter"])
    rt.users.create("adam", ["claims_adjuster"], regions=["west"], manager="mia")
    s = rt.settings
    env = {"FIDUCIARY_DATA_DIR": str(s.data_dir),
           "FIDUCIARY_DATABASE_URL": s.resolved_database_url()}

    def cli(*args: str) -> Any:
        r = CliRunner().invoke(cli_app, list(args), env=env)
        assert r.exit_code == 0, r.stdout + r.stderr
        return r.stdout

    bad = CliRunner().invoke(cli_app, ["reviews", "start", "--scope", "role:astronaut"],
                             env=env)
    assert bad.exit_code == 2 and "scope" in bad.stderr
    bad = CliRunner().invoke(cli_app, ["users", "create", "eve", "--role", "underwriter",
                                       "--manager", "ghost"], env=env)
    assert bad.exit_code == 2 and "manager" in bad.stderr
    assert "eve" not in {u.username for u in rt.users.all()}  # nothing of it stored
    started = json.loads(cli("reviews", "start", "--scope", "role:claims_adjuster", "--json"))
    assert started["items"] == 2 and started["completion"] == 0.0
    listed = json.loads(cli("reviews", "list", "--json"))
    region = next(i for i in listed["items"] if i["kind"] == "region")
    assert region["reviewer"]["name"] == "mia"
    assert {u["name"] for u in listed["uncertified"]} == {"mia", "adam"}
    out = cli("reviews", "decide", started["id"], region["id"], "revoke", "--note",
              "no longer covers the west")
    assert "region removed" in out
    assert rt.users.get("adam").regions == ()
    people = {u["username"]: u for u in json.loads(cli("users", "list", "--json"))["items"]}
    assert people["adam"]["manager"] == "mia" and people["mia"]["manager"] is None
    table = cli("reviews", "list")
    assert "Not certified within 365 days" in table and "50.0%" in table
