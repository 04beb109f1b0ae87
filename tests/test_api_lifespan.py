"""The API's lifespan runs the runtime's background work: in-process under TestClient, and in a
real ``uvicorn fiduciary.api.app:create_app --factory`` over an initialised data directory —
sequencer, retention schedule, and a last checkpoint at shutdown, with no manual sequencing.
And the request context (X-Request-ID) reaches the audit events of the endpoint's thread."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fiduciary.api.app import create_app
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import audit_checkpoints, audit_events
from tests.conftest import table_rows
from tests.pgserver import _free_port

BIN = Path(sys.executable).parent


def test_testclient_lifespan_starts_and_stops_the_background_work(rt: Runtime) -> None:
    assert not rt.running
    with TestClient(create_app(rt)) as c:
        assert rt.running
        assert c.get("/healthz").status_code == 200
    assert not rt.running
    assert rt.trail.latest_checkpoint().size > 0  # stopping signed a last checkpoint


def test_request_id_is_echoed_and_recorded_by_the_endpoints_audit_event(
    client: TestClient, rt: Runtime
) -> None:
    r = client.post("/v1/subjects", headers={"X-Request-ID": "req-42.a_b"})
    assert r.status_code == 201
    assert r.headers["X-Request-ID"] == "req-42.a_b"
    assert r.headers["Cache-Control"] == "no-store"
    [event] = [json.loads(str(e["event"])) for e in table_rows(rt, "audit_events")
               if e["action"] == "subject.create"]
    assert event["request_id"] == "req-42.a_b" and event["client"] == "testclient"
    for bad in ("a b", "x" * 65, "<script>"):
        r = client.get("/v1/auth/me", headers={"X-Request-ID": bad})
        assert len(r.headers["X-Request-ID"]) == 32 and r.headers["X-Request-ID"] != bad
    r = client.get("/v1/auth/me", headers={"Authorization": "Bearer fdy_unknown"})
    assert r.status_code == 401 and r.headers["Cache-Control"] == "no-store"


def test_a_request_costs_one_thread_pool_hop(client: TestClient, rt: Runtime,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Authentication, the endpoint and the check of its return value share one worker
    thread: dependencies are async, and routes are OneHopRoutes."""
    hops: list[object] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    subject = client.post("/v1/subjects").json()["id"]
    auditor = rt.api_keys.create("auditor", "compliance_officer")[1]
    for method, url, headers in (
            ("GET", f"/v1/subjects/{subject}", {}),
            ("GET", "/v1/audit/events?limit=1", {"Authorization": f"Bearer {auditor}"}),
            ("GET", "/v1/dsr", {})):  # refused: 403
        hops.clear()
        client.request(method, url, headers=headers)
        assert len(hops) == 1, (url, hops)


# -- a real server -------------------------------------------------------------------------------
def _until(what: str, probe: Callable[[], Any], timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if found := probe():
                return found
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    d = tmp_path / "data"
    r = subprocess.run([str(BIN / "fiduciary"), "init", "--data-dir", str(d), "--json"],
                       capture_output=True, text=True, check=True)
    return d, json.loads(r.stdout)


@pytest.fixture
def server(data_dir: tuple[Path, dict[str, str]]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = _free_port()
    env = {**os.environ, "FIDUCIARY_DATA_DIR": str(data_dir[0]),
           "FIDUCIARY_RETENTION_INTERVAL_HOURS": "0.0005",  # 1.8 s
           "FIDUCIARY_AUDIT_CHECKPOINT_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "fiduciary.api.app:create_app",
                             "--factory", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _until("the server", lambda: proc.poll() is None and httpx.get(f"{base}/healthz")
               .status_code == 200)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_uvicorn_factory_runs_sequencer_and_retention_and_checkpoints_at_shutdown(
    data_dir: tuple[Path, dict[str, str]], server: tuple[subprocess.Popen[str], str]
) -> None:
    proc, base = server
    keys = data_dir[1]

    def as_(key: str, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}", **headers})

    # The operator issues the auditing key on the host (through the API, the security
    # analyst's role is a proposal a second person approves).
    r = subprocess.run([str(BIN / "fiduciary"), "apikeys", "create", "--name", "auditor",
                        "--role", "security_analyst", "--json", "--data-dir", str(data_dir[0])],
                       capture_output=True, text=True, check=True)
    auditor = as_(json.loads(r.stdout)["api_key"])
    service = as_(keys["api_key"], **{"X-Request-ID": "lifespan-1"})
    assert service.post("/v1/subjects").status_code == 201

    def sequenced_create() -> dict[str, Any] | None:
        items = auditor.get("/v1/audit/events?action=subject.create").json()["items"]
        return items[0] if items and items[0]["index"] is not None else None

    event = _until("the sequencer", sequenced_create)
    assert event["event"]["request_id"] == "lifespan-1"
    assert event["event"]["client"] == "127.0.0.1"
    _until("a checkpoint covering the event",
           lambda: auditor.get("/v1/audit/checkpoint").json()["size"] > event["index"])
    _until("the retention schedule",
           lambda: auditor.get("/v1/audit/events?action=retention.run").json()["items"])

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out and "Traceback" not in out
    engine = sa.create_engine(f"sqlite:///{data_dir[0] / 'fiduciary.db'}")
    with engine.connect() as conn:
        size = conn.execute(sa.select(sa.func.max(audit_checkpoints.c.size))).scalar_one()
        events = conn.execute(sa.select(audit_events.c.action, audit_events.c.leaf_index)
                              .order_by(audit_events.c.seq)).all()
    engine.dispose()
    # The last checkpoint covers every event but the records of checkpoints themselves
    # appended after it (they alone call for no further checkpoint).
    covered = sorted(e.leaf_index for e in events
                     if e.leaf_index is not None and e.leaf_index < size)
    assert covered == list(range(size))
    assert {e.action for e in events if e.leaf_index is None or e.leaf_index >= size} <= {
        "audit.checkpoint"}
    assert {"subject.create", "retention.run"} <= {e.action for e in events}
