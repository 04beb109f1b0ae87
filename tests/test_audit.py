"""The audit trail: an event for every touch in the same transaction, a Merkle log with signed
checkpoints and proofs, verification that catches any tampering, who-saw-this-customer, SIEM."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.audit import merkle
from fiduciary.audit.trail import checkpoint_message
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import audit_checkpoints, audit_events
from tests.conftest import make_staff, table_rows
from tests.test_import_export import cli

PA = "policy_administration"
SSN = "078-05-1120"


def actions(rt: Runtime) -> Counter[str]:
    return Counter(str(r["action"]) for r in table_rows(rt, "audit_events"))


def seed(client: TestClient) -> tuple[str, str]:
    subject = client.post("/v1/subjects").json()["id"]
    rec = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": subject, "data": {"first_name": "Ines", "last_name": "Moreau",
                                        "national_id": SSN, "email": "ines@example.org"}}
                      ).json()
    return subject, rec["id"]


def test_every_operation_leaves_exactly_one_event_without_values(
    client: TestClient, rt: Runtime, clock: FixedClock
) -> None:
    subject, rec = seed(client)
    client.get(f"/v1/collections/persons/records/{rec}?purpose={PA}")
    client.post(f"/v1/collections/persons/search?purpose={PA}",
                json={"where": {"national_id": SSN}})
    client.get(f"/v1/subjects/{subject}/records?purpose={PA}")
    client.patch(f"/v1/collections/persons/records/{rec}?purpose={PA}",
                 json={"data": {"email": "new@example.org"}})
    denied = make_staff(rt, clock, "east", ["call_center_agent"], regions=["east"]).client
    assert denied.get(f"/v1/collections/persons/records/{rec}?purpose=customer_service"
                      ).status_code == 404
    client.delete(f"/v1/collections/persons/records/{rec}?purpose={PA}")
    seen = actions(rt)
    for action in ("subject.create", "record.create", "record.search",
                   "subject.records", "record.update", "record.delete", "user.create",
                   "auth.login", "auth.mfa_enrolled", "auth.enrol"):
        assert seen[action] == 1, (action, seen)
    assert seen["record.read"] == 2  # the service's read and the agent's refused one
    rows = table_rows(rt, "audit_events")
    deny = [json.loads(str(r["event"])) for r in rows if r["action"] == "record.read"]
    read = next(e for e in deny if e["decision"] != "deny")
    assert read["fields"] == sorted(["email", "first_name", "last_name", "national_id"])
    assert read["subject_ids"] == [subject] and read["record_ids"] == [rec]
    assert read["actor"]["roles"] == ["service"] and read["request_id"]
    denial = json.loads(str(next(r["event"] for r in rows if r["action"] == "record.read"
                                 and '"deny"' in str(r["event"]))))
    assert denial["reason"] == "relationship_required"
    search = json.loads(str(next(r["event"] for r in rows if r["action"] == "record.search")))
    digests = search["details"].pop("query_digests")
    assert search["details"] == {"result_count": 1, "fields_queried": ["national_id"]}
    # The value searched only as a short keyed digest (monitoring's search_sweep).
    assert list(digests) == ["national_id"] and len(digests["national_id"]) == 16
    text = "\n".join(str(r["event"]) for r in rows)
    for value in (SSN, "078051120", "Ines", "Moreau", "ines@example.org", "new@example.org"):
        assert value not in text


def _sequenced(rt: Runtime) -> None:
    rt.trail.sequence(force_checkpoint=True)


def test_api_proofs_verify_with_an_independent_verifier(rt: Runtime, client: TestClient,
                                                        clock: FixedClock) -> None:
    seed(client)
    _sequenced(rt)
    first = rt.trail.latest_checkpoint()
    seed(client)
    _sequenced(rt)
    auditor = make_staff(rt, clock, "aud", ["compliance_officer"]).client
    cp = auditor.get("/v1/audit/checkpoint").json()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(cp["public_key"])).verify(
        base64.b64decode(cp["signature"]),
        checkpoint_message(cp["size"], base64.b64decode(cp["root"]),
                           first.timestamp.__class__.fromisoformat(cp["timestamp"])))
    page = auditor.get("/v1/audit/events?limit=5").json()
    assert len(page["items"]) == 5 and page["next_cursor"]
    for item in page["items"]:
        if item["index"] is None or item["index"] >= cp["size"]:
            continue
        leaf = merkle.leaf_hash(json.dumps(item["event"], separators=(",", ":"),
                                           sort_keys=True, ensure_ascii=False).encode())
        assert base64.b64encode(leaf).decode() == item["leaf_hash"]
        p = auditor.get(f"/v1/audit/proof/inclusion?index={item['index']}&size={cp['size']}"
                        ).json()
        merkle.verify_inclusion(leaf, item["index"], cp["size"],
                                [base64.b64decode(h) for h in p["proof"]],
                                base64.b64decode(cp["root"]))
    c = auditor.get(f"/v1/audit/proof/consistency?from={first.size}&to={cp['size']}").json()
    merkle.verify_consistency(first.size, cp["size"], first.root, base64.b64decode(cp["root"]),
                              [base64.b64decode(h) for h in c["proof"]])
    assert actions(rt)["audit.read"] >= 4  # reading the trail is itself audited


def test_only_auditing_roles_read_the_trail(rt: Runtime, client: TestClient,
                                            clock: FixedClock) -> None:
    seed(client)
    assert client.get("/v1/audit/events").status_code == 403  # service key
    adj = make_staff(rt, clock, "adj", ["claims_adjuster"]).client
    assert adj.get("/v1/audit/events").status_code == 403
    for role in ("compliance_officer", "dpo", "security_analyst"):
        who = make_staff(rt, clock, role.replace("_", "."), [role]).client
        assert who.get("/v1/audit/events").status_code == 200, role


def test_who_saw_this_customer(rt: Runtime, client: TestClient, settings: Settings,
                               clock: FixedClock) -> None:
    subject, rec = seed(client)
    client.post("/v1/collections/quotes/records?purpose=underwriting", json={
        "subject_id": subject, "data": {"quote_number": "Q-1", "product": "auto",
                                        "decision": "pending", "assigned_underwriter": "seer"}})
    adj = make_staff(rt, clock, "seer", ["underwriter"]).client
    adj.get(f"/v1/collections/persons/records/{rec}?purpose=underwriting")
    code, out, _ = cli(settings, "audit", "subject", subject, "--json")
    assert code == 0
    accesses = json.loads(out)["accesses"]
    reads = [a for a in accesses if a["action"] == "record.read"]
    assert [(a["actor"], a["purpose"]) for a in reads] == [("seer", "underwriting")]
    assert "national_id" in reads[0]["fields"] and "email" not in reads[0]["fields"]


def test_siem_formats(rt: Runtime, client: TestClient, settings: Settings) -> None:
    seed(client)
    for fmt, check in (("jsonl", lambda line: json.loads(line)["action"]),
                       ("syslog", lambda line: line.startswith("<1") and "fiduciary@32473"
                        in line),
                       ("cef", lambda line: line.startswith("CEF:0|Fiduciary|Fiduciary|"))):
        code, out, _ = cli(settings, "audit", "export", "--format", fmt)
        lines = out.strip().splitlines()
        assert code == 0 and len(lines) >= 2, fmt
        assert all(check(line) for line in lines), fmt
        assert SSN not in out


# -- tampering ---------------------------------------------------------------------------------
def _verify(settings: Settings, *extra: str) -> tuple[int, str]:
    code, out, err = cli(settings, "audit", "verify", *extra)
    return code, out + err


def _tamper(rt: Runtime, sql: str, **params: Any) -> None:
    with rt.db.write() as conn:
        conn.execute(sa.text(sql), params)


@pytest.fixture
def sealed_log(rt: Runtime, client: TestClient, settings: Settings) -> Runtime:
    for _ in range(4):
        seed(client)
        _sequenced(rt)
    code, out = _verify(settings)
    assert code == 0 and "verified" in out
    return rt


@pytest.mark.parametrize("mutation", ["edit", "delete", "insert", "swap", "truncate",
                                      "edit_checkpoint", "delete_checkpoint"])
def test_verify_catches_tampering(mutation: str, sealed_log: Runtime, settings: Settings,
                                  tmp_path: Path) -> None:
    rt = sealed_log
    witness = tmp_path / "witness.json"
    assert cli(settings, "audit", "checkpoint", "--export", str(witness))[0] == 0
    with rt.db.read() as conn:
        size = conn.execute(sa.select(sa.func.max(audit_events.c.leaf_index))).scalar_one() + 1
        cps = conn.execute(sa.select(audit_checkpoints.c.size)
                           .order_by(audit_checkpoints.c.size)).scalars().all()
    target = 5
    if mutation == "edit":
        _tamper(rt, "UPDATE audit_events SET event = replace(event, '\"allow\"', '\"deny\"') "
                    "WHERE leaf_index = :i", i=target)
        expect = f"event at leaf index {target}"
    elif mutation == "delete":
        _tamper(rt, "DELETE FROM audit_events WHERE leaf_index = :i", i=target)
        expect = f"event at leaf index {target} is missing"
    elif mutation == "insert":
        _tamper(rt, "UPDATE audit_events SET leaf_index = leaf_index + 1000000 "
                    "WHERE leaf_index >= :i", i=target)
        _tamper(rt, "UPDATE audit_events SET leaf_index = leaf_index - 999999 "
                    "WHERE leaf_index >= 1000000")
        _tamper(rt, "INSERT INTO audit_events (event_id, at, action, actor, subject_ids, "
                    "record_ids, event, leaf_index) SELECT :eid, at, action, actor, "
                    "subject_ids, record_ids, event, :i FROM audit_events WHERE leaf_index = 0",
                i=target, eid="00000000-0000-4000-8000-00000000beef")
        expect = f"event at leaf index {target}"
    elif mutation == "swap":
        _tamper(rt, "UPDATE audit_events SET leaf_index = -1 WHERE leaf_index = :i", i=target)
        _tamper(rt, "UPDATE audit_events SET leaf_index = :i WHERE leaf_index = :j",
                i=target, j=target + 1)
        _tamper(rt, "UPDATE audit_events SET leaf_index = :j WHERE leaf_index = -1",
                j=target + 1)
        expect = f"event at leaf index {target}"
    elif mutation == "truncate":
        _tamper(rt, "DELETE FROM audit_events WHERE leaf_index >= :i", i=size - 3)
        expect = "truncated"
    elif mutation == "edit_checkpoint":
        _tamper(rt, "UPDATE audit_checkpoints SET size = size - 1 WHERE size = :s", s=cps[1])
        expect = "signature does not verify"
    else:
        _tamper(rt, "DELETE FROM audit_checkpoints WHERE size = :s", s=cps[1])
        expect = f"checkpoint size {cps[1]}, recorded by the event"
    code, out = _verify(settings)
    assert code == 1, out
    assert expect in out, out


def test_truncating_events_and_checkpoints_together_is_caught_by_the_witness(
    sealed_log: Runtime, settings: Settings, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.json"
    assert cli(settings, "audit", "checkpoint", "--export", str(witness))[0] == 0
    cps = [cp.size for cp in sealed_log.trail.checkpoints()]
    _tamper(sealed_log, "DELETE FROM audit_checkpoints WHERE size > :s", s=cps[1])
    _tamper(sealed_log, "DELETE FROM audit_events WHERE leaf_index >= :s", s=cps[1])
    assert _verify(settings)[0] == 0  # consistent on its own...
    code, out = _verify(settings, "--checkpoint", str(witness))
    assert code == 1 and "truncated" in out  # ...but not with what the witness holds


# -- same transaction --------------------------------------------------------------------------
def _break_audit_inserts(rt: Runtime) -> None:
    with rt.db.write() as conn:
        if rt.db.is_sqlite:
            conn.execute(sa.text("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
                                 "BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END"))
        else:
            conn.execute(sa.text("CREATE FUNCTION audit_down() RETURNS trigger AS $$ BEGIN "
                                 "RAISE EXCEPTION 'audit store unavailable'; END $$ "
                                 "LANGUAGE plpgsql"))
            conn.execute(sa.text("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
                                 "FOR EACH ROW EXECUTE FUNCTION audit_down()"))


def test_no_event_no_operation_and_no_data(rt: Runtime, client: TestClient) -> None:
    subject, rec = seed(client)
    before = len(table_rows(rt, "records"))
    _break_audit_inserts(rt)
    r = client.post(f"/v1/collections/persons/records?purpose={PA}", json={
        "subject_id": subject, "data": {"first_name": "Zoe", "last_name": "Quill"}})
    assert r.status_code == 500 and "Zoe" not in r.text
    assert len(table_rows(rt, "records")) == before
    r = client.get(f"/v1/collections/persons/records/{rec}?purpose={PA}")
    assert r.status_code == 500
    assert SSN not in r.text and "Ines" not in r.text
    r = client.patch(f"/v1/collections/persons/records/{rec}?purpose={PA}",
                     json={"data": {"last_name": "Changed"}})
    assert r.status_code == 500
    assert rt.vault.audit.enabled
    rt.vault.audit.enabled = False  # read back without auditing, to see nothing changed
    assert rt.vault.get_record(SYSTEM, "persons", rec, PA).data["last_name"] == "Moreau"


def test_concurrent_writers_one_event_each_and_the_log_verifies(
    rt: Runtime, settings: Settings
) -> None:
    workers, per_worker = 6, 8
    errors: list[BaseException] = []

    def write() -> None:
        mine = open_runtime(settings)
        try:
            for i in range(per_worker):
                s = mine.vault.create_subject(SYSTEM).id
                mine.vault.create_record(SYSTEM, "persons", s,
                                         {"first_name": f"C{i}", "last_name": "W"}, PA)
                if i % 3 == 0:
                    mine.trail.sequence()
        except BaseException as exc:
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=write) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rt.trail.sequence(force_checkpoint=True)
    seen = actions(rt)
    assert seen["record.create"] == seen["subject.create"] == workers * per_worker
    leaf_indexes = sorted(int(r["leaf_index"]) for r in table_rows(rt, "audit_events")  # type: ignore[call-overload]
                          if r["leaf_index"] is not None)
    assert leaf_indexes == list(range(len(leaf_indexes)))
    code, out = _verify(settings)
    assert code == 0, out


def test_retention_prune_keeps_the_log_verifiable(sealed_log: Runtime, settings: Settings,
                                                  clock: FixedClock) -> None:
    code, out, _ = cli(settings, "audit", "prune", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["events"] == 0  # nothing is six years old yet
    assert sealed_log.trail.prune(2191)["events"] == 0
    clock.advance(days=7 * 365)
    result = sealed_log.trail.prune(2191)
    assert result["events"] > 0
    assert len(sealed_log.trail.checkpoints()) >= 4  # checkpoints are never pruned
    code, text = _verify(settings)
    assert code == 0, text
    # Blanking an event that no recorded prune covers is tampering.
    _tamper(sealed_log, "UPDATE audit_events SET event = NULL WHERE leaf_index = :i",
            i=result["pruned_below_index"] + 1)
    code, text = _verify(settings)
    assert code == 1 and "no recorded prune covers it" in text, text


def test_policy_and_datamap_changes_are_audited(rt: Runtime, settings: Settings,
                                                tmp_path: Path) -> None:
    assert actions(rt)["config.changed"] == 1  # first start records what is in force
    open_runtime(settings).close()
    assert actions(rt)["config.changed"] == 1  # unchanged: nothing new
    from importlib import resources

    pack = resources.files("fiduciary.access").joinpath("default_policy.yaml").read_text()
    custom = tmp_path / "policy.yaml"
    custom.write_text(pack.replace("idle_minutes: 15", "idle_minutes: 10"))
    open_runtime(settings.model_copy(update={"policy": custom})).close()
    events = [json.loads(str(r["event"])) for r in table_rows(rt, "audit_events")
              if r["action"] == "config.changed"]
    assert len(events) == 2
    assert events[-1]["details"]["changed"] == ["policy_sha256"]
    assert events[-1]["details"]["policy_source"] == str(custom)


def test_checkpoint_to_a_webhook_witness(sealed_log: Runtime, settings: Settings) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, Any]] = []

    class Witness(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Witness)
    t = threading.Thread(target=server.handle_request)
    t.start()
    try:
        code, out, err = cli(settings, "audit", "checkpoint", "--webhook",
                             f"http://127.0.0.1:{server.server_port}/witness")
    finally:
        t.join(timeout=10)
        server.server_close()
    assert code == 0, out + err
    [cp] = received
    assert cp == sealed_log.trail.latest_checkpoint().as_dict()


def test_follow_streams_new_events(rt: Runtime, client: TestClient) -> None:
    seed(client)
    stop = threading.Event()
    got: list[str] = []
    stream = rt.trail.follow(rt.trail.last_seq(), poll=0.05, stop=stop)

    def consume() -> None:
        for _, event in stream:
            got.append(event["action"])
            if "record.create" in got:
                stop.set()

    t = threading.Thread(target=consume)
    t.start()
    seed(client)
    t.join(timeout=20)
    stop.set()
    assert got[:2] == ["subject.create", "record.create"]
