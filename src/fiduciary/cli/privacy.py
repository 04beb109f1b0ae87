"""CLI: legal holds, retention and erasure certificates. The operator acts as the system,
attributed to their login in every audit event."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

import typer
from rich.table import Table

from fiduciary.cli.common import DataDir, JsonFlag, group, out, runtime
from fiduciary.principal import SYSTEM

#: Top-level commands (``fiduciary erasure-certificate``).
commands = typer.Typer()
holds_app = group("Legal holds: block retention purges and erasure.")
retention_app = group("Retention: list or purge what has expired.")

ScopeOpt = Annotated[str, typer.Option("--scope", help="subject | record | collection")]


@holds_app.command("add")
def holds_add(target: Annotated[str, typer.Argument(help="Subject id, record id or "
                                                   "collection name")],
              reason: Annotated[str, typer.Option(help="The matter or order the hold serves")],
              owner: Annotated[str, typer.Option(help="Who answers for the hold")],
              scope: ScopeOpt = "subject", data_dir: DataDir = None,
              json_out: JsonFlag = False) -> None:
    """Place a legal hold: what it covers is neither purged nor erased until it is released."""
    with runtime(data_dir) as rt:
        hold = rt.holds.add(SYSTEM, scope, target, reason, owner)
    if json_out:
        print(json.dumps(hold.as_dict()))
        return
    out.print(f"hold {hold.id} placed on {scope} {target}", highlight=False)


@holds_app.command("release")
def holds_release(hold_id: str, data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Release a legal hold; the next retention run purges what it kept, if expired."""
    with runtime(data_dir) as rt:
        hold = rt.holds.release(SYSTEM, hold_id)
    if json_out:
        print(json.dumps(hold.as_dict()))
        return
    out.print(f"hold {hold.id} released", highlight=False)


@holds_app.command("list")
def holds_list(all_: Annotated[bool, typer.Option("--all", help="Include released holds")]
               = False, data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """List legal holds (active ones unless --all)."""
    with runtime(data_dir) as rt:
        holds = rt.holds.list(include_released=all_)
    if json_out:
        print(json.dumps({"items": [h.as_dict() for h in holds]}))
        return
    table = Table("id", "scope", "target", "owner", "reason", "placed", "released")
    for h in holds:
        table.add_row(h.id, h.scope, h.target, h.owner, h.reason,
                      h.created_at.date().isoformat(),
                      h.released_at.date().isoformat() if h.released_at else "")
    out.print(table)


@retention_app.command("run")
def retention_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what has expired; change "
                                          "nothing")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Judge expiry as on this date "
                                              "(YYYY-MM-DD; default today)")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Purge what the data map's retention rules say has expired (crypto-shredding subjects
    whose every record has expired), except what a legal hold covers."""
    try:
        day = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--as-of") from None
    with runtime(data_dir) as rt:
        report = rt.retention.run(SYSTEM, day, dry_run=dry_run)
    doc = report.as_dict()
    if json_out:
        print(json.dumps(doc))
        return
    table = Table("action", "collection", "record", "subject", "expired on", "rule")
    for i in report.items:
        table.add_row(i.action + (f" ({i.hold_id})" if i.hold_id else ""), i.collection,
                      i.record_id, i.subject_id,
                      i.expired_on.isoformat() if i.expired_on else "", i.rule)
    out.print(table)
    verb = "would purge" if dry_run else "purged"
    out.print(f"as of {doc['as_of']}: {doc['expired']} expired record(s) {verb}, "
              f"{doc['held']} held; {doc['subjects_shredded']} subject(s) crypto-shredded, "
              f"{doc['records_deleted']} record(s) deleted, {doc['erasures_completed']} "
              "pending erasure(s) completed", highlight=False)


@commands.command("erasure-certificate")
def erasure_certificate(subject_id: str, data_dir: DataDir = None) -> None:
    """Print the erasure certificates of a subject (JSON)."""
    with runtime(data_dir) as rt:
        certs = rt.eraser.certificates(subject_id)
    print(json.dumps({"items": certs}, indent=1))
