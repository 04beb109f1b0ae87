"""CLI: access review campaigns (``fiduciary reviews``), and the HR feed, managers and
dormant accounts (``fiduciary users sync-hr|set-manager|disable-dormant``).

The CLI is the host's operator: it opens campaigns and may decide any item (recorded as the
operator); reviewers decide their own items through the API."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fiduciary.cli.access import users_app
from fiduciary.cli.common import DataDir, JsonFlag, err, group, out, runtime
from fiduciary.principal import SYSTEM

reviews_app = group("Access review campaigns (NYDFS 500.7): start, list, decide.")


def _date(text: str | None, name: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        err.print(f"[red]error:[/red] {name} is a date YYYY-MM-DD")
        raise typer.Exit(code=2) from None


@reviews_app.command("start")
def reviews_start(
    scope: Annotated[str, typer.Option(help="all, or role:NAME")] = "all",
    due: Annotated[str | None, typer.Option(
        help="Last day to decide, YYYY-MM-DD [default: FIDUCIARY_REVIEW_DUE_DAYS (30) from "
             "now]")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Open a campaign: every entitlement of the active accounts in scope (roles, regions,
    assigned records, API keys) goes to the account's manager, or to the security analysts."""
    until = _date(due, "--due")
    with runtime(data_dir) as rt:
        c = rt.campaigns.start(SYSTEM, scope, until)
    if json_out:
        print(json.dumps(c.as_dict()))
        return
    out.print(f"campaign {c.id}: {c.total} items, due {c.due_at.isoformat()}", markup=False)


@reviews_app.command("list")
def reviews_list(
    campaign: Annotated[str | None, typer.Option(help="Only this campaign's items")] = None,
    decided: Annotated[bool, typer.Option(help="Decided items too")] = False,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Campaigns (completion, overdue items), their undecided items, and the accounts not
    certified within 365 days."""
    with runtime(data_dir) as rt:
        o = rt.campaigns.overview(SYSTEM, campaign, decided)
    uncertified = o.uncertified or []
    if json_out:
        print(json.dumps({"campaigns": [c.as_dict() for c in o.campaigns],
                          "items": [i.as_dict() for i in o.items],
                          "uncertified": [u.as_dict() for u in uncertified]}))
        return
    table = Table("campaign", "scope", "status", "due", "items", "decided", "completion",
                  "overdue", title="Campaigns")
    for c in o.campaigns:
        d = c.as_dict()
        table.add_row(c.id, c.scope, c.status, d["due_at"], str(c.total), str(c.decided),
                      f"{d['completion']}%", str(c.overdue))
    out.print(table)
    items = Table("campaign", "item", "account", "kind", "entitlement", "reviewer", "due",
                  "decision", title="Items")
    for i in o.items:
        items.add_row(i.campaign_id[:8], i.id, i.account_name, i.kind, i.entitlement,
                      i.reviewer_name or f"({i.reviewer_role})",
                      "OVERDUE" if i.overdue else i.due_at.date().isoformat(),
                      i.decision or "")
    out.print(items)
    flagged = Table("kind", "account", "last certified",
                    title="Not certified within 365 days (NYDFS 500.7(a)(4))")
    for u in uncertified:
        flagged.add_row(u.kind, u.name, u.last_certified_at.isoformat()
                        if u.last_certified_at else "never")
    out.print(flagged)


@reviews_app.command("decide")
def reviews_decide(
    campaign_id: str, item_id: str,
    decision: Annotated[str, typer.Argument(help="keep or revoke")],
    note: Annotated[str | None, typer.Option(help="Why (required to revoke)")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Decide an item as the operator; a revocation takes effect at once."""
    with runtime(data_dir) as rt:
        item = rt.campaigns.decide(SYSTEM, campaign_id, item_id, decision, note)
    if json_out:
        print(json.dumps(item.as_dict()))
        return
    out.print(f"{item.account_name} {item.kind} {item.entitlement}: {item.decision}"
              + (f" ({item.effect})" if item.effect else ""), markup=False)


@users_app.command("set-manager")
def users_set_manager(
    username: str,
    manager: Annotated[str | None, typer.Argument(help="The manager's username; none "
                                                  "to remove")] = None,
    data_dir: DataDir = None,
) -> None:
    """Set who reviews a user's access in campaigns."""
    with runtime(data_dir) as rt:
        rt.users.set_manager(username, manager)
    out.print(f"{username}: manager {manager or '(none)'}", markup=False)


@users_app.command("sync-hr")
def users_sync_hr(
    file: Annotated[Path, typer.Argument(help="CSV: employee_id, username, status "
                                         "(active|leave|leaver|terminated), role, manager, "
                                         "leave_date")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, change nothing")] = False,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Apply the HR feed: leavers disabled at once (sessions end, their API keys revoked),
    movers flagged, managers and employee ids recorded; every bad row reported. Exit 1 when a
    row was rejected."""
    with runtime(data_dir) as rt:
        report = rt.hr.sync_file(file, dry_run=dry_run)
    doc = report.as_dict()
    if json_out:
        print(json.dumps(doc))
    else:
        verb = "would disable" if dry_run else "disabled"
        out.print(f"{report.rows} rows: {report.applied} applied, {report.rejected} rejected; "
                  f"{verb} {len(report.disabled)} leavers ({', '.join(report.disabled)}), "
                  f"{len(report.keys_revoked)} API keys revoked", markup=False)
        for m in report.movers:
            out.print(f"  mover (line {m['line']}): {m['username']} is {m['hr_role']} in HR, "
                      f"holds {', '.join(m['roles'])}", markup=False)
        for e in report.errors:
            reasons = "; ".join(f"{p['field']}: {p['reason']}" for p in e["errors"])
            out.print(f"  line {e['line']}: {reasons}", markup=False)
        if report.not_in_feed:
            out.print(f"  active accounts not in the feed: {', '.join(report.not_in_feed)}",
                      markup=False)
    if report.rejected:
        raise typer.Exit(code=1)


@users_app.command("disable-dormant")
def users_disable_dormant(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, disable nothing")] = False,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Disable accounts unused for FIDUCIARY_DORMANT_DISABLE_DAYS (90) days (last login, or
    creation if never); the scheduler of `fiduciary serve` does it daily."""
    with runtime(data_dir) as rt:
        found = rt.hr.disable_dormant(dry_run=dry_run)
    if json_out:
        print(json.dumps({"dry_run": dry_run, "items": [d.as_dict() for d in found]}))
        return
    verb = "would disable" if dry_run else "disabled"
    for d in found:
        out.print(f"{verb} {d.username} (unused {d.idle_days} days)", markup=False)
    if not found:
        out.print("no dormant accounts")
