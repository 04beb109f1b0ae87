"""HTTP and log hygiene (issue 10: item 8, the body limit of item 6, the control characters of
item 9), each replayed as the bad input against the real app — in-process, or a real
``fiduciary serve`` where the server itself is what is tested:

- out-of-range parameters answer 4xx naming the parameter, never 500;
- strings with control characters are refused naming the field; no error repeats input;
- a fault is logged as its type and a reference: no SQL parameter, no traceback message;
- SIEM exports escape every control character, so free text cannot forge lines or fields;
- security headers on every response; /docs off by default and never from a CDN;
- request bodies over the configured size are refused with 413 while being read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary import logs
from fiduciary.api.app import create_app
from fiduciary.api.errors import validation_problems
from fiduciary.api.middleware import CONTENT_SECURITY_POLICY
from fiduciary.audit import siem
from fiduciary.config import Settings
from fiduciary.datamap.values import ValueRejected, validate
from fiduciary.errors import InvalidInput
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime
from tests.pgserver import PostgresServer, _free_port
from tests.test_import_export import cli

PA = "policy_administration"
LIMIT = 4096
BIN = Path(sys.executable).parent
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                    "x-frame-options": "DENY", "cache-control": "no-store"}
#: What the bad inputs below carry, so that no response may show it.
SECRET = "Secretvalue"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.max_body_bytes = LIMIT
    return settings


def as_role(rt: Runtime, role: str) -> TestClient:
    _, token = rt.api_keys.create(f"hygiene-{role}", role=role)
    c = TestClient(create_app(rt), raise_server_exceptions=False)
    c.headers["Authorization"] = f"Bearer {token}"
    return c


def new_subject(rt: Runtime) -> str:
    return rt.vault.create_subject(SYSTEM).id


def fields_of(r: httpx.Response) -> dict[str, str]:
    return {f["field"]: f["reason"] for f in r.json()["error"].get("fields", [])}


def raw_json(client: TestClient, method: str, url: str, body: Any) -> httpx.Response:
    """A body as JSON with ASCII escapes: a lone surrogate travels as ``\\ud800``."""
    return client.request(method, url, content=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})


# -- 1. out-of-range parameters: 4xx naming the parameter ------------------------------------------
OUT_OF_RANGE = [
    ("compliance_officer", "GET", "/v1/audit/events?cursor=" + str(10**30), None, "cursor"),
    ("compliance_officer", "GET", "/v1/audit/events?cursor=-1", None, "cursor"),
    ("compliance_officer", "GET", "/v1/audit/events?limit=" + str(10**30), None, "limit"),
    ("compliance_officer", "GET", "/v1/audit/events?since=0001-01-01T00:00:00%2B14:00", None,
     "since"),
    ("compliance_officer", "GET", "/v1/audit/events?until=9999-12-31T23:59:59-14:00", None,
     "until"),
    ("compliance_officer", "GET", f"/v1/audit/proof/inclusion?index={10**30}&size=1", None,
     "index"),
    ("compliance_officer", "GET", f"/v1/audit/proof/consistency?from=1&to={10**30}", None, "to"),
    ("dpo", "GET", "/v1/dsr?due_within_days=100000000000", None, "due_within_days"),
    ("dpo", "GET", "/v1/dsr?due_within_days=-1", None, "due_within_days"),
    ("dpo", "GET", f"/v1/dsr?limit={10**30}", None, "limit"),
    ("dpo", "POST", "/v1/dsr", {"type": "access", "regime": "gdpr",
                                "received_at": "0001-01-01T00:00:00+14:00"}, "received_at"),
    ("dpo", "POST", "/v1/dsr", {"type": "access", "regime": "gdpr",
                                "received_at": "9999-12-31T23:59:59-14:00"}, "received_at"),
    ("service", "POST", f"/v1/collections/persons/search?purpose={PA}",
     {"where": {"region": "west"}, "limit": 10**30}, "limit"),
    ("service", "POST", "/v1/collections/claims/records?purpose=claims_handling",
     {"data": {"claim_number": "C-1", "policy_number": "P-1", "status": "open",
               "loss_date": "2025-01-01", "reported_at": "0001-01-01T00:00:00+14:00"}},
     "reported_at"),
]


@pytest.mark.parametrize(("role", "method", "url", "body", "field"), OUT_OF_RANGE,
                         ids=[f"{m} {u[:40]} {f}" for _, m, u, _, f in OUT_OF_RANGE])
def test_out_of_range_parameters_are_refused_naming_the_parameter(
        rt: Runtime, role: str, method: str, url: str, body: dict[str, Any] | None,
        field: str) -> None:
    client = as_role(rt, role)
    if body is not None:
        body = {**body, "subject_id": new_subject(rt)}
    r = client.request(method, url, json=body)
    assert r.status_code == 422, r.text
    assert field in fields_of(r), r.text
    assert r.json()["error"]["code"] == "invalid_input"


def test_services_bound_the_same_inputs_without_the_api(rt: Runtime) -> None:
    with pytest.raises(InvalidInput) as exc:
        rt.trail.events(cursor=10**30)
    assert [f.field for f in exc.value.fields] == ["cursor"]
    with pytest.raises(InvalidInput) as exc:
        rt.dsr.list(due_within_days=100_000_000_000)
    assert [f.field for f in exc.value.fields] == ["due_within_days"]
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    with pytest.raises(InvalidInput) as exc:
        rt.trail.events(since=year_one, until=datetime(9999, 12, 31, 23, tzinfo=timezone(
            -timedelta(hours=14))))
    assert [f.field for f in exc.value.fields] == ["since", "until"]
    with pytest.raises(InvalidInput) as exc:
        rt.dsr.create(SYSTEM, new_subject(rt), "access", "gdpr", year_one)
    assert [f.field for f in exc.value.fields] == ["received_at"]
    # The earliest and latest instants that exist in UTC are fine.
    assert rt.dsr.create(SYSTEM, new_subject(rt), "access", "gdpr",
                         datetime(1, 1, 1, tzinfo=UTC)).status == "received"


def test_bounds_are_declared_in_the_openapi_document(rt: Runtime) -> None:
    spec = create_app(rt).openapi()

    def param(path: str, name: str) -> dict[str, Any]:
        [p] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
        return dict(p["schema"].get("anyOf", [p["schema"]])[0])

    assert param("/v1/audit/events", "cursor")["maximum"] == 2**63 - 1
    assert param("/v1/audit/events", "limit")["maximum"] == 1000
    assert param("/v1/dsr", "due_within_days")["maximum"] == 3660
    assert param("/v1/audit/proof/inclusion", "index")["minimum"] == 0


# -- 2. control characters: 422 naming the field; no message repeats input ------------------------
CONTROLS = ["\x00", "\r", "\x1b", "\x7f", "\x85", "\x0b", "\ud800"]


@pytest.mark.parametrize("bad", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_control_characters_in_record_fields_are_refused_naming_the_field(
        rt: Runtime, client: TestClient, bad: str) -> None:
    subject = new_subject(rt)
    value = f"Ada{bad}{SECRET}"
    r = raw_json(client, "POST", f"/v1/collections/persons/records?purpose={PA}",
                 {"subject_id": subject, "data": {"first_name": value, "last_name": "Byron"}})
    assert r.status_code == 422, r.text
    assert list(fields_of(r)) == ["first_name"]
    assert SECRET not in r.text
    record = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": subject, "data": {"first_name": "Ada", "last_name": "Byron"}}).json()
    r = raw_json(client, "PATCH", f"/v1/collections/persons/records/{record['id']}?purpose={PA}",
                 {"data": {"last_name": value}})
    assert r.status_code == 422 and list(fields_of(r)) == ["last_name"], r.text
    r = raw_json(client, "POST", f"/v1/collections/persons/search?purpose={PA}",
                 {"where": {"last_name": value}})
    assert r.status_code == 422 and list(fields_of(r)) == ["last_name"], r.text
    assert SECRET not in r.text
    stored = rt.vault.get_record(SYSTEM, "persons", record["id"], PA)
    assert stored.data["last_name"] == "Byron"  # nothing was written


def test_tab_and_newline_are_text(rt: Runtime, client: TestClient) -> None:
    r = client.post("/v1/collections/claims/records?purpose=claims_handling", json={
        "subject_id": new_subject(rt), "data": {
            "claim_number": "C-7", "policy_number": "P-7", "status": "open",
            "loss_date": "2025-01-01", "description": "Hail.\n\tRoof and car damaged."}})
    assert r.status_code == 201, r.text
    assert r.json()["data"]["description"] == "Hail.\n\tRoof and car damaged."


def test_every_writer_gets_the_same_rule(rt: Runtime, settings: Settings,
                                         tmp_path: Path) -> None:
    """The data map's own validation refuses them, so the bulk import (no HTTP) does too."""
    spec = rt.datamap.collections["persons"].fields["first_name"]
    for bad in CONTROLS:
        with pytest.raises(ValueRejected, match=r"control characters|not valid Unicode"):
            validate(spec, f"Ada{bad}")
    assert validate(spec, "Ada\tLovelace\nByron") == "Ada\tLovelace\nByron"
    rows = tmp_path / "people.jsonl"
    rows.write_text(json.dumps({"first_name": f"Ada\x00{SECRET}", "last_name": "Byron"}) + "\n"
                    + json.dumps({"first_name": "Grace", "last_name": "Hopper"}) + "\n")
    _, token = rt.api_keys.create("importer")
    code, out, err = cli(settings, "import", "persons", str(rows), "--purpose", PA, "--json",
                         api_key=token)
    assert code == 1, out + err
    assert json.loads(out)["imported"] == 1
    rejects = Path(str(rows) + ".rejects.jsonl").read_text()
    assert json.loads(rejects)["errors"][0]["field"] == "first_name"
    assert SECRET not in rejects


def test_control_characters_elsewhere_in_requests(rt: Runtime, client: TestClient) -> None:
    dpo = as_role(rt, "dpo")
    subject = new_subject(rt)
    dsr = rt.dsr.create(SYSTEM, subject, "access", "gdpr")
    # Free text that would reach the database: on PostgreSQL a NUL there was a 500.
    r = dpo.post(f"/v1/dsr/{dsr.id}/deny", json={"reason": f"no\x00{SECRET}"})
    assert r.status_code == 422 and fields_of(r) == {
        "reason": "control characters are not allowed (tab and newline are)"}, r.text
    assert SECRET not in r.text
    r = dpo.get("/v1/dsr", params={"subject_id": f"x\x00{SECRET}"})
    assert r.status_code == 422 and list(fields_of(r)) == ["subject_id"], r.text
    r = dpo.get(f"/v1/dsr/x%0d%0a{SECRET}")
    assert r.status_code == 404 and SECRET not in r.text
    r = raw_json(client, "POST", f"/v1/collections/persons/records?purpose={PA}",
                 {"subject_id": subject, "data": {f"first\x00{SECRET}": "Ada"}})
    assert r.status_code == 422 and list(fields_of(r)) == ["data"] and SECRET not in r.text
    assert rt.dsr.get(dsr.id).status == "received"


def test_errors_never_repeat_submitted_text(rt: Runtime, client: TestClient) -> None:
    subject = new_subject(rt)
    r = client.get(f"/v1/subjects/{subject}/records", params={"purpose": f"XYZ-{SECRET}"})
    assert r.status_code == 422 and list(fields_of(r)) == ["purpose"]
    assert SECRET not in r.text
    r = client.get(f"/v1/collections/{SECRET}/records/x", params={"purpose": PA})
    assert r.status_code == 404 and SECRET not in r.text
    dpo = as_role(rt, "dpo")
    for body in ({"received_at": f"2026-{SECRET}"}, {"regime": SECRET},
                 {"type": SECRET}, {"channel": SECRET}, {"subject_id": 12345678901}):
        r = dpo.post("/v1/dsr", json={"subject_id": subject, "type": "access",
                                      "regime": "gdpr", **body})
        assert r.status_code in (404, 422), r.text
        assert SECRET not in r.text and "12345678901" not in r.text, r.text
    # Pydantic's own messages can quote the input; only where and why are kept.
    problems = validation_problems([
        {"type": "uuid_parsing", "loc": ("body", "id"), "input": f"z{SECRET}",
         "msg": "Input should be a valid UUID, invalid character: found `z` at 0"},
        {"type": "value_error", "loc": ("query", "q"), "input": SECRET,
         "msg": f"Value error, {SECRET} is not allowed"},
        {"type": "union_tag_invalid", "loc": ("body", "x"), "input": {},
         "msg": f"Input tag '{SECRET}' found using 'kind' does not match any of the expected"},
        {"type": "string_type", "loc": ("body", "k\x00" * 40), "input": 5,
         "msg": "Input should be a valid string"}])
    assert SECRET not in json.dumps(problems)
    assert problems[0] == {"field": "id", "reason": "Input should be a valid UUID"}
    # Keys are names, and fields are named; but never with control characters or at length.
    assert "\x00" not in problems[3]["field"] and len(problems[3]["field"]) <= 64


# -- 3. security headers, HTML pages, docs ---------------------------------------------------------
def test_security_headers_on_every_response(rt: Runtime, client: TestClient,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    subject = new_subject(rt)
    auditor = as_role(rt, "compliance_officer")
    responses = {
        200: client.get("/healthz"),
        201: client.post("/v1/subjects"),
        401: TestClient(client.app).get("/v1/auth/me"),
        403: client.get("/v1/audit/events"),
        404: client.get(f"/v1/subjects/{'0' * 36}"),
        405: client.get("/v1/collections/persons/search"),
        413: client.post("/v1/subjects", content=b"x" * (LIMIT + 1)),
        422: client.get(f"/v1/subjects/{subject}/records"),
    }
    html = auditor.get("/v1/ropa?format=html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")

    def broken() -> None:
        raise RuntimeError(f"database said {SECRET}")

    monkeypatch.setattr(rt.db, "ping", broken)
    responses[500] = client.get("/healthz")
    for status, r in [*responses.items(), (200, html)]:
        assert r.status_code == status, (status, r.text)
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (status, name, r.headers)
        csp = r.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY, status
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert len(r.headers["x-request-id"]) == 32
    assert responses[500].json()["error"]["code"] == "internal_error"
    assert SECRET not in responses[500].text


def _resources(page: str) -> list[str]:
    """What a page would load or run beyond its own inline style sheet."""
    return re.findall(r"<script|<link|<img|<iframe|<object|<embed|\ssrc=|url\(|@import|"
                      r"\son[a-z]+=|<form", page, re.IGNORECASE)


def test_html_pages_render_under_the_policy(rt: Runtime) -> None:
    """The records of processing and the access package need one inline style sheet each, and
    nothing else: the policy allows exactly that (style-src 'unsafe-inline' under
    default-src 'none')."""
    auditor = as_role(rt, "compliance_officer")
    ropa = auditor.get("/v1/ropa?format=html").text
    subject = new_subject(rt)
    rt.vault.create_record(SYSTEM, "persons", subject, {
        "first_name": "<script>alert(1)</script>", "last_name": "O'Brien"}, PA)
    request = rt.dsr.create(SYSTEM, subject, "access", "gdpr")
    rt.dsr.verify(SYSTEM, request.id, "id_document")
    done = rt.dsr.fulfil(SYSTEM, request.id)
    package, media = rt.packager.download(SYSTEM, done.result, subject, "html")
    page = package.decode() if isinstance(package, bytes) else str(package)
    assert media.startswith("text/html")
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["style-src"] == "'unsafe-inline'"
    for html in (ropa, page):
        assert html.count("<style>") == 1 and "</style>" in html
        assert _resources(html) == [], _resources(html)


def test_docs_are_off_by_default_and_local_when_on(rt: Runtime) -> None:
    off = TestClient(create_app(rt))
    assert off.get("/docs").status_code == 404
    assert off.get("/redoc").status_code == 404
    assert off.get("/openapi.json").status_code == 200
    rt.settings.api_docs = True
    on = TestClient(create_app(rt))
    page = on.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text and "//" not in re.sub(
        r"<!doctype[^>]*>", "", page.text)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/docs/' in attrs and not body.strip()
                           for attrs, body in scripts)  # no inline script
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp and "cdn" not in csp.lower()
    for src in re.findall(r'(?:src|href)="(/docs/[^"]+)"', page.text):
        asset = on.get(src)
        assert asset.status_code == 200, src
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.headers["content-security-policy"] == csp
    assert b"SwaggerUIBundle" in on.get("/docs/assets/swagger-ui-bundle.js").content
    assert "/openapi.json" in on.get("/docs/init.js").text
    for other in ("index.html", "swagger-initializer.js", "..%2F__init__.py",
                  "swagger-ui-bundle.js.map"):
        assert on.get(f"/docs/assets/{other}").status_code == 404, other
    assert on.get("/openapi.json").status_code == 200
    assert "/docs" not in json.dumps(on.get("/openapi.json").json()["paths"])


# -- 4. request body size -------------------------------------------------------------------------
def test_bodies_over_the_limit_are_refused_with_413(rt: Runtime, client: TestClient) -> None:
    anon = TestClient(client.app)
    r = anon.post("/v1/auth/login", content=b"{" + b" " * LIMIT + b"}",
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json() == {"error": {"code": "payload_too_large",
                                  "message": f"request body larger than {LIMIT} bytes"}}

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(LIMIT // 512 + 2):
            yield b" " * 512

    r = anon.post("/v1/auth/login", content=chunks(),
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    # At the limit, the request goes on to the route (here: malformed, so 422).
    r = anon.post("/v1/auth/login", content=b"{" + b" " * (LIMIT - 2) + b"}",
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "413" in json.dumps(create_app(rt).openapi()["paths"]["/v1/auth/login"]["post"][
        "responses"])


# -- 5. a real `fiduciary serve`: faults in the log, huge bodies ----------------------------------
CANARY = "CLM-CANARY-4417"


def _initialised(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    r = subprocess.run([str(BIN / "fiduciary"), "init", "--json"], env=env,
                       capture_output=True, text=True, check=True)
    return dict(json.loads(r.stdout))


def _serve(env: dict[str, str], out: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    with out.open("wb") as fh:
        proc = subprocess.Popen([str(BIN / "fiduciary"), "serve", "--port", str(port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(out.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _inject_fault(url: str) -> None:
    """A trigger that refuses every new record: a real database error, mid-request."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text("CREATE TRIGGER injected_fault BEFORE INSERT ON records "
                                 "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"))
        else:
            conn.execute(sa.text("CREATE FUNCTION injected_fault() RETURNS trigger AS $$ BEGIN "
                                 "RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql"))
            conn.execute(sa.text("CREATE TRIGGER injected_fault BEFORE INSERT ON records FOR "
                                 "EACH ROW EXECUTE FUNCTION injected_fault()"))
    engine.dispose()


@pytest.fixture
def serve_env(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {**os.environ, "FIDUCIARY_DATA_DIR": str(tmp_path / "served"),
           "FIDUCIARY_RETENTION_INTERVAL_HOURS": "0"}
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        env["FIDUCIARY_DATABASE_URL"] = server.create_database(f"served{os.getpid()}"
                                                               f"{time.monotonic_ns()}")
    return env


def test_a_fault_is_logged_as_type_and_reference_only(serve_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    keys = _initialised(tmp_path, serve_env)
    url = serve_env.get("FIDUCIARY_DATABASE_URL") or \
        f"sqlite:///{Path(serve_env['FIDUCIARY_DATA_DIR']) / 'fiduciary.db'}"
    _inject_fault(url)
    out = tmp_path / "server.out"
    proc, port = _serve(serve_env, out)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={
                "Authorization": f"Bearer {keys['api_key']}"}) as c:
            subject = c.post("/v1/subjects").json()["id"]
            r = c.post("/v1/collections/claims/records?purpose=claims_handling", json={
                "subject_id": subject, "data": {"claim_number": CANARY, "policy_number": "P-1",
                                                "status": "open", "loss_date": "2025-01-01"}})
        assert r.status_code == 500, r.text
        assert r.headers["x-content-type-options"] == "nosniff"
        ref = re.search(r"reference ([0-9a-f]{12})", r.json()["error"]["message"])
        assert ref, r.text
    finally:
        _stop(proc)
    logged = out.read_text() + (Path(serve_env["FIDUCIARY_DATA_DIR"]) / "logs" /
                                "fiduciary.log").read_text()
    assert re.search(rf"ERROR fiduciary.api: internal error ref={ref[1]} on POST "
                     r"/v1/collections/claims/records: \w+Error\n", logged), logged
    assert CANARY not in logged and "injected fault" not in logged, logged
    assert "[parameters" not in logged and "Traceback (most recent call last)" not in logged
    assert "Exception in ASGI application" not in logged  # uvicorn never saw the fault


def test_a_60_mib_login_body_is_refused_quickly(tmp_path: Path) -> None:
    env = {**os.environ, "FIDUCIARY_DATA_DIR": str(tmp_path / "served"),
           "FIDUCIARY_RETENTION_INTERVAL_HOURS": "0"}
    _initialised(tmp_path, env)
    proc, port = _serve(env, tmp_path / "server.out")
    size = 60 * 1024 * 1024
    try:
        for framing in ("content-length", "chunked"):
            started = time.monotonic()
            reply, sent = _send_huge_login(port, size, framing)
            elapsed = time.monotonic() - started
            assert reply.startswith(b"HTTP/1.1 413"), (framing, reply[:200])
            assert b"payload_too_large" in reply and b"nosniff" in reply.lower()
            assert elapsed < 5, (framing, elapsed)
            assert sent < size // 4, (framing, sent)  # the server stopped reading
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        _stop(proc)


def _send_huge_login(port: int, size: int, framing: str) -> tuple[bytes, int]:
    """Send a login body of ``size`` bytes until the server answers; return the answer and
    how many bytes of the body went out."""
    head = (b"POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n")
    head += (f"Content-Length: {size}\r\n\r\n".encode() if framing == "content-length"
             else b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 65536
    piece = chunk if framing == "content-length" else b"10000\r\n" + chunk + b"\r\n"
    sent = 0
    pending = b""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        s.setblocking(False)
        deadline = time.monotonic() + 10
        while sent < size and time.monotonic() < deadline and not reply:
            pending = pending or piece
            try:
                n = s.send(pending)
                pending = pending[n:]
                sent += n
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                reply += s.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        s.setblocking(True)
        s.settimeout(5)
        try:
            while b"}}" not in reply:
                data = s.recv(65536)
                if not data:
                    break
                reply += data
        except (TimeoutError, ConnectionResetError):
            pass
    return reply, sent


@pytest.fixture
def configured_logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("info")
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


@pytest.mark.usefixtures("configured_logs")
def test_log_records_carry_no_exception_messages(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise KeyError(f"{SECRET} from the driver")
    except KeyError:
        try:
            raise RuntimeError(f"wrapping {SECRET}") from None
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
            logging.getLogger("fiduciary.runtime").exception("retention run failed")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count("Traceback (message withheld): builtins.RuntimeError") == 2
    assert 'in test_log_records_carry_no_exception_messages' in err


# -- 6. SIEM export: no control character gets through ---------------------------------------------
#: Free text that would forge a syslog line (PostgreSQL stores no NUL: the unit test below has it).
FORGED = "\r\n<14>1 2026-01-01T00:00:00Z forged fiduciary - x - forged\x07\x1b[2J\u2028\x85"


def test_siem_exports_escape_free_text(rt: Runtime, settings: Settings) -> None:
    """Real events carrying free text with CR, LF, BEL, ESC, NEL and U+2028: an API key's
    name (the actor's name) and break-glass style subject ids."""
    _, token = rt.api_keys.create(f"ops{FORGED}")
    c = TestClient(create_app(rt), raise_server_exceptions=False)
    c.headers["Authorization"] = f"Bearer {token}"
    assert c.post("/v1/subjects").status_code == 201
    rt.audit.append_committed(rt.audit.event(
        SYSTEM, "auth.break_glass", subject_ids=["a\r\n<14>1 forged\x1b\u2028", "b"],
        reason=f"why{FORGED}",
        details={"justification": FORGED}))
    total = len(rt.trail.events(limit=1000)[0])  # at least: the export may add its own
    for fmt in ("syslog", "cef", "jsonl"):
        code, out, err = cli(settings, "audit", "export", "--format", fmt)
        assert code == 0, err
        lines = out.split("\n")
        assert lines[-1] == "" and len(lines) - 1 >= total, (fmt, lines)
        for line in lines[:-1]:
            assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line), (fmt, line)
            assert line.startswith({"syslog": "<", "cef": "CEF:0|", "jsonl": "{"}[fmt])
        forged = [ln for ln in lines if "forged" in ln]
        assert len(forged) >= 2, (fmt, forged)
        if fmt == "syslog":
            assert all(ln.count("[fiduciary@32473 ") == 1 for ln in lines[:-1])
            assert "\\r\\n<14>1" in "".join(forged)
        if fmt == "cef":
            assert all(ln.count("|") - ln.count("\\|") == 7 for ln in lines[:-1])
            assert "\\r\\n<14>1" in "".join(forged)


@pytest.mark.parametrize("fmt", ["syslog", "cef"])
def test_siem_formats_escape_every_control_character(fmt: str) -> None:
    every = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]))
    event = {"id": "e1", "time": "2026-01-31T12:00:00Z", "action": f"x{every}",
             "decision": "allow", "reason": every, "collection": every, "purpose": every,
             "actor": {"kind": "user", "id": every, "name": every, "roles": [every]},
             "subject_ids": [every], "record_ids": [every], "fields": [every],
             "request_id": every, "client": every, "details": {every: every}}
    line = siem.syslog(event, hostname=f"h{every}") if fmt == "syslog" else siem.cef(event)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line), line
    assert "\\u0000" in line and "\\r" in line and "\\n" in line
