"""CLI: the vault's records in bulk (import, export), its data map and its encryption keys."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from fiduciary.cli.common import (
    ApiKeyOpt,
    DataDir,
    JsonFlag,
    as_principal,
    domain_errors,
    err,
    group,
    out,
    runtime,
    settings,
)
from fiduciary.datamap import load, load_file
from fiduciary.vault.importer import Importer, read_rows, write_reject

#: Top-level commands (``fiduciary import``, ``export``).
commands = typer.Typer()
datamap_app = group("Inspect and validate data maps.")
keys_app = group("Key-encryption keys: rotation and status.")


@commands.command("import")
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
    rejects = rejects or file.with_name(file.name + ".rejects.jsonl")
    with runtime(data_dir) as rt:
        who = as_principal(rt, api_key)
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
                # Sealing pipelined into a second process (README, "Search and import speed").
                report = Importer(rt.vault, batch_size=batch_size, pipeline=True).run(
                    who, collection, read_rows(file, spec, fh), purpose, write_reject(rej),
                    lambda n: progress.update(task, completed=n))
        except OSError as exc:
            err.print(f"[red]error:[/red] {exc.filename}: {exc.strerror}")
            raise typer.Exit(code=2) from None
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


@commands.command()
def export(
    collection: str,
    purpose: Annotated[str, typer.Option(help="Why the data is exported")],
    output: Annotated[Path | None, typer.Option(help="File to write [default: stdout]")] = None,
    api_key: ApiKeyOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Write every permitted record of a collection as JSON lines."""
    count = 0
    with runtime(data_dir) as rt, ExitStack() as stack:
        who = as_principal(rt, api_key)
        fh = stack.enter_context(output.open("w", encoding="utf-8")) if output else sys.stdout
        for record in rt.vault.export(who, collection, purpose):
            fh.write(json.dumps(record.as_dict(), ensure_ascii=False) + "\n")
            count += 1
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
    with domain_errors():
        dm = load(settings(data_dir, datamap=datamap).datamap)
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
    with domain_errors():
        dm = load_file(file)
    n = sum(len(c.fields) for c in dm.collections.values())
    out.print(f"{file}: valid ({len(dm.collections)} collections, {n} fields)")


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None,
                batch_size: Annotated[int, typer.Option()] = 1000) -> None:
    """Create a new KEK version and re-wrap every subject key under it, online."""
    with runtime(data_dir) as rt:
        report = rt.vault.keys.rotate(batch_size=batch_size)
        rt.audit.append_committed(rt.audit.event(None, "keys.rotate", details={
            "kek_version": report.new_version, "rewrapped": report.rewrapped}))
    out.print(f"KEK version {report.new_version} active; re-wrapped {report.rewrapped} "
              "subject keys")


@keys_app.command("status")
def keys_status(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """KEK versions and how many subject keys each wraps."""
    with runtime(data_dir) as rt:
        counts = rt.vault.keys.counts_by_version()
        versions = [{"version": v.version, "state": v.state, "created_at": v.created_at,
                     "wrapped_keys": counts.get(v.version, 0)} for v in rt.keyring.versions()]
    if json_out:
        print(json.dumps({"backend": "file", "versions": versions}))
        return
    table = Table("KEK version", "state", "created", "subject keys wrapped")
    for v in versions:
        table.add_row(str(v["version"]), str(v["state"]), str(v["created_at"]),
                      str(v["wrapped_keys"]))
    out.print(table)
