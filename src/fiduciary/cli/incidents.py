"""CLI: the incident register — open an incident, compute its scope from the audit trail, file
its obligations (or record why one is not required), list the affected, render the letters.
Acts as the system, attributed to the operator running the command (the audit trail names
them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column, Table

from fiduciary.cli.common import DataDir, JsonFlag, err, group, out, runtime
from fiduciary.incidents.register import KINDS, SEVERITIES, STATUSES
from fiduciary.principal import SYSTEM

incidents_app = group("Incidents: scope, breach-notification clocks, notices and letters.")

IncidentId = Annotated[str, typer.Argument(help="The incident id")]
ObligationId = Annotated[str, typer.Argument(help="The obligation id (incidents show)")]
_WHEN = "an ISO 8601 time (UTC unless it names a zone)"


def _when(option: str, value: str | None) -> datetime | None:
    """An ISO 8601 time; one without a zone is UTC. A bad one ends the command (exit 2)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        err.print(f"[red]error:[/red] {option} is {_WHEN}", highlight=False)
        raise typer.Exit(code=2) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _print(doc: Any, json_out: bool, line: str) -> None:
    if json_out:
        print(json.dumps(doc))
    else:
        out.print(line, highlight=False, markup=False)


def _obligations(incident: dict[str, Any]) -> Table:
    table = Table(Column("obligation", no_wrap=True, min_width=36), *(
        Column(name, overflow="fold") for name in ("regime", "recipient", "due", "status")),
                  box=box.SIMPLE_HEAD)
    for o in incident["obligations"]:
        due = (o["due_at"] or "no fixed deadline").replace("T", " ")
        status = o["status"] + (" OVERDUE" if o["overdue"] else "")
        table.add_row(o["id"], o["regime"], o["recipient"], due, status)
    return table


def _summary(incident: dict[str, Any]) -> str:
    late = f", {incident['overdue']} OVERDUE" if incident["overdue"] else ""
    return (f"{incident['id']}  {incident['kind']}  {incident['severity']}  "
            f"{incident['status']}  {len(incident['obligations'])} obligations{late}")


@incidents_app.command("create")
def incidents_create(
    title: Annotated[str, typer.Option(help="Sealed at rest; the audit trail keeps its "
                                       "digest")],
    kind: Annotated[str, typer.Option(help=", ".join(KINDS))],
    discovered_at: Annotated[str, typer.Option(help=f"When it came to light: {_WHEN}")],
    determined_at: Annotated[str | None, typer.Option(
        help=f"When it was determined to be a cybersecurity incident: {_WHEN}")] = None,
    description: Annotated[str | None, typer.Option(help="Sealed at rest")] = None,
    severity: Annotated[str, typer.Option(help=", ".join(SEVERITIES))] = "high",
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Open an incident; the obligations that need no scope start their clocks."""
    body: dict[str, Any] = {"title": title, "kind": kind, "severity": severity,
                            "discovered_at": _when("--discovered-at", discovered_at)}
    if determined_at is not None:
        body["determined_at"] = _when("--determined-at", determined_at)
    if description is not None:
        body["description"] = description
    with runtime(data_dir) as rt:
        incident = rt.incidents.create(SYSTEM, body)
    _print(incident, json_out, _summary(incident))


@incidents_app.command("scope")
def incidents_scope(
    incident_id: IncidentId,
    since: Annotated[str, typer.Option("--from", help=f"Start of the window: {_WHEN}")],
    until: Annotated[str, typer.Option("--to", help=f"End of the window (exclusive): {_WHEN}")],
    user: Annotated[list[str] | None, typer.Option(
        help="A compromised user's username; repeatable")] = None,
    api_key: Annotated[list[str] | None, typer.Option(
        "--api-key", help="A compromised API key's id; repeatable")] = None,
    collection: Annotated[list[str] | None, typer.Option(
        help="Only this collection; repeatable [default: all]")] = None,
    keys_compromised: Annotated[bool, typer.Option(
        help="The encryption keys went too: ciphertext counts as decrypted")] = False,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Compute whose data was exposed, from the audit trail against a newly signed checkpoint.
    Without --user or --api-key: a lost copy of the stored records (a backup, a device)."""
    body: dict[str, Any] = {
        "principals": [{"kind": "user", "username": u} for u in user or []]
        + [{"kind": "api_key", "id": k} for k in api_key or []],
        "from": _when("--from", since), "to": _when("--to", until),
        "keys_compromised": keys_compromised}
    if collection:
        body["collections"] = collection
    with runtime(data_dir) as rt:
        s = rt.incidents.scope(SYSTEM, incident_id, body)
    exposure = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in s["subjects"].items())
    places = ", ".join(f"{j} {n}" for j, n in s["by_jurisdiction"].items()) or "-"
    _print(s, json_out, f"{sum(s['subjects'].values())} subjects ({exposure}), {s['records']} "
           f"records; classes: {', '.join(s['classifications']) or '-'}; by jurisdiction: "
           f"{places}; checkpoint {s['checkpoint_size']}"
           + ("; encryption safe harbour" if s["safe_harbour"] else ""))


@incidents_app.command("show")
def incidents_show(incident_id: IncidentId, data_dir: DataDir = None,
                   json_out: JsonFlag = False) -> None:
    """One incident: its facts, obligations, scope and timeline."""
    with runtime(data_dir) as rt:
        incident = rt.incidents.get(SYSTEM, incident_id)
    if json_out:
        print(json.dumps(incident))
        return
    lines = [_summary(incident), f"title: {incident['title']}",
             f"discovered {incident['discovered_at']}, determined "
             f"{incident['determined_at'] or '-'}, owner {incident['owner'] or '-'}"]
    if incident["scope_result"]:
        s = incident["scope_result"]
        lines.append(f"scope: {sum(s['subjects'].values())} subjects, {s['records']} records "
                     f"at checkpoint {s['checkpoint_size']}")
    if incident["alerts"]:
        lines.append(f"alerts: {', '.join(incident['alerts'])}")
    for line in lines:
        out.print(line, highlight=False, markup=False)
    out.print(_obligations(incident))
    for step in incident["timeline"]:
        text = f": {step['text']}" if step["text"] else ""
        out.print(f"  {step['at']}  {step['actor']} {step['action']}{text}", highlight=False,
                  markup=False)


@incidents_app.command("list")
def incidents_list(
    overdue: Annotated[bool, typer.Option(help="Only those with an obligation past due")
                       ] = False,
    status: Annotated[str | None, typer.Option(help=", ".join(STATUSES))] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Incidents, most recently discovered first."""
    with runtime(data_dir) as rt:
        items = rt.incidents.list_incidents(SYSTEM, overdue=overdue, status=status)
    if json_out:
        print(json.dumps({"items": items}))
        return
    table = Table(Column("id", no_wrap=True, min_width=36), *(
        Column(name, overflow="fold") for name in ("discovered", "kind", "status",
                                                   "obligations", "overdue")),
                  box=box.SIMPLE_HEAD)
    for i in items:
        table.add_row(i["id"], i["discovered_at"][:16].replace("T", " "), i["kind"],
                      i["status"], str(len(i["obligations"])), str(i["overdue"] or ""))
    out.print(table)


@incidents_app.command("status")
def incidents_status(
    incident_id: IncidentId,
    status: Annotated[str, typer.Argument(help="assessing, notifying or closed")],
    note: Annotated[str | None, typer.Option(help="Sealed at rest")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Move an incident forward; closing needs every obligation filed or not required."""
    with runtime(data_dir) as rt:
        incident = rt.incidents.transition(SYSTEM, incident_id, status, note)
    _print(incident, json_out, f"{incident['id']}: {incident['status']}")


@incidents_app.command("file")
def incidents_file(
    incident_id: IncidentId, obligation_id: ObligationId,
    reference: Annotated[str, typer.Option(help="The recipient's reference for the filing")],
    filed_at: Annotated[str | None, typer.Option(help=f"{_WHEN} [default: now]")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Record that an obligation's notice was filed."""
    when = _when("--filed-at", filed_at)
    with runtime(data_dir) as rt:
        incident = rt.incidents.file(SYSTEM, incident_id, obligation_id, reference, when)
    _print(incident, json_out, f"{obligation_id}: filed")


@incidents_app.command("not-required")
def incidents_not_required(
    incident_id: IncidentId, obligation_id: ObligationId,
    reason: Annotated[str, typer.Option(help="Why it is not owed (sealed at rest; the audit "
                                        "trail keeps its digest)")],
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Record, with the reason, that an obligation is not owed."""
    with runtime(data_dir) as rt:
        incident = rt.incidents.not_required(SYSTEM, incident_id, obligation_id, reason)
    _print(incident, json_out, f"{obligation_id}: not required")


@incidents_app.command("affected")
def incidents_affected(
    incident_id: IncidentId,
    fmt: Annotated[str, typer.Option("--format", help="csv, or json with each subject's "
                                     "evidence and the checkpoint")] = "csv",
    data_dir: DataDir = None,
) -> None:
    """The affected subjects (ids, exposure, jurisdiction, data classes) on stdout."""
    with runtime(data_dir) as rt:
        found = rt.incidents.affected(SYSTEM, incident_id, fmt)
    print(found if isinstance(found, str) else json.dumps(found), end="" if isinstance(
        found, str) else "\n")


@incidents_app.command("letters")
def incidents_letters(
    incident_id: IncidentId,
    text: Annotated[Path | None, typer.Option(
        help="A JSON object of the letter texts: what_happened, what_we_are_doing, and as "
        "the people written to need them likely_consequences (EU/EEA), "
        "law_enforcement_delay and services_offer (California)")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Render the affected people's notification letters (sealed, one pair of HTML and PDF
    files per person) and print where the manifest is."""
    texts: Any = {}
    if text is not None:
        try:
            texts = json.loads(text.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] --text: {type(exc).__name__}: not a readable JSON "
                      "file", highlight=False)
            raise typer.Exit(code=2) from None
        if not isinstance(texts, dict):
            err.print("[red]error:[/red] --text is a JSON object", highlight=False)
            raise typer.Exit(code=2)
    with runtime(data_dir) as rt:
        batches = rt.letters
        with Progress(TextColumn("rendering letters"), BarColumn(), MofNCompleteColumn(),
                      console=err, disable=json_out or not err.is_terminal) as progress:
            task = progress.add_task("letters", total=None)
            manifest = batches.render(SYSTEM, incident_id, texts, lambda done, total:
                                      progress.update(task, completed=done, total=total))
    totals = manifest["totals"]
    _print(manifest, json_out, f"{totals['letters']} letters, {totals['skipped']} skipped; "
           f"manifest: {manifest['path']}")
