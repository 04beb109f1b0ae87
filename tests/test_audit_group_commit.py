"""Issue 16, target 3: the events of concurrent reads are committed together (group commit),
and still each read returns only once its own event is durable; a failure fails every read
of the group and stores none of their events."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from fiduciary.access import SYSTEM
from fiduciary.audit.trail import public_key_bytes
from fiduciary.audit.verify import verify
from fiduciary.runtime import Runtime
from fiduciary.storage import Database
from fiduciary.storage.schema import audit_events

PA = "policy_administration"
READERS = 12


def _records(rt: Runtime, n: int) -> list[str]:
    out = []
    for i in range(n):
        s = rt.vault.create_subject(SYSTEM).id
        out.append(rt.vault.create_record(SYSTEM, "persons", s, {
            "first_name": f"Reader{i}", "last_name": "Group"}, PA).id)
    return out


def _read_events(db: Database, record_id: str) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(
            audit_events.c.record_ids == record_id,
            audit_events.c.action == "record.read")).scalar_one())


@contextmanager
def _write_commits(rt: Runtime) -> Iterator[list[int]]:
    """Counts the write transactions committed on the runtime's engine."""
    seen: list[int] = []

    def on_commit(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("fiduciary_write"):
            seen.append(1)

    event.listen(rt.db.engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(rt.db.engine, "commit", on_commit)


@contextmanager
def _audit_writes_held(rt: Runtime) -> Iterator[None]:
    """Holds back every insert into the trail (another writer's long transaction), so the
    reads started meanwhile pile up behind the first one's commit."""
    with rt.db.write() as conn:
        if not rt.db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already holds every writer
            conn.execute(sa.text("LOCK TABLE audit_events IN EXCLUSIVE MODE"))
        yield


def _wait_for_queue(rt: Runtime, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(rt.audit._pending) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def _start_readers(rt: Runtime, ids: list[str], witness: Database,
                   results: dict[str, Any]) -> list[threading.Thread]:
    """Each reader records, at the moment its read returns, how many events of its read
    another connection sees (1 = committed before the answer), or the error it got."""

    def read(record_id: str) -> None:
        try:
            rt.vault.get_record(SYSTEM, "persons", record_id, PA)
            results[record_id] = _read_events(witness, record_id)
        except Exception as exc:
            results[record_id] = exc

    threads = [threading.Thread(target=read, args=(r,)) for r in ids]
    for t in threads:
        t.start()
    return threads


@pytest.fixture
def witness(rt: Runtime) -> Iterator[Database]:
    """Connections of their own, as another server process would have."""
    db = Database(rt.db.url)
    try:
        yield db
    finally:
        db.dispose()


def _trail_verifies(rt: Runtime) -> None:
    rt.trail.sequence(force_checkpoint=True)
    rt.trail.sequence()  # the checkpoint's own event
    with rt.db.read() as conn:
        leaves = conn.execute(sa.select(audit_events.c.leaf_index)
                              .order_by(audit_events.c.leaf_index)).scalars().all()
    assert leaves == list(range(len(leaves)))  # contiguous, nothing left unsequenced
    assert verify(rt.db, public_key_bytes(rt.trail.key)).size == len(leaves)


@pytest.mark.parametrize("grouped", [True, False])
def test_concurrent_reads_share_commits_and_each_returns_after_its_event(
    grouped: bool, rt: Runtime, witness: Database
) -> None:
    ids = _records(rt, READERS)
    rt.audit.group_commit = grouped
    results: dict[str, Any] = {}
    with _write_commits(rt) as commits:
        with _audit_writes_held(rt):
            threads = _start_readers(rt, ids, witness, results)
            if grouped:
                _wait_for_queue(rt, READERS - 1)
            else:
                time.sleep(0.5)
            assert results == {}  # nobody has an answer while its event cannot commit
        for t in threads:
            t.join()
    # Every read saw its own event committed, from another connection, when it returned.
    assert results == {r: 1 for r in ids}
    writes = len(commits) - 1  # the held-back writer's own commit
    if grouped:
        # The first read's transaction, then one for everybody who queued behind it.
        assert writes <= 3, writes
    else:
        assert writes == READERS
    _trail_verifies(rt)


def _poison(rt: Runtime, record_id: str) -> None:
    """The trail refuses the event of one read (a full disk, a constraint, a bug)."""
    with rt.db.write() as conn:
        if rt.db.is_sqlite:
            conn.execute(sa.text(
                "CREATE TRIGGER poison BEFORE INSERT ON audit_events "
                f"WHEN NEW.record_ids = '{record_id}' "
                "BEGIN SELECT RAISE(ABORT, 'audit store refused the event'); END"))
        else:
            conn.execute(sa.text(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.record_ids = '{record_id}' THEN "
                "RAISE EXCEPTION 'audit store refused the event'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(sa.text("CREATE TRIGGER poison BEFORE INSERT ON audit_events "
                                 "FOR EACH ROW EXECUTE FUNCTION poison()"))


def test_a_failed_group_fails_every_read_in_it_and_stores_none(
    rt: Runtime, witness: Database
) -> None:
    ids = _records(rt, READERS)
    poisoned = ids[-1]
    _poison(rt, poisoned)
    results: dict[str, Any] = {}
    with _audit_writes_held(rt):
        threads = _start_readers(rt, ids[:-1], witness, results)
        _wait_for_queue(rt, READERS - 2)
        # The poisoned read queues last: it shares the second transaction with the rest.
        threads += _start_readers(rt, [poisoned], witness, results)
        _wait_for_queue(rt, READERS - 1)
    for t in threads:
        t.join()
    failed = [r for r, v in results.items() if isinstance(v, Exception)]
    assert poisoned in failed
    assert len(failed) >= READERS - 2  # all but whoever committed first
    for r in failed:
        assert "audit store refused the event" in str(results[r])
        assert _read_events(witness, r) == 0  # no half-written group
    for r in set(ids) - set(failed):
        assert results[r] == 1
    _trail_verifies(rt)
    # Reads work again once the trail accepts events.
    rt.audit.append_committed(rt.audit.event(SYSTEM, "record.read", record_ids=["after"]))
    assert _read_events(witness, "after") == 1


def test_event_times_are_stored_as_sqlalchemy_writes_them(rt: Runtime) -> None:
    """Appends go through the driver: times on a whole second must still compare with the
    trail's time index as every other timestamp column does (SQLite stores text)."""
    rt.audit.append_committed(rt.audit.event(SYSTEM, "record.read", record_ids=["on-the-second"]))
    now = rt.clock.now()
    assert now.microsecond == 0
    with rt.db.read() as conn:
        found = conn.execute(sa.select(audit_events.c.at).where(
            audit_events.c.record_ids == "on-the-second", audit_events.c.at >= now)).scalar()
    assert found == now
