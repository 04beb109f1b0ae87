"""CLI: the training catalogue, everyone's status, external completions (with their evidence),
expiry reminders and the xAPI export for an LMS."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from fiduciary.cli.common import DataDir, JsonFlag, group, out, runtime
from fiduciary.principal import SYSTEM
from fiduciary.workforce.catalogue import answer_digest

training_app = group("Training: the catalogue, status, completions, reminders, xAPI export.")


def _dump(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else str(value)


@training_app.command("catalogue")
def training_catalogue(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """The courses: who takes them, what they unlock, validity and pass mark (never the key)."""
    with runtime(data_dir) as rt:
        cat = rt.training.catalogue
        gaps = rt.training.audience_gaps()
    rows: list[dict[str, Any]] = [{
        "id": c.id, "title": c.title, "version": c.version, "audience": list(c.audience),
        "unlocks": [u.value for u in c.unlocks], "baseline": c.id == cat.baseline,
        "validity_days": c.validity_days, "pass_mark": c.pass_mark,
        "questions": len(c.questions)} for c in cat.courses]
    if json_out:
        print(json.dumps({"source": cat.source, "baseline": cat.baseline,
                          "grace_classes": [g.value for g in cat.grace_classes],
                          "courses": rows, "gaps": gaps}))
        return
    table = Table("course", "version", "unlocks", "audience", "valid (days)", "pass mark",
                  "questions", title=f"{cat.source} — baseline: {cat.baseline}")
    for r in rows:
        unlocks = ", ".join(r["unlocks"]) + (" (and every class: baseline)"
                                             if r["baseline"] else "")
        table.add_row(r["id"], r["version"], unlocks, ", ".join(r["audience"]),
                      str(r["validity_days"]), f"{r['pass_mark']:.0%}", str(r["questions"]))
    out.print(table)
    for gap in gaps:
        out.print(f"[yellow]warning:[/yellow] {gap}", highlight=False)


@training_app.command("status")
def training_status(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Every active user's courses: current, expiring (30 days), expired or missing."""
    with runtime(data_dir) as rt:
        items = rt.training.status(SYSTEM)
    if json_out:
        print(json.dumps({"items": items}, default=_dump))
        return
    table = Table("user", "course", "status", "expires")
    for person in items:
        for c in person["courses"]:
            status = c["status"] + (" (refresher due)" if c["refresher_due"] else "")
            table.add_row(person["username"], c["id"], status, str(c["expires_at"] or "-"))
    out.print(table)


@training_app.command("record")
def training_record(
    username: str, course: str,
    completed: Annotated[str, typer.Option(help="Completion date, YYYY-MM-DD")],
    evidence: Annotated[str, typer.Option(
        help="Reference to the evidence of completion (certificate, LMS record id)")],
    expires: Annotated[str | None, typer.Option(
        help="Expiry date [default: completion + the course's validity]")] = None,
    data_dir: DataDir = None,
) -> None:
    """Record a course completed outside Fiduciary (counts for its current version)."""
    try:
        done = date.fromisoformat(completed)
        until = date.fromisoformat(expires) if expires else None
    except ValueError:
        out.print("dates are YYYY-MM-DD")
        raise typer.Exit(code=2) from None
    with runtime(data_dir) as rt:
        rec = rt.users.record_training(username, course, done, until, evidence=evidence,
                                       source="external")
    out.print(f"{username}: {rec.course} {rec.course_version or ''} completed "
              f"{rec.completed_at}, expires {rec.expires_at}", markup=False)


@training_app.command("remind")
def training_remind(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Send the reminders due now (30 and 7 days before expiry), each once."""
    with runtime(data_dir) as rt:
        sent = rt.training.remind()
    if json_out:
        print(json.dumps({"sent": sent}))
        return
    for s in sent:
        out.print(f"{s['username']}: {s['course']} expires {s['expires_at']} "
                  f"({s['days_left']} days) — {', '.join(s['channels']) or 'audit event only'}",
                  markup=False)
    out.print(f"{len(sent)} reminder(s) sent")


@training_app.command("export")
def training_export(
    since: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"],
        help="Only statements from this date or RFC 3339 time on (UTC unless given)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Attempts and external completions as xAPI statements (a JSON StatementResult)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with runtime(data_dir) as rt:
        statements = rt.training.statements(SYSTEM, since)
    print(json.dumps({"statements": statements, "more": ""}))


@training_app.command("digest")
def training_digest(course: str, question: str, choice: str) -> None:
    """The catalogue entry for a correct choice (its ``correct:`` list item)."""
    print(answer_digest(course, question, choice))
