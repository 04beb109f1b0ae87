"""Issue 11: each detection fires on the insider's move and stays silent on the matching
legitimate work; the cursor never skips or repeats, across runs and restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa

from fiduciary.audit.events import RequestContext, request_context
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.datamap import load
from fiduciary.errors import DetectionsInvalid
from fiduciary.monitoring.pack import load_detections, parse_detections
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import alerts
from tests.conftest import Staff, log_in, make_staff
from tests.test_insider_attacks import customer

CH = "claims_handling"
CS = "customer_service"
FP = "fraud_prevention"


@pytest.fixture
def clock() -> FixedClock:
    # A Tuesday, 10:00 in New York (the default pack's time zone): working hours.
    return FixedClock(datetime(2026, 2, 3, 15, 0, tzinfo=UTC))


def _set(clock: FixedClock, at: datetime) -> None:
    clock.advance(seconds=(at - clock.now()).total_seconds())


def found(rt: Runtime, detection: str | None = None) -> list[dict[str, Any]]:
    rt.monitor.run_once()
    items = rt.alerts.list_alerts(SYSTEM, limit=500)
    return [a for a in items if detection is None or a["detection"] == detection]


def about(items: list[dict[str, Any]], username: str) -> list[dict[str, Any]]:
    return [a for a in items if a["principal"]["username"] == username]


def read(staff: Staff, record_id: str, purpose: str, collection: str = "persons") -> int:
    r = staff.client.get(f"/v1/collections/{collection}/records/{record_id}?purpose={purpose}")
    return r.status_code


def test_a_watched_customer_read_by_someone_other_than_a_handler(
        rt: Runtime, clock: FixedClock) -> None:
    vip = customer(rt, "west", adjuster="adj", claim="CLM-1", vip=True)
    litigant = customer(rt, "west", adjuster="adj2", claim="CLM-2")
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"])
    fi = make_staff(rt, clock, "fi", ["fraud_investigator"])
    handler = make_staff(rt, clock, "fi.handler", ["fraud_investigator"])
    rt.alerts.watch(SYSTEM, litigant["subject"], "suing the insurer", "litigant",
                    ["fi.handler"])
    assert read(adj, vip["person"], CH) == 200  # the assigned adjuster: their work
    assert read(handler, litigant["person"], FP) == 200  # a listed handler
    assert read(fi, vip["person"], FP) == 200
    assert read(fi, litigant["person"], FP) == 200
    hits = found(rt, "watchlist_subject")
    assert {(a["principal"]["username"], a["subject_ids"][0]) for a in hits} == {
        ("fi", vip["subject"]), ("fi", litigant["subject"])}
    assert {a["details"]["category"] for a in hits} == {"vip", "litigant"}
    for a in hits:
        assert a["severity"] == "high" and a["status"] == "open"
        assert "Ortiz" not in str(a) and "078-05" not in str(a)


def test_self_coworker_and_same_surname_lookups(rt: Runtime, clock: FixedClock) -> None:
    me = customer(rt, "west", adjuster="x", claim="CLM-1")
    colleague = customer(rt, "west", adjuster="x", claim="CLM-2")
    namesake = customer(rt, "west", adjuster="x", claim="CLM-3")
    stranger = customer(rt, "west", adjuster="x", claim="CLM-4")
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"])
    make_staff(rt, clock, "colleague", ["underwriter"])
    rt.profiles.link_subject(SYSTEM, "agent", me["subject"])
    rt.profiles.link_subject(SYSTEM, "colleague", colleague["subject"])
    rt.profiles.set_surname(SYSTEM, "agent", "Ortiz-CLM-3")
    for ids in (me, colleague, namesake, stranger):
        assert read(agent, ids["person"], CS) == 200
    hits = about(found(rt), "agent")
    by = {a["detection"]: a["subject_ids"] for a in hits}
    assert by == {"self_access": [me["subject"]], "coworker_access": [colleague["subject"]],
                  "same_surname": [namesake["subject"]]}
    # No plaintext surname was stored for the profile: only the blind-index digest.
    with rt.db.read() as conn:
        dumped = str(conn.execute(sa.text("SELECT * FROM users")).all())
    assert "Ortiz" not in dumped


def test_an_adjuster_sharing_a_surname_with_their_assigned_claimant_is_not_flagged(
        rt: Runtime, clock: FixedClock) -> None:
    mine = customer(rt, "west", adjuster="adj", claim="CLM-7")
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"])
    rt.profiles.set_surname(SYSTEM, "adj", "Ortiz-CLM-7")
    assert read(adj, mine["person"], CH) == 200
    assert found(rt, "same_surname") == []


def _namesakes(rt: Runtime, n: int, last_name: str) -> list[dict[str, str]]:
    """``n`` customers of the west region sharing a surname (more than the rare count)."""
    out = []
    for i in range(n):
        s = rt.vault.create_subject(SYSTEM).id
        rec = rt.vault.create_record(SYSTEM, "persons", s, {
            "first_name": f"Ann{i}", "last_name": last_name, "region": "west",
            "email": f"namesake{i}@example.org"}, "legal_obligation")
        out.append({"subject": s, "person": rec.id})
    return out


def test_a_relative_with_a_common_surname_is_found_when_checked_on_again(
        settings: Settings, clock: FixedClock) -> None:
    rt = open_runtime(settings, create=True, clock=clock)
    relative, *others = _namesakes(rt, 7, "Jensen")  # 7 of 7 customers: common by any rule
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"])
    rt.profiles.set_surname(SYSTEM, "agent", "Jensen")
    assert read(agent, relative["person"], CS) == 200
    assert read(agent, others[0]["person"], CS) == 200
    # One look at a customer with a common surname is a coincidence, not a finding.
    assert found(rt, "same_surname") == []
    token = agent.client.headers["Authorization"]
    rt.close()
    # Two days later, after a restart of the monitor: the relative's record again.
    _set(clock, clock.now() + timedelta(days=2))
    rt = open_runtime(settings, create=True, clock=clock)
    try:
        from fastapi.testclient import TestClient

        from fiduciary.api.app import create_app
        client = TestClient(create_app(rt), raise_server_exceptions=False)
        client.headers["Authorization"] = token
        log_in(Staff("agent", client, agent.totp_secret, agent.password,
                     agent.recovery_codes), clock)
        r = client.get(f"/v1/collections/persons/records/{relative['person']}?purpose={CS}")
        assert r.status_code == 200
        hits = found(rt, "same_surname")
        assert [(a["principal"]["username"], a["subject_ids"]) for a in hits] == [
            ("agent", [relative["subject"]])]
        assert hits[0]["details"]["common_surname"] is True and hits[0]["details"]["days"] == 2
        assert len(hits[0]["event_ids"]) == 2 and hits[0]["severity"] == "low"
        assert "Jensen" not in str(hits[0])
    finally:
        rt.close()


def test_serving_namesake_callers_and_searching_the_surname_raise_nothing(
        rt: Runtime, clock: FixedClock) -> None:
    callers = _namesakes(rt, 7, "Jensen")
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"])
    rt.profiles.set_surname(SYSTEM, "agent", "Jensen")
    search = f"/v1/collections/persons/search?purpose={CS}"
    for day, caller in enumerate(callers[:3]):
        # A different caller each day, found by the surname (the list shows every namesake).
        _set(clock, clock.now() + timedelta(days=1))
        log_in(agent, clock)
        r = agent.client.post(search, json={"where": {"last_name": "Jensen"}})
        assert r.status_code == 200 and len(r.json()["items"]) == 7, day
        assert read(agent, caller["person"], CS) == 200
    assert found(rt, "same_surname") == []
    # A second look on the same day is still one day.
    assert read(agent, callers[2]["person"], CS) == 200
    assert found(rt, "same_surname") == []


def test_off_hours_learned_per_user(rt: Runtime, clock: FixedClock) -> None:
    people = [customer(rt, "west", adjuster="x", claim=f"CLM-{i}") for i in range(3)]
    night = make_staff(rt, clock, "night", ["call_center_agent"], ["west"])
    day = make_staff(rt, clock, "day", ["call_center_agent"], ["west"])
    start = clock.now()
    # Ten nights of work (02:00 in New York), and the weekdays among them of day work.
    for d in range(10):
        _set(clock, start + timedelta(days=d, hours=16))  # 07:00 UTC = 02:00 New York
        _relogin(rt, clock, night)
        assert read(night, people[0]["person"], CS) == 200
        _set(clock, start + timedelta(days=d))
        if clock.now().weekday() < 5:
            _relogin(rt, clock, day)
            assert read(day, people[1]["person"], CS) == 200
    first = found(rt, "off_hours")
    # Before a week of history the fallback working hours apply: the first nights alert.
    assert about(first, "night") and not about(first, "day")
    seen = len(first)
    _set(clock, start + timedelta(days=12, hours=16))
    _relogin(rt, clock, night)
    _relogin(rt, clock, day)
    assert read(night, people[2]["person"], CS) == 200  # at night, as always: silent
    assert read(day, people[2]["person"], CS) == 200  # the day worker at 02:00: not usual
    later = found(rt, "off_hours")
    new = later[:len(later) - seen]
    assert [a["principal"]["username"] for a in new] == ["day"]
    assert "usual hours" in new[0]["reason"]


def _relogin(rt: Runtime, clock: FixedClock, staff: Staff) -> None:
    clock.advance(seconds=31)  # a fresh TOTP step: a code is never accepted twice
    r = staff.client.post("/v1/auth/login", json={
        "username": staff.username, "password": staff.password,
        "totp": pyotp.TOTP(staff.totp_secret).at(clock.now())})
    assert r.status_code == 200, r.text
    staff.client.headers["Authorization"] = f"Bearer {r.json()['token']}"


def test_volume_spike_against_own_and_peer_baselines(rt: Runtime, clock: FixedClock) -> None:
    people = [customer(rt, "west", adjuster="x", claim=f"CLM-{i}") for i in range(24)]
    spiker = make_staff(rt, clock, "spiker", ["call_center_agent"], ["west"])
    peer = make_staff(rt, clock, "peer", ["call_center_agent"], ["west"])
    start = clock.now()
    for d in range(8):  # a week of ordinary days: three customers each
        _set(clock, start + timedelta(days=d))
        for staff in (spiker, peer):
            _relogin(rt, clock, staff)
            for p in people[d % 3 * 3:d % 3 * 3 + 3]:
                assert read(staff, p["person"], CS) == 200
    assert found(rt, "volume_spike") == []
    _set(clock, start + timedelta(days=9))
    _relogin(rt, clock, spiker)
    for p in people[:20]:  # the day before resigning
        assert read(spiker, p["person"], CS) == 200
    hits = found(rt, "volume_spike")
    assert [a["principal"]["username"] for a in hits] == ["spiker"]
    assert hits[0]["details"]["subjects"] >= 15


def test_search_sweep_and_denied_burst(rt: Runtime, clock: FixedClock) -> None:
    customer(rt, "west", adjuster="x", claim="CLM-1")
    theirs = customer(rt, "west", adjuster="someone.else", claim="CLM-2")
    agent = make_staff(rt, clock, "guesser", ["call_center_agent"], ["west"])
    honest = make_staff(rt, clock, "honest", ["call_center_agent"], ["west"])
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"])
    search = f"/v1/collections/persons/search?purpose={CS}"
    r = honest.client.post(search, json={"where": {"email": "clm-1@example.org"}})
    assert r.status_code == 200, r.text
    for i in range(12):  # guessing e-mail addresses one after another
        r = agent.client.post(search, json={"where": {"email": f"guess{i}@example.org"}})
        assert r.status_code == 200, r.text
    for _ in range(10):  # an adjuster trying a claim that is not theirs
        assert read(adj, theirs["claim"], CH, "claims") == 404
    rt.monitor.run_once()
    sweep = found(rt, "search_sweep")
    assert [a["principal"]["username"] for a in sweep] == ["guesser"]
    assert len(sweep[0]["event_ids"]) >= 12
    denied = found(rt, "denied_burst")
    assert [a["principal"]["username"] for a in denied] == ["adj"]


def test_password_spraying_and_dormant_accounts(rt: Runtime, clock: FixedClock) -> None:
    sleeper = make_staff(rt, clock, "sleeper", ["call_center_agent"], ["west"])
    regular = make_staff(rt, clock, "regular", ["call_center_agent"], ["west"])
    from fastapi.testclient import TestClient

    from fiduciary.api.app import create_app
    attacker = TestClient(create_app(rt), raise_server_exceptions=False)
    for name in ("alice", "bob", "carol", "dave", "erin", "regular"):
        r = attacker.post("/v1/auth/login", json={"username": name, "password": "Winter2026!",
                                                  "totp": "123456"})
        assert r.status_code == 401
    clock.advance(days=1)
    _relogin(rt, clock, regular)
    clock.advance(days=95)
    _relogin(rt, clock, sleeper)
    spray = found(rt, "failed_login_burst")
    assert len(spray) == 1 and spray[0]["principal"]["kind"] == "anonymous"
    assert spray[0]["details"]["usernames"] >= 5
    assert "Winter" not in str(spray)
    dormant = found(rt, "dormant_account")
    assert [a["principal"]["username"] for a in dormant] == ["sleeper"]
    assert dormant[0]["details"]["idle_days"] >= 90


def test_break_glass_and_bulk_reads(tmp_path: Path, settings: Settings,
                                    clock: FixedClock) -> None:
    pack = tmp_path / "detections.yaml"
    text = (Path(__file__).parents[1] / "src/fiduciary/monitoring/default_detections.yaml"
            ).read_text()
    pack.write_text(text.replace("read_records: 150", "read_records: 4"))
    rt = open_runtime(settings.model_copy(update={"detections": pack}), create=True,
                      clock=clock)
    try:
        people = [customer(rt, "west", adjuster="x", claim=f"CLM-{i}") for i in range(5)]
        agent = make_staff(rt, clock, "reader", ["call_center_agent"], ["west"])
        adj = make_staff(rt, clock, "adj", ["claims_adjuster"])
        for p in people:
            assert read(agent, p["person"], CS) == 200
        r = adj.client.post("/v1/auth/break-glass", json={
            "subject_ids": [people[0]["subject"]],
            "justification": "Claimant in hospital, emergency payment needed today"})
        assert r.status_code in (200, 201), r.text
        bulk = found(rt, "bulk_export")
        assert [a["principal"]["username"] for a in bulk] == ["reader"]
        assert bulk[0]["details"]["records"] >= 4
        glass = found(rt, "break_glass")
        assert [a["principal"]["username"] for a in glass] == ["adj"]
    finally:
        rt.close()


def test_a_new_origin_for_an_api_key(tmp_path: Path, settings: Settings,
                                     clock: FixedClock) -> None:
    pack = tmp_path / "detections.yaml"
    text = (Path(__file__).parents[1] / "src/fiduciary/monitoring/default_detections.yaml"
            ).read_text()
    pack.write_text(text.replace("min_history_events: 50", "min_history_events: 3"))
    rt = open_runtime(settings.model_copy(update={"detections": pack}), create=True,
                      clock=clock)
    try:
        person = customer(rt, "west", adjuster="x", claim="CLM-1")
        key = rt.api_keys.create("integration", "service")[1]
        principal = rt.api_keys.authenticate(key)
        for client in ("10.0.0.5", "10.0.0.5", "10.0.0.5", "10.0.0.5", "203.0.113.9"):
            token = request_context.set(RequestContext(client=client))
            try:
                rt.vault.get_record(principal, "persons", person["person"], CS)
            finally:
                request_context.reset(token)
        hits = found(rt, "new_api_key_origin")
        assert len(hits) == 1 and hits[0]["details"]["client"] == "203.0.113.9"
        assert hits[0]["principal"]["kind"] == "api_key"
    finally:
        rt.close()


def test_the_cursor_never_skips_or_repeats(settings: Settings, clock: FixedClock) -> None:
    rt = open_runtime(settings, create=True, clock=clock)
    me = customer(rt, "west", adjuster="x", claim="CLM-1")
    other = customer(rt, "west", adjuster="x", claim="CLM-2")
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"])
    rt.profiles.link_subject(SYSTEM, "agent", me["subject"])
    assert read(agent, me["person"], CS) == 200
    first = rt.monitor.run_once()
    assert first.alerts == 1 and first.events > 0
    again = rt.monitor.run_once()
    assert again.alerts == 0
    token = agent.client.headers["Authorization"]
    rt.close()
    # A restart resumes from the stored cursor: what was raised stays, nothing repeats,
    # and what happens after the restart is found.
    rt = open_runtime(settings, create=True, clock=clock)
    try:
        assert rt.monitor.run_once().alerts == 0
        rt.profiles.link_subject(SYSTEM, "agent", other["subject"])
        from fastapi.testclient import TestClient

        from fiduciary.api.app import create_app
        client = TestClient(create_app(rt), raise_server_exceptions=False)
        client.headers["Authorization"] = token
        r = client.get(f"/v1/collections/persons/records/{other['person']}?purpose={CS}")
        assert r.status_code == 200
        assert rt.monitor.run_once().alerts == 1
        with rt.db.read() as conn:
            keys = conn.execute(sa.select(alerts.c.dedup_key)).scalars().all()
        assert len(keys) == len(set(keys)) == 2
        events = rt.audit.count()
        assert rt.monitor.run_once().events <= events
    finally:
        rt.close()


def test_suppression_holds_a_finding_until_it_expires(rt: Runtime, clock: FixedClock) -> None:
    me = customer(rt, "west", adjuster="x", claim="CLM-1")
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"])
    rt.profiles.link_subject(SYSTEM, "agent", me["subject"])
    rt.alerts.suppress(SYSTEM, "self_access", "agent updates own address via HR process",
                       clock.now() + timedelta(days=1), username="agent")
    assert read(agent, me["person"], CS) == 200
    run = rt.monitor.run_once()
    assert run.suppressed == 1 and run.alerts == 0
    clock.advance(days=2)
    _relogin(rt, clock, agent)
    assert read(agent, me["person"], CS) == 200
    assert [a["detection"] for a in found(rt, "self_access")] == ["self_access"]


def test_the_detection_pack_is_validated_on_load(tmp_path: Path) -> None:
    datamap = load(None)
    assert "watchlist_subject" in load_detections(None, datamap).enabled()
    bad = """
version: 1
settings: {timezone: Mars/Olympus, handler_fields: {claims: [description]}}
detections:
  watchlist_subject: {severity: urgent, score: 80}
"""
    with pytest.raises(DetectionsInvalid) as err:
        parse_detections(bad, "pack.yaml", datamap)
    where = " ".join(p.field for p in err.value.fields)
    assert "settings.timezone" in where
    assert "detections.watchlist_subject.severity" in where
    assert "detections.self_access" in where  # missing
    # One look at a namesake is not a repeat: the pack cannot make every common surname alert.
    shipped = resources.files("fiduciary.monitoring").joinpath("default_detections.yaml")
    text = shipped.read_text("utf-8").replace("common_repeat_days: 2", "common_repeat_days: 1")
    with pytest.raises(DetectionsInvalid) as err:
        parse_detections(text, "pack.yaml", datamap)
    assert [p.field for p in err.value.fields] == [
        "pack.yaml: detections.same_surname.common_repeat_days"]


def test_an_analyst_cannot_suppress_findings_about_themselves(
        rt: Runtime, clock: FixedClock) -> None:
    """A detection-wide suppression made by an analyst still lets their own snooping
    through; and nobody relinks their own profile to escape self-access."""
    me = customer(rt, "west", adjuster="x", claim="CLM-1")
    analyst = make_staff(rt, clock, "analyst", ["security_analyst", "call_center_agent"],
                         ["west"])
    admin = make_staff(rt, clock, "admin", ["admin"])
    rt.profiles.link_subject(SYSTEM, "analyst", me["subject"])
    r = analyst.client.post("/v1/monitoring/suppressions", json={
        "detection": "self_access", "reason": "noisy during the HR migration",
        "expires_at": (clock.now() + timedelta(days=7)).isoformat()})
    assert r.status_code == 201, r.text
    r = admin.client.get("/v1/auth/me")
    admin_principal = rt.users.authenticate(
        admin.client.headers["Authorization"].removeprefix("Bearer "))
    with pytest.raises(Exception, match="own monitoring profile"):
        rt.profiles.link_subject(admin_principal, "admin", None)
    assert read(analyst, me["person"], CS) == 200
    hits = found(rt, "self_access")
    assert [a["principal"]["username"] for a in hits] == ["analyst"]
    # And the analyst is not tipped off: an alert about them is not theirs to read.
    assert analyst.client.get("/v1/alerts").json()["items"] == []
    assert analyst.client.get(f"/v1/alerts/{hits[0]['id']}").status_code == 404


def test_a_password_typed_as_a_username_is_not_kept(rt: Runtime, clock: FixedClock) -> None:
    from fastapi.testclient import TestClient

    from fiduciary.api.app import create_app
    attacker = TestClient(create_app(rt), raise_server_exceptions=False)
    for _ in range(10):
        attacker.post("/v1/auth/login", json={"username": "Tr0ub4dor-3", "password": "x" * 12,
                                              "totp": "123456"})
    hits = found(rt, "failed_login_burst")
    assert len(hits) == 1 and hits[0]["principal"]["username"] is None
    with rt.db.read() as conn:
        assert "Tr0ub4dor" not in str(conn.execute(sa.select(alerts)).all())


def test_pseudonymised_analytics_and_a_colleagues_handler_are_not_flagged(
        rt: Runtime, clock: FixedClock) -> None:
    """The legitimate counterparts: an actuary's pseudonymised export names nobody, so a VIP
    or a colleague in it is no lookup; the adjuster handling a colleague's claim is doing
    their job. A stranger reaching the same colleague is flagged."""
    vip = customer(rt, "west", adjuster="x", claim="CLM-1", vip=True)
    colleague = customer(rt, "west", adjuster="adj", claim="CLM-2")
    actuary = make_staff(rt, clock, "actuary", ["actuary"])
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"])
    agent = make_staff(rt, clock, "agent", ["call_center_agent"], ["west"])
    make_staff(rt, clock, "colleague", ["underwriter"])
    rt.profiles.link_subject(SYSTEM, "colleague", colleague["subject"])
    who = rt.users.authenticate(actuary.client.headers["Authorization"].removeprefix("Bearer "))
    assert len(list(rt.vault.export(who, "persons", "analytics"))) == 2
    assert read(adj, colleague["person"], CH) == 200
    assert read(agent, colleague["person"], CS) == 200
    hits = found(rt)
    assert not about(hits, "actuary") and not about(hits, "adj")
    assert [a["detection"] for a in about(hits, "agent")] == ["coworker_access"]
    assert vip["subject"] not in {s for a in hits for s in a["subject_ids"]}
