"""The ``fiduciary`` command."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from fiduciary import logs
from fiduciary.access import SYSTEM, Principal
from fiduciary.audit.events import RequestContext, request_context
from fiduciary.config import Settings
from fiduciary.datamap import load, load_file
from fiduciary.errors import FiduciaryError
from fiduciary.runtime import Runtime, is_initialised, open_runtime

app = typer.Typer(help="Fiduciary: customer-data vault for insurers.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
datamap_app = typer.Typer(help="Inspect and validate data maps.", no_args_is_help=True)
keys_app = typer.Typer(help="Key-encryption keys: rotation and status.", no_args_is_help=True)
apikeys_app = typer.Typer(help="Service API keys.", no_args_is_help=True)
users_app = typer.Typer(help="Staff users (password + TOTP).", no_args_is_help=True)
training_app = typer.Typer(help="Security-awareness training records.", no_args_is_help=True)
access_app = typer.Typer(help="Access reviews and break-glass review.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
dsr_app = typer.Typer(help="Data-subject requests (GDPR, CCPA) with statutory deadlines.",
                      no_args_is_help=True)
consent_app = typer.Typer(help="The consent ledger.", no_args_is_help=True)
holds_app = typer.Typer(help="Legal holds: block retention purges and erasure.",
                        no_args_is_help=True)
retention_app = typer.Typer(help="Retention: list or purge what has expired.",
                            no_args_is_help=True)
app.add_typer(datamap_app, name="datamap")
app.add_typer(keys_app, name="keys")
app.add_typer(apikeys_app, name="apikeys")
app.add_typer(users_app, name="users")
app.add_typer(training_app, name="training")
app.add_typer(access_app, name="access")
app.add_typer(audit_app, name="audit")
app.add_typer(dsr_app, name="dsr")
app.add_typer(consent_app, name="consent")
app.add_typer(holds_app, name="holds")
app.add_typer(retention_app, name="retention")

@app.callback()
def _main() -> None:
    # Files Fiduciary creates (database, WAL, keyring, logs, exports) are the owner's alone.
    os.umask(0o077)
    # What the CLI does is attributed to the operator running it.
    request_context.set(RequestContext(client="cli", operator=getpass.getuser()))


T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory "
                                              "[env FIDUCIARY_DATA_DIR; default ./fiduciary-data]")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="FIDUCIARY_API_KEY",
    help="Credential the data is read or written as [env FIDUCIARY_API_KEY]")]


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
    s = Settings()
    if data_dir is not None:
        s.data_dir = data_dir
    for k, v in overrides.items():
        if v is not None:
            setattr(s, k, v)
    return s


def _fail(exc: FiduciaryError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.message}", highlight=False)
    for f in exc.fields:
        err.print(f"  - {f.field}: {f.reason}", highlight=False, markup=False)
    return typer.Exit(code=2)


def _open(settings: Settings, create: bool = False) -> Runtime:
    logs.configure("warning")
    try:
        return open_runtime(settings, create=create)
    except FiduciaryError as exc:
        raise _fail(exc) from None


def _run(data_dir: Path | None, action: Callable[[Runtime], T]) -> T:
    """Open the runtime, do one thing, close; domain errors become a clean exit."""
    rt = _open(_settings(data_dir))
    try:
        return action(rt)
    except FiduciaryError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()


def _init(settings: Settings) -> tuple[Runtime, str, str, str]:
    rt = _open(settings, create=True)
    key, token = rt.api_keys.create("initial", role="service")
    _, admin_token = rt.api_keys.create("initial-admin", role="admin")
    return rt, key.id, token, admin_token


def _as(rt: Runtime, api_key: str | None) -> Principal:
    """The principal a data command acts as: the same decision as over HTTP."""
    if not api_key:
        err.print("[red]error:[/red] give --api-key (or FIDUCIARY_API_KEY): data commands act "
                  "as an API key's role")
        raise typer.Exit(code=2)
    try:
        return rt.api_keys.authenticate(api_key)
    except FiduciaryError as exc:
        raise _fail(exc) from None


@app.command()
def init(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Create the data directory, database, keyring and a first API key."""
    settings = _settings(data_dir)
    if is_initialised(settings):
        err.print(f"[red]error:[/red] {settings.data_dir} is already initialised")
        raise typer.Exit(code=2)
    rt, key_id, token, admin_token = _init(settings)
    result = {"data_dir": str(settings.data_dir.resolve()),
              "database": rt.db.engine.url.render_as_string(hide_password=True),
              "api_key": token, "api_key_id": key_id, "admin_api_key": admin_token}
    rt.close()
    if json_out:
        print(json.dumps(result))
        return
    out.print(f"Initialised {result['data_dir']}")
    out.print(f"Service API key (shown once): [bold]{token}[/bold]")
    out.print(f"Admin API key, no customer data (shown once): [bold]{admin_token}[/bold]")


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Bind address [env FIDUCIARY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env FIDUCIARY_PORT]")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Initialise if needed, add demo data to an "
                                       "empty store and print a fresh API key")] = False,
    subjects: Annotated[int, typer.Option(help="Demo customers for --demo")] = 100,
) -> None:
    """Run the REST API (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    from fiduciary.api.app import create_app

    settings = _settings(data_dir, host=host, port=port)
    banner: list[str] = []
    if demo:
        if not is_initialised(settings):
            rt, _, _, _ = _init(settings)
        else:
            rt = _open(settings)
        if not any(True for _ in rt.vault.export(SYSTEM, "persons", "policy_administration",
                                                 batch_size=1)):
            err.print(f"Adding {subjects} demo customers…")
            from fiduciary.demo import fill

            fill(rt.vault, subjects)
        for k in rt.api_keys.all():
            if k.name == "quickstart" and not k.revoked_at:
                rt.api_keys.revoke(k.id)
        _, token = rt.api_keys.create("quickstart")
        banner = [f"API key (shown once): {token}",
                  f"Try: curl -H 'Authorization: Bearer {token}' "
                  f"'http://{settings.host}:{settings.port}/v1/collections/persons/search"
                  "?purpose=customer_service' -d '{\"where\":{\"region\":\"west\"}}' "
                  "-H 'Content-Type: application/json'"]
    else:
        rt = _open(settings)
    logs.configure(settings.log_level, settings.log_dir)
    application = create_app(rt)
    out.print(f"Fiduciary listening on http://{settings.host}:{settings.port} "
              f"(docs: http://{settings.host}:{settings.port}/docs)", highlight=False)
    for line in banner:
        out.print(line, highlight=False, markup=False)
    sys.stdout.flush()
    try:
        uvicorn.run(application, host=settings.host, port=settings.port, log_config=None,
                    log_level=settings.log_level)
    finally:
        rt.close()  # stops the background work, leaving a checkpoint over everything


@app.command()
def demo(
    data_dir: DataDir = None,
    subjects: Annotated[int, typer.Option(help="How many customers")] = 100,
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable data")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Fill the store with realistic synthetic insurance customers."""
    from fiduciary.demo import fill

    rt = _open(_settings(data_dir))
    reports = fill(rt.vault, subjects, seed=seed)
    summary = {c: r.imported for c, r in reports.items()}
    rt.close()
    if json_out:
        print(json.dumps({"subjects": subjects, "records": summary}))
    else:
        out.print(f"Created {subjects} customers: " +
                  ", ".join(f"{n} {c}" for c, n in summary.items()))


@app.command("import")
def import_(
    collection: str,
    file: Annotated[Path, typer.Argument(help="CSV (.csv) or JSON lines")],
    purpose: Annotated[str, typer.Option(help="Why the data is collected")],
    rejects: Annotated[Path | None, typer.Option(
        help="Where bad rows go [default: FILE.rejects.jsonl]")] = None,
    api_key: ApiKeyOpt = None,
    data_dir: DataDir = None,
    batch_size: Annotated[int, typer.Option(help="Rows per transaction")] = 1000,
    json_out: JsonFlag = False,
) -> None:
    """Bulk-import records; good rows are committed, every bad row is reported."""
    from fiduciary.vault.importer import Importer, read_rows, write_reject

    rt = _open(_settings(data_dir))
    who = _as(rt, api_key)
    rejects = rejects or file.with_name(file.name + ".rejects.jsonl")
    try:
        spec = rt.vault.collection(collection)
        total = sum(1 for line in file.open(encoding="utf-8") if line.strip())
        if file.suffix.lower() == ".csv":
            total = max(total - 1, 0)
        with ExitStack() as stack:
            fh = stack.enter_context(file.open(newline="", encoding="utf-8"))
            rej = stack.enter_context(rejects.open("w", encoding="utf-8"))
            progress = stack.enter_context(Progress(
                TextColumn(f"importing {collection}"), BarColumn(), MofNCompleteColumn(),
                console=err, disable=json_out or not err.is_terminal))
            task = progress.add_task("rows", total=total)
            report = Importer(rt.vault, batch_size=batch_size).run(
                who, collection, read_rows(file, spec, fh), purpose, write_reject(rej),
                lambda n: progress.update(task, completed=n))
    except FiduciaryError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc.filename}: {exc.strerror}")
        raise typer.Exit(code=2) from None
    finally:
        rt.close()
    if report.rejected == 0:
        rejects.unlink(missing_ok=True)
    summary = {**report.as_dict(), "rejects_file": str(rejects) if report.rejected else None}
    if json_out:
        print(json.dumps(summary))
    else:
        out.print(f"read {report.read}, imported {report.imported}, rejected "
                  f"{report.rejected}, new subjects {report.subjects_created}")
        if report.rejected:
            out.print(f"rejected rows (line and reason) written to {rejects}")
    if report.rejected:
        raise typer.Exit(code=1)


@app.command()
def export(
    collection: str,
    purpose: Annotated[str, typer.Option(help="Why the data is exported")],
    output: Annotated[Path | None, typer.Option(help="File to write [default: stdout]")] = None,
    api_key: ApiKeyOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Write every permitted record of a collection as JSON lines."""
    rt = _open(_settings(data_dir))
    who = _as(rt, api_key)
    count = 0
    try:
        with ExitStack() as stack:
            fh = stack.enter_context(output.open("w", encoding="utf-8")) if output else sys.stdout
            for record in rt.vault.export(who, collection, purpose):
                fh.write(json.dumps(record.as_dict(), ensure_ascii=False) + "\n")
                count += 1
    except FiduciaryError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    if output:
        err.print(f"exported {count} records to {output}")


@datamap_app.command("show")
def datamap_show(
    data_dir: DataDir = None,
    datamap: Annotated[Path | None, typer.Option(help="Data map file [env FIDUCIARY_DATAMAP]")
                       ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Print the data map in force."""
    settings = _settings(data_dir, datamap=datamap)
    try:
        dm = load(settings.datamap)
    except FiduciaryError as exc:
        raise _fail(exc) from None
    if json_out:
        print(json.dumps(dm.as_dict(), indent=2))
        return
    out.print(f"Data map: {dm.source}")
    for c in dm.collections.values():
        table = Table(title=f"{c.name} — {c.lawful_basis.value}; retention "
                            f"{c.retention.period or 'until'} from {c.retention.start}",
                      title_justify="left")
        for col in ("field", "type", "classification", "encrypted", "searchable", "required",
                    "masking", "purposes"):
            table.add_column(col)
        for f in c.fields.values():
            table.add_row(f.name, f.format or f.type.value, f.classification.value,
                          "yes" if f.encrypted else "", "yes" if f.searchable else "",
                          "yes" if f.required else "", f.masking, ", ".join(sorted(f.purposes)))
        out.print(table)


@datamap_app.command("check")
def datamap_check(file: Path) -> None:
    """Validate a data-map file; exits non-zero naming every problem."""
    try:
        dm = load_file(file)
    except FiduciaryError as exc:
        raise _fail(exc) from None
    n = sum(len(c.fields) for c in dm.collections.values())
    out.print(f"{file}: valid ({len(dm.collections)} collections, {n} fields)")


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None,
                batch_size: Annotated[int, typer.Option()] = 1000) -> None:
    """Create a new KEK version and re-wrap every subject key under it, online."""
    rt = _open(_settings(data_dir))
    try:
        report = rt.vault.keys.rotate(batch_size=batch_size)
        rt.audit.append_committed(rt.audit.event(None, "keys.rotate", details={
            "kek_version": report.new_version, "rewrapped": report.rewrapped}))
    except FiduciaryError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    out.print(f"KEK version {report.new_version} active; re-wrapped {report.rewrapped} "
              "subject keys")


@keys_app.command("status")
def keys_status(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """KEK versions and how many subject keys each wraps."""
    rt = _open(_settings(data_dir))
    counts = rt.vault.keys.counts_by_version()
    versions = [{"version": v.version, "state": v.state, "created_at": v.created_at,
                 "wrapped_keys": counts.get(v.version, 0)} for v in rt.keyring.versions()]
    rt.close()
    if json_out:
        print(json.dumps({"backend": "file", "versions": versions}))
        return
    table = Table("KEK version", "state", "created", "subject keys wrapped")
    for v in versions:
        table.add_row(str(v["version"]), str(v["state"]), str(v["created_at"]),
                      str(v["wrapped_keys"]))
    out.print(table)


@apikeys_app.command("create")
def apikeys_create(
    name: Annotated[str, typer.Option(help="What the key is for")] = "service",
    role: Annotated[str, typer.Option(help="Role from the policy pack")] = "service",
    scope: Annotated[list[str] | None, typer.Option(
        help="Limit to these actions (read, search, write, delete, export, import); "
             "repeatable")] = None,
    days: Annotated[int | None, typer.Option(help="Expire after this many days")] = None,
    data_dir: DataDir = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an API key (shown once)."""
    from datetime import timedelta

    rt = _open(_settings(data_dir))
    try:
        key, token = rt.api_keys.create(name, role,
                                        timedelta(days=days) if days else None, scope)
    except FiduciaryError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    if json_out:
        print(json.dumps({"id": key.id, "name": key.name, "role": key.role, "api_key": token,
                          "scopes": list(key.scopes) if key.scopes else None,
                          "expires_at": key.expires_at.isoformat() if key.expires_at else None}))
    else:
        out.print(f"API key {key.id} (shown once): [bold]{token}[/bold]")


@apikeys_app.command("list")
def apikeys_list(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """List API keys (never their secrets)."""
    rt = _open(_settings(data_dir))
    now = rt.clock.now()
    rows = [{"id": k.id, "name": k.name, "role": k.role, "state": k.state(now),
             "scopes": list(k.scopes) if k.scopes else None,
             "created_at": k.created_at.isoformat(),
             "expires_at": k.expires_at.isoformat() if k.expires_at else None}
            for k in rt.api_keys.all()]
    rt.close()
    if json_out:
        print(json.dumps({"items": rows}))
        return
    table = Table("id", "name", "role", "state", "created", "expires")
    for r in rows:
        table.add_row(*(str(r[c] or "") for c in ("id", "name", "role", "state", "created_at",
                                                  "expires_at")))
    out.print(table)


@apikeys_app.command("revoke")
def apikeys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke an API key at once."""
    rt = _open(_settings(data_dir))
    try:
        rt.api_keys.revoke(key_id)
    except FiduciaryError as exc:
        raise _fail(exc) from None
    finally:
        rt.close()
    out.print(f"revoked {key_id}")


from fiduciary.cli import access as _access  # noqa: E402,F401  (registers commands)
from fiduciary.cli import audit as _audit  # noqa: E402,F401
from fiduciary.cli import dsr as _dsr  # noqa: E402,F401
from fiduciary.cli import privacy as _privacy  # noqa: E402,F401
from fiduciary.cli import ropa as _ropa  # noqa: E402,F401

if __name__ == "__main__":
    app()
