"""CLI: run the monitor over the audit trail, triage its alerts, keep the watch list. Acts as
the system, attributed to the operator running the command (the audit trail names them)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from fiduciary.cli.common import DataDir, JsonFlag, group, out, runtime
from fiduciary.monitoring.alerts import WATCH_CATEGORIES
from fiduciary.principal import SYSTEM

monitor_app = group("The monitor: detections over the audit trail.")
alerts_app = group("Monitoring alerts and their triage.")
watchlist_app = group("Customers whose every access is watched.")

AlertId = Annotated[str, typer.Argument(help="The alert id")]
SubjectId = Annotated[str, typer.Argument(help="The subject id")]


@monitor_app.command("run")
def monitor_run(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Run the detections once over the audit events not yet read, and send queued alerts."""
    with runtime(data_dir) as rt:
        run = rt.monitor.run_once().as_dict()
        # Run from cron, this is also what sends the alerts it queued.
        rt.delivery.deliver_due()
    if json_out:
        print(json.dumps(run))
    else:
        out.print(f"monitor: {run['events']} events read, {run['alerts']} alerts raised, "
                  f"{run['suppressed']} suppressed", highlight=False)


def _who(principal: dict[str, Any]) -> str:
    return str(principal["username"] or f"{principal['kind']}:{principal['id']}")


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option(
        help="open, triaged, dismissed or escalated [default: all]")] = None,
    detection: Annotated[str | None, typer.Option(help="One detection of the pack")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 100,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Alerts, newest first."""
    with runtime(data_dir) as rt:
        items = rt.alerts.list_alerts(SYSTEM, status=status, detection=detection, limit=limit)
    if json_out:
        print(json.dumps({"items": items}))
        return
    # Ids whole (the other commands take them); the rest folds in a narrow terminal.
    table = Table(Column("id", no_wrap=True, min_width=36), *(
        Column(name, overflow="fold") for name in ("raised", "detection", "severity",
                                                   "status", "about", "assignee")),
                  box=box.SIMPLE_HEAD)
    for a in items:
        table.add_row(a["id"], a["created_at"][:16].replace("T", " "), a["detection"],
                      f"{a['severity']} {a['score']:g}", a["status"], _who(a["principal"]),
                      a["assignee"] or "")
    out.print(table)


@alerts_app.command("show")
def alerts_show(alert_id: AlertId, data_dir: DataDir = None, json_out: JsonFlag = False
                ) -> None:
    """One alert: why, its evidence and its triage."""
    with runtime(data_dir) as rt:
        a = rt.alerts.get(SYSTEM, alert_id)
    if json_out:
        print(json.dumps(a))
        return
    proven = sum(1 for e in a["evidence"] if e["inclusion_proof"] or e["checkpoint_size"])
    lines = [f"{a['id']}  {a['detection']}  {a['severity']} ({a['score']:g})  {a['status']}",
             f"about: {_who(a['principal'])}; subjects: {', '.join(a['subject_ids']) or '-'}",
             f"reason: {a['reason']}",
             f"raised {a['created_at']}, updated {a['updated_at']}, assignee "
             f"{a['assignee'] or '-'}",
             f"evidence: {len(a['evidence'])} events, {proven} with an inclusion proof"]
    for step in a["timeline"]:
        text = f": {step['text']}" if step["text"] else ""
        lines.append(f"  {step['at']}  {step['actor']} {step['action']}{text}")
    for line in lines:
        out.print(line, highlight=False, markup=False)


def _triaged(a: dict[str, Any]) -> None:
    out.print(f"{a['id']}: {a['status']}"
              + (f", assigned to {a['assignee']}" if a["assignee"] else ""),
              highlight=False, markup=False)


@alerts_app.command("dismiss")
def alerts_dismiss(
    alert_id: AlertId,
    explanation: Annotated[str, typer.Option(help="Why it is no concern (sealed; the audit "
                                             "trail keeps its digest)")],
    data_dir: DataDir = None,
) -> None:
    """Close an alert as no concern."""
    with runtime(data_dir) as rt:
        _triaged(rt.alerts.dismiss(SYSTEM, alert_id, explanation))


@alerts_app.command("escalate")
def alerts_escalate(
    alert_id: AlertId,
    note: Annotated[str | None, typer.Option(help="For the investigation (sealed; the audit "
                                             "trail keeps its digest)")] = None,
    incident: Annotated[str | None, typer.Option(
        help="An open incident to join [default: a new incident]")] = None,
    data_dir: DataDir = None,
) -> None:
    """Close an alert as a concern handed on to an incident (a new one, or the one named)."""
    with runtime(data_dir) as rt:
        joined = rt.incidents.escalate_alert(SYSTEM, alert_id, note, incident)
    out.print(f"{alert_id}: escalated into incident {joined['id']}", highlight=False,
              markup=False)


@alerts_app.command("assign")
def alerts_assign(alert_id: AlertId,
                  username: Annotated[str, typer.Argument(help="A user holding alerts:manage")],
                  data_dir: DataDir = None) -> None:
    """Assign an alert to an analyst."""
    with runtime(data_dir) as rt:
        _triaged(rt.alerts.assign(SYSTEM, alert_id, username))


@watchlist_app.command("add")
def watchlist_add(
    subject_id: SubjectId,
    reason: Annotated[str, typer.Option(help="Why (sealed; the audit trail keeps its digest)")],
    category: Annotated[str, typer.Option(help=", ".join(WATCH_CATEGORIES))] = "other",
    handler: Annotated[list[str] | None, typer.Option(
        help="A username whose access is expected; repeatable")] = None,
    data_dir: DataDir = None,
) -> None:
    """Watch a customer: access by anyone but their handlers raises an alert."""
    with runtime(data_dir) as rt:
        w = rt.alerts.watch(SYSTEM, subject_id, reason, category, handler or [])
    out.print(f"watching {w['subject_id']} ({w['category']}; handlers: "
              f"{', '.join(w['handlers']) or '-'})", highlight=False, markup=False)


@watchlist_app.command("list")
def watchlist_list(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """The watch list."""
    with runtime(data_dir) as rt:
        items = rt.alerts.watchlist(SYSTEM)
    if json_out:
        print(json.dumps({"items": items}))
        return
    table = Table("subject", "category", "handlers", "added by", "added", "reason")
    for w in items:
        table.add_row(w["subject_id"], w["category"], ", ".join(w["handlers"]), w["added_by"],
                      w["added_at"], Text(w["reason"]))  # free text: no markup
    out.print(table)


@watchlist_app.command("remove")
def watchlist_remove(subject_id: SubjectId, data_dir: DataDir = None) -> None:
    """Stop watching a customer."""
    with runtime(data_dir) as rt:
        rt.alerts.unwatch(SYSTEM, subject_id)
    out.print(f"no longer watching {subject_id}", highlight=False, markup=False)
