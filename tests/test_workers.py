"""``fiduciary serve --workers N`` (issue 16, target 7): every worker serves requests, exactly
one runs the background work (audit sequencer and checkpoints, schedules), elected through a
lease in the database, and another takes over within the lease when it dies."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.runtime import BACKGROUND_LEASE, Runtime, open_runtime
from fiduciary.storage.lease import Lease
from tests.realserver import RealServer, cli

LEASE = 3.0


@pytest.fixture
def workers(settings: Settings, clock: FixedClock) -> Iterator[list[Runtime]]:
    """Two workers' runtimes on one database, with a short lease."""
    quick = settings.model_copy(update={"lease_seconds": LEASE})
    first = open_runtime(quick, create=True, clock=clock)
    second = open_runtime(quick, clock=clock)
    try:
        yield [first, second]
    finally:
        second.close()
        first.close()


def _until(probe: object, timeout: float) -> float:
    """Seconds until ``probe()`` is true; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def test_of_two_workers_exactly_one_runs_the_background_work(workers: list[Runtime]) -> None:
    first, second = workers
    first.start()
    second.start()
    assert [w.leading for w in workers] == [True, False]
    assert first.running and second.running  # the second waits for the lease
    names = {t.name for t in first._threads}
    assert {"audit-sequencer", "retention", "monitor", "compliance-check"} <= names
    assert second._threads == []
    time.sleep(LEASE * 1.5)  # renewals keep it where it is
    assert [w.leading for w in workers] == [True, False]
    # A clean stop hands the lease over at once (the successor's next try).
    first.stop()
    _until(lambda: second.leading, LEASE / 3 + 2)
    assert not first.leading


def test_a_lease_held_by_a_dead_process_is_taken_once_it_expires(workers: list[Runtime]
                                                                 ) -> None:
    first, second = workers
    dead = Lease(first.db, BACKGROUND_LEASE, LEASE, holder="elsewhere:1:dead")
    assert dead.acquire() is not None
    second.start()
    assert not second.leading  # held, not yet expired
    took = _until(lambda: second.leading, LEASE + LEASE / 3 + 2)
    assert took <= LEASE + LEASE / 3 + 2
    state = dead.state()
    assert state is not None and state.holder != "elsewhere:1:dead"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cmdline = (stat.parent / "cmdline").read_bytes() if stat.parent.exists() else b""
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            out.add(int(stat.parent.name))
    return out


def _holder_pid(engine: sa.Engine) -> int | None:
    with engine.connect() as conn:
        holder = conn.execute(sa.text("SELECT holder FROM leases WHERE name = :n"),
                              {"n": BACKGROUND_LEASE}).scalar()
    return int(holder.split(":")[1]) if holder else None


def _unsequenced(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM audit_events WHERE leaf_index IS NULL")).scalar_one())


def test_serve_with_two_workers_serves_on_both_and_survives_the_leaders_death(
        tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "FIDUCIARY_DATABASE_URL": database_url,
           "FIDUCIARY_LOG_LEVEL": "warning", "FIDUCIARY_LEASE_SECONDS": str(LEASE)}
    made = cli(env, "init", "--data-dir", str(data))
    server = RealServer(data, env, "--workers", "2").start()
    assert server._proc is not None
    url = Settings(data_dir=data, database_url=database_url).resolved_database_url()
    engine = sa.create_engine(url)
    try:
        _until(lambda: len(_children(server._proc.pid)) == 2  # type: ignore[union-attr]
               and _holder_pid(engine) is not None, 60)
        pids = _children(server._proc.pid)
        leader = _holder_pid(engine)
        assert leader in pids
        # Every worker answers: a new connection per request lands on either.
        before = {p: _cpu_seconds(p) for p in pids}
        auth = {"Authorization": f"Bearer {made['api_key']}"}
        codes = [httpx.get(f"{server.base}/v1/auth/me", headers=auth).status_code
                 for _ in range(300)]
        assert set(codes) == {200}
        assert _children(server._proc.pid) == pids  # none was lost or restarted
        used = {p: _cpu_seconds(p) - before[p] for p in pids}
        assert all(s > 0.1 for s in used.values()), used
        # The leader dies without a word; the survivor takes the lease within its term and
        # the audit trail goes on being sequenced.
        os.kill(leader, signal.SIGKILL)
        killed = time.monotonic()
        _until(lambda: _holder_pid(engine) not in (None, leader), LEASE + LEASE / 3 + 5)
        assert time.monotonic() - killed <= LEASE + LEASE / 3 + 5
        # The survivor, or the worker uvicorn's supervisor started in the dead one's place:
        # either way a live worker of this server, never the dead one.
        holder = _holder_pid(engine)
        assert holder != leader
        assert holder in pids or holder in _children(server._proc.pid)  # type: ignore[union-attr]
        cli(env, "apikeys", "create", "--name", "after-takeover", "--data-dir", str(data))
        _until(lambda: _unsequenced(engine) == 0, 15)
        r = httpx.get(f"{server.base}/v1/auth/me", headers=auth)
        assert r.status_code == 200
    finally:
        engine.dispose()
        output = server.stop()
    assert b"Traceback" not in output
