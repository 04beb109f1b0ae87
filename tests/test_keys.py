"""KEK rotation: online, complete, visible in status."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from fiduciary.access import SYSTEM
from fiduciary.config import Settings
from fiduciary.runtime import Runtime, open_runtime
from tests.test_import_export import cli

PA = "policy_administration"


def test_rotation_rewraps_every_key_while_reads_and_writes_continue(
    rt: Runtime, settings: Settings
) -> None:
    records = []
    for i in range(60):
        s = rt.vault.create_subject(SYSTEM).id
        records.append(rt.vault.create_record(
            SYSTEM, "persons", s, {"first_name": f"N{i}", "last_name": "R",
                           "national_id": f"123-45-{1000 + i}"}, PA))
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        # A second "server" with its own keyring view and empty key cache.
        other = open_runtime(settings)
        try:
            i = 0
            while not stop.is_set():
                r = records[i % len(records)]
                other.vault.keys.forget(r.subject_id)
                got = other.vault.get_record(SYSTEM, "persons", r.id, PA)
                assert got.data["national_id"] == r.data["national_id"]
                s = other.vault.create_subject(SYSTEM).id
                other.vault.create_record(SYSTEM, "persons", s,
                                          {"first_name": "W", "last_name": "W"}, PA)
                i += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            other.close()

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        code, out, err = cli(settings, "keys", "rotate", "--batch-size", "7")
        assert code == 0, err
        assert "KEK version 2 active" in out
    finally:
        stop.set()
        worker.join()
    assert errors == []
    code, out, _ = cli(settings, "keys", "status", "--json")
    status = {v["version"]: v for v in json.loads(out)["versions"]}
    assert status[2]["state"] == "active"
    assert status[1]["state"] == "retired"
    assert status[1]["wrapped_keys"] == 0
    total = sum(v["wrapped_keys"] for v in status.values())
    assert status[2]["wrapped_keys"] == total >= 60
    fresh = open_runtime(settings)
    try:
        for r in records[:5]:
            assert fresh.vault.get_record(SYSTEM, "persons", r.id, PA).data == r.data
    finally:
        fresh.close()


def test_apikeys_cli(settings: Settings, rt: Runtime) -> None:
    code, out, _ = cli(settings, "apikeys", "create", "--name", "claims-app", "--json")
    assert code == 0
    created = json.loads(out)
    rt.api_keys.authenticate(created["api_key"])
    code, out, _ = cli(settings, "apikeys", "list", "--json")
    listed = {k["id"]: k for k in json.loads(out)["items"]}
    assert listed[created["id"]]["state"] == "active"
    assert created["api_key"] not in out
    code, _, _ = cli(settings, "apikeys", "revoke", created["id"])
    assert code == 0
    code, out, _ = cli(settings, "apikeys", "list", "--json")
    assert {k["id"]: k for k in json.loads(out)["items"]}[created["id"]]["state"] == "revoked"


def test_a_shared_database_with_a_local_key_store_warns(
        settings: Settings, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fiduciary.keystore"):
        open_runtime(settings, create=True).close()
    warned = [r for r in caplog.records if "FIDUCIARY_KEYSTORE_URL" in r.getMessage()]
    assert bool(warned) == (backend == "postgresql")


def test_keys_left_in_the_database_by_older_stores_move_to_the_key_store(
        settings: Settings) -> None:
    import sqlalchemy as sa

    from fiduciary.crypto.keystore import subject_deks
    from fiduciary.storage.schema import subject_keys

    rt = open_runtime(settings, create=True)
    sid = rt.vault.create_subject(SYSTEM).id
    rec = rt.vault.create_record(SYSTEM, "persons", sid, {
        "first_name": "Ada", "last_name": "Quill", "national_id": "219-09-9999"},
        "policy_administration")
    with rt.vault.keys.store.engine.begin() as conn:  # as an older store kept it
        row = dict(conn.execute(sa.select(subject_deks)).one()._mapping)
        conn.execute(subject_deks.delete())
    with rt.db.write() as conn:
        conn.execute(subject_keys.insert(), [row])
    rt.close()
    rt = open_runtime(settings)
    try:
        assert rt.vault.keys.store.get([sid])[sid].wrapped_dek == row["wrapped_dek"]
        with rt.db.read() as conn:
            assert conn.execute(sa.select(subject_keys)).all() == []
        got = rt.vault.get_record(SYSTEM, "persons", rec.id, "policy_administration")
        assert got.data["national_id"] == "219-09-9999"
    finally:
        rt.close()
