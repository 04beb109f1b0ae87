"""A disabled staff member's own API keys stop at once, whoever or whatever disabled them
(an administrator, the dormant-account job, SQL), also when the key was just served from the
authentication cache and on every worker; enabling them again makes the keys work again
(they were never revoked). Service keys nobody holds are unaffected."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary.access.authcache import token_digest
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.errors import Unauthenticated
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import users
from tests.conftest import make_staff, table_rows


def _events(rt: Runtime, action: str) -> list[dict[str, Any]]:
    found = [json.loads(str(r["event"])) for r in table_rows(rt, "audit_events")
             if r["event"] is not None]
    return [e for e in found if e["action"] == action]


def _as(client: TestClient, token: str, path: str = "/v1/auth/me") -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def _generation(rt: Runtime) -> int:
    with rt.db.read() as conn:
        return int(conn.execute(sa.text("SELECT generation FROM auth_generation")).scalar_one())


def test_attack_an_insider_disabled_by_an_administrator_loses_their_own_key_at_once(
        rt: Runtime, clock: FixedClock, client: TestClient) -> None:
    """mallory (an administrator) makes herself a key through the API and uses it; another
    administrator disables her through the API: her very next request with the key, just
    served from the cache, is the same 401 as any unknown key."""
    mallory = make_staff(rt, clock, "mallory", ["admin"])
    boss = make_staff(rt, clock, "boss", ["admin"])
    r = mallory.client.post("/v1/admin/apikeys", json={"name": "mallory-script",
                                                        "role": "admin"})
    assert r.status_code == 201, r.text
    key_id, token = r.json()["id"], r.json()["api_key"]
    assert [k.id for k in rt.api_keys.owned_by(rt.users.get("mallory").id)] == [key_id]
    for _ in range(3):
        assert _as(client, token, "/v1/admin/users").status_code == 200
    assert token_digest(token) in rt.api_keys.auth_cache._entries  # just used: cached

    before = _generation(rt)
    r = boss.client.post("/v1/admin/users/mallory/disable")
    assert r.status_code == 200, r.text
    assert _generation(rt) > before  # disabling a user invalidates every cached principal

    refused = _as(client, token, "/v1/admin/users")
    assert refused.status_code == 401
    assert _as(client, token).status_code == 401  # every route, not only the first
    unknown = _as(client, f"fdy_{'0' * 16}_nothing-here", "/v1/admin/users")
    assert unknown.status_code == 401
    # Nothing tells the caller why: the same body as a key that never existed.
    assert refused.json()["error"] == unknown.json()["error"]
    # Stopped, not revoked: the key's own record is unchanged, and the disable names it.
    assert [k.revoked_at for k in rt.api_keys.all() if k.id == key_id] == [None]
    [disabled] = _events(rt, "user.disable")
    assert disabled["details"]["username"] == "mallory"
    assert disabled["details"]["api_keys_stopped"] == [key_id]
    assert disabled["actor"]["name"] == "boss"


def test_enabling_the_holder_again_makes_the_key_work_again(
        rt: Runtime, clock: FixedClock, client: TestClient) -> None:
    make_staff(rt, clock, "adam", ["claims_adjuster"])
    key, token = rt.api_keys.create("adam-script", "claims_adjuster",
                                    owner_id=rt.users.get("adam").id)
    assert _as(client, token, "/v1/datamap").status_code == 200
    rt.users.set_disabled("adam", True)
    assert _as(client, token, "/v1/datamap").status_code == 401
    rt.users.set_disabled("adam", False)
    assert _as(client, token, "/v1/datamap").status_code == 200
    [enabled] = _events(rt, "user.enable")
    assert enabled["details"]["api_keys_resumed"] == [key.id]
    # A revoked key stays revoked whatever happens to its holder.
    rt.api_keys.revoke(key.id)
    rt.users.set_disabled("adam", True)
    rt.users.set_disabled("adam", False)
    assert _as(client, token, "/v1/datamap").status_code == 401
    assert "api_keys_resumed" not in _events(rt, "user.enable")[-1]["details"]


def test_attack_a_dormant_accounts_key_stops_when_the_job_disables_the_account(
        rt: Runtime, clock: FixedClock, client: TestClient) -> None:
    """idle never logs in again but their key keeps being used (a key's use is not a
    login): when the dormant-account job disables the account, the key is refused."""
    make_staff(rt, clock, "idle", ["claims_adjuster"])
    key, token = rt.api_keys.create("idle-script", "claims_adjuster",
                                    owner_id=rt.users.get("idle").id)
    for _ in range(3):
        clock.advance(days=30)
        assert _as(client, token, "/v1/datamap").status_code == 200
    clock.advance(days=1)
    assert [d.username for d in rt.hr.disable_dormant()] == ["idle"]
    assert _as(client, token, "/v1/datamap").status_code == 401
    [disabled] = _events(rt, "user.disable")
    assert disabled["details"]["reason"] == "dormant"
    assert disabled["details"]["api_keys_stopped"] == [key.id]


def test_a_service_key_nobody_holds_and_a_colleagues_key_keep_working(
        rt: Runtime, clock: FixedClock, client: TestClient, api_key: str) -> None:
    make_staff(rt, clock, "leo", ["claims_adjuster"])
    make_staff(rt, clock, "lea", ["claims_adjuster"])
    _, leos = rt.api_keys.create("leo-script", "claims_adjuster",
                                 owner_id=rt.users.get("leo").id)
    _, leas = rt.api_keys.create("lea-script", "claims_adjuster",
                                 owner_id=rt.users.get("lea").id)
    service = rt.api_keys.authenticate(api_key)
    assert [k.owner_id for k in rt.api_keys.all() if k.id == service.id] == [None]
    rt.users.set_disabled("leo", True)
    assert _as(client, leos, "/v1/datamap").status_code == 401
    assert _as(client, leas, "/v1/datamap").status_code == 200
    assert _as(client, api_key, "/v1/datamap").status_code == 200


def test_a_key_whose_holder_is_gone_or_disabled_behind_the_servers_back_is_refused(
        rt: Runtime, clock: FixedClock) -> None:
    """An administrator's SQL disables the holder; a key names a holder who no longer
    exists: both refused, the first although it was cached."""
    rt.users.create("ghost", ["claims_adjuster"])
    _, orphan = rt.api_keys.create("orphan", "claims_adjuster", owner_id=str(uuid.uuid4()))
    with pytest.raises(Unauthenticated, match="missing, unknown, expired or revoked API key"):
        rt.api_keys.authenticate(orphan)
    _, token = rt.api_keys.create("ghost-script", "claims_adjuster",
                                  owner_id=rt.users.get("ghost").id)
    assert rt.api_keys.authenticate(token).username == "ghost-script"
    with rt.db.write() as conn:
        conn.execute(users.update().where(users.c.username == "ghost")
                     .values(disabled_at=clock.now()))
    with pytest.raises(Unauthenticated, match="missing, unknown, expired or revoked API key"):
        rt.api_keys.authenticate(token)


def test_a_holder_disabled_on_one_worker_is_refused_by_the_other(
        rt: Runtime, settings: Settings, clock: FixedClock) -> None:
    """Two runtimes (two workers' services and caches) on one database, the cache on: the
    key is cached in both; disabling its holder through one stops it on both, and enabling
    through the other makes it work on both."""
    assert settings.auth_cache_seconds > 0
    make_staff(rt, clock, "mallory", ["claims_adjuster"])
    key, token = rt.api_keys.create("mallory-script", "claims_adjuster",
                                    owner_id=rt.users.get("mallory").id)
    other = open_runtime(settings, clock=clock)
    try:
        for worker in (rt, other):
            for _ in range(3):
                assert worker.api_keys.authenticate(token).id == key.id
            assert token_digest(token) in worker.api_keys.auth_cache._entries
        rt.users.set_disabled("mallory", True)
        for worker in (other, rt):
            with pytest.raises(Unauthenticated):
                worker.api_keys.authenticate(token)
        other.users.set_disabled("mallory", False)
        for worker in (rt, other):
            assert worker.api_keys.authenticate(token).id == key.id
    finally:
        other.close()


def test_a_disabled_holders_key_is_listed_as_holder_disabled_not_active(
        rt: Runtime, clock: FixedClock, client: TestClient) -> None:
    """An administrator reviewing keys must not read a stopped key as working, nor miss it:
    the listing says ``holder_disabled`` while its holder is disabled and ``active`` again
    once they are enabled."""
    make_staff(rt, clock, "adam", ["claims_adjuster"])
    boss = make_staff(rt, clock, "boss", ["admin"])
    key, _ = rt.api_keys.create("adam-script", "claims_adjuster",
                                owner_id=rt.users.get("adam").id)

    def listed() -> str:
        r = boss.client.get("/v1/admin/apikeys")
        assert r.status_code == 200, r.text
        return str(next(k["state"] for k in r.json()["items"] if k["id"] == key.id))

    assert listed() == "active"
    rt.users.set_disabled("adam", True)
    assert listed() == "holder_disabled"
    assert [k.state(clock.now()) for k in rt.api_keys.owned_by(rt.users.get("adam").id)] == [
        "holder_disabled"]
    rt.users.set_disabled("adam", False)
    assert listed() == "active"
