"""Issue 16, target 3: the fast canonical JSON is byte for byte RFC 8785 (the ``rfc8785``
package) for every event Fiduciary stores, falls back to it for anything else, and the fast
verification of stored events reports a tampered trail exactly as the full check does."""

from __future__ import annotations

import json
import random
import sys
from datetime import timedelta
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.api.app import create_app
from fiduciary.audit import merkle
from fiduciary.audit.jcs import (
    canonical,
    canonical_ids,
    canonical_reference,
    stored_is_canonical,
)
from fiduciary.audit.trail import public_key_bytes
from fiduciary.audit.verify import verify
from fiduciary.clock import FixedClock, iso
from fiduciary.errors import VerificationFailed
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import audit_events, audit_nodes
from tests.conftest import make_staff

PA = "policy_administration"


def _client(rt: Runtime, role: str, name: str) -> TestClient:
    _, token = rt.api_keys.create(name, role=role)
    c = TestClient(create_app(rt), raise_server_exceptions=False)
    c.headers["Authorization"] = f"Bearer {token}"
    return c


def _busy_day(rt: Runtime, client: TestClient, clock: FixedClock) -> None:
    """A trail made the way users make it: records, reads, refusals, searches, consents,
    a DSR, monitoring and its alerts, an incident, audit reads; names with accents."""
    subjects = []
    for first, last, ssn in (("Inès", "Moreau", "078-05-1120"), ("Zoë", "Ærøskøbing", None),
                             ("Łukasz", "Żółć", "219-09-9999"), ("Ann", "Lee", None)):
        s = client.post("/v1/subjects").json()["id"]
        data = {"first_name": first, "last_name": last, "email": f"{s[:8]}@example.org"}
        if ssn:
            data["national_id"] = ssn
        r = client.post(f"/v1/collections/persons/records?purpose={PA}",
                        json={"subject_id": s, "data": data})
        assert r.status_code == 201, r.text
        rec = r.json()["id"]
        subjects.append((s, rec))
        assert client.get(f"/v1/collections/persons/records/{rec}?purpose={PA}"
                          ).status_code == 200
        assert client.post(f"/v1/collections/persons/search?purpose={PA}",
                           json={"where": {"last_name": last}}).status_code == 200
        client.patch(f"/v1/collections/persons/records/{rec}?purpose={PA}",
                     json={"data": {"email": f"new-{s[:8]}@example.org"}})
        client.get(f"/v1/subjects/{s}/records?purpose={PA}")
    agent = make_staff(rt, clock, "agent.emile", ["call_center_agent"], regions=["east"])
    for _, rec in subjects:  # refused reads and searches
        agent.client.get(f"/v1/collections/persons/records/{rec}?purpose=customer_service")
    agent.client.post("/v1/collections/persons/search?purpose=customer_service",
                      json={"where": {"national_id": "078-05-1120"}})
    # A key's name is the actor's name in its events: accents, a dash, a CJK character.
    dpo = _client(rt, "dpo", "Bureau du DPO — Zoë 中")
    r = dpo.post("/v1/dsr", json={"subject_id": subjects[0][0], "type": "access",
                                  "regime": "gdpr", "received_at": iso(clock.now())})
    assert r.status_code == 201, r.text
    dpo.post(f"/v1/dsr/{r.json()['id']}/verify", json={"method": "id_document"})
    rt.monitor.run_once()
    auditor = make_staff(rt, clock, "aud", ["compliance_officer"]).client
    assert auditor.get("/v1/audit/events?limit=5").status_code == 200
    auditor.get(f"/v1/audit/events?subject_id={subjects[1][0]}")
    rt.incidents.create(SYSTEM, {"title": "Laptop lost — « données »", "kind": "lost_device",
                                 "discovered_at": clock.now() - timedelta(hours=1)})
    clock.advance(minutes=5)
    rt.trail.sequence(force_checkpoint=True)


def test_every_stored_event_is_rfc8785_both_ways(rt: Runtime, client: TestClient,
                                                  clock: FixedClock) -> None:
    _busy_day(rt, client, clock)
    with rt.db.read() as conn:
        stored = [str(t) for t in conn.execute(sa.select(audit_events.c.event)).scalars()]
    actions = {json.loads(t)["action"] for t in stored}
    # The trail holds the kinds of event the issue names, not just record reads.
    assert {"record.read", "record.search", "record.create", "dsr.create", "audit.read",
            "audit.checkpoint"} <= actions, actions
    assert any("Zoë 中" in t for t in stored)
    assert len(stored) > 40
    for text in stored:
        event = json.loads(text)
        assert canonical(event) == canonical_reference(event) == text.encode(), text
        # The fast verifier accepts it, or leaves it to the full check (non-ASCII).
        fast = stored_is_canonical(text.encode())
        assert fast == event if text.isascii() else fast in (None, event)
    # The batch proof verification runs proves every one (the reference agreed above).
    texts = [t.encode() for t in stored]
    assert canonical_ids(texts) == [json.loads(t)["id"] for t in texts]


_ALPHABET = ["a", "Z", "0", " ", '"', "\\", "/", "\b", "\t", "\n", "\f", "\r", "\x00",
             "\x1f", "\x7f", "é", "ß", "\u2028", "\u2029", "\ue000", "\uffff", "€", "中"]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(8)))
    if kind == 1:
        return rng.choice([0, -1, 1, 2**31, -(2**53 - 1), 2**53 - 1, rng.randrange(10**6)])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice(["record.read", "", "x"])
    if kind in (4, 5):
        return {"".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(4))) + str(i):
                _random_value(rng, depth + 1) for i in range(rng.randrange(5))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_random_plain_values_match_the_reference() -> None:
    """Non-ASCII, every escape, control characters, the I-JSON edges, nesting."""
    rng = random.Random(8785)
    for _ in range(3000):
        value = {"k": _random_value(rng), "z": _random_value(rng), "é": _random_value(rng)}
        expected = rfc8785.dumps(value)
        assert canonical(value) == expected
        assert stored_is_canonical(expected) in (None, json.loads(expected))


@pytest.mark.parametrize("value", [
    {"score": 1.0}, {"score": 0.1}, {"n": [1e21, 1e-7, -0.0, 1e16, 123.456]},
    {"deep": {"deeper": [{"x": 2.5}]}},
    # Sorted by UTF-16 code units: U+1F600 (a surrogate pair) before U+E000.
    {"\ue000": 1, "\U0001f600": 2, "a": 3},
    {"emoji": "smile \U0001f600"},
])
def test_floats_and_astral_characters_take_the_reference_path(value: dict[str, Any]) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("value", [{"big": 2**53}, {"small": -(2**53)}, {"n": [2**64]}])
def test_integers_beyond_i_json_are_refused_as_before(value: dict[str, Any]) -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps(value)
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical(value)


@pytest.mark.parametrize("text", [
    b'{"a":1, "b":2}',                  # whitespace
    b'{"b":1,"a":2}',                   # unsorted
    b'{"a":1.0}',                       # RFC 8785 writes 1
    b'{"a":1e+16}', b'{"a":-0.0}', b'{"a":[1,2.50]}',
    b'{"a":1,"a":2}',                   # duplicate key
    b'{"a":"\\u00e9"}',                 # an escape RFC 8785 does not write
    b'{"a":"\\/"}', b'{"a":"\\u001F"}',
    b'{"a":9007199254740992}',          # beyond I-JSON
    b'["not","an","object"]', b'{"a":', b"",
])
def test_the_fast_proof_never_accepts_a_non_canonical_text(text: bytes) -> None:
    assert stored_is_canonical(text) is None
    # Nor the batch proof, whether the batch around it is plain or not.
    good = b'{"id":"e1","n":-3}', b'{"id":"e2","s":"x"}'
    assert canonical_ids([good[1], text, good[1]]) == ["e2", None, "e2"]
    assert canonical_ids([good[0], text, good[1]]) == ["e1", None, "e2"]


def test_the_batch_proof_leaves_a_float_or_a_character_beyond_the_bmp_to_the_full_check(
) -> None:
    """Both get None (the caller settles them with the reference encoder); the rest of the
    batch, a character beyond ASCII within the BMP included, is still proved."""
    texts = [b'{"id":"a","x":1}', '{"id":"b","x":"Zo\u00eb \u4e2d"}'.encode(),
             b'{"id":"c","x":1.5}', b'{"id":"d","x":"1.5,"}',
             '{"id":"e","x":"smile \U0001f600"}'.encode(), '{"\U0001f600":1,"id":"f"}'.encode()]
    assert canonical_ids(texts) == ["a", "b", None, "d", None, None]


# -- verification: the fast path reports what the full check reported --------------------------

def _sealed(rt: Runtime, client: TestClient, clock: FixedClock) -> tuple[bytes, int]:
    """A verified trail, and the leaf index of an ASCII event some way into it."""
    _busy_day(rt, client, clock)
    key = public_key_bytes(rt.trail.key)
    whole = verify(rt.db, key)
    assert whole.size > 40
    # Checked on two cores (this process and a helper), the trail verifies too (the app's
    # background work may have sequenced an event since).
    assert verify(rt.db, key, workers=2, split_min=1).size >= whole.size
    with rt.db.read() as conn:
        rows = conn.execute(sa.select(audit_events.c.leaf_index, audit_events.c.event)
                            .where(audit_events.c.leaf_index >= 30)
                            .order_by(audit_events.c.leaf_index)).all()
    return key, next(r.leaf_index for r in rows if r.event.isascii()
                     and '"decision":"allow"' in r.event)


def _row(rt: Runtime, index: int) -> Any:
    with rt.db.read() as conn:
        return conn.execute(sa.select(audit_events).where(audit_events.c.leaf_index == index)
                            ).one()


def _failure(rt: Runtime, key: bytes) -> str:
    """What verification reports, the same in one pass and split over two processes (the
    fault in this process's span or in the helper's)."""
    reports = []
    for workers in (1, 2):
        with pytest.raises(VerificationFailed) as caught:
            verify(rt.db, key, workers=workers, split_min=1)
        reports.append(str(caught.value))
    assert reports[0] == reports[1]
    return reports[0]


def _set_event(rt: Runtime, index: int, text: str, also_leaf: bool = False) -> None:
    with rt.db.write() as conn:
        conn.execute(audit_events.update().where(audit_events.c.leaf_index == index)
                     .values(event=text))
        if also_leaf:  # an intruder who also rewrites the recorded leaf hash
            conn.execute(audit_nodes.update().where(audit_nodes.c.level == 0,
                                                    audit_nodes.c["index"] == index)
                         .values(hash=merkle.leaf_hash(text.encode())))


def test_a_changed_byte_is_reported_as_before(rt: Runtime, client: TestClient,
                                               clock: FixedClock) -> None:
    key, i = _sealed(rt, client, clock)
    row = _row(rt, i)
    _set_event(rt, i, row.event.replace('"id":"', '"id":"0', 1))
    assert _failure(rt, key) == (
        f"event at leaf index {i} (id {row.event_id}) does not match the leaf hash recorded "
        "when it was sequenced: edited, swapped or inserted")
    _set_event(rt, i, row.event[:-1])
    assert _failure(rt, key) == f"event at leaf index {i} (id {row.event_id}) is not valid JSON"


@pytest.mark.parametrize("edit", ["spaces", "float", "escape", "duplicate"])
def test_a_non_canonical_rewrite_is_reported_as_before(edit: str, rt: Runtime,
                                                       client: TestClient,
                                                       clock: FixedClock) -> None:
    """Even with the recorded leaf hash rewritten to match, a text that is not its own RFC
    8785 form is named, as the full check always named it."""
    key, i = _sealed(rt, client, clock)
    row = _row(rt, i)
    text = {"spaces": row.event.replace(",", ", ", 1),
            "float": row.event.replace('{"action"', '{"a":1.0,"action"', 1),
            "escape": row.event.replace('"decision":"a', '"decision":"\\u0061', 1),
            "duplicate": row.event.replace('"action":', '"action":"x","action":', 1)}[edit]
    assert text != row.event
    _set_event(rt, i, text, also_leaf=True)
    assert _failure(rt, key) == (
        f"event at leaf index {i} (id {row.event_id}) was altered: it is not the canonical "
        "JSON it was stored as")


def test_a_deleted_event_and_a_reordered_pair_are_reported_as_before(
    rt: Runtime, client: TestClient, clock: FixedClock
) -> None:
    key, i = _sealed(rt, client, clock)
    first, second = _row(rt, i), _row(rt, i + 1)
    with rt.db.write() as conn:
        conn.execute(audit_events.update().where(audit_events.c.seq == first.seq)
                     .values(leaf_index=-1))
        conn.execute(audit_events.update().where(audit_events.c.seq == second.seq)
                     .values(leaf_index=i))
        conn.execute(audit_events.update().where(audit_events.c.seq == first.seq)
                     .values(leaf_index=i + 1))
    assert _failure(rt, key) == (
        f"event at leaf index {i} (id {second.event_id}) does not match the leaf hash "
        "recorded when it was sequenced: edited, swapped or inserted")
    with rt.db.write() as conn:
        conn.execute(audit_events.delete().where(audit_events.c.seq == second.seq))
    assert _failure(rt, key) == (
        f"event at leaf index {i} is missing (the next stored event has index {i + 1}, "
        f"id {first.event_id}): events were deleted or re-numbered")


def test_an_event_edited_deep_in_a_long_trail_is_found(rt: Runtime) -> None:
    """Several read chunks: the event is named wherever it sits."""
    events = [rt.audit.event(SYSTEM, "record.read", record_ids=[f"r{i}"],
                             details={"n": i, "name": "Zoë" if i % 7 == 0 else "Zoe"})
              for i in range(25_000)]
    with rt.db.write() as conn:
        rt.audit.append_many(conn, events)
    while rt.trail.sequence(batch_size=10_000) < rt.audit.count():
        pass
    key = public_key_bytes(rt.trail.key)
    done = verify(rt.db, key)
    assert done.size >= 25_000 + done.checkpoints
    assert verify(rt.db, key, workers=3, split_min=1) == done
    row = _row(rt, 23_456)
    _set_event(rt, 23_456, row.event.replace('"record.read"', '"record.reed"'))
    assert _failure(rt, key).startswith(f"event at leaf index 23456 (id {row.event_id}) does "
                                        "not match the leaf hash")


def test_a_helper_that_cannot_run_leaves_the_trail_to_one_pass(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A helper process that fails to start is no verdict on the trail: one pass answers."""
    events = [rt.audit.event(SYSTEM, "record.read", record_ids=[f"r{i}"]) for i in range(300)]
    with rt.db.write() as conn:
        rt.audit.append_many(conn, events)
    rt.trail.sequence()
    key = public_key_bytes(rt.trail.key)
    whole = verify(rt.db, key)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    assert verify(rt.db, key, workers=2, split_min=1) == whole
    assert "verifying in one process" in caplog.text
