"""CLI: set up a data directory, fill it with demo customers, run the REST API."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
from typing import Annotated

import typer
import uvicorn
from uvicorn.supervisors import Multiprocess

from fiduciary import logs
from fiduciary.cli.common import DataDir, JsonFlag, err, out, runtime, settings
from fiduciary.config import Settings
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime, is_initialised

#: Top-level commands (``fiduciary init``, ``serve``, ``demo``).
commands = typer.Typer()


def _first_keys(rt: Runtime) -> tuple[str, str, str]:
    """A new store's first keys: a service key (id, token) and an admin key (token)."""
    key, token = rt.api_keys.create("initial", role="service")
    _, admin_token = rt.api_keys.create("initial-admin", role="admin")
    return key.id, token, admin_token


def _fill(rt: Runtime, subjects: int, seed: int | None = None) -> dict[str, int]:
    """Add demo customers; records created per collection."""
    # Loaded here, not at the top: Faker adds about 7% to the start-up of every other command.
    from fiduciary.demo import fill

    return {c: r.imported for c, r in fill(rt.vault, subjects, seed=seed).items()}


@commands.command()
def init(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Create the data directory, database, keyring and a first API key."""
    s = settings(data_dir)
    if is_initialised(s):
        err.print(f"[red]error:[/red] {s.data_dir} is already initialised")
        raise typer.Exit(code=2)
    with runtime(s, create=True) as rt:
        key_id, token, admin_token = _first_keys(rt)
        result = {"data_dir": str(s.data_dir.resolve()),
                  "database": rt.db.engine.url.render_as_string(hide_password=True),
                  "api_key": token, "api_key_id": key_id, "admin_api_key": admin_token}
    if json_out:
        print(json.dumps(result))
        return
    out.print(f"Initialised {result['data_dir']}")
    out.print(f"Service API key (shown once): [bold]{token}[/bold]")
    out.print(f"Admin API key, no customer data (shown once): [bold]{admin_token}[/bold]")


def _demo_banner(rt: Runtime, host: str, port: int, subjects: int) -> list[str]:
    """``serve --demo``: demo customers in an empty store, and a fresh key to try them with."""
    if not any(True for _ in rt.vault.export(SYSTEM, "persons", "policy_administration",
                                             batch_size=1)):
        err.print(f"Adding {subjects} demo customers…")
        _fill(rt, subjects)
    for k in rt.api_keys.all():
        if k.name == "quickstart" and not k.revoked_at:
            rt.api_keys.revoke(k.id)
    _, token = rt.api_keys.create("quickstart")
    return [f"API key (shown once): {token}", *_demo_staff(rt, host, port),
            f"Try: curl -H 'Authorization: Bearer {token}' "
            f"'http://{host}:{port}/v1/collections/persons/search"
            "?purpose=customer_service' -d '{\"where\":{\"region\":\"west\"}}' "
            "-H 'Content-Type: application/json'"]


#: One console user per role of the oversight half, on the demo store only.
DEMO_STAFF = ("dpo", "compliance_officer", "security_analyst", "ethics_officer",
              "claims_adjuster")


def _demo_staff(rt: Runtime, host: str, port: int) -> list[str]:
    """Demo staff, created, trained and enrolled at the first ``serve --demo``: their
    passwords and TOTP secrets are printed once (never again: nothing keeps them)."""
    from fiduciary.demo import REGIONS  # lazily, as _fill: Faker is slow to import

    lines = [f"Console: http://{host}:{port}/console/"]
    existing = {u.username for u in rt.users.all()}
    for role in DEMO_STAFF:
        username = f"demo.{role.replace('_', '.')}"
        if username in existing:
            continue
        made = rt.users.create(username, [role], list(REGIONS))
        for course in rt.training.catalogue.courses:
            rt.users.record_training(username, course.id, rt.clock.now().date(),
                                     evidence="demo store")
        assert made.enrolment_code is not None
        password = secrets.token_urlsafe(12)
        enrolled = rt.users.enrol(username, made.enrolment_code, password)
        lines.append(f"  {role}: username {username}  password {password}  "
                     f"TOTP secret {enrolled.totp_secret}")
    if len(lines) == 1:
        lines.append("  demo staff (demo.dpo, demo.security.analyst, …) were printed at the "
                     "first start: `fiduciary users reset-password` gives a new password")
    return lines


@commands.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Bind address [env FIDUCIARY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env FIDUCIARY_PORT]")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Initialise if needed, add demo data to an "
                                       "empty store and print a fresh API key")] = False,
    subjects: Annotated[int, typer.Option(help="Demo customers for --demo")] = 100,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Server processes; one of them, elected through the database, runs the "
                    "background work [env FIDUCIARY_WORKERS]")] = None,
) -> None:
    """Run the REST API (OpenAPI at /openapi.json; docs at /docs with FIDUCIARY_API_DOCS or
    --demo)."""
    # Loaded here, not at the top: the API (FastAPI, pydantic models) adds about a quarter to
    # the start-up of every other command.
    from fiduciary.api.app import create_app

    # A demo is someone trying the API on their own machine: it gets the interactive docs.
    s = settings(data_dir, host=host, port=port, workers=workers,
                 api_docs=True if demo else None)
    create = demo and not is_initialised(s)
    if s.workers > 1:
        _serve_workers(s, create, demo, subjects)
        return
    # The app's lifespan starts the runtime's background work and stops it; closing the runtime
    # (when the server stops) leaves a checkpoint over everything.
    with runtime(s, create=create) as rt:
        banner = _prepare(rt, s, create, demo, subjects)
        logs.configure(s.log_level, s.log_dir)
        application = create_app(rt)
        _announce(s, banner)
        # uvicorn logs through our handlers (log_config=None), whose filter withholds
        # exception messages; the app answers every fault itself, so uvicorn never sees one.
        uvicorn.run(application, host=s.host, port=s.port, log_config=None,
                    log_level=s.log_level, server_header=False)


def _prepare(rt: Runtime, s: Settings, create: bool, demo: bool, subjects: int) -> list[str]:
    """A new store's first keys; the demo's customers, key and staff (the lines to print)."""
    if create:
        _first_keys(rt)
    return _demo_banner(rt, s.host, s.port, subjects) if demo else []


def _announce(s: Settings, banner: list[str]) -> None:
    docs = f" (docs: http://{s.host}:{s.port}/docs)" if s.api_docs else ""
    workers = f" with {s.workers} workers" if s.workers > 1 else ""
    out.print(f"Fiduciary listening on http://{s.host}:{s.port}{workers}{docs}",
              highlight=False)
    for line in banner:
        out.print(line, highlight=False, markup=False)
    sys.stdout.flush()


def _serve_workers(s: Settings, create: bool, demo: bool, subjects: int) -> None:
    """``--workers N``: N uvicorn processes, each opening its own runtime from the
    environment (``create_app`` as a factory); the one holding the background lease runs
    the sequencer and the schedules, and another takes over if it dies (uvicorn restarts a
    dead worker)."""
    with runtime(s, create=create) as rt:
        banner = _prepare(rt, s, create, demo, subjects)
    # What the options chose reaches the workers as the settings they read.
    os.environ.update({"FIDUCIARY_DATA_DIR": str(s.data_dir.resolve()),
                       "FIDUCIARY_HOST": s.host, "FIDUCIARY_PORT": str(s.port),
                       "FIDUCIARY_API_DOCS": "true" if s.api_docs else "false",
                       "FIDUCIARY_WORKERS": str(s.workers)})
    logs.configure(s.log_level, s.log_dir)
    _announce(s, banner)
    # uvicorn kills a worker that does not answer its health check in time: a loaded
    # machine, or a long schedule round holding the GIL, must not cost a worker.
    config = uvicorn.Config("fiduciary.api.app:create_app", factory=True, workers=s.workers,
                            host=s.host, port=s.port, log_config=None, log_level=s.log_level,
                            server_header=False, timeout_worker_healthcheck=60)
    sock = config.bind_socket()
    # uvicorn's shared socket is made without IPPROTO_TCP, so asyncio never sets
    # TCP_NODELAY on its connections and each keep-alive response waited ~40 ms for the
    # client's delayed ACK; accepted connections inherit the listener's option (Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[sock]).run()


@commands.command()
def demo(
    data_dir: DataDir = None,
    subjects: Annotated[int, typer.Option(help="How many customers")] = 100,
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable data")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Fill the store with realistic synthetic insurance customers."""
    with runtime(data_dir) as rt:
        summary = _fill(rt, subjects, seed)
    if json_out:
        print(json.dumps({"subjects": subjects, "records": summary}))
    else:
        out.print(f"Created {subjects} customers: " +
                  ", ".join(f"{n} {c}" for c, n in summary.items()))
