"""CLI: data-subject requests and the consent ledger. Acts as the system, attributed to the
operator running the command (their OS user appears in the ticket and the audit trail)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fiduciary.cli.common import DataDir, JsonFlag, err, group, out, runtime
from fiduciary.principal import SYSTEM
from fiduciary.privacy.consent import entries_as_dict
from fiduciary.privacy.deadlines import local_day
from fiduciary.privacy.dsr import DsrRequest
from fiduciary.runtime import Runtime

dsr_app = group("Data-subject requests (GDPR, CCPA) with statutory deadlines.")
consent_app = group("The consent ledger.")

RequestId = Annotated[str, typer.Argument(help="The request id")]
SubjectId = Annotated[str, typer.Argument(help="The subject id")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept with the request; the "
                                        "audit trail keeps only its digest)")]


def _print_request(req: DsrRequest, now: datetime, json_out: bool, zone: tzinfo) -> None:
    doc = req.as_dict(now)
    if json_out:
        print(json.dumps(doc))
        return
    late = f"  OVERDUE: {', '.join(doc['overdue'])}" if doc["overdue"] else ""
    due = local_day(req.due_at, zone)  # the controller's day, as the deadline was counted
    out.print(f"{req.id}  {req.regime} {req.type}  {req.status}  due {due}"
              f"{late}", highlight=False, markup=False)


def _step(data_dir: Path | None, json_out: bool, action: Callable[[Runtime], DsrRequest]
          ) -> None:
    with runtime(data_dir) as rt:
        req, now = action(rt), rt.clock.now()
    _print_request(req, now, json_out, rt.dsr.calendar.zone)


@dsr_app.command("create")
def dsr_create(
    subject: Annotated[str, typer.Option("--subject", help="The subject id")],
    type_: Annotated[str, typer.Option("--type", help="gdpr: access, portability, "
                                       "rectification, erasure, restriction, objection; ccpa: "
                                       "know, delete, correct, opt_out_sale_sharing, "
                                       "limit_sensitive")],
    regime: Annotated[str, typer.Option("--regime", help="gdpr or ccpa")],
    received: Annotated[str | None, typer.Option(
        "--received", help="When it was received: YYYY-MM-DD or an ISO time, without a "
        "zone the controller's local time (FIDUCIARY_CONTROLLER_TIMEZONE) [default: now]"
    )] = None,
    channel: Annotated[str | None, typer.Option(
        help="web_form, email, phone, paper, in_person or api")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Log a data-subject request and set its statutory deadlines."""
    try:
        received_at = datetime.fromisoformat(received) if received else None
    except ValueError:
        err.print("[red]error:[/red] --received is YYYY-MM-DD or an ISO 8601 time")
        raise typer.Exit(code=2) from None
    _step(data_dir, json_out, lambda rt: rt.dsr.create(SYSTEM, subject, type_, regime,
                                                       received_at, channel))


@dsr_app.command("verify")
def dsr_verify(
    request_id: RequestId,
    method: Annotated[str, typer.Option(help="account_login, email_link, phone_callback, "
                                        "id_document, knowledge_based, in_person, "
                                        "authorised_agent, or not_required (CCPA opt-out "
                                        "and limit)")],
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Record that the requester's identity was verified."""
    _step(data_dir, json_out, lambda rt: rt.dsr.verify(SYSTEM, request_id, method))


@dsr_app.command("acknowledge")
def dsr_acknowledge(request_id: RequestId, data_dir: DataDir = None,
                    json_out: JsonFlag = False) -> None:
    """Record that receipt was confirmed to the requester (CCPA: 10 business days)."""
    _step(data_dir, json_out, lambda rt: rt.dsr.acknowledge(SYSTEM, request_id))


@dsr_app.command("extend")
def dsr_extend(request_id: RequestId, reason: ReasonOpt, data_dir: DataDir = None,
               json_out: JsonFlag = False) -> None:
    """Extend the deadline once (GDPR +2 months, CCPA +45 days), before it passes."""
    _step(data_dir, json_out, lambda rt: rt.dsr.extend(SYSTEM, request_id, reason))


@dsr_app.command("start")
def dsr_start(request_id: RequestId, data_dir: DataDir = None,
              json_out: JsonFlag = False) -> None:
    """Begin work on a verified request."""
    _step(data_dir, json_out, lambda rt: rt.dsr.start(SYSTEM, request_id))


@dsr_app.command("fulfil")
def dsr_fulfil(
    request_id: RequestId,
    note: Annotated[str | None, typer.Option(help="Rectification/correct: what was "
                                             "corrected")] = None,
    purpose: Annotated[list[str] | None, typer.Option(
        "--purpose", help="Objection: a consent-based purpose objected to; repeatable "
        "[default: all]")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Carry out a verified request and close it."""
    _step(data_dir, json_out, lambda rt: rt.dsr.fulfil(SYSTEM, request_id, note, purpose))


@dsr_app.command("deny")
def dsr_deny(request_id: RequestId, reason: ReasonOpt, data_dir: DataDir = None,
             json_out: JsonFlag = False) -> None:
    """Close a request as denied, with the reason given to the requester."""
    _step(data_dir, json_out, lambda rt: rt.dsr.deny(SYSTEM, request_id, reason))


@dsr_app.command("list")
def dsr_list(
    status: Annotated[str | None, typer.Option(help="received, identity_verified, "
                                               "in_progress, fulfilled, "
                                               "partially_fulfilled or denied")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Open requests past a "
                                          "deadline")] = False,
    due_within: Annotated[int | None, typer.Option(
        "--due-within", help="Open requests with a deadline within DAYS")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject's")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Requests by due date."""
    with runtime(data_dir) as rt:
        found, now = rt.dsr.list(status, overdue, due_within, subject), rt.clock.now()
        zone = rt.dsr.calendar.zone
    rows = [r.as_dict(now) for r in found]
    if json_out:
        print(json.dumps({"items": rows}))
        return
    table = Table("id", "subject", "regime", "type", "status", "received", "due", "overdue")
    for r in found:
        table.add_row(r.id, r.subject_id, r.regime, r.type, r.status,
                      str(local_day(r.received_at, zone)), str(local_day(r.due_at, zone)),
                      ", ".join(r.overdue(now)))
    out.print(table)


@dsr_app.command("show")
def dsr_show(request_id: RequestId, data_dir: DataDir = None,
             json_out: JsonFlag = False) -> None:
    """A request with every step."""
    with runtime(data_dir) as rt:
        req, now = (rt.dsr.get(request_id), rt.clock.now())
    doc = req.as_dict(now)
    if json_out:
        print(json.dumps(doc))
        return
    table = Table("field", "value", show_header=False)
    for key, value in doc.items():
        if key != "steps" and value not in (None, [], False):
            table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    out.print(table)
    steps = Table("at", "step", "by", "details")
    for s in req.steps:
        steps.add_row(s.at.isoformat(), s.step, s.actor, json.dumps(s.details))
    out.print(steps)


@dsr_app.command("package")
def dsr_package(
    request_id: RequestId,
    fmt: Annotated[str, typer.Option("--format", help="json or html")] = "json",
    output: Annotated[Path | None, typer.Option(help="File to write (0600); default "
                                                "stdout")] = None,
    data_dir: DataDir = None,
) -> None:
    """The access package of a fulfilled request, opened (it is stored sealed)."""
    with runtime(data_dir) as rt:
        req = rt.dsr.get(request_id)
        body = rt.packager.download(SYSTEM, req.result, req.subject_id, fmt)[0]
    if output is None:
        sys.stdout.buffer.write(body)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
    os.chmod(output, 0o600)
    err.print(f"wrote {output}", highlight=False)


@consent_app.command("record")
def consent_record(
    subject: SubjectId,
    purpose: Annotated[str, typer.Option(help="A consent-based purpose (marketing), "
                                         "sale_or_sharing or sensitive_data_use")],
    granted: Annotated[bool, typer.Option("--granted/--withdrawn",
                                          help="Grant, or withdraw (opt out)")],
    method: Annotated[str, typer.Option(help="web_form, phone, paper, email, in_person, "
                                        "opt_out_preference_signal or api")],
    notice_version: Annotated[str | None, typer.Option(
        help="Version of the notice agreed to (required to grant)")] = None,
    notice_id: Annotated[str | None, typer.Option(help="Which notice")] = None,
    channel: Annotated[str | None, typer.Option(help="Where it was given (a code)")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Append a grant or a withdrawal to the ledger."""
    with runtime(data_dir) as rt:
        entry = rt.consent.record(SYSTEM, subject, purpose, granted, notice_id, notice_version,
                                  method, channel)
    if json_out:
        print(json.dumps(entry.as_dict()))
        return
    out.print(f"{subject}: {purpose} {'granted' if granted else 'withdrawn'} "
              f"({method}) at {entry.recorded_at.isoformat()}", highlight=False, markup=False)


@consent_app.command("history")
def consent_history(subject: SubjectId, data_dir: DataDir = None,
                    json_out: JsonFlag = False) -> None:
    """The subject's current consent per purpose, and every entry."""
    with runtime(data_dir) as rt:
        current, history = rt.consent.read(SYSTEM, subject)
    if json_out:
        print(json.dumps(entries_as_dict(current, history)))
        return
    table = Table("recorded", "purpose", "state", "notice", "method", "channel", "by",
                  "current")
    latest = {e.id for e in current.values()}
    for e in history:
        notice = "/".join(p for p in (e.notice_id, e.notice_version) if p)
        table.add_row(e.recorded_at.isoformat(), e.purpose,
                      "granted" if e.granted else "withdrawn", notice, e.method,
                      e.channel or "", e.recorded_by, "yes" if e.id in latest else "")
    out.print(table)
