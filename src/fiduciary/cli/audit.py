"""CLI: verify the audit trail, export checkpoints for a witness, who saw a customer, SIEM."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fiduciary.audit.siem import FORMATS
from fiduciary.audit.trail import public_key_bytes
from fiduciary.audit.verify import verify
from fiduciary.cli.common import DataDir, JsonFlag, err, group, out, runtime
from fiduciary.errors import VerificationFailed
from fiduciary.vault.rollback import RecordsReport, check_records

audit_app = group("The tamper-evident audit trail.")


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDir = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="A checkpoint exported earlier (witness): proves the log was only appended to")
    ] = None,
    records_check: Annotated[bool, typer.Option(
        "--records", help="Also compare every record row with its latest write event: names "
        "records restored to an earlier write, edited, resurrected or deleted outside "
        "Fiduciary")] = False,
    workers: Annotated[int, typer.Option(
        min=0, help="Processes that check the events (0: one per core); a trail of fewer "
        "than 100,000 events a process is checked in one")] = 0,
    json_out: JsonFlag = False,
) -> None:
    """Recompute the tree from the stored events and check every checkpoint (with --records,
    every record row against the trail too)."""
    report = None
    with runtime(data_dir) as rt:
        try:
            witness = json.loads(checkpoint.read_text()) if checkpoint else None
            result = verify(rt.db, public_key_bytes(rt.trail.key), witness,
                            rt.settings.audit_retention_days,
                            workers=workers or os.cpu_count() or 1)
        # A FiduciaryError, but not a clean "cannot": the trail was altered (exit 1).
        except VerificationFailed as exc:
            err.print(f"[red]audit trail does NOT verify:[/red] {exc}", highlight=False)
            raise typer.Exit(code=1) from None
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] cannot read the checkpoint file: {exc}")
            raise typer.Exit(code=2) from None
        if records_check:
            report = check_records(rt.vault)
    d = result.as_dict()
    if report is not None:
        d["records"] = report.as_dict()
        d["verified"] = report.ok
    if json_out:
        print(json.dumps(d))
    else:
        out.print(f"verified: size {d['size']} root {d['root']} ({d['checkpoints']} "
                  f"checkpoints, {d['events_after_latest_checkpoint']} events after the "
                  f"latest, {d['unsequenced_events']} not yet sequenced)", highlight=False)
    if report is None:
        return
    if not json_out:
        _print_records(report)
    if not report.ok:
        raise typer.Exit(code=1)


def _print_records(report: RecordsReport) -> None:
    summary = (f"{report.checked} records checked, {report.unattested} not attested yet "
               "(written before row digests, or their events pruned)")
    if report.ok:
        out.print(f"records verified: {summary}", highlight=False)
        return
    err.print(f"[red]records do NOT verify:[/red] {len(report.findings)} differ from the "
              f"audit trail; {summary}", highlight=False)
    for f in report.findings:  # one line each, ids whole: for grep and tickets
        versions = ", ".join(f"{k} {v}" for k, v in (("version", f.version),
                                                       ("expected", f.expected_version))
                             if v is not None)
        err.print(f"  {f.record_id} {f.collection or '-'} {f.problem}"
                  + (f" ({versions})" if versions else ""), highlight=False, soft_wrap=True)


@audit_app.command("sequence")
def audit_sequence(data_dir: DataDir = None) -> None:
    """Sequence pending events now and sign a checkpoint over them."""
    with runtime(data_dir) as rt:
        size = rt.trail.sequence(force_checkpoint=True)
    out.print(f"tree size {size}")


@audit_app.command("checkpoint")
def audit_checkpoint(
    export: Annotated[Path | None, typer.Option("--export", help="File to write the latest "
                                                "signed checkpoint to, for an external witness")
                      ] = None,
    webhook: Annotated[str | None, typer.Option(help="URL to POST the checkpoint (JSON) to, "
                                                "for an external witness")] = None,
    data_dir: DataDir = None,
) -> None:
    """Hand the latest signed checkpoint (after sequencing what is pending) to a witness."""
    if export is None and webhook is None:
        err.print("[red]error:[/red] give --export FILE and/or --webhook URL")
        raise typer.Exit(code=2)
    if webhook is not None and not webhook.startswith(("https://", "http://")):
        err.print("[red]error:[/red] --webhook must be an http(s) URL")
        raise typer.Exit(code=2)
    with runtime(data_dir) as rt:
        rt.trail.sequence(force_checkpoint=True)
        cp = rt.trail.latest_checkpoint().as_dict()
    body = json.dumps(cp, indent=2) + "\n"
    if export is not None:
        export.write_text(body)
        out.print(f"checkpoint size {cp['size']} written to {export}")
    if webhook is not None:
        # The scheme was checked above: http(s) only.
        request = urllib.request.Request(webhook, data=body.encode(), method="POST",  # noqa: S310
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status = response.status
        except (urllib.error.URLError, OSError) as exc:
            err.print(f"[red]error:[/red] the witness did not take the checkpoint: {exc}")
            raise typer.Exit(code=1) from None
        out.print(f"checkpoint size {cp['size']} delivered to the witness (HTTP {status})")


@audit_app.command("subject")
def audit_subject(subject_id: str, data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Who accessed this person's data: when, which fields, why, with what decision."""
    events = []
    cursor = None
    with runtime(data_dir) as rt:
        while True:
            items, cursor = rt.trail.events(subject_id=subject_id, limit=1000, cursor=cursor)
            events += [i["event"] for i in items]
            if cursor is None:
                break
        rt.audit.append_committed(rt.audit.event(None, "audit.read", subject_ids=[subject_id],
                                                 details={"query": "subject"}))
    rows = [{"time": e["time"], "actor": e["actor"]["name"] or e["actor"]["kind"],
             "roles": e["actor"]["roles"], "action": e["action"],
             "collection": e["collection"], "fields": e["fields"], "purpose": e["purpose"],
             "decision": e["decision"], "reason": e["reason"]} for e in events]
    if json_out:
        print(json.dumps({"subject_id": subject_id, "accesses": rows}))
        return
    table = Table("time", "who", "action", "collection", "fields", "purpose", "decision")
    for r in rows:
        table.add_row(str(r["time"]), f"{r['actor']} ({', '.join(r['roles'])})",
                      str(r["action"]), str(r["collection"] or ""), ", ".join(r["fields"]),
                      str(r["purpose"] or ""), f"{r['decision']} {r['reason'] or ''}".strip())
    out.print(table)


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl, syslog or cef")] = "jsonl",
    since: Annotated[str | None, typer.Option(help="ISO 8601 time to start from")] = None,
    follow: Annotated[bool, typer.Option(help="Keep streaming new events")] = False,
    data_dir: DataDir = None,
) -> None:
    """Stream events to stdout for a SIEM."""
    if fmt not in FORMATS:
        err.print(f"[red]error:[/red] --format must be one of {', '.join(FORMATS)}")
        raise typer.Exit(code=2)
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        err.print("[red]error:[/red] --since must be an ISO 8601 time")
        raise typer.Exit(code=2) from None
    render = FORMATS[fmt]
    with runtime(data_dir) as rt:
        try:
            cursor = None
            while True:
                items, cursor = rt.trail.events(since=start, limit=1000, cursor=cursor)
                for i in items:
                    print(render(i["event"]))
                if cursor is None:
                    break
            sys.stdout.flush()
            if follow:
                for _, event in rt.trail.follow(rt.trail.last_seq()):
                    print(render(event), flush=True)
        except KeyboardInterrupt:
            pass


@audit_app.command("prune")
def audit_prune(
    dry_run: Annotated[bool, typer.Option(help="Only report what would be pruned")] = False,
    data_dir: DataDir = None,
    json_out: JsonFlag = False,
) -> None:
    """Remove event content past FIDUCIARY_AUDIT_RETENTION_DAYS (default 2191, 6 years),
    keeping leaf hashes and every signed checkpoint, so the log still verifies."""
    with runtime(data_dir) as rt:
        result = rt.trail.prune(rt.settings.audit_retention_days, dry_run)
    if json_out:
        print(json.dumps(result))
    else:
        verb = "would prune" if dry_run else "pruned"
        out.print(f"{verb} {result['events']} events older than {result['cutoff']} "
                  f"(leaf indexes below {result['pruned_below_index']})")
