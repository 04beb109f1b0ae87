"""Issue 10, items 4, 6, 7 (authentication) and 8 (API-key lifetime), replayed as the attacker
would: a real uvicorn server and real parallel connections where the attack is a race, on
SQLite and on PostgreSQL (the ``backend`` fixture); every attempt refused."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import event
from typer.testing import CliRunner

from fiduciary.api.app import create_app
from fiduciary.cli.main import app as cli_app
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.errors import InvalidInput
from fiduciary.runtime import Runtime, open_runtime
from tests.conftest import STRONG, Staff, make_staff, table_rows
from tests.pgserver import _free_port

# -- harness -------------------------------------------------------------------------------------


@contextmanager
def serving(rt: Runtime) -> Iterator[str]:
    """The API over ``rt`` under a real uvicorn, in this process (so the test shares the
    runtime's clock): every client thread gets its own connection, every request its own
    worker thread and database connection."""
    port = _free_port()
    # log_config=None, as serve runs it: uvicorn's own handlers would otherwise stay in this
    # worker process and print later tests' tracebacks (test_hygiene's secret) as they are.
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port,
                                           lifespan="off", log_level="warning", ws="none",
                                           http="h11", log_config=None))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def in_parallel(base: str, n: int, path: str, body: dict[str, Any],
                token: str | None = None) -> list[httpx.Response]:
    """``n`` requests released together, each on its own connection."""
    barrier = threading.Barrier(n)
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=120, headers=headers) as c:
            barrier.wait()
            return c.post(path, json=body)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def events(rt: Runtime, action: str) -> list[dict[str, Any]]:
    return [json.loads(str(r["event"])) for r in table_rows(rt, "audit_events")
            if r["action"] == action]


@contextmanager
def runtime_with(settings: Settings, clock: FixedClock, **overrides: Any) -> Iterator[Runtime]:
    rt = open_runtime(settings.model_copy(update=overrides), create=True, clock=clock)
    try:
        yield rt
    finally:
        rt.close()


def anon(rt: Runtime) -> TestClient:
    return TestClient(create_app(rt), raise_server_exceptions=False)


def as_key(rt: Runtime, token: str) -> TestClient:
    c = anon(rt)
    c.headers["Authorization"] = f"Bearer {token}"
    return c


def totp(staff: Staff, clock: FixedClock) -> str:
    return pyotp.TOTP(staff.totp_secret).at(clock.now())


# -- item 6: race-free authentication ------------------------------------------------------------


def test_twenty_parallel_wrong_passwords_count_twenty_and_lock(
    rt: Runtime, clock: FixedClock
) -> None:
    victim = make_staff(rt, clock, "victim", ["underwriter"])
    clock.advance(seconds=30)
    with serving(rt) as base:
        answers = in_parallel(base, 20, "/v1/auth/login", {
            "username": "victim", "password": "Guess-Guess-Guess-1", "totp": totp(victim, clock)})
        statuses = Counter(r.status_code for r in answers)
        assert set(statuses) <= {401, 403}, statuses  # never a 500
        # The right password now meets the lock.
        r = httpx.post(f"{base}/v1/auth/login", json={
            "username": "victim", "password": STRONG, "totp": totp(victim, clock)})
        assert r.status_code == 403 and r.json()["error"]["reason"] == "account_locked"
    failed = events(rt, "auth.login_failed")
    counted = [e for e in failed if e["reason"] == "invalid_credentials"]
    refused = [e for e in failed if e["reason"] == "account_locked"]
    # Every attempt is accounted for: exactly the threshold counted, the rest met the lock.
    assert len(counted) == rt.users.settings.lockout_attempts == statuses[401]
    assert statuses[401] + statuses[403] == 20
    assert len(refused) == statuses[403] + 1  # and the right password's attempt
    assert len(events(rt, "auth.lockout")) == 1


def test_a_password_typed_as_the_username_is_stored_nowhere(rt: Runtime,
                                                            clock: FixedClock) -> None:
    """Staff type a password into the username field: the refusal, the failure counter, the
    lockout and the trail hold only a keyed digest of it; the same slip repeated still
    counts to the lock, and a real account's name is kept as it was."""
    real = make_staff(rt, clock, "victim", ["underwriter"])
    slip = "Quartz-Lantern-Fig-9"  # what the user meant as a password
    client = TestClient(create_app(rt))
    for _ in range(rt.users.settings.lockout_attempts + 1):
        r = client.post("/v1/auth/login", json={"username": slip, "password": "x",
                                                 "totp": "000000"})
        assert r.status_code in (401, 403) and slip not in r.text
    assert r.status_code == 403 and r.json()["error"]["reason"] == "account_locked"
    r = client.post("/v1/auth/login", json={"username": "victim", "password": "wrong-wrong",
                                             "totp": totp(real, clock)})
    assert r.status_code == 401
    every = [json.dumps(row, default=str) for table in ("audit_events", "login_failures")
             for row in table_rows(rt, table)]
    assert not any(slip in text for text in every)
    failed = events(rt, "auth.login_failed") + events(rt, "auth.lockout")
    digests = {e["details"].get("username_digest") for e in failed} - {None}
    assert len(digests) == 1 and all(len(d) == 16 for d in digests)  # repeats group
    assert [e["details"]["username"] for e in failed if "username" in e["details"]] == \
        ["victim"]


def test_one_totp_code_opens_one_session_under_six_parallel_logins(
    rt: Runtime, clock: FixedClock
) -> None:
    staff = make_staff(rt, clock, "replayed", ["underwriter"])
    clock.advance(seconds=60)  # a step the first login did not use
    code = totp(staff, clock)
    with serving(rt) as base:
        answers = in_parallel(base, 6, "/v1/auth/login", {
            "username": "replayed", "password": STRONG, "totp": code})
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401, 401, 401]
    user_id = rt.users.get("replayed").id
    sessions = [s for s in table_rows(rt, "sessions") if s["user_id"] == user_id]
    assert len(sessions) == 2  # make_staff's and the one winner's
    assert len(events(rt, "auth.login")) == 2


def test_parallel_successes_and_failures_never_500(rt: Runtime, clock: FixedClock) -> None:
    """Successful logins reset (delete) the failure row while wrong ones lock it."""
    staff = make_staff(rt, clock, "busy", ["underwriter"])
    bodies = [{"username": "busy", "password": STRONG, "recovery_code": code}
              for code in staff.recovery_codes[:8]]
    bodies += [{"username": "busy", "password": "Wrong-Wrong-Wrong-7", "totp": "123456"}] * 8
    barrier = threading.Barrier(len(bodies))
    with serving(rt) as base:
        def one(body: dict[str, Any]) -> int:
            with httpx.Client(base_url=base, timeout=120) as c:
                barrier.wait()
                return c.post("/v1/auth/login", json=body).status_code

        with ThreadPoolExecutor(len(bodies)) as pool:
            statuses = Counter(pool.map(one, bodies))
    assert set(statuses) <= {200, 401, 403}, statuses


def test_one_recovery_code_opens_one_session_in_parallel(rt: Runtime, clock: FixedClock) -> None:
    staff = make_staff(rt, clock, "recovering", ["underwriter"])
    with serving(rt) as base:
        answers = in_parallel(base, 4, "/v1/auth/login", {
            "username": "recovering", "password": STRONG,
            "recovery_code": staff.recovery_codes[0]})
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401]


def test_one_enrolment_code_enrols_once_in_parallel(rt: Runtime, clock: FixedClock) -> None:
    made = rt.users.create("newcomer", ["underwriter"])
    with serving(rt) as base:
        answers = in_parallel(base, 5, "/v1/auth/enrol", {
            "username": "newcomer", "enrolment_code": made.enrolment_code,
            "password": "Saffron-Glacier-Tuba-63"})
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401, 401]
    [winner] = [r.json() for r in answers if r.status_code == 200]
    user_id = rt.users.get("newcomer").id
    codes = [c for c in table_rows(rt, "recovery_codes") if c["user_id"] == user_id]
    assert len(codes) == len(winner["recovery_codes"])
    assert len(events(rt, "auth.enrol")) == 1


def test_password_hashing_holds_no_connection_and_respects_the_cap(
    settings: Settings, clock: FixedClock
) -> None:
    with runtime_with(settings, clock, password_hash_concurrency=2) as rt:
        staff = make_staff(rt, clock, "hashed", ["underwriter"])
        held: Counter[int] = Counter()

        @event.listens_for(rt.db.engine, "checkout")
        def _out(*_: Any) -> None:
            held[threading.get_ident()] += 1

        @event.listens_for(rt.db.engine, "checkin")
        def _in(*_: Any) -> None:
            held[threading.get_ident()] -= 1

        real = rt.users.passwords.hasher
        state = {"now": 0, "max": 0, "inside_transaction": 0}
        lock = threading.Lock()

        class Watched:
            """Argon2 as before; notes concurrency and any connection the caller holds."""

            def verify(self, stored: str, password: str) -> bool:
                with lock:
                    state["now"] += 1
                    state["max"] = max(state["max"], state["now"])
                    if held[threading.get_ident()] > 0:
                        state["inside_transaction"] += 1
                try:
                    time.sleep(0.05)
                    return bool(real.verify(stored, password))
                finally:
                    with lock:
                        state["now"] -= 1

            def hash(self, password: str) -> str:
                return str(real.hash(password))

        rt.users.passwords.hasher = Watched()  # type: ignore[assignment]
        clock.advance(seconds=30)
        with serving(rt) as base:
            answers = in_parallel(base, 8, "/v1/auth/login", {
                "username": "hashed", "password": "Not-The-Password-9", "totp": totp(staff, clock)})
        assert {r.status_code for r in answers} <= {401, 403}
        assert state["inside_transaction"] == 0
        assert 1 <= state["max"] <= 2


def test_login_throttles_per_client_and_overall(settings: Settings, clock: FixedClock) -> None:
    body = {"username": "nobody", "password": "whatever-it-is-1", "totp": "123456"}
    with runtime_with(settings, clock, login_rate_per_client=3) as rt:
        c = anon(rt)
        assert [c.post("/v1/auth/login", json=body).status_code for _ in range(3)] == [401] * 3
        r = c.post("/v1/auth/login", json=body)
        assert r.status_code == 429 and r.json()["error"]["reason"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        # Enrolment guesses share the window.
        r = c.post("/v1/auth/enrol", json={"username": "nobody", "enrolment_code": "X",
                                           "password": STRONG})
        assert r.status_code == 429
    with runtime_with(settings, clock, login_rate_per_client=100, login_rate_global=2) as rt:
        c = anon(rt)
        assert [c.post("/v1/auth/login", json=body).status_code for _ in range(2)] == [401] * 2
        r = c.post("/v1/auth/login", json=body)
        assert r.status_code == 429 and "Retry-After" in r.headers


# -- item 7: a stolen session, password strength, usernames --------------------------------------


def test_stolen_session_guessing_the_password_locks_and_loses_the_session(
    rt: Runtime, clock: FixedClock
) -> None:
    staff = make_staff(rt, clock, "stolen", ["underwriter"])
    thief = staff.client
    attempts = rt.users.settings.lockout_attempts
    statuses = [thief.post("/v1/auth/password", json={
        "current": f"Guess-Number-{i}-xyz", "new": "Brand-New-Passphrase-42"}).status_code
        for i in range(attempts)]
    assert statuses == [422] * (attempts - 1) + [403]
    assert thief.get("/v1/auth/me").status_code == 401  # every session ended
    failed = events(rt, "auth.password_change_failed")
    assert len(failed) == attempts
    assert {e["actor"]["name"] for e in failed} == {"stolen"}
    assert len(events(rt, "auth.lockout")) == 1
    clock.advance(seconds=30)
    r = anon(rt).post("/v1/auth/login", json={"username": "stolen", "password": STRONG,
                                              "totp": totp(staff, clock)})
    assert r.status_code == 403 and r.json()["error"]["reason"] == "account_locked"


def test_a_password_change_ends_the_other_sessions(rt: Runtime, clock: FixedClock) -> None:
    staff = make_staff(rt, clock, "two.devices", ["underwriter"])
    clock.advance(seconds=30)
    other = anon(rt)
    r = other.post("/v1/auth/login", json={"username": "two.devices", "password": STRONG,
                                           "totp": totp(staff, clock)})
    other.headers["Authorization"] = f"Bearer {r.json()['token']}"
    assert other.get("/v1/auth/me").status_code == 200
    assert staff.client.post("/v1/auth/password", json={
        "current": STRONG, "new": "Granite-Heron-Lantern-57"}).status_code == 204
    assert other.get("/v1/auth/me").status_code == 401
    assert staff.client.get("/v1/auth/me").status_code == 200
    [change] = events(rt, "auth.password_change")
    assert change["details"]["sessions_ended"] == 1


def test_weak_passwords_and_look_alike_usernames_are_refused(
    rt: Runtime, clock: FixedClock
) -> None:
    staff = make_staff(rt, clock, "picky", ["underwriter"])
    for weak in ("Insurance2026!", "johnsmith1980", "Fiduciary-2026"):
        r = staff.client.post("/v1/auth/password", json={"current": STRONG, "new": weak})
        assert r.status_code == 422, weak
        assert weak not in r.text
    admin = as_key(rt, rt.api_keys.create("ops", role="admin")[1])
    for name in ("\u0430dmin", "a.jones@example", "a jones", "x" * 65, ""):  # U+0430, a Cyrillic a
        r = admin.post("/v1/admin/users", json={"username": name, "roles": ["admin"]})
        assert r.status_code == 422, name
    with pytest.raises(InvalidInput):
        rt.users.create("p\u0456cky", ["admin"])  # U+0456, a Cyrillic i


# -- item 4: separation of duties ----------------------------------------------------------------


@pytest.fixture
def governed(settings: Settings, clock: FixedClock, tmp_path: Path) -> Iterator[Runtime]:
    """The default pack, with ``approvals:decide`` on the compliance officer (the role the
    default pack is meant to give it) and a role that both administers and approves (to try
    approving one's own proposal)."""
    doc = yaml.safe_load(resources.files("fiduciary.access").joinpath(
        "default_policy.yaml").read_text("utf-8"))
    roles = doc["roles"]
    perms = roles["compliance_officer"].setdefault("permissions", [])
    if "approvals:decide" not in perms:
        perms.append("approvals:decide")
    roles["admin_approver"] = {"description": "test: administers and approves",
                               "permissions": ["users:manage", "apikeys:manage",
                                               "approvals:decide"]}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    with runtime_with(settings, clock, policy=path) as rt:
        yield rt


def operator(rt: Runtime, *args: str) -> tuple[int, str, str]:
    """The CLI, as the operator on the host."""
    s = rt.settings
    env = {"FIDUCIARY_DATA_DIR": str(s.data_dir),
           "FIDUCIARY_DATABASE_URL": s.resolved_database_url(),
           "FIDUCIARY_POLICY": str(s.policy),
           "FIDUCIARY_ARGON2_TIME_COST": str(s.argon2_time_cost),
           "FIDUCIARY_ARGON2_MEMORY_KIB": str(s.argon2_memory_kib)}
    r = CliRunner().invoke(cli_app, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def test_admin_cannot_mint_a_service_key_alone(governed: Runtime, clock: FixedClock) -> None:
    rt = governed
    admin_key = rt.api_keys.create("ops", role="admin")[1]
    admin = as_key(rt, admin_key)
    r = admin.post("/v1/admin/apikeys", json={"name": "backdoor", "role": "service"})
    assert r.status_code == 202, r.text
    proposal = r.json()
    assert proposal["status"] == "pending" and proposal["reason"] == "approval_required"
    stolen = as_key(rt, proposal["api_key"])
    # Tried before approval: the key does not authenticate.
    assert stolen.post("/v1/subjects").status_code == 401
    listed = {k["id"]: k["state"] for k in admin.get("/v1/admin/apikeys").json()["items"]}
    assert listed[proposal["id"]] == "pending_approval"
    # The admin cannot approve (no approvals:decide), nor can any API key (not a person).
    r = admin.post(f"/v1/admin/approvals/{proposal['approval_id']}/approve")
    assert r.status_code == 403
    officer_key = rt.api_keys.create("co-key", role="compliance_officer")[1]
    r = as_key(rt, officer_key).post(f"/v1/admin/approvals/{proposal['approval_id']}/approve")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    assert stolen.post("/v1/subjects").status_code == 401
    # A different person holding approvals:decide approves: now, and only now, it works.
    officer = make_staff(rt, clock, "co.officer", ["compliance_officer"])
    pending = officer.client.get("/v1/admin/approvals?status=pending").json()["items"]
    assert [p["id"] for p in pending] == [proposal["approval_id"]]
    assert pending[0]["proposed_by"]["id"] != "anonymous"
    r = officer.client.post(f"/v1/admin/approvals/{proposal['approval_id']}/approve",
                            json={"note": "integration for the claims portal"})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert r.json()["decided_by"]["name"] == "co.officer"
    assert stolen.post("/v1/subjects").status_code == 201
    # Decided once.
    r = officer.client.post(f"/v1/admin/approvals/{proposal['approval_id']}/reject")
    assert r.status_code == 409
    # Both steps audited with the acting principal.
    [propose] = events(rt, "approval.propose")
    assert propose["actor"]["kind"] == "api_key" and propose["reason"] == "approval_required"
    [approve] = events(rt, "approval.approve")
    assert approve["actor"]["name"] == "co.officer"
    created = [e for e in events(rt, "apikey.create") if e["details"]["name"] == "backdoor"]
    assert created[0]["actor"]["kind"] == "api_key"


def test_a_rejected_key_never_works(governed: Runtime, clock: FixedClock) -> None:
    rt = governed
    admin = as_key(rt, rt.api_keys.create("ops", role="admin")[1])
    proposal = admin.post("/v1/admin/apikeys", json={"name": "dpo-desk", "role": "dpo"}).json()
    code, out, err = operator(rt, "access", "reject", proposal["approval_id"], "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "rejected"
    assert json.loads(out)["decided_by"]["kind"] == "operator"
    assert as_key(rt, proposal["api_key"]).get("/v1/dsr").status_code == 401
    states = {k["id"]: k["state"] for k in admin.get("/v1/admin/apikeys").json()["items"]}
    assert states[proposal["id"]] == "revoked"


def test_admin_cannot_create_a_dpo_and_log_in_as_it(governed: Runtime, clock: FixedClock) -> None:
    rt = governed
    boss = make_staff(rt, clock, "boss", ["admin_approver"])
    r = boss.client.post("/v1/admin/users", json={"username": "mallory", "roles": ["dpo"]})
    assert r.status_code == 202, r.text
    proposal = r.json()
    assert set(proposal) >= {"approval_id", "status"} and proposal["status"] == "pending"
    # No secret in sight, and no such user yet.
    assert not {"password", "totp_secret", "enrolment_code"} & set(proposal)
    assert "mallory" not in {u["username"] for u in
                             boss.client.get("/v1/admin/users").json()["items"]}
    r = anon(rt).post("/v1/auth/enrol", json={"username": "mallory", "enrolment_code": "X",
                                              "password": STRONG})
    assert r.status_code == 401
    # Approving one's own proposal is refused.
    r = boss.client.post(f"/v1/admin/approvals/{proposal['approval_id']}/approve")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    # A second person approves; the approver is not handed the enrolment code either.
    officer = make_staff(rt, clock, "co.officer", ["compliance_officer"])
    r = officer.client.post(f"/v1/admin/approvals/{proposal['approval_id']}/approve")
    assert r.status_code == 200 and "enrolment_code" not in r.text
    user = rt.users.get("mallory")
    assert user.roles == ("dpo",) and not user.enrolled
    [created] = [e for e in events(rt, "user.create") if e["details"]["username"] == "mallory"]
    assert created["actor"]["name"] == "co.officer"
    assert created["details"]["approval_id"] == proposal["approval_id"]
    # The code reaches the user through the operator on the host, shown once.
    code, out, err = operator(rt, "users", "enrolment-code", "mallory", "--json")
    assert code == 0, err
    r = anon(rt).post("/v1/auth/enrol", json={
        "username": "mallory", "enrolment_code": json.loads(out)["enrolment_code"],
        "password": "Quartz-Pelican-Orchard-14"})
    assert r.status_code == 200


def test_nobody_approves_a_change_to_their_own_access(governed: Runtime, clock: FixedClock) -> None:
    rt = governed
    admin = as_key(rt, rt.api_keys.create("ops", role="admin")[1])
    officer = make_staff(rt, clock, "co.officer", ["compliance_officer"])
    r = admin.put("/v1/admin/users/co.officer/roles",
                  json={"roles": ["compliance_officer", "dpo"]})
    assert r.status_code == 202, r.text
    r = officer.client.post(f"/v1/admin/approvals/{r.json()['approval_id']}/approve")
    assert r.status_code == 403 and r.json()["error"]["reason"] == "separation_of_duties"
    assert rt.users.get("co.officer").roles == ("compliance_officer",)
    # Roles that reach no customer data change at once, audited with the admin.
    r = admin.put("/v1/admin/users/co.officer/roles", json={"roles": ["admin"]})
    assert r.status_code == 200 and r.json()["roles"] == ["admin"]
    [changed] = events(rt, "user.set_roles")
    assert changed["actor"]["kind"] == "api_key"


def test_an_administrator_does_not_make_anyone_the_analyst(governed: Runtime,
                                                           clock: FixedClock) -> None:
    """Deciding what becomes of alerts and incidents is governed like data access: an
    administrator makes nobody (itself included) the one who dismisses findings."""
    rt = governed
    admin = as_key(rt, rt.api_keys.create("ops", role="admin")[1])
    make_staff(rt, clock, "ops.person", ["admin"])
    for roles in (["security_analyst"], ["admin", "security_analyst"]):
        r = admin.put("/v1/admin/users/ops.person/roles", json={"roles": roles})
        assert r.status_code in (202, 422), r.text  # proposed (then: already pending)
    assert rt.users.get("ops.person").roles == ("admin",)
    r = admin.post("/v1/admin/apikeys", json={"name": "soc", "role": "security_analyst"})
    assert r.status_code == 202, r.text


def test_re_enrolment_is_approved_and_ends_the_old_credentials(
    governed: Runtime, clock: FixedClock
) -> None:
    rt = governed
    admin = as_key(rt, rt.api_keys.create("ops", role="admin")[1])
    victim = make_staff(rt, clock, "adjuster.a", ["claims_adjuster"])
    r = admin.post("/v1/admin/users/adjuster.a/re-enrol")
    assert r.status_code == 202
    assert victim.client.get("/v1/auth/me").status_code == 200  # nothing yet
    code, _, err = operator(rt, "access", "approve", r.json()["approval_id"])
    assert code == 0, err
    assert victim.client.get("/v1/auth/me").status_code == 401
    clock.advance(seconds=30)
    r = anon(rt).post("/v1/auth/login", json={"username": "adjuster.a", "password": STRONG,
                                              "totp": totp(victim, clock)})
    assert r.status_code == 401


def test_parallel_creation_of_one_username_never_500(rt: Runtime) -> None:
    token = rt.api_keys.create("ops", role="admin")[1]
    with serving(rt) as base:
        answers = in_parallel(base, 6, "/v1/admin/users",
                              {"username": "twin", "roles": ["admin"]}, token=token)
    assert sorted(r.status_code for r in answers) == [201, 422, 422, 422, 422, 422]


def test_admin_actions_through_the_api_name_the_admin(rt: Runtime, clock: FixedClock) -> None:
    key, token = rt.api_keys.create("ops", role="admin")
    admin = as_key(rt, token)
    make_staff(rt, clock, "leaver", ["underwriter"])
    assert admin.post("/v1/admin/users/leaver/disable").status_code == 200
    r = admin.post("/v1/admin/apikeys", json={"name": "provisioner", "role": "admin"})
    assert r.status_code == 201
    assert admin.delete(f"/v1/admin/apikeys/{r.json()['id']}").status_code == 204
    assert admin.post("/v1/admin/users", json={"username": "new.admin", "roles": ["admin"]}
                      ).status_code == 201
    for action in ("user.disable", "apikey.revoke", "user.create"):
        actors = {(e["actor"]["kind"], e["actor"]["id"]) for e in events(rt, action)
                  if e["details"].get("username") != "leaver" or action != "user.create"}
        assert actors == {("api_key", key.id)}, (action, actors)
    made = [e for e in events(rt, "apikey.create") if e["details"]["name"] == "provisioner"]
    assert made[0]["actor"]["id"] == key.id


# -- item 8: API-key lifetime ---------------------------------------------------------------------


def test_api_key_lifetime_is_bounded(rt: Runtime, clock: FixedClock,
                                     settings: Settings) -> None:
    admin = as_key(rt, rt.api_keys.create("ops", role="admin")[1])
    for days in (0, -1, 731, 10**12, 10**30):
        r = admin.post("/v1/admin/apikeys", json={"name": "k", "role": "admin", "days": days})
        assert r.status_code == 422, (days, r.text)
        assert r.json()["error"]["fields"][0]["field"] == "days"
    r = admin.post("/v1/admin/apikeys", json={"name": "k", "role": "admin"})
    assert r.status_code == 201
    expires = datetime.fromisoformat(r.json()["expires_at"].replace("Z", "+00:00"))
    assert expires == clock.now() + timedelta(days=365)
    with pytest.raises(InvalidInput):
        rt.api_keys.create("never-expires", days=0)
    for key in rt.api_keys.all():
        assert key.expires_at is not None
    runner_env = {"FIDUCIARY_DATA_DIR": str(settings.data_dir),
                  "FIDUCIARY_DATABASE_URL": settings.resolved_database_url()}
    r2 = CliRunner().invoke(cli_app, ["apikeys", "create", "--days", "0"], env=runner_env)
    assert r2.exit_code == 2 and "days" in r2.stderr
