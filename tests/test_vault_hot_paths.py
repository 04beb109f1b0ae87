"""The bulk import and search paths made faster for issue 16 behave exactly as before: ids,
rejects, what is stored, what the trail names, and what a search finds, refuses or exposes."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import sqlalchemy as sa

from fiduciary.access import SYSTEM
from fiduciary.crypto.aead import DecryptionError, FieldCipher, new_key
from fiduciary.errors import FieldProblem, IntegrityFailure
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import records
from fiduciary.vault.importer import Importer, ParsedRow
from tests.conftest import table_rows

PA = "policy_administration"
CS = "customer_service"


def person(i: int, **extra: object) -> dict[str, object]:
    return {"first_name": f"Ann{i}", "last_name": f"Lee{i}", "date_of_birth": "1980-02-03",
            "email": f"ann.lee.{i}@example.com", "national_id": f"123-45-{i:04d}",
            "region": "west", **extra}


def run_import(rt: Runtime, rows: list[ParsedRow], batch_size: int = 50, pipeline: bool = False
               ) -> tuple[int, dict[int, list[FieldProblem]]]:
    rejected: dict[int, list[FieldProblem]] = {}
    report = Importer(rt.vault, batch_size=batch_size, pipeline=pipeline).run(
        SYSTEM, "persons", rows, PA, lambda line, problems: rejected.__setitem__(line, problems))
    return report.imported, rejected


@pytest.mark.parametrize("pipeline", [False, True], ids=["inline", "pipelined"])
def test_bulk_import_over_several_batches_stores_good_rows_and_reports_each_bad_one(
        rt: Runtime, pipeline: bool) -> None:
    """Inline, and with sealing in a second process: the same rows stored, the same rejects,
    one import event per batch naming every stored record with its row digest."""
    existing = rt.vault.create_subject(SYSTEM).id
    rows: list[ParsedRow] = [(i, person(i), []) for i in range(1, 121)]
    rows[9] = (10, person(10, email="not an email"), [])
    rows[60] = (61, person(61, shoe_size=44), [])
    rows[99] = (100, {k: v for k, v in person(100).items() if k != "last_name"}, [])
    rows[110] = (111, {"subject_id": existing, **person(111)}, [])
    rows[111] = (112, {"subject_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, **person(112)},
                 [])
    # A cell the reader could not parse: named once, not echoed by validation.
    rows[112] = (113, {k: v for k, v in person(113).items() if k != "date_of_birth"},
                 [FieldProblem("date_of_birth", "not a valid date")])
    imported, rejected = run_import(rt, rows, pipeline=pipeline)
    assert imported == 115
    assert {line: [p.field for p in ps] for line, ps in rejected.items()} == {
        10: ["email"], 61: ["shoe_size"], 100: ["last_name"], 112: ["subject_id"],
        113: ["date_of_birth"]}
    stored = table_rows(rt, "records")
    assert len(stored) == 115
    assert sum(r["subject_id"] == existing for r in stored) == 1
    events = [e for e in table_rows(rt, "audit_events") if e["action"] == "records.import"]
    assert len(events) == 3
    digests: dict[str, object] = {}
    for e in events:
        body = json.loads(str(e["event"])) if isinstance(e["event"], str) else e["event"]
        assert isinstance(body, dict)
        digests.update(body["details"]["row_digests"])
    assert sorted(digests) == sorted(str(r["id"]) for r in stored)
    # Nothing of a rejected row is stored, and no sensitive value in clear anywhere.
    dump = json.dumps([{k: str(v) for k, v in r.items()} for r in stored])
    assert "Ann10" not in dump and "Lee61" not in dump and "Ann100" not in dump
    assert "ann.lee.5@example.com" not in dump and "123-45-0005" not in dump
    # Every good row is found by its value, decrypted, with its time stamps.
    found = rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.77@example.com"}, CS)
    assert [r.data["first_name"] for r in found] == ["Ann77"]
    assert found[0].created_at == rt.vault.clock.now()
    # The existing subject's new record is indexed too, under that subject.
    theirs = rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.111@example.com"}, CS)
    assert [(r.subject_id, r.data["first_name"]) for r in theirs] == [(existing, "Ann111")]


def test_imported_record_ids_are_time_ordered_and_subject_ids_random(rt: Runtime) -> None:
    imported, _ = run_import(rt, [(i, person(i), []) for i in range(1, 31)], batch_size=10)
    assert imported == 30
    with rt.db.read() as conn:
        ids = list(conn.execute(sa.select(records.c.id, records.c.subject_id)))
    assert all(uuid.UUID(r.id).version == 7 for r in ids)
    assert all(uuid.UUID(r.subject_id).version == 4 for r in ids)
    # In import order: the first row's record sorts first (creation order, nothing more).
    first = rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.1@example.com"}, CS)[0]
    last = rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.30@example.com"}, CS)[0]
    assert min(r.id for r in ids) == first.id and max(r.id for r in ids) == last.id


def test_import_event_names_every_field_stored_and_no_value(rt: Runtime) -> None:
    rows: list[ParsedRow] = [(1, person(1), []), (2, person(2, phone="+1 415-555-0100"), [])]
    assert run_import(rt, rows)[0] == 2
    events = [json.loads(str(e["event"])) if isinstance(e["event"], str) else e["event"]
              for e in table_rows(rt, "audit_events")]
    imports = [e for e in events if e["action"] == "records.import"]
    assert len(imports) == 1
    assert set(imports[0]["fields"]) == {*person(1), "phone"}
    assert "ann.lee.1@example.com" not in json.dumps(imports)


def _tamper(rt: Runtime, record_id: str, *fields: str) -> None:
    with rt.db.write() as conn:
        sealed = json.loads(conn.execute(sa.select(records.c.sealed).where(
            records.c.id == record_id)).scalar_one())
        for f in fields:
            blob = bytearray(base64.b64decode(sealed[f]))
            blob[-1] ^= 1
            sealed[f] = base64.b64encode(bytes(blob)).decode()
        conn.execute(records.update().where(records.c.id == record_id)
                     .values(sealed=json.dumps(sealed)))


def test_search_of_a_tampered_record_fails_naming_every_altered_field(rt: Runtime) -> None:
    """An administrator with database access flips bits in two sealed fields: the search that
    reaches the record refuses it, naming both, instead of returning altered data."""
    run_import(rt, [(1, person(1), [])])
    rec = rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.1@example.com"}, CS)[0]
    _tamper(rt, rec.id, "national_id", "first_name")
    with pytest.raises(IntegrityFailure) as failed:
        rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.1@example.com"}, CS)
    assert sorted(p.field for p in failed.value.fields) == ["first_name", "national_id"]


def test_a_sealed_field_from_another_dek_version_does_not_open(rt: Runtime) -> None:
    """A ciphertext whose header claims another data-key version is refused like a forged one."""
    run_import(rt, [(1, person(1), [])])
    rec = rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.1@example.com"}, CS)[0]
    with rt.db.write() as conn:
        sealed = json.loads(conn.execute(sa.select(records.c.sealed).where(
            records.c.id == rec.id)).scalar_one())
        blob = bytearray(base64.b64decode(sealed["last_name"]))
        blob[4] ^= 2  # the DEK version in the header
        sealed["last_name"] = base64.b64encode(bytes(blob)).decode()
        sealed["email"] = "!!not base64 at all"
        conn.execute(records.update().where(records.c.id == rec.id)
                     .values(sealed=json.dumps(sealed)))
    with pytest.raises(IntegrityFailure) as failed:
        rt.vault.get_record(SYSTEM, "persons", rec.id, CS)
    assert sorted(p.field for p in failed.value.fields) == ["email", "last_name"]


def test_decrypt_many_opens_exactly_what_decrypt_opens() -> None:
    """The batched decryption accepts a field only where the one-field path does: a blob moved
    to another field, record, subject or write fails in both."""
    key = new_key()
    mine, theirs = FieldCipher("s-1", key, 1), FieldCipher("s-2", key, 1)
    items = [("email", b'{"v":"a@b.c"}'), ("national_id", b'{"v":"123456789"}')]
    blobs = mine.encrypt_many("persons", "r-1", items, 3)
    sealed = list(zip(("email", "national_id"), blobs, strict=True))
    for version, record in ((3, "r-1"), (2, "r-1"), (3, "r-2")):
        assert mine.decrypt_many("persons", record, sealed, version) == [
            _or_none(mine, "persons", record, f, b, version) for f, b in sealed]
    assert mine.decrypt_many("persons", "r-1", sealed, 3) == [p for _, p in items]
    assert theirs.decrypt_many("persons", "r-1", sealed, 3) == [None, None]
    swapped = [("email", blobs[1]), ("national_id", blobs[0])]
    assert mine.decrypt_many("persons", "r-1", swapped, 3) == [None, None]


def _or_none(cipher: FieldCipher, collection: str, record: str, field: str, blob: bytes,
             version: int) -> bytes | None:
    try:
        return cipher.decrypt(collection, record, field, blob, version)
    except DecryptionError:
        return None


def test_reads_on_the_driver_cursor_return_what_sqlalchemy_returns(rt: Runtime) -> None:
    """The record, search and key reads that skip SQLAlchemy's execution path give the same
    values as SQLAlchemy (timestamps as aware datetimes), honour the search limit, and a
    failing statement raises SQLAlchemy's error, not the driver's."""
    from fiduciary.vault import store

    run_import(rt, [(i, person(i, last_name="Same"), []) for i in range(1, 4)])
    found = rt.vault.search(SYSTEM, "persons", {"email": "ann.lee.2@example.com"}, CS)
    with rt.db.read() as conn:
        fast = store.record_row(conn, "persons", found[0].id)
        slow = conn.execute(store._BY_ID, {"rid": found[0].id, "col": "persons"}).one()
        assert fast is not None and tuple(fast) == tuple(slow)
        assert fast.created_at.utcoffset() is not None and fast.created_at == slow.created_at
        assert store.record_row(conn, "persons", str(uuid.uuid4())) is None
        digest = rt.vault.codec.digest(rt.vault.collection("persons"), "date_of_birth",
                                       "1980-02-03")
        assert len(store.search_rows(conn, "persons", [("date_of_birth", digest)], 2)) == 2
        assert len(store.search_rows(conn, "persons", [("date_of_birth", digest)], 9)) == 3
    with rt.db.write() as conn:  # the locked variant (FOR SHARE on PostgreSQL)
        locked = store.record_row(conn, "persons", found[0].id, lock=True)
        assert locked is not None and tuple(locked) == tuple(slow)
    key = rt.vault.keys.store.get([found[0].subject_id])[found[0].subject_id]
    assert key.subject_id == found[0].subject_id and isinstance(key.wrapped_dek, bytes)
    with pytest.raises(sa.exc.DBAPIError), rt.db.read() as conn:
        store.DriverQuery(sa.select(sa.table("no_such_table", sa.column("x")))).all(conn, {})
