"""Fixtures: every storage-touching test runs on SQLite and on a real PostgreSQL 15."""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary.api.app import create_app
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import metadata
from tests.pgserver import PostgresServer

BACKENDS = ["sqlite", "postgresql"]
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'fiduciary.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    # A fresh database per test: isolation without mocking, cheap with fsync off.
    return server.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # Real Argon2id at a lower cost than production, so the suite stays quick.
    # Every staff user of a test logs in from the one test client: the per-client login
    # throttle is tested on its own (tests/test_identity_attacks.py).
    return Settings(data_dir=tmp_path / "data", database_url=database_url,
                    master_key=None, datamap=None, argon2_time_cost=1, argon2_memory_kib=8192,
                    login_rate_per_client=1000, login_rate_global=1000)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 1, 31, 12, 0, tzinfo=UTC))


@pytest.fixture
def rt(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    runtime = open_runtime(settings, create=True, clock=clock)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def api_key(rt: Runtime) -> str:
    return rt.api_keys.create("tests")[1]


@pytest.fixture
def client(rt: Runtime, api_key: str) -> Iterator[TestClient]:
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {api_key}"
        yield c


def table_rows(rt: Runtime, table: str) -> list[dict[str, object]]:
    with rt.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(metadata.tables[table]))]


def b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


STRONG = "Tidal-Marmot-Quarry-81"


@dataclass
class Staff:
    """A logged-in staff user with a TestClient carrying their session."""

    username: str
    client: TestClient
    totp_secret: str
    password: str
    recovery_codes: list[str]


def make_staff(rt: Runtime, clock: FixedClock, username: str, roles: list[str],
               regions: list[str] | None = None, trained: bool = True) -> Staff:
    made = rt.users.create(username, roles, regions or [])
    if trained:  # every course of the catalogue: each data class open to the role
        for course in rt.training.catalogue.courses:
            rt.users.record_training(username, course.id,
                                     clock.now().date() - timedelta(days=10))
    client = TestClient(create_app(rt), raise_server_exceptions=False)
    # The user enrols with the one-time code (choosing the password), then logs in.
    r = client.post("/v1/auth/enrol", json={"username": username,
                                            "enrolment_code": made.enrolment_code,
                                            "password": STRONG})
    assert r.status_code == 200, r.text
    creds = r.json()
    r = client.post("/v1/auth/login", json={
        "username": username, "password": STRONG,
        "totp": pyotp.TOTP(creds["totp_secret"]).at(clock.now())})
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return Staff(username, client, creds["totp_secret"], STRONG, creds["recovery_codes"])


def log_in(staff: Staff, clock: FixedClock) -> None:
    """A new session for ``staff`` (after the clock moved past the idle timeout)."""
    r = staff.client.post("/v1/auth/login", json={
        "username": staff.username, "password": staff.password,
        "totp": pyotp.TOTP(staff.totp_secret).at(clock.now())})
    assert r.status_code == 200, r.text
    staff.client.headers["Authorization"] = f"Bearer {r.json()['token']}"
