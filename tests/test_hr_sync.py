"""Joiners, movers and leavers from the HR feed, and dormant accounts (issue 13, item 6):
leavers lose their sessions and keys at once, movers are flagged and left alone, every bad
row is reported while the good ones apply, and unused accounts are disabled by the
scheduler."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fiduciary.cli.main import app as cli_app
from fiduciary.clock import FixedClock
from fiduciary.errors import InvalidInput
from fiduciary.runtime import Runtime
from tests.conftest import make_staff, table_rows

HEADER = "employee_id,username,status,role,manager,leave_date\n"


def events(rt: Runtime, action: str) -> list[dict[str, Any]]:
    found = [json.loads(str(r["event"])) for r in table_rows(rt, "audit_events")
             if r["event"] is not None]
    return [e for e in found if e["action"] == action]


def feed(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "hr.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def test_a_leaver_is_disabled_at_once_sessions_and_keys_included(
        rt: Runtime, clock: FixedClock, client: TestClient, tmp_path: Path) -> None:
    leo = make_staff(rt, clock, "leo", ["claims_adjuster"])
    lea = make_staff(rt, clock, "lea", ["claims_adjuster"])
    make_staff(rt, clock, "boss", ["underwriter"])
    _, token = rt.api_keys.create("leo-script", "service", owner_id=rt.users.get("leo").id)
    as_key = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/datamap", headers=as_key).status_code == 200
    assert leo.client.get("/v1/auth/me").status_code == 200
    report = rt.hr.sync_file(feed(
        tmp_path,
        "E-1,leo,leaver,claims_adjuster,boss,",
        "E-2,lea,active,claims_adjuster,boss,2026-01-31",  # leaves today
        "E-3,boss,active,underwriter,,2026-03-01"))        # leaves later
    assert sorted(report.disabled) == ["lea", "leo"]
    assert len(report.keys_revoked) == 1
    assert report.leaving == [{"username": "boss", "leave_date": "2026-03-01"}]
    assert leo.client.get("/v1/auth/me").status_code == 401
    assert lea.client.get("/v1/auth/me").status_code == 401
    assert client.get("/v1/datamap", headers=as_key).status_code == 401
    assert rt.users.get("boss").disabled_at is None
    disabled = events(rt, "user.disable")
    assert {e["details"]["username"]: e["details"]["reason"] for e in disabled} == {
        "leo": "leaver", "lea": "leaver"}
    assert all(e["details"]["authority"] == "hr_sync" for e in disabled)
    assert [e["details"]["reason"] for e in events(rt, "apikey.revoke")] == ["leaver"]
    # The run is kept: when, and what it did (the compliance posture reads it).
    last = rt.hr.last_sync()
    assert last is not None and last["at"] == "2026-01-31T12:00:00Z" and last["disabled"] == 2
    assert events(rt, "hr.sync")[0]["details"]["rows"] == 3


def test_movers_are_flagged_not_changed_and_good_rows_record_ids_and_managers(
        rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    rt.users.create("adam", ["claims_adjuster"])
    rt.users.create("mia", ["underwriter"])
    report = rt.hr.sync_file(feed(tmp_path, "E-10,adam,active,underwriter,mia,",
                                  "E-11,mia,active,underwriter,,"))
    assert report.movers == [{"line": 2, "username": "adam", "hr_role": "underwriter",
                              "roles": ["claims_adjuster"]}]
    assert rt.users.get("adam").roles == ("claims_adjuster",)
    adam = rt.users.get("adam")
    assert adam.employee_id == "E-10" and adam.manager_id == rt.users.get("mia").id
    assert report.managers_set == [{"username": "adam", "manager": "mia"}]
    assert sorted(report.employee_ids_set) == ["adam", "mia"]
    assert (report.rows, report.applied, report.rejected) == (2, 2, 0)
    # The same feed again changes nothing.
    again = rt.hr.sync_file(feed(tmp_path, "E-10,adam,active,underwriter,mia,",
                                 "E-11,mia,active,underwriter,,"))
    assert again.managers_set == [] and again.employee_ids_set == []


def test_bad_rows_are_reported_one_by_one_while_good_rows_apply(
        rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    rt.users.create("adam", ["claims_adjuster"], employee_id="E-10")
    rt.users.create("mia", ["underwriter"])
    rt.users.create("olga", ["underwriter"])
    rt.users.create("lou", ["underwriter"])
    rt.users.create("max", ["underwriter"])
    report = rt.hr.sync_file(feed(
        tmp_path,
        "E-99,ghost.user,leaver,,,",                  # 2: unknown username
        "E-11,mia,retired,underwriter,,",             # 3: unknown status
        "E-12,olga,active,underwriter,nobody,31/12",  # 4: unknown manager, bad date
        "E-10,max,active,underwriter,,",              # 5: adam's employee id
        "E-13,olga,active,underwriter,mia,",          # 6: olga again
        "E-14,lou,leaver,underwriter,olga,",          # 7: good: lou leaves
        "E-15,mia,active,underwriter,,",              # 8: mia again (3 was bad)
    ))
    errors = {e["line"]: {p["field"]: p["reason"] for p in e["errors"]} for e in report.errors}
    assert errors == {
        2: {"username": "no such user"},
        3: {"status": "active or leave or leaver or terminated"},
        4: {"manager": "no such user", "leave_date": "a date YYYY-MM-DD"},
        5: {"employee_id": "belongs to another user"},
        6: {"username": "named on an earlier line"},
        8: {"username": "named on an earlier line"},
    }
    assert (report.rows, report.applied, report.rejected) == (7, 1, 6)
    assert report.disabled == ["lou"]
    assert rt.users.get("lou").disabled_at is not None
    assert rt.users.get("olga").manager_id is None  # nothing of a bad row is applied
    assert rt.users.get("max").employee_id is None
    assert rt.users.get("lou").employee_id == "E-14"
    # No value from the file is repeated in the errors.
    text = json.dumps(report.errors)
    for value in ("ghost.user", "retired", "nobody", "31/12", "E-10"):
        assert value not in text


def test_a_leaver_row_with_another_bad_column_still_disables(
        rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    rt.users.create("leo", ["claims_adjuster"])
    rt.users.create("lea", ["claims_adjuster"])
    report = rt.hr.sync_file(feed(tmp_path, "E-1,leo,leaver,claims_adjuster,nobody,",
                                  "E-2,lea,active,claims_adjuster,,",
                                  "E-2,lea,leaver,claims_adjuster,,"))  # named twice
    assert report.disabled == ["leo", "lea"] and report.rejected == 2
    assert rt.users.get("leo").disabled_at is not None
    assert rt.users.get("lea").disabled_at is not None


def test_a_dry_run_changes_nothing(rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    rt.users.create("leo", ["claims_adjuster"])
    rt.users.create("mia", ["underwriter"])
    report = rt.hr.sync_file(feed(tmp_path, "E-1,leo,leaver,claims_adjuster,mia,"),
                             dry_run=True)
    assert report.dry_run and report.disabled == ["leo"]
    assert rt.users.get("leo").disabled_at is None and rt.users.get("leo").employee_id is None
    assert rt.hr.last_sync() is None and events(rt, "hr.sync") == []


def test_a_file_without_the_required_columns_is_refused(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text("employee_id,name\nE-1,leo\n")
    with pytest.raises(InvalidInput) as caught:
        rt.hr.sync_file(path)
    assert {f.field for f in caught.value.fields} == {"username", "status"}


def test_the_cli_reports_and_exits_1_on_rejected_rows(rt: Runtime, tmp_path: Path) -> None:
    rt.users.create("leo", ["claims_adjuster"])
    s = rt.settings
    env = {"FIDUCIARY_DATA_DIR": str(s.data_dir),
           "FIDUCIARY_DATABASE_URL": s.resolved_database_url(),
           "FIDUCIARY_ARGON2_TIME_COST": "1", "FIDUCIARY_ARGON2_MEMORY_KIB": "8192"}
    r = CliRunner().invoke(cli_app, ["apikeys", "create", "--name", "leo-script", "--owner",
                                     "leo", "--json"], env=env)
    assert r.exit_code == 0, r.stdout + r.stderr
    key_id = json.loads(r.stdout)["id"]
    path = feed(tmp_path, "E-1,leo,leaver,,,", "E-2,nobody,active,,,")
    r = CliRunner().invoke(cli_app, ["users", "sync-hr", str(path), "--json"], env=env)
    assert r.exit_code == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["keys_revoked"] == [key_id]
    assert doc["disabled"] == ["leo"] and doc["errors"] == [
        {"line": 3, "errors": [{"field": "username", "reason": "no such user"}]}]
    assert rt.users.get("leo").disabled_at is not None


def test_dormant_accounts_are_disabled(rt: Runtime, clock: FixedClock) -> None:
    busy = make_staff(rt, clock, "busy", ["claims_adjuster"])
    make_staff(rt, clock, "idle", ["claims_adjuster"])
    rt.users.create("never", ["underwriter"])  # never logged in: counted from creation
    clock.advance(days=60)
    busy.client.post("/v1/auth/logout")
    import pyotp

    r = busy.client.post("/v1/auth/login", json={
        "username": "busy", "password": busy.password,
        "totp": pyotp.TOTP(busy.totp_secret).at(clock.now())})
    assert r.status_code == 200, r.text
    clock.advance(days=31)
    assert {d.username for d in rt.hr.disable_dormant(dry_run=True)} == {"idle", "never"}
    assert rt.users.get("idle").disabled_at is None
    done = rt.hr.disable_dormant()
    assert {d.username: d.idle_days for d in done} == {"idle": 91, "never": 91}
    assert rt.users.get("idle").disabled_at is not None
    assert rt.users.get("busy").disabled_at is None
    reasons = {e["details"]["username"]: e["details"]["reason"]
               for e in events(rt, "user.disable")}
    assert reasons == {"idle": "dormant", "never": "dormant"}


def test_the_scheduler_disables_dormant_accounts(rt: Runtime, clock: FixedClock) -> None:
    rt.users.create("idle", ["underwriter"])
    clock.advance(days=91)
    rt.settings.dormant_check_interval_hours = 0.2 / 3600  # every 0.2 s
    rt.start()
    try:
        deadline = time.monotonic() + 20
        while rt.users.get("idle").disabled_at is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        rt.stop()
    assert rt.users.get("idle").disabled_at is not None
    [event] = events(rt, "user.disable")
    assert event["actor"]["kind"] == "system" and event["details"]["reason"] == "dormant"
