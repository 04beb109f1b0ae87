"""The speak-up channel (issue 13, items 3, 4 and 7): anonymous intake with a receipt, the
reporter's thread, sealed content, the 7-day and 3-month clocks, the ethics officer's case
handling, separation of duties, the rate limits and the KDF cost of a guess, the retaliation
watch, and a real ``fiduciary serve`` that keeps no trace of who reported."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary.api.app import create_app
from fiduciary.audit.events import RequestContext, request_context
from fiduciary.clock import FixedClock
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import metadata
from fiduciary.workforce.speakup import Receipts
from tests.conftest import Staff, make_staff, table_rows
from tests.pgserver import PostgresServer
from tests.realserver import RealServer, cli

PA = "policy_administration"
RECEIPT = "X-Speakup-Receipt"
REPORT = "Claims manager Quentin-Zebedee backdates loss reports (canary Xylograph-81723)"
CATEGORY = "fraud-canary-5521"
MESSAGE = "More detail: ledger pages 44-46 (canary Wolframite-99017)"
FEEDBACK = "We opened an investigation (canary Quixotry-31337)"
OUTCOME = "Substantiated; controls changed (canary Zymurgy-27182)"


@pytest.fixture
def anon(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def officer(rt: Runtime, clock: FixedClock) -> Staff:
    return make_staff(rt, clock, "eve.ethics", ["ethics_officer"])


def report(anon: TestClient, **body: Any) -> dict[str, Any]:
    r = anon.post("/v1/speakup/reports", json={"text": REPORT, **body})
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


def only_case(officer: Staff) -> dict[str, Any]:
    [case] = officer.client.get("/v1/speakup/reports").json()["items"]
    return case


# -- the reporter and the ethics officer ------------------------------------------------------
def test_report_thread_and_case_handling(rt: Runtime, anon: TestClient, officer: Staff,
                                         clock: FixedClock) -> None:
    made = report(anon, category=CATEGORY)
    assert re.fullmatch(r"\d{4}(-\d{4}){4}", made["receipt"])  # 20 digits
    # Counted from the UTC day of receipt (2026-01-31), not from the moment.
    assert made["acknowledge_by"] == "2026-02-07T00:00:00Z"
    assert made["feedback_by"] == "2026-04-30T00:00:00Z"  # 3 calendar months (31 → 30)

    receipt = {RECEIPT: made["receipt"]}
    thread = anon.get("/v1/speakup/thread", headers=receipt).json()
    assert thread["status"] == "received" and not thread["acknowledged"]
    assert thread["report"] == REPORT and thread["category"] == CATEGORY
    assert thread["received_on"] == "2026-01-31" and thread["messages"] == []
    # Spaces instead of dashes are the same receipt.
    spaced = made["receipt"].replace("-", " ")
    assert anon.get("/v1/speakup/thread", headers={RECEIPT: spaced}).status_code == 200
    r = anon.post("/v1/speakup/thread/messages", headers=receipt, json={"text": MESSAGE})
    assert r.status_code == 201, r.text

    case = only_case(officer)
    assert case["status"] == "received" and case["category"] == CATEGORY
    assert not case["identified"] and case["messages"] == 1
    full = officer.client.get(f"/v1/speakup/reports/{case['id']}").json()
    assert full["report"] == REPORT and full["identify_as"] is None
    assert [m["text"] for m in full["thread"]] == [MESSAGE]

    r = officer.client.post(f"/v1/speakup/reports/{case['id']}/acknowledge")
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    r = officer.client.post(f"/v1/speakup/reports/{case['id']}/acknowledge")
    assert r.status_code == 409 and r.json()["error"]["reason"] == "already_acknowledged"
    r = officer.client.post(f"/v1/speakup/reports/{case['id']}/feedback",
                            json={"text": FEEDBACK})
    assert r.status_code == 200 and r.json()["feedback_at"] is not None
    thread = anon.get("/v1/speakup/thread", headers=receipt).json()
    assert thread["acknowledged"]
    assert [(m["from"], m["text"]) for m in thread["messages"]] == [
        ("reporter", MESSAGE), ("handler", FEEDBACK)]

    r = officer.client.post(f"/v1/speakup/reports/{case['id']}/close",
                            json={"outcome": OUTCOME})
    assert r.status_code == 200 and r.json()["outcome"] == OUTCOME
    assert anon.get("/v1/speakup/thread", headers=receipt).json()["status"] == "closed"
    r = anon.post("/v1/speakup/thread/messages", headers=receipt, json={"text": "more"})
    assert r.status_code == 409 and r.json()["error"]["reason"] == "request_closed"

    # Case handling is audited by case id and handler; never its content.
    handled = [json.loads(str(e["event"])) for e in table_rows(rt, "audit_events")
               if str(e["action"]).startswith("speakup.")]
    assert {e["action"] for e in handled} >= {"speakup.list", "speakup.read",
                                              "speakup.acknowledge", "speakup.feedback",
                                              "speakup.close"}
    assert all(e["actor"]["name"] == "eve.ethics" for e in handled)


def test_bad_input_names_the_field_and_stores_nothing(rt: Runtime, anon: TestClient) -> None:
    for body, field in (({"text": "  "}, "text"), ({"text": "x" * 20_001}, "text"),
                        ({"text": "ok", "category": "c" * 65}, "category"),
                        ({"text": "ok", "identify_as": ""}, "identify_as"),
                        ({"text": "ok", "extra": 1}, "extra")):
        r = anon.post("/v1/speakup/reports", json=body)
        assert r.status_code == 422, r.text
        assert field in {f["field"] for f in r.json()["error"]["fields"]}, r.text
    assert table_rows(rt, "speakup_cases") == []


def test_acknowledge_and_feedback_clocks_and_overdue_lists(
        rt: Runtime, anon: TestClient, clock: FixedClock) -> None:
    report(anon)
    clock.advance(hours=11, minutes=59)  # 23:59 on the day of receipt
    late = report(anon)
    assert late["acknowledge_by"] == "2026-02-07T00:00:00Z"  # the same day's deadline
    # Months pass: the handler's credential is a key (a staff session would have expired).
    c = TestClient(create_app(rt), raise_server_exceptions=False)
    c.headers["Authorization"] = f"Bearer {rt.api_keys.create('ethics', 'ethics_officer')[1]}"

    def overdue(which: str) -> int:
        r = c.get(f"/v1/speakup/reports?overdue={which}")
        assert r.status_code == 200, r.text
        return len(r.json()["items"])

    clock.advance(days=6)  # 2026-02-06 23:59: not yet
    assert overdue("acknowledge") == 0
    clock.advance(minutes=2)  # 2026-02-07 00:01
    assert overdue("acknowledge") == 2 and overdue("feedback") == 0
    first, second = c.get("/v1/speakup/reports").json()["items"]
    assert first["overdue_acknowledge"] and second["overdue_acknowledge"]
    c.post(f"/v1/speakup/reports/{first['id']}/acknowledge")
    assert overdue("acknowledge") == 1

    clock._at = datetime(2026, 4, 30, 0, 1, tzinfo=UTC)
    assert overdue("feedback") == 2
    c.post(f"/v1/speakup/reports/{second['id']}/feedback", json={"text": "looking into it"})
    # Feedback also acknowledges (late, and the audit trail says so).
    assert overdue("feedback") == 1 and overdue("acknowledge") == 0
    c.post(f"/v1/speakup/reports/{first['id']}/close", json={"outcome": "unfounded"})
    assert overdue("feedback") == 0  # a closed case is no longer overdue
    [ack] = [json.loads(str(e["event"])) for e in table_rows(rt, "audit_events")
             if e["action"] == "speakup.feedback"]
    assert ack["details"]["late"] is True
    assert c.get("/v1/speakup/reports?overdue=never").status_code == 422


# -- confidentiality --------------------------------------------------------------------------
def _every_value(rt: Runtime) -> bytes:
    """Every column of every row of every table, as bytes."""
    out = []
    with rt.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for v in row:
                    out.append(v if isinstance(v, bytes) else str(v).encode())
    return b"\n".join(out)


def test_sealed_content_is_not_readable_from_the_database(
        rt: Runtime, anon: TestClient, officer: Staff, clock: FixedClock, backend: str) -> None:
    made = report(anon, category=CATEGORY, identify_as="quill.canary")
    anon.post("/v1/speakup/thread/messages", headers={RECEIPT: made["receipt"]},
              json={"text": MESSAGE})
    case = only_case(officer)
    officer.client.post(f"/v1/speakup/reports/{case['id']}/feedback", json={"text": FEEDBACK})
    officer.client.post(f"/v1/speakup/reports/{case['id']}/close", json={"outcome": OUTCOME})
    clock.advance(days=1)
    assert rt.speakup_watch.run_once().events > 0  # audits the intake, sequences the trail
    rt.trail.sequence(force_checkpoint=True)
    digits = made["receipt"].replace("-", "")
    canaries = [b"Quentin-Zebedee", b"Xylograph-81723", CATEGORY.encode(), b"quill.canary",
                b"Wolframite-99017", b"Quixotry-31337", b"Zymurgy-27182", digits.encode(),
                made["receipt"].encode()]
    everything = _every_value(rt)
    assert b"speakup" in everything  # the rows are there …
    for canary in canaries:  # … their content is not (nor in the audit trail)
        assert canary not in everything, canary
    if backend == "sqlite":  # and not in the file's free pages or write-ahead log either
        rt.db.dispose()
        for f in (rt.settings.data_dir).iterdir():
            if f.is_file():
                blob = f.read_bytes()
                for canary in canaries:
                    assert canary not in blob, (f.name, canary)
    # The receipt is stored only as its Argon2id index.
    [row] = table_rows(rt, "speakup_cases")
    assert row["kdf"] == "argon2id$t=3$m=65536$p=1" and len(str(row["receipt_index"])) == 64


def test_no_audit_event_dates_an_intake_or_names_an_address(
        rt: Runtime, anon: TestClient, clock: FixedClock) -> None:
    def events() -> list[object]:  # but the trail's own checkpoints
        return [e["event_id"] for e in table_rows(rt, "audit_events")
                if not str(e["action"]).startswith("audit.")]

    before = events()
    made = report(anon, identify_as="someone")
    anon.post("/v1/speakup/thread/messages", headers={RECEIPT: made["receipt"]},
              json={"text": MESSAGE})
    anon.get("/v1/speakup/thread", headers={RECEIPT: made["receipt"]})
    rt.speakup_watch.run_once()
    assert events() == before  # nothing on the day itself
    clock.advance(days=1)
    # Flushed by whatever runs next — here a CLI run from a handler's address: the event
    # still names neither.
    token = request_context.set(RequestContext(request_id="req-7", client="198.51.100.9",
                                               operator="ethics.desk"))
    try:
        rt.speakup_watch.run_once()
    finally:
        request_context.reset(token)
    [event] = [json.loads(str(e["event"])) for e in table_rows(rt, "audit_events")
               if e["action"] == "speakup.received"]
    assert event["client"] is None and event["actor"]["kind"] == "system"
    [case] = event["details"]["cases"]
    assert case["received_on"] == "2026-01-31"
    assert event["details"]["reporter_messages"] == {case["case_id"]: 1}
    [row] = table_rows(rt, "speakup_cases")
    assert row["received_on"] == datetime(2026, 1, 31, tzinfo=UTC)  # the day, not 12:00
    [msg] = table_rows(rt, "speakup_messages")
    assert msg["sent_on"] == datetime(2026, 1, 31, tzinfo=UTC)


def test_an_administrator_can_neither_read_reports_nor_grant_itself_the_channel(
        rt: Runtime, anon: TestClient, clock: FixedClock) -> None:
    report(anon)
    [case] = rt.speakup.cases(SYSTEM)
    admin = make_staff(rt, clock, "ada.admin", ["admin"]).client
    for url in ("/v1/speakup/reports", f"/v1/speakup/reports/{case['id']}",
                "/v1/speakup/alerts"):
        r = admin.get(url)
        assert r.status_code == 403, (url, r.text)
    r = admin.post(f"/v1/speakup/reports/{case['id']}/acknowledge")
    assert r.status_code == 403
    # Granting itself the role, a new account with it, or a key with it: proposals only.
    r = admin.put("/v1/admin/users/ada.admin/roles", json={"roles": ["admin", "ethics_officer"]})
    assert r.status_code == 202 and r.json()["reason"] == "approval_required", r.text
    assert rt.users.get("ada.admin").roles == ("admin",)
    r = admin.post(f"/v1/admin/approvals/{r.json()['approval_id']}/approve")
    assert r.status_code == 403  # no approvals:decide; and never one's own proposal
    r = admin.post("/v1/admin/users", json={"username": "sock.puppet",
                                            "roles": ["ethics_officer"]})
    assert r.status_code == 202, r.text
    r = admin.post("/v1/admin/apikeys", json={"name": "side-door", "role": "ethics_officer"})
    assert r.status_code == 202, r.text
    side_door = TestClient(create_app(rt), raise_server_exceptions=False)
    side_door.headers["Authorization"] = f"Bearer {r.json()['api_key']}"
    assert side_door.get("/v1/speakup/reports").status_code == 401  # waits for approval
    # A service key (every data grant) reads no report either.
    service = rt.api_keys.create("app")[1]
    r = anon.get("/v1/speakup/reports", headers={"Authorization": f"Bearer {service}"})
    assert r.status_code == 403


def test_a_fault_on_the_channel_is_logged_as_its_reference_alone(
        rt: Runtime, anon: TestClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a driver message quoting " + REPORT)

    monkeypatch.setattr(rt.speakup, "submit", broken)
    r = anon.post("/v1/speakup/reports", json={"text": REPORT},
                  headers={"User-Agent": UA, "X-Request-ID": "reporter-chosen-id-4242"})
    assert r.status_code == 500
    ref = re.search(r"reference ([0-9a-f]{12})", r.json()["error"]["message"])
    assert ref is not None
    [line] = [rec.getMessage() for rec in caplog.records if "internal error" in rec.getMessage()]
    assert line == f"internal error ref={ref.group(1)} on - /v1/speakup: RuntimeError"


# -- guessing receipts ------------------------------------------------------------------------
def test_a_wrong_receipt_costs_a_full_kdf_and_gets_the_one_answer(
        rt: Runtime, anon: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    report(anon)
    receipts: Receipts = rt.speakup.receipts
    kdf = []
    for _ in range(3):
        started = time.perf_counter()
        receipts.index("0" * 20)
        kdf.append(time.perf_counter() - started)
    # Every Argon2id computed, counted (the real one runs).
    computed: list[str] = []
    index = receipts.index

    def counted(digits: str, spec: str | None = None) -> str:
        computed.append(digits)
        return index(digits, spec)

    monkeypatch.setattr(receipts, "index", counted)
    answers = set()
    timings = []
    for guess in ("1234-5678-9012-3456-7890", "12", None, "x" * 30, "00000000000000000000"):
        computed.clear()
        started = time.perf_counter()
        r = anon.get("/v1/speakup/thread", headers={RECEIPT: guess} if guess else {})
        timings.append(time.perf_counter() - started)
        answers.add((r.status_code, r.text))
        assert len(computed) == 1, guess  # malformed and missing ones cost the same work
    assert len(answers) == 1 and next(iter(answers))[0] == 401
    # Each guess pays at least about one Argon2id (t=3, 64 MiB): no shortcut answer.
    assert min(timings) >= 0.5 * min(kdf), (kdf, timings)


def test_guessing_and_flooding_are_rate_limited_per_address(
        rt: Runtime, anon: TestClient) -> None:
    made = report(anon)
    for _ in range(rt.settings.speakup_receipt_failures_per_hour):
        assert anon.get("/v1/speakup/thread", headers={RECEIPT: "1" * 20}).status_code == 401
    r = anon.get("/v1/speakup/thread", headers={RECEIPT: "1" * 20})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    # Past the limit even the right receipt is refused: guessing stops there.
    r = anon.get("/v1/speakup/thread", headers={RECEIPT: made["receipt"]})
    assert r.status_code == 429
    for _ in range(rt.settings.speakup_reports_per_hour - 1):
        report(anon)
    r = anon.post("/v1/speakup/reports", json={"text": REPORT})
    assert r.status_code == 429 and r.json()["error"]["reason"] == "rate_limited"
    assert len(table_rows(rt, "speakup_cases")) == rt.settings.speakup_reports_per_hour


def test_the_limiter_forgets_addresses_each_period() -> None:
    from fiduciary.errors import RateLimited
    from fiduciary.workforce.speakup import AddressLimiter

    now = [0.0]
    limiter = AddressLimiter({"reports": 2}, period_seconds=3600, now=lambda: now[0])
    limiter.check("reports", "203.0.113.7")
    limiter.check("reports", "203.0.113.7")
    limiter.check("reports", "198.51.100.1")  # another address counts apart
    with pytest.raises(RateLimited):
        limiter.check("reports", "203.0.113.7")
    assert "203.0.113.7" not in repr(vars(limiter))  # only keyed digests are held
    now[0] = 3600.0
    limiter.check("reports", "203.0.113.7")  # a new key, and new counts


# -- the retaliation watch --------------------------------------------------------------------
def _person(client: TestClient, last_name: str) -> tuple[str, str]:
    subject = client.post("/v1/subjects").json()["id"]
    r = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": subject, "data": {"first_name": "Rita", "last_name": last_name}})
    assert r.status_code == 201, r.text
    return subject, r.json()["id"]


def test_the_watch_alerts_the_ethics_officer_on_adverse_changes_and_coworker_reads(
        rt: Runtime, client: TestClient, anon: TestClient, clock: FixedClock) -> None:
    make_staff(rt, clock, "rita.reporter", ["claims_adjuster"])
    make_staff(rt, clock, "uma.unrelated", ["claims_adjuster"])
    early = make_staff(rt, clock, "dan.dpo", ["dpo"]).client
    rita_subject, rita_record = _person(client, "Reporter")
    _, other_record = _person(client, "Stranger")
    rt.profiles.link_subject(SYSTEM, "rita.reporter", rita_subject)
    # The day before the report: nothing is watched, nothing raised.
    r = early.get(f"/v1/collections/persons/records/{rita_record}?purpose=legal_obligation")
    assert r.status_code == 200, r.text
    rt.speakup_watch.run_once()
    clock.advance(days=1)
    coworker = make_staff(rt, clock, "dora.dpo", ["dpo"]).client
    officer = make_staff(rt, clock, "eve.ethics", ["ethics_officer"])
    report(anon, identify_as="rita.reporter")
    report(anon, identify_as="not-a-username")
    ritas_key, _ = rt.api_keys.create("rita's", owner_id=rt.users.get("rita.reporter").id)
    umas_key, _ = rt.api_keys.create("uma's", owner_id=rt.users.get("uma.unrelated").id)
    assert rt.speakup_watch.run_once().alerts == 0

    r = coworker.get(f"/v1/collections/persons/records/{rita_record}?purpose=legal_obligation")
    assert r.status_code == 200, r.text
    coworker.get(f"/v1/collections/persons/records/{other_record}?purpose=legal_obligation")
    client.get(f"/v1/collections/persons/records/{rita_record}?purpose={PA}")  # an application
    rt.users.set_roles("uma.unrelated", ["call_center_agent"], by=SYSTEM)
    rt.users.set_roles("rita.reporter", ["call_center_agent"], by=SYSTEM)
    rt.api_keys.revoke(ritas_key.id, by=SYSTEM)
    rt.api_keys.revoke(umas_key.id, by=SYSTEM)
    rt.users.set_disabled("rita.reporter", True, by=SYSTEM)
    assert rt.speakup_watch.run_once().alerts == 4
    assert rt.speakup_watch.run_once().alerts == 0  # read once, raised once

    r = officer.client.get("/v1/speakup/alerts")
    assert r.status_code == 200, r.text
    alerts = r.json()["items"]
    assert sorted(a["kind"] for a in alerts) == ["account_disabled", "api_key_revoked",
                                                 "record_access", "roles_removed"]
    assert {a["username"] for a in alerts} == {"rita.reporter"}
    [read] = [a for a in alerts if a["kind"] == "record_access"]
    assert read["actor"] == "dora.dpo" and read["action"] == "record.read"
    [removed] = [a for a in alerts if a["kind"] == "roles_removed"]
    assert removed["roles_removed"] == ["claims_adjuster"]
    # Not in the security analysts' queue, and nothing at rest or in the trail names her
    # next to the channel.
    analyst = make_staff(rt, clock, "sam.analyst", ["security_analyst"]).client
    assert all("speakup" not in json.dumps(a)
               for a in analyst.get("/v1/alerts").json()["items"])
    raw = b"\n".join(v if isinstance(v, bytes) else str(v).encode()
                     for row in table_rows(rt, "speakup_alerts") for v in row.values())
    assert b"rita" not in raw and b"record.read" not in raw
    for e in table_rows(rt, "audit_events"):
        if str(e["action"]).startswith("speakup."):
            assert "rita" not in str(e["event"])


# -- a real server ----------------------------------------------------------------------------
UA = "Canary-Agent/7.31 (anonymity-probe)"
FORWARDED = "203.0.113.77"
REAL_IP = "198.51.100.99"
COOKIE = "fds_cookie-canary-5521"


def _database_files(backend: str, database_url: str, request: pytest.FixtureRequest
                    ) -> list[Path]:
    """Where PostgreSQL keeps this test's database: its relation files, the WAL, its log."""
    if backend != "postgresql":
        return []
    server: PostgresServer = request.getfixturevalue("postgres")
    server.checkpoint()
    name = database_url.rsplit("/", 1)[1]
    engine = sa.create_engine(server.url())
    with engine.connect() as conn:
        oid = conn.execute(sa.text("SELECT oid FROM pg_database WHERE datname = :n"),
                           {"n": name}).scalar_one()
    engine.dispose()
    return [*(server.data / "base" / str(oid)).iterdir(),
            *(p for p in (server.data / "pg_wal").iterdir() if p.is_file()),
            server.root / "server.log"]


def test_a_real_server_keeps_no_address_agent_or_cookie_of_a_reporter(
        tmp_path: Path, backend: str, database_url: str, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "FIDUCIARY_DATABASE_URL": database_url,
           "FIDUCIARY_SPEAKUP_KDF_MEMORY_KIB": "8192",
           "FIDUCIARY_SPEAKUP_WATCH_INTERVAL_SECONDS": "0.5", "FIDUCIARY_LOG_LEVEL": "debug"}
    cli(env, "init", "--data-dir", str(data))
    server = RealServer(data, env).start()
    base = server.base
    try:
        headers = {"User-Agent": UA, "X-Forwarded-For": FORWARDED, "X-Real-IP": REAL_IP,
                   "Cookie": f"session={COOKIE}", "X-Request-ID": "reporter-chosen-id-4242"}
        with httpx.Client(base_url=base, headers=headers) as reporter:
            r = reporter.post("/v1/speakup/reports", json={"text": REPORT})
            assert r.status_code == 201, r.text
            receipt = r.json()["receipt"]
            assert r.headers["X-Request-ID"] != "reporter-chosen-id-4242"
            r = reporter.get("/v1/speakup/thread", headers={RECEIPT: receipt})
            assert r.status_code == 200
            assert reporter.post("/v1/speakup/thread/messages", headers={RECEIPT: receipt},
                                 json={"text": MESSAGE}).status_code == 201
            assert reporter.get("/v1/speakup/thread",
                                headers={RECEIPT: "0" * 20}).status_code == 401
        # The same headers on another route are logged: the check below can see them.
        httpx.get(f"{base}/healthz", headers={"X-Forwarded-For": "192.0.2.200"})
        time.sleep(1.5)  # a watch round and a checkpoint
    finally:
        output = server.stop()
    assert b"192.0.2.200" in output  # the access log is on …
    canaries = [UA.encode(), b"Canary-Agent", FORWARDED.encode(), REAL_IP.encode(),
                COOKIE.encode(), b"reporter-chosen-id-4242", b"Quentin-Zebedee",
                b"Wolframite-99017", receipt.encode(), receipt.replace("-", "").encode()]
    for canary in canaries:  # … but not for the channel
        assert canary not in output, canary
    assert b"/v1/speakup" not in output
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "fiduciary.log" for p in files)
    files += _database_files(backend, database_url, request)
    for path in files:
        blob = path.read_bytes()
        for canary in canaries:
            assert canary not in blob, (path, canary)
    engine = sa.create_engine(database_url)  # and every column of every row
    with engine.connect() as conn:
        rows = [v if isinstance(v, bytes) else str(v).encode()
                for table in metadata.sorted_tables for row in conn.execute(sa.select(table))
                for v in row]
    engine.dispose()
    assert b"argon2id$t=3$m=8192$p=1" in rows  # the case's row is among them
    assert b"speakup.watch.cursor" in rows  # and serve ran the retaliation watch
    for canary in canaries:
        assert not [v for v in rows if canary in v], canary

    # The CLI handles the case as the ethics officer's operator.
    [case] = cli(env, "speakup", "list", "--data-dir", str(data))["items"]
    assert case["messages"] == 1 and case["status"] == "received"
    shown = cli(env, "speakup", "show", case["id"], "--data-dir", str(data))
    assert shown["report"] == REPORT
    cli(env, "speakup", "acknowledge", case["id"], "--data-dir", str(data))
    replied = cli(env, "speakup", "reply", case["id"], "--text", FEEDBACK,
                   "--data-dir", str(data))
    assert replied["thread"][-1] == {"from": "handler", "sent_on": replied["received_on"],
                                     "text": FEEDBACK}
    closed = cli(env, "speakup", "close", case["id"], "--outcome", OUTCOME,
                  "--data-dir", str(data))
    assert closed["status"] == "closed"
    assert cli(env, "speakup", "watch", "--data-dir", str(data))["alerts"] == 0
