"""The authentication cache (issue 16, target 2): a repeat request is served from memory, and
every change to a key, a user or a session is seen AT ONCE by every worker — shown with two
runtimes on one database (two workers' worth of services) and with two real servers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
import sqlalchemy as sa

from fiduciary.access.authcache import token_digest
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.errors import Unauthenticated
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import users
from tests.conftest import STRONG
from tests.realserver import RealServer, cli


@pytest.fixture
def rt2(rt: Runtime, settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    """A second worker: its own services and caches, the same database and clock."""
    other = open_runtime(settings, clock=clock)
    try:
        yield other
    finally:
        other.close()


def _session(rt: Runtime, clock: FixedClock, username: str, roles: list[str],
             trained: bool = True) -> str:
    made = rt.users.create(username, roles, ["west"])
    if trained:
        for course in rt.training.catalogue.courses:
            rt.users.record_training(username, course.id, clock.now().date() - timedelta(days=3))
    assert made.enrolment_code is not None
    enrolled = rt.users.enrol(username, made.enrolment_code, STRONG)
    return rt.users.login(username, STRONG,
                          totp=pyotp.TOTP(enrolled.totp_secret).at(clock.now())).token


def test_the_cache_keeps_the_tokens_digest_never_the_token(rt: Runtime, clock: FixedClock
                                                            ) -> None:
    _, key = rt.api_keys.create("svc")
    session = _session(rt, clock, "alice", ["claims_adjuster"])
    assert rt.api_keys.authenticate(key).username == "svc"
    assert rt.users.authenticate(session).username == "alice"
    entries = rt.users.auth_cache._entries
    assert set(entries) == {token_digest(key), token_digest(session)}
    kept = repr(list(entries.items()))
    for secret in (key, session, key.split("_", 2)[2], session.removeprefix("fds_")):
        assert secret not in kept
    # A repeat is the same principal, served from memory.
    assert rt.api_keys.authenticate(key) is rt.api_keys.authenticate(key)


def test_a_key_revoked_in_one_worker_is_refused_by_the_other(rt: Runtime, rt2: Runtime
                                                              ) -> None:
    key, token = rt.api_keys.create("svc")
    for worker in (rt, rt2):
        for _ in range(3):  # cached in both
            assert worker.api_keys.authenticate(token).id == key.id
    rt.api_keys.revoke(key.id)
    for worker in (rt2, rt):
        with pytest.raises(Unauthenticated):
            worker.api_keys.authenticate(token)


def test_disable_roles_password_and_logout_in_one_worker_reach_the_other(
        rt: Runtime, rt2: Runtime, clock: FixedClock) -> None:
    alice = _session(rt, clock, "alice", ["claims_adjuster"])
    bob = _session(rt, clock, "bob", ["claims_adjuster"])
    carol = _session(rt, clock, "carol", ["underwriter"])
    for worker in (rt, rt2):
        assert worker.users.authenticate(alice).roles == ("claims_adjuster",)
        worker.users.authenticate(bob)
        worker.users.authenticate(carol)
    rt.users.set_roles("alice", ["call_center_agent"])
    assert rt2.users.authenticate(alice).roles == ("call_center_agent",)
    rt.users.set_disabled("bob", True)
    with pytest.raises(Unauthenticated):
        rt2.users.authenticate(bob)
    who = rt2.users.authenticate(carol)
    rt.users.logout(who, carol)
    with pytest.raises(Unauthenticated):
        rt2.users.authenticate(carol)
    # A password reset ends the user's sessions, wherever they are cached.
    rt2.users.authenticate(alice)
    rt.users.reset_password("alice")
    with pytest.raises(Unauthenticated):
        rt2.users.authenticate(alice)


def test_training_recorded_in_one_worker_opens_the_gate_in_the_other(
        rt: Runtime, rt2: Runtime, clock: FixedClock) -> None:
    token = _session(rt, clock, "dave", ["claims_adjuster"], trained=False)
    assert not rt2.users.authenticate(token).training_current
    for course in rt.training.catalogue.courses:
        rt.users.record_training("dave", course.id, clock.now().date())
    assert rt2.users.authenticate(token).training_current


def test_a_course_expiring_at_midnight_closes_the_gate_of_a_cached_session(
        rt: Runtime, clock: FixedClock) -> None:
    today = clock.now().date()
    made = rt.users.create("erin", ["claims_adjuster"], ["west"])
    for course in rt.training.catalogue.courses:  # valid until tomorrow only
        rt.users.record_training("erin", course.id, today - timedelta(days=300),
                                 expires=today + timedelta(days=1))
    assert made.enrolment_code is not None
    secret = rt.users.enrol("erin", made.enrolment_code, STRONG).totp_secret
    clock.advance(hours=11, minutes=59, seconds=50)  # 23:59:50
    token = rt.users.login("erin", STRONG, totp=pyotp.TOTP(secret).at(clock.now())).token
    assert rt.users.authenticate(token).training_current
    clock.advance(seconds=15)  # 00:00:05, within the cache's 30 s, past midnight
    assert not rt.users.authenticate(token).training_current


def test_a_change_made_directly_in_the_database_is_seen(rt: Runtime, rt2: Runtime,
                                                        clock: FixedClock) -> None:
    """Triggers raise the generation, whatever wrote the row (a DBA, another tool)."""
    token = _session(rt, clock, "frank", ["claims_adjuster"])
    assert rt2.users.authenticate(token).roles == ("claims_adjuster",)
    with rt.db.write() as conn:
        conn.execute(users.update().where(users.c.username == "frank")
                     .values(roles='["underwriter"]'))
    assert rt2.users.authenticate(token).roles == ("underwriter",)


def test_the_idle_timeout_is_enforced_from_the_cache_and_counts_every_worker(
        rt: Runtime, rt2: Runtime, clock: FixedClock) -> None:
    idle = timedelta(minutes=rt.users.settings.idle_minutes)
    token = _session(rt, clock, "gina", ["claims_adjuster"])
    rt.users.authenticate(token)
    rt2.users.authenticate(token)
    # Active on the first worker only: the second's cached entry looks idle, but the
    # database knows better, so the session goes on.
    clock.advance(seconds=(idle - timedelta(minutes=1)).total_seconds())
    rt.users.authenticate(token)
    clock.advance(minutes=2)
    assert rt2.users.authenticate(token).username == "gina"
    # Idle everywhere: refused on both, cached or not.
    clock.advance(seconds=idle.total_seconds() + 1)
    for worker in (rt, rt2):
        with pytest.raises(Unauthenticated):
            worker.users.authenticate(token)


def test_attack_a_revoked_key_hammered_on_two_workers_never_passes_after_the_revoke(
        rt: Runtime, rt2: Runtime) -> None:
    """Threads use the key on both workers in a tight loop while it is revoked: no
    authentication that began after the revocation returned succeeds."""
    key, token = rt.api_keys.create("stolen")
    revoked_at: list[float] = []
    late: list[float] = []
    done = threading.Event()

    def hammer(worker: Runtime) -> None:
        while not done.is_set():
            began = time.perf_counter()
            try:
                worker.api_keys.authenticate(token)
            except Unauthenticated:
                continue
            if revoked_at and began > revoked_at[0]:
                late.append(began - revoked_at[0])

    threads = [threading.Thread(target=hammer, args=(w,)) for w in (rt, rt2, rt, rt2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    rt.api_keys.revoke(key.id)
    revoked_at.append(time.perf_counter())
    time.sleep(0.5)
    done.set()
    for t in threads:
        t.join()
    assert late == []
    for worker in (rt, rt2):
        with pytest.raises(Unauthenticated):
            worker.api_keys.authenticate(token)


def _me(client: httpx.Client, token: str) -> int:
    return client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def test_attack_two_real_servers_refuse_a_revoked_key_from_the_moment_it_is_revoked(
        tmp_path: Path, database_url: str) -> None:
    """Two ``fiduciary serve`` processes on one database; the key is hammered on both while
    an administrator revokes it on the first: nothing sent after the revocation's answer
    is accepted, by either."""
    data = tmp_path / "data"
    env = {**os.environ, "FIDUCIARY_DATABASE_URL": database_url,
           "FIDUCIARY_LOG_LEVEL": "warning"}
    made = cli(env, "init", "--data-dir", str(data))
    key = cli(env, "apikeys", "create", "--name", "stolen", "--data-dir", str(data))
    servers = [RealServer(data, env).start(), RealServer(data, env).start()]
    revoked_at: list[float] = []
    late: list[tuple[str, float]] = []
    accepted = {s.base: 0 for s in servers}
    done = threading.Event()

    def hammer(base: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            while not done.is_set():
                began = time.perf_counter()
                if _me(c, key["api_key"]) == 200:
                    accepted[base] += 1
                    if revoked_at and began > revoked_at[0]:
                        late.append((base, began - revoked_at[0]))

    try:
        threads = [threading.Thread(target=hammer, args=(s.base,)) for s in servers]
        for t in threads:
            t.start()
        time.sleep(1.5)
        with httpx.Client(base_url=servers[0].base, timeout=30) as admin:
            r = admin.delete(f"/v1/admin/apikeys/{key['id']}",
                             headers={"Authorization": f"Bearer {made['admin_api_key']}"})
            assert r.status_code == 204, r.text
        revoked_at.append(time.perf_counter())
        time.sleep(1.5)
        done.set()
        for t in threads:
            t.join()
        assert all(n > 0 for n in accepted.values()), accepted  # both served the key before
        assert late == []
        for s in servers:
            with httpx.Client(base_url=s.base) as c:
                assert _me(c, key["api_key"]) == 401
    finally:
        for s in servers:
            s.stop()


def test_a_role_change_on_one_real_server_is_seen_by_the_other(
        tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "FIDUCIARY_DATABASE_URL": database_url,
           "FIDUCIARY_LOG_LEVEL": "warning"}
    cli(env, "init", "--data-dir", str(data))
    key = cli(env, "apikeys", "create", "--name", "svc", "--role", "service",
              "--data-dir", str(data))
    servers = [RealServer(data, env).start(), RealServer(data, env).start()]
    try:
        auth = {"Authorization": f"Bearer {key['api_key']}"}
        for s in servers:
            assert httpx.get(f"{s.base}/v1/auth/me", headers=auth).json()["roles"] == [
                "service"]
        # An operator changes the key's role behind both servers (a third process).
        url = Settings(data_dir=data, database_url=database_url).resolved_database_url()
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE api_keys SET role = 'actuary' WHERE id = :k"),
                         {"k": key["id"]})
        engine.dispose()
        for s in servers:
            assert httpx.get(f"{s.base}/v1/auth/me", headers=auth).json()["roles"] == [
                "actuary"]
    finally:
        for s in servers:
            s.stop()
