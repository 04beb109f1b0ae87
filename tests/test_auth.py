"""Staff authentication: initial password change, MFA, uniform errors, lockout, sessions."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fiduciary.api.app import create_app
from fiduciary.cli.main import app
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.runtime import Runtime
from tests.conftest import STRONG, make_staff, table_rows
from tests.test_import_export import cli


def anon(rt: Runtime) -> TestClient:
    return TestClient(create_app(rt), raise_server_exceptions=False)


def login(c: TestClient, username: str, password: str, totp: str | None) -> dict[str, object]:
    r = c.post("/v1/auth/login", json={"username": username, "password": password,
                                       "totp": totp})
    return {"status": r.status_code, **r.json()}


def test_users_create_json_gives_an_enrolment_code_and_no_secret(
    rt: Runtime, settings: Settings, clock: FixedClock
) -> None:
    code, out, _ = cli(settings, "users", "create", "ann", "--role", "underwriter", "--json")
    assert code == 0, out
    created = json.loads(out)
    assert {"username", "enrolment_code", "enrolment_expires_at"} <= set(created)
    assert not {"password", "totp_secret", "totp_uri", "recovery_codes"} & set(created)
    valid_for = datetime.fromisoformat(created["enrolment_expires_at"]) - datetime.now(UTC)
    assert timedelta(hours=71.9) < valid_for <= timedelta(hours=72)
    c = anon(rt)
    enrol = {"username": "ann", "enrolment_code": created["enrolment_code"]}
    # Not enrolled yet: nothing logs in.
    assert login(c, "ann", STRONG, "123456")["status"] == 401
    for weak, why in (("short", "at least 12"), ("Password123!", "too common"),
                      ("Insurance2026!", "too common"), ("ann-is-the-best-2026", "username"),
                      ("johnsmith1980", "too easy to guess")):
        r = c.post("/v1/auth/enrol", json={**enrol, "password": weak})
        assert r.status_code == 422, weak
        assert why in r.text and weak not in r.text
    r = c.post("/v1/auth/enrol", json={**enrol, "enrolment_code": "AAAAA-BBBBB-CCCCC-DDDDD",
                                       "password": STRONG})
    assert r.status_code == 401
    r = c.post("/v1/auth/enrol", json={**enrol, "password": STRONG})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"totp_secret", "totp_uri", "recovery_codes"}
    secret = r.json()["totp_secret"]
    assert r.json()["totp_uri"].startswith("otpauth://totp/")
    # The code works once.
    assert c.post("/v1/auth/enrol", json={**enrol, "password": STRONG}).status_code == 401
    r = c.post("/v1/auth/login", json={"username": "ann", "password": STRONG,
                                       "totp": pyotp.TOTP(secret).at(clock.now())})
    assert r.status_code == 200
    assert set(r.json()) == {"token", "expires_at"}
    c.headers["Authorization"] = f"Bearer {r.json()['token']}"
    # No separate initial-password change after enrolment.
    assert c.get("/v1/auth/me").json()["roles"] == ["underwriter"]
    [row] = table_rows(rt, "users")
    assert STRONG not in str(row) and secret not in str(row)
    assert str(row["password_hash"]).startswith("$argon2id$")
    assert table_rows(rt, "enrolments") == []


def test_enrolment_code_expires_and_is_reissued_by_the_operator(
    rt: Runtime, settings: Settings, clock: FixedClock
) -> None:
    made = rt.users.create("eve", ["underwriter"])
    clock.advance(hours=73)
    c = anon(rt)
    body = {"username": "eve", "enrolment_code": made.enrolment_code, "password": STRONG}
    assert c.post("/v1/auth/enrol", json=body).status_code == 401
    code, out, _ = cli(settings, "users", "enrolment-code", "eve", "--json")
    assert code == 0, out
    fresh = json.loads(out)["enrolment_code"]
    assert fresh != made.enrolment_code
    assert c.post("/v1/auth/enrol", json={**body, "enrolment_code": fresh}).status_code == 200
    # Enrolled: a new code only by re-enrolment, which withdraws the credentials.
    code, _, err = cli(settings, "users", "enrolment-code", "eve")
    assert code == 2 and "re-enrol" in err
    code, out, _ = cli(settings, "users", "enrolment-code", "eve", "--re-enrol", "--json")
    assert code == 0
    assert login(c, "eve", STRONG, "123456")["status"] == 401
    assert not rt.users.get("eve").enrolled


def test_reset_password_requires_a_change_before_anything_else(
    rt: Runtime, settings: Settings, clock: FixedClock
) -> None:
    staff = make_staff(rt, clock, "ann", ["underwriter"])
    code, out, _ = cli(settings, "users", "reset-password", "ann", "--json")
    assert code == 0
    one_time = json.loads(out)["password"]
    assert len(one_time) >= 16
    c = anon(rt)
    clock.advance(seconds=30)
    r = c.post("/v1/auth/login", json={"username": "ann", "password": one_time,
                                       "totp": pyotp.TOTP(staff.totp_secret).at(clock.now())})
    assert r.status_code == 200
    c.headers["Authorization"] = f"Bearer {r.json()['token']}"
    r = c.get("/v1/subjects/00000000-0000-4000-8000-000000000000/records?purpose=underwriting")
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "password_change_required"
    for weak, why in (("short", "at least 12"), ("Password123!", "too common"),
                      ("ann-is-the-best-2026", "username")):
        r = c.post("/v1/auth/password", json={"current": one_time, "new": weak})
        assert r.status_code == 422, weak
        assert why in r.text
        assert weak not in r.text
    r = c.post("/v1/auth/password", json={"current": "wrong", "new": STRONG})
    assert r.status_code == 422
    assert c.post("/v1/auth/password", json={"current": one_time, "new": STRONG}
                  ).status_code == 204
    assert c.get("/v1/auth/me").json()["roles"] == ["underwriter"]


def test_same_error_for_unknown_user_wrong_password_and_wrong_code(
    rt: Runtime, clock: FixedClock
) -> None:
    staff = make_staff(rt, clock, "bo", ["underwriter"])
    good = pyotp.TOTP(staff.totp_secret).at(clock.now())
    c = anon(rt)
    answers = [login(c, "nobody", STRONG, good), login(c, "bo", "wrong-password", good),
               login(c, "bo", STRONG, "000000")]
    assert {a["status"] for a in answers} == {401}
    assert len({json.dumps(a["error"]) for a in answers}) == 1
    r = c.post("/v1/auth/login", json={"username": "bo", "password": STRONG})
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "mfa_required"
    for odd in ("x" * 65, "", "bo; drop", "b\u043e"):  # the last: a Cyrillic look-alike
        r = c.post("/v1/auth/login", json={"username": odd, "password": STRONG,
                                           "totp": good})
        assert r.status_code == 401, odd
    # A control character is refused before the login (422), or like any unknown user.
    r = c.post("/v1/auth/login", json={"username": "bo\u0000", "password": STRONG,
                                       "totp": good})
    assert r.status_code in (401, 422)


def test_lockout_after_five_failures_for_known_and_unknown_users(
    rt: Runtime, clock: FixedClock
) -> None:
    staff = make_staff(rt, clock, "cy", ["underwriter"])
    c = anon(rt)
    for name in ("cy", "ghost"):
        for _ in range(5):
            assert login(c, name, "nope-nope-nope", "123456")["status"] == 401
        locked = login(c, name, STRONG, pyotp.TOTP(staff.totp_secret).at(clock.now()))
        assert locked["status"] == 403
        assert locked["error"]["reason"] == "account_locked"  # type: ignore[index]
    clock.advance(minutes=16)
    ok = login(c, "cy", STRONG, pyotp.TOTP(staff.totp_secret).at(clock.now()))
    assert ok["status"] == 200


def test_totp_code_cannot_be_replayed_and_recovery_codes_work_once(
    rt: Runtime, clock: FixedClock
) -> None:
    staff = make_staff(rt, clock, "di", ["underwriter"])
    c = anon(rt)
    clock.advance(seconds=60)
    code = pyotp.TOTP(staff.totp_secret).at(clock.now())
    assert login(c, "di", STRONG, code)["status"] == 200
    assert login(c, "di", STRONG, code)["status"] == 401  # replay
    rc = staff.recovery_codes[0]
    body = {"username": "di", "password": STRONG, "recovery_code": rc}
    assert c.post("/v1/auth/login", json=body).status_code == 200
    assert c.post("/v1/auth/login", json=body).status_code == 401


def test_idle_and_absolute_session_expiry_and_logout(rt: Runtime, clock: FixedClock) -> None:
    staff = make_staff(rt, clock, "ed", ["underwriter"])
    me = staff.client
    assert me.get("/v1/auth/me").status_code == 200
    clock.advance(minutes=14)
    assert me.get("/v1/auth/me").status_code == 200  # activity resets the idle clock
    clock.advance(minutes=14)
    assert me.get("/v1/auth/me").status_code == 200
    clock.advance(minutes=16)
    r = me.get("/v1/auth/me")
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "unauthenticated"
    # Absolute lifetime: active all along, still ends after 8 hours.
    c = anon(rt)
    clock.advance(seconds=30)
    token = c.post("/v1/auth/login", json={
        "username": "ed", "password": STRONG,
        "totp": pyotp.TOTP(staff.totp_secret).at(clock.now())}).json()["token"]
    c.headers["Authorization"] = f"Bearer {token}"
    started = clock.now()
    while c.get("/v1/auth/me").status_code == 200:
        clock.advance(minutes=10)
        assert clock.now() - started <= timedelta(hours=8, minutes=10)
    assert clock.now() - started >= timedelta(hours=8)
    # Logout ends a session at once.
    clock.advance(seconds=30)
    token = c.post("/v1/auth/login", json={
        "username": "ed", "password": STRONG,
        "totp": pyotp.TOTP(staff.totp_secret).at(clock.now())}).json()["token"]
    c.headers["Authorization"] = f"Bearer {token}"
    assert c.post("/v1/auth/logout").status_code == 204
    assert c.get("/v1/auth/me").status_code == 401


def test_disabled_user_loses_sessions_and_cannot_log_in(rt: Runtime, settings: Settings,
                                                        clock: FixedClock) -> None:
    staff = make_staff(rt, clock, "fi", ["underwriter"])
    code, _, _ = cli(settings, "users", "disable", "fi")
    assert code == 0
    assert staff.client.get("/v1/auth/me").status_code == 401
    clock.advance(seconds=30)
    assert login(anon(rt), "fi", STRONG, pyotp.TOTP(staff.totp_secret).at(clock.now())
                 )["status"] == 401


def test_no_credential_or_value_in_auth_logs(rt: Runtime, clock: FixedClock,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        staff = make_staff(rt, clock, "gi", ["underwriter"])
        login(anon(rt), "gi", "Secret-Wrong-Password-1", "123456")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert STRONG not in text and staff.totp_secret not in text
    assert "Secret-Wrong-Password-1" not in text


def test_users_cli_roles_and_reset(rt: Runtime, settings: Settings) -> None:
    runner_env = {"FIDUCIARY_DATA_DIR": str(settings.data_dir),
                  "FIDUCIARY_DATABASE_URL": settings.resolved_database_url()}
    r = CliRunner().invoke(app, ["users", "create", "hu", "--role", "pilot"], env=runner_env)
    assert r.exit_code == 2 and "unknown" in r.stderr
    assert cli(settings, "users", "create", "hu", "--role", "actuary")[0] == 0
    assert cli(settings, "users", "set-roles", "hu", "--role", "dpo", "--role", "actuary")[0] == 0
    code, out, _ = cli(settings, "users", "list", "--json")
    [u] = json.loads(out)["items"]
    assert u["roles"] == ["dpo", "actuary"] and u["mfa_enrolled"] is False
    # A password is reset only for a user who has enrolled; before, a new enrolment code.
    code, out, err = cli(settings, "users", "reset-password", "hu", "--json")
    assert code == 2 and "enrolment code" in err
